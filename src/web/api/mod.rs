//! REST handlers: accounts, documents, HTTP edits, members, presence,
//! health and metrics. Every route is described in the OpenAPI document
//! served at `/api/openapi.json`.
//!
//! Owns: `ApiDoc` (the OpenAPI document), health/readiness/metrics, the
//! helpers the handler modules share. Handlers: `accounts.rs` (register,
//! login, logout, password change, account deletion), `tickets.rs`
//! (single-use WebSocket tickets), `documents.rs` (CRUD, HTTP edits, tags),
//! `files.rs` (export, import), `history.rs` (records, versions, restore),
//! `sessions.rs` (history as sessions), `members.rs` (presence, sharing).
//! Must not import: sqlx, redis (the store and the hub are reached through
//! `AppState`).

mod accounts;
mod documents;
mod files;
mod history;
mod members;
mod openapi;
mod sessions;
mod tickets;

use openapi::Extras;

pub use accounts::{change_password, delete_account, login, logout, register};
pub use documents::{
    add_tag, create_document, delete_document, get_document, list_documents, list_languages,
    post_ops, remove_tag, update_document,
};
pub use files::{export_document, import_document};
pub use history::{get_history, get_version, restore_version};
pub use members::{delete_member, get_members, get_users, put_member};
pub use sessions::get_sessions;
pub use tickets::{redeem, ws_ticket};

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::error::ApiError;
use super::identity::Identity;
use super::schema;
use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tandem",
        description = "Real-time collaborative editing server. Every route below but the WebSocket \
            can be tried from this page: sign in with `POST /api/auth/login` (or register), copy \
            the `token` and press **Authorize**. The WebSocket protocol (the messages after \
            `GET /ws/{id}`) is on [its own page](/docs/protocol)."
    ),
    modifiers(&Extras),
    tags(
        (name = "websocket", description = "The live session: one WebSocket per open document. \
            Its messages are described on [the protocol page](/docs/protocol).")
    ),
    paths(
        healthz,
        readyz,
        metrics,
        accounts::register,
        accounts::login,
        accounts::logout,
        accounts::change_password,
        accounts::delete_account,
        tickets::ws_ticket,
        documents::create_document,
        documents::list_documents,
        documents::get_document,
        documents::update_document,
        documents::delete_document,
        documents::list_languages,
        documents::post_ops,
        files::export_document,
        files::import_document,
        history::get_history,
        sessions::get_sessions,
        history::get_version,
        documents::add_tag,
        documents::remove_tag,
        history::restore_version,
        members::get_users,
        members::get_members,
        members::put_member,
        members::delete_member,
        openapi
    ),
    components(schemas(
        accounts::RegisterBody,
        accounts::LoginBody,
        accounts::PasswordBody,
        accounts::DeleteAccountBody,
        accounts::AuthResponse,
        accounts::UserOut,
        tickets::TicketBody,
        tickets::TicketOut,
        documents::CreateBody,
        documents::UpdateBody,
        documents::DocumentOut,
        documents::DocumentListItem,
        documents::LanguageOut,
        documents::OpsBody,
        documents::VersionOut,
        history::HistoryItem,
        sessions::SessionsPage,
        sessions::Session,
        sessions::Author,
        history::VersionContent,
        documents::TagBody,
        schema::MetaView,
        members::MemberBody,
        members::MemberOut,
        members::MemberListItem,
        members::MemberPage,
        schema::Presence,
        schema::PresenceState,
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
pub async fn readyz(State(state): State<AppState>) -> Result<String, ApiError> {
    match state.hub.ready().await {
        Ok(None) => Ok("ready".into()),
        Ok(Some(degraded)) => Ok(format!("ready (degraded: {degraded})")),
        Err(why) => Err(ApiError::NotReady(why)),
    }
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

/// A REST edit, limited per user as a socket's ops are per connection
/// (OP_RATE_PER_SEC, OP_RATE_BURST): the new version, or the refusal.
async fn edit(
    state: &AppState,
    doc: &str,
    user: &str,
    role: crate::protocol::Role,
    edit: crate::hub::Edit,
) -> Result<u64, ApiError> {
    state
        .abuse
        .check(crate::web::abuse::Limit::RestEdit, user)
        .await?;
    state
        .hub
        .edit(doc, user, role, edit)
        .await?
        .map_err(ApiError::Refused)
}

fn refused<T>(r: Result<T, crate::hub::Refusal>) -> Result<T, ApiError> {
    r.map_err(ApiError::Refused)
}

fn user_id(who: &Identity) -> String {
    match who {
        Identity::User(c) => c.sub.clone(),
        Identity::Anonymous => "anonymous".into(),
    }
}
