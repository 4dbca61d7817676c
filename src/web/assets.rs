//! The browser client (`web/static`), embedded in the binary at build time so
//! the server needs no npm step and no files beside it.
//!
//! Owns: the asset table, the page routes (`/`, `/d/{id}`, `/login`) that all
//! serve the single-page app, `/docs` (the API reference page), ETag revalidation and the page's security headers.
//! Must not import: anything outside the web layer.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($name:literal => $mime:literal),* $(,)?) => {
        &[$(Asset {
            name: $name,
            mime: $mime,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/static/", $name)),
        }),*]
    };
}

static ASSETS: &[Asset] = assets! {
    "index.html" => "text/html; charset=utf-8",
    "app.js" => "text/javascript; charset=utf-8",
    "editor.js" => "text/javascript; charset=utf-8",
    "tandem-client.js" => "text/javascript; charset=utf-8",
    "offline-store.js" => "text/javascript; charset=utf-8",
    "awareness.js" => "text/javascript; charset=utf-8",
    "files.js" => "text/javascript; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "vendor/codemirror.js" => "text/javascript; charset=utf-8",
    "docs.html" => "text/html; charset=utf-8",
    "docs.js" => "text/javascript; charset=utf-8",
    "docs.css" => "text/css; charset=utf-8",
    "vendor/swagger-ui/swagger-ui-bundle.js" => "text/javascript; charset=utf-8",
    "vendor/swagger-ui/swagger-ui.css" => "text/css; charset=utf-8",
    "vendor/swagger-ui/LICENSE" => "text/plain; charset=utf-8",
};

/// Scripts and styles from this origin only; sockets to this origin. CodeMirror
/// injects its own `<style>` elements, hence `'unsafe-inline'` for styles only.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..20]))
            .collect()
    })
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.mime)], asset.body).into_response()
    };
    let h = res.headers_mut();
    // Always revalidate: a new binary must never run against an old script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if asset.mime.starts_with("text/html") {
        page_headers(h);
    } else {
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    res
}

/// The headers every HTML page gets: the CSP, no sniffing, no referrer
/// beyond this origin.
pub fn page_headers(h: &mut HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// The single-page app, for every page route.
pub async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `/docs`: the interactive API reference (Swagger UI, vendored).
pub async fn docs_page(headers: HeaderMap) -> Response {
    serve("docs.html", &headers)
}

/// `/assets/{*path}`
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_tag_and_the_page_has_a_csp() {
        let tags = etags();
        assert_eq!(tags.len(), ASSETS.len());
        let res = serve("index.html", &HeaderMap::new());
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tags[0].parse().unwrap());
        assert_eq!(serve("index.html", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
