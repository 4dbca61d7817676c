//! Accounts: register (limited per address) and log in (limited per
//! address and per (username, address)); Argon2id hashes run on the
//! bounded hash threads of `web::abuse`. Log out (revokes the token),
//! change the password (revokes every older token of the user, answers a
//! fresh one), delete the account (with the documents it owns; every token
//! of the user revoked); their password checks are limited like logins.
//! Revocations reach live sockets on every instance (`web/tokens.rs`).
//! Must not import: sqlx, redis.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ErrorBody;
use crate::auth::{
    dummy_hash, hash_password, valid_password, valid_username, verify_password, DEVICE_TTL_SECS,
    LEEWAY,
};
use crate::bus::Revocation;
use crate::hub::{now_ms, AccessChange};
use crate::protocol::{color_for, valid_name};
use crate::store::accounts::{Revoked, UserRow};
use crate::web::abuse::Limit;
use crate::web::error::ApiError;
use crate::web::identity::{ApiJson, Auth, ClientAddress};
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

#[derive(Deserialize, ToSchema)]
pub struct PasswordBody {
    current_password: String,
    /// 8-256 bytes.
    new_password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct DeleteAccountBody {
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
    ClientAddress(ip): ClientAddress,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<
    (
        StatusCode,
        [(header::HeaderName, HeaderValue); 1],
        Json<AuthResponse>,
    ),
    ApiError,
> {
    if !valid_username(&body.username) {
        return Err(ApiError::BadRequest(
            "usernames are 3-32 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit".into(),
        ));
    }
    check_new_password(&body.password)?;
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
        .issue_at_ms(&user.id, &user.username, &user.name, now_ms());
    Ok((
        StatusCode::CREATED,
        [(header::SET_COOKIE, device_cookie(&state, &user, &headers))],
        Json(AuthResponse {
            user: user_out(&user),
            token,
        }),
    ))
}

/// A new password obeys the rule, or 400.
fn check_new_password(p: &str) -> Result<(), ApiError> {
    if valid_password(p) {
        Ok(())
    } else {
        Err(ApiError::BadRequest("passwords are 8-256 bytes".into()))
    }
}

/// The login limit's key: guesses at `username` from the address `ip`.
fn login_key(username: &str, ip: &str) -> String {
    format!("{username}@{ip}")
}

/// Whether `password` matches `hash` (none: an unknown user, checked
/// against a dummy hash so it costs the same), verified on the hash
/// threads.
async fn password_matches(
    state: &AppState,
    password: String,
    hash: Option<String>,
) -> Result<bool, ApiError> {
    state
        .abuse
        .hash(move || verify_password(&password, hash.as_deref().unwrap_or_else(|| dummy_hash())))
        .await
}

/// The device cookie of `username`: its name, and the header that sets it.
fn device_cookie_name(username: &str) -> String {
    format!("td_{username}")
}

/// The `Set-Cookie` value that keeps this client's device credential for
/// the user (sent back only to the login route; `Secure` behind TLS). A
/// password change or an account-wide revocation ends older ones.
fn device_cookie(state: &AppState, user: &UserRow, headers: &HeaderMap) -> HeaderValue {
    let value = state.keys.issue_device(&user.id, &user.username, now_ms());
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{}={value}; Path=/api/auth/login; Max-Age={DEVICE_TTL_SECS}; HttpOnly; SameSite=Strict{}",
        device_cookie_name(&user.username),
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static(""))
}

/// Whether the request carries a current device credential of `user` in
/// the cookie of its username: issued to it, and not before its tokens were
/// last revoked (a password change, an account-wide revocation).
async fn known_device(
    state: &AppState,
    headers: &HeaderMap,
    user: &UserRow,
) -> Result<bool, ApiError> {
    let name = device_cookie_name(&user.username);
    let now = crate::web::identity::now_secs();
    let issued: Vec<i64> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .filter_map(|(_, t)| state.keys.verify_device(t, now))
        .filter(|c| c.sub == user.id)
        .map(|c| c.issued_ms())
        .collect();
    if issued.is_empty() {
        return Ok(false);
    }
    let valid_after = match state.store.token_state(&user.id, None).await? {
        Some(s) => s.valid_after_ms,
        None => return Ok(false),
    };
    Ok(issued.iter().any(|&ms| ms >= valid_after))
}

/// Exchange a username and password for a token (and a device cookie).
///
/// Limits, in order: attempts from the address; attempts at the username
/// from the address; attempts at the account from everywhere, unless the
/// client holds the account's device cookie (it signed in before), so a
/// guesser spread over many addresses is slowed and cannot lock the owner
/// out of a browser they used before.
#[utoipa::path(post, path = "/api/auth/login", request_body = LoginBody, responses(
    (status = 200, body = AuthResponse, description = "signed in; `Set-Cookie` carries the device cookie"),
    (status = 401, body = ErrorBody), (status = 429, body = ErrorBody),
    (status = 503, body = ErrorBody, description = "too many password hashes waiting")))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(ip): ClientAddress,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<([(header::HeaderName, HeaderValue); 1], Json<AuthResponse>), ApiError> {
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
        .check(Limit::LoginUser, &login_key(&body.username, &ip))
        .await?;
    let user = state.store.user_by_username(&body.username).await?;
    let known = match &user {
        Some(u) => known_device(&state, &headers, u).await?,
        None => false,
    };
    if !known {
        // Every valid username counts alike, so the limit tells nothing
        // of which exist.
        state
            .abuse
            .check(Limit::LoginAccount, &body.username)
            .await?;
    }
    // An unknown user costs a hash too.
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let ok = password_matches(&state, body.password, hash).await?;
    // Same answer for an unknown user and a wrong password.
    let user = user
        .filter(|_| ok)
        .ok_or(ApiError::Unauthorized("invalid username or password"))?;
    let token = state
        .keys
        .issue_at_ms(&user.id, &user.username, &user.name, now_ms());
    Ok((
        [(header::SET_COOKIE, device_cookie(&state, &user, &headers))],
        Json(AuthResponse {
            user: user_out(&user),
            token,
        }),
    ))
}

/// Log out: this token is refused from now on, everywhere, and the sockets
/// it opened are closed (1008). A token from before token ids existed is
/// revoked with every token of the user issued up to it.
#[utoipa::path(post, path = "/api/auth/logout", security(("bearer" = [])), responses(
    (status = 204, description = "the token is revoked"), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> Result<StatusCode, ApiError> {
    let c = who.user()?;
    let revocation = match &c.jti {
        Some(jti) => {
            // Kept until the token would be refused as expired anyway.
            let expires_ms = c.exp.saturating_add(LEEWAY + 1).saturating_mul(1000);
            let max = state.config.max_revoked_tokens_per_user.max(1);
            match state
                .store
                .revoke_token(&c.sub, jti, expires_ms, now_ms(), max)
                .await?
            {
                Revoked::Token => Revocation::Token {
                    user: c.sub.clone(),
                    jti: jti.clone(),
                },
                Revoked::AllBefore { before_ms } => Revocation::User {
                    user: c.sub.clone(),
                    before_ms,
                },
                Revoked::NoUser => return Err(ApiError::Unauthorized("this token was revoked")),
            }
        }
        None => {
            let before_ms = c.issued_ms().saturating_add(1);
            if !state.store.revoke_tokens_before(&c.sub, before_ms).await? {
                return Err(ApiError::Unauthorized("this token was revoked"));
            }
            Revocation::User {
                user: c.sub.clone(),
                before_ms,
            }
        }
    };
    state.tokens.revoke(revocation).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account, if `password` is its password (an Argon2 verify
/// on the hash threads, limited like a login at this account from this
/// address); 401 otherwise.
async fn verified_user(
    state: &AppState,
    ip: &str,
    c: &crate::auth::Claims,
    password: String,
) -> Result<UserRow, ApiError> {
    // The token's username names the bucket a login would use.
    let name = if valid_username(&c.username) {
        c.username.as_str()
    } else {
        c.sub.as_str()
    };
    state
        .abuse
        .check(Limit::LoginUser, &login_key(name, ip))
        .await?;
    let user = state
        .store
        .user_by_id(&c.sub)
        .await?
        .ok_or(ApiError::Unauthorized("this token was revoked"))?;
    let ok = password_matches(state, password, Some(user.password_hash.clone())).await?;
    if !ok {
        return Err(ApiError::Unauthorized("wrong password"));
    }
    Ok(user)
}

/// Change the password. Every token of the user issued before the change
/// is refused from now on (their sockets closed, on every instance); the
/// answer carries a fresh token, so the caller stays signed in.
#[utoipa::path(post, path = "/api/auth/password", request_body = PasswordBody, security(("bearer" = [])), responses(
    (status = 200, body = AuthResponse), (status = 400, body = ErrorBody),
    (status = 401, body = ErrorBody, description = "wrong current password, or a revoked token"),
    (status = 429, body = ErrorBody), (status = 503, body = ErrorBody, description = "too many password hashes waiting")))]
pub async fn change_password(
    State(state): State<AppState>,
    Auth(who): Auth,
    ClientAddress(ip): ClientAddress,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<([(header::HeaderName, HeaderValue); 1], Json<AuthResponse>), ApiError> {
    let c = who.user()?.clone();
    check_new_password(&body.new_password)?;
    let user = verified_user(&state, &ip, &c, body.current_password).await?;
    let password = body.new_password;
    let hash = state.abuse.hash(move || hash_password(&password)).await?;
    // Tokens issued before `now` are refused; the new one is issued at it.
    let now = now_ms();
    if !state.store.set_password(&user.id, &hash, now).await? {
        return Err(ApiError::Unauthorized("this token was revoked"));
    }
    state
        .tokens
        .revoke(Revocation::User {
            user: user.id.clone(),
            before_ms: now,
        })
        .await;
    let token = state
        .keys
        .issue_at_ms(&user.id, &user.username, &user.name, now);
    // Older device cookies are refused from now on; this browser keeps one.
    Ok((
        [(header::SET_COOKIE, device_cookie(&state, &user, &headers))],
        Json(AuthResponse {
            user: user_out(&user),
            token,
        }),
    ))
}

/// Delete the caller's account: its memberships, and every document it
/// owns, shared or not (ownership cannot be handed over; members lose
/// access, their sockets are closed as on `DELETE /api/documents/{id}`).
/// Every token of the user is refused from now on and its sockets are
/// closed (1008), on every instance.
#[utoipa::path(delete, path = "/api/auth/account", request_body = DeleteAccountBody, security(("bearer" = [])), responses(
    (status = 204, description = "the account and the documents it owned are gone"),
    (status = 401, body = ErrorBody, description = "wrong password, or a revoked token"),
    (status = 429, body = ErrorBody), (status = 503, body = ErrorBody, description = "too many password hashes waiting")))]
pub async fn delete_account(
    State(state): State<AppState>,
    Auth(who): Auth,
    ClientAddress(ip): ClientAddress,
    ApiJson(body): ApiJson<DeleteAccountBody>,
) -> Result<StatusCode, ApiError> {
    let c = who.user()?.clone();
    let user = verified_user(&state, &ip, &c, body.password).await?;
    let docs = state
        .store
        .delete_user(&user.id)
        .await?
        .ok_or(ApiError::Unauthorized("this token was revoked"))?;
    state
        .tokens
        .revoke(Revocation::User {
            user: user.id.clone(),
            before_ms: i64::MAX,
        })
        .await;
    // The documents' live sockets everywhere, as a document deletion does.
    for doc in &docs {
        if let Err(e) = state.hub.notify_access(doc, AccessChange::Deleted).await {
            tracing::warn!(error = %e, doc = %doc, "could not announce a deleted document");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}
