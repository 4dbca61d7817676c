//! The persister: one task that writes snapshots, journal rows and client
//! seqs behind the live path, in batches, and retries until the store takes
//! them. A document whose rows the store refuses is written alone and
//! backs off alone: it never holds the others back. A store that refuses
//! everything marks persistence failing in [`StorageHealth`].
//!
//! Owns: merging per-document persistence jobs and flushing them. Document
//! tasks hand it work over a bounded channel and never wait on the store,
//! except to confirm a final flush before unloading.
//! Must not import: axum, redis, sqlx (it speaks to the `Store` trait).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::bus::Sequencer;
use crate::health::{Fault, Part, StorageHealth};
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
        health: Arc<StorageHealth>,
        clock: fn() -> i64,
        tracker: &TaskTracker,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let task = Task {
            store,
            sequencer,
            health,
            clock,
            pending: HashMap::new(),
            backoff: HashMap::new(),
            store_backoff: None,
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
    health: Arc<StorageHealth>,
    clock: fn() -> i64,
    pending: HashMap<String, DocPersist>,
    /// Documents whose own writes fail (the store takes the others'): each
    /// waits out its back-off before it is tried again, alone.
    backoff: HashMap<String, Backoff>,
    /// The store as a whole refuses writes: wait this out before the next
    /// round (doubling up to `MAX_BACKOFF`).
    store_backoff: Option<Backoff>,
}

/// A back-off: the failures in a row and when to try again.
#[derive(Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
}

impl Backoff {
    fn after(previous: Option<Backoff>, now: Instant) -> Self {
        let failures = previous.map_or(1, |b| b.failures.saturating_add(1));
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << failures.min(8).saturating_sub(1))
            .min(MAX_BACKOFF);
        Self {
            failures,
            until: now + delay,
        }
    }
}

/// The first wait after a failed write, doubled on each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Msg::Put(job)) => self.merge(job),
                    Some(Msg::Flush(reply)) => {
                        let ok = self.flush(true).await;
                        let _ = reply.send(ok);
                    }
                    Some(Msg::Shutdown(reply)) => {
                        // Drain what was queued before the shutdown request.
                        while let Ok(Msg::Put(job)) = rx.try_recv() {
                            self.merge(job);
                        }
                        let mut ok = self.flush(true).await;
                        for _ in 0..20 {
                            if ok {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            ok = self.flush(true).await;
                        }
                        if !ok {
                            warn!(
                                docs = self.pending.len(),
                                "shutting down with changes the store did not take"
                            );
                        }
                        let _ = reply.send(ok);
                        return;
                    }
                    None => {
                        self.flush(true).await;
                        return;
                    }
                },
                _ = tick.tick() => {
                    self.flush(false).await;
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

    /// Write what is pending: everything not backing off in one batch
    /// (`now`: everything, back-offs ignored, for a flush someone waits
    /// for). A batch the store refuses for one document's sake is written
    /// again one document at a time, so the others are saved and only the
    /// refused one backs off. True once nothing is pending.
    async fn flush(&mut self, now: bool) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let at = Instant::now();
        if !now && self.store_backoff.is_some_and(|b| at < b.until) {
            return false;
        }
        let batch: Vec<DocPersist> = self
            .pending
            .values()
            .filter(|d| now || self.backoff.get(&d.doc).is_none_or(|b| at >= b.until))
            .cloned()
            .collect();
        if batch.is_empty() {
            return false;
        }
        metrics::gauge!("tandem_persist_pending_docs").set(self.pending.len() as f64);
        let e = match self.write(&batch).await {
            Ok(()) => {
                self.store_backoff = None;
                self.health.ok(Part::Persist);
                return self.pending.is_empty();
            }
            Err(e) => e,
        };
        metrics::counter!("tandem_persist_errors_total").increment(1);
        let error = e.to_string();
        let fault = Fault::classify(&error);
        if !matches!(fault, Fault::Refused | Fault::Other) {
            // The store itself (a full disk, no connection): all wait.
            self.store_backoff = Some(Backoff::after(self.store_backoff, at));
            self.health
                .fail_as(Part::Persist, fault, &error, (self.clock)());
            return false;
        }
        if let [one] = batch.as_slice() {
            self.doc_failed(&one.doc, &error, at);
            return false;
        }
        // One document's rows may be the trouble: the others must not wait
        // for it.
        debug!(docs = batch.len(), "persisting a batch failed; one by one");
        let mut saved = 0;
        for d in batch {
            match self.write(std::slice::from_ref(&d)).await {
                Ok(()) => saved += 1,
                Err(e) => self.doc_failed(&d.doc, &e.to_string(), at),
            }
        }
        if saved > 0 {
            self.store_backoff = None;
            self.health.ok(Part::Persist);
        }
        self.pending.is_empty()
    }

    /// Write `batch` in one transaction; on success it leaves `pending`
    /// (flush holds &mut self, so nothing merged in meanwhile) and the
    /// sequencer learns its versions are durable.
    async fn write(&mut self, batch: &[DocPersist]) -> Result<(), crate::store::StoreError> {
        let started = Instant::now();
        self.store.persist(batch, (self.clock)()).await?;
        let rows: usize = batch.iter().map(|d| d.journal.len()).sum();
        metrics::histogram!("tandem_snapshot_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("tandem_snapshots_written_total").increment(batch.len() as u64);
        metrics::counter!("tandem_journal_rows_written_total").increment(rows as u64);
        debug!(
            docs = batch.len(),
            rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "persisted"
        );
        for d in batch {
            self.pending.remove(&d.doc);
            if self.backoff.remove(&d.doc).is_some() {
                info!(doc = %d.doc, "document persisted again");
            }
        }
        metrics::gauge!("tandem_persist_pending_docs").set(self.pending.len() as f64);
        metrics::gauge!("tandem_persist_failing_docs").set(self.backoff.len() as f64);
        for d in batch {
            if let Err(e) = self.sequencer.mark_durable(&d.doc, d.version).await {
                warn!(doc = %d.doc, error = %e, "could not record durable version");
            }
        }
        Ok(())
    }

    /// The store refused `doc`'s rows alone: it waits out a back-off, is
    /// counted and named in the log (on its first failure and every
    /// eighth after), and is tried again.
    fn doc_failed(&mut self, doc: &str, error: &str, at: Instant) {
        let b = Backoff::after(self.backoff.get(doc).copied(), at);
        metrics::counter!("tandem_persist_doc_failures_total").increment(1);
        if b.failures % 8 == 1 {
            warn!(
                doc,
                failures = b.failures,
                error,
                "persisting one document failed; the others go on, it is retried with back-off"
            );
        }
        self.backoff.insert(doc.to_owned(), b);
        metrics::gauge!("tandem_persist_failing_docs").set(self.backoff.len() as f64);
    }
}
