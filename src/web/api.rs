//! REST handlers: accounts, documents, HTTP edits, members, presence,
//! health and metrics. Every route is described in the OpenAPI document
//! served at `/api/openapi.json`.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::error::ApiError;
use super::identity::{now_secs, role_for, ApiJson, Auth, Identity};
use super::schema;
use super::AppState;
use crate::auth::{dummy_hash, hash_password, valid_password, valid_username, verify_password};
use crate::hub::{now_ms, AccessChange, Edit, MetaChange};
use crate::limits::TokenBucket;
use crate::meta::{valid_tag, MetaView};
use crate::ot::{splice, Operation};
use crate::protocol::{color_for, valid_name, Presence, Role};
use crate::store::accounts::UserRow;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tandem",
        description = "Real-time collaborative editing server. WebSocket protocol: docs/protocol.md"
    ),
    paths(
        healthz,
        readyz,
        metrics,
        register,
        login,
        create_document,
        list_documents,
        get_document,
        update_document,
        delete_document,
        post_ops,
        get_history,
        get_version,
        add_tag,
        remove_tag,
        restore_version,
        get_users,
        put_member,
        delete_member,
        openapi
    ),
    components(schemas(
        RegisterBody,
        LoginBody,
        AuthResponse,
        UserOut,
        CreateBody,
        UpdateBody,
        DocumentOut,
        DocumentListItem,
        OpsBody,
        VersionOut,
        HistoryItem,
        VersionContent,
        TagBody,
        schema::MetaView,
        MemberBody,
        MemberOut,
        schema::Presence,
        schema::Role,
        ErrorBody,
        ErrorDetail
    ))
)]
struct ApiDoc;

/// `{"error": {"code", "message"}}`
#[derive(Serialize, ToSchema)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// The OpenAPI description of this API.
#[utoipa::path(get, path = "/api/openapi.json", responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Alive (the server accepts connections).
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ok")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready for traffic: not draining, Redis and the database reachable.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state
        .hub
        .ready()
        .await
        .map(|()| "ready")
        .map_err(ApiError::NotReady)
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> String {
    metrics::gauge!("tandem_open_documents").set(state.hub.open_documents() as f64);
    state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default()
}

// ---- accounts ----

#[derive(Deserialize, ToSchema)]
pub struct RegisterBody {
    username: String,
    password: String,
    name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize, ToSchema)]
pub struct UserOut {
    id: String,
    username: String,
    name: String,
    color: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuthResponse {
    user: UserOut,
    token: String,
}

fn user_out(u: &UserRow) -> UserOut {
    UserOut {
        id: u.id.clone(),
        username: u.username.clone(),
        name: u.name.clone(),
        color: color_for(&u.id),
    }
}

/// Create an account.
#[utoipa::path(post, path = "/api/auth/register", request_body = RegisterBody, responses(
    (status = 201, body = AuthResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody, description = "username taken")))]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    if !valid_username(&body.username) {
        return Err(ApiError::BadRequest(
            "usernames are 3-32 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit".into(),
        ));
    }
    if !valid_password(&body.password) {
        return Err(ApiError::BadRequest("passwords are 8-256 bytes".into()));
    }
    let name = body.name.unwrap_or_else(|| body.username.clone());
    if !valid_name(&name) {
        return Err(ApiError::BadRequest(
            "name must be 1-100 printable characters".into(),
        ));
    }
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| ApiError::Internal)?;
    let user = UserRow {
        id: uuid::Uuid::new_v4().simple().to_string(),
        username: body.username,
        name,
        password_hash: hash,
    };
    if !state.store.create_user(&user, now_ms()).await? {
        return Err(ApiError::Conflict("that username is taken"));
    }
    let token = state
        .keys
        .issue(&user.id, &user.username, &user.name, now_secs());
    Ok((
        StatusCode::CREATED,
        Json(AuthResponse {
            user: user_out(&user),
            token,
        }),
    ))
}

/// Take a token for `key`'s login bucket, if any is left.
fn login_allowed(state: &AppState, key: String) -> bool {
    let now = Instant::now();
    let per_min = state.config.login_attempts_per_min;
    let mut buckets = state.login_limits.lock().unwrap_or_else(|e| e.into_inner());
    if buckets.len() > 100_000 {
        buckets.clear(); // bounded memory under a flood of distinct keys
    }
    buckets
        .entry(key)
        .or_insert_with(|| TokenBucket::per_minute(per_min, per_min, now))
        .allow(now)
}

/// Exchange a username and password for a token.
#[utoipa::path(post, path = "/api/auth/login", request_body = LoginBody, responses(
    (status = 200, body = AuthResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<AuthResponse>, ApiError> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = super::client_ip(&state.conn_limits, peer, req.headers());
    let ApiJson(body) = ApiJson::<LoginBody>::from_request_inner(req, &state).await?;
    let by_ip = login_allowed(&state, format!("ip:{ip}"));
    let by_user = login_allowed(&state, format!("user:{}", body.username));
    if !by_ip || !by_user {
        return Err(ApiError::TooManyRequests);
    }
    let user = state.store.user_by_username(&body.username).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_owned(), |u| u.password_hash.clone());
    let password = body.password;
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|_| ApiError::Internal)?;
    // Same answer for an unknown user and a wrong password.
    let user = user
        .filter(|_| ok)
        .ok_or(ApiError::Unauthorized("invalid username or password"))?;
    let token = state
        .keys
        .issue(&user.id, &user.username, &user.name, now_secs());
    Ok(Json(AuthResponse {
        user: user_out(&user),
        token,
    }))
}

impl<T: serde::de::DeserializeOwned> ApiJson<T> {
    async fn from_request_inner(req: Request, state: &AppState) -> Result<Self, ApiError> {
        <Self as axum::extract::FromRequest<AppState>>::from_request(req, state).await
    }
}

// ---- documents ----

#[derive(Deserialize, ToSchema)]
pub struct CreateBody {
    title: String,
    content: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateBody {
    title: Option<String>,
    content: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentOut {
    id: String,
    title: String,
    content: String,
    version: u64,
    /// Owner's username (null for anonymous documents).
    owner: Option<String>,
    #[schema(value_type = schema::Role)]
    role: Role,
    created_at: i64,
    updated_at: i64,
    /// Replicated tags (an add wins over a concurrent remove).
    tags: Vec<String>,
    /// Times the document was opened, counted on every instance.
    views: u64,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentListItem {
    id: String,
    title: String,
    version: u64,
    updated_at: i64,
    #[schema(value_type = schema::Role)]
    role: Role,
}

#[derive(Deserialize, IntoParams)]
pub struct Page {
    /// At most 100 (default 50).
    limit: Option<i64>,
    offset: Option<i64>,
}

fn check_title(t: &str) -> Result<(), ApiError> {
    if t.chars().count() > 200 || t.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "titles are up to 200 printable characters".into(),
        ));
    }
    Ok(())
}

fn refused(r: Result<u64, crate::hub::Refusal>) -> Result<u64, ApiError> {
    r.map_err(ApiError::Refused)
}

async fn document_out(state: &AppState, id: &str, role: Role) -> Result<DocumentOut, ApiError> {
    let meta = state
        .store
        .document_meta(id)
        .await?
        .ok_or(ApiError::NotFound("no such document"))?;
    let view = state.hub.view(id).await?;
    Ok(DocumentOut {
        id: meta.id,
        title: view.meta.title,
        tags: view.meta.tags,
        views: view.meta.views,
        content: view.content,
        version: view.version,
        owner: meta.owner_username,
        role,
        created_at: meta.created_at,
        updated_at: meta.updated_at,
    })
}

/// Create a document owned by the caller.
#[utoipa::path(post, path = "/api/documents", request_body = CreateBody, security(("bearer" = [])), responses(
    (status = 201, body = DocumentOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create_document(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<DocumentOut>), ApiError> {
    let user = who.user()?;
    check_title(&body.title)?;
    let content = body.content.unwrap_or_default();
    if content.chars().count() > state.config.max_doc_chars {
        return Err(ApiError::PayloadTooLarge);
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    if !state
        .store
        .create_document(&id, &body.title, &user.sub, now_ms())
        .await?
    {
        return Err(ApiError::Internal);
    }
    if !content.is_empty() {
        let op = splice(0, 0, 0, &content);
        refused(
            state
                .hub
                .edit(&id, &user.sub, Role::Owner, Edit::Op { version: 0, op })
                .await?,
        )?;
    }
    Ok((
        StatusCode::CREATED,
        Json(document_out(&state, &id, Role::Owner).await?),
    ))
}

/// Documents the caller owns or is a member of, newest first.
#[utoipa::path(get, path = "/api/documents", params(Page), security(("bearer" = [])), responses(
    (status = 200, body = Vec<DocumentListItem>), (status = 401, body = ErrorBody)))]
pub async fn list_documents(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(page): Query<Page>,
) -> Result<Json<Vec<DocumentListItem>>, ApiError> {
    let user = who.user()?;
    let limit = page.limit.unwrap_or(50).clamp(1, 100);
    let offset = page.offset.unwrap_or(0).max(0);
    let docs = state.store.list_documents(&user.sub, limit, offset).await?;
    Ok(Json(
        docs.into_iter()
            .map(|d| DocumentListItem {
                id: d.id,
                title: d.title,
                version: d.version,
                updated_at: d.updated_at,
                role: d.role,
            })
            .collect(),
    ))
}

/// The document's live content and version.
#[utoipa::path(get, path = "/api/documents/{id}", security(("bearer" = [])), responses(
    (status = 200, body = DocumentOut), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_document(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Json<DocumentOut>, ApiError> {
    let role = role_for(&state, &id, &who).await?;
    Ok(Json(document_out(&state, &id, role).await?))
}

/// Rename, and/or replace the content (as one op: live clients converge).
#[utoipa::path(put, path = "/api/documents/{id}", request_body = UpdateBody, security(("bearer" = [])), responses(
    (status = 200, body = DocumentOut), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_document(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<DocumentOut>, ApiError> {
    let role = role_for(&state, &id, &who).await?;
    if !role.can_edit() {
        return Err(ApiError::Forbidden("viewers cannot edit"));
    }
    if let Some(title) = &body.title {
        check_title(title)?;
    }
    if let Some(content) = body.content {
        if content.chars().count() > state.config.max_doc_chars {
            return Err(ApiError::PayloadTooLarge);
        }
        let user = user_id(&who);
        refused(
            state
                .hub
                .edit(&id, &user, role, Edit::Replace(content))
                .await?,
        )?;
    }
    if let Some(title) = body.title {
        state.hub.meta(&id, MetaChange::Title(title)).await?;
    }
    Ok(Json(document_out(&state, &id, role).await?))
}

fn user_id(who: &Identity) -> String {
    match who {
        Identity::User(c) => c.sub.clone(),
        Identity::Anonymous => "anonymous".into(),
    }
}

/// Delete (owner only); live clients everywhere are told and closed.
#[utoipa::path(delete, path = "/api/documents/{id}", security(("bearer" = [])), responses(
    (status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_document(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if role_for(&state, &id, &who).await? != Role::Owner || matches!(who, Identity::Anonymous) {
        return Err(ApiError::Forbidden("only the owner can delete a document"));
    }
    state.store.delete_document(&id).await?;
    state.hub.notify_access(&id, AccessChange::Deleted).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
pub struct OpsBody {
    version: u64,
    /// ot.js-style operation: [retain n | "insert" | -delete n, ...]
    #[schema(value_type = Vec<Object>)]
    op: Value,
}

#[derive(Serialize, ToSchema)]
pub struct VersionOut {
    version: u64,
}

/// Edit over HTTP: the op is transformed like a WebSocket op.
#[utoipa::path(post, path = "/api/documents/{id}/ops", request_body = OpsBody, security(("bearer" = [])), responses(
    (status = 200, body = VersionOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "version_out_of_range")))]
pub async fn post_ops(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<OpsBody>,
) -> Result<Json<VersionOut>, ApiError> {
    let role = role_for(&state, &id, &who).await?;
    let op = Operation::from_json(&body.op, state.config.max_op_components).map_err(|e| {
        ApiError::Refused(crate::hub::Refusal {
            code: crate::protocol::ErrorCode::BadOp,
            message: e.to_string(),
        })
    })?;
    let version = refused(
        state
            .hub
            .edit(
                &id,
                &user_id(&who),
                role,
                Edit::Op {
                    version: body.version,
                    op,
                },
            )
            .await?,
    )?;
    Ok(Json(VersionOut { version }))
}

#[derive(Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// Records after this version (default 0: from the start).
    since: Option<u64>,
    /// At most 1000 (default 100). The next page starts after the last version returned.
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

/// The committed ops after `since`, oldest first, a page at a time.
#[utoipa::path(get, path = "/api/documents/{id}/history", params(HistoryQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<HistoryItem>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_history(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<HistoryItem>>, ApiError> {
    role_for(&state, &id, &who).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let (_, records) = state.hub.history(&id, q.since.unwrap_or(0), limit).await?;
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
    let version = refused(
        state
            .hub
            .edit(&id, &user_id(&who), role, Edit::Replace(content))
            .await?,
    )?;
    Ok(Json(VersionOut { version }))
}

#[derive(Deserialize, ToSchema)]
pub struct TagBody {
    /// 1–32 characters, no commas or control characters.
    tag: String,
}

async fn change_tags(
    state: &AppState,
    who: &Identity,
    id: &str,
    change: MetaChange,
) -> Result<Json<MetaView>, ApiError> {
    if !role_for(state, id, who).await?.can_edit() {
        return Err(ApiError::Forbidden("viewers cannot edit"));
    }
    Ok(Json(state.hub.meta(id, change).await?))
}

/// Tag the document; every instance's clients receive the change.
#[utoipa::path(post, path = "/api/documents/{id}/tags", request_body = TagBody, security(("bearer" = [])), responses(
    (status = 200, body = schema::MetaView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn add_tag(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TagBody>,
) -> Result<Json<MetaView>, ApiError> {
    if !valid_tag(&body.tag) {
        return Err(ApiError::BadRequest(
            "tags are 1–32 characters, no commas or control characters".into(),
        ));
    }
    change_tags(&state, &who, &id, MetaChange::AddTag(body.tag)).await
}

/// Remove a tag (the tags this server has seen; a concurrent add elsewhere wins).
#[utoipa::path(delete, path = "/api/documents/{id}/tags/{tag}", security(("bearer" = [])), responses(
    (status = 200, body = schema::MetaView), (status = 403, body = ErrorBody)))]
pub async fn remove_tag(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Json<MetaView>, ApiError> {
    change_tags(&state, &who, &id, MetaChange::RemoveTag(tag)).await
}

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
        .ok_or(ApiError::NotFound("no such user"))?;
    if member.id == owner.sub {
        return Err(ApiError::BadRequest(
            "the owner's role cannot change".into(),
        ));
    }
    Ok(member)
}

/// Share with a user (owner only); takes effect on live sockets at once.
#[utoipa::path(put, path = "/api/documents/{id}/members/{username}", request_body = MemberBody,
    security(("bearer" = [])), responses((status = 200, body = MemberOut), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
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
