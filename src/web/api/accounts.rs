//! Accounts: register (limited per address) and log in (limited per
//! address and per (username, address)); Argon2id hashes run on the
//! bounded hash threads of `web::abuse`.
//! Must not import: sqlx, redis.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ErrorBody;
use crate::auth::{dummy_hash, hash_password, valid_password, valid_username, verify_password};
use crate::hub::now_ms;
use crate::protocol::{color_for, valid_name};
use crate::store::accounts::UserRow;
use crate::web::abuse::{address_key, Limit};
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
    (status = 201, body = AuthResponse), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody, description = "username taken"),
    (status = 429, body = ErrorBody, description = "too many accounts from this address"),
    (status = 503, body = ErrorBody, description = "too many password hashes waiting")))]
pub async fn register(
    State(state): State<AppState>,
    req: Request,
) -> Result<(StatusCode, Json<AuthResponse>), ApiError> {
    let ip = address_of(&state, &req);
    let ApiJson(body) = ApiJson::<RegisterBody>::from_request_inner(req, &state).await?;
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
    // Only well-formed requests count against the address.
    state.abuse.check(Limit::Register, &ip).await?;
    let password = body.password;
    let hash = state.abuse.hash(move || hash_password(&password)).await?;
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

/// The key the request's client address is limited under.
fn address_of(state: &AppState, req: &Request) -> String {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    address_key(&crate::web::client_ip(
        &state.conn_limits,
        peer,
        req.headers(),
    ))
}

/// Exchange a username and password for a token.
#[utoipa::path(post, path = "/api/auth/login", request_body = LoginBody, responses(
    (status = 200, body = AuthResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
    (status = 503, body = ErrorBody, description = "too many password hashes waiting")))]
pub async fn login(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<AuthResponse>, ApiError> {
    let ip = address_of(&state, &req);
    let ApiJson(body) = ApiJson::<LoginBody>::from_request_inner(req, &state).await?;
    state.abuse.check(Limit::LoginAddress, &ip).await?;
    // A name no account can have never becomes a key (nor costs a hash):
    // the same answer as a wrong password.
    if !valid_username(&body.username) {
        return Err(ApiError::Unauthorized("invalid username or password"));
    }
    // Slowed per (username, address): guesses at one account from one
    // place are limited, and nobody elsewhere can lock its owner out.
    state
        .abuse
        .check(Limit::LoginUser, &format!("{}@{ip}", body.username))
        .await?;
    let user = state.store.user_by_username(&body.username).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = body.password;
    // An unknown user costs a hash too (made once, on the hash threads).
    let ok = state
        .abuse
        .hash(move || match hash {
            Some(h) => verify_password(&password, &h),
            None => verify_password(&password, dummy_hash()),
        })
        .await?;
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
