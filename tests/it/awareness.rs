//! Awareness (each client's small JSON state and its active/idle/away
//! presence state): across instances on a real Redis (live updates, a late
//! joiner's `init` on an instance that already serves the document and on
//! one that loads it then, gone when its client leaves or its instance is
//! killed), and on one embedded instance (bad input refused with nothing
//! changed, floods throttled).

use std::time::Duration;

use serde_json::{json, Value};
use tandem_testkit::{cluster, Kind, RedisServer, TestServer, Ws, TIMEOUT};

use crate::TANDEM;

/// The next `awareness` frame, skipping other chatter.
async fn next_awareness(ws: &mut Ws) -> tandem_testkit::Frame {
    ws.recv_type(Kind::Awareness).await
}

/// `init.awareness` as (client, state, presence).
fn init_awareness(init: &tandem_testkit::Frame) -> Vec<(String, Value, String)> {
    let mut v: Vec<(String, Value, String)> = init["awareness"]
        .as_array()
        .unwrap_or_else(|| panic!("no awareness in {init}"))
        .iter()
        .map(|a| {
            (
                a["client"].as_str().unwrap().to_owned(),
                a["state"].clone(),
                a["presence"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The presence state `init.users` gives `client`.
fn user_state(init: &tandem_testkit::Frame, client: &str) -> String {
    init["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["client"] == client)
        .unwrap_or_else(|| panic!("{client} not in {init}"))["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn awareness_crosses_instances_reaches_late_joiners_and_goes_with_its_client() {
    let redis = RedisServer::start();
    let (_dir, mut servers) = cluster(TANDEM, &redis, 3, &[("PRESENCE_TTL_MS", "1500")]);
    let doc = "aware";
    let (mut a, init_a) = Ws::connect(&servers[0].ws_url(doc, "user_id=alice&client=a1"))
        .await
        .unwrap();
    let a1 = init_a.init().client.to_owned();
    assert_eq!(init_a["awareness"], json!([]), "{init_a}");
    assert_eq!(user_state(&init_a, &a1), "active");
    let (mut b, init_b) = Ws::connect(&servers[1].ws_url(doc, "user_id=bob&client=b1"))
        .await
        .unwrap();
    let b1 = init_b.init().client.to_owned();
    a.recv_type(Kind::UserJoined).await;

    // Alice's awareness on instance 0 reaches Bob on instance 1.
    let state = json!({"typing": 1_700_000_000_000_i64, "viewport": [0, 40], "name": "é😀"});
    a.send(json!({"type": "awareness", "state": state, "presence": "idle"}))
        .await;
    let got = next_awareness(&mut b).await;
    assert_eq!(
        got,
        json!({"type": "awareness", "client": a1, "user": "alice", "state": state, "presence": "idle"})
    );
    // Bob's own update; the sender is not echoed.
    b.send(json!({"type": "awareness", "state": {"follow": a1}}))
        .await;
    let got = next_awareness(&mut a).await;
    assert_eq!(
        (got["client"].clone(), got["presence"].clone()),
        (json!(b1), json!("active"))
    );
    assert!(
        matches!(a.try_recv(Duration::from_millis(300)).await, Ok(None)),
        "alice got something more"
    );

    // A late joiner on the instance serving the document, and one on an
    // instance that loads it now (from what Redis keeps), get both in init.
    let want = vec![
        (a1.clone(), state.clone(), "idle".to_owned()),
        (b1.clone(), json!({"follow": a1}), "active".to_owned()),
    ];
    for (i, s) in [1usize, 2].into_iter().enumerate() {
        let (c, init) = Ws::connect(&s_url(&servers[s], doc, &format!("carol{i}")))
            .await
            .unwrap();
        assert_eq!(init_awareness(&init), want, "on instance {s}: {init}");
        assert_eq!(user_state(&init, &a1), "idle", "{init}");
        assert_eq!(user_state(&init, &b1), "active", "{init}");
        c.close().await;
    }
    // REST presence carries the state too, on every instance.
    for s in &servers {
        let (_, users) = s.get(&format!("/api/documents/{doc}/users")).await;
        let alice = users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["client"] == a1.as_str())
            .unwrap_or_else(|| panic!("{users}"))
            .clone();
        assert_eq!(alice["state"], "idle", "on {}: {users}", s.addr);
    }

    // A presence change alone keeps the state.
    a.send(json!({"type": "awareness", "state": state, "presence": "away"}))
        .await;
    let got = next_awareness(&mut b).await;
    assert_eq!(
        (got["presence"].clone(), got["state"].clone()),
        (json!("away"), state.clone())
    );

    // Alice leaves: her awareness goes with her, everywhere.
    a.close().await;
    // (Carol's leaves come first.)
    while b.recv_type(Kind::UserLeft).await["client"] != a1.as_str() {}
    for s in [1usize, 2] {
        let (c, init) = Ws::connect(&s_url(&servers[s], doc, "dave")).await.unwrap();
        let clients: Vec<String> = init_awareness(&init).into_iter().map(|a| a.0).collect();
        assert_eq!(
            clients,
            std::slice::from_ref(&b1),
            "on instance {s}: {init}"
        );
        c.close().await;
    }

    // Bob's instance is killed: his awareness expires with his presence.
    let (mut e, _) = Ws::connect(&s_url(&servers[2], doc, "erin")).await.unwrap();
    servers[1].kill();
    drop(b);
    while e.recv_type(Kind::UserLeft).await["client"] != b1.as_str() {}
    // Each instance reaps on its own beat: instance 0 follows within one.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (c, init) = Ws::connect(&s_url(&servers[0], doc, "fred")).await.unwrap();
        c.close().await;
        if init["awareness"] == json!([]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{init}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn s_url(s: &TestServer, doc: &str, user: &str) -> String {
    s.ws_url(doc, &format!("user_id={user}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_awareness_is_refused_and_changes_nothing() {
    let server = TestServer::start(TANDEM, &[]);
    let doc = "aware-bad";
    let (mut a, init_a) = Ws::connect(&s_url(&server, doc, "alice")).await.unwrap();
    let a1 = init_a.init().client.to_owned();
    let (mut b, _) = Ws::connect(&s_url(&server, doc, "bob")).await.unwrap();
    a.recv_type(Kind::UserJoined).await;
    let deep = json!({"a": {"b": {"c": {"d": {}}}}});
    let many: serde_json::Map<String, Value> = (0..65).map(|i| (i.to_string(), json!(i))).collect();
    let bad = [
        json!({"type": "awareness"}),
        json!({"type": "awareness", "state": null}),
        json!({"type": "awareness", "state": [1, 2]}),
        json!({"type": "awareness", "state": "typing"}),
        json!({"type": "awareness", "state": 3}),
        json!({"type": "awareness", "state": {"s": "x".repeat(1100)}}),
        json!({"type": "awareness", "state": deep}),
        json!({"type": "awareness", "state": many}),
        json!({"type": "awareness", "state": {}, "presence": "asleep"}),
        json!({"type": "awareness", "state": {}, "presence": 1}),
    ];
    for msg in &bad {
        a.send(msg.clone()).await;
        let e = a.recv_type(Kind::Error).await;
        assert_eq!(e["code"], "bad_message", "{msg} → {e}");
    }
    // Nothing reached Bob, nothing is kept; the connection is fine.
    assert!(
        matches!(b.try_recv(Duration::from_millis(300)).await, Ok(None)),
        "bob got something"
    );
    a.assert_open().await;
    let (c, init) = Ws::connect(&s_url(&server, doc, "carol")).await.unwrap();
    assert_eq!(init["awareness"], json!([]), "{init}");
    assert_eq!(user_state(&init, &a1), "active");
    c.close().await;

    // At the limits it is taken (1 KB serialised, 4 levels).
    let pad = 1024 - r#"{"s":""}"#.len();
    let edge = json!({"s": "x".repeat(pad)});
    a.send(json!({"type": "awareness", "state": edge})).await;
    assert_eq!(next_awareness(&mut b).await["state"], edge);
    let nested = json!({"a": {"b": {"c": [1]}}, "d": {}});
    a.send(json!({"type": "awareness", "state": nested})).await;
    assert_eq!(next_awareness(&mut b).await["state"], nested);

    // Embedded too: a late joiner sees it, and it goes when Alice leaves.
    let (c, init) = Ws::connect(&s_url(&server, doc, "dave")).await.unwrap();
    assert_eq!(
        init_awareness(&init),
        vec![(a1.clone(), nested, "active".into())]
    );
    c.close().await;
    a.close().await;
    while b.recv_type(Kind::UserLeft).await["client"] != a1.as_str() {}
    let (_, init) = Ws::connect(&s_url(&server, doc, "erin")).await.unwrap();
    assert_eq!(init["awareness"], json!([]), "{init}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awareness_floods_are_throttled_per_connection() {
    let server = TestServer::start(TANDEM, &[("CURSOR_RATE_PER_SEC", "5")]);
    let doc = "aware-flood";
    let (mut a, _) = Ws::connect(&s_url(&server, doc, "alice")).await.unwrap();
    let (mut b, _) = Ws::connect(&s_url(&server, doc, "bob")).await.unwrap();
    a.recv_type(Kind::UserJoined).await;
    for i in 0..100 {
        a.send(json!({"type": "awareness", "state": {"n": i}}))
            .await;
    }
    // One notice (at most one a second), and the connection stays open.
    let e = a.recv_type(Kind::Error).await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    a.assert_open().await;
    let mut got = 0;
    while let Ok(Some(f)) = b.try_recv(Duration::from_millis(500)).await {
        if f.kind() == Kind::Awareness {
            got += 1;
        }
    }
    // A burst of 5, and what refilled while the flood was read.
    assert!((5..=8).contains(&got), "{got} of 100 relayed");
    // Cursors keep their own allowance.
    a.send(json!({"type": "cursor", "version": 0, "anchor": 0, "head": 0}))
        .await;
    assert_eq!(b.recv_type(Kind::Cursor).await["anchor"], 0);
}
