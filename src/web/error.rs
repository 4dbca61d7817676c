//! The one table mapping internal errors and refusals to HTTP statuses and
//! JSON bodies `{"error":{"code","message"}}`. Internal error text is
//! logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::warn;

use crate::hub::{HubError, Refusal};
use crate::protocol::ErrorCode;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
    /// The caller owns the most documents allowed (`MAX_DOCS_PER_USER`).
    #[error("you own {0} documents, the most allowed; delete one first")]
    QuotaExceeded(u64),
    /// The document has the most members allowed (`MAX_MEMBERS_PER_DOC`).
    #[error("this document has {0} members, the most allowed; remove one first")]
    MembersFull(u64),
    #[error("request body too large")]
    PayloadTooLarge,
    /// The request body did not arrive in time (`BODY_READ_TIMEOUT_MS`).
    #[error("the request body took too long to arrive")]
    RequestTimeout,
    /// The body is not what the route takes (an import that is not UTF-8).
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    /// Over a rate limit; the seconds until one more request is allowed.
    #[error("too many attempts; try again later")]
    TooManyRequests(u64),
    #[error("too many open connections; close some first")]
    TooManyConnections,
    #[error("service unavailable")]
    Unavailable,
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("internal error")]
    Internal,
    /// An edit refused by the document (protocol error codes).
    #[error("{}", .0.message)]
    Refused(Refusal),
}

impl ApiError {
    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::QuotaExceeded(_) | ApiError::MembersFull(_) => {
                (StatusCode::FORBIDDEN, "quota_exceeded")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::TooManyRequests(_) | ApiError::TooManyConnections => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            ApiError::Unavailable | ApiError::NotReady(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Refused(r) => (
                match r.code {
                    ErrorCode::BadMessage | ErrorCode::BadOp => StatusCode::BAD_REQUEST,
                    ErrorCode::VersionOutOfRange => StatusCode::CONFLICT,
                    ErrorCode::TooLarge | ErrorCode::DocTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::Forbidden => StatusCode::FORBIDDEN,
                    ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
                    ErrorCode::Internal | ErrorCode::StorageUnavailable => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                },
                r.code.as_str(),
            ),
        }
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::NotFound => ApiError::NotFound("no such document"),
            HubError::ShuttingDown | HubError::Gone => ApiError::Unavailable,
            HubError::Bus(_) | HubError::Store(_) | HubError::Diverged(_) => {
                warn!(error = %e, "backend error");
                ApiError::Unavailable
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        warn!(error = %e, "store error");
        ApiError::Unavailable
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        let mut response = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests(secs) = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        response
    }
}
