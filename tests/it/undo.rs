//! Server-side undo/redo against the real binary: a user's undo reverts only
//! their own step (typing runs as one, however others' keystrokes interleave
//! with theirs), across instances sharing Redis, and stays convergent under
//! random concurrent edits, undos and redos.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tandem::ot::splice;
use tandem_testkit::{cluster, random_edit, Editor, RedisServer, TestServer};

use crate::TANDEM;

/// Type `s` at code point `pos`, one keystroke per op, each acknowledged.
async fn type_at(ed: &mut Editor, pos: usize, s: &str) {
    for (i, ch) in s.chars().enumerate() {
        let len = ed.ot.len_chars();
        ed.edit(splice(len, pos + i, 0, &ch.to_string())).await;
        ed.settle().await;
    }
}

/// Send `undo`/`redo` and wait for the resulting op (or for quiet).
async fn history(ed: &mut Editor, what: &str) -> bool {
    let before = ed.ot.version;
    ed.ws.send(json!({ "type": what })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ed.ot.version == before && tokio::time::Instant::now() < deadline {
        ed.pump(Duration::from_millis(50)).await;
    }
    ed.ot.version > before
}

async fn catch_up(eds: &mut [&mut Editor], server: &TestServer, doc: &str) -> String {
    let (content, version) = server.document(doc).await;
    for ed in eds.iter_mut() {
        ed.sync_to(version).await;
        assert_eq!(ed.ot.text(), content);
    }
    content
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_reverts_only_the_users_own_step_across_instances() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &[]);
    let doc = "undo-across";
    let mut bob = Editor::join(&servers[1], doc, "bob", None).await;
    type_at(&mut bob, 0, "bob\n").await;
    let mut alice = Editor::join(&servers[0], doc, "alice", None).await;
    type_at(&mut alice, 4, "Hello").await; // one typing run
    bob.sync_to(alice.ot.version).await;
    type_at(&mut bob, 3, "!").await;
    let t = catch_up(&mut [&mut alice, &mut bob], &servers[0], doc).await;
    assert_eq!(t, "bob!\nHello");

    // Alice's undo removes her whole run and nothing of Bob's.
    assert!(history(&mut alice, "undo").await);
    let t = catch_up(&mut [&mut alice, &mut bob], &servers[1], doc).await;
    assert_eq!(t, "bob!\n");

    // She reconnects to the other instance: her redo stack is in Redis.
    let mut alice2 = Editor::join(&servers[1], doc, "alice", None).await;
    assert!(history(&mut alice2, "redo").await);
    let t = catch_up(&mut [&mut alice, &mut bob, &mut alice2], &servers[0], doc).await;
    assert_eq!(t, "bob!\nHello");

    // Bob edits inside her text; undoing her step keeps his edit.
    type_at(&mut bob, 7, "[b]").await;
    catch_up(&mut [&mut alice, &mut bob, &mut alice2], &servers[0], doc).await;
    assert!(history(&mut alice2, "undo").await);
    let t = catch_up(&mut [&mut alice, &mut bob, &mut alice2], &servers[0], doc).await;
    assert_eq!(t, "bob!\n[b]");

    // A new edit clears the redo stack; an empty stack does nothing.
    type_at(&mut alice2, 0, ">").await;
    assert!(!history(&mut alice2, "redo").await);
    // Bob's undo is his own: his "[b]" goes, Alice's ">" stays.
    catch_up(&mut [&mut alice, &mut bob, &mut alice2], &servers[0], doc).await;
    assert!(history(&mut bob, "undo").await);
    let t = catch_up(&mut [&mut alice, &mut bob, &mut alice2], &servers[0], doc).await;
    assert_eq!(t, ">bob!\n");
}

/// Alice types "Hello" at the end while Bob types "12345" at the start
/// between each of her keystrokes (on `a` and `b`): one undo removes her
/// whole run and none of Bob's text; redo puts it back; Bob's undo is his.
async fn interleaved_runs(a: &TestServer, b: &TestServer, doc: &str) {
    let mut alice = Editor::join(a, doc, "alice", None).await;
    let mut bob = Editor::join(b, doc, "bob", None).await;
    for (i, (h, d)) in "Hello".chars().zip("12345".chars()).enumerate() {
        let len = alice.ot.len_chars();
        alice.edit(splice(len, len, 0, &h.to_string())).await;
        alice.settle().await;
        bob.sync_to(alice.ot.version).await;
        type_at(&mut bob, i, &d.to_string()).await;
        alice.sync_to(bob.ot.version).await;
    }
    let t = catch_up(&mut [&mut alice, &mut bob], a, doc).await;
    assert_eq!(t, "12345Hello");
    assert!(history(&mut alice, "undo").await);
    let t = catch_up(&mut [&mut alice, &mut bob], b, doc).await;
    assert_eq!(
        t, "12345",
        "one undo removes Alice's whole run, none of Bob's"
    );
    assert!(history(&mut alice, "redo").await);
    let t = catch_up(&mut [&mut alice, &mut bob], a, doc).await;
    assert_eq!(t, "12345Hello");
    assert!(history(&mut bob, "undo").await);
    let t = catch_up(&mut [&mut alice, &mut bob], b, doc).await;
    assert_eq!(t, "Hello", "Bob's run was his own too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interleaved_with_anothers_keystrokes_undoes_as_one_on_redis() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &[]);
    interleaved_runs(&servers[0], &servers[1], "interleaved").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interleaved_with_anothers_keystrokes_undoes_as_one_embedded() {
    let server = TestServer::start(TANDEM, &[]);
    interleaved_runs(&server, &server, "interleaved").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_runs_end_after_a_pause() {
    let server = TestServer::start(TANDEM, &[]);
    let doc = "runs";
    let mut ed = Editor::join(&server, doc, "carol", None).await;
    type_at(&mut ed, 0, "one").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    type_at(&mut ed, 3, " two").await;
    assert!(history(&mut ed, "undo").await);
    assert_eq!(ed.ot.text(), "one");
    assert!(history(&mut ed, "undo").await);
    assert_eq!(ed.ot.text(), "");
    assert!(!history(&mut ed, "undo").await, "nothing left to undo");
    assert!(history(&mut ed, "redo").await);
    assert!(history(&mut ed, "redo").await);
    assert_eq!(ed.ot.text(), "one two");
    let (content, _) = server.document(doc).await;
    assert_eq!(content, "one two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_edits_undos_and_redos_on_two_instances_converge() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &[]);
    let doc = "undo-random";
    let mut eds = Vec::new();
    for i in 0..4 {
        eds.push(Editor::join(&servers[i % 2], doc, &format!("u{i}"), None).await);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut undos = 0;
    for _ in 0..60 {
        for ed in eds.iter_mut() {
            match rng.gen_range(0..10) {
                0..=5 => {
                    let len = ed.ot.len_chars();
                    ed.edit(random_edit(&mut rng, len)).await;
                }
                6..=7 => {
                    ed.ws.send(json!({"type": "undo"})).await;
                    undos += 1;
                }
                _ => ed.ws.send(json!({"type": "redo"})).await,
            }
        }
        for ed in eds.iter_mut() {
            ed.pump(Duration::from_millis(3)).await;
        }
    }
    // Quiesce: every socket drains, then all agree with the server.
    for ed in eds.iter_mut() {
        ed.settle().await;
        ed.pump(Duration::from_millis(300)).await;
    }
    let (content, version) = servers[0].document(doc).await;
    assert!(
        undos > 20 && version > 60,
        "{undos} undos, version {version}"
    );
    for ed in eds.iter_mut() {
        ed.sync_to(version).await;
        assert_eq!(ed.ot.text(), content, "an editor diverged");
    }
    let (other, v2) = servers[1].document(doc).await;
    assert_eq!((other, v2), (content, version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_versions_and_restore_reach_live_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(TANDEM, dir.path(), &[]);
    let doc = "history";
    let mut ed = Editor::join(&server, doc, "dana", None).await;
    let letters = "abcdefghij😀klmnopqrst";
    type_at(&mut ed, 0, letters).await;
    // The journal is read after a restart (memory holds nothing then).
    server.sigterm();
    let server = TestServer::start_in(TANDEM, dir.path(), &[]);
    let mut watcher = Editor::join(&server, doc, "erin", None).await;
    assert_eq!(watcher.init["version"], 21);

    // Pages of the history replay to the content.
    let mut text = String::new();
    let mut since = 0;
    let mut pages = 0;
    loop {
        let (st, page) = server
            .get(&format!(
                "/api/documents/{doc}/history?since={since}&limit=8"
            ))
            .await;
        assert_eq!(st, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        pages += 1;
        for item in &page {
            assert_eq!(item["version"], since + 1);
            assert_eq!(item["user"], "dana");
            assert!(item["at"].as_i64().unwrap() > 1_700_000_000_000);
            let op = tandem::ot::Operation::from_json(&item["op"], usize::MAX).unwrap();
            text = op.apply(&text).unwrap();
            since += 1;
        }
    }
    assert_eq!((pages, since), (3, 21));
    assert_eq!(text, letters);

    for n in [0, 5, 11, 21] {
        let (st, v) = server
            .get(&format!("/api/documents/{doc}/versions/{n}"))
            .await;
        assert_eq!(st, 200);
        let want: String = letters.chars().take(n).collect();
        assert_eq!(v["content"], want.as_str(), "version {n}");
    }
    let (st, _) = server
        .get(&format!("/api/documents/{doc}/versions/22"))
        .await;
    assert_eq!(st, 404);

    // Restore version 5 while a client is live: it receives the change.
    let r = reqwest::Client::new()
        .post(server.http(&format!("/api/documents/{doc}/versions/5/restore")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["version"], 22);
    watcher.sync_to(22).await;
    assert_eq!(watcher.ot.text(), "abcde");
    let (content, version) = server.document(doc).await;
    assert_eq!((content.as_str(), version), ("abcde", 22));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_survives_the_instance_that_committed_the_edits_being_killed() {
    let redis = RedisServer::start();
    let (_dir, mut servers) = cluster(TANDEM, &redis, 2, &[]);
    let doc = "undo-kill";
    let mut alice = Editor::join(&servers[0], doc, "alice", Some("alice-tab")).await;
    let mut bob = Editor::join(&servers[1], doc, "bob", None).await;
    type_at(&mut alice, 0, "one").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    type_at(&mut alice, 3, " two").await;
    bob.sync_to(alice.ot.version).await;
    type_at(&mut bob, 7, " B").await;
    alice.sync_to(bob.ot.version).await;
    // Alice's instance dies with her last edits just committed and her
    // stacks written only through it.
    servers[0].kill();
    let addr = servers[1].addr.clone();
    alice.resume_at(&addr, doc, "alice").await.unwrap();
    assert!(history(&mut alice, "undo").await);
    assert_eq!(alice.ot.text(), "one B");
    assert!(history(&mut alice, "undo").await);
    assert_eq!(alice.ot.text(), " B");
    assert!(history(&mut alice, "redo").await);
    let t = catch_up(&mut [&mut alice, &mut bob], &servers[1], doc).await;
    assert_eq!(t, "one B");
}
