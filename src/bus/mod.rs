//! The hub's outside dependencies, as traits: the [`Sequencer`] (atomic
//! dedupe + version check + append of a batch of ops to the op log, with
//! their undo steps), the [`Journal`] the embedded sequencer makes batches
//! durable in before they count, the [`Bus`] (fan-out of
//! committed ops, presence, cursors and awareness to every instance), [`UndoStacks`]
//! (per-user undo/redo stacks), [`MetaStore`] (each instance's metadata
//! state), [`Revocations`] (token revocations on one instance-wide
//! channel) and [`Tickets`] (single-use WebSocket tickets every instance
//! can redeem), bundled as [`Backends`] with the [`SharedRates`] of a
//! clustered deployment.
//!
//! Owns: the traits, their event and outcome types, and the in-process
//! implementations in `memory.rs` (the embedded default). The Redis
//! implementations live in `redis/`; only this module may touch Redis.
//! Must not import: axum, sqlx, the hub, the store.

/// Events buffered per document subscription before the subscriber lags
/// (and then catches up from the log). Allocated up front for every loaded
/// document: 4096 made an idle document cost 128 KiB.
pub(crate) const SUBSCRIBER_CAPACITY: usize = 1024;

pub mod journal;
pub mod memory;
pub mod redis;
pub mod tickets;

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::doc::Record;
use crate::ot::Operation;
use crate::protocol::{AwarenessInfo, CursorInfo, Presence};
use crate::undo::{Stack, StackPush, UndoEntry};

/// Real failures talking to the sequencer or bus backend (its answers,
/// however unwelcome, are replies: [`CommitReply`], [`Range`],
/// [`SeedReply`]). The text is for logs.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend is set up in a way that would lose data (refused at
    /// start).
    #[error("refused configuration: {0}")]
    Config(String),
    /// The backend answered something that cannot be read (a malformed
    /// reply or record).
    #[error("corrupt reply or record: {0}")]
    Corrupt(String),
}

pub use crate::doc::ClientSeq;

/// State for a document the sequencer may not hold: the version the log
/// starts after, the records from there (contiguous), client seqs, and the
/// history identity the caller knows (see `crate::epoch`).
/// Seeding never overwrites: it creates the document if absent and appends
/// records that continue its head.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    pub version: u64,
    pub records: Vec<Arc<Record>>,
    pub clients: Vec<ClientSeq>,
    pub epoch: String,
    /// The caller held the document live (a re-seed from memory, not a load
    /// from the store): a document this creates settles, so that every
    /// other live copy of the same history can extend it first.
    pub live: bool,
}

/// What the sequencer holds after a seed: its head and its epoch. The
/// memory sequencer creates a document under the seed's epoch (the store's);
/// Redis creates one under a fresh epoch, since it cannot tell whether the
/// store holds everything it once had; a document it already holds keeps
/// its epoch either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seeded {
    pub head: u64,
    pub epoch: String,
}

pub use crate::commit::{
    CommitBatch, CommitRecord, CommitReply, LeaseAction, LeaseReply, MAX_BATCH_RECORDS,
};

/// What the sequencer answered a seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedReply {
    Seeded(Seeded),
    /// The seed holds a different op at a version the sequencer also has:
    /// another instance re-seeded and moved on. Reload from the sequencer.
    Conflict,
}

/// What the sequencer answered a read of its log.
#[derive(Clone, Debug)]
pub enum Range {
    /// Every record after the version asked for, oldest first, to the head.
    Records(Vec<Arc<Record>>),
    /// The log no longer reaches back that far.
    Trimmed,
    /// The sequencer does not know the document, holds another history, or
    /// less than the caller: seed it again from what the caller knows.
    NotSeeded,
}

/// One op, already rebased onto `base`, to commit as version `base + 1`
/// (a batch of one; tools and tests).
#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub base: u64,
    pub op: Operation,
    pub user: String,
    pub client: String,
    pub seq: u64,
    pub time: i64,
}

#[derive(Debug)]
pub enum CommitOutcome {
    /// Appended (and published) as this record.
    Committed(Arc<Record>),
    /// `(client, seq)` was committed before, producing `version`.
    Duplicate { version: u64 },
    /// `base` is behind the head: these are the records after `base`.
    Stale { missed: Vec<Arc<Record>> },
    /// The sequencer does not know the document: seed it first.
    NotSeeded,
    /// The sequencer holds commits for this long after a re-seed.
    Settling(std::time::Duration),
    /// Another instance holds the commit lease for this long.
    Fenced(std::time::Duration),
}

/// Where the embedded sequencer makes a batch durable before it counts as
/// committed (the store's op journal): an ack then means the record is on
/// disk, and a killed process loses nothing it acknowledged.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Append `records` (contiguous new versions) in one transaction. A
    /// version the journal already holds is an error, never overwritten.
    async fn append(&self, doc: &str, records: &[Arc<Record>]) -> Result<(), BusError>;
    /// Several documents' batches in one transaction (all or none).
    async fn append_many(&self, batches: &[(&str, &[Arc<Record>])]) -> Result<(), BusError> {
        for (doc, records) in batches {
            self.append(doc, records).await?;
        }
        Ok(())
    }
}

/// Atomic ordering of one document's ops. Every instance calls the same
/// sequencer, so there is one history.
#[async_trait]
pub trait Sequencer: Send + Sync + 'static {
    /// Make the document known at `seed` unless it already is; returns the
    /// head version and the epoch the sequencer holds.
    async fn seed(&self, doc: &str, seed: &Seed) -> Result<SeedReply, BusError>;
    /// In one atomic step: dedupe every record by `(client, seq)`, check
    /// `base` is the head, append them all, keep their undo steps, publish
    /// them as one event.
    async fn commit_batch(&self, doc: &str, batch: CommitBatch) -> Result<CommitReply, BusError>;
    /// Whether a committed batch is already in the store's journal (the
    /// embedded sequencer), so the persister need not write journal rows.
    fn journals(&self) -> bool {
        false
    }
    /// The sequencer takes a write now (readiness while commits fail): a
    /// small key of this instance's, written and expiring. A sequencer
    /// whose writes are the store's journal (embedded) has nothing of its
    /// own to try: the hub probes the store.
    async fn probe_write(&self, _instance: &str) -> Result<(), BusError> {
        Ok(())
    }
    /// One op as a batch of one.
    async fn commit(&self, doc: &str, req: CommitRequest) -> Result<CommitOutcome, BusError> {
        let batch = CommitBatch {
            base: req.base,
            epoch: String::new(),
            token: String::new(),
            records: vec![CommitRecord {
                op: req.op,
                user: req.user,
                client: req.client,
                seq: req.seq,
                time: req.time,
                undo: None,
                trace: None,
            }],
        };
        Ok(match self.commit_batch(doc, batch).await? {
            CommitReply::Committed(mut recs) => CommitOutcome::Committed(
                recs.pop()
                    .ok_or_else(|| BusError::Corrupt("empty commit".into()))?,
            ),
            CommitReply::Duplicates(d) => CommitOutcome::Duplicate {
                version: d.first().map_or(0, |&(_, v)| v),
            },
            CommitReply::Stale { missed } => CommitOutcome::Stale { missed },
            CommitReply::NotSeeded => CommitOutcome::NotSeeded,
            CommitReply::Settling(d) => CommitOutcome::Settling(d),
            CommitReply::Fenced { left, .. } => CommitOutcome::Fenced(left),
        })
    }
    /// Take, extend or give up the document's commit lease (the token a
    /// batch carries to commit). A sequencer without leases (the embedded
    /// one: one instance) grants every request.
    async fn lease(
        &self,
        _doc: &str,
        action: LeaseAction,
        _ttl: std::time::Duration,
    ) -> Result<LeaseReply, BusError> {
        Ok(match action {
            LeaseAction::Acquire { instance, nonce } => LeaseReply::Granted {
                token: format!("1:{instance}:{nonce}"),
            },
            LeaseAction::Renew { .. } => LeaseReply::Renewed,
            LeaseAction::Release { .. } => LeaseReply::Released,
        })
    }
    /// Records with version > `after`, oldest first, up to the head.
    /// `epoch` is the history `after` belongs to: a sequencer holding
    /// another answers [`Range::NotSeeded`] (re-seed first; empty: not
    /// checked).
    async fn ops_since(&self, doc: &str, after: u64, epoch: &str) -> Result<Range, BusError>;
    /// Highest committed seq of `client` and the version it produced.
    async fn last_seq(&self, doc: &str, client: &str) -> Result<Option<(u64, u64)>, BusError>;
    /// The document's last durable snapshot version (the log may be trimmed
    /// below it). The memory sequencer ignores it.
    async fn mark_durable(&self, doc: &str, version: u64) -> Result<(), BusError>;
    /// This instance no longer serves the document (memory: free it).
    async fn evict(&self, doc: &str);
    /// The document was deleted: drop everything the sequencer holds for it.
    async fn purge(&self, doc: &str) -> Result<(), BusError>;
}

/// What travels on a document's channel.
#[derive(Clone, Debug)]
pub enum BusEvent {
    /// Records one commit round appended, in version order.
    Committed(Vec<Arc<Record>>),
    Joined {
        instance: String,
        presence: Presence,
    },
    Left {
        instance: String,
        presence: Presence,
    },
    Cursor {
        instance: String,
        cursor: CursorInfo,
    },
    /// A client's awareness (or presence state) changed.
    Awareness {
        instance: String,
        info: AwarenessInfo,
    },
    /// The channel was down (reconnect): events may be missing. Refill.
    Resync,
    /// Edits instance `from` forwards to the holder of the commit lease
    /// `to` (a token): only that instance takes them.
    Forward {
        from: String,
        to: String,
        edits: Vec<crate::pipeline::Forwarded>,
    },
    /// The document's commit lease was granted (`token`) or released
    /// (empty).
    Leader { token: String },
    /// The lease holder's verdicts on forwarded edits it did not commit,
    /// for instance `to`: `(client, seq, verdict)`.
    Verdicts {
        to: String,
        items: Vec<(String, u64, crate::pipeline::Verdict)>,
    },
    /// Access to the document changed (from the REST API, any instance).
    Access(AccessChange),
    /// An instance's metadata state after a change (merge it).
    Meta {
        instance: String,
        state: Box<crate::meta::DocMeta>,
    },
    /// Tokens were revoked (only on the instance-wide channel of
    /// [`Revocations`], never on a document's).
    Revoked(Revocation),
}

/// Tokens that are no longer accepted: sockets they opened are closed and
/// cached checks of them dropped, on every instance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "revoke", rename_all = "snake_case")]
pub enum Revocation {
    /// One token, by its `jti` (logout).
    Token { user: String, jti: String },
    /// Every token of `user` issued before `before_ms` (password change;
    /// account deletion uses `i64::MAX`: all of them).
    User { user: String, before_ms: i64 },
}

impl Revocation {
    pub fn user(&self) -> &str {
        match self {
            Revocation::Token { user, .. } | Revocation::User { user, .. } => user,
        }
    }

    /// Whether a token of `user` with `jti`, issued at `issued_ms`, is one
    /// of the revoked.
    pub fn covers(&self, user: &str, jti: Option<&str>, issued_ms: i64) -> bool {
        match self {
            Revocation::Token { user: u, jti: j } => u == user && jti == Some(j.as_str()),
            Revocation::User { user: u, before_ms } => u == user && issued_ms < *before_ms,
        }
    }
}

/// A change of who may use a document.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AccessChange {
    /// `user`'s role is now `role`, or revoked (`None`).
    Member {
        user: String,
        role: Option<crate::protocol::Role>,
    },
    /// The document was deleted.
    Deleted,
}

/// What a subscriber receives.
#[derive(Debug)]
pub enum BusRecv {
    Event(Arc<BusEvent>),
    /// Events were dropped (slow subscriber or reconnect): refill from the log.
    Lagged,
    Closed,
}

/// A live subscription to one document's channel; unsubscribes on drop.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<BusEvent>>,
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

impl Subscription {
    pub fn new(
        rx: broadcast::Receiver<Arc<BusEvent>>,
        guard: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        Self { rx, _guard: guard }
    }

    pub async fn recv(&mut self) -> BusRecv {
        match self.rx.recv().await {
            Ok(ev) => BusRecv::Event(ev),
            Err(broadcast::error::RecvError::Lagged(_)) => BusRecv::Lagged,
            Err(broadcast::error::RecvError::Closed) => BusRecv::Closed,
        }
    }
}

/// A presence entry as seen across instances.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PresenceEntry {
    pub instance: String,
    #[serde(flatten)]
    pub presence: Presence,
}

/// Fan-out to every instance serving a document, and shared presence.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, doc: &str, event: BusEvent) -> Result<(), BusError>;
    async fn subscribe(&self, doc: &str) -> Result<Subscription, BusError>;
    /// The backend answers (readiness).
    async fn ping(&self) -> Result<(), BusError>;
    /// Add or refresh entries, each valid for `ttl_ms` from `now_ms`.
    async fn presence_put(
        &self,
        doc: &str,
        entries: &[PresenceEntry],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(), BusError>;
    async fn presence_remove(&self, doc: &str, entry: &PresenceEntry) -> Result<(), BusError>;
    /// Live entries, and the expired ones this call removed (exactly one
    /// caller gets each expired entry, so it alone announces the leave).
    async fn presence_list(
        &self,
        doc: &str,
        now_ms: i64,
    ) -> Result<(Vec<PresenceEntry>, Vec<PresenceEntry>), BusError>;
    /// Keep a client's awareness where instances loading the document find
    /// it (replacing the client's previous one), for `ttl_ms` at least.
    async fn awareness_put(
        &self,
        doc: &str,
        info: &AwarenessInfo,
        ttl_ms: i64,
    ) -> Result<(), BusError>;
    /// Forget these clients' awareness (they left, or were reaped).
    async fn awareness_remove(&self, doc: &str, clients: &[String]) -> Result<(), BusError>;
    /// Every kept awareness of the document (callers keep those of clients
    /// present).
    async fn awareness_list(&self, doc: &str) -> Result<Vec<AwarenessInfo>, BusError>;
}

/// Token revocations, told to every instance on one instance-wide channel
/// (a document's channel reaches only the instances serving it).
#[async_trait]
pub trait Revocations: Send + Sync + 'static {
    /// Tell every instance (this one included).
    async fn publish_revocation(&self, revocation: &Revocation) -> Result<(), BusError>;
    /// Receive [`BusEvent::Revoked`] from every instance, and
    /// [`BusEvent::Resync`] (or [`BusRecv::Lagged`]) when some may have been
    /// missed. Returns once the subscription is live.
    async fn subscribe_revocations(&self) -> Result<Subscription, BusError>;
}

/// Each user's undo and redo stacks per document, shared by every instance
/// (so undo works after a reconnect elsewhere).
#[async_trait]
pub trait UndoStacks: Send + Sync + 'static {
    /// Push (or compare-and-replace the top), bounded to [`crate::undo::STACK_LIMIT`].
    async fn push(&self, doc: &str, user: &str, push: &StackPush) -> Result<(), BusError>;
    /// Take the top of a stack.
    async fn pop(&self, doc: &str, user: &str, stack: Stack)
        -> Result<Option<UndoEntry>, BusError>;
}

/// Each instance's metadata CRDT state per document, where the other
/// instances find it when they load the document.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Keep `instance`'s metadata state (JSON).
    async fn put(&self, doc: &str, instance: &str, state: &str) -> Result<(), BusError>;
    /// Every instance's kept metadata state of the document.
    async fn all(&self, doc: &str) -> Result<Vec<String>, BusError>;
}

/// Short-lived single-use tickets (WebSocket sign-in without a token in the
/// URL), kept where every instance can redeem them: Redis when clustered,
/// this process embedded. Keys are digests of the tickets (a dump holds no
/// usable ticket); values are opaque to the backend.
#[async_trait]
pub trait Tickets: Send + Sync + 'static {
    /// Keep `value` under `key` until `expires_ms`, sweeping expired
    /// tickets first; `Ok(false)` when `cap` live tickets are already held.
    async fn put_ticket(
        &self,
        key: &str,
        value: &str,
        expires_ms: i64,
        now_ms: i64,
        cap: usize,
    ) -> Result<bool, BusError>;
    /// Take the ticket (it is gone after this, whoever asked first wins);
    /// `None` when unknown, already taken or expired.
    async fn take_ticket(&self, key: &str, now_ms: i64) -> Result<Option<String>, BusError>;
}

/// The hub's handles on one backend: in-process, or Redis.
#[derive(Clone)]
pub struct Backends {
    pub sequencer: Arc<dyn Sequencer>,
    pub bus: Arc<dyn Bus>,
    pub stacks: Arc<dyn UndoStacks>,
    pub meta: Arc<dyn MetaStore>,
    /// Rate limits shared by every instance; `None` embedded (one instance
    /// keeps its own).
    pub rates: Option<Arc<dyn SharedRates>>,
    pub revocations: Arc<dyn Revocations>,
    pub tickets: Arc<dyn Tickets>,
}

/// Rate limits every instance shares (abuse limits on logins and
/// registrations), kept by the backend as a GCRA per key.
#[async_trait]
pub trait SharedRates: Send + Sync {
    /// Take one unit of `key`'s allowance, which holds `burst` units and
    /// gets one back every `per`; `Ok(true)` if one was left. `key` is
    /// validated and bounded by the caller.
    async fn take(&self, key: &str, per: std::time::Duration, burst: u32)
        -> Result<bool, BusError>;
}

impl Backends {
    /// The embedded backend: one instance, nothing shared; the sequencer
    /// keeps `retain` records per document and, with a `journal`, makes
    /// every batch durable there before it counts as committed.
    pub fn memory(
        retain: crate::doc::Retain,
        max_clients: usize,
        journal: Option<Arc<dyn Journal>>,
    ) -> Self {
        let bus = memory::MemoryBus::new();
        // Every document's batches share the journal's transactions.
        let journal = journal.map(|j| journal::GroupJournal::spawn(j) as Arc<dyn Journal>);
        let sequencer = Arc::new(memory::MemorySequencer::new(
            bus.clone(),
            retain,
            max_clients,
            journal,
        ));
        Self {
            sequencer: sequencer.clone(),
            bus: bus.clone(),
            stacks: sequencer,
            meta: bus.clone(),
            rates: None,
            revocations: bus,
            tickets: Arc::new(tickets::MemoryTickets::default()),
        }
    }

    /// Every handle served by one Redis backend.
    pub fn redis(backend: Arc<self::redis::RedisBackend>) -> Self {
        Self {
            sequencer: backend.clone(),
            bus: backend.clone(),
            stacks: backend.clone(),
            meta: backend.clone(),
            rates: Some(backend.clone()),
            revocations: backend.clone(),
            tickets: backend,
        }
    }
}
