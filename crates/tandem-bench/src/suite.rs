//! Profiles: `smoke` (seconds; CI runs it and asserts convergence and that
//! figures came out, never timing) and `full` (the published figures).
//! Both write `results.json` and the SVG plots into `--out`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::load::{self, LoadSpec};
use crate::replay;
use crate::servers::{Backing, Balancer, System};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    Smoke,
    Full,
}

struct Sizes {
    room: Vec<usize>,
    seconds: Duration,
    warmup: Duration,
    rate: f64,
    many_docs: usize,
    idle_conns: usize,
    persist_docs: usize,
    replay_limit: Option<usize>,
    commit_seconds: u64,
    script_ops: usize,
}

fn sizes(p: Profile) -> Sizes {
    match p {
        Profile::Smoke => Sizes {
            room: vec![4],
            seconds: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            rate: 20.0,
            many_docs: 20,
            idle_conns: 200,
            persist_docs: 200,
            replay_limit: Some(1_500),
            commit_seconds: 1,
            script_ops: 2_000,
        },
        Profile::Full => Sizes {
            room: vec![50, 200],
            seconds: Duration::from_secs(20),
            warmup: Duration::from_secs(3),
            rate: 5.0,
            many_docs: 1_000,
            idle_conns: 10_000,
            persist_docs: 10_000,
            replay_limit: None,
            commit_seconds: 5,
            script_ops: 20_000,
        },
    }
}

/// Runs the profile; `save` is called with the results so far after each
/// workload (a long run that fails late keeps what it measured).
pub async fn run(
    profile: Profile,
    redis: String,
    database_url: Option<String>,
    only: &[String],
    save: impl Fn(&[Value]),
) -> Vec<Value> {
    let on = |w: &str| only.is_empty() || only.iter().any(|o| o.eq_ignore_ascii_case(w));
    let z = sizes(profile);
    let mut out = Vec::new();
    let none = Backing::default();
    let on_redis = Backing {
        redis: Some(redis.clone()),
        database_url: None,
    };
    let spec = |name: String, system, instances, docs, clients, backing: &Backing| LoadSpec {
        name,
        system,
        instances,
        docs,
        clients_per_doc: clients,
        rate: z.rate,
        warmup: z.warmup,
        seconds: z.seconds,
        backing: backing.clone(),
        balancer: Balancer::None,
    };

    // W3: hot room, one instance; Tandem embedded against both baselines.
    if on("W3") {
        for &n in &z.room {
            for system in [System::Tandem, System::Echo, System::Sharedb] {
                let s = spec(format!("W3 hot room N={n}"), system, 1, 1, n, &none);
                out.push(load::run(&s).await);
            }
        }
    }
    save(&out);
    // W5: cross-instance, on Redis: the same room on 1 and on 2 instances.
    // ShareDB needs a shared database for 2 instances (PostgreSQL).
    if on("W5") {
        for &n in &z.room {
            for instances in [1, 2] {
                let s = spec(
                    format!("W5 N={n} on {instances} inst"),
                    System::Tandem,
                    instances,
                    1,
                    n,
                    &on_redis,
                );
                out.push(load::run(&s).await);
            }
            if let Some(db) = &database_url {
                let shared = Backing {
                    redis: Some(redis.clone()),
                    database_url: Some(db.clone()),
                };
                for instances in [1, 2] {
                    let s = spec(
                        format!("W5 N={n} on {instances} inst"),
                        System::Sharedb,
                        instances,
                        1,
                        n,
                        &shared,
                    );
                    out.push(load::run(&s).await);
                }
            }
        }
    }
    save(&out);
    // W4: many documents × 3 clients × 2 ops/s across 2 instances.
    if on("W4") {
        let mut w4 = spec(
            format!("W4 {} docs x 3", z.many_docs),
            System::Tandem,
            2,
            z.many_docs,
            3,
            &on_redis,
        );
        w4.rate = 2.0 * z.rate / 5.0;
        out.push(load::run(&w4).await);
    }

    save(&out);
    // W6: commit ceiling (server in this process), and the script alone.
    if on("W6") {
        out.extend(crate::inproc::commits(None, 8, 64, z.commit_seconds).await);
        out.extend(crate::inproc::commits(Some(redis.clone()), 8, 64, z.commit_seconds).await);
        out.extend(crate::direct::commit_script(redis.clone(), z.script_ops, 64).await);
    }

    save(&out);
    // W7: idle connections; Tandem and the floor.
    if on("W7") {
        for system in [System::Tandem, System::Echo] {
            out.push(replay::idle(system, z.idle_conns, 10).await);
        }
    }

    save(&out);
    // W8: persistence of many dirty documents during W3 (PostgreSQL).
    if on("W8") {
        if let Some(db) = &database_url {
            let on_pg = Backing {
                redis: None,
                database_url: Some(db.clone()),
            };
            let n = z.room[0];
            let base = spec(
                format!("W8 N={n}, PostgreSQL, alone"),
                System::Tandem,
                1,
                1,
                n,
                &on_pg,
            );
            out.push(load::run(&base).await);
            let mut with = base.clone();
            with.name = format!("W8 N={n}, PostgreSQL, during flushes");
            let stop = tokio_util::sync::CancellationToken::new();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let flusher = tokio::spawn(crate::direct::persist(
                Some(db.clone()),
                z.persist_docs,
                10,
                usize::MAX,
                Some(ready_tx),
                Some(stop.clone()),
            ));
            let _ = ready_rx.await;
            let mut r = load::run(&with).await;
            stop.cancel();
            let flush = flusher.await.expect("flusher").remove(0);
            r["flush"] = flush.clone();
            let (p0, p1) = (
                out.last().unwrap()["latency_us"]["p99"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                r["latency_us"]["p99"].as_f64().unwrap_or(f64::NAN),
            );
            r["p99_change_percent"] = json!(100.0 * (p1 - p0) / p0);
            println!(
                "    W8: p99 {:.2} ms alone, {:.2} ms during flushes ({:+.0} %)",
                p0 / 1e3,
                p1 / 1e3,
                100.0 * (p1 - p0) / p0
            );
            out.push(r);
        }
    }

    save(&out);
    // W9: full-stack trace replay.
    if on("W9") {
        let path = tandem_testkit::repo_root().join("tests/data/automerge-paper.json.gz");
        let trace = replay::load_trace(&path, z.replay_limit);
        for (system, backing, label) in [
            (System::Tandem, &none, "embedded"),
            (System::Tandem, &on_redis, "Redis"),
            (System::Sharedb, &none, "in-memory"),
            (System::Echo, &none, "floor"),
        ] {
            out.push(replay::replay(system, backing, label, &trace).await);
            save(&out);
        }
    }
    out
}

/// Whether a result named `name` belongs to one of the `only` workloads.
pub fn selected(only: &[String], name: &str) -> bool {
    only.iter().any(|o| {
        let o = o.to_ascii_uppercase();
        name.starts_with(&format!("{o} "))
            || (o == "W6" && name.starts_with("commit script"))
            || (o == "W8" && name.starts_with("persist"))
    })
}
