//! The persister: one task that writes snapshots, journal rows and client
//! seqs behind the live path, in batches, and retries until the store takes
//! them.
//!
//! Owns: merging per-document persistence jobs and flushing them. Document
//! tasks hand it work over a bounded channel and never wait on the store,
//! except to confirm a final flush before unloading.
//! Must not import: axum, redis, sqlx (it speaks to the `Store` trait).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::bus::Sequencer;
use crate::store::{DocPersist, Store};

enum Msg {
    Put(DocPersist),
    /// Flush everything pending now; answer whether it is durable.
    Flush(oneshot::Sender<bool>),
    /// Flush, answer, and stop.
    Shutdown(oneshot::Sender<bool>),
}

#[derive(Clone)]
pub struct Persister {
    tx: mpsc::Sender<Msg>,
}

/// How often pending work is flushed, at most.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

impl Persister {
    pub fn spawn(
        store: Arc<dyn Store>,
        sequencer: Arc<dyn Sequencer>,
        clock: fn() -> i64,
        tracker: &TaskTracker,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let task = Task {
            store,
            sequencer,
            clock,
            pending: HashMap::new(),
            failing: false,
        };
        tracker.spawn(task.run(rx));
        Self { tx }
    }

    /// Queue work; false if the queue is full (the caller retries later).
    pub fn offer(&self, job: DocPersist) -> bool {
        self.tx.try_send(Msg::Put(job)).is_ok()
    }

    /// Queue work, waiting for room.
    pub async fn put(&self, job: DocPersist) -> bool {
        self.tx.send(Msg::Put(job)).await.is_ok()
    }

    /// Flush now; true once everything queued before is durable.
    pub async fn flush(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Flush(tx)).await.is_ok() && rx.await.unwrap_or(false)
    }

    /// Final flush, then the task exits.
    pub async fn shutdown(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Shutdown(tx)).await.is_ok() && rx.await.unwrap_or(false)
    }
}

struct Task {
    store: Arc<dyn Store>,
    sequencer: Arc<dyn Sequencer>,
    clock: fn() -> i64,
    pending: HashMap<String, DocPersist>,
    /// The last flush failed (logged once until it succeeds again).
    failing: bool,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Put(job)) => self.merge(job),
                    Some(Msg::Flush(reply)) => {
                        let ok = self.flush().await;
                        let _ = reply.send(ok);
                    }
                    Some(Msg::Shutdown(reply)) => {
                        // Drain what was queued before the shutdown request.
                        while let Ok(Msg::Put(job)) = rx.try_recv() {
                            self.merge(job);
                        }
                        let mut ok = self.flush().await;
                        for _ in 0..20 {
                            if ok {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            ok = self.flush().await;
                        }
                        let _ = reply.send(ok);
                        return;
                    }
                    None => {
                        self.flush().await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    self.flush().await;
                }
            }
        }
    }

    fn merge(&mut self, job: DocPersist) {
        match self.pending.get_mut(&job.doc) {
            None => {
                self.pending.insert(job.doc.clone(), job);
            }
            Some(p) => {
                if job.version > p.version {
                    p.version = job.version;
                    p.content = job.content;
                }
                let last = p.journal.last().map_or(0, |r| r.version);
                p.journal
                    .extend(job.journal.into_iter().filter(|r| r.version > last));
                for c in job.clients {
                    match p.clients.iter_mut().find(|x| x.client == c.client) {
                        Some(x) if x.seq < c.seq => *x = c,
                        Some(_) => {}
                        None => p.clients.push(c),
                    }
                }
            }
        }
    }

    /// Write everything pending in one batch. On failure the work stays
    /// pending and is retried on the next tick.
    async fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let batch: Vec<DocPersist> = self.pending.values().cloned().collect();
        let started = std::time::Instant::now();
        metrics::gauge!("tandem_persist_pending_docs").set(batch.len() as f64);
        match self.store.persist(&batch, (self.clock)()).await {
            Ok(()) => {
                let rows: usize = batch.iter().map(|d| d.journal.len()).sum();
                metrics::histogram!("tandem_snapshot_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("tandem_snapshots_written_total").increment(batch.len() as u64);
                metrics::counter!("tandem_journal_rows_written_total").increment(rows as u64);
                metrics::gauge!("tandem_persist_pending_docs").set(0.0);
                if self.failing {
                    info!(docs = batch.len(), "persistence caught up");
                    self.failing = false;
                }
                debug!(
                    docs = batch.len(),
                    rows,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "persisted"
                );
                // flush holds &mut self, so nothing merged in meanwhile.
                self.pending.clear();
                for d in &batch {
                    if let Err(e) = self.sequencer.mark_durable(&d.doc, d.version).await {
                        warn!(doc = %d.doc, error = %e, "could not record durable version");
                    }
                }
                true
            }
            Err(e) => {
                metrics::counter!("tandem_persist_errors_total").increment(1);
                if !self.failing {
                    warn!(docs = batch.len(), error = %e, "persisting failed; live editing continues, will retry");
                }
                self.failing = true;
                false
            }
        }
    }
}
