//! In-process hub tests: the hub built by [`crate::build`] on the memory
//! sequencer/bus and SQLite in a temporary directory; no server, no
//! sockets. Each drives document tasks through the hub's own handles and
//! reads the exact messages a socket would be sent.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{ConnHandle, Edit, Hub, Outbound, Resume};
use crate::config::Config;
use crate::ot::{splice, Operation};
use crate::protocol::{ErrorCode, Presence, Role, ServerFrame, UserInfo};
use crate::store::Store;

const DOC: &str = "doc";

/// A hub as production builds it, in a temporary directory.
struct TestHub {
    hub: Hub,
    store: std::sync::Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn hub_with(tune: impl FnOnce(&mut Config)) -> TestHub {
    let (state, dir) = crate::test_state(tune).await;
    state.hub.ensure_document(DOC).await.unwrap();
    TestHub {
        hub: state.hub,
        store: state.store,
        _dir: dir,
    }
}

async fn hub() -> TestHub {
    hub_with(|_| {}).await
}

/// A joined connection and what it has been sent.
struct Peer {
    conn: ConnHandle,
    rx: mpsc::Receiver<Outbound>,
}

impl Peer {
    async fn join(hub: &Hub, user: &str, client: &str, role: Role, resume: Option<Resume>) -> Self {
        let user = UserInfo::new(user, user.to_uppercase());
        let (conn, rx) = hub
            .join(DOC, user, client.to_owned(), role, resume)
            .await
            .unwrap();
        Self { conn, rx }
    }

    async fn editor(hub: &Hub, user: &str, client: &str) -> Self {
        Self::join(hub, user, client, Role::Editor, None).await
    }

    /// The next message, parsed (fails after a second).
    async fn next(&mut self) -> ServerFrame {
        let out = tokio::time::timeout(Duration::from_secs(1), self.rx.recv())
            .await
            .expect("a message within a second")
            .expect("connection open");
        match out {
            Outbound::Text(t) => ServerFrame::parse(&t).unwrap(),
            Outbound::Close(code, why) => panic!("closed: {code} {why}"),
        }
    }

    /// The next message, which must be the init.
    async fn init(&mut self) -> ServerFrame {
        let f = self.next().await;
        assert!(matches!(f, ServerFrame::Init { .. }), "{f:?}");
        f
    }

    /// Nothing more was sent (the document task answers in order, so a
    /// round trip through it first makes this exact).
    async fn quiet(&mut self, hub: &Hub) {
        hub.view(DOC).await.unwrap();
        assert!(self.rx.try_recv().is_err(), "unexpected message");
    }
}

/// A resume from `version` of the history named `history`.
fn resume(version: u64, history: Option<&str>) -> Option<Resume> {
    Some(Resume {
        version,
        history: history.map(str::to_owned),
    })
}

/// The document's epoch as stored (the memory sequencer adopts it).
async fn stored_epoch(t: &TestHub) -> String {
    t.store.load(DOC).await.unwrap().unwrap().epoch
}

fn insert(doc_len: usize, pos: usize, text: &str) -> Operation {
    splice(doc_len, pos, 0, text)
}

fn presence(user: &str, client: &str) -> Presence {
    let u = UserInfo::new(user, user.to_uppercase());
    Presence {
        id: u.id,
        name: u.name,
        color: u.color,
        client: client.to_owned(),
        state: Some(crate::protocol::PresenceState::Active),
    }
}

/// Commit over REST, as `user`.
async fn rest(hub: &Hub, user: &str, edit: Edit) -> u64 {
    hub.edit(DOC, user, Role::Editor, edit)
        .await
        .unwrap()
        .unwrap()
}

async fn content(hub: &Hub) -> (String, u64) {
    let v = hub.view(DOC).await.unwrap();
    (v.content, v.version)
}

#[tokio::test]
async fn join_sends_init_with_content_version_and_users() {
    let t = hub().await;
    assert_eq!(
        rest(&t.hub, "carol", Edit::Replace("hello".into())).await,
        1
    );
    let mut alice = Peer::editor(&t.hub, "alice", "a1").await;
    match alice.init().await {
        ServerFrame::Init {
            document,
            client,
            version,
            content,
            users,
            role,
            resumed,
            seq,
            ..
        } => {
            assert_eq!(document, DOC);
            assert_eq!(client, "a1");
            assert_eq!((version, content.as_deref()), (1, Some("hello")));
            assert_eq!(users, vec![presence("alice", "a1")]);
            assert_eq!((role, resumed, seq), (Role::Editor, None, 0));
        }
        f => panic!("{f:?}"),
    }
    let mut bob = Peer::join(&t.hub, "bob", "b1", Role::Viewer, None).await;
    match bob.init().await {
        ServerFrame::Init { users, role, .. } => {
            assert_eq!(users, vec![presence("alice", "a1"), presence("bob", "b1")]);
            assert_eq!(role, Role::Viewer);
        }
        f => panic!("{f:?}"),
    }
    // Alice hears of bob (and of the view count bob's open added).
    assert!(matches!(alice.next().await, ServerFrame::Meta(m) if m.views == 2));
    assert_eq!(
        alice.next().await,
        ServerFrame::UserJoined {
            user: UserInfo::new("bob", "BOB"),
            client: "b1".into()
        }
    );
    bob.conn.leave().await;
    assert_eq!(
        alice.next().await,
        ServerFrame::UserLeft {
            user: UserInfo::new("bob", "BOB"),
            client: "b1".into()
        }
    );
    assert_eq!(
        t.hub.users(DOC).await.unwrap(),
        vec![presence("alice", "a1")]
    );
}

#[tokio::test]
async fn commit_acks_the_author_and_sends_the_op_to_the_others_in_version_order() {
    let t = hub().await;
    let mut alice = Peer::editor(&t.hub, "alice", "a1").await;
    alice.init().await;
    let mut bob = Peer::editor(&t.hub, "bob", "b1").await;
    bob.init().await;
    alice.next().await; // bob's view
    alice.next().await; // bob joined

    alice.conn.op(0, 1, insert(0, 0, "hello")).await.unwrap();
    assert_eq!(alice.next().await, ServerFrame::Ack { seq: 1, version: 1 });
    // Bob, concurrently on version 0: rebased past alice's op.
    bob.conn.op(0, 1, insert(0, 0, "XY")).await.unwrap();
    assert_eq!(
        bob.next().await,
        ServerFrame::Op {
            version: 1,
            op: insert(0, 0, "hello"),
            user: "alice".into(),
            client: "a1".into(),
            seq: 1
        }
    );
    assert_eq!(bob.next().await, ServerFrame::Ack { seq: 1, version: 2 });
    match alice.next().await {
        ServerFrame::Op {
            version,
            client,
            seq,
            op,
            ..
        } => {
            assert_eq!((version, client.as_str(), seq), (2, "b1", 1));
            assert_eq!(op.apply("hello").unwrap(), "XYhello");
        }
        f => panic!("{f:?}"),
    }
    assert_eq!(content(&t.hub).await, ("XYhello".into(), 2));

    // A resend of a committed op is acked with its version, not applied again.
    alice.conn.op(0, 1, insert(0, 0, "hello")).await.unwrap();
    assert_eq!(alice.next().await, ServerFrame::Ack { seq: 1, version: 1 });
    // Refusals name the seq.
    alice.conn.op(0, 0, insert(0, 0, "z")).await.unwrap();
    assert_eq!(
        alice.next().await,
        ServerFrame::Error {
            code: ErrorCode::BadMessage,
            message: "seq starts at 1".into(),
            seq: Some(0)
        }
    );
    alice.conn.op(9, 2, insert(0, 0, "z")).await.unwrap();
    assert!(matches!(
        alice.next().await,
        ServerFrame::Error {
            code: ErrorCode::VersionOutOfRange,
            seq: Some(2),
            ..
        }
    ));
    bob.quiet(&t.hub).await;
    let mut viewer = Peer::join(&t.hub, "vic", "v1", Role::Viewer, None).await;
    viewer.init().await;
    viewer.conn.op(2, 1, insert(7, 0, "z")).await.unwrap();
    assert_eq!(
        viewer.next().await,
        ServerFrame::Error {
            code: ErrorCode::Forbidden,
            message: "viewers cannot edit".into(),
            seq: Some(1)
        }
    );
    // Over REST, a viewer gets the same refusal as a value.
    let refused = t
        .hub
        .edit(DOC, "vic", Role::Viewer, Edit::Replace("x".into()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Forbidden);
    assert_eq!(content(&t.hub).await, ("XYhello".into(), 2));
}

#[tokio::test]
async fn resume_replays_missed_ops_or_sends_a_full_init() {
    let t = hub().await;
    rest(&t.hub, "carol", Edit::Replace("a".into())).await;
    rest(&t.hub, "carol", Edit::Replace("ab".into())).await;
    rest(&t.hub, "carol", Edit::Replace("abc".into())).await;
    let epoch = stored_epoch(&t).await;

    let mut back = Peer::join(&t.hub, "alice", "a1", Role::Editor, resume(1, Some(&epoch))).await;
    match back.init().await {
        ServerFrame::Init {
            version,
            content,
            resumed,
            ..
        } => assert_eq!((version, content, resumed), (1, None, Some(true))),
        f => panic!("{f:?}"),
    }
    for (v, text) in [(2, "b"), (3, "c")] {
        match back.next().await {
            ServerFrame::Op { version, op, .. } => {
                assert_eq!(version, v);
                assert_eq!(op, insert(v as usize - 1, v as usize - 1, text));
            }
            f => panic!("{f:?}"),
        }
    }
    back.quiet(&t.hub).await;

    // From a version the document never reached: the whole content.
    let mut ahead = Peer::join(&t.hub, "bob", "b1", Role::Editor, resume(99, Some(&epoch))).await;
    match ahead.init().await {
        ServerFrame::Init {
            version,
            content,
            resumed,
            ..
        } => assert_eq!(
            (version, content.as_deref(), resumed),
            (3, Some("abc"), Some(false))
        ),
        f => panic!("{f:?}"),
    }
    ahead.quiet(&t.hub).await;
}

#[tokio::test]
async fn resume_is_honoured_only_on_the_documents_history() {
    let t = hub().await;
    rest(&t.hub, "carol", Edit::Replace("a".into())).await;
    rest(&t.hub, "carol", Edit::Replace("ab".into())).await;
    // Every init names the history; in embedded mode it is the store's.
    let epoch = stored_epoch(&t).await;
    assert_eq!(epoch.len(), 16);
    let mut fresh = Peer::editor(&t.hub, "dan", "d1").await;
    match fresh.init().await {
        ServerFrame::Init { history, .. } => assert_eq!(history, epoch),
        f => panic!("{f:?}"),
    }
    // Another history's version 1, or a version whose history is not named
    // (a client from before epochs): the whole content, never a replay.
    for (client, history) in [("a1", Some("0123456789abcdef")), ("a2", None)] {
        let mut back = Peer::join(&t.hub, "alice", client, Role::Editor, resume(1, history)).await;
        match back.init().await {
            ServerFrame::Init {
                version,
                content,
                resumed,
                history,
                ..
            } => assert_eq!(
                (version, content.as_deref(), resumed, history.as_str()),
                (2, Some("ab"), Some(false), epoch.as_str())
            ),
            f => panic!("{f:?}"),
        }
        back.quiet(&t.hub).await;
    }
    // The right one: a replay.
    let mut back = Peer::join(&t.hub, "alice", "a3", Role::Editor, resume(1, Some(&epoch))).await;
    match back.init().await {
        ServerFrame::Init {
            version, resumed, ..
        } => assert_eq!((version, resumed), (1, Some(true))),
        f => panic!("{f:?}"),
    }
    assert!(matches!(
        back.next().await,
        ServerFrame::Op { version: 2, .. }
    ));
}

#[tokio::test]
async fn resume_too_far_back_for_the_queue_sends_a_full_init() {
    // The replay must leave room in a 128-message queue: at most 64 ops.
    let t = hub_with(|c| c.outbound_queue = 128).await;
    let mut text = String::new();
    for _ in 0..70 {
        text.push('x');
        rest(&t.hub, "carol", Edit::Replace(text.clone())).await;
    }
    let epoch = stored_epoch(&t).await;
    let mut back = Peer::join(&t.hub, "alice", "a1", Role::Editor, resume(0, Some(&epoch))).await;
    match back.init().await {
        ServerFrame::Init {
            version,
            content,
            resumed,
            ..
        } => assert_eq!((version, content, resumed), (70, Some(text), Some(false))),
        f => panic!("{f:?}"),
    }
    back.quiet(&t.hub).await;
}

#[tokio::test]
async fn undo_and_redo_revert_only_the_users_own_step_past_others_edits() {
    let t = hub().await;
    let mut alice = Peer::editor(&t.hub, "alice", "a1").await;
    alice.init().await;
    alice.conn.op(0, 1, insert(0, 0, "hello")).await.unwrap();
    assert_eq!(alice.next().await, ServerFrame::Ack { seq: 1, version: 1 });
    // Bob types after it over REST.
    let v = rest(
        &t.hub,
        "bob",
        Edit::Op {
            version: 1,
            op: insert(5, 5, " bob"),
        },
    )
    .await;
    assert_eq!(v, 2);
    assert!(matches!(
        alice.next().await,
        ServerFrame::Op { version: 2, .. }
    ));

    alice.conn.undo(false).await.unwrap();
    match alice.next().await {
        ServerFrame::Op {
            version,
            user,
            client,
            seq,
            op,
        } => {
            assert_eq!((version, user.as_str(), seq), (3, "alice", 1));
            assert!(client.starts_with("undo~"), "{client}");
            assert_eq!(op.apply("hello bob").unwrap(), " bob");
        }
        f => panic!("{f:?}"),
    }
    assert_eq!(content(&t.hub).await, (" bob".into(), 3));

    alice.conn.undo(true).await.unwrap();
    match alice.next().await {
        ServerFrame::Op {
            version, client, ..
        } => {
            assert_eq!(version, 4);
            assert!(client.starts_with("redo~"), "{client}");
        }
        f => panic!("{f:?}"),
    }
    assert_eq!(content(&t.hub).await, ("hello bob".into(), 4));

    // Nothing left to redo: no edit, no message.
    alice.conn.undo(true).await.unwrap();
    alice.quiet(&t.hub).await;
    assert_eq!(content(&t.hub).await.1, 4);

    // A viewer cannot undo.
    let mut viewer = Peer::join(&t.hub, "vic", "v1", Role::Viewer, None).await;
    viewer.init().await;
    viewer.conn.undo(false).await.unwrap();
    assert!(matches!(
        viewer.next().await,
        ServerFrame::Error {
            code: ErrorCode::Forbidden,
            seq: None,
            ..
        }
    ));
}

/// Wait (bounded) until no document is loaded.
async fn unloaded(hub: &Hub) {
    for _ in 0..500 {
        if hub.open_documents() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("the document did not unload");
}

#[tokio::test]
async fn idle_document_unloads_persisted_and_a_later_join_restores_it() {
    let t = hub_with(|c| {
        c.snapshot_interval_ms = 10;
        c.idle_unload_ms = 20;
    })
    .await;
    let mut alice = Peer::editor(&t.hub, "alice", "a1").await;
    let ServerFrame::Init { history: epoch, .. } = alice.init().await else {
        unreachable!()
    };
    alice.conn.op(0, 1, insert(0, 0, "kept")).await.unwrap();
    assert_eq!(alice.next().await, ServerFrame::Ack { seq: 1, version: 1 });
    assert_eq!(t.hub.open_documents(), 1);
    alice.conn.leave().await;
    unloaded(&t.hub).await;

    let snap = t.store.load(DOC).await.unwrap().unwrap();
    assert_eq!((snap.content.as_str(), snap.version), ("kept", 1));
    assert_eq!(snap.clients.len(), 1);
    assert_eq!(
        (snap.clients[0].client.as_str(), snap.clients[0].seq),
        ("a1", 1)
    );

    // Rejoining loads it again: content, version and the client's seq.
    let mut again = Peer::editor(&t.hub, "alice", "a1").await;
    match again.init().await {
        ServerFrame::Init {
            version,
            content,
            seq,
            meta,
            history,
            ..
        } => {
            assert_eq!((version, content.as_deref(), seq), (1, Some("kept"), 1));
            assert_eq!(meta.views, 2);
            // The same history: resumes from before the unload still replay.
            assert_eq!(history, epoch);
        }
        f => panic!("{f:?}"),
    }
    // The resend of the committed op is still recognised.
    again.conn.op(0, 1, insert(0, 0, "kept")).await.unwrap();
    assert_eq!(again.next().await, ServerFrame::Ack { seq: 1, version: 1 });
    assert_eq!(content(&t.hub).await, ("kept".into(), 1));
    drop(again);
    unloaded(&t.hub).await;

    // A document loaded for a read only (nobody joins) unloads too.
    assert_eq!(content(&t.hub).await, ("kept".into(), 1));
    unloaded(&t.hub).await;
}
