//! Abuse that needs no account, or only one: registration floods and the
//! password-hash pool, login limits shared by every instance, huge login
//! names, REST edit floods, borrowed client ids, silent connections, the
//! global connection cap and the open-file limit, non-UTF-8 text frames and
//! edits that change nothing. Each is refused with its status or protocol
//! code, memory stays bounded, and nothing refused changes a document.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use tandem_testkit::{cluster, error_code, Api, Kind, RedisServer, TestServer, Ws};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::TANDEM;

/// POST `body` to `path` as if from `from` (the server trusts loopback's
/// X-Real-IP): status, Retry-After, JSON.
async fn post_from(
    http: &Client,
    server: &TestServer,
    path: &str,
    from: &str,
    body: &Value,
) -> (StatusCode, Option<u64>, Value) {
    let r = http
        .post(server.http(path))
        .header("X-Real-IP", from)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

fn account(name: &str) -> Value {
    json!({"username": name, "password": "correct horse battery"})
}

/// Registrations are limited per address (429 with Retry-After); a flood
/// from many addresses waits for the password-hash pool instead of running
/// a hash (~19 MiB) per request at once: memory stays flat, and past the
/// pool's queue requests get 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registrations_are_limited_per_address_and_hashing_is_bounded() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("REGISTRATIONS_PER_HOUR", "3"),
            ("PASSWORD_HASH_CONCURRENCY", "2"),
            ("PASSWORD_HASH_QUEUE", "1000"),
        ],
    );
    let http = Client::new();
    let register = "/api/auth/register";
    for i in 0..3 {
        let (st, _, v) = post_from(
            &http,
            &server,
            register,
            "10.0.0.1",
            &account(&format!("a{i}x")),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, retry, v) = post_from(&http, &server, register, "10.0.0.1", &account("a3x")).await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert!(retry.is_some_and(|s| s >= 60), "Retry-After: {retry:?}");
    // The refused account was not made; another address is not affected.
    let (st, _, _) = post_from(
        &http,
        &server,
        "/api/auth/login",
        "10.0.0.9",
        &account("a3x"),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, _) = post_from(&http, &server, register, "10.0.0.2", &account("b0x")).await;
    assert_eq!(st, StatusCode::CREATED);

    // 96 registrations at once, each from its own address.
    let before = server.rss_kb();
    let started = Instant::now();
    let flood: Vec<_> = (0..96)
        .map(|i| {
            let (http, url) = (http.clone(), server.http(register));
            tokio::spawn(async move {
                http.post(url)
                    .header("X-Real-IP", format!("10.1.0.{i}"))
                    .json(&account(&format!("flood{i}")))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut peak = before;
    while !flood.iter().all(|t| t.is_finished()) {
        peak = peak.max(server.rss_kb());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in flood {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    let took = started.elapsed();
    println!(
        "96 concurrent registrations: RSS {before} KiB -> peak {peak} KiB (+{} MiB) in {took:?}",
        (peak - before) / 1024
    );
    assert!(
        peak < before + 96 * 1024,
        "RSS rose from {before} KiB to {peak} KiB under a registration flood"
    );

    // Past the queue: 503, and the server still serves.
    let small = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("PASSWORD_HASH_CONCURRENCY", "1"),
            ("PASSWORD_HASH_QUEUE", "2"),
        ],
    );
    let burst: Vec<_> = (0..24)
        .map(|i| {
            let (http, url) = (http.clone(), small.http(register));
            tokio::spawn(async move {
                http.post(url)
                    .header("X-Real-IP", format!("10.2.0.{i}"))
                    .json(&account(&format!("q{i}x")))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in burst {
        statuses.push(t.await.unwrap());
    }
    let busy = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let made = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert!(busy > 0 && made > 0 && busy + made == 24, "{statuses:?}");
    assert_eq!(small.get("/healthz").await.0, 200);
}

/// With two instances on one Redis, the login limits are one limit: wrong
/// passwords alternating between the instances are slowed after
/// LOGIN_ATTEMPTS_PER_MIN in all, not per instance; the owner, from
/// another address, still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_limits_are_shared_by_every_instance() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(
        TANDEM,
        &redis,
        2,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
            ("LOGIN_ATTEMPTS_PER_MIN", "4"),
        ],
    );
    Api::new(&servers[0]).user("alice").await;
    let http = Client::new();
    let wrong = json!({"username": "alice", "password": "not her password"});
    let mut statuses = Vec::new();
    for i in 0..6 {
        let s = &servers[i % 2];
        statuses.push(
            post_from(&http, s, "/api/auth/login", "10.0.0.7", &wrong)
                .await
                .0,
        );
    }
    let allowed = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(allowed, 4, "{statuses:?}");
    assert_eq!(statuses[4..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    let (st, _, v) = post_from(
        &http,
        &servers[1],
        "/api/auth/login",
        "10.0.0.8",
        &account("alice"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

/// Logins with multi-megabyte usernames are refused before the name is
/// kept anywhere: memory does not grow with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_login_names_are_refused_without_keeping_them() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("LOGIN_ATTEMPTS_PER_MIN", "1000"),
        ],
    );
    let http = Client::new();
    let before = server.rss_kb();
    for i in 0..40u8 {
        let name = String::from(char::from(b'a' + i % 26)).repeat(4 << 20);
        let body = json!({"username": name, "password": "whatever pw"});
        let (st, _, v) = post_from(&http, &server, "/api/auth/login", "127.0.0.1", &body).await;
        assert_eq!(
            (st, error_code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized")
        );
    }
    let after = server.rss_kb();
    println!("40 logins with 4 MiB names: RSS {before} KiB -> {after} KiB");
    assert!(
        after < before + 48 * 1024,
        "RSS grew from {before} KiB to {after} KiB (160 MiB of names sent)"
    );
}

/// REST edits are limited per user like a socket's ops: past the burst,
/// 429 with Retry-After, and only the accepted edits are in the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_edits_are_rate_limited_per_user() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("OP_RATE_PER_SEC", "2"),
            ("OP_RATE_BURST", "4"),
        ],
    );
    let api = Api::new(&server);
    let (alice, _) = api.user("alice").await;
    let id = api.create(&alice, "notes", "").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..12 {
        let op = if ok == 0 {
            json!(["x"])
        } else {
            json!([ok, "x"])
        };
        let body = json!({"version": ok, "op": op});
        let (st, v) = api
            .call(
                Method::POST,
                &format!("/api/documents/{id}/ops"),
                Some(&alice),
                Some(body),
            )
            .await;
        match st {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(error_code(&v), "rate_limited");
                limited += 1;
            }
            other => panic!("{other}: {v}"),
        }
    }
    assert!(
        (4..=6).contains(&ok) && limited == 12 - ok,
        "{ok} accepted, {limited} limited"
    );
    let (st, v) = api
        .call(
            Method::GET,
            &format!("/api/documents/{id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["content"], "x".repeat(ok as usize));
    assert_eq!(v["version"], ok);
}

/// A member who reads another member's client id from presence cannot act
/// as that client: connecting with it neither closes the owner's socket nor
/// takes its seqs (a huge seq under that id does not swallow the owner's
/// next edit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_belong_to_their_user() {
    let server = TestServer::start(TANDEM, &[]);
    let doc = "shared";
    let (mut alice, init) = Ws::connect(&server.ws_url(doc, "user_id=alice&client=tab1"))
        .await
        .unwrap();
    let alices = init.init().client.to_owned();
    assert!(alices.starts_with("tab1@"), "{alices}");
    // Mallory reads it from the user list and connects with it.
    let (_, users) = server.get(&format!("/api/documents/{doc}/users")).await;
    assert_eq!(users[0]["client"], alices.as_str());
    let (mut mallory, init) =
        Ws::connect(&server.ws_url(doc, &format!("user_id=mallory&client={alices}")))
            .await
            .unwrap();
    assert_ne!(init.init().client, alices);
    mallory
        .send(json!({"type":"op","version":0,"seq":1000000,"op":["m"]}))
        .await;
    assert_eq!(mallory.recv_type(Kind::Ack).await["version"], 1);
    // Alice's socket is open: it gets Mallory's op, under Mallory's id.
    let op = alice.recv_type(Kind::Op).await;
    assert_ne!(op["client"], alices.as_str());
    alice
        .send(json!({"type":"op","version":1,"seq":1,"op":[1, "a"]}))
        .await;
    assert_eq!(alice.recv_type(Kind::Ack).await["version"], 2);
    assert_eq!(server.document(doc).await, ("ma".to_owned(), 2));
    // Alice's own reconnect keeps her id (and takes over her old socket).
    let (_again, init) =
        Ws::connect(&server.ws_url(doc, &format!("user_id=alice&client={alices}")))
            .await
            .unwrap();
    assert_eq!(init.init().client, alices);
    assert_eq!(alice.closed().await, Some(4001));
}

/// A text frame that is not UTF-8 is a bad message (1007), not a frame
/// too large; an edit that changes nothing is acknowledged without making
/// a version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_utf8_is_a_bad_message_and_no_op_edits_make_no_version() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame as RawFrame;
    use tokio_tungstenite::tungstenite::Message;

    let server = TestServer::start(TANDEM, &[]);
    let doc = "utf";
    let (mut ws, _) = Ws::connect(&server.ws_url(doc, "user_id=u")).await.unwrap();
    ws.send(json!({"type":"op","version":0,"seq":1,"op":["hello"]}))
        .await;
    assert_eq!(ws.recv_type(Kind::Ack).await["version"], 1);
    ws.send(json!({"type":"op","version":1,"seq":2,"op":[5]}))
        .await;
    assert_eq!(ws.recv_type(Kind::Ack).await["version"], 1);
    assert_eq!(server.document(doc).await, ("hello".to_owned(), 1));
    let frame = RawFrame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.ws.send(Message::Frame(frame)).await.unwrap();
    let e = ws.recv_type(Kind::Error).await;
    assert_eq!(e["code"], "bad_message", "{e:?}");
    assert_eq!(ws.closed().await, Some(1007));
    assert_eq!(server.document(doc).await, ("hello".to_owned(), 1));
}

/// A connection that never sends a byte is closed after
/// HEADER_READ_TIMEOUT_MS; past MAX_CONNECTIONS in all (WebSockets
/// included) a connection is answered 503, and a closed one frees its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_time_out_and_connections_are_capped() {
    let server = TestServer::start(
        TANDEM,
        &[("HEADER_READ_TIMEOUT_MS", "500"), ("MAX_CONNECTIONS", "6")],
    );
    let mut silent = TcpStream::connect(&server.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("a silent connection was kept open")
        .unwrap_or(0);
    let took = started.elapsed();
    println!("a silent connection was dropped after {took:?}");
    assert_eq!(n, 0);
    assert!(took >= Duration::from_millis(400), "{took:?}");

    let mut sockets = Vec::new();
    for i in 0..6 {
        let (ws, _) = Ws::connect(&server.ws_url("cap", &format!("user_id=u{i}")))
            .await
            .unwrap();
        sockets.push(ws);
    }
    let mut over = TcpStream::connect(&server.addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains(r#""code":"unavailable""#), "{head}");
    sockets.pop().unwrap().close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut ws, init) = Ws::connect(&server.ws_url("cap", "user_id=late"))
        .await
        .unwrap();
    assert_eq!(init.kind(), Kind::Init);
    ws.assert_open().await;
}

/// The server raises its soft open-file limit to the hard limit at start.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("prlimit");
    // Start it with a soft limit of 256 (the hard limit unchanged).
    cmd.args(["--nofile=256:", "--", TANDEM])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("DATA_DIR", dir.path())
        .env("RUST_LOG", "error")
        .env("JWT_SECRET", tandem_testkit::TEST_JWT_SECRET);
    let server = TestServer::launch(cmd, dir.path()).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (f[3], f[4]);
    assert_eq!(soft, hard, "{line}");
    assert_ne!(soft, "256", "{line}");
}
