//! Accounts, tokens, documents over REST, per-document permissions on REST
//! and WebSocket, and their effect on live sockets (also across instances).
//! Documents and permissions are in `auth/documents.rs`.

use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tandem::auth::Keys;
use tandem_testkit::{error_code, Api, Frame, TestServer, Ws, TEST_JWT_SECRET};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::TANDEM;

mod documents;

const PRIVATE: &[(&str, &str)] = &[("ALLOW_ANONYMOUS", "false")];

async fn ws_with(
    server: &TestServer,
    doc: &str,
    query: &str,
    header: Option<(&str, &str)>,
) -> Result<(Ws, Frame), u16> {
    let mut req = server.ws_url(doc, query).into_client_request().unwrap();
    if let Some((k, v)) = header {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_str(v).unwrap());
    }
    Ws::try_connect(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_register_login_and_rate_limits() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("LOGIN_ATTEMPTS_PER_MIN", "4"),
        ],
    );
    let api = Api::new(&server);
    let (token, _) = api.user("alice").await;
    let (st, _) = api
        .call(Method::GET, "/api/documents", Some(&token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    // duplicate username, bad username, short password, missing fields
    let dup = json!({"username": "alice", "password": "another password"});
    let (st, v) = api
        .call(Method::POST, "/api/auth/register", None, Some(dup))
        .await;
    assert_eq!((st, error_code(&v)), (StatusCode::CONFLICT, "conflict"));
    for body in [
        json!({"username": "A!", "password": "long enough pw"}),
        json!({"username": "bob", "password": "short"}),
        json!({"username": "bob"}),
    ] {
        let (st, v) = api
            .call(Method::POST, "/api/auth/register", None, Some(body))
            .await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{v}"
        );
    }
    // wrong password and unknown user: same status, same message
    let login = |u: &str, p: &str| json!({"username": u, "password": p});
    let (st1, v1) = api
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(login("alice", "wrong password")),
        )
        .await;
    let (st2, v2) = api
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(login("nobody", "wrong password")),
        )
        .await;
    assert_eq!(
        (st1, st2),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(v1, v2);
    let (st, v) = api
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(login("alice", "correct horse battery")),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["user"]["username"], "alice");
    let from = |ip: u8| {
        Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, ip]))
            .build()
            .unwrap()
    };
    let post = |c: Client, body: Value| {
        let url = server.http("/api/auth/login");
        async move { c.post(url).json(&body).send().await.unwrap().status() }
    };
    // Logins are slowed per (username, address): from other client IPs
    // (127.0.0.x) alice always gets in, however many tries were made
    // elsewhere (nobody can lock her out)...
    for ip in 2..=6 {
        assert_eq!(
            post(from(ip), login("alice", "correct horse battery")).await,
            StatusCode::OK,
            "from 127.0.0.{ip}"
        );
    }
    // ...while one address guessing at her account is refused from its
    // fifth try in a minute, even with the right password.
    for _ in 0..4 {
        assert_eq!(
            post(from(7), login("alice", "wrong password")).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        post(from(7), login("alice", "correct horse battery")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // One IP trying many usernames hits the per-IP limit.
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(post(from(9), login(&format!("user{i}"), "whatever pw")).await);
    }
    assert_eq!(&statuses[..4], &[StatusCode::UNAUTHORIZED; 4]);
    assert_eq!(statuses[4], StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_on_rest_and_websocket() {
    let server = TestServer::start(TANDEM, PRIVATE);
    let api = Api::new(&server);
    let (token, _) = api.user("alice").await;
    let doc = api.create(&token, "t", "hi").await;
    let id = doc["id"].as_str().unwrap();
    let now = tandem::hub::now_ms() / 1000;
    let keys = |aud: &str, secret: &str, ttl| {
        Keys::new(secret.as_bytes(), None, "tandem", aud, ttl).unwrap()
    };
    let user_id = {
        let k = keys("tandem", TEST_JWT_SECRET, 60);
        k.verify(&token, now).unwrap().sub
    };
    let expired = keys("tandem", TEST_JWT_SECRET, 10).issue(&user_id, "alice", "A", now - 3600);
    let wrong_aud = keys("other", TEST_JWT_SECRET, 600).issue(&user_id, "alice", "A", now);
    let wrong_key = keys("tandem", "another-secret-0123456789abcdef012345", 600)
        .issue(&user_id, "alice", "A", now);
    let mut tampered = token.clone().into_bytes();
    let mid = token.find('.').unwrap() + 5;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let none = {
        use base64::Engine;
        let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = json!({"sub": user_id, "name": "A", "username": "alice", "iat": now, "exp": now + 600, "iss": "tandem", "aud": "tandem"});
        format!("{}.{}.", e(json!({"alg": "none", "typ": "JWT"})), e(claims))
    };
    for (what, bad) in [
        ("expired", &expired),
        ("audience", &wrong_aud),
        ("key", &wrong_key),
        ("tampered", &tampered),
        ("alg none", &none),
    ] {
        let (st, v) = api
            .call(
                Method::GET,
                &format!("/api/documents/{id}"),
                Some(bad),
                None,
            )
            .await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{what}"
        );
        assert_eq!(
            ws_with(&server, id, &format!("token={bad}"), None)
                .await
                .err(),
            Some(401),
            "{what}"
        );
    }
    // no token at all
    assert_eq!(ws_with(&server, id, "", None).await.err(), Some(401));
    // the real token works as ?token= and as a header
    let (_ws, init) = ws_with(&server, id, &format!("token={token}"), None)
        .await
        .unwrap();
    assert_eq!(
        (init["content"].as_str(), init["role"].as_str()),
        (Some("hi"), Some("owner"))
    );
    let bearer = format!("Bearer {token}");
    assert!(ws_with(&server, id, "", Some(("authorization", &bearer)))
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_foreign_origins_and_token_redaction() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let env = [
        ("ALLOW_ANONYMOUS", "false"),
        ("MAX_BODY_BYTES", "4096"),
        ("ALLOWED_ORIGINS", "https://app.example"),
        ("RUST_LOG", "debug"),
    ];
    let server = TestServer::start_logged(TANDEM, &env, log.path());
    let api = Api::new(&server);
    let (token, _) = api.user("alice").await;
    let big = json!({"title": "t", "content": "x".repeat(10_000)});
    let (st, v) = api
        .call(Method::POST, "/api/documents", Some(&token), Some(big))
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        "{v}"
    );
    let (st, v) = api
        .call(Method::POST, "/api/documents", Some(&token), None)
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let id = api.create(&token, "t", "").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = format!("token={token}");
    assert_eq!(
        ws_with(&server, &id, &q, Some(("origin", "https://evil.example")))
            .await
            .err(),
        Some(403)
    );
    assert!(
        ws_with(&server, &id, &q, Some(("origin", "https://app.example")))
            .await
            .is_ok()
    );
    let same = format!("http://{}", server.addr);
    assert!(ws_with(&server, &id, &q, Some(("origin", &same)))
        .await
        .is_ok());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = std::fs::read_to_string(log.path()).unwrap();
    assert!(logs.contains("/ws/"), "debug logs were not written");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "a token reached the logs");
    assert!(
        !logs.contains("correct horse"),
        "a password reached the logs"
    );
}

/// Wrong passwords for a user from one address slow that address down, not
/// the user's own logins from elsewhere (nobody can lock an account out);
/// names no account can have (a 1 MB one) are refused before they become
/// a limiter key or cost a hash; the bearer scheme is case-insensitive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_cannot_lock_out_the_owner_and_junk_names_cost_nothing() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("LOGIN_ATTEMPTS_PER_MIN", "4"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    );
    let api = Api::new(&server);
    api.user("alice").await;
    let http = Client::new();
    let login = |from: &str, username: String, password: &str| {
        let req = http
            .post(server.http("/api/auth/login"))
            .header("X-Real-IP", from)
            .json(&json!({"username": username, "password": password}));
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (status, v)
        }
    };
    // An attacker at 10.0.0.1 guesses until slowed down.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(login("10.0.0.1", "alice".into(), "wrong password").await.0);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Alice, elsewhere, still gets in.
    let (st, v) = login("10.0.0.2", "alice".into(), "correct horse battery").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // And her token works with any capitalisation of the scheme.
    let token = v["token"].as_str().unwrap().to_owned();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = http
            .get(server.http("/api/documents"))
            .header("Authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{scheme}");
    }
    // A name no account can have: refused as a wrong password, from an
    // address with tries left, however many arrive.
    for i in 0..3 {
        let huge = "x".repeat(1 << 20);
        let (st, v) = login(&format!("10.0.1.{i}"), huge, "whatever pw").await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{v}"
        );
    }
}
