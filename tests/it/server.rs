//! Protocol v1 against the real server process: convergence, resume,
//! refusals, presence, keep-alive, slow consumers, restart.

use std::time::Duration;

use futures_util::SinkExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tandem::ot::splice;
use tandem_testkit::{
    random_edit, type_concurrently, Editor, Frame, Kind, TestServer, Ws, TIMEOUT,
};
use tokio_tungstenite::tungstenite::Message;

use crate::TANDEM;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_typing_concurrently_converge() {
    let server = TestServer::start(TANDEM, &[]);
    let doc = "converge";
    let mut editors = Vec::new();
    for i in 0..8 {
        editors.push(Editor::join(&server, doc, &format!("user{i}"), None).await);
    }
    let mut editors = type_concurrently(editors, 42, 80, 8).await;
    let (content, version) = server.document(doc).await;
    assert!(version >= 8 * 10, "only {version} commits");
    assert!(
        content.chars().any(|c| c as u32 > 0xFFFF),
        "no astral characters survived: {content:?}"
    );
    for ed in &mut editors {
        ed.sync_to(version).await;
        assert_eq!(ed.ot.version, version);
        assert_eq!(ed.ot.text(), content, "client {} diverged", ed.ot.client_id);
    }
    let fresh = Editor::join(&server, doc, "late", None).await;
    assert_eq!(fresh.init["content"], content.as_str());
    assert_eq!(fresh.init["version"], version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_with_op_in_flight_resumes_and_applies_once() {
    let server = TestServer::start(TANDEM, &[]);
    let doc = "resume";
    let mut alice = Editor::join(&server, doc, "alice", Some("alice-tab")).await;
    let mut bob = Editor::join(&server, doc, "bob", None).await;
    for round in 0..12 {
        let token = format!("<{round}🙂>");
        let op = splice(alice.ot.len_chars(), alice.ot.len_chars(), 0, &token);
        if round % 2 == 0 {
            // The op reaches the server, then the connection drops before
            // the ack is read.
            alice.edit(op).await;
            alice.ws.ws.flush().await.unwrap();
        } else {
            // The op is lost on the way: it was never sent.
            assert!(alice.ot.local_edit(op).unwrap().is_some());
        }
        alice.cut().await;
        // Someone else edits meanwhile.
        let b = splice(bob.ot.len_chars(), 0, 0, "b");
        bob.edit(b).await;
        bob.settle().await;
        let init = alice.resume(&server, doc, "alice").await;
        assert_eq!(init["resumed"], true, "{init}");
        assert!(init["content"].is_null());
        alice.settle().await;
        let (content, version) = server.document(doc).await;
        alice.sync_to(version).await;
        assert_eq!(alice.ot.text(), content);
        assert_eq!(content.matches(&token).count(), 1, "{token} in {content:?}");
    }
    // Every token once, in order.
    let (content, _) = server.document(doc).await;
    let tokens: Vec<String> = (0..12).map(|r| format!("<{r}🙂>")).collect();
    let without_b: String = content.replace('b', "");
    assert_eq!(without_b, tokens.concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_a_committed_seq_is_acked_with_its_original_version() {
    let server = TestServer::start(TANDEM, &[]);
    let (mut ws, init) = Ws::connect(&server.ws_url("dup", "user_id=u&client=c1"))
        .await
        .unwrap();
    assert_eq!(init["seq"], 0);
    ws.send(json!({"type":"op","version":0,"seq":1,"op":["hi"]}))
        .await;
    assert_eq!(
        ws.recv_type(Kind::Ack).await,
        json!({"type":"ack","seq":1,"version":1})
    );
    ws.send(json!({"type":"op","version":1,"seq":2,"op":[2,"!"]}))
        .await;
    assert_eq!(ws.recv_type(Kind::Ack).await["version"], 2);
    // Same seq again, from a stale base: acked, not applied.
    ws.send(json!({"type":"op","version":0,"seq":1,"op":["hi"]}))
        .await;
    assert_eq!(
        ws.recv_type(Kind::Ack).await,
        json!({"type":"ack","seq":1,"version":1})
    );
    assert_eq!(server.document("dup").await, ("hi!".to_owned(), 2));
    // A new connection with the same client id learns its last seq.
    let (_ws2, init) = Ws::connect(&server.ws_url("dup", "user_id=u&client=c1"))
        .await
        .unwrap();
    assert_eq!(init["seq"], 2);
    // ...and replaced the old one.
    assert_eq!(ws.closed().await, Some(4001));
}

/// Expect an `error` with `code` (skipping presence chatter).
async fn expect_error(ws: &mut Ws, code: &str) -> Frame {
    let m = ws.recv_type(Kind::Error).await;
    assert_eq!(m["code"], code, "{m}");
    assert!(m["message"].as_str().is_some_and(|s| !s.is_empty()));
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_code_and_changes_nothing() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("MAX_FRAME_BYTES", "2048"),
            ("MAX_OP_COMPONENTS", "20"),
            ("MAX_DOC_CHARS", "50"),
        ],
    );
    let doc = "hostile";
    let (mut ws, _) = Ws::connect(&server.ws_url(doc, "user_id=eve&client=eve1"))
        .await
        .unwrap();
    ws.send(json!({"type":"op","version":0,"seq":1,"op":["hello"]}))
        .await;
    ws.recv_type(Kind::Ack).await;
    let before = server.document(doc).await;
    assert_eq!(before, ("hello".to_owned(), 1));

    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let many: Vec<Value> = (0..30)
        .map(|i| if i % 2 == 0 { json!(1) } else { json!("a") })
        .collect();
    let cases: Vec<(String, &str, bool)> = vec![
        ("not json".into(), "bad_message", false),
        ("{}".into(), "bad_message", false),
        (r#"{"type":"nope"}"#.into(), "bad_message", false),
        (
            r#"{"type":"op","version":1,"op":[5,"x"]}"#.into(),
            "bad_message",
            false,
        ),
        (
            r#"{"type":"op","version":1,"seq":"2","op":[5,"x"]}"#.into(),
            "bad_message",
            false,
        ),
        (
            r#"{"type":"op","version":-1,"seq":2,"op":[5,"x"]}"#.into(),
            "bad_message",
            false,
        ),
        (
            r#"{"type":"op","version":1.5,"seq":2,"op":[5,"x"]}"#.into(),
            "bad_message",
            false,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[5,"\ud800"]}"#.into(),
            "bad_message",
            false,
        ),
        (
            r#"{"type":"op","version":99999999999999999999999,"seq":2,"op":[5]}"#.into(),
            "bad_message",
            false,
        ),
        (deep, "bad_message", false),
        (
            r#"{"type":"op","version":1,"seq":0,"op":[5,"x"]}"#.into(),
            "bad_message",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[0,5]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[5,1.5]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[5,""]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":"hello"}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":{"retain":5}}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[5,null]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[5,[1]]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[6]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[4]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[3,-10]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[5,-1]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[99999999999999999999,"x"]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":1,"seq":2,"op":[5,9007199254740993]}"#.into(),
            "bad_op",
            true,
        ),
        (
            r#"{"type":"op","version":7,"seq":2,"op":[5,"x"]}"#.into(),
            "version_out_of_range",
            true,
        ),
        (
            json!({"type":"op","version":1,"seq":2,"op":many}).to_string(),
            "too_large",
            true,
        ),
        (
            json!({"type":"op","version":1,"seq":2,"op":[5, "x".repeat(3000)]}).to_string(),
            "too_large",
            false,
        ),
        (
            json!({"type":"op","version":1,"seq":2,"op":[5, "y".repeat(60)]}).to_string(),
            "doc_too_large",
            true,
        ),
        (
            r#"{"type":"cursor","version":1,"anchor":9,"head":9}"#.into(),
            "bad_message",
            false,
        ),
        (
            r#"{"type":"cursor","version":1,"anchor":1,"head":null}"#.into(),
            "bad_message",
            false,
        ),
        (
            r#"{"type":"cursor","version":5,"anchor":1,"head":1}"#.into(),
            "version_out_of_range",
            false,
        ),
    ];
    for (frame, code, has_seq) in &cases {
        ws.send_text(frame).await;
        let m = expect_error(&mut ws, code).await;
        if *has_seq {
            assert!(m["seq"].is_u64(), "{frame}: {m}");
        }
        assert_eq!(
            server.document(doc).await,
            before,
            "{frame} changed the document"
        );
        ws.assert_open().await;
    }
    ws.ws
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect_error(&mut ws, "bad_message").await;
    ws.assert_open().await;
    // A valid op still works afterwards, with the next seq.
    ws.send(json!({"type":"op","version":1,"seq":2,"op":[5," 🌍"]}))
        .await;
    assert_eq!(ws.recv_type(Kind::Ack).await["version"], 2);
    // Far over the limit: refused, and the connection is closed (1009).
    ws.send_text(&"z".repeat(20_000)).await;
    expect_error(&mut ws, "too_large").await;
    assert_eq!(ws.closed().await, Some(1009));
    assert_eq!(server.document(doc).await, ("hello 🌍".to_owned(), 2));
    assert_eq!(
        reqwest::get(server.http("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn op_floods_are_rate_limited() {
    let server = TestServer::start(TANDEM, &[("OP_RATE_PER_SEC", "1"), ("OP_RATE_BURST", "5")]);
    let (mut ws, _) = Ws::connect(&server.ws_url("flood", "user_id=f"))
        .await
        .unwrap();
    for seq in 1..=20 {
        ws.send(json!({"type":"op","version":0,"seq":seq,"op":["x"]}))
            .await;
    }
    let (mut acks, mut limited) = (0, 0);
    for _ in 0..20 {
        let m = ws.recv().await;
        match m.kind() {
            Kind::Ack => acks += 1,
            Kind::Error => {
                assert_eq!(m["code"], "rate_limited");
                assert!(m["seq"].is_u64());
                limited += 1;
            }
            _ => panic!("{m}"),
        }
    }
    assert_eq!((acks, limited), (5, 15));
    assert_eq!(server.document("flood").await, ("xxxxx".to_owned(), 5));
    ws.assert_open().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_before_the_upgrade() {
    let closed = TestServer::start(TANDEM, &[("ALLOW_ANONYMOUS", "false")]);
    let status = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        e => panic!("{e}"),
    };
    let e = Ws::connect(&closed.ws_url("d", "user_id=u"))
        .await
        .err()
        .unwrap();
    assert_eq!(status(e), 401);
    let (st, body) = closed.get("/api/documents/d").await;
    assert_eq!(st, 401);
    assert_eq!(body["error"]["code"], "unauthorized");

    let open = TestServer::start(TANDEM, &[]);
    for (doc, q, want) in [
        ("d", "", 401),
        ("bad%20id", "user_id=u", 400),
        ("d", "user_id=u&version=abc", 400),
        ("d", "user_id=u&version=-1", 400),
        ("d", "user_id=u&version=1&history=a%20b", 400),
        ("d", "user_id=u&history=", 400),
        ("d", "user_id=a%20b", 400),
        ("d", "user_id=u&client=x%00y", 400),
    ] {
        let e = Ws::connect(&open.ws_url(doc, q)).await.err().unwrap();
        assert_eq!(status(e), want, "{doc}?{q}");
    }
    let (st, body) = open.get("/api/documents/never-opened").await;
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_cursors() {
    let server = TestServer::start(TANDEM, &[]);
    let doc = "presence";
    let (mut a, init_a) = Ws::connect(&server.ws_url(doc, "user_id=alice&name=Alice&client=a1"))
        .await
        .unwrap();
    assert_eq!(init_a["role"], "editor");
    assert_eq!(init_a["user"]["id"], "alice");
    let color = init_a["user"]["color"].as_str().unwrap().to_owned();
    assert!(color.starts_with('#') && color.len() == 7);
    a.send(json!({"type":"op","version":0,"seq":1,"op":["hello world"]}))
        .await;
    a.recv_type(Kind::Ack).await;

    let (mut b, init_b) = Ws::connect(&server.ws_url(doc, "user_id=bob&name=Bob&client=b1"))
        .await
        .unwrap();
    let (a1, b1) = (init_a.init().client, init_b.init().client);
    let users = init_b["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{init_b}");
    assert!(users
        .iter()
        .any(|u| u["id"] == "alice" && u["client"] == a1 && u["color"] == color.as_str()));
    let joined = a.recv_type(Kind::UserJoined).await;
    assert_eq!(joined["user"]["id"], "bob");
    assert_eq!(joined["user"]["name"], "Bob");
    assert_eq!(joined["client"], b1);

    // Alice selects "world"; Bob sees it.
    a.send(json!({"type":"cursor","version":1,"anchor":6,"head":11}))
        .await;
    let c = b.recv_type(Kind::Cursor).await;
    assert_eq!(
        c,
        json!({"type":"cursor","client":a1,"user":"alice","version":1,"anchor":6,"head":11})
    );
    // Bob inserts at the front; a later joiner sees Alice's selection moved.
    b.send(json!({"type":"op","version":1,"seq":1,"op":["¡", 11]}))
        .await;
    b.recv_type(Kind::Ack).await;
    let (_c, init_c) = Ws::connect(&server.ws_url(doc, "user_id=carol&client=c1"))
        .await
        .unwrap();
    let cursors = init_c["cursors"].as_array().unwrap();
    assert_eq!(cursors.len(), 1, "{init_c}");
    assert_eq!(cursors[0]["anchor"], 7);
    assert_eq!(cursors[0]["head"], 12);
    assert_eq!(cursors[0]["version"], 2);

    let (st, list) = server.get(&format!("/api/documents/{doc}/users")).await;
    assert_eq!(st, 200);
    assert_eq!(list.as_array().unwrap().len(), 3);

    // Same user id, same colour, on any connection.
    let (_a2, init_a2) = Ws::connect(&server.ws_url(doc, "user_id=alice&client=a2"))
        .await
        .unwrap();
    assert_eq!(init_a2["user"]["color"], color.as_str());

    drop(b);
    let left = loop {
        let m = a.recv().await;
        if m.kind() == Kind::UserLeft {
            break m;
        }
    };
    assert_eq!(left["client"], b1);
    assert_eq!(left["user"]["id"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_connections_are_dropped_and_live_ones_kept() {
    let server = TestServer::start(
        TANDEM,
        &[("PING_INTERVAL_MS", "200"), ("IDLE_TIMEOUT_MS", "900")],
    );
    let doc = "keepalive";
    // A peer that never reads never answers pings.
    let (dead, ghost) = Ws::connect(&server.ws_url(doc, "user_id=ghost&client=g"))
        .await
        .unwrap();
    let (mut live, _) = Ws::connect(&server.ws_url(doc, "user_id=live&client=l"))
        .await
        .unwrap();
    let left = live.recv_type(Kind::UserLeft).await;
    assert_eq!(left["client"], ghost.init().client);
    // The reading peer answers pings and stays, well past the timeout.
    assert!(matches!(
        live.try_recv(Duration::from_millis(2000)).await,
        Ok(None)
    ));
    live.assert_open().await;
    drop(dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_is_disconnected_without_slowing_others() {
    let server = TestServer::start(
        TANDEM,
        &[
            ("OUTBOUND_QUEUE", "128"),
            ("OP_RATE_PER_SEC", "100000"),
            ("OP_RATE_BURST", "100000"),
            ("MAX_FRAME_BYTES", "65536"),
        ],
    );
    let doc = "slow";
    let (mut slow, init) = Ws::connect(&server.ws_url(doc, "user_id=slow&client=s"))
        .await
        .unwrap();
    let slow_id = init.init().client.to_owned();
    let mut writer = Editor::join(&server, doc, "writer", None).await;
    // The writer keeps getting acks promptly.
    let dropped =
        tandem_testkit::flood_until_dropped(&mut writer, &slow_id, 2000, Duration::from_secs(2))
            .await;
    assert!(dropped, "the slow consumer was never disconnected");
    // The slow peer finds its socket closed with "try again later", and
    // can resume.
    assert_eq!(slow.closed().await, Some(1013));
    let (content, version) = server.document(doc).await;
    let back = Editor::join(&server, doc, "slow", Some("s")).await;
    assert_eq!(back.init["content"], content.as_str());
    assert_eq!(back.init["version"], version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_restores_everything() {
    // Snapshots only at shutdown: the timer never fires during the test.
    let env = [("SNAPSHOT_INTERVAL_MS", "600000")];
    let mut server = TestServer::start(TANDEM, &env);
    let dir = server.take_dir().unwrap();
    let mut expected = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for d in 0..4 {
        let doc = format!("doc{d}");
        let mut ed = Editor::join(&server, &doc, "writer", None).await;
        for _ in 0..40 {
            let op = random_edit(&mut rng, ed.ot.len_chars());
            ed.edit(op).await;
            ed.settle().await;
        }
        expected.push((doc.clone(), server.document(&doc).await));
    }
    // One more op committed whose ack the client never reads.
    let mut ed = Editor::join(&server, "doc0", "writer", Some("tab-x")).await;
    ed.edit(splice(ed.ot.len_chars(), 0, 0, "[once]")).await;
    let committed = tokio::time::timeout(TIMEOUT, async {
        loop {
            let (c, v) = server.document("doc0").await;
            if c.starts_with("[once]") {
                break (c, v);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    expected[0].1 = committed;

    let status = server.sigterm();
    assert!(status.success(), "{status:?}");
    assert_eq!(ed.ws.closed().await, Some(1001));

    let server = TestServer::start_in(TANDEM, dir.path(), &env);
    for (doc, (content, version)) in &expected {
        assert_eq!(
            &server.document(doc).await,
            &(content.clone(), *version),
            "{doc}"
        );
    }
    // The client resumes on the restarted server and resends its op: it is
    // recognised (dedupe survived the restart) and not applied twice.
    let init = ed.resume(&server, "doc0", "writer").await;
    assert_eq!(init["resumed"], true);
    ed.settle().await;
    let (content, _) = server.document("doc0").await;
    assert_eq!(content.matches("[once]").count(), 1);
    assert_eq!(ed.ot.text(), content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_documents_unload_and_reload_intact() {
    let server = TestServer::start(
        TANDEM,
        &[("IDLE_UNLOAD_MS", "100"), ("SNAPSHOT_INTERVAL_MS", "50")],
    );
    let doc = "unload";
    let mut ed = Editor::join(&server, doc, "u", Some("tab")).await;
    ed.edit(splice(0, 0, 0, "persisted 😀")).await;
    ed.settle().await;
    let version = ed.ot.version;
    drop(ed);
    for _ in 0..3 {
        // Long enough to be unloaded; reload comes from the store.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut ed = Editor::join(&server, doc, "u", Some("tab")).await;
        assert_eq!(ed.init["content"], "persisted 😀");
        assert_eq!(ed.init["version"], version);
        assert_eq!(ed.init["seq"], 1);
        // Resume from an old version after reload: served from the journal
        // (the reloaded document is the same history).
        let init = {
            let history = ed.init.init().history;
            let q = format!("user_id=u&client=tab2&version=0&history={history}");
            Ws::connect(&server.ws_url(doc, &q)).await.unwrap().1
        };
        assert_eq!(init["resumed"], true, "{init}");
        ed.ws.assert_open().await;
    }
}
