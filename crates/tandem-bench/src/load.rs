//! W3/W4/W5/W8: many clients typing at a fixed rate into one or many
//! documents on one or more instances. Every op's send time is kept in a
//! lock-free table; every other client that receives it records the delay
//! (sender timestamp → each remote receiver). After the run every client
//! drains to the final version and the checker verifies convergence: all
//! clients' texts are equal and each acknowledged token is in it exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::clients::{join_many, prepare, Client, Event};
use crate::servers::{Backing, Balancer, Servers, System};
use crate::stats::{cdf, latency_json, Stats};
use crate::sys::{CpuWindow, MachineWindow};

const RING: usize = 4096;

/// Tandem's counter of commit attempts after the first (a commit that found
/// the head moved, by another instance, and rebased).
const RETRIES: &str = "tandem_commit_retries_total";

#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub name: String,
    pub system: System,
    pub instances: usize,
    pub docs: usize,
    pub clients_per_doc: usize,
    /// Edits per second per client.
    pub rate: f64,
    pub warmup: Duration,
    pub seconds: Duration,
    pub backing: Backing,
    /// Clients straight to the instances, or through nginx.
    pub balancer: Balancer,
}

/// Send times (µs since the run's epoch) of each client's recent seqs.
struct SendTimes {
    slots: Vec<Box<[AtomicU64]>>,
}

impl SendTimes {
    fn new(clients: usize) -> SendTimes {
        SendTimes {
            slots: (0..clients)
                .map(|_| (0..RING).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        }
    }
    fn set(&self, client: usize, seq: u64, us: u64) {
        self.slots[client][seq as usize % RING].store(us, Ordering::Relaxed);
    }
    fn get(&self, client: usize, seq: u64) -> u64 {
        self.slots[client][seq as usize % RING].load(Ordering::Relaxed)
    }
}

struct Shared {
    epoch: Instant,
    times: SendTimes,
    ids: HashMap<String, usize>,
    /// Only ops sent at or after this (µs) are measured.
    measure_from: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
}

struct ClientReport {
    doc: usize,
    remote_us: Vec<u32>,
    ack_us: Vec<u32>,
    sent_measured: u64,
    /// Edits refused for now (not committed) and sent again.
    resends: u64,
    acked_tokens: Vec<String>,
    text: Option<(u64, String)>,
    version: u64,
}

enum Phase {
    Typing,
    Draining,
    Done(u64),
}

/// One client's loop: type at `rate` (keystrokes during an op in flight
/// are held and go out together once it is acknowledged), record delays,
/// and after `stop` drain to the final version.
async fn run_client(
    mut c: Client,
    doc: usize,
    rate: f64,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Option<Vec<u64>>>,
    idle: tokio::sync::mpsc::Sender<(usize, u64)>,
) -> ClientReport {
    let period = Duration::from_secs_f64(1.0 / rate);
    let offset = period.mul_f64(rand::thread_rng().gen::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut r = ClientReport {
        doc,
        remote_us: Vec::new(),
        ack_us: Vec::new(),
        sent_measured: 0,
        resends: 0,
        acked_tokens: Vec::new(),
        text: None,
        version: 0,
    };
    let mut held: Vec<u64> = Vec::new(); // keystroke times not yet sent
    let mut inflight: Option<(u64, String)> = None; // (send time, token)
    let mut state = Phase::Typing;
    let mut n = 0u64;
    loop {
        if let Phase::Done(target) = state {
            if c.version() >= target && inflight.is_none() {
                break;
            }
        }
        if matches!(state, Phase::Draining) && inflight.is_none() && held.is_empty() {
            // Report: this client is idle; wait for the final versions.
            let _ = idle.send((doc, c.version())).await;
            state = Phase::Done(u64::MAX);
        }
        if inflight.is_none() && !held.is_empty() {
            n += 1;
            let first = held[0];
            let token: String = format!("{}.{};", c.idx, n) + &"k".repeat(held.len() - 1);
            held.clear();
            let seq = c.send_edit(0, 0, &token).await;
            shared.times.set(c.idx, seq, first);
            if first >= shared.measure_from.load(Ordering::Relaxed) {
                r.sent_measured += 1;
            }
            inflight = Some((first, token));
        }
        tokio::select! {
            _ = tick.tick(), if matches!(state, Phase::Typing) => {
                held.push(shared.now_us());
            }
            changed = phase.changed() => {
                if changed.is_err() { break; }
                let targets = phase.borrow().clone();
                match (targets, &state) {
                    (Some(t), Phase::Typing) if t.is_empty() => state = Phase::Draining,
                    (Some(t), Phase::Done(_)) if !t.is_empty() => state = Phase::Done(t[doc]),
                    _ => {}
                }
            }
            ev = c.next(&shared.ids) => match ev {
                Event::Ack => {
                    let (sent, token) = inflight.take().expect("ack without op");
                    if sent >= shared.measure_from.load(Ordering::Relaxed) {
                        r.ack_us.push((shared.now_us() - sent) as u32);
                    }
                    r.acked_tokens.push(token);
                }
                Event::Remote(from, seq) => {
                    let sent = shared.times.get(from, seq);
                    if sent >= shared.measure_from.load(Ordering::Relaxed) {
                        r.remote_us.push(shared.now_us().saturating_sub(sent) as u32);
                    }
                }
                Event::Other | Event::Gap => {}
            }
        }
    }
    r.version = c.version();
    r.resends = c.resends;
    r.text = c.final_text().await;
    c.close().await;
    r
}

pub async fn run(spec: &LoadSpec) -> Value {
    let mut servers = Servers::start(spec.system, spec.instances, &spec.backing).await;
    servers.front(spec.balancer).await;
    let result = run_on(spec, &servers).await;
    servers.finish(&spec.backing).await;
    result
}

async fn run_on(spec: &LoadSpec, servers: &Servers) -> Value {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let docs: Vec<String> = (0..spec.docs)
        .map(|d| format!("w{}-{d}", &run[..8]))
        .collect();
    prepare(spec.system, &servers.url(0, "", "setup"), &docs).await;

    // Join everyone first (Tandem assigns client ids at join), in parallel.
    // Clients of a document alternate between instances (through nginx, if
    // it is in front, every URL is nginx's and it picks).
    let mut targets = Vec::new();
    for (d, doc) in docs.iter().enumerate() {
        for k in 0..spec.clients_per_doc {
            let idx = d * spec.clients_per_doc + k;
            targets.push((
                servers.url(d + k, doc, &format!("u{idx}")),
                idx,
                doc.clone(),
            ));
        }
    }
    let clients = join_many(spec.system, targets, 256).await;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        times: SendTimes::new(spec.docs * spec.clients_per_doc),
        ids: clients.iter().map(|c| (c.server_id(), c.idx)).collect(),
        measure_from: AtomicU64::new(u64::MAX),
    });
    let (phase_tx, phase_rx) = watch::channel(None);
    let (idle_tx, mut idle_rx) = tokio::sync::mpsc::channel(1024);
    let mut tasks = Vec::new();
    for c in clients {
        let d = c.idx / spec.clients_per_doc;
        tasks.push(tokio::spawn(run_client(
            c,
            d,
            spec.rate,
            shared.clone(),
            phase_rx.clone(),
            idle_tx.clone(),
        )));
    }
    drop(idle_tx);
    let clients_n = tasks.len();

    tokio::time::sleep(spec.warmup).await;
    shared
        .measure_from
        .store(shared.now_us(), Ordering::Relaxed);
    let server_cpu = CpuWindow::start(servers.pids());
    let client_cpu = CpuWindow::start(vec![std::process::id()]);
    let front_cpu = CpuWindow::start(servers.front_pids());
    let machine_cpu = MachineWindow::start();
    let retries_before = servers.counter_sum(RETRIES).await;
    let t0 = Instant::now();
    tokio::time::sleep(spec.seconds).await;
    let elapsed = t0.elapsed();
    let (server_pct, client_pct) = (server_cpu.percent(), client_cpu.percent());
    let front_pct = front_cpu.percent();
    let machine_pct = machine_cpu.percent();
    let rss = servers.rss_kb();
    let sessions = servers.sessions().await;
    let retries = match (retries_before, servers.counter_sum(RETRIES).await) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };

    // Stop typing; once every client is idle, the highest version any
    // client of a document saw is that document's final version.
    phase_tx.send_replace(Some(Vec::new()));
    let mut finals = vec![0u64; spec.docs];
    let mut idle_n = 0;
    while idle_n < clients_n {
        tokio::select! {
            idle = idle_rx.recv() => {
                let (d, v) = idle.expect("client idle");
                finals[d] = finals[d].max(v);
                idle_n += 1;
            }
            // No client ends before the final versions are out: one that
            // did panicked. Fail the run with its message (the servers stop
            // on Drop) rather than wait for it forever.
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if let Some(i) = tasks.iter().position(|t| t.is_finished()) {
                    tasks.swap_remove(i).await.expect("client task");
                    panic!("a client ended before the run did");
                }
            }
        }
    }
    phase_tx.send_replace(Some(finals.clone()));
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await.expect("client task"));
    }
    let converged = check(spec.system, &reports, &finals);

    let mut remote = Stats::default();
    let mut ack = Stats::default();
    let mut measured_ops = 0u64;
    let mut resends = 0u64;
    for r in &reports {
        remote.extend(&r.remote_us);
        ack.extend(&r.ack_us);
        measured_ops += r.sent_measured;
        resends += r.resends;
    }
    let secs = elapsed.as_secs_f64();
    let out = json!({
        "name": spec.name,
        "system": spec.system.name(),
        "instances": spec.instances,
        "docs": spec.docs,
        "clients": clients_n,
        "rate_per_client": spec.rate,
        "seconds": secs,
        "ops": measured_ops,
        "ops_per_second": measured_ops as f64 / secs,
        "deliveries": remote.len(),
        "latency_us": latency_json(&mut remote),
        "ack_latency_us": latency_json(&mut ack),
        "server_cpu_percent": server_pct,
        "client_cpu_percent": client_pct,
        "server_rss_kb": rss,
        "converged": converged,
        "cdf": cdf(&mut remote, 60),
        "balancer": spec.balancer.name(),
        // nginx's master and workers, in % of one core (null without it).
        "balancer_cpu_percent": (spec.balancer != Balancer::None).then_some(front_pct),
        // The whole machine's busy CPU in the measured window (% of one
        // core): well above server + balancer + client + Redis, something
        // else was running.
        "machine_cpu_percent": machine_pct,
        // Each instance's open sessions at the end of the measured window.
        "instance_sessions": sessions,
        // Commits that lost the race to another instance and went again,
        // in the measured window, all instances (null: not Tandem).
        "commit_retries": retries,
        // Edits the server answered with `internal` or `rate_limited` (not
        // committed), sent again by their client after 0.3–1 s, whole run.
        "resends": resends,
    });
    println!(
        "{:<40} {:>7} {:>5} clients {:>7.0} ops/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  server CPU {:>4.0}%  RSS {:>6} MiB  converged",
        spec.name,
        spec.system.name(),
        clients_n,
        measured_ops as f64 / secs,
        out["latency_us"]["p50"].as_f64().unwrap_or(0.0) / 1e3,
        out["latency_us"]["p99"].as_f64().unwrap_or(0.0) / 1e3,
        out["latency_us"]["p999"].as_f64().unwrap_or(0.0) / 1e3,
        server_pct,
        rss / 1024,
    );
    if spec.balancer != Balancer::None {
        println!(
            "{:<40} via nginx ({}): nginx CPU {:>4.0}%, commit retries {}, resends {resends}, sessions per instance {}",
            "",
            spec.balancer.name(),
            front_pct,
            retries.map_or("?".to_owned(), |n| n.to_string()),
            sessions
                .iter()
                .map(|n| n.map_or("?".to_owned(), |n| n.to_string()))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    out
}

/// Convergence: every client of a document ended at its final version; all
/// texts (where the system lets a client see one) are equal; each
/// acknowledged token is in the text exactly once and nothing else is.
fn check(system: System, reports: &[ClientReport], finals: &[u64]) -> bool {
    let mut by_doc: HashMap<usize, Vec<&ClientReport>> = HashMap::new();
    for r in reports {
        by_doc.entry(r.doc).or_default().push(r);
    }
    for (d, rs) in by_doc {
        let acked: usize = rs.iter().map(|r| r.acked_tokens.len()).sum();
        for r in &rs {
            assert_eq!(
                r.version, finals[d],
                "{system:?} doc {d}: a client stopped short"
            );
        }
        if system == System::Echo {
            // Every frame reached every member: versions count frames.
            assert_eq!(finals[d] as usize, acked, "echo doc {d}: frames lost");
            continue;
        }
        let texts: Vec<&(u64, String)> = rs.iter().filter_map(|r| r.text.as_ref()).collect();
        let first = texts.first().expect("a text");
        for t in &texts {
            assert_eq!(t, first, "{system:?} doc {d}: clients diverged");
        }
        let mut in_text: Vec<&str> = split_tokens(&first.1);
        let mut expected: Vec<&str> = rs
            .iter()
            .flat_map(|r| r.acked_tokens.iter().map(String::as_str))
            .collect();
        in_text.sort_unstable();
        expected.sort_unstable();
        assert_eq!(
            in_text.len(),
            expected.len(),
            "{system:?} doc {d}: {} tokens in the text, {} acknowledged",
            in_text.len(),
            expected.len()
        );
        assert!(
            in_text == expected,
            "{system:?} doc {d}: tokens lost or doubled"
        );
    }
    true
}

/// Split a document into its tokens (`"<client>.<n>;k…"`, inserted whole at
/// position 0).
fn split_tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b';' {
            let mut end = i + 1;
            while end < b.len() && b[end] == b'k' {
                end += 1;
            }
            out.push(&text[start..end]);
            start = end;
            i = end;
        } else {
            i += 1;
        }
    }
    assert_eq!(start, text.len(), "text ends inside a token");
    out
}
