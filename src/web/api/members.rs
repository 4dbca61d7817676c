//! Who is here and who may: live presence, the member list, sharing with
//! members.
//! Must not import: sqlx, redis.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ErrorBody;
use crate::auth::valid_username;
use crate::hub::AccessChange;
use crate::protocol::{Presence, Role};
use crate::store::accounts::Shared;
use crate::web::abuse::Limit;
use crate::web::error::ApiError;
use crate::web::identity::{role_for, ApiJson, Auth, ClientAddress, Identity};
use crate::web::schema;
use crate::web::AppState;

/// Everyone connected to the document, on every instance.
#[utoipa::path(get, path = "/api/documents/{id}/users", security(("bearer" = [])), responses(
    (status = 200, body = Vec<schema::Presence>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_users(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<Presence>>, ApiError> {
    role_for(&state, &id, &who).await?;
    Ok(Json(state.hub.users(&id).await?))
}

/// Someone with access: the owner or a member.
#[derive(Serialize, ToSchema)]
pub struct MemberListItem {
    username: String,
    name: String,
    #[schema(value_type = schema::Role)]
    role: Role,
}

/// One page of who has access.
#[derive(Serialize, ToSchema)]
pub struct MemberPage {
    /// The owner first (on the first page), then members by username.
    items: Vec<MemberListItem>,
    /// Everyone with access: the owner and every member.
    total: u64,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct MemberQuery {
    /// The `next` of the page before (a username); absent: the first page.
    after: Option<String>,
    /// Members per page: 1-200 (default 100).
    limit: Option<i64>,
}

/// Who has access to the document, a page at a time: its owner first, then
/// the members by username. Owner and members may read it.
#[utoipa::path(get, path = "/api/documents/{id}/members", params(MemberQuery), security(("bearer" = [])), responses(
    (status = 200, body = MemberPage, description = "The owner, then the members"),
    (status = 400, body = ErrorBody, description = "Bad document id or cursor"),
    (status = 401, body = ErrorBody, description = "Not signed in"),
    (status = 403, body = ErrorBody, description = "No access to the document"),
    (status = 404, body = ErrorBody, description = "No such document")))]
pub async fn get_members(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Query(q): Query<MemberQuery>,
) -> Result<Json<MemberPage>, ApiError> {
    who.user()?;
    role_for(&state, &id, &who).await?;
    let after = q.after.filter(|a| !a.is_empty());
    if after.as_deref().is_some_and(|a| !valid_username(a)) {
        return Err(ApiError::BadRequest("after must be a username".into()));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 200);
    // One more than asked: whether there is a next page.
    let mut rows = state
        .store
        .members(&id, after.as_deref(), limit + 1)
        .await?;
    let owner = usize::from(rows.first().is_some_and(|m| m.role == Role::Owner));
    let more = rows.len() > owner + usize::try_from(limit).unwrap_or(0);
    rows.truncate(owner + usize::try_from(limit).unwrap_or(0));
    let next = more
        .then(|| rows.last().map(|m| m.username.clone()))
        .flatten();
    let has_owner = state
        .store
        .document_row(&id)
        .await?
        .is_some_and(|d| d.owner_username.is_some());
    let total = state.store.member_count(&id).await? + u64::from(has_owner);
    Ok(Json(MemberPage {
        items: rows
            .into_iter()
            .map(|m| MemberListItem {
                username: m.username,
                name: m.name,
                role: m.role,
            })
            .collect(),
        total,
        next,
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct MemberBody {
    /// "editor" or "viewer"
    role: String,
}

#[derive(Serialize, ToSchema)]
pub struct MemberOut {
    username: String,
    #[schema(value_type = schema::Role)]
    role: Role,
}

/// The caller, if they own the document, charged one member change
/// (the limit REST edits share, `OP_RATE_PER_SEC`).
async fn owner(state: &AppState, who: &Identity, id: &str) -> Result<String, ApiError> {
    let owner = who.user()?;
    if role_for(state, id, who).await? != Role::Owner {
        return Err(ApiError::Forbidden("only the owner can manage members"));
    }
    state.abuse.check(Limit::RestEdit, &owner.sub).await?;
    Ok(owner.sub.clone())
}

/// Share with a user (owner only); takes effect on live sockets at once.
///
/// A share with someone not yet a member counts against
/// `NEW_SHARES_PER_HOUR` (per user and per address) whether or not the
/// username exists, before anything is answered, so whether it exists is
/// told no faster than that.
#[utoipa::path(put, path = "/api/documents/{id}/members/{username}", request_body = MemberBody,
    security(("bearer" = [])), responses((status = 200, body = MemberOut, description = "Shared (or the role changed)"),
    (status = 400, body = ErrorBody, description = "Bad role, or the owner named"),
    (status = 403, body = ErrorBody, description = "Not the owner; or the document has MAX_MEMBERS_PER_DOC members (quota_exceeded)"),
    (status = 404, body = ErrorBody, description = "No such document, or no account has this username (they must sign up first)"),
    (status = 429, body = ErrorBody, description = "Too many changes, or too many new shares")))]
pub async fn put_member(
    State(state): State<AppState>,
    Auth(who): Auth,
    ClientAddress(ip): ClientAddress,
    Path((id, username)): Path<(String, String)>,
    ApiJson(body): ApiJson<MemberBody>,
) -> Result<Json<MemberOut>, ApiError> {
    let role = match body.role.as_str() {
        "editor" => Role::Editor,
        "viewer" => Role::Viewer,
        _ => return Err(ApiError::BadRequest("role must be editor or viewer".into())),
    };
    let owner = owner(&state, &who, &id).await?;
    if !valid_username(&username) {
        return Err(ApiError::BadRequest("that is not a username".into()));
    }
    let member = state.store.user_by_username(&username).await?;
    if member.as_ref().is_some_and(|m| m.id == owner) {
        return Err(ApiError::BadRequest(
            "the owner's role cannot change".into(),
        ));
    }
    let is_member = match &member {
        Some(m) => state.store.role_of(&id, &m.id).await?.is_some(),
        None => false,
    };
    if !is_member {
        // Charged whether or not the username exists.
        state
            .abuse
            .check(Limit::NewShare, &format!("u:{owner}"))
            .await?;
        state
            .abuse
            .check(Limit::NewShare, &format!("a:{ip}"))
            .await?;
    }
    let member = member.ok_or(ApiError::NotFound(
        "no account has this username yet: they need to sign up first, then share again",
    ))?;
    let max = state.config.max_members_per_doc;
    if state.store.set_member(&id, &member.id, role, max).await? == Shared::Full {
        return Err(ApiError::MembersFull(max));
    }
    let change = AccessChange::Member {
        user: member.id,
        role: Some(role),
    };
    state.hub.notify_access(&id, change).await?;
    Ok(Json(MemberOut { username, role }))
}

/// Stop sharing with a user (owner only); their live sockets are closed.
/// 204 whether or not the username names a member, or anyone: the answer
/// tells nothing of which usernames exist.
#[utoipa::path(delete, path = "/api/documents/{id}/members/{username}", security(("bearer" = [])), responses(
    (status = 204, description = "The username is not a member (now)"), (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "No such document"),
    (status = 429, body = ErrorBody)))]
pub async fn delete_member(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let owner = owner(&state, &who, &id).await?;
    if !valid_username(&username) {
        return Err(ApiError::BadRequest("that is not a username".into()));
    }
    let Some(member) = state.store.user_by_username(&username).await? else {
        return Ok(StatusCode::NO_CONTENT);
    };
    if member.id == owner {
        return Err(ApiError::BadRequest(
            "the owner's role cannot change".into(),
        ));
    }
    if state.store.remove_member(&id, &member.id).await? {
        let change = AccessChange::Member {
            user: member.id,
            role: None,
        };
        state.hub.notify_access(&id, change).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
