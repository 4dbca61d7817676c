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
    ($($dir:literal: { $($name:literal => $mime:literal),* $(,)? })*) => {
        &[$($(Asset {
            name: $name,
            mime: $mime,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $name)),
        },)*)*]
    };
}

/// Served as `/assets/{name}`: the pages, styles and scripts of `web/static`
/// (the vendored bundles under `vendor/` are listed by `web/build.mjs`), and
/// the protocol client from its package, `web/client`.
static ASSETS: &[Asset] = assets! {
    "web/static": {
        "index.html" => "text/html; charset=utf-8",
        "app.js" => "text/javascript; charset=utf-8",
        "editor.js" => "text/javascript; charset=utf-8",
        "cm-editor.js" => "text/javascript; charset=utf-8",
        "monaco-editor.js" => "text/javascript; charset=utf-8",
        "ws-ticket.js" => "text/javascript; charset=utf-8",
        "share-panel.js" => "text/javascript; charset=utf-8",
        "history-panel.js" => "text/javascript; charset=utf-8",
        "presence-labels.js" => "text/javascript; charset=utf-8",
        "signup-form.js" => "text/javascript; charset=utf-8",
        "offline-store.js" => "text/javascript; charset=utf-8",
        "awareness.js" => "text/javascript; charset=utf-8",
        "files.js" => "text/javascript; charset=utf-8",
        "style.css" => "text/css; charset=utf-8",
        "favicon.svg" => "image/svg+xml",
        "docs.html" => "text/html; charset=utf-8",
        "docs.js" => "text/javascript; charset=utf-8",
        "docs.css" => "text/css; charset=utf-8",
        // vendor files: written by web/build.mjs
        "vendor/cm/chunk-3H43PHPM.js" => "text/javascript; charset=utf-8",
        "vendor/cm/chunk-4IZH5DVO.js" => "text/javascript; charset=utf-8",
        "vendor/cm/chunk-HMEBEWP3.js" => "text/javascript; charset=utf-8",
        "vendor/cm/chunk-SSBRMLCQ.js" => "text/javascript; charset=utf-8",
        "vendor/cm/chunk-WQCI2QWW.js" => "text/javascript; charset=utf-8",
        "vendor/cm/chunk-ZP5OUT56.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-2FIQMS37.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-5AC6URMU.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-5RFYHGAI.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-B2WO5LDW.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-GDZP3BAZ.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-JZASRS6U.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-PEZUJIZR.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-QLW37VYK.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-S63BNLTH.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-U7D6KFJD.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-VB25MQJU.js" => "text/javascript; charset=utf-8",
        "vendor/cm/dist-YB4TZLFH.js" => "text/javascript; charset=utf-8",
        "vendor/codemirror.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/chunk-PE5CAUAH.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/chunk-QCNLGKCZ.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/chunk-XNZRITFD.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/cpp-QQOZNFZJ.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/css-RFMMGZES.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/go-3NJHUSX7.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/html-V5FVH5JA.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/java-DKVIXUZZ.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/javascript-Z3NUIJDL.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/markdown-S6623E66.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/python-5GBFKKUR.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/rust-YZMQ47MP.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/sql-WETD2ZPF.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/typescript-YVKQLWTX.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/chunks/yaml-4AIJSWWQ.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/codicon.ttf" => "font/ttf",
        "vendor/monaco/editor.worker.js" => "text/javascript; charset=utf-8",
        "vendor/monaco/monaco.css" => "text/css; charset=utf-8",
        "vendor/monaco/monaco.js" => "text/javascript; charset=utf-8",
        "vendor/swagger-ui/LICENSE" => "text/plain; charset=utf-8",
        "vendor/swagger-ui/swagger-ui-bundle.js" => "text/javascript; charset=utf-8",
        "vendor/swagger-ui/swagger-ui.css" => "text/css; charset=utf-8",
        // end of vendor files
    }
    "web/client": {
        "tandem-client.js" => "text/javascript; charset=utf-8",
        "ot.js" => "text/javascript; charset=utf-8",
        "ot-state.js" => "text/javascript; charset=utf-8",
        "session-internals.js" => "text/javascript; charset=utf-8",
    }
};

/// Scripts and styles from this origin only; sockets to this origin. CodeMirror
/// and Monaco inject their own `<style>` elements, hence `'unsafe-inline'` for
/// styles only. Monaco's worker and font come from this origin too (workers
/// fall back to `script-src`, fonts to `default-src`).
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

    fn files(dir: &std::path::Path, out: &mut Vec<String>, base: &std::path::Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out, base);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    /// A file in web/static the table leaves out would be a 404 in the
    /// browser (a lazily loaded chunk fails only when first needed); one the
    /// table names that is gone fails the build.
    #[test]
    fn every_file_of_the_browser_client_is_served() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/static");
        let mut on_disk = Vec::new();
        files(&base, &mut on_disk, &base);
        // The package's modules (tandem-client.js and what it imports), not
        // its manifest, declarations or tests.
        let client = base.with_file_name("client");
        for entry in std::fs::read_dir(&client).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".js") {
                on_disk.push(name);
            }
        }
        for f in &on_disk {
            assert!(
                ASSETS.iter().any(|a| a.name == *f),
                "{f} (web/static or web/client) is not in the asset table (run `npm run build` in web/)"
            );
        }
        assert_eq!(on_disk.len(), ASSETS.len(), "the table lists a file twice");
        // web/static and web/client are served from one folder, /assets/.
        let mut names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ASSETS.len(), "two assets share a name");
        let worker = serve("vendor/monaco/editor.worker.js", &HeaderMap::new());
        assert_eq!(worker.status(), StatusCode::OK);
        assert_eq!(
            serve("vendor/monaco/codicon.ttf", &HeaderMap::new()).headers()[header::CONTENT_TYPE],
            "font/ttf"
        );
    }

    /// Every `from "./…"` import of a served script names a served asset:
    /// the browser resolves `/assets/tandem-client.js`'s `./ot.js` to
    /// `/assets/ot.js`, so the client's modules and the pages' share one
    /// folder.
    #[test]
    fn every_relative_import_of_a_served_script_is_served() {
        let mut checked = 0;
        for a in ASSETS
            .iter()
            .filter(|a| a.name.ends_with(".js") && !a.name.starts_with("vendor/"))
        {
            let text = std::str::from_utf8(a.body).unwrap();
            let dir = a.name.rsplit_once('/').map_or("", |(d, _)| d);
            for part in text.split("from \"./").skip(1) {
                let rel = &part[..part.find('"').unwrap()];
                let target = if dir.is_empty() {
                    rel.to_string()
                } else {
                    format!("{dir}/{rel}")
                };
                assert!(
                    ASSETS.iter().any(|b| b.name == target),
                    "{} imports ./{rel}, which is not served",
                    a.name
                );
                checked += 1;
            }
        }
        assert!(checked > 0);
        let ot = serve("ot.js", &HeaderMap::new());
        assert_eq!(ot.status(), StatusCode::OK);
        assert_eq!(
            ot.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert!(ot.headers().contains_key(header::ETAG));
    }
}
