//! Who is here and who may: live presence, the member list, sharing with
//! members.
//! Must not import: sqlx, redis.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ErrorBody;
use crate::hub::AccessChange;
use crate::protocol::{Presence, Role};
use crate::store::accounts::UserRow;
use crate::web::error::ApiError;
use crate::web::identity::{role_for, ApiJson, Auth, Identity};
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

/// Who has access to the document: its owner first, then the members by
/// username (at most 1,000). Owner and members may read it.
#[utoipa::path(get, path = "/api/documents/{id}/members", security(("bearer" = [])), responses(
    (status = 200, body = Vec<MemberListItem>, description = "The owner, then the members"),
    (status = 400, body = ErrorBody, description = "Bad document id"),
    (status = 401, body = ErrorBody, description = "Not signed in"),
    (status = 403, body = ErrorBody, description = "No access to the document"),
    (status = 404, body = ErrorBody, description = "No such document")))]
pub async fn get_members(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<MemberListItem>>, ApiError> {
    who.user()?;
    role_for(&state, &id, &who).await?;
    let rows = state.store.members(&id).await?;
    Ok(Json(
        rows.into_iter()
            .map(|m| MemberListItem {
                username: m.username,
                name: m.name,
                role: m.role,
            })
            .collect(),
    ))
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

async fn owner_and_member(
    state: &AppState,
    who: &Identity,
    id: &str,
    username: &str,
) -> Result<UserRow, ApiError> {
    let owner = who.user()?;
    if role_for(state, id, who).await? != Role::Owner {
        return Err(ApiError::Forbidden("only the owner can manage members"));
    }
    let member = state
        .store
        .user_by_username(username)
        .await?
        .ok_or(ApiError::NotFound(
            "no account has this username yet: they need to sign up first, then share again",
        ))?;
    if member.id == owner.sub {
        return Err(ApiError::BadRequest(
            "the owner's role cannot change".into(),
        ));
    }
    Ok(member)
}

/// Share with a user (owner only); takes effect on live sockets at once.
#[utoipa::path(put, path = "/api/documents/{id}/members/{username}", request_body = MemberBody,
    security(("bearer" = [])), responses((status = 200, body = MemberOut, description = "Shared (or the role changed)"),
    (status = 400, body = ErrorBody, description = "Bad role, or the owner named"),
    (status = 403, body = ErrorBody, description = "Not the owner"),
    (status = 404, body = ErrorBody, description = "No such document, or no account has this username (they must sign up first)")))]
pub async fn put_member(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, username)): Path<(String, String)>,
    ApiJson(body): ApiJson<MemberBody>,
) -> Result<Json<MemberOut>, ApiError> {
    let role = match body.role.as_str() {
        "editor" => Role::Editor,
        "viewer" => Role::Viewer,
        _ => return Err(ApiError::BadRequest("role must be editor or viewer".into())),
    };
    let member = owner_and_member(&state, &who, &id, &username).await?;
    state.store.set_member(&id, &member.id, role).await?;
    let change = AccessChange::Member {
        user: member.id,
        role: Some(role),
    };
    state.hub.notify_access(&id, change).await?;
    Ok(Json(MemberOut { username, role }))
}

/// Stop sharing with a user (owner only); their live sockets are closed.
#[utoipa::path(delete, path = "/api/documents/{id}/members/{username}", security(("bearer" = [])), responses(
    (status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_member(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, username)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let member = owner_and_member(&state, &who, &id, &username).await?;
    state.store.remove_member(&id, &member.id).await?;
    let change = AccessChange::Member {
        user: member.id,
        role: None,
    };
    state.hub.notify_access(&id, change).await?;
    Ok(StatusCode::NO_CONTENT)
}
