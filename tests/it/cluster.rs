//! Several `tandem` instances on one real Redis (started per test on its own
//! port): convergence, an instance killed mid-typing, presence across
//! instances, Redis outages and restarts.

use std::time::Duration;

use serde_json::json;
use tandem_testkit::typist::{check_exactly_once, run_typists};
use tandem_testkit::{cluster, type_concurrently, Editor, Kind, RedisServer, Ws, TIMEOUT};

use crate::TANDEM;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_editing_across_three_instances_converges() {
    let redis = RedisServer::start();
    random_editing_converges(&redis, &[], "shared").await;
}

/// Nine editors on three instances type at random: every instance and
/// every editor ends with the same text. Returns the servers.
pub(crate) async fn random_editing_converges(
    redis: &RedisServer,
    env: &[(&str, &str)],
    doc: &str,
) -> (tempfile::TempDir, Vec<tandem_testkit::TestServer>) {
    let (dir, servers) = cluster(TANDEM, redis, 3, env);
    let mut editors = Vec::new();
    for i in 0..9 {
        editors.push(Editor::join(&servers[i % 3], doc, &format!("u{i}"), None).await);
    }
    let mut editors = type_concurrently(editors, 100, 60, 6).await;
    let (content, version) = servers[0].document(doc).await;
    // Edits made while an op is in flight compose into one commit.
    assert!(version >= 30, "only {version} commits");
    for s in &servers[1..] {
        // Every instance serves the same history.
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while s.document(doc).await.1 < version {
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.document(doc).await, (content.clone(), version));
    }
    for ed in &mut editors {
        ed.sync_to(version).await;
        assert_eq!(ed.ot.text(), content, "client {} diverged", ed.ot.client_id);
    }
    for s in &servers {
        let fresh = Editor::join(s, doc, "late", None).await;
        assert_eq!(fresh.init["content"], content.as_str());
    }
    (dir, servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instance_killed_mid_typing_loses_nothing_and_applies_nothing_twice() {
    let redis = RedisServer::start();
    let (_dir, mut servers) = cluster(TANDEM, &redis, 3, &[]);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let doc = "kill";
    let victim = &mut servers[0];
    let mut typists = run_typists(addrs, doc, 6, Duration::from_millis(1500), async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        victim.kill(); // SIGKILL
    })
    .await;
    // Typists of the killed instance moved over.
    assert!(typists.iter().filter(|t| t.reconnects > 0).count() >= 2);
    check_exactly_once(&servers[1], doc, &mut typists).await;
    assert_eq!(
        servers[1].document(doc).await,
        servers[2].document(doc).await
    );
    let acked: usize = typists.iter().map(|t| t.acked.len()).sum();
    assert!(acked > 50, "only {acked} acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_agrees_across_instances_and_expires_with_a_killed_instance() {
    let redis = RedisServer::start();
    let (_dir, mut servers) = cluster(TANDEM, &redis, 2, &[("PRESENCE_TTL_MS", "1500")]);
    let doc = "people";
    let (mut a, init_a) = Ws::connect(&servers[0].ws_url(doc, "user_id=alice&client=a1"))
        .await
        .unwrap();
    let (mut b, init_b) = Ws::connect(&servers[1].ws_url(doc, "user_id=bob&client=b1"))
        .await
        .unwrap();
    // Client ids come back scoped to their user.
    let (a1, b1) = (init_a.init().client, init_b.init().client);
    assert!(a1.starts_with("a1@") && b1.starts_with("b1@"), "{a1} {b1}");
    let ids: Vec<&str> = init_b["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["client"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&a1) && ids.contains(&b1), "{init_b}");
    assert_eq!(a.recv_type(Kind::UserJoined).await["client"], b1);
    for s in &servers {
        let (_, users) = s.get(&format!("/api/documents/{doc}/users")).await;
        let mut c: Vec<&str> = users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["client"].as_str().unwrap())
            .collect();
        c.sort();
        assert_eq!(c, [a1, b1], "on {}", s.addr);
    }
    // Cursors cross instances too.
    a.send(json!({"type":"op","version":0,"seq":1,"op":["hello"]}))
        .await;
    a.recv_type(Kind::Ack).await;
    a.send(json!({"type":"cursor","version":1,"anchor":1,"head":4}))
        .await;
    let c = loop {
        let m = b.recv().await;
        if m.kind() == Kind::Cursor {
            break m;
        }
    };
    assert_eq!(
        (c["client"].clone(), c["anchor"].clone(), c["head"].clone()),
        (json!(a1), json!(1), json!(4))
    );

    // Kill alice's instance: bob sees her leave within the TTL.
    let killed = std::time::Instant::now();
    servers[0].kill();
    drop(a);
    let left = b.recv_type(Kind::UserLeft).await;
    assert_eq!(left["client"], a1);
    assert!(
        killed.elapsed() < Duration::from_millis(1500 + 700),
        "{:?}",
        killed.elapsed()
    );
    let (_, users) = servers[1].get(&format!("/api/documents/{doc}/users")).await;
    assert_eq!(users.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_refuses_edits_then_recovers() {
    let mut redis = RedisServer::start_with(true);
    let (_dir, servers) = cluster(TANDEM, &redis, 1, &[]);
    let doc = "outage";
    let (mut ws, _) = Ws::connect(&servers[0].ws_url(doc, "user_id=u&client=c"))
        .await
        .unwrap();
    ws.send(json!({"type":"op","version":0,"seq":1,"op":["a"]}))
        .await;
    ws.recv_type(Kind::Ack).await;
    redis.kill();
    ws.send(json!({"type":"op","version":1,"seq":2,"op":[1,"b"]}))
        .await;
    let e = ws.recv_type(Kind::Error).await;
    assert_eq!(
        (e["code"].clone(), e["seq"].clone()),
        (json!("storage_unavailable"), json!(2)),
        "{e}"
    );
    assert_eq!(servers[0].document(doc).await, ("a".into(), 1));
    assert_eq!(
        reqwest::get(servers[0].http("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    redis.restart();
    // The client resends the same op until it is committed.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        ws.send(json!({"type":"op","version":1,"seq":2,"op":[1,"b"]}))
            .await;
        let m = ws.recv().await;
        if m.kind() == Kind::Ack {
            assert_eq!(m["version"], 2);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never recovered: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(servers[0].document(doc).await, ("ab".into(), 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_mid_session_everyone_converges() {
    for aof in [true, false] {
        let mut redis = RedisServer::start_with(aof);
        let (_dir, servers) = cluster(TANDEM, &redis, 2, &[]);
        let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
        let doc = "restart";
        let mut typists = run_typists(addrs, doc, 4, Duration::from_millis(1500), async {
            tokio::time::sleep(Duration::from_millis(700)).await;
            redis.restart();
        })
        .await;
        check_exactly_once(&servers[0], doc, &mut typists).await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while servers[1].document(doc).await != servers[0].document(doc).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "instances disagree (aof={aof})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Redis at `maxmemory` (noeviction: it refuses writes, `OOM`), then
/// refusing writes after a failed save (`MISCONF`), while typists on two
/// instances type: edits are refused (`storage_unavailable`, nothing
/// acknowledged), readiness says why, and once memory returns and a save
/// succeeds editing resumes by itself, every acknowledged token present
/// exactly once (issue 30).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_out_of_memory_or_failing_saves_refuses_edits_and_loses_nothing() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(TANDEM, &redis, 2, &[]);
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let doc = "full";
    let gone = tempfile::tempdir().unwrap();
    let home = redis.cli(&["CONFIG", "GET", "dir"]);
    let home = home.lines().nth(1).unwrap().to_owned();
    let mut seen = Vec::new();
    let mut typists = run_typists(addrs, doc, 4, Duration::from_millis(5000), async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // Full: every write refused.
        redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        seen.push(servers[0].readiness().await);
        redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
        tokio::time::sleep(Duration::from_millis(700)).await;
        seen.push(servers[0].readiness().await);
        // A save that fails (its directory is gone): with a save point
        // set, Redis then refuses writes.
        redis.cli(&["CONFIG", "SET", "save", "3600 1"]);
        let dir = gone.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        redis.cli(&["CONFIG", "SET", "dir", dir.to_str().unwrap()]);
        std::fs::remove_dir(&dir).unwrap();
        redis.cli(&["BGSAVE"]);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        seen.push(servers[1].readiness().await);
        redis.cli(&["CONFIG", "SET", "dir", &home]);
        redis.cli(&["BGSAVE"]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.cli(&["CONFIG", "SET", "save", ""]);
    })
    .await;
    check_exactly_once(&servers[0], doc, &mut typists).await;
    assert_eq!(seen[0].0, 503, "{seen:?}");
    assert!(
        seen[0].1.contains("commits failing (Redis out of memory)"),
        "{seen:?}"
    );
    assert_eq!(seen[2].0, 503, "{seen:?}");
    assert!(
        seen[2].1.contains("commits failing (Redis refuses writes)"),
        "{seen:?}"
    );
    assert_eq!(seen[1], (200, "ready".to_owned()), "{seen:?}");
    let refused: usize = typists.iter().map(|t| t.retries).sum();
    assert!(refused > 0, "no edit was refused while Redis was full");
    for s in &servers {
        assert_eq!(s.readiness().await, (200, "ready".to_owned()));
    }
}

/// How a server on `redis` with `env` refused to start (its output).
fn refused_at_start(redis: &RedisServer, env: &[(&str, &str)]) -> String {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(TANDEM)
        .env("REDIS_URL", redis.url())
        .env("DATA_DIR", data.path())
        .env("PORT", "0")
        .env("JWT_SECRET", "x".repeat(40))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// A Redis that may evict keys is refused at start, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_is_refused_at_start() {
    let redis = RedisServer::start();
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let err = refused_at_start(&redis, &[]);
    assert!(err.contains("maxmemory-policy is allkeys-lru"), "{err}");
}

/// `DURABILITY=strict` refuses a Redis whose acks a power loss could take
/// (no `appendfsync always`, no WAIT), with the reason, and runs on one
/// that fsyncs every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_durability_needs_a_redis_that_fsyncs_every_ack() {
    let strict = [("DURABILITY", "strict")];
    let loose = RedisServer::start();
    let err = refused_at_start(&loose, &strict);
    assert!(
        err.contains("DURABILITY=strict needs") && err.contains("found appendonly no"),
        "{err}"
    );
    let fsyncing = RedisServer::start_with(true);
    let (_dir, servers) = cluster(TANDEM, &fsyncing, 1, &strict);
    assert_eq!(servers[0].readiness().await, (200, "ready".to_owned()));
}
