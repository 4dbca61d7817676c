//! The WebSocket upgrade, `GET /ws/{id}`: identity (a single-use
//! `?ticket=` for browsers, `api/tickets.rs`; else the Authorization header
//! or `?token=` for API clients), the query (client id, resume point), the
//! role, the caps on open sessions, then the hand-over to a session
//! (`session.rs`: reads frames into the document task, writes its queue). A
//! session opened with a token is registered with `tokens` and closed
//! (1008) when that token is revoked.
//!
//! Owns: [`upgrade`] and its checks, client ids scoped to their user. Must
//! not import: sqlx, redis; the session's frame handling stays in
//! `session.rs`.

mod session;

use std::net::SocketAddr;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info_span, Instrument, Span};

use self::session::{run_session, Joined};
use super::error::ApiError;
use super::identity::{identify, origin_allowed, role_for, Identity};
use super::tokens::LiveGuard;
use super::{client_ip, AppState, ConnLimits};
use crate::hub::Resume;
use crate::limits::ConnSlot;
use crate::protocol::{valid_id, valid_name, Role, UserInfo};

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    user_id: Option<String>,
    name: Option<String>,
    client: Option<String>,
    version: Option<String>,
    /// The `init.history` the client's version belongs to.
    history: Option<String>,
    token: Option<String>,
    /// A single-use ticket from `POST /api/auth/ws-ticket` (browsers).
    ticket: Option<String>,
}

/// Frames up to this many times the limit are read and refused with
/// `too_large`; larger ones end the connection (1009).
const HARD_LIMIT_FACTOR: usize = 4;
/// Per-connection read buffer. tungstenite's default (128 KiB) would make
/// an idle connection cost ~140 KiB; frames larger than this still arrive,
/// the buffer grows for them.
const READ_BUFFER: usize = 4 * 1024;

/// `GET /ws/{id}`: the checks, in order (shutdown and Origin, identity,
/// query, role, session caps), then the upgrade; the session runs in
/// `session.rs`.
pub async fn upgrade(
    State(state): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    held: Option<Extension<super::ConnPermit>>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    admit(&state, &headers)?;
    // The document id is checked by `role_for` (in `member`), on every path.
    let (who, live) = authenticate(&state, &doc, &q, &headers).await?;
    let (client, resume) = client_and_resume(&q)?;
    let (user, role, create) = member(&state, &doc, &who, &q).await?;
    let ip = client_ip(&state.conn_limits, peer.map(|p| p.0 .0), &headers);
    let slots = session_slots(&state.conn_limits, &ip, &user.id)?;
    let client = scoped_client(&user.id, client)?;
    let held = held.map(|Extension(p)| p).filter(super::ConnPermit::held);
    let own = own_permit(&state.conn_limits, held.is_some())?;
    let span = info_span!("ws", doc = %doc, client = %client, user = %user.id);
    if create {
        state.hub.ensure_document(&doc).await?;
    }
    let (conn, outbound) = state.hub.join(&doc, user, client, role, resume).await?;
    let permit = own.or_else(|| held.and_then(|p| p.take()));
    let joined = Joined {
        conn,
        outbound,
        doc,
        live,
    };
    Ok(start(ws, &state, joined, span, (slots, permit)))
}

/// The upgrade itself: the socket's limits, then the session on it,
/// tracked for shutdown and holding `held` (its slots under the caps)
/// until it ends.
fn start(
    ws: WebSocketUpgrade,
    state: &AppState,
    joined: Joined,
    span: Span,
    held: impl Send + 'static,
) -> Response {
    let hard = state
        .config
        .max_frame_bytes
        .saturating_mul(HARD_LIMIT_FACTOR);
    let (sessions, config) = (state.sessions.clone(), state.config.clone());
    ws.max_message_size(hard)
        .max_frame_size(hard)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            sessions.track_future(
                async move {
                    let (sink, stream) = socket.split();
                    run_session(sink, stream, config, joined).await;
                    drop(held);
                }
                .instrument(span),
            )
        })
        .into_response()
}

/// Refused while shutting down, and from an Origin not allowed.
fn admit(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.hub.is_shutting_down() {
        return Err(ApiError::Unavailable);
    }
    if !origin_allowed(state, headers) {
        return Err(ApiError::Forbidden("origin not allowed"));
    }
    Ok(())
}

/// Who is connecting (a ticket, else a token, else anonymous) and, for a
/// user, the session's registration with `tokens`.
async fn authenticate(
    state: &AppState,
    doc: &str,
    q: &WsQuery,
    headers: &HeaderMap,
) -> Result<(Identity, Option<LiveGuard>), ApiError> {
    let generation = state.tokens.generation();
    let who = match q.ticket.as_deref() {
        Some(ticket) => super::api::redeem(state, ticket, doc).await?,
        None => identify(state, headers, q.token.as_deref()).await?,
    };
    // Registered before the session starts, so a revocation from now on
    // closes it; one applied since the check above is checked again.
    let live = match &who {
        Identity::User(c) => {
            let live = state.tokens.track(c);
            if state.tokens.generation() != generation {
                state.tokens.check(c).await?;
            }
            Some(live)
        }
        Identity::Anonymous => None,
    };
    Ok((who, live))
}

/// The query's client id (a fresh one when absent; not yet scoped to its
/// user) and what the client resumes from.
fn client_and_resume(q: &WsQuery) -> Result<(String, Option<Resume>), ApiError> {
    let client = match &q.client {
        Some(c) if valid_id(c) => c.clone(),
        Some(_) => return Err(bad_id("client")),
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    let version = match q.version.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return Err(ApiError::BadRequest(
                "version must be a non-negative integer".into(),
            ))
        }
    };
    if q.history.as_deref().is_some_and(|h| !valid_id(h)) {
        return Err(bad_id("history"));
    }
    let resume = version.map(|version| Resume {
        version,
        history: q.history.clone(),
    });
    Ok((client, resume))
}

/// `what must be 1-64 characters of [A-Za-z0-9_.:@-]`.
fn bad_id(what: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{what} must be 1-64 characters of [A-Za-z0-9_.:@-]"
    ))
}

/// The user, their role in the document, and whether joining may create
/// it (anonymous users may open, and so create, documents nobody owns).
async fn member(
    state: &AppState,
    doc: &str,
    who: &Identity,
    q: &WsQuery,
) -> Result<(UserInfo, Role, bool), ApiError> {
    let c = match who {
        Identity::User(c) => c,
        Identity::Anonymous => {
            let user = anonymous_user(q)?;
            let role = match role_for(state, doc, who).await {
                Err(ApiError::NotFound(_)) => Role::Editor,
                r => r?,
            };
            return Ok((user, role, true));
        }
    };
    let role = role_for(state, doc, who).await?;
    Ok((UserInfo::new(&c.sub, &c.name), role, false))
}

/// An anonymous user, as the query names them.
fn anonymous_user(q: &WsQuery) -> Result<UserInfo, ApiError> {
    let user_id = q
        .user_id
        .as_deref()
        .ok_or(ApiError::Unauthorized("authentication required"))?;
    if !valid_id(user_id) {
        return Err(bad_id("user_id"));
    }
    let name = q.name.as_deref().unwrap_or(user_id);
    if !valid_name(name) {
        return Err(ApiError::BadRequest(
            "name must be 1-100 printable characters".into(),
        ));
    }
    Ok(UserInfo::new(user_id, name))
}

/// A session's slots under the caps on open sessions, per client address
/// and per user: held by the session, given back when it ends.
fn session_slots(
    limits: &ConnLimits,
    ip: &str,
    user: &str,
) -> Result<(ConnSlot, ConnSlot), ApiError> {
    match (
        limits.ws_per_ip.acquire(&super::abuse::address_key(ip)),
        limits.ws_per_user.acquire(user),
    ) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => {
            metrics::counter!("tandem_connections_refused_total", "reason" => "sessions")
                .increment(1);
            Err(ApiError::TooManyConnections)
        }
    }
}

/// The socket outlives its HTTP connection: it takes over that
/// connection's place under MAX_CONNECTIONS once nothing can fail (`held`)
/// or, on a connection that carries several sockets, takes one of its own.
fn own_permit(limits: &ConnLimits, held: bool) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    if held {
        return Ok(None);
    }
    match limits.total.clone().try_acquire_owned() {
        Ok(p) => Ok(Some(p)),
        Err(_) => {
            metrics::counter!("tandem_connections_refused_total", "reason" => "total").increment(1);
            Err(ApiError::Unavailable)
        }
    }
}

/// Client ids belong to their user: `<id>@<tag>`, the tag naming the user
/// (a hash of the user id). An id already carrying the caller's tag (one
/// the server gave out in `init.client`) is kept; any other gets the tag
/// appended, so nobody can take over another user's client id (its seqs,
/// its socket) by reading it from presence.
fn scoped_client(user: &str, client: String) -> Result<String, ApiError> {
    use sha2::Digest;
    let tag = format!(
        "@{}",
        hex::encode(&sha2::Sha256::digest(user.as_bytes())[..6])
    );
    if client.ends_with(&tag) {
        return Ok(client);
    }
    let scoped = client + &tag;
    if valid_id(&scoped) {
        Ok(scoped)
    } else {
        Err(ApiError::BadRequest(format!(
            "client ids are at most {} characters",
            64 - tag.len()
        )))
    }
}
