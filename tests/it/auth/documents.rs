//! Documents over REST and per-document permissions: REST edits and live
//! clients converge, roles are enforced on REST and WebSocket and their
//! changes reach live sockets, and a member revoked on one instance loses
//! their socket on another.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tandem_testkit::{cluster, error_code, Api, Kind, RedisServer, TestServer};

use super::{ws_with, PRIVATE};
use crate::TANDEM;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_over_rest_and_live_clients_converge() {
    let server = TestServer::start(TANDEM, PRIVATE);
    let api = Api::new(&server);
    let (token, _) = api.user("alice").await;
    let doc = api.create(&token, "Notes", "hello world").await;
    assert_eq!(
        (
            doc["content"].as_str(),
            doc["version"].as_u64(),
            doc["role"].as_str()
        ),
        (Some("hello world"), Some(1), Some("owner"))
    );
    assert_eq!(doc["owner"], "alice");
    let id = doc["id"].as_str().unwrap().to_owned();
    let (mut live, _) = ws_with(&server, &id, &format!("token={token}"), None)
        .await
        .unwrap();

    // HTTP op, based on an old version: transformed like a socket's op.
    let (st, v) = api
        .call(
            Method::POST,
            &format!("/api/documents/{id}/ops"),
            Some(&token),
            Some(json!({"version": 1, "op": [5, ",", 6]})),
        )
        .await;
    assert_eq!(
        (st, v["version"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{v}"
    );
    let (st, v) = api
        .call(
            Method::POST,
            &format!("/api/documents/{id}/ops"),
            Some(&token),
            Some(json!({"version": 1, "op": [11, "!"]})),
        )
        .await;
    assert_eq!(
        (st, v["version"].as_u64()),
        (StatusCode::OK, Some(3)),
        "{v}"
    );
    for (body, status, code) in [
        (
            json!({"version": 3, "op": [99]}),
            StatusCode::BAD_REQUEST,
            "bad_op",
        ),
        (
            json!({"version": 3, "op": [0]}),
            StatusCode::BAD_REQUEST,
            "bad_op",
        ),
        (
            json!({"version": 9, "op": [13, "x"]}),
            StatusCode::CONFLICT,
            "version_out_of_range",
        ),
        (json!({"op": [13]}), StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        let (st, v) = api
            .call(
                Method::POST,
                &format!("/api/documents/{id}/ops"),
                Some(&token),
                Some(body),
            )
            .await;
        assert_eq!((st, error_code(&v)), (status, code), "{v}");
    }
    // Replace content and title: one op, live clients converge.
    let body = json!({"title": "Renamed", "content": "hello, brave new world! 🌍"});
    let (st, v) = api
        .call(
            Method::PUT,
            &format!("/api/documents/{id}"),
            Some(&token),
            Some(body),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["title"].as_str(),
            v["content"].as_str(),
            v["version"].as_u64()
        ),
        (Some("Renamed"), Some("hello, brave new world! 🌍"), Some(4))
    );
    let mut text = "hello world".to_owned();
    while text != "hello, brave new world! 🌍" {
        let m = live.recv_type(Kind::Op).await;
        let op = tandem::ot::Operation::from_json(&m["op"], usize::MAX).unwrap();
        text = op.apply(&text).unwrap();
    }
    // Listing, paginated, newest first.
    for i in 0..3 {
        api.create(&token, &format!("doc {i}"), "").await;
    }
    let (_, page1) = api
        .call(Method::GET, "/api/documents?limit=2", Some(&token), None)
        .await;
    let (_, page2) = api
        .call(
            Method::GET,
            "/api/documents?limit=2&offset=2",
            Some(&token),
            None,
        )
        .await;
    let titles: Vec<&str> = page1
        .as_array()
        .unwrap()
        .iter()
        .chain(page2.as_array().unwrap())
        .map(|d| d["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles.len(), 4);
    assert!(titles.contains(&"Renamed"));
    // The OpenAPI document covers every route.
    let (st, spec) = api.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(st, StatusCode::OK);
    for path in [
        "/api/auth/register",
        "/api/auth/login",
        "/api/auth/logout",
        "/api/auth/password",
        "/api/auth/account",
        "/api/documents",
        "/api/documents/{id}",
        "/api/documents/{id}/ops",
        "/api/documents/{id}/users",
        "/api/documents/{id}/members/{username}",
        "/healthz",
        "/metrics",
    ] {
        assert!(
            spec["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_and_changes_reach_live_sockets() {
    let server = TestServer::start(TANDEM, PRIVATE);
    let api = Api::new(&server);
    let (alice, _) = api.user("alice").await;
    let (bob, _) = api.user("bob").await;
    let id = api.create(&alice, "private", "secret").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/documents/{id}");
    // a stranger: REST and WebSocket
    let (st, v) = api.call(Method::GET, &path, Some(&bob), None).await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    assert_eq!(
        ws_with(&server, &id, &format!("token={bob}"), None)
            .await
            .err(),
        Some(403)
    );
    let (st, _) = api
        .call(Method::GET, &format!("{path}/users"), Some(&bob), None)
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // only the owner manages members
    let member = |r: &str| json!({"role": r});
    let (st, _) = api
        .call(
            Method::PUT,
            &format!("{path}/members/alice"),
            Some(&bob),
            Some(member("editor")),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = api
        .call(
            Method::PUT,
            &format!("{path}/members/nobody"),
            Some(&alice),
            Some(member("editor")),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = api
        .call(
            Method::PUT,
            &format!("{path}/members/bob"),
            Some(&alice),
            Some(member("admin")),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // bob as viewer: reads everything live, cannot edit
    let (st, _) = api
        .call(
            Method::PUT,
            &format!("{path}/members/bob"),
            Some(&alice),
            Some(member("viewer")),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = api.call(Method::GET, &path, Some(&bob), None).await;
    assert_eq!(
        (st, v["role"].as_str(), v["content"].as_str()),
        (StatusCode::OK, Some("viewer"), Some("secret"))
    );
    let (mut bws, init) = ws_with(&server, &id, &format!("token={bob}&client=bob1"), None)
        .await
        .unwrap();
    assert_eq!(init["role"], "viewer");
    bws.send(json!({"type": "op", "version": 1, "seq": 1, "op": [6, "!"]}))
        .await;
    let e = bws.recv_type(Kind::Error).await;
    assert_eq!(
        (e["code"].as_str(), e["seq"].as_u64()),
        (Some("forbidden"), Some(1))
    );
    let (st, _) = api
        .call(
            Method::POST,
            &format!("{path}/ops"),
            Some(&bob),
            Some(json!({"version": 1, "op": [6, "!"]})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = api
        .call(
            Method::PUT,
            &path,
            Some(&bob),
            Some(json!({"content": "mine"})),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        api.call(Method::GET, &path, Some(&alice), None).await.1["content"],
        "secret"
    );
    // promoted while connected: the same socket may now edit
    api.call(
        Method::PUT,
        &format!("{path}/members/bob"),
        Some(&alice),
        Some(member("editor")),
    )
    .await;
    // The socket is told (protocol extension `role`), then may edit.
    let m = bws.recv_type(Kind::Role).await;
    assert_eq!(
        m["role"], "editor",
        "promotion did not reach the live socket"
    );
    bws.send(json!({"type": "op", "version": 1, "seq": 1, "op": [6, "!"]}))
        .await;
    let m = bws.recv_type(Kind::Ack).await;
    assert_eq!(m["seq"], 1);
    // revoked: the live socket is told and closed
    let (st, _) = api
        .call(
            Method::DELETE,
            &format!("{path}/members/bob"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let e = bws.recv_type(Kind::Error).await;
    assert_eq!(e["code"], "forbidden");
    assert_eq!(bws.closed().await, Some(1008));
    assert_eq!(
        api.call(Method::GET, &path, Some(&bob), None).await.0,
        StatusCode::FORBIDDEN
    );
    // delete: not by others; by the owner, live sockets closed, then 404
    let (st, _) = api.call(Method::DELETE, &path, Some(&bob), None).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (mut aws, _) = ws_with(&server, &id, &format!("token={alice}"), None)
        .await
        .unwrap();
    let (st, _) = api.call(Method::DELETE, &path, Some(&alice), None).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(aws.recv_type(Kind::Error).await["code"], "forbidden");
    assert_eq!(aws.closed().await, Some(1008));
    assert_eq!(
        api.call(Method::GET, &path, Some(&alice), None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_on_one_instance_closes_the_socket_on_another() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 2, PRIVATE);
    // A cluster shares one store: use the first instance for REST.
    let api = Api::new(&servers[0]);
    let (alice, _) = api.user("alice").await;
    let (bob, _) = api.user("bob").await;
    let id = api.create(&alice, "shared", "x").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/documents/{id}");
    api.call(
        Method::PUT,
        &format!("{path}/members/bob"),
        Some(&alice),
        Some(json!({"role": "editor"})),
    )
    .await;
    let (mut bws, _) = ws_with(&servers[1], &id, &format!("token={bob}"), None)
        .await
        .unwrap();
    let (st, _) = api
        .call(
            Method::DELETE,
            &format!("{path}/members/bob"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(bws.recv_type(Kind::Error).await["code"], "forbidden");
    assert_eq!(bws.closed().await, Some(1008));
}
