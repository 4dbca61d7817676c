//! Revocation across instances on one Redis (token checks cached long
//! enough that only the revocation event can explain a refusal):
//! revocations reach every instance and its sockets, account deletion
//! removes what the account owns and closes its sockets everywhere, and an
//! instance whose pub/sub was cut catches up on the revocations it missed.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tandem_testkit::proxy::Proxy;
use tandem_testkit::{cluster, error_code, Api, PgServer, RedisServer, TestServer};

use super::{closed_within, login, status, token_of, until_status, ws, LONG_CACHE, PASSWORD};
use crate::TANDEM;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_instance_and_its_sockets() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(
        TANDEM,
        &redis,
        2,
        &[("ALLOW_ANONYMOUS", "false"), LONG_CACHE],
    );
    let (a, b) = (Api::new(&servers[0]), Api::new(&servers[1]));
    a.user("alice").await;
    let t1 = token_of(&a, "alice").await;
    let t2 = token_of(&b, "alice").await;
    let doc = a.create(&t1, "notes", "hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Each token has a socket on each instance and is cached as valid there.
    let mut socks = Vec::new();
    for t in [&t1, &t2] {
        for s in &servers {
            socks.push(ws(s, &doc, t).await.unwrap().0);
        }
        for api in [&a, &b] {
            assert_eq!(
                status(api, Method::GET, "/api/documents", t, None).await,
                StatusCode::OK
            );
        }
    }
    let (t1_socks, t2_socks) = socks.split_at_mut(2);

    // Logout on A: refused on A as soon as the call returns, on B within
    // the bus's latency (far below the cache's minute).
    let st = status(&a, Method::POST, "/api/auth/logout", &t1, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(
        status(&a, Method::GET, "/api/documents", &t1, None).await,
        StatusCode::UNAUTHORIZED
    );
    let took = until_status(&b, &t1, StatusCode::UNAUTHORIZED, Duration::from_secs(3)).await;
    eprintln!("logout reached the other instance's checks in {took:?}");
    for s in &servers {
        assert_eq!(ws(s, &doc, &t1).await.err(), Some(401));
    }
    for w in t1_socks.iter_mut() {
        assert_eq!(closed_within(w, Duration::from_secs(5)).await, Some(1008));
    }
    for w in t2_socks.iter_mut() {
        w.assert_open().await;
    }

    // Password change on B: t2 refused on both, its sockets on both closed;
    // the fresh token works on both.
    let (st, v) = b
        .call(
            Method::POST,
            "/api/auth/password",
            Some(&t2),
            Some(json!({"current_password": PASSWORD, "new_password": "a new password"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let fresh = v["token"].as_str().unwrap().to_owned();
    assert_eq!(
        status(&b, Method::GET, "/api/documents", &t2, None).await,
        StatusCode::UNAUTHORIZED
    );
    until_status(&a, &t2, StatusCode::UNAUTHORIZED, Duration::from_secs(3)).await;
    for w in t2_socks.iter_mut() {
        assert_eq!(closed_within(w, Duration::from_secs(5)).await, Some(1008));
    }
    for (api, s) in [(&a, &servers[0]), (&b, &servers[1])] {
        assert_eq!(
            status(api, Method::GET, "/api/documents", &fresh, None).await,
            StatusCode::OK
        );
        ws(s, &doc, &fresh).await.unwrap().0.assert_open().await;
    }
}

/// On PostgreSQL (the clustered store): alice owns a document alone and one
/// shared with bob, and is a member of bob's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_deletion_removes_what_it_owns_and_closes_its_sockets_everywhere() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let url = pg.url();
    let env = [
        ("ALLOW_ANONYMOUS", "false"),
        LONG_CACHE,
        ("DATABASE_URL", url.as_str()),
        ("RUST_LOG", "warn"),
    ];
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &env);
    let (a, b) = (Api::new(&servers[0]), Api::new(&servers[1]));
    let (alice, _) = a.user("alice").await;
    let (bob, _) = a.user("bob").await;
    let id = |v: Value| v["id"].as_str().unwrap().to_owned();
    let solo = id(a.create(&alice, "solo", "mine").await);
    let shared = id(a.create(&alice, "shared", "ours").await);
    let theirs = id(a.create(&bob, "theirs", "bob's").await);
    let share = |doc: &str, user: &str, token: &str| {
        let (doc, user, token) = (doc.to_owned(), user.to_owned(), token.to_owned());
        let a = &a;
        async move {
            let (st, v) = a
                .call(
                    Method::PUT,
                    &format!("/api/documents/{doc}/members/{user}"),
                    Some(&token),
                    Some(json!({"role": "editor"})),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{v}");
        }
    };
    share(&shared, "bob", &alice).await;
    share(&theirs, "alice", &bob).await;
    let (mut alice_a, _) = ws(&servers[0], &solo, &alice).await.unwrap();
    let (mut alice_b, _) = ws(&servers[1], &theirs, &alice).await.unwrap();
    let (mut bob_shared, _) = ws(&servers[1], &shared, &bob).await.unwrap();
    let (mut bob_theirs, _) = ws(&servers[0], &theirs, &bob).await.unwrap();
    for api in [&a, &b] {
        assert_eq!(
            status(api, Method::GET, "/api/documents", &alice, None).await,
            StatusCode::OK
        );
    }
    let delete = |password: &str| Some(json!({"password": password}));

    // A wrong password: 401, nothing removed.
    let (st, v) = a
        .call(
            Method::DELETE,
            "/api/auth/account",
            Some(&alice),
            delete("wrong password"),
        )
        .await;
    assert_eq!(
        (st, error_code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{v}"
    );
    for d in [&solo, &shared, &theirs] {
        let st = status(
            &a,
            Method::GET,
            &format!("/api/documents/{d}"),
            &alice,
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
    }
    assert_eq!(login(&a, "alice", PASSWORD).await.0, StatusCode::OK);
    alice_a.assert_open().await;

    let (st, v) = a
        .call(
            Method::DELETE,
            "/api/auth/account",
            Some(&alice),
            delete(PASSWORD),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    // Her sockets close on both instances; her token is refused on both.
    assert_eq!(
        closed_within(&mut alice_a, Duration::from_secs(5)).await,
        Some(1008)
    );
    assert_eq!(
        closed_within(&mut alice_b, Duration::from_secs(5)).await,
        Some(1008)
    );
    assert_eq!(
        status(&a, Method::GET, "/api/documents", &alice, None).await,
        StatusCode::UNAUTHORIZED
    );
    until_status(&b, &alice, StatusCode::UNAUTHORIZED, Duration::from_secs(3)).await;
    assert_eq!(ws(&servers[1], &theirs, &alice).await.err(), Some(401));
    assert_eq!(
        login(&b, "alice", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    // What she owned is gone, shared or not; bob's socket on it was closed
    // as a document deletion closes it.
    assert_eq!(
        closed_within(&mut bob_shared, Duration::from_secs(5)).await,
        Some(1008)
    );
    for d in [&solo, &shared] {
        for api in [&a, &b] {
            let st = status(api, Method::GET, &format!("/api/documents/{d}"), &bob, None).await;
            assert_eq!(st, StatusCode::NOT_FOUND);
        }
    }
    // Bob's document, where she was a member, still works.
    bob_theirs.assert_open().await;
    let (st, v) = b
        .call(
            Method::GET,
            &format!("/api/documents/{theirs}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!((st, v["content"].as_str()), (StatusCode::OK, Some("bob's")));
    let (_, list) = b
        .call(Method::GET, "/api/documents", Some(&bob), None)
        .await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [theirs.as_str()]);
    // The name is free; the new alice is no member of anything.
    let (again, _) = b.user("alice").await;
    let st = status(
        &b,
        Method::GET,
        &format!("/api/documents/{theirs}"),
        &again,
        None,
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
}

/// An instance cut off from Redis while a token is revoked elsewhere misses
/// the event: once its pub/sub is back it drops its cached checks and
/// checks its live sessions' tokens against the store again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_missed_a_revocation_catches_up_when_its_pubsub_returns() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(format!(
        "127.0.0.1:{}",
        redis.url().rsplit(':').next().unwrap()
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let start = |id: &str, url: String| {
        let env = [
            ("REDIS_URL", url.as_str()),
            ("INSTANCE_ID", id),
            ("ALLOW_ANONYMOUS", "false"),
            LONG_CACHE,
        ];
        TestServer::start_in(TANDEM, dir.path(), &env)
    };
    let a = start("inst0", redis.url());
    let b = start("inst1", format!("redis://{}", proxy.addr));
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    let (token, _) = api_a.user("alice").await;
    let doc = api_a.create(&token, "notes", "hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut on_b, _) = ws(&b, &doc, &token).await.unwrap();
    assert_eq!(
        status(&api_b, Method::GET, "/api/documents", &token, None).await,
        StatusCode::OK
    );

    // B loses Redis; the logout on A is announced without it.
    proxy.set_down(true);
    proxy.cut_all();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = status(&api_a, Method::POST, "/api/auth/logout", &token, None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set_down(false);
    // Back on the bus, B closes the socket and refuses the token.
    assert_eq!(
        closed_within(&mut on_b, Duration::from_secs(10)).await,
        Some(1008)
    );
    assert_eq!(
        status(&api_b, Method::GET, "/api/documents", &token, None).await,
        StatusCode::UNAUTHORIZED
    );
}
