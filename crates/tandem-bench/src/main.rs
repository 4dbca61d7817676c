//! `tandem-bench`: load generator and micro-benchmarks for Tandem.
//!
//! Loopback only, bounded in time and count. Every workload prints a
//! readable table and, with `--json FILE`, machine-readable results.
//! End-to-end workloads verify convergence before reporting.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tandem::ot::splice;

mod clients;
mod direct;
mod echo;
mod inproc;
mod load;
mod plot;
mod replay;
mod replication;
mod servers;
mod sigkill;
mod stats;
mod suite;
mod sys;

use servers::{Backing, Balancer, System};

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
        /// Connect every client through nginx running nginx.conf
        /// with this balancing policy (`none`: straight to the instances,
        /// each document's clients alternating between them).
        #[arg(long, value_enum, default_value = "none")]
        balancer: Balancer,
    },
    /// W9: one client replays a trace through a server, one op in flight;
    /// the server's final text must equal the trace's.
    Replay {
        #[arg(long, value_enum, default_value = "tandem")]
        system: System,
        #[arg(long)]
        redis: Option<String>,
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/automerge-paper.json.gz"))]
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
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/automerge-paper.json.gz"))]
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
    /// Redis's replication window: how long after a master acks a write
    /// its replica holds it (what a failover then would take back).
    ReplicationWindow {
        #[arg(long)]
        master: String,
        #[arg(long)]
        replica: String,
        #[arg(long, default_value_t = 5000)]
        samples: usize,
    },
    /// Durability: an embedded server SIGKILLed `--kills` times while
    /// typists type unique tokens; counts acknowledged edits lost or doubled.
    Sigkill {
        #[arg(long, default_value_t = 5)]
        kills: usize,
        #[arg(long, default_value_t = 4)]
        typists: usize,
        /// Typing between kills, ms.
        #[arg(long, default_value_t = 1500)]
        every_ms: u64,
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

pub(crate) fn tempfile_dir() -> std::path::PathBuf {
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
            balancer,
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
                balancer,
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
        } => direct::commit_script(redis, ops, concurrency.max(1)).await,
        Workload::Persist {
            database_url,
            docs,
            rows,
            rounds,
        } => {
            direct::persist(
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
        } => inproc::commits(redis, hot_clients.max(1), docs.max(1), seconds.max(1)).await,
        Workload::ReplicationWindow {
            master,
            replica,
            samples,
        } => replication::window(master, replica, samples.max(1)).await,
        Workload::Sigkill {
            kills,
            typists,
            every_ms,
        } => {
            sigkill::sigkill(
                kills.max(1),
                typists.max(1),
                Duration::from_millis(every_ms),
            )
            .await
        }
        Workload::Undo { redis, steps } => {
            inproc::undo(redis, steps.clamp(1, tandem::undo::STACK_LIMIT)).await
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
