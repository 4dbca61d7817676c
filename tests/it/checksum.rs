//! Content checks (`check`, `mismatch`; `CHECKSUM_EVERY`) on the real
//! server: the check of version v follows that version's op/ack on every
//! socket and hashes the server's text; clean clients typing concurrently
//! always agree, on one instance or two (each hashes the records it fans
//! out); a client whose text drifts on purpose reports it (counted
//! in `tandem_checksum_mismatches_total`), reloads and keeps its pending
//! edits, each landing once; malformed reports are refused and change
//! nothing.

use serde_json::json;
use tandem::checksum::checksum;
use tandem::ot::splice;
use tandem_testkit::server::metric;
use tandem_testkit::{cluster, type_concurrently, Editor, Kind, RedisServer, TestServer, Ws};

use crate::TANDEM;

const MISMATCHES: &str = "tandem_checksum_mismatches_total";

async fn mismatches(server: &TestServer) -> f64 {
    metric(&server.metrics().await, MISMATCHES)
}

/// Insert `s` at code point `pos` of `ed`'s text (sent, not awaited).
async fn type_at(ed: &mut Editor, pos: Option<usize>, s: &str) {
    let len = ed.ot.len_chars();
    ed.edit(splice(len, pos.unwrap_or(len), 0, s)).await;
}

fn count(text: &str, token: &str) -> usize {
    text.matches(token).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_of_a_version_follows_its_op_with_the_text_hash() {
    let server = TestServer::start(TANDEM, &[("CHECKSUM_EVERY", "2")]);
    let (mut watcher, _) = Ws::connect(&server.ws_url("order", "user_id=w"))
        .await
        .unwrap();
    let mut ed = Editor::join(&server, "order", "u", Some("tab")).await;
    for s in ["a😀", "\r\n", "b"] {
        type_at(&mut ed, None, s).await;
        ed.settle().await;
    }
    // The author: ack 1, ack 2, check 2, ack 3. The others: the same with ops.
    assert_eq!(ed.checks, 1);
    let mut frames = Vec::new();
    while frames.len() < 4 {
        let f = watcher.recv().await;
        if matches!(f.kind(), Kind::Op | Kind::Check) {
            frames.push(f);
        }
    }
    let kinds: Vec<Kind> = frames.iter().map(|f| f.kind()).collect();
    assert_eq!(kinds, [Kind::Op, Kind::Op, Kind::Check, Kind::Op]);
    assert_eq!(frames[1]["version"], 2);
    assert_eq!(
        frames[2],
        json!({"type": "check", "version": 2, "hash": checksum("a😀\r\n")})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_clients_typing_concurrently_never_disagree() {
    let server = TestServer::start(TANDEM, &[("CHECKSUM_EVERY", "3")]);
    let eds = vec![
        Editor::join(&server, "clean", "a", Some("ta")).await,
        Editor::join(&server, "clean", "b", Some("tb")).await,
    ];
    let mut eds = type_concurrently(eds, 7, 40, 8).await;
    let (content, version) = server.document("clean").await;
    for ed in &mut eds {
        ed.sync_to(version).await;
        assert_eq!(ed.ot.text(), content);
        assert_eq!(ed.checksum_reloads, 0);
        assert!(ed.checks >= 5, "only {} checks agreed", ed.checks);
    }
    assert_eq!(mismatches(&server).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_two_instances_agree_with_each_instances_checks() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &[("CHECKSUM_EVERY", "3")]);
    let eds = vec![
        Editor::join(&servers[0], "two", "a", Some("ta")).await,
        Editor::join(&servers[1], "two", "b", Some("tb")).await,
    ];
    let mut eds = type_concurrently(eds, 11, 30, 8).await;
    let (content, version) = servers[0].document("two").await;
    for ed in &mut eds {
        ed.sync_to(version).await;
        assert_eq!(ed.ot.text(), content);
        assert_eq!(ed.checksum_reloads, 0);
        assert!(ed.checks >= 5, "only {} checks agreed", ed.checks);
    }
    for s in &servers {
        assert_eq!(mismatches(s).await, 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_client_reports_reloads_and_keeps_its_pending_edits() {
    let server = TestServer::start(TANDEM, &[("CHECKSUM_EVERY", "4")]);
    let doc = "drift";
    let mut a = Editor::join(&server, doc, "a", Some("ta")).await;
    let mut b = Editor::join(&server, doc, "b", Some("tb")).await;
    type_at(&mut a, None, "hello world").await;
    a.settle().await;
    b.sync_to(1).await;
    // The bug: b's text changes and the server never hears of it.
    b.ot.drift(&splice(11, 0, 1, "#")).unwrap();
    // b's edit is committed as version 2 (b does not read its ack yet)…
    type_at(&mut b, None, "<b1😀>").await;
    while server.document(doc).await.1 < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // …a's as 3 and 4 (the check of 4 follows), and b types on meanwhile.
    for t in ["[a1]", "[a2]"] {
        type_at(&mut a, Some(0), t).await;
        a.settle().await;
    }
    type_at(&mut b, None, "<b2>").await;
    while !b.resyncing() {
        let m = b.ws.recv().await;
        b.handle(&m).await;
    }
    // Found at check 4 with <b2> on the wire; <b3> typed while it waits.
    assert_eq!(b.ot.version, 4);
    assert!(b.ot.has_pending());
    type_at(&mut b, None, "<b3>").await;
    b.settle().await;
    assert_eq!(b.checksum_reloads, 1);
    assert!(!b.resyncing());

    let (content, version) = server.document(doc).await;
    a.sync_to(version).await;
    b.sync_to(version).await;
    assert_eq!(a.ot.text(), content);
    assert_eq!(b.ot.text(), content);
    assert!(
        !content.contains('#'),
        "the drift reached the server: {content}"
    );
    for t in ["[a1]", "[a2]", "<b1😀>", "<b2>", "<b3>", "hello"] {
        assert_eq!(count(&content, t), 1, "{t} in {content:?}");
    }
    assert_eq!(a.checksum_reloads, 0);
    assert!(a.checks >= 1);
    assert_eq!(mismatches(&server).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatch_reports_are_checked_and_counted_once_per_connection() {
    let server = TestServer::start(TANDEM, &[("CHECKSUM_EVERY", "4")]);
    let mut ed = Editor::join(&server, "reports", "u", Some("tab")).await;
    type_at(&mut ed, None, "text").await;
    ed.settle().await;
    for bad in [
        json!({"type": "mismatch", "version": 4, "hash": "811C9DC5"}),
        json!({"type": "mismatch", "version": 4, "hash": "811c9dc"}),
        json!({"type": "mismatch", "version": 3, "hash": "811c9dc5"}),
        json!({"type": "mismatch", "version": 0, "hash": "811c9dc5"}),
        json!({"type": "mismatch", "version": 4}),
        json!({"type": "mismatch", "version": "4", "hash": "811c9dc5"}),
    ] {
        ed.ws.send(bad.clone()).await;
        let e = ed.ws.recv_type(Kind::Error).await;
        assert_eq!(e["code"], "bad_message", "{bad}: {e}");
    }
    assert_eq!(mismatches(&server).await, 0.0);
    for v in [4, 8, 8, 12] {
        ed.ws
            .send(json!({"type": "mismatch", "version": v, "hash": "00000000"}))
            .await;
    }
    ed.ws.assert_open().await;
    assert_eq!(mismatches(&server).await, 1.0);
    // Nothing else changed.
    assert_eq!(server.document("reports").await, ("text".into(), 1));
}
