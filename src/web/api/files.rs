//! Documents as files: export (the content as a download named from the
//! title, with its language's extension) and import (a raw file body
//! creating a document owned by the caller, titled from the file name, its
//! language from the extension).
//! Must not import: sqlx, redis.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::documents::{create_owned, document_out, DocumentOut};
use super::ErrorBody;
use crate::protocol::Role;
use crate::web::error::ApiError;
use crate::web::identity::{role_for, Auth};
use crate::web::AppState;

/// Longest file name stem an export gets (characters).
const STEM_MAX: usize = 100;

/// Extensions a file is exported with, and the content type each is served
/// as (anything else: `text/plain`).
const TYPES: &[(&str, &str)] = &[
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("json", "application/json"),
    ("html", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("ts", "text/plain; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("xml", "application/xml"),
    ("yaml", "application/yaml"),
];

/// The content type of a file with extension `ext`.
pub(super) fn content_type(ext: &str) -> &'static str {
    TYPES
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map_or("text/plain; charset=utf-8", |(_, t)| t)
}

/// A file name stem from a title: letters, digits, spaces and `-_.()`
/// kept, anything else (path separators, quotes, controls) made `_`, no
/// leading dots or blanks, at most [`STEM_MAX`] characters; `document` when
/// nothing is left.
pub(super) fn safe_stem(title: &str) -> String {
    let mapped: String = title
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '(' | ')') {
                c
            } else {
                '_'
            }
        })
        .take(STEM_MAX)
        .collect();
    let stem = mapped.trim().trim_start_matches('.').trim();
    if stem.is_empty() || stem.chars().all(|c| c == '_') {
        "document".into()
    } else {
        stem.to_owned()
    }
}

/// The name a document is exported under: its title made safe, with the
/// first extension of its language (`.txt` for plain text) unless the
/// title already ends with it (`trip.md` stays `trip.md`).
pub(super) fn file_name(title: &str, language: &str) -> String {
    let ext = crate::language::find(language)
        .and_then(|l| l.extensions.first().copied())
        .unwrap_or("txt");
    let stem = safe_stem(title);
    if stem.to_lowercase().ends_with(&format!(".{ext}")) {
        stem
    } else {
        format!("{stem}.{ext}")
    }
}

/// `Content-Disposition: attachment` naming `name`: an ASCII `filename`
/// (other characters as `_`) and the exact name as RFC 5987 `filename*`.
fn disposition(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    let v = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("attachment"))
}

/// The document's content as a file: named from its title, with its
/// language's extension (`.txt` for plain text).
#[utoipa::path(get, path = "/api/documents/{id}/export", security(("bearer" = [])), responses(
    (status = 200, body = String, content_type = "text/plain", description = "the content as a file (Content-Disposition: attachment, named from the title; Content-Type by extension)"),
    (status = 401, body = ErrorBody, description = "no identity (documents with an owner)"),
    (status = 403, body = ErrorBody, description = "not a member"),
    (status = 404, body = ErrorBody, description = "no such document"),
    (status = 503, body = ErrorBody, description = "backend unavailable")))]
pub async fn export_document(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    role_for(&state, &id, &who).await?;
    let view = state.hub.view(&id).await?;
    let name = file_name(&view.meta.title, &view.meta.language);
    let ext = name.rsplit('.').next().unwrap_or("txt");
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(ext)),
        ),
        (header::CONTENT_DISPOSITION, disposition(&name)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    Ok((headers, view.content).into_response())
}

#[derive(Deserialize, IntoParams)]
pub struct ImportQuery {
    /// The file's name (required; 1–255 characters): the document's title
    /// is the name without its extension.
    filename: Option<String>,
}

/// The title a file name gives: the name without its last extension (a
/// name that is only an extension, `.env`, keeps it), without a directory.
pub(super) fn title_from(filename: &str) -> Result<String, ApiError> {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or_default();
    if filename.is_empty() || filename.chars().count() > 255 || base.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "filename must be a file name of 1-255 characters".into(),
        ));
    }
    let stem = match base.rfind('.') {
        Some(i) if i > 0 => &base[..i],
        _ => base,
    };
    let title: String = stem.trim().chars().take(200).collect();
    Ok(title)
}

/// Create a document from a file: the request body is the file's bytes
/// (UTF-8 text; a leading byte-order mark is dropped), `filename` names it
/// (the title is the name without its extension; the extension chooses the
/// language when it names one).
/// Counts against `MAX_DOCS_PER_USER` and the REST edit rate.
#[utoipa::path(post, path = "/api/documents/import", params(ImportQuery), security(("bearer" = [])),
    request_body(content = String, content_type = "text/plain", description = "the file's bytes, UTF-8"),
    responses(
    (status = 201, body = DocumentOut, description = "created; owned by the caller"),
    (status = 400, body = ErrorBody, description = "no or bad filename, or a title with control characters"),
    (status = 401, body = ErrorBody, description = "no identity"),
    (status = 403, body = ErrorBody, description = "quota_exceeded: the caller owns MAX_DOCS_PER_USER documents"),
    (status = 413, body = ErrorBody, description = "too_large: over MAX_DOC_CHARS characters"),
    (status = 415, body = ErrorBody, description = "unsupported_media_type: the file is not UTF-8 text"),
    (status = 429, body = ErrorBody, description = "rate_limited: over the REST edit rate"),
    (status = 503, body = ErrorBody, description = "backend unavailable")))]
pub async fn import_document(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Result<(StatusCode, Json<DocumentOut>), ApiError> {
    let user = who.user()?.sub.clone();
    let filename = q.filename.as_deref().unwrap_or_default();
    let title = title_from(filename)?;
    let language = crate::language::guess(filename);
    let language = (language != crate::language::PLAIN).then(|| language.to_owned());
    // A character is at most 4 bytes: more bytes cannot be within the limit.
    let max_bytes = state
        .config
        .max_doc_chars
        .saturating_mul(4)
        .saturating_add(3);
    let bytes = axum::body::to_bytes(body, max_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::UnsupportedMediaType("files must be UTF-8 text"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let id = create_owned(&state, &user, &title, text, language).await?;
    Ok((
        StatusCode::CREATED,
        Json(document_out(&state, &id, Role::Owner).await?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_safe() {
        assert_eq!(safe_stem("Trip notes"), "Trip notes");
        assert_eq!(safe_stem("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(safe_stem("a\"b\r\nc"), "a_b__c");
        assert_eq!(safe_stem(""), "document");
        assert_eq!(safe_stem("///"), "document");
        assert_eq!(safe_stem("...hidden"), "hidden");
        assert_eq!(safe_stem("Café ☕"), "Café _");
        assert_eq!(safe_stem(&"x".repeat(300)).len(), STEM_MAX);
    }

    #[test]
    fn titles_come_from_file_names() {
        assert_eq!(title_from("notes.md").unwrap(), "notes");
        assert_eq!(title_from("a.tar.gz").unwrap(), "a.tar");
        assert_eq!(title_from("C:\\x\\Report.txt").unwrap(), "Report");
        assert_eq!(title_from("dir/README").unwrap(), "README");
        assert_eq!(title_from(".env").unwrap(), ".env");
        assert!(title_from("").is_err());
        assert!(title_from("dir/").is_err());
        assert!(title_from(&"x".repeat(256)).is_err());
    }

    #[test]
    fn file_names_take_the_language_extension_once() {
        assert_eq!(file_name("Trip", "plaintext"), "Trip.txt");
        assert_eq!(file_name("Trip", "markdown"), "Trip.md");
        assert_eq!(file_name("trip.MD", "markdown"), "trip.MD");
        assert_eq!(file_name("main", "rust"), "main.rs");
        assert_eq!(file_name("a/b", "nope"), "a_b.txt");
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("md"), "text/markdown; charset=utf-8");
        assert_eq!(content_type("JSON"), "application/json");
        assert_eq!(content_type("rs"), "text/plain; charset=utf-8");
        let d = disposition("Café.txt");
        assert_eq!(
            d.to_str().unwrap(),
            "attachment; filename=\"Caf_.txt\"; filename*=UTF-8''Caf%C3%A9.txt"
        );
    }
}
