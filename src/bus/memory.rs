//! In-process sequencer, bus, undo stacks and metadata store: the embedded
//! default, one instance only.
//! Same contract as the Redis implementations, so the document task cannot
//! tell them apart. With a [`Journal`] (the store), a batch is written there
//! before it is appended and published, so an ack means durable.
//! Must not import: axum, sqlx, redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    Bus, BusError, BusEvent, CommitBatch, CommitReply, Journal, MetaStore, PresenceEntry, Range,
    Revocation, Revocations, Seed, SeedReply, Seeded, Sequencer, Subscription, UndoStacks,
};
use crate::doc::{ClientSeqs, History, Record, Retain};
use crate::protocol::AwarenessInfo;
use crate::undo::{Stack, StackPush, Stacks, UndoEntry};

/// Per-document broadcast channels.
pub struct MemoryBus {
    me: Weak<MemoryBus>,
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<BusEvent>>>>,
}

impl MemoryBus {
    pub fn new() -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            channels: Mutex::new(HashMap::new()),
        })
    }

    fn send(&self, doc: &str, event: BusEvent) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = channels.get(doc) {
            // No receivers is fine: nobody on this instance serves the doc.
            let _ = tx.send(Arc::new(event));
        }
    }
}

/// Drops the channel when its last subscriber goes.
struct Unsubscribe {
    bus: Weak<MemoryBus>,
    doc: String,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            let mut channels = bus.channels.lock().unwrap_or_else(|e| e.into_inner());
            if channels
                .get(&self.doc)
                .is_some_and(|tx| tx.receiver_count() <= 1)
            {
                channels.remove(&self.doc);
            }
        }
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, doc: &str, event: BusEvent) -> Result<(), BusError> {
        self.send(doc, event);
        Ok(())
    }

    async fn subscribe(&self, doc: &str) -> Result<Subscription, BusError> {
        let rx = {
            let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            channels
                .entry(doc.to_owned())
                .or_insert_with(|| broadcast::channel(super::SUBSCRIBER_CAPACITY).0)
                .subscribe()
        };
        let guard = Unsubscribe {
            bus: self.me.clone(),
            doc: doc.to_owned(),
        };
        Ok(Subscription::new(rx, Some(Box::new(guard))))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    // One instance: its document task already knows every connection.
    async fn presence_put(
        &self,
        _: &str,
        _: &[PresenceEntry],
        _: i64,
        _: i64,
    ) -> Result<(), BusError> {
        Ok(())
    }
    async fn presence_remove(&self, _: &str, _: &PresenceEntry) -> Result<(), BusError> {
        Ok(())
    }
    async fn presence_list(
        &self,
        _: &str,
        _: i64,
    ) -> Result<(Vec<PresenceEntry>, Vec<PresenceEntry>), BusError> {
        Ok((Vec::new(), Vec::new()))
    }
    // Likewise: the document task holds every client's awareness.
    async fn awareness_put(&self, _: &str, _: &AwarenessInfo, _: i64) -> Result<(), BusError> {
        Ok(())
    }
    async fn awareness_remove(&self, _: &str, _: &[String]) -> Result<(), BusError> {
        Ok(())
    }
    async fn awareness_list(&self, _: &str) -> Result<Vec<AwarenessInfo>, BusError> {
        Ok(Vec::new())
    }
}

/// The instance-wide channel's key among the documents' ('{' is in no
/// document id).
const REVOCATIONS: &str = "{revocations}";

/// One instance: revocations reach its own subscribers.
#[async_trait]
impl Revocations for MemoryBus {
    async fn publish_revocation(&self, revocation: &Revocation) -> Result<(), BusError> {
        self.send(REVOCATIONS, BusEvent::Revoked(revocation.clone()));
        Ok(())
    }

    async fn subscribe_revocations(&self) -> Result<Subscription, BusError> {
        self.subscribe(REVOCATIONS).await
    }
}

/// One instance: its document task holds the state, the store keeps it.
#[async_trait]
impl MetaStore for MemoryBus {
    async fn put(&self, _: &str, _: &str, _: &str) -> Result<(), BusError> {
        Ok(())
    }
    async fn all(&self, _: &str) -> Result<Vec<String>, BusError> {
        Ok(Vec::new())
    }
}

struct DocLog {
    log: History,
    clients: ClientSeqs,
    /// A batch is being written to the journal: another commit must wait
    /// (its records would claim the same versions).
    journaling: bool,
    epoch: String,
}

/// The in-process sequencer. Commits publish on the memory bus, as the Redis
/// commit script publishes on Redis.
pub struct MemorySequencer {
    docs: Mutex<HashMap<String, DocLog>>,
    /// Where a batch is made durable before it counts (embedded mode).
    journal: Option<Arc<dyn Journal>>,
    /// Undo/redo stacks by (document, user); kept while documents unload.
    stacks: Mutex<HashMap<(String, String), Stacks>>,
    bus: Arc<MemoryBus>,
    /// The op log's bounds, by count and bytes (`HISTORY_RETAIN`,
    /// `HISTORY_RETAIN_BYTES`: in one process the log and the document's
    /// history are the same records).
    retain: Retain,
    /// Clients kept in each document's dedupe table (`MAX_CLIENTS_PER_DOC`).
    max_clients: usize,
}

impl MemorySequencer {
    pub fn new(
        bus: Arc<MemoryBus>,
        retain: Retain,
        max_clients: usize,
        journal: Option<Arc<dyn Journal>>,
    ) -> Self {
        Self {
            docs: Mutex::new(HashMap::new()),
            journal,
            stacks: Mutex::new(HashMap::new()),
            bus,
            retain,
            max_clients,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DocLog>> {
        self.docs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stacks(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Stacks>> {
        self.stacks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn records_after(d: &DocLog, after: u64) -> Option<Vec<Arc<Record>>> {
    Some(d.log.after(after)?.cloned().collect())
}

/// The commit script's checks, in its order: per-record dedupe (a batch
/// with resends appends nothing), then the version check.
fn check(d: &DocLog, batch: &CommitBatch) -> Result<Option<CommitReply>, BusError> {
    let dups: Vec<(usize, u64)> = batch
        .records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let (seq, version) = d.clients.get(&r.client)?;
            // The exact version if the log still holds it, else the
            // client's latest (with one op in flight, that is the one).
            (r.seq <= seq).then(|| (i, d.log.version_of(&r.client, r.seq).unwrap_or(version)))
        })
        .collect();
    if !dups.is_empty() {
        return Ok(Some(CommitReply::Duplicates(dups)));
    }
    if batch.base != d.log.head() {
        let missed = records_after(d, batch.base).ok_or_else(|| {
            BusError::Unavailable(format!("base {} outside the op log", batch.base))
        })?;
        return Ok(Some(CommitReply::Stale { missed }));
    }
    Ok(None)
}

/// Clears a document's `journaling` mark when the journal write ends.
struct Unmark<'a> {
    seq: &'a MemorySequencer,
    doc: &'a str,
}

impl Drop for Unmark<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.seq.lock().get_mut(self.doc) {
            d.journaling = false;
        }
    }
}

#[async_trait]
impl Sequencer for MemorySequencer {
    async fn seed(&self, doc: &str, seed: &Seed) -> Result<SeedReply, BusError> {
        let mut docs = self.lock();
        // Created under the store's epoch (the caller's; a fresh one if it
        // knows none): in one process the memory log and the store are one
        // history.
        let d = docs.entry(doc.to_owned()).or_insert_with(|| DocLog {
            log: History::new(seed.version, self.retain),
            clients: ClientSeqs::new(self.max_clients),
            journaling: false,
            epoch: if seed.epoch.is_empty() {
                crate::epoch::fresh()
            } else {
                seed.epoch.clone()
            },
        });
        for c in &seed.clients {
            d.clients.record(&c.client, c.seq, c.version);
        }
        for r in &seed.records {
            if r.version == d.log.head() + 1 {
                d.log.push(r.clone());
            } else if let Some(mine) = d.log.get(r.version) {
                if (mine.client.as_str(), mine.seq) != (r.client.as_str(), r.seq) {
                    return Ok(SeedReply::Conflict);
                }
            }
        }
        Ok(SeedReply::Seeded(Seeded {
            head: d.log.head(),
            epoch: d.epoch.clone(),
        }))
    }

    async fn commit_batch(&self, doc: &str, batch: CommitBatch) -> Result<CommitReply, BusError> {
        {
            let mut docs = self.lock();
            let Some(d) = docs.get_mut(doc) else {
                return Ok(CommitReply::NotSeeded);
            };
            if d.journaling {
                return Err(BusError::Unavailable(
                    "another commit of this document is being journaled".into(),
                ));
            }
            if let Some(outcome) = check(d, &batch)? {
                return Ok(outcome);
            }
            if self.journal.is_some() {
                d.journaling = true;
            }
        }
        let undo: Vec<Option<StackPush>> = batch.records.iter().map(|r| r.undo.clone()).collect();
        let base = batch.base;
        let recs = batch.into_records();
        // Unmarked on every path (a cancelled future's included), after the
        // records are in the log; dropped after `docs` below.
        let _unmark = self.journal.as_ref().map(|_| Unmark { seq: self, doc });
        if let Some(journal) = &self.journal {
            journal.append(doc, &recs).await?;
        }
        let mut docs = self.lock();
        match docs.get_mut(doc) {
            Some(d) if d.log.head() == base => {
                for r in &recs {
                    d.clients.record(&r.client, r.seq, r.version);
                    d.log.push(r.clone());
                }
            }
            // Evicted or purged meanwhile: the records are durable, the next
            // load finds them in the journal.
            None => {}
            Some(_) => return Err(BusError::Corrupt("op log moved during a commit".into())),
        }
        drop(docs);
        let mut stacks = self.stacks();
        for (r, push) in recs.iter().zip(undo) {
            if let Some(push) = push {
                let key = (doc.to_owned(), r.user.clone());
                stacks.entry(key).or_default().push(push);
            }
        }
        drop(stacks);
        self.bus.send(doc, BusEvent::Committed(recs.clone()));
        Ok(CommitReply::Committed(recs))
    }

    fn journals(&self) -> bool {
        self.journal.is_some()
    }

    /// One process, one history: the epoch is not checked.
    async fn ops_since(&self, doc: &str, after: u64, _epoch: &str) -> Result<Range, BusError> {
        let docs = self.lock();
        let Some(d) = docs.get(doc) else {
            return Ok(Range::NotSeeded);
        };
        Ok(records_after(d, after).map_or(Range::Trimmed, Range::Records))
    }

    async fn last_seq(&self, doc: &str, client: &str) -> Result<Option<(u64, u64)>, BusError> {
        let docs = self.lock();
        Ok(docs.get(doc).and_then(|d| d.clients.get(client)))
    }

    async fn mark_durable(&self, _doc: &str, _version: u64) -> Result<(), BusError> {
        Ok(())
    }

    async fn evict(&self, doc: &str) {
        self.lock().remove(doc);
    }

    async fn purge(&self, doc: &str) -> Result<(), BusError> {
        self.evict(doc).await;
        self.stacks().retain(|(d, _), _| d != doc);
        Ok(())
    }
}

/// Kept while documents unload (only a purge drops them).
#[async_trait]
impl UndoStacks for MemorySequencer {
    async fn push(&self, doc: &str, user: &str, push: &StackPush) -> Result<(), BusError> {
        let key = (doc.to_owned(), user.to_owned());
        self.stacks().entry(key).or_default().push(push.clone());
        Ok(())
    }

    async fn pop(
        &self,
        doc: &str,
        user: &str,
        stack: Stack,
    ) -> Result<Option<UndoEntry>, BusError> {
        let key = (doc.to_owned(), user.to_owned());
        let mut all = self.stacks();
        let Some(s) = all.get_mut(&key) else {
            return Ok(None);
        };
        let top = s.pop(stack);
        if s.is_empty() {
            all.remove(&key);
        }
        Ok(top)
    }
}
