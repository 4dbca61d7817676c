//! `tandem-bench`: load generator and micro-benchmarks for Tandem.
//!
//! Loopback only, bounded in time and count. Every workload prints a
//! readable table and, with `--json FILE`, machine-readable results.
//! End-to-end workloads verify convergence before reporting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tandem::bus::redis::{RedisBackend, RedisSettings};
use tandem::bus::{CommitOutcome, CommitRequest, Seed, Sequencer};
use tandem::client::OtClient;
use tandem::config::Config;
use tandem::ot::{splice, Operation};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod clients;
mod echo;
mod load;
mod plot;
mod replay;
mod servers;
mod stats;
mod suite;
mod sys;

use servers::{Backing, System};

#[derive(Parser)]
#[command(name = "tandem-bench", about = "Benchmarks for Tandem (loopback only)")]
struct Cli {
    /// Write results as JSON to this file as well.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Every workload below in sequence, with the baselines (echo floor,
    /// ShareDB), then the plots: `--profile smoke` takes seconds and checks
    /// convergence only (CI); `--profile full` gives the published figures.
    Suite {
        #[arg(long, value_enum, default_value = "smoke")]
        profile: suite::Profile,
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// PostgreSQL for W8 and for ShareDB on two instances (skipped unset).
        /// Use a database of its own: the runs leave tables and rows.
        #[arg(long)]
        database_url: Option<String>,
        /// Directory for results.json and the SVG plots.
        #[arg(long, default_value = "bench/results")]
        out: std::path::PathBuf,
        /// Run only these workloads (W3,W4,W5,W6,W7,W8,W9), replacing their
        /// entries in an existing results.json.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// W3 / W4 / W5: clients typing at a fixed rate into documents on one or
    /// more instances of a system started for the run: delivery latency
    /// (sender → every other client), throughput, CPU, RSS; convergence.
    Load {
        #[arg(long, value_enum, default_value = "tandem")]
        system: System,
        #[arg(long, default_value_t = 1)]
        instances: usize,
        #[arg(long, default_value_t = 1)]
        docs: usize,
        /// Clients per document.
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// Edits per second per client.
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        warmup: u64,
        #[arg(long)]
        redis: Option<String>,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// W9: one client replays a trace through a server, one op in flight;
    /// the server's final text must equal the trace's.
    Replay {
        #[arg(long, value_enum, default_value = "tandem")]
        system: System,
        #[arg(long)]
        redis: Option<String>,
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/automerge-paper.json.gz"))]
        trace: std::path::PathBuf,
        /// Replay only the first N edits.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// W7: many idle connections: server RSS per connection.
    Idle {
        #[arg(long, value_enum, default_value = "tandem")]
        system: System,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Connections per document.
        #[arg(long, default_value_t = 10)]
        per_doc: usize,
    },
    /// W1 once, in this process (for profilers: `valgrind --tool=callgrind
    /// tandem-bench apply-trace`): build and apply every edit of a trace to
    /// a rope, then check the final text. The measured figure is
    /// `cargo bench --bench ot`.
    ApplyTrace {
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/automerge-paper.json.gz"))]
        trace: std::path::PathBuf,
    },
    /// Draw the SVG plots of a results file.
    Plot {
        #[arg(long, default_value = "bench/results/results.json")]
        input: std::path::PathBuf,
        #[arg(long, default_value = "bench/results")]
        out: std::path::PathBuf,
    },
    /// The echo floor's server (started by the workloads).
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        port: u16,
    },
    /// The Redis commit script alone: sequential calls on one document, and
    /// concurrent callers each on its own document.
    CommitScript {
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// Calls per measurement.
        #[arg(long, default_value_t = 20_000)]
        ops: usize,
        /// Concurrent callers (one document each) for the many-documents run.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// W8 (store part): one persistence round of many dirty documents, each
    /// with new journal rows: snapshots/s, rows/s and the round's cost.
    Persist {
        /// PostgreSQL URL; unset: SQLite in a temp directory.
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = 10_000)]
        docs: usize,
        /// Journal rows per document per round.
        #[arg(long, default_value_t = 10)]
        rows: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// W6: clients send as fast as acks allow through a server started in
    /// this process (embedded, or on Redis with --redis): commits/s on one
    /// hot document and across many documents.
    Commits {
        #[arg(long)]
        redis: Option<String>,
        /// Clients on the one hot document.
        #[arg(long, default_value_t = 8)]
        hot_clients: usize,
        /// Documents (one client each) for the many-documents run.
        #[arg(long, default_value_t = 64)]
        docs: usize,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Server-side undo/redo through a server in this process: two clients
    /// alternate single-key edits (each a separate undo step), then one
    /// undoes all its steps and redoes them. Latency of undo and redo
    /// (request → the op back) against the plain edit (op → ack) measured in
    /// the same run; convergence checked after each phase.
    Undo {
        #[arg(long)]
        redis: Option<String>,
        /// Edits per client (and so undos and redos); at most the stack
        /// limit (100 steps per user).
        #[arg(long, default_value_t = 100)]
        steps: usize,
    },
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, count: usize, elapsed: Duration, mut lat_us: Vec<f64>) -> Value {
    lat_us.sort_by(f64::total_cmp);
    let rate = count as f64 / elapsed.as_secs_f64();
    let v = json!({
        "name": name,
        "count": count,
        "seconds": elapsed.as_secs_f64(),
        "per_second": rate,
        "latency_us": {
            "p50": percentile(&lat_us, 0.5),
            "p90": percentile(&lat_us, 0.9),
            "p99": percentile(&lat_us, 0.99),
            "p999": percentile(&lat_us, 0.999),
        }
    });
    println!(
        "{:<44} {:>9} ops {:>10.0}/s   p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs",
        name,
        count,
        rate,
        percentile(&lat_us, 0.5),
        percentile(&lat_us, 0.99),
        percentile(&lat_us, 0.999)
    );
    v
}

fn insert_op(doc_len: usize) -> Operation {
    splice(doc_len, doc_len, 0, "x")
}

/// The `i`th commit of one client appending to a document at version `i`.
fn nth_commit(i: usize) -> CommitRequest {
    CommitRequest {
        base: i as u64,
        op: insert_op(i),
        user: "bench".into(),
        client: "c".into(),
        seq: i as u64 + 1,
        time: 0,
    }
}

pub(crate) async fn commit_script(redis: String, ops: usize, concurrency: usize) -> Vec<Value> {
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let prefix = format!("tandem-bench-{}", uuid::Uuid::new_v4().simple());
    let settings = RedisSettings {
        url: redis,
        prefix,
        retain: 10_000,
    };
    let backend = RedisBackend::connect(settings, &tracker, cancel.clone())
        .await
        .expect("connect to Redis");
    let mut results = Vec::new();

    // One document, one caller: the script's cost per call (round trip included).
    backend.seed("hot", &Seed::default()).await.unwrap();
    let mut lat = Vec::with_capacity(ops);
    let start = Instant::now();
    for i in 0..ops {
        let req = nth_commit(i);
        let t = Instant::now();
        match backend.commit("hot", req).await.unwrap() {
            CommitOutcome::Committed(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    results.push(summary(
        "commit script, 1 doc, sequential",
        ops,
        start.elapsed(),
        lat,
    ));

    // Many documents, concurrent callers (pipelined on one connection).
    for d in 0..concurrency {
        backend
            .seed(&format!("d{d}"), &Seed::default())
            .await
            .unwrap();
    }
    let per = ops / concurrency;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for d in 0..concurrency {
        let b = backend.clone();
        tasks.push(tokio::spawn(async move {
            let doc = format!("d{d}");
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let req = nth_commit(i);
                let t = Instant::now();
                b.commit(&doc, req).await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let name = format!("commit script, {concurrency} docs, concurrent");
    results.push(summary(&name, per * concurrency, start.elapsed(), lat));

    cleanup(&backend).await;
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    results
}

async fn cleanup(backend: &RedisBackend) {
    if let Err(e) = backend.delete_all_keys().await {
        eprintln!("cleanup failed: {e}");
    }
}

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
        self.0.send_text(v.to_string()).await;
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

async fn undo(redis: Option<String>, steps: usize) -> Vec<Value> {
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

/// `rounds` persistence rounds (or until `stop`); `ready` is told once the
/// documents exist and the first round is about to start.
pub(crate) async fn persist(
    database_url: Option<String>,
    docs: usize,
    rows: usize,
    rounds: usize,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
    stop: Option<CancellationToken>,
) -> Vec<Value> {
    use tandem::doc::Record;
    use tandem::store::{DocPersist, Store};
    let dir = tempfile_dir();
    let (store, backend): (Box<dyn Store>, &str) = match &database_url {
        Some(url) => {
            let settings = tandem::store::postgres::PgSettings {
                url: url.clone(),
                pool_size: 4,
                statement_timeout: Duration::from_secs(60),
            };
            (
                Box::new(
                    tandem::store::postgres::PgStore::connect(&settings)
                        .await
                        .expect("connect"),
                ),
                "postgres",
            )
        }
        None => (
            Box::new(
                tandem::store::sqlite::SqliteStore::open(&dir)
                    .await
                    .expect("open"),
            ),
            "sqlite",
        ),
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let ids: Vec<String> = (0..docs).map(|i| format!("p{}-{i}", &run[..8])).collect();
    for id in &ids {
        store.ensure_document(id, 0).await.unwrap();
    }
    let mut texts = vec![String::new(); docs];
    let mut results = Vec::new();
    let mut round_ms = Vec::new();
    if let Some(r) = ready {
        let _ = r.send(());
    }
    for round in 0..rounds {
        if stop.as_ref().is_some_and(CancellationToken::is_cancelled) {
            break;
        }
        let batch: Vec<DocPersist> = ids
            .iter()
            .zip(texts.iter_mut())
            .map(|(id, text)| {
                let journal = (0..rows)
                    .map(|k| {
                        let len = text.chars().count();
                        let op = splice(len, len, 0, "x");
                        text.push('x');
                        Arc::new(Record {
                            version: (round * rows + k + 1) as u64,
                            op,
                            user: "bench".into(),
                            client: "c".into(),
                            seq: (round * rows + k + 1) as u64,
                            time: 0,
                        })
                    })
                    .collect();
                DocPersist {
                    doc: id.clone(),
                    version: ((round + 1) * rows) as u64,
                    content: text.clone(),
                    journal,
                    clients: vec![tandem::bus::ClientSeq {
                        client: "c".into(),
                        seq: ((round + 1) * rows) as u64,
                        version: ((round + 1) * rows) as u64,
                    }],
                }
            })
            .collect();
        let t = Instant::now();
        store.persist(&batch, 0).await.expect("persist");
        round_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    round_ms.sort_by(f64::total_cmp);
    let median = round_ms[round_ms.len() / 2];
    let v = json!({
        "name": format!("persist round ({backend})"),
        "docs": docs,
        "rows_per_doc": rows,
        "round_ms_median": median,
        "snapshots_per_second": docs as f64 / (median / 1e3),
        "journal_rows_per_second": (docs * rows) as f64 / (median / 1e3),
    });
    println!(
        "persist round ({backend}): {docs} docs x {rows} rows: median {median:.1} ms/round = {:.0} snapshots/s, {:.0} journal rows/s",
        docs as f64 / (median / 1e3),
        (docs * rows) as f64 / (median / 1e3)
    );
    results.push(v);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    results
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tandem-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let results = match cli.workload {
        Workload::Suite {
            profile,
            redis,
            database_url,
            out,
            only,
        } => {
            std::fs::create_dir_all(&out).expect("create --out");
            // With --only, the other workloads' entries of the last run stay.
            let kept: Vec<Value> = if only.is_empty() {
                Vec::new()
            } else {
                std::fs::read(out.join("results.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .and_then(|v| v["results"].as_array().cloned())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| !suite::selected(&only, r["name"].as_str().unwrap_or("")))
                    .collect()
            };
            let save = |results: &[Value]| {
                let doc = json!({
                    "profile": format!("{profile:?}").to_lowercase(),
                    "machine": machine(),
                    "results": kept.iter().chain(results).collect::<Vec<_>>(),
                });
                std::fs::write(
                    out.join("results.json"),
                    serde_json::to_string_pretty(&doc).unwrap(),
                )
                .expect("write results");
            };
            let results = suite::run(profile, redis, database_url, &only, &save).await;
            save(&results);
            let all: Vec<Value> = kept
                .iter()
                .cloned()
                .chain(results.iter().cloned())
                .collect();
            for p in plot::write_all(&all, &out) {
                println!("plot: {}", p.display());
            }
            assert!(
                results.iter().all(|r| r["converged"] != json!(false)),
                "a run did not converge"
            );
            results
        }
        Workload::Load {
            system,
            instances,
            docs,
            clients,
            rate,
            seconds,
            warmup,
            redis,
            database_url,
        } => {
            let spec = load::LoadSpec {
                name: format!("load {docs} docs x {clients} on {instances} inst"),
                system,
                instances: instances.max(1),
                docs: docs.max(1),
                clients_per_doc: clients.max(1),
                rate,
                warmup: Duration::from_secs(warmup),
                seconds: Duration::from_secs(seconds.max(1)),
                backing: Backing {
                    redis,
                    database_url,
                },
            };
            vec![load::run(&spec).await]
        }
        Workload::Replay {
            system,
            redis,
            trace,
            limit,
        } => {
            let label = if redis.is_some() { "Redis" } else { "embedded" };
            let t = replay::load_trace(&trace, limit);
            let backing = Backing {
                redis,
                database_url: None,
            };
            vec![replay::replay(system, &backing, label, &t).await]
        }
        Workload::Idle {
            system,
            conns,
            per_doc,
        } => vec![replay::idle(system, conns.max(1), per_doc.max(1)).await],
        Workload::Plot { input, out } => {
            let v: Value = serde_json::from_slice(&std::fs::read(&input).expect("read --input"))
                .expect("results JSON");
            let results = v["results"].as_array().cloned().unwrap_or_default();
            for p in plot::write_all(&results, &out) {
                println!("plot: {}", p.display());
            }
            return;
        }
        Workload::ApplyTrace { trace } => {
            let t = replay::load_trace(&trace, None);
            let start = Instant::now();
            let rope = apply_all(&t.patches);
            let took = start.elapsed();
            assert!(
                rope == t.end.as_str(),
                "final text differs from the trace's"
            );
            println!(
                "applied {} edits in {:.1} ms",
                t.patches.len(),
                took.as_secs_f64() * 1e3
            );
            return;
        }
        Workload::EchoServer { port } => {
            echo::serve(port).await;
            return;
        }
        Workload::CommitScript {
            redis,
            ops,
            concurrency,
        } => commit_script(redis, ops, concurrency.max(1)).await,
        Workload::Persist {
            database_url,
            docs,
            rows,
            rounds,
        } => {
            persist(
                database_url,
                docs.max(1),
                rows.max(1),
                rounds.max(1),
                None,
                None,
            )
            .await
        }
        Workload::Commits {
            redis,
            hot_clients,
            docs,
            seconds,
        } => commits(redis, hot_clients.max(1), docs.max(1), seconds.max(1)).await,
        Workload::Undo { redis, steps } => {
            undo(redis, steps.clamp(1, tandem::undo::STACK_LIMIT)).await
        }
    };
    if let Some(path) = cli.json {
        let out = json!({ "results": results });
        std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).expect("write JSON");
    }
}

/// What the figures were measured on.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": mem_kb / 1024 / 1024,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
    })
}

/// W1's loop, kept out of line so a profiler can collect just this
/// (`--toggle-collect='*apply_all*'`).
#[inline(never)]
fn apply_all(patches: &[(usize, usize, String)]) -> ropey::Rope {
    let mut rope = ropey::Rope::new();
    for (pos, del, ins) in patches {
        let op = splice(rope.len_chars(), *pos, *del, ins);
        op.apply_rope(&mut rope).expect("valid edit");
    }
    rope
}
