//! Accounts: register and log in (rate limited per address and per
//! username; Argon2id).
//! Must not import: sqlx, redis.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ErrorBody;
use crate::auth::{dummy_hash, hash_password, valid_password, valid_username, verify_password};
use crate::hub::now_ms;
use crate::limits::TokenBucket;
use crate::protocol::{color_for, valid_name};
use crate::store::accounts::UserRow;
use crate::web::error::ApiError;
use crate::web::identity::{now_secs, ApiJson};
use crate::web::AppState;

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
    let ip = crate::web::client_ip(&state.conn_limits, peer, req.headers());
    let ApiJson(body) = ApiJson::<LoginBody>::from_request_inner(req, &state).await?;
    let by_ip = login_allowed(&state, format!("ip:{ip}"));
    // A name no account can have never becomes a key (nor costs a hash):
    // the same answer as a wrong password.
    if !crate::auth::valid_username(&body.username) {
        if !by_ip {
            return Err(ApiError::TooManyRequests);
        }
        return Err(ApiError::Unauthorized("invalid username or password"));
    }
    // Slowed per (username, address): guesses at one account from one
    // place are limited, and nobody elsewhere can lock its owner out.
    let by_user = login_allowed(&state, format!("user:{}@{ip}", body.username));
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
