//! Who is asking, and what they may do with a document: bearer tokens (or
//! `?token=` on WebSockets; revoked ones refused), anonymous mode, roles, Origin checks, and the
//! JSON body extractor whose rejections use the API's error shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::auth::Claims;
use crate::protocol::Role;

/// The caller: a verified token, or anonymous (only with ALLOW_ANONYMOUS).
#[derive(Clone, Debug)]
pub enum Identity {
    User(Claims),
    Anonymous,
}

impl Identity {
    pub fn user(&self) -> Result<&Claims, ApiError> {
        match self {
            Identity::User(c) => Ok(c),
            Identity::Anonymous => Err(ApiError::Unauthorized("sign in first")),
        }
    }
}

pub fn now_secs() -> i64 {
    crate::hub::now_ms() / 1000
}

/// The token of an `Authorization: Bearer …` header (the scheme is
/// case-insensitive, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Identify from the Authorization header, else `token` (WebSocket query):
/// the signature and times (`auth::Keys::verify`), then whether the token
/// was revoked (`tokens::Tokens::check`: logout, password change, account
/// deletion). The one identity check of REST and WebSocket alike.
pub async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    token: Option<&str>,
) -> Result<Identity, ApiError> {
    match bearer(headers).or(token) {
        Some(t) => {
            let claims = state
                .keys
                .verify(t, now_secs())
                .map_err(|_| ApiError::Unauthorized("invalid or expired token"))?;
            state.tokens.check(&claims).await?;
            Ok(Identity::User(claims))
        }
        None if state.config.allow_anonymous => Ok(Identity::Anonymous),
        None => Err(ApiError::Unauthorized("authentication required")),
    }
}

/// Extractor for REST handlers.
pub struct Auth(pub Identity);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        identify(state, &parts.headers, None).await.map(Auth)
    }
}

/// The caller's role on a document. Documents without an owner exist only
/// in anonymous mode and are open to everyone there.
pub async fn role_for(state: &AppState, doc: &str, who: &Identity) -> Result<Role, ApiError> {
    if !crate::protocol::valid_id(doc) {
        return Err(ApiError::BadRequest(
            "document ids are 1-64 characters of [A-Za-z0-9_.:@-]".into(),
        ));
    }
    let meta = state
        .store
        .document_row(doc)
        .await?
        .ok_or(ApiError::NotFound("no such document"))?;
    match (meta.owner, who) {
        (None, _) if state.config.allow_anonymous => Ok(Role::Editor),
        (None, _) => Err(ApiError::Forbidden("no access to this document")),
        (Some(_), Identity::Anonymous) => Err(ApiError::Unauthorized("authentication required")),
        (Some(_), Identity::User(c)) => state
            .store
            .role_of(doc, &c.sub)
            .await?
            .ok_or(ApiError::Forbidden("no access to this document")),
    }
}

/// Browsers send Origin on WebSocket handshakes: allow the server's own
/// origin and ALLOWED_ORIGINS, refuse the rest (cross-site WebSocket
/// hijacking). Clients without Origin are not browsers and pass.
pub fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    if state
        .config
        .allowed_origins
        .iter()
        .any(|a| a.trim().trim_end_matches('/') == origin)
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        == Some(host)
}

/// `Json<T>` whose rejections are API errors (400, or 413 over the limit).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::BadRequest(
                "expected Content-Type: application/json".into(),
            )),
            Err(e) => {
                let mut m = e.body_text();
                m.truncate(200);
                Err(ApiError::BadRequest(m))
            }
        }
    }
}

/// The key the caller's address is limited under
/// ([`crate::web::abuse::address_key`] of [`crate::web::client_ip`]).
pub struct ClientAddress(pub String);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0);
        let ip = super::client_ip(&state.conn_limits, peer, &parts.headers);
        Ok(Self(super::abuse::address_key(&ip)))
    }
}
