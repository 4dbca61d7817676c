//! Redis's asynchronous replication window: how long after a master
//! acknowledges a write its replica holds it — what a failover at that
//! instant takes back. One connection writes a counter on the master, a
//! second polls the replica (`READONLY`) until it sees the value; run it
//! beside a load (bench/cluster.sh runs W6 meanwhile). The resolution is
//! one loopback round trip.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::stats::summary;

pub(crate) async fn window(master: String, replica: String, samples: usize) -> Vec<Value> {
    let open = |url: String| async move {
        redis::Client::open(url.as_str())
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to Redis")
    };
    let (mut m, mut r) = (open(master).await, open(replica).await);
    // A replica in a cluster serves reads only after READONLY.
    let _: Result<String, _> = redis::cmd("READONLY").query_async(&mut r).await;
    // A key this master owns (a cluster master answers MOVED for others).
    let mut key = String::new();
    for i in 0.. {
        let k = format!("tandem-bench-repl-{i}");
        let ok: Result<String, _> = redis::cmd("SET").arg(&k).arg("0").query_async(&mut m).await;
        if ok.is_ok() {
            key = k;
            break;
        }
    }
    let mut lat = Vec::with_capacity(samples);
    let mut max = 0.0f64;
    let start = Instant::now();
    for i in 1..=samples {
        let v = i.to_string();
        let _: String = redis::cmd("SET")
            .arg(&key)
            .arg(&v)
            .query_async(&mut m)
            .await
            .expect("SET on the master");
        let acked = Instant::now();
        loop {
            let got: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut r)
                .await
                .expect("GET on the replica");
            if got.as_deref() == Some(v.as_str()) {
                break;
            }
            assert!(
                acked.elapsed() < Duration::from_secs(5),
                "the replica stopped following"
            );
        }
        let us = acked.elapsed().as_secs_f64() * 1e6;
        max = max.max(us);
        lat.push(us);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query_async(&mut m).await;
    let mut v = summary(
        "replication window (master ack -> replica holds it)",
        samples,
        start.elapsed(),
        lat,
    );
    v["max_us"] = json!(max);
    println!("    max {max:.0} µs");
    vec![v]
}
