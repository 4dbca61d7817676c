//! Durability under SIGKILL: an embedded server (default settings,
//! snapshots every `SNAPSHOT_INTERVAL_MS` = 2 s) is killed mid-typing again
//! and again while typists (the test kit's exactly-once token typists) type
//! unique tokens; after each restart they resume. Counted at the end: edits
//! acknowledged, acknowledged tokens missing from the text (lost), tokens
//! present more than once (doubled).
//!
//! Must not import: the server's internals (it drives the binary).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_testkit::typist::{run_typists, tokens_in};
use tandem_testkit::{free_port, TestServer};

use crate::servers::tandem_bin;

pub(crate) async fn sigkill(kills: usize, typists: usize, every: Duration) -> Vec<Value> {
    let bin = tandem_bin();
    let dir =
        std::env::temp_dir().join(format!("tandem-sigkill-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port().to_string();
    // The production snapshot interval, not the test kit's 200 ms.
    let env = [("PORT", port.as_str()), ("SNAPSHOT_INTERVAL_MS", "2000")];
    let mut server = TestServer::start_in(&bin, &dir, &env);
    let addr = server.addr.clone();
    let doc = "sigkill";
    let start = Instant::now();
    let nemesis = async {
        for _ in 0..kills {
            tokio::time::sleep(every).await;
            server.kill();
            server = TestServer::start_in(&bin, &dir, &env);
        }
    };
    let typed = run_typists(vec![addr], doc, typists, every, nemesis).await;
    let elapsed = start.elapsed();
    let (content, version) = server.document(doc).await;
    let counts = tokens_in(&content);
    let acked: Vec<&String> = typed.iter().flat_map(|t| t.acked.iter()).collect();
    let lost = acked.iter().filter(|t| !counts.contains_key(**t)).count();
    let doubled = counts.values().filter(|&&n| n > 1).count();
    let created: usize = typed.iter().map(|t| t.created.len()).sum();
    let reconnects: usize = typed.iter().map(|t| t.reconnects).sum();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "  {kills} kills, {} acknowledged edits: {lost} lost, {doubled} doubled \
         ({created} typed, {reconnects} reconnects, final version {version})",
        acked.len()
    );
    vec![json!({
        "name": "embedded SIGKILL mid-typing",
        "kills": kills,
        "typists": typists,
        "seconds": elapsed.as_secs_f64(),
        "acked": acked.len(),
        "typed": created,
        "lost_acked": lost,
        "doubled": doubled,
        "lost_per_kill": lost as f64 / kills.max(1) as f64,
        "final_version": version,
    })]
}
