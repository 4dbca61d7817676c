//! WebSocket tickets: `POST /api/auth/ws-ticket` trades the bearer token
//! for a random, single-use ticket bound to the user and one document,
//! valid `WS_TICKET_TTL_MS` (30 s); `/ws/{id}?ticket=…` redeems it (on any instance:
//! tickets live in the bus backend's [`crate::bus::Tickets`]), so a browser
//! never puts its long-lived token in a URL.
//! Must not import: sqlx, redis.

use axum::extract::State;
use axum::Json;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::ErrorBody;
use crate::auth::Claims;
use crate::hub::now_ms;
use crate::web::abuse::Limit;
use crate::web::error::ApiError;
use crate::web::identity::{role_for, ApiJson, Auth, Identity};
use crate::web::AppState;

/// Live tickets held at most (every instance together when clustered).
const MAX_TICKETS: usize = 100_000;

#[derive(Deserialize, ToSchema)]
pub struct TicketBody {
    /// The document the ticket opens (`/ws/{document}`).
    document: String,
}

#[derive(Serialize, ToSchema)]
pub struct TicketOut {
    /// Pass as `/ws/{document}?ticket=…` within `expires_in` seconds; once.
    ticket: String,
    expires_in: i64,
}

/// What a ticket stands for.
#[derive(Serialize, Deserialize)]
struct Held {
    doc: String,
    claims: Claims,
}

/// A ticket's key in the backend: its SHA-256 (hex).
fn key(ticket: &str) -> String {
    hex(&Sha256::digest(ticket.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A WebSocket ticket for one document: single use, short-lived, bound to
/// the caller and the document; redeem it as `/ws/{document}?ticket=…`.
#[utoipa::path(post, path = "/api/auth/ws-ticket", request_body = TicketBody,
    security(("bearer" = [])), responses(
    (status = 200, body = TicketOut, description = "A ticket, valid `expires_in` seconds, once"),
    (status = 400, body = ErrorBody, description = "Bad document id or body"),
    (status = 401, body = ErrorBody, description = "No valid bearer token"),
    (status = 403, body = ErrorBody, description = "No access to the document"),
    (status = 404, body = ErrorBody, description = "No such document"),
    (status = 429, body = ErrorBody, description = "Too many tickets asked for"),
    (status = 503, body = ErrorBody, description = "Ticket store full or unreachable")))]
pub async fn ws_ticket(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiJson(body): ApiJson<TicketBody>,
) -> Result<Json<TicketOut>, ApiError> {
    let claims = who.user()?.clone();
    role_for(&state, &body.document, &who).await?;
    state.abuse.check(Limit::WsTicket, &claims.sub).await?;
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let ticket = hex(&raw);
    let held = Held {
        doc: body.document,
        claims,
    };
    let value = serde_json::to_string(&held).map_err(|_| ApiError::Unavailable)?;
    let now = now_ms();
    let ttl = i64::try_from(state.config.ws_ticket_ttl_ms.max(1)).unwrap_or(30_000);
    let kept = state
        .tickets
        .put_ticket(&key(&ticket), &value, now + ttl, now, MAX_TICKETS)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "ticket store unavailable");
            ApiError::Unavailable
        })?;
    if !kept {
        metrics::counter!("tandem_ws_tickets_refused_total").increment(1);
        return Err(ApiError::Unavailable);
    }
    Ok(Json(TicketOut {
        ticket,
        expires_in: (ttl + 999) / 1000,
    }))
}

/// Redeem a ticket for `doc`: the identity it was minted for, checked
/// against revocations again. Unknown, used or expired → 401; minted for
/// another document → 403 (and it is used up).
pub async fn redeem(state: &AppState, ticket: &str, doc: &str) -> Result<Identity, ApiError> {
    const BAD: ApiError = ApiError::Unauthorized("invalid, used or expired ticket");
    if ticket.len() > 128 {
        return Err(BAD);
    }
    let value = state
        .tickets
        .take_ticket(&key(ticket), now_ms())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "ticket store unavailable");
            ApiError::Unavailable
        })?
        .ok_or(BAD)?;
    let held: Held = serde_json::from_str(&value).map_err(|_| BAD)?;
    if held.doc != doc {
        return Err(ApiError::Forbidden("the ticket is for another document"));
    }
    if held.claims.exp <= now_ms() / 1000 {
        return Err(ApiError::Unauthorized("invalid or expired token"));
    }
    state.tokens.check(&held.claims).await?;
    Ok(Identity::User(held.claims))
}
