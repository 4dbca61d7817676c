//! Several `tandem` instances on one real Redis (started per test on its own
//! port): convergence, an instance killed mid-typing, presence across
//! instances, Redis outages and restarts.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{cluster, random_edit, Editor, RedisServer, TestServer, Ws, TIMEOUT};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tandem::ot::splice;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_editing_across_three_instances_converges() {
    let redis = RedisServer::start();
    let (_dir, servers) = cluster(&redis, 3, &[]);
    let doc = "shared";
    let mut editors = Vec::new();
    for i in 0..9 {
        editors.push(Editor::join(&servers[i % 3], doc, &format!("u{i}"), None).await);
    }
    let tasks: Vec<_> = editors
        .into_iter()
        .enumerate()
        .map(|(i, mut ed)| {
            tokio::spawn(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(100 + i as u64);
                for _ in 0..60 {
                    let op = random_edit(&mut rng, ed.ot.len_chars());
                    ed.edit(op).await;
                    let pause = rng.gen_range(0..6);
                    ed.pump(Duration::from_millis(pause)).await;
                }
                ed.settle().await;
                ed
            })
        })
        .collect();
    let mut editors = Vec::new();
    for t in tasks {
        editors.push(t.await.unwrap());
    }
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
}

/// Positions between whole tokens (`[...]`), so inserts never split one.
fn boundaries(text: &str) -> Vec<usize> {
    let mut out = vec![0];
    for (i, c) in text.chars().enumerate() {
        if c == ']' {
            out.push(i + 1);
        }
    }
    out
}

fn tokens_in(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for piece in text.split_inclusive(']') {
        assert!(
            piece.starts_with('[') && piece.ends_with(']'),
            "torn token {piece:?} in {text:?}"
        );
        *counts.entry(piece.to_owned()).or_insert(0) += 1;
    }
    counts
}

/// Types unique tokens, one op in flight, through any instance that is up:
/// reconnects and resumes when cut off, resends when the server says the
/// edit could not be committed.
struct Typist {
    ed: Editor,
    user: String,
    created: Vec<String>,
    acked: Vec<String>,
    inflight_token: Option<String>,
    reconnects: usize,
    retries: usize,
}

impl Typist {
    async fn new(addr: &str, doc: &str, user: &str) -> Self {
        let (ws, init) = Ws::connect(&format!(
            "ws://{addr}/ws/{doc}?user_id={user}&client={user}"
        ))
        .await
        .unwrap();
        let ot = tandem::client::OtClient::new(
            user,
            init["content"].as_str().unwrap(),
            init["version"].as_u64().unwrap(),
            0,
        );
        Typist {
            ed: Editor { ws, ot, init },
            user: user.into(),
            created: Vec::new(),
            acked: Vec::new(),
            inflight_token: None,
            reconnects: 0,
            retries: 0,
        }
    }

    async fn reconnect(&mut self, addrs: &Mutex<Vec<String>>, doc: &str) {
        loop {
            let list = addrs.lock().unwrap().clone();
            for a in &list {
                if self.ed.resume_at(a, doc, &self.user).await.is_ok() {
                    self.reconnects += 1;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Handle messages for up to `wait`; false if the connection closed.
    async fn pump(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = match self.ed.ws.try_recv(left).await {
                Ok(Some(m)) => m,
                Ok(None) => return true,
                Err(_) => return false,
            };
            let had = self.ed.ot.inflight_seq();
            match self.ed.try_handle(&m).await {
                Ok(()) => {
                    if had.is_some() && self.ed.ot.inflight_seq().is_none() {
                        self.acked.extend(self.inflight_token.take());
                    }
                }
                Err(e) if e["code"] == "internal" => {
                    // Not committed (backend trouble): keep it, resend soon.
                    self.retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(out) = self.ed.ot.resend() {
                        self.ed.send_op(&out).await;
                    }
                }
                Err(e) => panic!("refused: {e}"),
            }
        }
    }

    async fn type_until(
        &mut self,
        stop: &AtomicBool,
        addrs: &Mutex<Vec<String>>,
        doc: &str,
        seed: u64,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut n = 0;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if !self.ed.ot.has_pending() {
                if stopping {
                    return;
                }
                n += 1;
                let token = format!("[{}:{n}🙂]", self.user);
                let text = self.ed.ot.text();
                let b = boundaries(&text);
                let pos = b[rng.gen_range(0..b.len())];
                let op = splice(text.chars().count(), pos, 0, &token);
                self.created.push(token.clone());
                self.inflight_token = Some(token);
                self.ed.edit(op).await;
            }
            if !self.pump(Duration::from_millis(rng.gen_range(1..10))).await {
                self.reconnect(addrs, doc).await;
            }
        }
    }
}

async fn run_typists(
    addrs: Vec<String>,
    doc: &str,
    count: usize,
    typing: Duration,
    fault: impl std::future::Future<Output = ()>,
) -> Vec<Typist> {
    let alive = Arc::new(Mutex::new(addrs.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..count {
        let mut t = Typist::new(&addrs[i % addrs.len()], doc, &format!("t{i}")).await;
        let (alive, stop, doc) = (alive.clone(), stop.clone(), doc.to_owned());
        tasks.push(tokio::spawn(async move {
            t.type_until(&stop, &alive, &doc, i as u64).await;
            t
        }));
    }
    fault.await;
    tokio::time::sleep(typing).await;
    stop.store(true, Ordering::Relaxed);
    let mut typists = Vec::new();
    for t in tasks {
        typists.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("typist stuck")
                .unwrap(),
        );
    }
    typists
}

/// Every token typed appears exactly once, every client converged.
async fn check_exactly_once(server: &TestServer, doc: &str, typists: &mut [Typist]) {
    let (content, version) = server.document(doc).await;
    let counts = tokens_in(&content);
    let mut created = 0;
    for t in typists.iter_mut() {
        for tok in &t.created {
            assert_eq!(
                counts.get(tok),
                Some(&1),
                "token {tok} (acked: {})",
                t.acked.contains(tok)
            );
        }
        created += t.created.len();
        t.ed.sync_to(version).await;
        assert_eq!(t.ed.ot.text(), content, "{} diverged", t.user);
    }
    assert_eq!(counts.len(), created, "tokens nobody typed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instance_killed_mid_typing_loses_nothing_and_applies_nothing_twice() {
    let redis = RedisServer::start();
    let (_dir, mut servers) = cluster(&redis, 3, &[]);
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
    let (_dir, mut servers) = cluster(&redis, 2, &[("PRESENCE_TTL_MS", "1500")]);
    let doc = "people";
    let (mut a, _) = Ws::connect(&servers[0].ws_url(doc, "user_id=alice&client=a1"))
        .await
        .unwrap();
    let (mut b, init_b) = Ws::connect(&servers[1].ws_url(doc, "user_id=bob&client=b1"))
        .await
        .unwrap();
    let ids: Vec<&str> = init_b["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["client"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"a1") && ids.contains(&"b1"), "{init_b}");
    assert_eq!(a.recv_type("user_joined").await["client"], "b1");
    for s in &servers {
        let (_, users) = s.get(&format!("/api/documents/{doc}/users")).await;
        let mut c: Vec<&str> = users
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["client"].as_str().unwrap())
            .collect();
        c.sort();
        assert_eq!(c, ["a1", "b1"], "on {}", s.addr);
    }
    // Cursors cross instances too.
    a.send(json!({"type":"op","version":0,"seq":1,"op":["hello"]}))
        .await;
    a.recv_type("ack").await;
    a.send(json!({"type":"cursor","version":1,"anchor":1,"head":4}))
        .await;
    let c = loop {
        let m = b.recv().await;
        if m["type"] == "cursor" {
            break m;
        }
    };
    assert_eq!(
        (c["client"].clone(), c["anchor"].clone(), c["head"].clone()),
        (json!("a1"), json!(1), json!(4))
    );

    // Kill alice's instance: bob sees her leave within the TTL.
    let killed = std::time::Instant::now();
    servers[0].kill();
    drop(a);
    let left = b.recv_type("user_left").await;
    assert_eq!(left["client"], "a1");
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
    let (_dir, servers) = cluster(&redis, 1, &[]);
    let doc = "outage";
    let (mut ws, _) = Ws::connect(&servers[0].ws_url(doc, "user_id=u&client=c"))
        .await
        .unwrap();
    ws.send(json!({"type":"op","version":0,"seq":1,"op":["a"]}))
        .await;
    ws.recv_type("ack").await;
    redis.kill();
    ws.send(json!({"type":"op","version":1,"seq":2,"op":[1,"b"]}))
        .await;
    let e = ws.recv_type("error").await;
    assert_eq!(
        (e["code"].clone(), e["seq"].clone()),
        (json!("internal"), json!(2)),
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
        if m["type"] == "ack" {
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
        let (_dir, servers) = cluster(&redis, 2, &[]);
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
