//! `tandem` instances on a real Redis Cluster (three masters, three
//! replicas, started per test from `redis-server` on loopback): documents
//! spread over the slots converge; a master SIGKILLed mid-typing (its
//! replica promoted) loses no acknowledged edit and applies none twice
//! (with `REDIS_WAIT_REPLICAS=1`); a document's slot moved to another
//! master while people type in it; the replication window WAIT closes,
//! shown with a replica cut off; tickets and token revocations across
//! instances on a cluster.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tandem_testkit::typist::{check_exactly_once, run_typists};
use tandem_testkit::{
    cluster_on, type_concurrently, Api, Editor, Kind, RedisCluster, TestServer, Ws, TIMEOUT,
};

use crate::TANDEM;

/// The key whose slot holds `doc` (every key of a document shares it).
fn doc_key(doc: &str) -> String {
    format!("tandem:{{doc:{doc}}}:head")
}

fn instances(
    redis: &RedisCluster,
    n: usize,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, Vec<TestServer>) {
    let url = redis.url();
    let mut e = vec![("REDIS_CLUSTER", "true")];
    e.extend_from_slice(env);
    cluster_on(TANDEM, &url, n, &e)
}

/// Every instance serves `doc` at the same version and text.
async fn agree(servers: &[&TestServer], doc: &str) -> (String, u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let mut seen = Vec::new();
        for s in servers {
            seen.push(s.document(doc).await);
        }
        if seen.windows(2).all(|w| w[0] == w[1]) {
            return seen.remove(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "instances disagree on {doc}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documents_across_the_slots_converge() {
    let redis = RedisCluster::start();
    let (_dir, servers) = instances(&redis, 2, &[]);
    // Two documents on each master.
    let mut docs = Vec::new();
    let mut per_master = std::collections::HashMap::new();
    for i in 0.. {
        let doc = format!("spread-{i}");
        let m = redis.master_of(&doc_key(&doc)).expect("a master");
        let n = per_master.entry(m).or_insert(0);
        if *n < 2 {
            *n += 1;
            docs.push(doc);
        }
        if docs.len() == 6 {
            break;
        }
    }
    assert_eq!(per_master.len(), 3, "the documents span every master");
    let mut runs = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        let mut editors = Vec::new();
        for i in 0..4 {
            editors.push(Editor::join(&servers[i % 2], doc, &format!("u{d}-{i}"), None).await);
        }
        runs.push(tokio::spawn(type_concurrently(editors, d as u64, 30, 8)));
    }
    for (doc, run) in docs.iter().zip(runs) {
        let mut editors = run.await.unwrap();
        let (content, version) = agree(&[&servers[0], &servers[1]], doc).await;
        assert!(version >= 10, "{doc}: only {version} commits");
        for ed in &mut editors {
            ed.sync_to(version).await;
            assert_eq!(
                ed.ot.text(),
                content,
                "{doc}: client {} diverged",
                ed.ot.client_id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_killed_mid_typing_loses_no_acknowledged_edit() {
    let redis = RedisCluster::start();
    let (dir, servers) = instances(
        &redis,
        2,
        &[
            ("REDIS_WAIT_REPLICAS", "1"),
            ("REDIS_WAIT_TIMEOUT_MS", "500"),
        ],
    );
    let doc = "failover";
    let victim = redis.master_of(&doc_key(doc)).expect("a master");
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let redis = Arc::new(Mutex::new(redis));
    let faults = redis.clone();
    let promoted = Arc::new(Mutex::new(None));
    let seen = promoted.clone();
    let mut typists = run_typists(addrs, doc, 6, Duration::from_millis(3000), async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tokio::task::spawn_blocking(move || {
            let mut redis = faults.lock().unwrap();
            redis.kill(victim); // SIGKILL
                                // Its replica takes over (cluster-node-timeout 1 s)...
            let start = std::time::Instant::now();
            let now = loop {
                match redis.master_of(&doc_key("failover")) {
                    Some(m) if m != victim => break m,
                    _ => {}
                }
                assert!(start.elapsed() < Duration::from_secs(30), "no failover");
                std::thread::sleep(Duration::from_millis(50));
            };
            *seen.lock().unwrap() = Some(now);
            // ...with no replica of its own: WAIT 1 refuses edits on this
            // shard until the old master is back, as a replica.
            redis.restart(victim);
        })
        .await
        .unwrap();
    })
    .await;
    assert!(promoted.lock().unwrap().is_some_and(|m| m != victim));
    let (content, version) = agree(&[&servers[0], &servers[1]], doc).await;
    check_exactly_once(&servers[0], doc, &mut typists).await;
    let acked: HashSet<&String> = typists.iter().flat_map(|t| t.acked.iter()).collect();
    assert!(acked.len() > 30, "only {} acknowledged", acked.len());
    // A cold instance, loading from the store and the cluster as it now
    // is, serves the same document: nothing any client held was taken back.
    let url = redis.lock().unwrap().url();
    let cold = TestServer::start_in(
        TANDEM,
        dir.path(),
        &[
            ("REDIS_URL", &url),
            ("REDIS_CLUSTER", "true"),
            ("INSTANCE_ID", "cold"),
            ("REDIS_WAIT_REPLICAS", "1"),
        ],
    );
    assert_eq!(cold.document(doc).await, (content, version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_moved_while_typing_converges() {
    let redis = RedisCluster::start();
    let (_dir, servers) = instances(&redis, 2, &[]);
    let doc = "moving";
    let before = redis.master_of(&doc_key(doc)).expect("a master");
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let redis = Arc::new(redis);
    let mover = redis.clone();
    let mut typists = run_typists(addrs, doc, 6, Duration::from_millis(2500), async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        tokio::task::spawn_blocking(move || mover.migrate_slot_of(&doc_key("moving")))
            .await
            .unwrap();
    })
    .await;
    let after = redis.master_of(&doc_key(doc)).expect("a master");
    assert_ne!(before, after, "the slot moved");
    agree(&[&servers[0], &servers[1]], doc).await;
    check_exactly_once(&servers[0], doc, &mut typists).await;
    let acked: usize = typists.iter().map(|t| t.acked.len()).sum();
    assert!(acked > 30, "only {acked} acknowledged");
}

/// Redis replicates asynchronously: a master acks a write before any
/// replica holds it. With the document's replica stopped (SIGSTOP) and its
/// replication link cut (`CLIENT KILL TYPE replica`), an
/// instance acking on the master's word acks an edit no replica has, and
/// when the master then dies and the replica takes over, the edit is not
/// there. With `REDIS_WAIT_REPLICAS=1` the same edit is not acked (nor
/// shown to anyone) until a replica holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_closes_the_window_a_failover_takes_back() {
    let mut redis = RedisCluster::start();
    // Two documents on one master.
    let plain_doc = "window-0";
    let master = redis.master_of(&doc_key(plain_doc)).expect("a master");
    let wait_doc = (1..)
        .map(|i| format!("window-{i}"))
        .find(|d| redis.master_of(&doc_key(d)) == Some(master))
        .unwrap();
    let replica = redis.replica_of(master).expect("a replica");
    let no_snapshots = ("SNAPSHOT_INTERVAL_MS", "600000");
    let (_d0, plain) = instances(&redis, 1, &[no_snapshots]);
    let (_d1, waiting) = instances(
        &redis,
        1,
        &[
            no_snapshots,
            ("REDIS_WAIT_REPLICAS", "1"),
            ("REDIS_WAIT_TIMEOUT_MS", "300"),
        ],
    );
    let (mut a, _) = Ws::connect(&plain[0].ws_url(plain_doc, "user_id=a"))
        .await
        .unwrap();
    let (mut b, _) = Ws::connect(&waiting[0].ws_url(&wait_doc, "user_id=b"))
        .await
        .unwrap();
    for ws in [&mut a, &mut b] {
        ws.send(json!({"type": "op", "version": 0, "seq": 1, "op": ["[one]"]}))
            .await;
        assert_eq!(ws.recv_type(Kind::Ack).await["version"], 1);
    }

    // The first edits reach the replica (the waited one surely).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stopped, and cut off: what the master writes now reaches no replica
    // (nor its socket buffer).
    redis.signal(replica, "-STOP");
    redis.cli(master, &["CLIENT", "KILL", "TYPE", "replica"]);
    a.send(json!({"type": "op", "version": 1, "seq": 2, "op": [5, "[two]"]}))
        .await;
    b.send(json!({"type": "op", "version": 1, "seq": 2, "op": [5, "[two]"]}))
        .await;
    // Acked on the master's word...
    assert_eq!(a.recv_type(Kind::Ack).await["version"], 2);
    // ...and not while no replica holds it.
    let mut b_acked = false;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Ok(Some(f))) =
        tokio::time::timeout_at(until, b.try_recv(Duration::from_millis(1500))).await
    {
        b_acked |= f.kind() == Kind::Ack;
    }
    assert!(!b_acked, "acked with no replica holding it");

    // The master dies; the replica resumes and takes over without the edit.
    redis.kill(master);
    redis.signal(replica, "-CONT");
    let start = std::time::Instant::now();
    while redis.master_of(&doc_key(plain_doc)) != Some(replica) {
        assert!(start.elapsed() < Duration::from_secs(30), "no failover");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = redis.list_on(replica, &doc_key(plain_doc).replace(":head", ":log"));
    assert!(log.contains("[one]"), "{log}");
    assert!(
        !log.contains("[two]"),
        "the acked edit survived after all: {log}"
    );
    let log = redis.list_on(replica, &doc_key(&wait_doc).replace(":head", ":log"));
    assert!(log.contains("[one]"), "{log}");
    // Whatever the promoted master holds of the waited document is all any
    // client was ever shown: a late reader agrees with it.
    redis.restart(master);
    let (text, version) = agree(&[&waiting[0]], &wait_doc).await;
    assert!(text.starts_with("[one]"), "{text}");
    let late = Editor::join(&waiting[0], &wait_doc, "late", None).await;
    assert_eq!(late.init["content"], text.as_str());
    assert!(version >= 1);
}

/// Accounts on a cluster: a WebSocket ticket minted on one instance is
/// redeemed once on the other (`tickets.lua` on its own slot), and a logout
/// reaches the other instance's token checks and sockets through the
/// instance-wide revocations channel (plain pub/sub, which every node of a
/// cluster forwards), well before its token cache would expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_and_revocations_cross_instances_on_a_cluster() {
    let redis = RedisCluster::start();
    let (_dir, servers) = instances(
        &redis,
        2,
        &[
            ("ALLOW_ANONYMOUS", "false"),
            ("TOKEN_CHECK_CACHE_MS", "60000"),
        ],
    );
    let (a, b) = (Api::new(&servers[0]), Api::new(&servers[1]));
    let (token, _) = a.user("alice").await;
    let doc = a.create(&token, "notes", "hi").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, t) = a
        .call(
            Method::POST,
            "/api/auth/ws-ticket",
            Some(&token),
            Some(json!({ "document": doc })),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    let ticket = format!("ticket={}", t["ticket"].as_str().unwrap());
    let (mut sock, init) = Ws::connect(&servers[1].ws_url(&doc, &ticket))
        .await
        .unwrap();
    assert_eq!(init.json()["content"], "hi");
    assert!(Ws::connect(&servers[0].ws_url(&doc, &ticket))
        .await
        .is_err());
    // Cached as valid on B before the logout on A.
    let (st, _) = b
        .call(Method::GET, "/api/documents", Some(&token), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = a
        .call(Method::POST, "/api/auth/logout", Some(&token), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (st, _) = b
            .call(Method::GET, "/api/documents", Some(&token), None)
            .await;
        if st == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never heard of the logout"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sock.closed().await, Some(1008));
}
