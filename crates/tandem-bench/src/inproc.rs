//! Workloads against a server started in this process (embedded, or on
//! Redis), checked against its hub: W6 (commits as fast as acks allow, on
//! one hot document and across many) and server-side undo/redo latency.
//!
//! Must not import: the server's internals beyond `build`, `serve`, `app`,
//! `config` and the hub's read-only `view` (the convergence check).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem::client::OtClient;
use tandem::config::Config;

use crate::clients;
use crate::servers::System;
use crate::stats::{percentile, summary};
use crate::tempfile_dir;

/// One client that sends an op as soon as the previous one is acked.
async fn flood_client(
    url: String,
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
) -> (Vec<f64>, OtClient) {
    let mut peer = Peer::join(&url).await;
    let mut lat = Vec::new();
    loop {
        let sent_at = Instant::now();
        peer.type_one().await;
        lat.push(sent_at.elapsed().as_secs_f64() * 1e6);
        commits.fetch_add(1, Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    let ot = peer.ot().clone();
    peer.0.close().await;
    (lat, ot)
}

/// A server in this process (embedded, or on Redis): its hub, address,
/// task and data directory.
async fn start_server(
    redis: Option<String>,
) -> (
    tandem::hub::Hub,
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
    std::path::PathBuf,
) {
    let dir = tempfile_dir();
    let mut config = Config::defaults();
    config.allow_anonymous = true;
    config.data_dir = dir.clone();
    config.op_rate_per_sec = 1_000_000;
    config.op_rate_burst = 1_000_000;
    config.max_conns_per_ip = 1_000_000;
    config.max_sockets_per_user = 1_000_000;
    config.redis_url = redis.map(tandem::config::Secret);
    // Clustered mode needs a shared signing secret; the bench uses none.
    config.jwt_secret = Some(tandem::config::Secret(format!(
        "bench-{}-{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )));
    config.redis_prefix = format!("tandem-bench-{}", uuid::Uuid::new_v4().simple());
    let state = tandem::build(config).await.expect("build server");
    let hub = state.hub.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = state.conn_limits.clone();
    let server = tokio::spawn(tandem::serve(
        listener,
        tandem::app(state),
        limits,
        std::future::pending(),
    ));
    (hub, addr, server, dir)
}

/// A Tandem client for the in-process workloads (W6, undo): the
/// generator's protocol client (`clients::Client`) with the steps they use.
struct Peer(clients::Client);

impl Peer {
    async fn join(url: &str) -> Peer {
        Peer(clients::Client::join(System::Tandem, url, 0, "").await)
    }

    fn ot(&self) -> &OtClient {
        self.0.ot()
    }

    async fn send(&mut self, v: Value) {
        self.0.send_text(&v.to_string()).await;
    }

    /// Append one character and wait for its ack.
    async fn type_one(&mut self) {
        let len = self.ot().len_chars();
        self.0.send_edit(len, 0, "x").await;
        while self.0.next(&Default::default()).await != clients::Event::Ack {}
    }

    /// Process messages until the client reaches `version`.
    async fn reach(&mut self, version: u64) {
        while self.ot().version < version {
            self.0.next(&Default::default()).await;
        }
    }
}

pub(crate) async fn undo(redis: Option<String>, steps: usize) -> Vec<Value> {
    let (hub, addr, server, dir) = start_server(redis).await;
    let doc = format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut a = Peer::join(&format!("ws://{addr}/ws/{doc}?user_id=a")).await;
    let mut b = Peer::join(&format!("ws://{addr}/ws/{doc}?user_id=b")).await;
    let (mut edit_lat, mut undo_lat, mut redo_lat) = (Vec::new(), Vec::new(), Vec::new());
    let t0 = Instant::now();
    for _ in 0..steps {
        let t = Instant::now();
        a.type_one().await;
        edit_lat.push(t.elapsed().as_secs_f64() * 1e6);
        b.reach(a.ot().version).await;
        b.type_one().await;
        a.reach(b.ot().version).await;
    }
    let typed = t0.elapsed();
    let full = a.ot().text();
    for (what, lat) in [("undo", &mut undo_lat), ("redo", &mut redo_lat)] {
        for _ in 0..steps {
            let target = a.ot().version + 1;
            let t = Instant::now();
            a.send(json!({ "type": what })).await;
            a.reach(target).await;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        b.reach(a.ot().version).await;
        let view = hub.view(&doc).await.unwrap();
        assert_eq!(a.ot().text(), view.content, "a diverged after {what}");
        assert_eq!(b.ot().text(), view.content, "b diverged after {what}");
        if what == "undo" {
            assert_eq!(view.content.chars().count(), steps, "undo left other text");
        } else {
            assert_eq!(view.content, full, "redo did not restore the text");
        }
    }
    let edit_p50 = {
        let mut s = edit_lat.clone();
        s.sort_by(f64::total_cmp);
        percentile(&s, 0.5)
    };
    let mut results = vec![summary(
        "edit (op -> ack), baseline",
        steps,
        typed,
        edit_lat,
    )];
    for (name, lat) in [
        ("undo (request -> op)", undo_lat),
        ("redo (request -> op)", redo_lat),
    ] {
        let mut s = lat.clone();
        s.sort_by(f64::total_cmp);
        let ratio = percentile(&s, 0.5) / edit_p50;
        let elapsed = Duration::from_secs_f64(lat.iter().sum::<f64>() / 1e6);
        let mut v = summary(name, steps, elapsed, lat);
        v["p50_vs_edit"] = json!(ratio);
        v["converged"] = json!(true);
        println!("    {name}: p50 is {ratio:.2}x the plain edit's");
        results.push(v);
    }
    hub.shutdown().await;
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    results
}

pub(crate) async fn commits(
    redis: Option<String>,
    hot_clients: usize,
    docs: usize,
    seconds: u64,
) -> Vec<Value> {
    let (hub, addr, server, dir) = start_server(redis).await;
    let mut results = Vec::new();
    for (name, docs, per_doc) in [
        (
            format!("W6 commits, 1 hot doc x {hot_clients} clients"),
            1,
            hot_clients,
        ),
        (format!("W6 commits, {docs} docs x 1 client"), docs, 1),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let run = uuid::Uuid::new_v4().simple().to_string();
        let mut tasks = Vec::new();
        for d in 0..docs {
            for c in 0..per_doc {
                let url = format!("ws://{addr}/ws/b{}-{d}?user_id=u{c}", &run[..8]);
                tasks.push(tokio::spawn(flood_client(
                    url,
                    stop.clone(),
                    commits.clone(),
                )));
            }
        }
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let elapsed = start.elapsed();
        let mut lat = Vec::new();
        let mut clients = Vec::new();
        for t in tasks {
            let (l, ot) = t.await.unwrap();
            lat.extend(l);
            clients.push(ot);
        }
        let n = commits.load(Ordering::Relaxed) as usize;
        // Convergence: each document's final text matches what its clients
        // saw up to their last version (single-writer docs match exactly).
        for (d, chunk) in clients.chunks(per_doc).enumerate() {
            let view = hub.view(&format!("b{}-{d}", &run[..8])).await.unwrap();
            let total: u64 = chunk
                .iter()
                .map(|c| c.inflight_seq().map_or(0, |_| 1))
                .sum();
            assert_eq!(total, 0, "clients stopped with ops in flight");
            if per_doc == 1 {
                assert_eq!(chunk[0].text(), view.content, "document {d} diverged");
            }
            assert_eq!(
                view.content.chars().count() as u64,
                view.version,
                "lost or doubled commits"
            );
        }
        let mut v = summary(&name, n, elapsed, lat);
        v["converged"] = json!(true);
        results.push(v);
    }
    hub.shutdown().await;
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    results
}
