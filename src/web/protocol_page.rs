//! `/docs/protocol`: the WebSocket protocol (`docs/protocol.md`, embedded at
//! build time) rendered to HTML once, for readers of the API reference page.
//!
//! Owns: the rendering and its page. Must not import: sqlx, redis.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use pulldown_cmark::{html, Options, Parser};

const SOURCE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md"));

/// The whole page: the rendered markdown in the reference page's frame.
fn render() -> String {
    let mut body = String::with_capacity(SOURCE.len() * 2);
    html::push_html(&mut body, Parser::new_ext(SOURCE, Options::ENABLE_TABLES));
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Tandem — WebSocket protocol</title>\
         <link rel=\"icon\" href=\"/assets/favicon.svg\">\
         <link rel=\"stylesheet\" href=\"/assets/docs.css\"></head>\
         <body><header class=\"docs-bar\"><a href=\"/\">Tandem</a>\
         <nav><a href=\"/docs\">REST API</a><a href=\"/docs/protocol\" aria-current=\"page\">\
         WebSocket protocol</a></nav></header>\
         <main class=\"prose\">{body}</main></body></html>\n"
    )
}

/// `GET /docs/protocol`
pub async fn page() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let mut res = PAGE.get_or_init(render).clone().into_response();
    let h: &mut HeaderMap = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    super::assets::page_headers(h);
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_the_protocol_with_its_tables_and_no_script() {
        let page = super::render();
        assert!(page.contains("<table>"), "tables render");
        assert!(page.contains("<h2>Connecting</h2>"), "headings render");
        assert!(!page.contains("<script"), "the page runs nothing");
    }
}
