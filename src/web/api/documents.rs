//! Documents: create, list, read, update (title, language, content),
//! delete; HTTP edits (`ops`); tags; the languages a document can be in.
//! Must not import: sqlx, redis.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{edit, refused, user_id, ErrorBody};
use crate::hub::{now_ms, AccessChange, Edit, MetaChange};
use crate::language;
use crate::meta::{valid_tag, MetaView};
use crate::ot::{splice, Operation};
use crate::protocol::{is_hidden_control, Role};
use crate::store::accounts::Created;
use crate::web::abuse::Limit;
use crate::web::error::ApiError;
use crate::web::identity::{role_for, ApiJson, Auth, Identity};
use crate::web::schema;
use crate::web::AppState;

#[derive(Deserialize, ToSchema)]
pub struct CreateBody {
    title: String,
    content: Option<String>,
    /// A language id of `GET /api/languages`; left out, the title's
    /// extension says (`main.rs` is Rust).
    language: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateBody {
    title: Option<String>,
    content: Option<String>,
    /// A language id of `GET /api/languages`, or `""` to go back to guessing
    /// from the title. Reaches every open editor live, as the title does.
    language: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentOut {
    id: String,
    title: String,
    /// The language to show it in: the one chosen, or the guess from the
    /// title's extension (`plaintext` when there is none).
    language: String,
    /// Whether `language` was chosen (true) or guessed from the title.
    language_set: bool,
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
    /// The language it is shown in (chosen, or guessed from the title).
    language: String,
    version: u64,
    updated_at: i64,
    #[schema(value_type = schema::Role)]
    role: Role,
    /// The owner's username (absent on unowned anonymous-mode documents).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

#[derive(Deserialize, IntoParams)]
pub struct Page {
    /// At most 100 (default 50).
    limit: Option<i64>,
    offset: Option<i64>,
}

fn check_title(t: &str) -> Result<(), ApiError> {
    if t.chars().count() > 200 || t.chars().any(is_hidden_control) {
        return Err(ApiError::BadRequest(
            "titles are up to 200 printable characters, without direction overrides or invisible characters".into(),
        ));
    }
    Ok(())
}

/// A language to choose: empty (none: guess from the title) or a known id.
fn check_language(l: &str) -> Result<(), ApiError> {
    if !l.is_empty() && !language::valid(l) {
        return Err(ApiError::BadRequest(
            "unknown language: see GET /api/languages for the ids".into(),
        ));
    }
    Ok(())
}

pub(super) async fn document_out(
    state: &AppState,
    id: &str,
    role: Role,
) -> Result<DocumentOut, ApiError> {
    let meta = state
        .store
        .document_row(id)
        .await?
        .ok_or(ApiError::NotFound("no such document"))?;
    let view = state.hub.view(id).await?;
    Ok(DocumentOut {
        id: meta.id,
        title: view.meta.title,
        language: view.meta.language,
        language_set: view.meta.language_set,
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
    (status = 201, body = DocumentOut), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody, description = "the caller owns MAX_DOCS_PER_USER documents already")))]
pub async fn create_document(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<DocumentOut>), ApiError> {
    let user = who.user()?;
    if let Some(l) = &body.language {
        check_language(l)?;
    }
    let content = body.content.unwrap_or_default();
    let language = body.language.filter(|l| !l.is_empty());
    let id = create_owned(&state, &user.sub, &body.title, &content, language).await?;
    Ok((
        StatusCode::CREATED,
        Json(document_out(&state, &id, Role::Owner).await?),
    ))
}

/// Create a document owned by `user` with `title`, `content` and a chosen
/// `language` (a known id; checked by the caller) (checked here: title
/// rules, `MAX_DOC_CHARS`, `MAX_DOCS_PER_USER`); non-empty content goes in
/// as one op, a REST edit (its rate is taken before the document is
/// created, so a refusal creates nothing). Returns its id.
pub(super) async fn create_owned(
    state: &AppState,
    user: &str,
    title: &str,
    content: &str,
    language: Option<String>,
) -> Result<String, ApiError> {
    check_title(title)?;
    if content.chars().count() > state.config.max_doc_chars {
        return Err(ApiError::PayloadTooLarge);
    }
    if !content.is_empty() {
        state.abuse.check(Limit::RestEdit, user).await?;
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let max = state.config.max_docs_per_user;
    match state
        .store
        .create_document(&id, title, user, now_ms(), max)
        .await?
    {
        Created::Created => {}
        Created::Exists => return Err(ApiError::Internal),
        Created::OverQuota => return Err(ApiError::QuotaExceeded(max)),
    }
    if let Some(l) = language {
        refused(state.hub.meta(&id, MetaChange::Language(l)).await?)?;
    }
    if !content.is_empty() {
        let op = splice(0, 0, 0, content);
        let edit = Edit::Op { version: 0, op };
        refused(state.hub.edit(&id, user, Role::Owner, edit).await?)?;
    }
    Ok(id)
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
                language: language::effective(&d.language, &d.title).to_owned(),
                title: d.title,
                version: d.version,
                updated_at: d.updated_at,
                role: d.role,
                owner: d.owner,
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

/// Rename, choose the language, and/or replace the content (as one op:
/// live clients converge).
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
    if let Some(l) = &body.language {
        check_language(l)?;
    }
    if let Some(content) = body.content {
        if content.chars().count() > state.config.max_doc_chars {
            return Err(ApiError::PayloadTooLarge);
        }
        // The edit takes the request's unit of the edit allowance first:
        // a refusal changes nothing.
        let user = user_id(&who);
        edit(&state, &id, &user, role, Edit::Replace(content)).await?;
    } else if body.title.is_some() || body.language.is_some() {
        // Each change is sent to every client: limited as edits are.
        state.abuse.check(Limit::RestEdit, &user_id(&who)).await?;
    }
    if let Some(title) = body.title {
        refused(state.hub.meta(&id, MetaChange::Title(title)).await?)?;
    }
    if let Some(l) = body.language {
        refused(state.hub.meta(&id, MetaChange::Language(l)).await?)?;
    }
    Ok(Json(document_out(&state, &id, role).await?))
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
    pub(super) version: u64,
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
    let version = edit(
        &state,
        &id,
        &user_id(&who),
        role,
        Edit::Op {
            version: body.version,
            op,
        },
    )
    .await?;
    Ok(Json(VersionOut { version }))
}

#[derive(Deserialize, ToSchema)]
pub struct TagBody {
    /// 1–32 characters: letters, digits, spaces (not first or last) and
    /// `-_.:/#+`. A document carries at most `MAX_TAGS_PER_DOC` (default 32).
    tag: String,
}

fn check_tag(tag: &str) -> Result<(), ApiError> {
    if !valid_tag(tag) {
        return Err(ApiError::BadRequest(
            "tags are 1–32 letters, digits, spaces or -_.:/#+ (no space first or last)".into(),
        ));
    }
    Ok(())
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
    // Each change is sent to every client: limited as edits are.
    state.abuse.check(Limit::RestEdit, &user_id(who)).await?;
    match state.hub.meta(id, change).await? {
        Ok(view) => Ok(Json(view)),
        // Nothing changed: the document refused the tag.
        Err(refusal) => Err(ApiError::BadRequest(refusal.message)),
    }
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
    check_tag(&body.tag)?;
    change_tags(&state, &who, &id, MetaChange::AddTag(body.tag)).await
}

/// Remove a tag (the tags this server has seen; a concurrent add elsewhere wins).
#[utoipa::path(delete, path = "/api/documents/{id}/tags/{tag}", security(("bearer" = [])), responses(
    (status = 200, body = schema::MetaView), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn remove_tag(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path((id, tag)): Path<(String, String)>,
) -> Result<Json<MetaView>, ApiError> {
    check_tag(&tag)?;
    change_tags(&state, &who, &id, MetaChange::RemoveTag(tag)).await
}

/// A language a document can be shown in.
#[derive(Serialize, ToSchema)]
pub struct LanguageOut {
    /// What `language` fields carry.
    id: &'static str,
    /// The name to show in menus.
    name: &'static str,
    /// File extensions it is guessed from (the first names exported files).
    extensions: &'static [&'static str],
}

/// Every language a document can be in, in menu order (no sign-in needed).
#[utoipa::path(get, path = "/api/languages", responses(
    (status = 200, body = Vec<LanguageOut>, description = "the languages, in menu order")))]
pub async fn list_languages() -> Json<Vec<LanguageOut>> {
    Json(
        language::LANGUAGES
            .iter()
            .map(|l| LanguageOut {
                id: l.id,
                name: l.name,
                extensions: l.extensions,
            })
            .collect(),
    )
}
