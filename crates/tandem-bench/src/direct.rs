//! The backends alone, without sockets: the Redis commit script
//! (sequential calls on one document, concurrent callers on many) and one
//! persistence round of many dirty documents (W8, store part).
//!
//! Must not import: axum or the web layer (no sockets here).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem::bus::redis::{RedisBackend, RedisSettings};
use tandem::bus::{CommitOutcome, CommitRequest, Seed, Sequencer};
use tandem::ot::{splice, Operation};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::stats::summary;
use crate::tempfile_dir;

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
        ..Default::default()
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
                            trace: None,
                        })
                    })
                    .collect();
                DocPersist {
                    max_clients: 10_000,
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
