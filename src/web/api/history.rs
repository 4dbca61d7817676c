//! History: pages of committed records, a version's content, restore.
//! Must not import: sqlx, redis.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::documents::VersionOut;
use super::{edit, user_id, ErrorBody};
use crate::hub::Edit;
use crate::web::error::ApiError;
use crate::web::identity::{role_for, Auth};
use crate::web::AppState;

#[derive(Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Records after this version (default 0: from the start).
    since: Option<u64>,
    /// Instead of `since`: the newest records before this version (cursor
    /// paging backwards: the next, older page is `before=<the first
    /// version returned>`).
    before: Option<u64>,
    /// At most 1000 (default 100); a page also ends before `HISTORY_PAGE_BYTES`
    /// (default 1 MiB) of op JSON, holding at least one op. The next page
    /// starts after the last version returned.
    limit: Option<usize>,
}

/// One committed op.
#[derive(Serialize, ToSchema)]
pub struct HistoryItem {
    /// The version this op produced.
    version: u64,
    #[schema(value_type = Vec<Object>)]
    op: Value,
    /// User id.
    user: String,
    /// The user's display name (the id for anonymous users).
    name: String,
    client: String,
    /// Commit time, ms since the Unix epoch.
    at: i64,
}

/// The committed ops after `since` (or the newest before `before`), oldest
/// first, a page at a time.
#[utoipa::path(get, path = "/api/documents/{id}/history", params(HistoryQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<HistoryItem>, description = "A page of committed ops, oldest first"),
    (status = 400, body = ErrorBody, description = "Bad parameters"),
    (status = 401, body = ErrorBody, description = "Not signed in"),
    (status = 403, body = ErrorBody, description = "No access to the document"),
    (status = 404, body = ErrorBody, description = "No such document")))]
pub async fn get_history(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<HistoryItem>>, ApiError> {
    role_for(&state, &id, &who).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let page_bytes = state.config.history_page_bytes;
    let records = match (q.since, q.before) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give since or before, not both".into(),
            ))
        }
        (_, Some(before)) => {
            super::sessions::records_before(&state, &id, before, limit, page_bytes).await?
        }
        (since, None) => {
            state
                .hub
                .history(&id, since.unwrap_or(0), limit, page_bytes)
                .await?
                .1
        }
    };
    let mut names: std::collections::HashMap<String, String> = Default::default();
    for r in &records {
        if !names.contains_key(&r.user) {
            let name = state.store.user_name(&r.user).await?;
            names.insert(r.user.clone(), name.unwrap_or_else(|| r.user.clone()));
        }
    }
    Ok(Json(
        records
            .iter()
            .map(|r| HistoryItem {
                version: r.version,
                op: r.op.to_json(),
                user: r.user.clone(),
                name: names[&r.user].clone(),
                client: r.client.clone(),
                at: r.time,
            })
            .collect(),
    ))
}

#[derive(Serialize, ToSchema)]
pub struct VersionContent {
    version: u64,
    content: String,
}

async fn content_at(state: &AppState, id: &str, n: u64) -> Result<String, ApiError> {
    state
        .hub
        .content_at(id, n)
        .await?
        .ok_or(ApiError::NotFound("no such version"))
}

/// The document as it was at version `n`.
#[utoipa::path(get, path = "/api/documents/{id}/versions/{n}", security(("bearer" = [])), responses(
    (status = 200, body = VersionContent), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_version(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, n)): Path<(String, u64)>,
) -> Result<Json<VersionContent>, ApiError> {
    role_for(&state, &id, &who).await?;
    let content = content_at(&state, &id, n).await?;
    Ok(Json(VersionContent {
        version: n,
        content,
    }))
}

/// Restore version `n`: one new op turning the live content into what it
/// was then; live clients receive it like any edit (and its author can undo it).
#[utoipa::path(post, path = "/api/documents/{id}/versions/{n}/restore", security(("bearer" = [])), responses(
    (status = 200, body = VersionOut), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn restore_version(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, n)): Path<(String, u64)>,
) -> Result<Json<VersionOut>, ApiError> {
    let role = role_for(&state, &id, &who).await?;
    if !role.can_edit() {
        return Err(ApiError::Forbidden("viewers cannot edit"));
    }
    let content = content_at(&state, &id, n).await?;
    let version = edit(&state, &id, &user_id(&who), role, Edit::Replace(content)).await?;
    Ok(Json(VersionOut { version }))
}
