//! Resume and history identity (`init.history`, `?history=`) on the real
//! server: a resume replays only on the history it names; after a lossy crash
//! (instance SIGKILLed, Redis back empty, the store behind) the version
//! numbers handed out again belong to a new history, so an old client gets a
//! full init and keeps its pending edit; an instance holding records Redis
//! lost notices the new history's records at those versions and resets.

use std::time::Duration;

use tandem::ot::splice;
use tandem_testkit::editor::resume_query;
use tandem_testkit::{cluster, Editor, Frame, Kind, RedisServer, TestServer, Ws};

use crate::TANDEM;

/// Type `texts` at the end, one acknowledged edit each.
async fn append(ed: &mut Editor, texts: &[&str]) {
    for t in texts {
        let len = ed.ot.len_chars();
        ed.edit(splice(len, len, 0, t)).await;
        ed.settle().await;
    }
}

async fn connect(server: &TestServer, doc: &str, query: &str) -> (Ws, Frame) {
    Ws::connect(&server.ws_url(doc, query)).await.unwrap()
}

fn history(ed: &Editor) -> String {
    ed.init.init().history.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_replays_only_on_the_history_it_names() {
    let server = TestServer::start(TANDEM, &[]);
    let doc = "named";
    let mut ed = Editor::join(&server, doc, "u", Some("tab")).await;
    append(&mut ed, &["a", "b", "c"]).await;
    let epoch = history(&ed);
    assert!(epoch.len() == 16 && epoch.bytes().all(|b| b.is_ascii_hexdigit()));
    // A client from before history identities, or one naming another
    // history: a full init (never a replay of numbers it cannot trust).
    for q in ["version=1", "version=1&history=0123456789abcdef"] {
        let (_, init) = connect(&server, doc, &format!("user_id=v&client=old&{q}")).await;
        assert_eq!(init["resumed"], false, "{q}: {init}");
        assert_eq!(init["content"], "abc");
        assert_eq!(init["version"], 3);
        assert_eq!(init["history"], epoch.as_str());
    }

    // The right history: the ops after version 1 are replayed.
    let q = format!("user_id=v&client=new&{}", resume_query(1, &epoch));
    let (mut ws, init) = connect(&server, doc, &q).await;
    assert_eq!(init["resumed"], true, "{init}");
    assert_eq!(init["history"], epoch.as_str());
    for v in [2, 3] {
        assert_eq!(ws.recv_type(Kind::Op).await["version"], v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_onto_a_history_redis_lost_gets_a_full_init_and_keeps_its_edit() {
    let mut redis = RedisServer::start(); // no AOF: a restart comes back empty
                                          // The store never gets a snapshot: it stays behind what Redis had.
    let env = [("SNAPSHOT_INTERVAL_MS", "600000")];
    let (dir, mut servers) = cluster(TANDEM, &redis, 1, &env);
    let doc = "lost";
    let mut old = Editor::join(&servers[0], doc, "old", Some("old-tab")).await;
    append(&mut old, &["one ", "two ", "three "]).await;
    let lost = history(&old);
    assert_eq!(old.ot.version, 3);

    // Everything dies: the instance (SIGKILL) and Redis's data.
    servers[0].kill();
    redis.restart();
    let url = redis.url();
    let mut env2 = vec![("REDIS_URL", url.as_str()), ("INSTANCE_ID", "inst0")];
    env2.extend_from_slice(&env);
    let server = TestServer::start_in(TANDEM, dir.path(), &env2);

    // Others commit under the version numbers the old client knows, and past
    // them, on a new history.
    let mut other = Editor::join(&server, doc, "other", None).await;
    assert_eq!(other.init.init().version, 0, "the store was behind");
    assert_ne!(history(&other), lost);
    append(&mut other, &["alpha ", "beta ", "gamma ", "delta "]).await;
    assert_eq!(other.ot.version, 4);

    // The old client made an edit while cut off, then resumes from its
    // version 3 of the lost history: version 3 exists again, with other
    // content, so a replay from it would put its edit on the wrong text.
    old.ot.local_edit(splice(14, 0, 0, "[mine]")).unwrap();
    let init = old.resume(&server, doc, "old").await;
    assert_eq!(init["resumed"], false, "{init}");
    assert_eq!(init["content"], "alpha beta gamma delta ");
    assert_eq!(init["history"], history(&other).as_str());
    // Its edit is kept, rebased onto the new text, and committed.
    assert_eq!(old.ot.text(), "[mine]alpha beta gamma delta ");
    old.settle().await;
    let (content, version) = server.document(doc).await;
    assert_eq!(
        (content.as_str(), version),
        ("[mine]alpha beta gamma delta ", 5)
    );
    other.sync_to(version).await;
    assert_eq!(other.ot.text(), content);
    assert_eq!(old.ot.text(), content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_history_redis_lost_resets_when_another_reuses_its_versions() {
    let redis = RedisServer::start();
    let env = [("SNAPSHOT_INTERVAL_MS", "600000")];
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &env);
    let doc = "forked";
    // A holds versions 1..=3 that only it and Redis know.
    let mut a = Editor::join(&servers[0], doc, "a", Some("a-tab")).await;
    append(&mut a, &["x", "y", "z"]).await;
    let old = history(&a);

    // Redis loses everything; instance B then loads the document from the
    // store (version 0) and commits at version 1 of a new history.
    redis.flushall();
    let mut b = Editor::join(&servers[1], doc, "b", None).await;
    assert_eq!(b.init.init().version, 0);
    assert_ne!(history(&b), old);
    append(&mut b, &["B"]).await;

    // A receives a different record at its version 1: it resets rather than
    // ignore it (and later apply B's version 4 onto its own text).
    assert_eq!(a.ws.closed().await, Some(1013));
    let init = a.resume_at(&servers[0].addr, doc, "a").await.unwrap();
    assert_eq!(init["resumed"], false, "{init}");
    assert_eq!(init["content"], "B");
    assert_eq!(init["history"], history(&b).as_str());

    // Both instances serve the new history; the clients converge on it.
    append(&mut a, &["!"]).await;
    append(&mut b, &["?"]).await;
    assert_eq!(b.ot.version, 3);
    a.sync_to(3).await;
    let (content, version) = servers[1].document(doc).await;
    assert_eq!(servers[0].document(doc).await, (content.clone(), version));
    assert_eq!((a.ot.text(), b.ot.text()), (content.clone(), content));
}

/// Two instances on a Redis that keeps nothing, the store left behind; a
/// (on A) and b (on B) in `doc`.
struct Split {
    redis: RedisServer,
    servers: Vec<TestServer>,
    a: Editor,
    b: Editor,
    _dir: tempfile::TempDir,
}

/// a types `typed[0]`; then A is paused and its subscription cut, and b
/// types `typed[1]` and `typed[2]`: acknowledged versions 2 and 3 that only
/// B and Redis hold.
async fn split(doc: &str, typed: [&str; 3]) -> Split {
    let redis = RedisServer::start(); // no AOF: a restart comes back empty
    let env = [("SNAPSHOT_INTERVAL_MS", "600000")]; // the store never gets them
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &env);
    let mut a = Editor::join(&servers[0], doc, "a", Some("a-tab")).await;
    let mut b = Editor::join(&servers[1], doc, "b", Some("b-tab")).await;
    append(&mut a, &typed[..1]).await;
    b.sync_to(1).await;
    servers[0].signal("-STOP");
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    tokio::time::sleep(Duration::from_millis(300)).await; // B resubscribes
    append(&mut b, &typed[1..]).await;
    assert_eq!(b.ot.version, 3);
    Split {
        redis,
        servers,
        a,
        b,
        _dir,
    }
}

impl Split {
    /// B is paused too, Redis restarts empty, and A wakes.
    fn empty_redis_while_b_sleeps(&mut self) {
        self.servers[1].signal("-STOP");
        self.redis.restart();
        self.servers[0].signal("-CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_only_one_live_instance_held_survive_redis_coming_back_empty() {
    let doc = "held";
    let mut split = split(doc, ["a1 ", "b1 ", "b2 "]).await;

    // Redis comes back empty while B is paused too; A wakes first, re-seeds
    // Redis from its copy (version 1) and a types on. B wakes a moment
    // later holding versions 2 and 3, which Redis no longer has.
    split.empty_redis_while_b_sleeps();
    let Split {
        servers,
        mut a,
        mut b,
        ..
    } = split;
    let len = a.ot.len_chars();
    a.edit(splice(len, len, 0, "a2 ")).await;
    a.pump(Duration::from_millis(600)).await;
    servers[1].signal("-CONT");

    // Nothing acknowledged is lost, nobody is reset (a closed socket fails
    // the pumps), and everyone ends with the same text.
    a.settle().await;
    let (content, version) = servers[0].document(doc).await;
    assert_eq!(version, 4, "{content:?}");
    for token in ["a1 ", "b1 ", "b2 ", "a2 "] {
        assert_eq!(
            content.matches(token).count(),
            1,
            "{token:?} in {content:?}"
        );
    }
    b.sync_to(4).await;
    assert_eq!(servers[1].document(doc).await, (content.clone(), 4));
    assert_eq!((a.ot.text(), b.ot.text()), (content.clone(), content));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_behind_a_re_seeded_history_does_not_apply_its_records() {
    let doc = "past";
    let mut split = split(doc, ["[a1]", "[b1]", "[b2]"]).await;

    // Redis comes back empty while B sleeps through A's re-seed, its settle
    // window and three more commits: versions 2..=4 are handed out again,
    // for other content, under a new history.
    split.empty_redis_while_b_sleeps();
    let Split {
        servers,
        mut a,
        mut b,
        ..
    } = split;
    append(&mut a, &["[a2]", "[a3]", "[a4]"]).await;
    assert_eq!(a.ot.version, 4);
    servers[1].signal("-CONT");

    // B is at version 3 of the old history; the log now runs to 4 of the
    // new one. Its refill must not apply version 4 onto its own 3: it
    // re-seeds, finds the histories differ, and resets (its versions 2 and
    // 3 are the ones Redis lost with nobody to restore them; the settle
    // window was over). b resumes onto the new history.
    assert_eq!(b.ws.closed().await, Some(1013));
    let init = b.resume_at(&servers[1].addr, doc, "b").await.unwrap();
    assert_eq!(init["resumed"], false, "{init}");
    let (content, version) = servers[0].document(doc).await;
    assert_eq!((content.as_str(), version), ("[a1][a2][a3][a4]", 4));
    assert_eq!(servers[1].document(doc).await, (content.clone(), 4));
    append(&mut b, &["[b3]"]).await;
    a.sync_to(5).await;
    assert_eq!(a.ot.text(), b.ot.text());
    assert_eq!(servers[1].document(doc).await, (a.ot.text(), 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_socket_that_sent_an_edit_is_acked_for_it() {
    // Two sockets under one client id on two instances (a reconnect whose
    // old socket lingers, or a client told a `seq` behind what was
    // committed, whose old edit arrives later): only the one
    // that sent the edit gets the `ack`; the other gets the `op`, which a
    // client with no such seq in flight applies. (An `ack` it cannot match
    // would be ignored, and it would fall a version behind.)
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &[]);
    let doc = "twice";
    let (mut one, init) = connect(&servers[0], doc, "user_id=u&client=tab").await;
    let (mut two, init2) = connect(&servers[1], doc, "user_id=u&client=tab").await;
    assert_eq!(init.init().client, init2.init().client);
    one.send(serde_json::json!({"type":"op","version":0,"seq":1,"op":["x"]}))
        .await;
    assert_eq!(one.recv_type(Kind::Ack).await["version"], 1);
    let op = two.recv_type(Kind::Op).await;
    assert_eq!(
        (op["version"].as_u64(), op["seq"].as_u64()),
        (Some(1), Some(1))
    );
}
