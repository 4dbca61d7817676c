//! Sessions and token revocation: logout, password change and account
//! deletion refuse the tokens they revoke on every REST route and WebSocket
//! upgrade, and close those tokens' live sockets (1008), on one embedded
//! server and across two instances on one Redis (whose token checks are
//! cached long enough that only the revocation event can explain a refusal).
//! The tests across instances are in `sessions/across_instances.rs`.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tandem_testkit::{error_code, Api, Frame, TestServer, Ws, TEST_JWT_SECRET};

use crate::TANDEM;

mod across_instances;

const PASSWORD: &str = "correct horse battery";
/// Long enough that a refusal within the test's waits on an instance that
/// had the token cached is the revocation event's doing.
const LONG_CACHE: (&str, &str) = ("TOKEN_CHECK_CACHE_MS", "60000");

/// A socket on `doc` with `token`, or the upgrade's HTTP status.
async fn ws(server: &TestServer, doc: &str, token: &str) -> Result<(Ws, Frame), u16> {
    Ws::try_connect(server.ws_url(doc, &format!("token={token}"))).await
}

/// The close code the server ends `ws` with, within `within`.
async fn closed_within(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "socket still open after {within:?}");
        match ws.try_recv(left).await {
            Err(f) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
        }
    }
}

async fn status(
    api: &Api<'_>,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> StatusCode {
    api.call(method, path, Some(token), body).await.0
}

/// GET /api/documents with `token` until it answers `want`, for at most
/// `within`; how long that took.
async fn until_status(api: &Api<'_>, token: &str, want: StatusCode, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let st = status(api, Method::GET, "/api/documents", token, None).await;
        if st == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "still {st} after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn login(api: &Api<'_>, username: &str, password: &str) -> (StatusCode, Value) {
    api.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"username": username, "password": password})),
    )
    .await
}

async fn token_of(api: &Api<'_>, username: &str) -> String {
    let (st, v) = login(api, username, PASSWORD).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

/// A token as issued before tokens had a `jti` (nor `iat_ms`).
fn legacy_token(user_id: &str, username: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    // Issued a few seconds ago: before any token of this test.
    let now = tandem::hub::now_ms() / 1000 - 5;
    let claims = json!({"sub": user_id, "name": "A", "username": username, "iat": now,
        "exp": now + 600, "iss": "tandem", "aud": "tandem"});
    let unsigned = format!("{}.{}", e(json!({"alg": "HS256", "typ": "JWT"})), e(claims));
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(TEST_JWT_SECRET.as_bytes()).unwrap();
    m.update(unsigned.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{unsigned}.{sig}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_revokes_that_token_only_and_closes_its_socket_embedded() {
    let server = TestServer::start(TANDEM, &[("ALLOW_ANONYMOUS", "false"), LONG_CACHE]);
    let api = Api::new(&server);
    let (first, alice_id) = api.user("alice").await;
    let second = token_of(&api, "alice").await;
    let doc = api.create(&first, "notes", "hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut ws1, _) = ws(&server, &doc, &first).await.unwrap();
    let (mut ws2, _) = ws(&server, &doc, &second).await.unwrap();
    // Cached as valid before the logout.
    assert_eq!(
        status(&api, Method::GET, "/api/documents", &first, None).await,
        StatusCode::OK
    );

    let st = status(&api, Method::POST, "/api/auth/logout", &first, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Refused at once, everywhere: REST, the upgrade, logging out again.
    for (m, p) in [
        (Method::GET, "/api/documents".to_owned()),
        (Method::GET, format!("/api/documents/{doc}")),
        (Method::POST, "/api/auth/logout".to_owned()),
    ] {
        let (st, v) = api.call(m, &p, Some(&first), None).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{p}"
        );
    }
    assert_eq!(ws(&server, &doc, &first).await.err(), Some(401));
    assert_eq!(
        closed_within(&mut ws1, Duration::from_secs(5)).await,
        Some(1008)
    );
    // The other token of the same user is untouched.
    ws2.assert_open().await;
    assert_eq!(
        status(&api, Method::GET, "/api/documents", &second, None).await,
        StatusCode::OK
    );
    assert!(ws(&server, &doc, &second).await.is_ok());

    // A token from before token ids keeps working until revoked; its
    // logout revokes it (and older tokens of the user), not newer ones.
    let legacy = legacy_token(&alice_id, "alice");
    assert_eq!(
        status(&api, Method::GET, "/api/documents", &legacy, None).await,
        StatusCode::OK
    );
    let (mut wsl, _) = ws(&server, &doc, &legacy).await.unwrap();
    let st = status(&api, Method::POST, "/api/auth/logout", &legacy, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        status(&api, Method::GET, "/api/documents", &legacy, None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        closed_within(&mut wsl, Duration::from_secs(5)).await,
        Some(1008)
    );
    ws2.assert_open().await;
    assert_eq!(
        status(&api, Method::GET, "/api/documents", &second, None).await,
        StatusCode::OK
    );
    // Logging out needs a token.
    let (st, _) = api.call(Method::POST, "/api/auth/logout", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_revokes_older_tokens_and_answers_a_fresh_one() {
    let server = TestServer::start(TANDEM, &[("ALLOW_ANONYMOUS", "false"), LONG_CACHE]);
    let api = Api::new(&server);
    let (old, _) = api.user("alice").await;
    let (bob, _) = api.user("bob").await;
    let doc = api.create(&old, "notes", "hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut ws_old, _) = ws(&server, &doc, &old).await.unwrap();
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let path = "/api/auth/password";

    // A wrong current password: 401, and nothing changed.
    let (st, v) = api
        .call(
            Method::POST,
            path,
            Some(&old),
            Some(change("wrong password", "a new password")),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{v}"
    );
    assert_eq!(login(&api, "alice", PASSWORD).await.0, StatusCode::OK);
    assert_eq!(
        login(&api, "alice", "a new password").await.0,
        StatusCode::UNAUTHORIZED
    );
    // A new password that breaks the rules: 400, nothing changed.
    let (st, _) = api
        .call(
            Method::POST,
            path,
            Some(&old),
            Some(change(PASSWORD, "short")),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    ws_old.assert_open().await;
    assert_eq!(
        status(&api, Method::GET, "/api/documents", &old, None).await,
        StatusCode::OK
    );

    let also_old = token_of(&api, "alice").await;
    let (st, v) = api
        .call(
            Method::POST,
            path,
            Some(&old),
            Some(change(PASSWORD, "a new password")),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["user"]["username"], "alice");
    let fresh = v["token"].as_str().unwrap().to_owned();
    // Every token issued before the change is refused at once; the fresh
    // one works.
    for t in [&old, &also_old] {
        assert_eq!(
            status(&api, Method::GET, "/api/documents", t, None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(ws(&server, &doc, t).await.err(), Some(401));
    }
    assert_eq!(
        closed_within(&mut ws_old, Duration::from_secs(5)).await,
        Some(1008)
    );
    assert_eq!(
        status(
            &api,
            Method::GET,
            &format!("/api/documents/{doc}"),
            &fresh,
            None
        )
        .await,
        StatusCode::OK
    );
    let (mut ws_new, _) = ws(&server, &doc, &fresh).await.unwrap();
    ws_new.assert_open().await;
    assert_eq!(
        login(&api, "alice", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&api, "alice", "a new password").await.0,
        StatusCode::OK
    );
    // Another user is untouched.
    assert_eq!(
        status(&api, Method::GET, "/api/documents", &bob, None).await,
        StatusCode::OK
    );
}

/// Password checks on an account (change, deletion) are slowed like logins
/// (the same allowance per account and address): past the limit even the
/// right password gets 429 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_on_an_account_are_rate_limited() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("LOGIN_ATTEMPTS_PER_MIN", "3"),
        ],
    );
    let api = Api::new(&server);
    let (token, _) = api.user("alice").await;
    let change = |current: &str| {
        Some(json!({"current_password": current, "new_password": "a new password"}))
    };
    for _ in 0..3 {
        let (st, _) = api
            .call(
                Method::POST,
                "/api/auth/password",
                Some(&token),
                change("wrong password"),
            )
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, v) = api
        .call(
            Method::POST,
            "/api/auth/password",
            Some(&token),
            change(PASSWORD),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    let (st, _) = api
        .call(
            Method::DELETE,
            "/api/auth/account",
            Some(&token),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    // Nothing changed: the token still works (a password change would have
    // revoked it, a deletion too). Logins at the account from this address
    // share the allowance.
    assert_eq!(
        status(&api, Method::GET, "/api/documents", &token, None).await,
        StatusCode::OK
    );
    assert_eq!(
        login(&api, "alice", PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}
