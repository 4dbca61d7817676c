//! W9: one client replays a recorded editing trace through a running server,
//! one op in flight (each edit waits for the previous one's ack, so this is
//! bound by the round trip), then a fresh client checks that the server's
//! text is the trace's final text.
//!
//! W7: many mostly idle connections; the server's resident memory per
//! connection.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::{join_many, prepare, Client, Event};
use crate::servers::{Backing, Servers, System};
use crate::stats::{latency_json, Stats};
use crate::sys::CpuWindow;

pub struct Patches {
    pub name: String,
    pub patches: Vec<(usize, usize, String)>,
    pub end: String,
}

/// Load a sequential trace (`editing-traces` format, gzipped), keeping the
/// first `limit` patches; `end` is the text they produce.
pub fn load_trace(path: &std::path::Path, limit: Option<usize>) -> Patches {
    let t = tandem_testkit::traces::load_path(path);
    let mut patches: Vec<_> = t.txns.into_iter().flat_map(|t| t.patches).collect();
    let end = match limit {
        Some(n) if n < patches.len() => {
            patches.truncate(n);
            let mut rope = ropey::Rope::new();
            for (pos, del, ins) in &patches {
                rope.remove(*pos..*pos + *del);
                rope.insert(*pos, ins);
            }
            rope.to_string()
        }
        _ => t.end,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("trace")
        .trim_end_matches(".json.gz")
        .to_string();
    Patches { name, patches, end }
}

pub async fn replay(system: System, backing: &Backing, label: &str, trace: &Patches) -> Value {
    let servers = Servers::start(system, 1, backing).await;
    let doc = format!("r{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    prepare(
        system,
        &servers.url(0, "", "setup"),
        std::slice::from_ref(&doc),
    )
    .await;
    let ids = Default::default();
    let mut c = Client::join(system, &servers.url(0, &doc, "replayer"), 0, &doc).await;
    let mut lat = Stats::default();
    let cpu = CpuWindow::start(servers.pids());
    let start = Instant::now();
    for (pos, del, ins) in &trace.patches {
        let t = Instant::now();
        c.send_edit(*pos, *del, ins).await;
        while c.next(&ids).await != Event::Ack {}
        lat.push(t.elapsed().as_micros() as u32);
    }
    let elapsed = start.elapsed();
    let server_pct = cpu.percent();
    c.close().await;
    // What the server holds, seen by a client that just joined.
    let text = match system {
        System::Echo => None,
        _ => {
            let mut fresh = Client::join(system, &servers.url(0, &doc, "checker"), 1, &doc).await;
            let t = fresh.final_text().await.map(|(_, t)| t);
            fresh.close().await;
            t
        }
    };
    if let Some(t) = &text {
        assert!(
            *t == trace.end,
            "{label}: the server's text differs from the trace's end ({} vs {} chars)",
            t.chars().count(),
            trace.end.chars().count()
        );
    }
    let rss = servers.rss_kb();
    servers.finish(backing).await;
    let n = trace.patches.len();
    let out = json!({
        "name": format!("W9 replay {} ({label})", trace.name),
        "system": system.name(),
        "edits": n,
        "seconds": elapsed.as_secs_f64(),
        "ops_per_second": n as f64 / elapsed.as_secs_f64(),
        "ack_latency_us": latency_json(&mut lat),
        "server_cpu_percent": server_pct,
        "server_rss_kb": rss,
        "converged": text.is_some() || system == System::Echo,
        "final_chars": trace.end.chars().count(),
    });
    println!(
        "{:<40} {:>7} {:>8} edits {:>8.0} ops/s  p50 {:>7.1} µs  p99 {:>7.1} µs  {}",
        format!("W9 replay {} ({label})", trace.name),
        system.name(),
        n,
        n as f64 / elapsed.as_secs_f64(),
        out["ack_latency_us"]["p50"].as_f64().unwrap_or(0.0),
        out["ack_latency_us"]["p99"].as_f64().unwrap_or(0.0),
        if system == System::Echo {
            "(no text: floor)"
        } else {
            "final text = endContent"
        }
    );
    out
}

/// W7: `conns` connections spread over documents of `per_doc` each, all
/// joined and then idle; server RSS before and after.
pub async fn idle(system: System, conns: usize, per_doc: usize) -> Value {
    let backing = Backing::default();
    let servers = Servers::start(system, 1, &backing).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let docs: Vec<String> = (0..conns.div_ceil(per_doc))
        .map(|d| format!("i{}-{d}", &run[..8]))
        .collect();
    prepare(system, &servers.url(0, "", "setup"), &docs).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = servers.rss_kb();
    let start = Instant::now();
    let targets = (0..conns)
        .map(|i| {
            let doc = docs[i / per_doc].clone();
            (servers.url(0, &doc, &format!("u{i}")), i, doc)
        })
        .collect();
    let clients = join_many(system, targets, 128).await;
    let connect_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = servers.rss_kb();
    let hwm: u64 = servers
        .pids()
        .iter()
        .map(|&p| crate::sys::status_kb(p, "VmHWM:"))
        .sum();
    assert_eq!(clients.len(), conns, "not every connection joined");
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / conns as f64;
    for c in clients {
        drop(c);
    }
    servers.finish(&backing).await;
    let out = json!({
        "name": format!("W7 {conns} idle connections"),
        "system": system.name(),
        "connections": conns,
        "docs": docs.len(),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "rss_peak_kb": hwm,
        "bytes_per_connection": per_conn,
        "connect_seconds": connect_secs,
        "converged": true,
    });
    println!(
        "{:<40} {:>7} {:>6} conns on {:>5} docs: RSS {:>6} → {:>6} KiB = {:>6.1} KiB/conn (joined in {:.1} s)",
        format!("W7 {conns} idle connections"),
        system.name(),
        conns,
        docs.len(),
        before,
        after,
        per_conn / 1024.0,
        connect_secs
    );
    out
}
