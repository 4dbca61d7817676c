//! WebSocket tickets: minted over REST with the bearer token, redeemed once
//! as `/ws/{id}?ticket=…` on any instance of a cluster (Redis), refused
//! when reused, expired, for another document, or for a document the user
//! cannot open; `?token=` still works for API clients.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tandem_testkit::{cluster, error_code, Api, Frame, RedisServer, TestServer, Ws};

use crate::TANDEM;

async fn ws(server: &TestServer, doc: &str, query: &str) -> Result<(Ws, Frame), u16> {
    Ws::try_connect(server.ws_url(doc, query)).await
}

async fn ticket(api: &Api<'_>, token: &str, doc: &str) -> (StatusCode, serde_json::Value) {
    api.call(
        Method::POST,
        "/api/auth/ws-ticket",
        Some(token),
        Some(json!({ "document": doc })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_single_use_across_instances_bound_to_their_document_and_expire() {
    let redis = RedisServer::start();
    let env = &[("ALLOW_ANONYMOUS", "false"), ("WS_TICKET_TTL_MS", "1500")];
    let (_dir, servers) = cluster(TANDEM, &redis, 2, env);
    let api = Api::new(&servers[0]);
    let (alice, alice_id) = api.user("alice").await;
    let (bob, _) = api.user("bob").await;
    let doc = api.create(&alice, "one", "hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = api.create(&alice, "two", "").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Minted on one instance, redeemed on the other: alice's session.
    let (st, t) = ticket(&api, &alice, &doc).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(t["expires_in"], 2);
    let tk = t["ticket"].as_str().unwrap().to_owned();
    assert!(tk.len() >= 43 && !tk.contains('.'), "not a JWT: {tk}");
    let (_ws, init) = ws(&servers[1], &doc, &format!("ticket={tk}"))
        .await
        .unwrap();
    assert_eq!(init.json()["type"], "init");
    assert_eq!(init.json()["content"], "hi");
    assert!(init.json()["users"].to_string().contains(&alice_id));
    // Used: refused on either instance.
    for s in &servers {
        assert_eq!(ws(s, &doc, &format!("ticket={tk}")).await.err(), Some(401));
    }
    // For another document: refused, and used up all the same.
    let (_, t) = ticket(&api, &alice, &doc).await;
    let tk = t["ticket"].as_str().unwrap().to_owned();
    assert_eq!(
        ws(&servers[1], &other, &format!("ticket={tk}")).await.err(),
        Some(403)
    );
    assert_eq!(
        ws(&servers[1], &doc, &format!("ticket={tk}")).await.err(),
        Some(401)
    );
    // Expired.
    let (_, t) = ticket(&api, &alice, &doc).await;
    let tk = t["ticket"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        ws(&servers[0], &doc, &format!("ticket={tk}")).await.err(),
        Some(401)
    );
    // Made up.
    assert_eq!(ws(&servers[0], &doc, "ticket=nope").await.err(), Some(401));
    // No ticket for a document bob cannot open, nor without a token.
    let (st, v) = ticket(&api, &bob, &doc).await;
    assert_eq!((st, error_code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    let (st, _) = api
        .call(
            Method::POST,
            "/api/auth/ws-ticket",
            None,
            Some(json!({ "document": doc })),
        )
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = ticket(&api, &alice, "no such doc!").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // API clients keep ?token=.
    assert!(ws(&servers[1], &doc, &format!("token={alice}"))
        .await
        .is_ok());
    // A ticket of a token revoked since it was minted is refused.
    let (_, t) = ticket(&api, &alice, &doc).await;
    let tk = t["ticket"].as_str().unwrap().to_owned();
    let (st, _) = api
        .call(Method::POST, "/api/auth/logout", Some(&alice), None)
        .await;
    assert!(st.is_success());
    assert_eq!(
        ws(&servers[1], &doc, &format!("ticket={tk}")).await.err(),
        Some(401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_work_embedded_and_are_rate_limited_per_user() {
    let server = TestServer::start(TANDEM, &[("ALLOW_ANONYMOUS", "false")]);
    let api = Api::new(&server);
    let (carol, _) = api.user("carol").await;
    let doc = api.create(&carol, "c", "x").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, t) = ticket(&api, &carol, &doc).await;
    let tk = t["ticket"].as_str().unwrap().to_owned();
    assert!(ws(&server, &doc, &format!("ticket={tk}")).await.is_ok());
    assert_eq!(
        ws(&server, &doc, &format!("ticket={tk}")).await.err(),
        Some(401)
    );
    let mut limited = false;
    for _ in 0..40 {
        let (st, _) = ticket(&api, &carol, &doc).await;
        if st == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(st, StatusCode::OK);
    }
    assert!(limited, "a flood of tickets is limited");
}
