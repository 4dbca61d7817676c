//! The hub: a registry of document tasks, one per open document, each the
//! sole owner of that document's state on this instance.
//!
//! Owns: [`Hub`] (spawn, look up, unload, shut down document tasks), the
//! document task itself, and the [`Connection`] handle sockets use. Sockets
//! talk to a document task over a bounded channel; the task answers on each
//! connection's bounded outbound queue and disconnects a client whose queue
//! is full rather than wait for it.
//! Must not import: axum, sqlx, redis. No lock is held across `.await`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

pub use crate::bus::AccessChange;
use crate::bus::{
    Bus, BusError, BusEvent, BusRecv, ClientSeq, CommitOutcome, CommitRequest, PresenceEntry, Seed,
    Sequencer, Subscription,
};
use crate::doc::{ApplyOutcome, DocState, RebaseError, Record, Tie};
use crate::meta::{DocMeta, MetaView};
use crate::ot::Operation;
use crate::persist::Persister;
use crate::protocol::{CursorInfo, ErrorCode, Presence, Role, ServerMessage, UserInfo};
use crate::store::{DocPersist, Store, StoreError};
use crate::undo::{merge_run, Stack, StackPush, UndoEntry};

/// Tuning for document tasks.
#[derive(Clone, Debug)]
pub struct HubSettings {
    pub instance_id: String,
    pub history_retain: usize,
    pub snapshot_interval: Duration,
    pub idle_unload: Duration,
    pub outbound_queue: usize,
    pub max_doc_chars: usize,
    /// A user of a vanished instance disappears for everyone within this.
    pub presence_ttl: Duration,
}

/// What a document task sends a connection.
#[derive(Clone, Debug)]
pub enum Outbound {
    Text(Arc<str>),
    /// Close the socket with this code and reason.
    Close(u16, &'static str),
}

/// Close codes the server uses (besides the standard ones).
pub mod close {
    /// Another connection with the same client id replaced this one.
    pub const REPLACED: u16 = 4001;
    /// Going away (shutdown): reconnect and resume.
    pub const GOING_AWAY: u16 = 1001;
    /// Try again later (slow consumer, or the backend needs a reload): resume.
    pub const TRY_AGAIN: u16 = 1013;
    pub const POLICY: u16 = 1008;
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("no such document")]
    NotFound,
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("backend unavailable: {0}")]
    Bus(#[from] BusError),
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("document task is gone")]
    Gone,
}

/// A connection wants in.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub doc: String,
    pub user: UserInfo,
    pub client: String,
    pub role: Role,
    /// `version=n`: the client already has the document at n.
    pub resume: Option<u64>,
    /// Create the document if it does not exist (anonymous mode).
    pub create: bool,
}

/// The live state of a document, for REST reads.
#[derive(Clone, Debug)]
pub struct DocView {
    pub content: String,
    pub version: u64,
    /// Title, tags and views (replicated).
    pub meta: MetaView,
}

#[derive(Clone)]
struct ConnSetup {
    id: u64,
    user: UserInfo,
    client: String,
    role: Role,
    resume: Option<u64>,
    tx: mpsc::Sender<Outbound>,
}

enum Cmd {
    Join(Box<ConnSetup>, oneshot::Sender<Result<(), HubError>>),
    Leave(u64),
    Op {
        conn: u64,
        version: u64,
        seq: u64,
        op: Operation,
    },
    Cursor {
        conn: u64,
        version: u64,
        anchor: Option<u64>,
        head: Option<u64>,
    },
    /// `undo` (or with `redo`, `redo`) from a socket.
    History {
        conn: u64,
        redo: bool,
    },
    View(oneshot::Sender<Result<DocView, HubError>>),
    /// Read or change the replicated metadata.
    Meta(MetaChange, oneshot::Sender<Result<MetaView, HubError>>),
    /// Committed records after a version, oldest first (memory, else journal).
    Records {
        since: u64,
        limit: usize,
        reply: oneshot::Sender<Result<HistoryPage, HubError>>,
    },
    Users(oneshot::Sender<Result<Vec<Presence>, HubError>>),
    HttpOp(Box<HttpOp>),
}

/// An edit submitted over HTTP: `op` on `version`, or (with `replace`) the
/// whole content replaced by one diff op on the head.
struct HttpOp {
    /// One id per HTTP edit, kept across retries so a retry is deduplicated.
    client: String,
    user: String,
    role: Role,
    version: u64,
    op: Operation,
    replace: Option<String>,
    reply: oneshot::Sender<Result<Result<u64, Refusal>, HubError>>,
}

/// Why an edit was refused; the message is safe to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: &str) -> Self {
        Self {
            code,
            message: message.to_owned(),
        }
    }
}

/// Where the answer to an op goes.
enum Reply {
    Conn(u64),
    Http {
        client: String,
        user: String,
        role: Role,
        reply: oneshot::Sender<Result<Result<u64, Refusal>, HubError>>,
        kind: EditKind,
    },
}

/// The head version and a page of committed records.
pub type HistoryPage = (u64, Vec<Arc<Record>>);

/// A change to a document's metadata.
#[derive(Clone, Debug)]
pub enum MetaChange {
    Title(String),
    AddTag(String),
    RemoveTag(String),
}

/// What a committed edit means for its user's undo/redo stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EditKind {
    /// A new edit: undoable (joining the typing run on top), and it clears redo.
    Edit,
    /// An undo: redoable.
    Undo,
    /// A redo: undoable again; the rest of the redo stack stays.
    Redo,
}

impl Cmd {
    /// Refuse a command (the document could not be loaded).
    fn refuse(self, e: &HubError) {
        let e = match e {
            HubError::NotFound => HubError::NotFound,
            _ => HubError::Gone,
        };
        match self {
            Cmd::Join(_, reply) => drop(reply.send(Err(e))),
            Cmd::View(reply) => drop(reply.send(Err(e))),
            Cmd::Records { reply, .. } => drop(reply.send(Err(e))),
            Cmd::Meta(_, reply) => drop(reply.send(Err(e))),
            Cmd::Users(reply) => drop(reply.send(Err(e))),
            Cmd::HttpOp(h) => drop(h.reply.send(Err(e))),
            Cmd::Leave(_) | Cmd::Op { .. } | Cmd::Cursor { .. } | Cmd::History { .. } => {}
        }
    }
}

/// Capacity of each document task's inbox.
const INBOX: usize = 1024;
/// Rebase-and-retry rounds when another instance commits first. From the
/// third round on, a short random pause breaks lockstep between instances
/// racing on one hot document (otherwise the busiest one can starve).
const MAX_COMMIT_RETRIES: usize = 64;
/// Told to a client whose edit could not be committed (backend outage).
const UNAVAILABLE: &str = "the edit could not be committed right now; keep it and resend it";

struct Inner {
    settings: HubSettings,
    sequencer: Arc<dyn Sequencer>,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    persister: Persister,
    docs: Mutex<HashMap<String, (u64, mpsc::Sender<Cmd>)>>,
    next_id: AtomicU64,
    clock: fn() -> i64,
    /// Cancels document tasks (shutdown).
    cancel: CancellationToken,
    docs_tracker: TaskTracker,
    persist_tracker: TaskTracker,
    /// Backend tasks (e.g. the pub/sub loop), stopped last.
    background: Background,
}

/// Long-lived backend tasks owned by the hub: cancelled and awaited after
/// documents and the persister have stopped.
pub struct Background {
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
}

/// Handle to the document registry; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Hub {
    pub fn new(
        settings: HubSettings,
        sequencer: Arc<dyn Sequencer>,
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        background: Background,
    ) -> Self {
        let persist_tracker = TaskTracker::new();
        let persister =
            Persister::spawn(store.clone(), sequencer.clone(), now_ms, &persist_tracker);
        Self {
            inner: Arc::new(Inner {
                settings,
                sequencer,
                bus,
                store,
                persister,
                docs: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                clock: now_ms,
                cancel: CancellationToken::new(),
                docs_tracker: TaskTracker::new(),
                persist_tracker,
                background,
            }),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.inner.settings.instance_id
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Ready for traffic: not draining, Redis (if any) and the database
    /// answer. The error says which part is not ready.
    pub async fn ready(&self) -> Result<(), &'static str> {
        if self.is_shutting_down() {
            return Err("draining");
        }
        let timeout = Duration::from_secs(2);
        match tokio::time::timeout(timeout, self.inner.bus.ping()).await {
            Ok(Ok(())) => {}
            _ => return Err("redis unreachable"),
        }
        match tokio::time::timeout(timeout, self.inner.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err("database unreachable"),
        }
    }

    /// Number of documents loaded on this instance.
    pub fn open_documents(&self) -> usize {
        self.inner.lock_docs().len()
    }

    /// The running task's inbox for `doc`, spawning (and loading) it if needed.
    fn doc_sender(&self, doc: &str) -> Result<mpsc::Sender<Cmd>, HubError> {
        if self.inner.cancel.is_cancelled() {
            return Err(HubError::ShuttingDown);
        }
        let mut docs = self.inner.lock_docs();
        if let Some((_, tx)) = docs.get(doc) {
            if !tx.is_closed() {
                return Ok(tx.clone());
            }
        }
        let generation = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(INBOX);
        docs.insert(doc.to_owned(), (generation, tx.clone()));
        drop(docs);
        let inner = self.inner.clone();
        let id = doc.to_owned();
        let span = info_span!("doc", doc = %id);
        self.inner
            .docs_tracker
            .spawn(DocTask::start(inner, id, generation, rx).instrument(span));
        Ok(tx)
    }

    /// Send a command that carries a reply channel, retrying once if the task
    /// was unloading at that moment.
    async fn ask<T>(
        &self,
        doc: &str,
        make: impl Fn(oneshot::Sender<Result<T, HubError>>) -> Cmd,
    ) -> Result<T, HubError> {
        self.ask_via(doc, make).await.map(|(v, _)| v)
    }

    /// [`Hub::ask`], also returning the inbox of the task that answered.
    async fn ask_via<T>(
        &self,
        doc: &str,
        make: impl Fn(oneshot::Sender<Result<T, HubError>>) -> Cmd,
    ) -> Result<(T, mpsc::Sender<Cmd>), HubError> {
        for _ in 0..3 {
            let tx = self.doc_sender(doc)?;
            let (rtx, rrx) = oneshot::channel();
            if tx.send(make(rtx)).await.is_err() {
                continue;
            }
            match rrx.await {
                Ok(Err(HubError::Gone)) | Err(_) => continue,
                Ok(v) => return v.map(|v| (v, tx)),
            }
        }
        Err(HubError::Gone)
    }

    /// Join a document: on success the init (and any resume replay) is
    /// already queued on the returned receiver.
    pub async fn join(
        &self,
        req: JoinRequest,
    ) -> Result<(Connection, mpsc::Receiver<Outbound>), HubError> {
        if req.create {
            self.inner
                .store
                .ensure_document(&req.doc, (self.inner.clock)())
                .await?;
        }
        let (otx, orx) = mpsc::channel(self.inner.settings.outbound_queue);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let setup = ConnSetup {
            id,
            user: req.user,
            client: req.client,
            role: req.role,
            resume: req.resume,
            tx: otx,
        };
        let ((), tx) = self
            .ask_via(&req.doc, |reply| Cmd::Join(Box::new(setup.clone()), reply))
            .await?;
        Ok((
            Connection {
                id,
                tx,
                left: false,
            },
            orx,
        ))
    }

    /// Live content and version (loads the document if needed).
    pub async fn view(&self, doc: &str) -> Result<DocView, HubError> {
        self.ask(doc, Cmd::View).await
    }

    /// The document's metadata after `change`, replicated to every instance.
    pub async fn meta(&self, doc: &str, change: MetaChange) -> Result<MetaView, HubError> {
        self.ask(doc, |reply| Cmd::Meta(change.clone(), reply))
            .await
    }

    /// Up to `limit` committed records after version `since`, oldest first,
    /// and the head version.
    pub async fn history(
        &self,
        doc: &str,
        since: u64,
        limit: usize,
    ) -> Result<HistoryPage, HubError> {
        self.ask(doc, |reply| Cmd::Records {
            since,
            limit,
            reply,
        })
        .await
    }

    /// The document's content at `version` (replayed from version 0 outside
    /// the document task, a page of records at a time); `None` past the head.
    pub async fn content_at(&self, doc: &str, version: u64) -> Result<Option<String>, HubError> {
        let mut text = ropey::Rope::new();
        let mut at = 0;
        while at < version {
            let (head, page) = self.history(doc, at, 2000).await?;
            if version > head {
                return Ok(None);
            }
            if page.first().is_none_or(|r| r.version != at + 1) {
                return Err(HubError::Bus(BusError::Corrupt(format!(
                    "history has a gap after {at}"
                ))));
            }
            for r in page.iter().take_while(|r| r.version <= version) {
                r.op.apply_rope(&mut text).map_err(|e| {
                    HubError::Bus(BusError::Corrupt(format!("replay at {}: {e}", r.version)))
                })?;
                at = r.version;
            }
        }
        Ok(Some(text.to_string()))
    }

    /// Commit an edit made over HTTP (transformed like a socket's op), or,
    /// with `replace`, replace the content by one diff op. Returns the
    /// version it produced.
    pub async fn http_edit(
        &self,
        doc: &str,
        user: &str,
        role: Role,
        version: u64,
        op: Operation,
        replace: Option<String>,
    ) -> Result<Result<u64, Refusal>, HubError> {
        let client = format!("http-{}", uuid::Uuid::new_v4().simple());
        self.ask(doc, |reply| {
            Cmd::HttpOp(Box::new(HttpOp {
                client: client.clone(),
                user: user.to_owned(),
                role,
                version,
                op: op.clone(),
                replace: replace.clone(),
                reply,
            }))
        })
        .await
    }

    /// Tell every instance that `user`'s access changed (`None`: revoked;
    /// their sockets are closed) or that the document was deleted.
    pub async fn notify_access(&self, doc: &str, change: AccessChange) -> Result<(), HubError> {
        let deleted = change == AccessChange::Deleted;
        self.inner
            .bus
            .publish(doc, BusEvent::Access(change))
            .await?;
        if deleted {
            self.inner.sequencer.purge(doc).await?;
        }
        Ok(())
    }

    /// Everyone connected to the document.
    pub async fn users(&self, doc: &str) -> Result<Vec<Presence>, HubError> {
        self.ask(doc, Cmd::Users).await
    }

    /// Stop every document task (each hands its final snapshot to the
    /// persister and closes its connections with "going away"), then flush
    /// the persister. Returns whether everything was made durable.
    pub async fn shutdown(&self) -> bool {
        self.inner.cancel.cancel();
        self.inner.docs_tracker.close();
        self.inner.docs_tracker.wait().await;
        let ok = self.inner.persister.shutdown().await;
        self.inner.persist_tracker.close();
        self.inner.persist_tracker.wait().await;
        self.inner.background.cancel.cancel();
        self.inner.background.tracker.close();
        self.inner.background.tracker.wait().await;
        self.inner.store.close().await;
        ok
    }
}

impl Inner {
    fn lock_docs(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, mpsc::Sender<Cmd>)>> {
        self.docs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A socket's handle on its document task.
pub struct Connection {
    pub id: u64,
    tx: mpsc::Sender<Cmd>,
    left: bool,
}

impl Connection {
    /// Submit an op (decoded, not yet validated against the document).
    pub async fn op(&self, version: u64, seq: u64, op: Operation) -> Result<(), HubError> {
        let cmd = Cmd::Op {
            conn: self.id,
            version,
            seq,
            op,
        };
        self.tx.send(cmd).await.map_err(|_| HubError::Gone)
    }

    pub async fn cursor(
        &self,
        version: u64,
        anchor: Option<u64>,
        head: Option<u64>,
    ) -> Result<(), HubError> {
        let cmd = Cmd::Cursor {
            conn: self.id,
            version,
            anchor,
            head,
        };
        self.tx.send(cmd).await.map_err(|_| HubError::Gone)
    }

    /// `undo`, or with `redo` true, `redo`.
    pub async fn history(&self, redo: bool) -> Result<(), HubError> {
        self.tx
            .send(Cmd::History {
                conn: self.id,
                redo,
            })
            .await
            .map_err(|_| HubError::Gone)
    }

    pub async fn leave(mut self) {
        self.left = true;
        let _ = self.tx.send(Cmd::Leave(self.id)).await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.left {
            // Best effort; the task also sweeps connections whose outbound
            // receiver is gone, so a full inbox cannot leave a ghost.
            let _ = self.tx.try_send(Cmd::Leave(self.id));
        }
    }
}

struct Conn {
    id: u64,
    user: UserInfo,
    client: String,
    role: Role,
    tx: mpsc::Sender<Outbound>,
}

impl Conn {
    fn presence(&self) -> Presence {
        Presence {
            id: self.user.id.clone(),
            name: self.user.name.clone(),
            color: self.user.color.clone(),
            client: self.client.clone(),
        }
    }
}

fn text(msg: ServerMessage<'_>) -> Outbound {
    Outbound::Text(msg.to_text().into())
}

/// A refusal, counted by code.
pub fn error_msg(code: ErrorCode, message: &str, seq: Option<u64>) -> Outbound {
    count_refusal(code);
    text(ServerMessage::Error { code, message, seq })
}

fn count_refusal(code: ErrorCode) {
    metrics::counter!("tandem_refusals_total", "code" => code.as_str()).increment(1);
}

fn user_of(p: &Presence) -> UserInfo {
    UserInfo {
        id: p.id.clone(),
        name: p.name.clone(),
        color: p.color.clone(),
    }
}

/// Why the task loop stops.
enum Stop {
    Unloaded,
    Shutdown,
    /// State can no longer be trusted (e.g. the op log lost history we need):
    /// close connections so clients resume against a fresh load.
    Reset,
    /// The document was deleted: nothing to persist.
    Deleted,
}

struct DocTask {
    id: String,
    generation: u64,
    hub: Arc<Inner>,
    state: DocState,
    conns: Vec<Conn>,
    /// Presence on other instances, by client id.
    remote: HashMap<String, Presence>,
    cursors: HashMap<String, CursorInfo>,
    /// Highest committed seq (and its version) per client id.
    clients: HashMap<String, (u64, u64)>,
    dirty_clients: Vec<String>,
    unjournaled: Vec<Arc<Record>>,
    persisted_version: u64,
    idle_since: Option<Instant>,
    sub: Subscription,
    /// Presence and cursor writes to the bus, applied in order by a worker.
    outbox: mpsc::Sender<BusWrite>,
    /// A refill failed (backend down): retry on the next tick.
    needs_catch_up: bool,
    /// The document was deleted: stop without persisting.
    deleted: bool,
    /// Replicated metadata: this instance's view of the merged state.
    meta: DocMeta,
    /// `meta` changed here since it was last stored.
    meta_dirty: bool,
}

/// A write to the bus that the document task does not wait for.
enum BusWrite {
    Publish(BusEvent),
    PresencePut(Vec<PresenceEntry>),
    PresenceRemove(PresenceEntry),
    /// Push onto a user's undo or redo stack; `run`: join the typing run on
    /// top when it continues it.
    Stack {
        user: String,
        push: StackPush,
        run: bool,
    },
    /// Answered once every write queued before it is done.
    Barrier(oneshot::Sender<()>),
    /// This instance's metadata state (JSON).
    MetaPut(String),
}

/// Applies a document's bus writes in order; ends when the task drops the
/// sender. Losses (backend down) are repaired by the next heartbeat.
async fn bus_writer(hub: Arc<Inner>, doc: String, mut rx: mpsc::Receiver<BusWrite>) {
    let ttl = hub.settings.presence_ttl.as_millis() as i64;
    while let Some(w) = rx.recv().await {
        let r = match w {
            BusWrite::Publish(ev) => hub.bus.publish(&doc, ev).await,
            BusWrite::PresencePut(entries) => {
                hub.bus
                    .presence_put(&doc, &entries, (hub.clock)(), ttl * 2 / 3)
                    .await
            }
            BusWrite::PresenceRemove(entry) => hub.bus.presence_remove(&doc, &entry).await,
            BusWrite::Stack { user, push, run } => stack_push(&hub, &doc, &user, push, run).await,
            BusWrite::MetaPut(state) => {
                hub.bus
                    .meta_put(&doc, &hub.settings.instance_id, &state)
                    .await
            }
            BusWrite::Barrier(done) => {
                let _ = done.send(());
                Ok(())
            }
        };
        if let Err(e) = r {
            debug!(error = %e, "bus write failed");
        }
    }
}

async fn stack_push(
    hub: &Inner,
    doc: &str,
    user: &str,
    mut push: StackPush,
    run: bool,
) -> Result<(), BusError> {
    if run {
        if let Some(top) = hub.sequencer.stack_top(doc, user, push.stack).await? {
            if let Ok(Some(merged)) = merge_run(&top, &push.entry) {
                push.entry = merged;
                push.replace_top_at = Some(top.version);
            }
        }
    }
    hub.sequencer.stack_push(doc, user, &push).await
}

/// A backend outage: refuse or retry, but keep the document and its sockets.
fn is_transient(e: &HubError) -> bool {
    matches!(
        e,
        HubError::Bus(BusError::Unavailable(_)) | HubError::Store(_)
    )
}

impl DocTask {
    async fn start(hub: Arc<Inner>, id: String, generation: u64, mut rx: mpsc::Receiver<Cmd>) {
        let task = match Self::load(hub.clone(), id.clone(), generation).await {
            Ok(t) => t,
            Err(e) => {
                match &e {
                    HubError::NotFound => debug!("no such document"),
                    e => warn!(error = %e, "could not load document"),
                }
                unregister(&hub, &id, generation);
                // Answer whatever queued up meanwhile.
                rx.close();
                while let Some(cmd) = rx.recv().await {
                    cmd.refuse(&e);
                }
                return;
            }
        };
        task.run(rx).await;
    }

    async fn load(hub: Arc<Inner>, id: String, generation: u64) -> Result<Self, HubError> {
        let snap = hub.store.load(&id).await?.ok_or(HubError::NotFound)?;
        // Subscribe before reading the log, so nothing falls between.
        let sub = hub.bus.subscribe(&id).await?;
        let (outbox, outbox_rx) = mpsc::channel(1024);
        hub.docs_tracker
            .spawn(bus_writer(hub.clone(), id.clone(), outbox_rx));
        let mut task = DocTask {
            state: DocState::new(&snap.content, snap.version, hub.settings.history_retain),
            clients: snap
                .clients
                .iter()
                .map(|c| (c.client.clone(), (c.seq, c.version)))
                .collect(),
            persisted_version: snap.version,
            id,
            generation,
            hub: hub.clone(),
            conns: Vec::new(),
            remote: HashMap::new(),
            cursors: HashMap::new(),
            dirty_clients: Vec::new(),
            unjournaled: Vec::new(),
            idle_since: Some(Instant::now()),
            sub,
            outbox,
            needs_catch_up: false,
            deleted: false,
            meta: DocMeta::default(),
            meta_dirty: false,
        };
        task.meta = task.load_meta().await?;
        // The journal may be ahead of the snapshot.
        loop {
            let recs = hub
                .store
                .journal_after(&task.id, task.state.version(), 10_000)
                .await?;
            if recs.is_empty() {
                break;
            }
            for r in recs {
                task.apply_quiet(Arc::new(r))?;
            }
        }
        task.persisted_version = task.state.version();
        let seed = Seed {
            version: task.state.version(),
            records: Vec::new(),
            clients: task.client_seqs(task.clients.keys()),
        };
        let head = hub.sequencer.seed(&task.id, &seed).await?;
        if head > task.state.version() {
            task.catch_up().await?;
        }
        let (live, _) = hub.bus.presence_list(&task.id, (hub.clock)()).await?;
        for e in live
            .into_iter()
            .filter(|e| e.instance != hub.settings.instance_id)
        {
            task.remote.insert(e.presence.client.clone(), e.presence);
        }
        info!(
            version = task.state.version(),
            chars = task.state.len_chars(),
            "document loaded"
        );
        Ok(task)
    }

    fn client_seqs<'a>(&self, ids: impl Iterator<Item = &'a String>) -> Vec<ClientSeq> {
        ids.filter_map(|c| {
            self.clients.get(c).map(|&(seq, version)| ClientSeq {
                client: c.clone(),
                seq,
                version,
            })
        })
        .collect()
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut tick = tokio::time::interval(self.hub.settings.snapshot_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut heartbeat = tokio::time::interval(self.hub.settings.presence_ttl / 3);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let cancel = self.hub.cancel.clone();
        let stop = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Stop::Shutdown,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        if let Err(e) = self.handle(cmd).await {
                            error!(error = %e, "document state lost; resetting");
                            break Stop::Reset;
                        }
                    }
                    None => break Stop::Shutdown,
                },
                ev = self.sub.recv() => {
                    if let Err(e) = self.handle_bus(ev).await {
                        error!(error = %e, "document state lost; resetting");
                        break Stop::Reset;
                    }
                    if self.deleted {
                        break Stop::Deleted;
                    }
                }
                _ = heartbeat.tick() => self.heartbeat().await,
                _ = tick.tick() => {
                    self.sweep_closed();
                    self.offer_persist();
                    if let Err(e) = self.store_meta().await {
                        warn!(error = %e, "metadata not stored; retrying next tick");
                    }
                    if self.needs_catch_up {
                        if let Err(e) = self.refill().await {
                            error!(error = %e, "document state lost; resetting");
                            break Stop::Reset;
                        }
                    }
                    if self.idle_for() >= self.hub.settings.idle_unload && self.try_unload(&rx).await {
                        break Stop::Unloaded;
                    }
                }
            }
        };
        match stop {
            Stop::Unloaded => info!("document unloaded"),
            Stop::Shutdown => {
                if let Some(job) = self.persist_job() {
                    self.hub.persister.put(job).await;
                }
                if let Err(e) = self.store_meta().await {
                    warn!(error = %e, "metadata not stored at shutdown");
                }
                self.close_all(close::GOING_AWAY, "server shutting down; reconnect");
                unregister(&self.hub, &self.id, self.generation);
            }
            Stop::Reset => {
                self.close_all(close::TRY_AGAIN, "document reloading; reconnect");
                unregister(&self.hub, &self.id, self.generation);
            }
            Stop::Deleted => {
                info!("document deleted");
                unregister(&self.hub, &self.id, self.generation);
                self.hub.sequencer.evict(&self.id).await;
            }
        }
    }

    fn idle_for(&self) -> Duration {
        self.idle_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Flush, then leave the registry if nothing arrived meanwhile.
    async fn try_unload(&mut self, rx: &mpsc::Receiver<Cmd>) -> bool {
        if self.store_meta().await.is_err() {
            return false;
        }
        if let Some(job) = self.persist_job() {
            if !self.hub.persister.put(job).await {
                return false;
            }
            self.mark_persisted();
        }
        if !self.hub.persister.flush().await {
            return false;
        }
        {
            let mut docs = self.hub.lock_docs();
            if !rx.is_empty() || !self.conns.is_empty() {
                return false;
            }
            if docs
                .get(&self.id)
                .is_some_and(|(g, _)| *g == self.generation)
            {
                docs.remove(&self.id);
            }
        }
        self.hub.sequencer.evict(&self.id).await;
        true
    }

    fn close_all(&mut self, code: u16, reason: &'static str) {
        for c in self.conns.drain(..) {
            let _ = c.tx.try_send(Outbound::Close(code, reason));
        }
    }

    // ---- persistence ----

    fn persist_job(&self) -> Option<DocPersist> {
        if self.state.version() <= self.persisted_version && self.dirty_clients.is_empty() {
            return None;
        }
        Some(DocPersist {
            doc: self.id.clone(),
            version: self.state.version(),
            content: self.state.content(),
            journal: self.unjournaled.clone(),
            clients: self.client_seqs(self.dirty_clients.iter()),
        })
    }

    fn mark_persisted(&mut self) {
        self.persisted_version = self.state.version();
        self.unjournaled.clear();
        self.dirty_clients.clear();
    }

    fn offer_persist(&mut self) {
        let lag = self.state.version().saturating_sub(self.persisted_version);
        metrics::histogram!("tandem_snapshot_lag_versions").record(lag as f64);
        if let Some(job) = self.persist_job() {
            if self.hub.persister.offer(job) {
                self.mark_persisted();
            }
        }
    }

    // ---- applying committed records ----

    /// Apply a record in order without telling anyone (loading).
    fn apply_quiet(&mut self, rec: Arc<Record>) -> Result<bool, HubError> {
        match self.state.apply(rec.clone()) {
            Ok(ApplyOutcome::Applied) => {
                let entry = self.clients.entry(rec.client.clone()).or_insert((0, 0));
                if rec.seq > entry.0 {
                    *entry = (rec.seq, rec.version);
                }
                if !self.dirty_clients.contains(&rec.client) {
                    self.dirty_clients.push(rec.client.clone());
                }
                self.unjournaled.push(rec);
                Ok(true)
            }
            Ok(ApplyOutcome::Old) => Ok(false),
            Ok(ApplyOutcome::Gap { head }) => Err(HubError::Bus(BusError::Corrupt(format!(
                "gap: head {head}, got {}",
                rec.version
            )))),
            Err(e) => Err(HubError::Bus(BusError::Corrupt(format!(
                "record {} does not apply: {e}",
                rec.version
            )))),
        }
    }

    /// Apply a committed record and fan it out; refill first on a gap.
    async fn ingest(&mut self, rec: Arc<Record>) -> Result<(), HubError> {
        if rec.version > self.state.version() + 1 {
            self.refill().await?;
            if rec.version > self.state.version() + 1 {
                // Backend down: the record waits for the next refill.
                return Ok(());
            }
        }
        if self.apply_quiet(rec.clone())? {
            self.fanout(&rec);
        }
        Ok(())
    }

    /// [`Self::catch_up`], but a backend outage only marks the document for a
    /// retry on the next tick. Errors that remain mean the state is lost.
    async fn refill(&mut self) -> Result<(), HubError> {
        match self.catch_up().await {
            Err(e) if is_transient(&e) => {
                if !self.needs_catch_up {
                    warn!(error = %e, "refill failed; will retry");
                }
                self.needs_catch_up = true;
                Ok(())
            }
            r => {
                self.needs_catch_up = false;
                r
            }
        }
    }

    /// Pull every record after our head from the sequencer's log; re-seed
    /// the sequencer if it lost the document.
    async fn catch_up(&mut self) -> Result<(), HubError> {
        let after = self.state.version();
        let recs = match self.hub.sequencer.ops_since(&self.id, after).await {
            Err(BusError::NotSeeded) => {
                self.reseed().await?;
                self.hub
                    .sequencer
                    .ops_since(&self.id, self.state.version())
                    .await?
            }
            r => r?,
        };
        let recs = recs.ok_or_else(|| {
            BusError::Corrupt(format!("op log no longer reaches version {after}"))
        })?;
        if !recs.is_empty() {
            metrics::counter!("tandem_gap_refills_total").increment(1);
            debug!(from = after, count = recs.len(), "refilled from the op log");
        }
        for r in recs {
            if self.apply_quiet(r.clone())? {
                self.fanout(&r);
            }
        }
        Ok(())
    }

    /// The sequencer lost this document (e.g. Redis restarted empty): give it
    /// everything this instance knows — its history and client seqs.
    async fn reseed(&mut self) -> Result<(), HubError> {
        let oldest = self.state.oldest();
        let seed = Seed {
            version: oldest,
            records: self
                .state
                .records_after(oldest)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            clients: self.client_seqs(self.clients.keys()),
        };
        let head = self.hub.sequencer.seed(&self.id, &seed).await?;
        warn!(
            version = self.state.version(),
            head, "re-seeded the sequencer"
        );
        metrics::counter!("tandem_reseeds_total").increment(1);
        Ok(())
    }

    /// Tell every local connection: its own op becomes an ack, others an op.
    fn fanout(&mut self, rec: &Record) {
        let lag_ms = (self.hub.clock)().saturating_sub(rec.time).max(0);
        metrics::histogram!("tandem_fanout_lag_seconds").record(lag_ms as f64 / 1000.0);
        let op_msg = text(ServerMessage::Op {
            version: rec.version,
            op: &rec.op,
            user: &rec.user,
            client: &rec.client,
            seq: rec.seq,
        });
        let mut slow = Vec::new();
        for c in &self.conns {
            let msg = if c.client == rec.client {
                text(ServerMessage::Ack {
                    seq: rec.seq,
                    version: rec.version,
                })
            } else {
                op_msg.clone()
            };
            if c.tx.try_send(msg).is_err() {
                slow.push(c.id);
            }
        }
        self.drop_conns(&slow, "slow consumer");
    }

    /// Send to one connection; a full queue disconnects it.
    fn send_to(&mut self, conn: u64, msg: Outbound) {
        let Some(c) = self.conns.iter().find(|c| c.id == conn) else {
            return;
        };
        if c.tx.try_send(msg).is_err() {
            self.drop_conns(&[conn], "slow consumer");
        }
    }

    /// Send to every connection but `except`.
    fn broadcast(&mut self, except: Option<u64>, msg: Outbound) {
        let mut slow = Vec::new();
        for c in self.conns.iter().filter(|c| Some(c.id) != except) {
            if c.tx.try_send(msg.clone()).is_err() {
                slow.push(c.id);
            }
        }
        self.drop_conns(&slow, "slow consumer");
    }

    /// Remove connections (dropping their sender closes their socket) and
    /// announce that they left.
    fn drop_conns(&mut self, ids: &[u64], why: &str) {
        for &id in ids {
            let Some(pos) = self.conns.iter().position(|c| c.id == id) else {
                continue;
            };
            let c = self.conns.remove(pos);
            debug!(client = %c.client, why, "connection removed");
            self.leave_presence(&c);
        }
    }

    fn leave_presence(&mut self, c: &Conn) {
        self.announce_left(&c.user, &c.client);
        self.write_bus(BusWrite::PresenceRemove(self.entry(c)));
        self.publish(BusEvent::Left {
            instance: self.hub.settings.instance_id.clone(),
            presence: c.presence(),
        });
        if self.conns.is_empty() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// Queue a bus write; presence and cursors never block the document
    /// (a full outbox drops the write; the heartbeat repairs presence).
    fn write_bus(&self, w: BusWrite) {
        if self.outbox.try_send(w).is_err() {
            debug!("bus outbox full; dropped a write");
        }
    }

    fn publish(&self, event: BusEvent) {
        self.write_bus(BusWrite::Publish(event));
    }

    fn entry(&self, c: &Conn) -> PresenceEntry {
        PresenceEntry {
            instance: self.hub.settings.instance_id.clone(),
            presence: c.presence(),
        }
    }

    /// Refresh our entries in the shared presence set, reap expired ones
    /// (announcing each once), and reconcile our view of other instances.
    async fn heartbeat(&mut self) {
        let entries: Vec<PresenceEntry> = self.conns.iter().map(|c| self.entry(c)).collect();
        let now = (self.hub.clock)();
        let ttl = self.hub.settings.presence_ttl.as_millis() as i64;
        if let Err(e) = self
            .hub
            .bus
            .presence_put(&self.id, &entries, now, ttl * 2 / 3)
            .await
        {
            debug!(error = %e, "presence heartbeat failed");
            return;
        }
        let (live, reaped) = match self.hub.bus.presence_list(&self.id, now).await {
            Ok(v) => v,
            Err(e) => {
                debug!(error = %e, "presence read failed");
                return;
            }
        };
        for e in reaped {
            self.publish(BusEvent::Left {
                instance: e.instance.clone(),
                presence: e.presence,
            });
        }
        let me = self.hub.settings.instance_id.clone();
        let now_remote: HashMap<String, Presence> = live
            .into_iter()
            .filter(|e| e.instance != me)
            .map(|e| (e.presence.client.clone(), e.presence))
            .collect();
        let gone: Vec<Presence> = self
            .remote
            .values()
            .filter(|p| !now_remote.contains_key(&p.client))
            .cloned()
            .collect();
        let new: Vec<Presence> = now_remote
            .values()
            .filter(|p| !self.remote.contains_key(&p.client))
            .cloned()
            .collect();
        for p in gone {
            self.remote_left(&p);
        }
        for p in new {
            self.remote_joined(p);
        }
    }

    fn remote_joined(&mut self, p: Presence) {
        if self.remote.contains_key(&p.client) {
            return;
        }
        let user = user_of(&p);
        let msg = text(ServerMessage::UserJoined {
            user: &user,
            client: &p.client,
        });
        self.remote.insert(p.client.clone(), p);
        self.broadcast(None, msg);
    }

    fn remote_left(&mut self, p: &Presence) {
        if self.remote.remove(&p.client).is_none() {
            return;
        }
        self.announce_left(&user_of(p), &p.client);
    }

    /// Someone (here or on another instance) left: forget their caret and
    /// tell the local sockets.
    fn announce_left(&mut self, user: &UserInfo, client: &str) {
        self.cursors.remove(client);
        self.broadcast(None, text(ServerMessage::UserLeft { user, client }));
    }

    fn sweep_closed(&mut self) {
        let closed: Vec<u64> = self
            .conns
            .iter()
            .filter(|c| c.tx.is_closed())
            .map(|c| c.id)
            .collect();
        self.drop_conns(&closed, "socket closed");
    }

    // ---- commands ----

    async fn handle(&mut self, cmd: Cmd) -> Result<(), HubError> {
        match cmd {
            Cmd::Join(setup, reply) => self.join(*setup, reply).await?,
            Cmd::Leave(id) => self.drop_conns(&[id], "left"),
            Cmd::Op {
                conn,
                version,
                seq,
                op,
            } => self.op(Reply::Conn(conn), version, seq, op).await?,
            Cmd::HttpOp(h) => {
                let HttpOp {
                    client,
                    user,
                    role,
                    version,
                    op,
                    replace,
                    reply,
                } = *h;
                // Each HTTP edit is its own client with one op (seq 1).
                let (version, op) = match replace {
                    Some(content) => (
                        self.state.version(),
                        crate::ot::diff(&self.state.content(), &content),
                    ),
                    None => (version, op),
                };
                let reply = Reply::Http {
                    client,
                    user,
                    role,
                    reply,
                    kind: EditKind::Edit,
                };
                self.op(reply, version, 1, op).await?;
            }
            Cmd::Cursor {
                conn,
                version,
                anchor,
                head,
            } => self.cursor(conn, version, anchor, head),
            Cmd::History { conn, redo } => self.undo(conn, redo).await?,
            Cmd::Meta(change, reply) => {
                let r = self.change_meta(change).await;
                let _ = reply.send(r);
            }
            Cmd::Records {
                since,
                limit,
                reply,
            } => {
                let r = self.records(since, limit).await;
                let _ = reply.send(r.map(|v| (self.state.version(), v)));
            }
            Cmd::View(reply) => {
                let _ = reply.send(Ok(DocView {
                    content: self.state.content(),
                    version: self.state.version(),
                    meta: self.meta.view(),
                }));
            }
            Cmd::Users(reply) => {
                let _ = reply.send(Ok(self.users()));
            }
        }
        Ok(())
    }

    fn users(&self) -> Vec<Presence> {
        let mut users: Vec<Presence> = self.conns.iter().map(Conn::presence).collect();
        users.extend(self.remote.values().cloned());
        users
    }

    /// Records after `n` up to the head, for a resume: from memory, else the
    /// sequencer's log, else the journal joined to memory.
    async fn records_for_resume(&self, n: u64, cap: usize) -> Option<Vec<Arc<Record>>> {
        let head = self.state.version();
        if n > head {
            return None;
        }
        if (head - n) as usize > cap {
            return None;
        }
        if let Some(it) = self.state.records_after(n) {
            return Some(it.cloned().collect());
        }
        if let Ok(Some(v)) = self.hub.sequencer.ops_since(&self.id, n).await {
            if v.last().map_or(n, |r| r.version) == head {
                return Some(v);
            }
        }
        let oldest = self.state.oldest();
        let journal = self
            .hub
            .store
            .journal_after(&self.id, n, (oldest - n) as u32)
            .await
            .ok()?;
        let contiguous = journal
            .iter()
            .enumerate()
            .all(|(i, r)| r.version == n + 1 + i as u64);
        if !contiguous || journal.last().map_or(n, |r| r.version) != oldest {
            return None;
        }
        let mut out: Vec<Arc<Record>> = journal.into_iter().map(Arc::new).collect();
        out.extend(self.state.records_after(oldest)?.cloned());
        Some(out)
    }

    async fn join(
        &mut self,
        setup: ConnSetup,
        reply: oneshot::Sender<Result<(), HubError>>,
    ) -> Result<(), HubError> {
        // A newer connection with the same client id replaces the old one.
        if let Some(old) = self.conns.iter().find(|c| c.client == setup.client) {
            let _ = old.tx.try_send(Outbound::Close(
                close::REPLACED,
                "replaced by a newer connection",
            ));
            let id = old.id;
            self.drop_conns(&[id], "replaced");
        }
        // A view: a fresh open (a resume is the same visit). Stored on the
        // next tick, so a burst of joins costs one store write, not one each.
        if setup.resume.is_none() {
            self.meta.views.increment(&self.hub.settings.instance_id, 1);
            self.meta_announce();
        }
        let mut replay = None;
        if let Some(n) = setup.resume {
            if n > self.state.version() {
                // Another instance may be ahead of us.
                self.refill().await?;
            }
            // Leave room in the queue for live traffic after the replay.
            let cap = self.hub.settings.outbound_queue.saturating_sub(64);
            replay = self.records_for_resume(n, cap).await;
        }
        let last_seq = match self.hub.sequencer.last_seq(&self.id, &setup.client).await {
            Ok(s) => s.map_or(0, |(seq, _)| seq),
            Err(e) => {
                warn!(error = %e, "last_seq unavailable; using local knowledge");
                self.clients.get(&setup.client).map_or(0, |c| c.0)
            }
        };
        let conn = Conn {
            id: setup.id,
            user: setup.user,
            client: setup.client,
            role: setup.role,
            tx: setup.tx,
        };
        let mut users = self.users();
        users.push(conn.presence());
        let cursors = self.current_cursors();
        let (version, content) = match (&replay, setup.resume) {
            (Some(_), Some(n)) => (n, None),
            _ => (self.state.version(), Some(self.state.content())),
        };
        let init = text(ServerMessage::Init {
            document: &self.id,
            client: &conn.client,
            user: &conn.user,
            version,
            content,
            users,
            cursors,
            role: conn.role,
            resumed: setup.resume.map(|_| replay.is_some()),
            seq: last_seq,
            meta: self.meta.view(),
        });
        let mut queued = conn.tx.try_send(init).is_ok();
        for r in replay.iter().flatten() {
            let msg = text(ServerMessage::Op {
                version: r.version,
                op: &r.op,
                user: &r.user,
                client: &r.client,
                seq: r.seq,
            });
            queued &= conn.tx.try_send(msg).is_ok();
        }
        if !queued {
            // Cannot happen with a fresh queue sized above the replay cap.
            let _ = reply.send(Err(HubError::Gone));
            return Ok(());
        }
        let joined = text(ServerMessage::UserJoined {
            user: &conn.user,
            client: &conn.client,
        });
        self.broadcast(None, joined);
        self.write_bus(BusWrite::PresencePut(vec![self.entry(&conn)]));
        self.publish(BusEvent::Joined {
            instance: self.hub.settings.instance_id.clone(),
            presence: conn.presence(),
        });
        debug!(client = %conn.client, user = %conn.user.id, resumed = ?setup.resume, "joined");
        self.conns.push(conn);
        self.idle_since = None;
        let _ = reply.send(Ok(()));
        Ok(())
    }

    fn current_cursors(&self) -> Vec<CursorInfo> {
        let head = self.state.version();
        self.cursors
            .values()
            .filter_map(|c| {
                let t = |i: Option<u64>| -> Option<Option<u64>> {
                    match i {
                        None => Some(None),
                        Some(i) => Some(Some(
                            self.state.transform_index(c.version, i as usize)? as u64
                        )),
                    }
                };
                Some(CursorInfo {
                    client: c.client.clone(),
                    user: c.user.clone(),
                    version: head,
                    anchor: t(c.anchor)?,
                    head: t(c.head)?,
                })
            })
            .collect()
    }

    async fn op(
        &mut self,
        reply: Reply,
        base: u64,
        seq: u64,
        op: Operation,
    ) -> Result<(), HubError> {
        let (client, user, role, kind) = match &reply {
            Reply::Conn(conn) => match self.conns.iter().find(|c| c.id == *conn) {
                Some(c) => (c.client.clone(), c.user.id.clone(), c.role, EditKind::Edit),
                None => return Ok(()),
            },
            Reply::Http {
                client,
                user,
                role,
                kind,
                ..
            } => (client.clone(), user.clone(), *role, *kind),
        };
        if !role.can_edit() {
            self.answer(
                reply,
                seq,
                Err(Refusal::new(ErrorCode::Forbidden, "viewers cannot edit")),
            );
            return Ok(());
        }
        if seq == 0 {
            self.answer(
                reply,
                seq,
                Err(Refusal::new(ErrorCode::BadMessage, "seq starts at 1")),
            );
            return Ok(());
        }
        if base > self.state.version() {
            // Another instance may be ahead of us.
            self.refill().await?;
        }
        // A resubmit of a committed op is answered before any validation:
        // its base may be long gone.
        if let Some(&(last, version)) = self.clients.get(&client) {
            if seq <= last {
                return self.ack_duplicate(reply, &client, seq, version).await;
            }
        }
        metrics::histogram!("tandem_rebase_depth")
            .record(self.state.version().saturating_sub(base) as f64);
        let mut op = match self.state.rebase(base, op) {
            Ok(op) => op,
            Err(e) => {
                // Committed through another instance we have not heard from?
                if let Ok(Some((last, version))) =
                    self.hub.sequencer.last_seq(&self.id, &client).await
                {
                    if seq <= last {
                        return self.ack_duplicate(reply, &client, seq, version).await;
                    }
                }
                let refusal = match e {
                    _ if self.needs_catch_up => Refusal::new(ErrorCode::Internal, UNAVAILABLE),
                    RebaseError::OutOfRange { base, oldest, head } => Refusal::new(
                        ErrorCode::VersionOutOfRange,
                        &format!(
                            "version {base} is outside {oldest}..={head}; reload the document"
                        ),
                    ),
                    RebaseError::Op(e) => Refusal::new(ErrorCode::BadOp, &e.to_string()),
                };
                self.answer(reply, seq, Err(refusal));
                return Ok(());
            }
        };
        // The version `op` applies to; when the document moves past it
        // (missed commits, or a pause), the op is rebased once, here.
        let mut based_on = self.state.version();
        let mut reseeded = false;
        for attempt in 0..MAX_COMMIT_RETRIES {
            if attempt > 0 {
                metrics::counter!("tandem_commit_retries_total").increment(1);
            }
            if attempt >= 2 {
                let max_us = 200 * attempt as u64;
                let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=max_us);
                tokio::time::sleep(Duration::from_micros(pause)).await;
                // Others committed meanwhile: catch up before trying again.
                self.refill().await?;
            }
            if self.state.version() > based_on {
                op = match self.state.rebase(based_on, op) {
                    Ok(op) => op,
                    Err(e) => {
                        warn!(error = %e, "rebase onto newer commits failed");
                        self.answer(
                            reply,
                            seq,
                            Err(Refusal::new(ErrorCode::Internal, UNAVAILABLE)),
                        );
                        return Ok(());
                    }
                };
                based_on = self.state.version();
            }
            if op.target_len() > self.hub.settings.max_doc_chars && op.target_len() > op.base_len()
            {
                let m = format!(
                    "the document would have {} characters; the limit is {}",
                    op.target_len(),
                    self.hub.settings.max_doc_chars
                );
                self.answer(reply, seq, Err(Refusal::new(ErrorCode::DocTooLarge, &m)));
                return Ok(());
            }
            let req = CommitRequest {
                base: based_on,
                op: op.clone(),
                user: user.clone(),
                client: client.clone(),
                seq,
                time: (self.hub.clock)(),
            };
            let started = Instant::now();
            let outcome = match self.hub.sequencer.commit(&self.id, req).await {
                Ok(o) => o,
                Err(BusError::NotSeeded) if !reseeded => {
                    reseeded = true;
                    match self.reseed().await {
                        Ok(()) => continue,
                        Err(e) if is_transient(&e) => {
                            self.answer(
                                reply,
                                seq,
                                Err(Refusal::new(ErrorCode::Internal, UNAVAILABLE)),
                            );
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    warn!(error = %e, "commit failed");
                    self.answer(
                        reply,
                        seq,
                        Err(Refusal::new(ErrorCode::Internal, UNAVAILABLE)),
                    );
                    return Ok(());
                }
            };
            metrics::histogram!("tandem_commit_seconds").record(started.elapsed().as_secs_f64());
            match outcome {
                CommitOutcome::Committed(rec) => {
                    metrics::counter!("tandem_ops_committed_total").increment(1);
                    let version = rec.version;
                    // The state is at `version - 1` here: the inverse is exact.
                    let inverse = rec.op.invert(self.state.rope());
                    let time = rec.time;
                    self.ingest(rec).await?;
                    if let Ok(op) = inverse {
                        self.remember_for_undo(&user, kind, UndoEntry { version, op, time })
                            .await;
                    }
                    // A socket got its ack in the fan-out, in order.
                    if let Reply::Http { reply, .. } = reply {
                        let _ = reply.send(Ok(Ok(version)));
                    }
                    return Ok(());
                }
                CommitOutcome::Duplicate { version } => {
                    return self.ack_duplicate(reply, &client, seq, version).await;
                }
                CommitOutcome::Stale { missed } => {
                    // Rebased at the top of the next round.
                    for r in missed {
                        self.ingest(r).await?;
                    }
                }
            }
        }
        warn!("commit retries exhausted");
        let busy = Refusal::new(
            ErrorCode::Internal,
            "the document is too busy; resend the edit",
        );
        self.answer(reply, seq, Err(busy));
        Ok(())
    }

    /// The merge of every state kept for the document: the stored title,
    /// each instance's row in the store, each instance's state in the bus.
    async fn load_meta(&self) -> Result<DocMeta, HubError> {
        let title = self
            .hub
            .store
            .document_meta(&self.id)
            .await?
            .map(|m| m.title)
            .unwrap_or_default();
        let mut meta = DocMeta::with_title(&title);
        let mut states = self.hub.store.meta_states(&self.id).await?;
        states.extend(self.hub.bus.meta_all(&self.id).await?);
        for s in states {
            match DocMeta::from_json(&s) {
                Some(m) => meta.merge(&m),
                None => warn!("unreadable metadata state ignored"),
            }
        }
        Ok(meta)
    }

    async fn change_meta(&mut self, change: MetaChange) -> Result<MetaView, HubError> {
        let me = self.hub.settings.instance_id.clone();
        let now = (self.hub.clock)();
        match change {
            MetaChange::Title(t) => self.meta.title.set(&t, now, &me),
            MetaChange::AddTag(t) => self.meta.tags.add(&t, &me),
            MetaChange::RemoveTag(t) => self.meta.tags.remove(&t),
        }
        self.meta_changed().await?;
        Ok(self.meta.view())
    }

    /// After a local change: tell our clients, keep our state in the store
    /// and the bus, and send it to the other instances.
    async fn meta_changed(&mut self) -> Result<(), HubError> {
        self.meta_announce();
        self.store_meta().await
    }

    /// Tell our clients and the other instances, and keep our state in the
    /// bus; the store write is left to [`DocTask::store_meta`].
    fn meta_announce(&mut self) {
        let view = self.meta.view();
        self.broadcast(None, text(ServerMessage::Meta(&view)));
        let me = self.hub.settings.instance_id.clone();
        self.publish(BusEvent::Meta {
            instance: me,
            state: Box::new(self.meta.clone()),
        });
        self.write_bus(BusWrite::MetaPut(self.meta.to_json()));
        self.meta_dirty = true;
    }

    /// Store this instance's metadata state if it changed since last stored.
    async fn store_meta(&mut self) -> Result<(), HubError> {
        if !self.meta_dirty {
            return Ok(());
        }
        let me = &self.hub.settings.instance_id;
        let title = self.meta.title.value.clone();
        self.hub
            .store
            .put_meta(&self.id, me, &self.meta.to_json(), &title)
            .await?;
        self.meta_dirty = false;
        Ok(())
    }

    /// Records after `since`: from memory when it reaches back that far,
    /// else from the journal, completed from memory (the journal lags by up
    /// to one flush).
    async fn records(&self, since: u64, limit: usize) -> Result<Vec<Arc<Record>>, HubError> {
        let head = self.state.version();
        if since >= head || limit == 0 {
            return Ok(Vec::new());
        }
        if let Some(it) = self.state.records_after(since) {
            return Ok(it.take(limit).cloned().collect());
        }
        let journal = self
            .hub
            .store
            .journal_after(&self.id, since, limit.min(u32::MAX as usize) as u32)
            .await?;
        let mut out: Vec<Arc<Record>> = journal.into_iter().map(Arc::new).collect();
        let last = out.last().map_or(since, |r| r.version);
        if out.len() < limit {
            if let Some(it) = self.state.records_after(last) {
                out.extend(it.take(limit - out.len()).cloned());
            }
        }
        Ok(out)
    }

    /// Put a committed edit's inverse on its user's undo stack (or, for an
    /// undo, on the redo stack), in order with the document's other bus
    /// writes. Waits only when the outbox is full.
    async fn remember_for_undo(&self, user: &str, kind: EditKind, entry: UndoEntry) {
        let (stack, run, clear_redo) = match kind {
            EditKind::Edit => (Stack::Undo, true, true),
            EditKind::Undo => (Stack::Redo, false, false),
            EditKind::Redo => (Stack::Undo, false, false),
        };
        let w = BusWrite::Stack {
            user: user.to_owned(),
            push: StackPush {
                stack,
                entry,
                replace_top_at: None,
                clear_redo,
            },
            run,
        };
        if self.outbox.send(w).await.is_err() {
            debug!("bus writer gone; an undo step was not kept");
        }
    }

    /// `undo` / `redo`: revert the user's last step (or re-apply the last
    /// undone one), transformed past everything committed since, as a new
    /// edit every client receives. Steps that others' edits have already
    /// made empty are skipped.
    async fn undo(&mut self, conn: u64, redo: bool) -> Result<(), HubError> {
        let Some(c) = self.conns.iter().find(|c| c.id == conn) else {
            return Ok(());
        };
        if !c.role.can_edit() {
            let m = "viewers cannot edit";
            self.send_to(conn, error_msg(ErrorCode::Forbidden, m, None));
            return Ok(());
        }
        let (user, role) = (c.user.id.clone(), c.role);
        let (stack, kind) = if redo {
            (Stack::Redo, EditKind::Redo)
        } else {
            (Stack::Undo, EditKind::Undo)
        };
        // The stacks must hold every edit this instance committed so far.
        let (done, wait) = oneshot::channel();
        if self.outbox.send(BusWrite::Barrier(done)).await.is_ok() {
            let _ = wait.await;
        }
        for _ in 0..16 {
            let entry = match self.hub.sequencer.stack_pop(&self.id, &user, stack).await {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(()),
                Err(e) => {
                    warn!(error = %e, "undo stack unavailable");
                    self.send_to(conn, error_msg(ErrorCode::Internal, UNAVAILABLE, None));
                    return Ok(());
                }
            };
            if entry.version > self.state.version() {
                self.refill().await?;
            }
            let op =
                match self
                    .state
                    .rebase_with(entry.version, entry.op.clone(), Tie::CommittedFirst)
                {
                    Ok(op) if op.is_noop() => continue,
                    Ok(op) => op,
                    Err(_) => {
                        let m = "the step to undo is older than the history the server keeps";
                        self.send_to(conn, error_msg(ErrorCode::VersionOutOfRange, m, None));
                        return Ok(());
                    }
                };
            let (tx, rx) = oneshot::channel();
            let reply = Reply::Http {
                client: format!(
                    "{}-{}",
                    if redo { "redo" } else { "undo" },
                    uuid::Uuid::new_v4().simple()
                ),
                user: user.clone(),
                role,
                reply: tx,
                kind,
            };
            let head = self.state.version();
            self.op(reply, head, 1, op).await?;
            if let Ok(Ok(Err(refusal))) = rx.await {
                // Not committed: keep the step for a later try.
                let push = StackPush {
                    stack,
                    entry,
                    replace_top_at: None,
                    clear_redo: false,
                };
                let _ = self.hub.sequencer.stack_push(&self.id, &user, &push).await;
                self.send_to(conn, error_msg(refusal.code, &refusal.message, None));
            }
            return Ok(());
        }
        Ok(())
    }

    /// Answer whoever submitted an op: a socket gets `ack`/`error`, an HTTP
    /// caller the version or the refusal.
    fn answer(&mut self, reply: Reply, seq: u64, result: Result<u64, Refusal>) {
        match reply {
            Reply::Conn(conn) => {
                let msg = match result {
                    Ok(version) => text(ServerMessage::Ack { seq, version }),
                    Err(r) => error_msg(r.code, &r.message, Some(seq)),
                };
                self.send_to(conn, msg);
            }
            Reply::Http { reply, .. } => {
                if let Err(r) = &result {
                    count_refusal(r.code);
                }
                let _ = reply.send(Ok(result));
            }
        }
    }

    /// Answer a resend of a committed op with the version it produced, once
    /// this connection has every op below that version.
    async fn ack_duplicate(
        &mut self,
        reply: Reply,
        client: &str,
        seq: u64,
        version: u64,
    ) -> Result<(), HubError> {
        metrics::counter!("tandem_duplicate_resubmits_total").increment(1);
        if version > self.state.version() {
            self.refill().await?;
        }
        if version > self.state.version() {
            self.answer(
                reply,
                seq,
                Err(Refusal::new(ErrorCode::Internal, UNAVAILABLE)),
            );
            return Ok(());
        }
        let version = self
            .state
            .history()
            .version_of(client, seq)
            .unwrap_or(version);
        self.answer(reply, seq, Ok(version));
        Ok(())
    }

    fn cursor(&mut self, conn: u64, version: u64, anchor: Option<u64>, head: Option<u64>) {
        let Some(c) = self.conns.iter().find(|c| c.id == conn) else {
            return;
        };
        let (client, user) = (c.client.clone(), c.user.id.clone());
        if version > self.state.version() {
            let m = "cursor version is ahead of the document";
            self.send_to(conn, error_msg(ErrorCode::VersionOutOfRange, m, None));
            return;
        }
        if anchor.is_some() != head.is_some() {
            let m = "anchor and head must both be set or both be null";
            self.send_to(conn, error_msg(ErrorCode::BadMessage, m, None));
            return;
        }
        // Too old to transform: drop it; the next one will do.
        let Some(len) = self.state.len_at(version) else {
            return;
        };
        if anchor.max(head).is_some_and(|i| i > len as u64) {
            let m = format!("cursor is beyond the document end ({len})");
            self.send_to(conn, error_msg(ErrorCode::BadMessage, &m, None));
            return;
        }
        let t = |i: Option<u64>| {
            i.and_then(|i| {
                self.state
                    .transform_index(version, i as usize)
                    .map(|x| x as u64)
            })
        };
        let cursor = CursorInfo {
            client: client.clone(),
            user,
            version: self.state.version(),
            anchor: t(anchor),
            head: t(head),
        };
        let msg = text(ServerMessage::Cursor(&cursor));
        self.broadcast(Some(conn), msg);
        self.publish(BusEvent::Cursor {
            instance: self.hub.settings.instance_id.clone(),
            cursor: cursor.clone(),
        });
        self.keep_cursor(cursor);
    }

    /// Remember a caret for later joiners; a null one is a removal.
    fn keep_cursor(&mut self, cursor: CursorInfo) {
        if cursor.anchor.is_none() {
            self.cursors.remove(&cursor.client);
        } else {
            self.cursors.insert(cursor.client.clone(), cursor);
        }
    }

    // ---- bus ----

    async fn handle_bus(&mut self, ev: BusRecv) -> Result<(), HubError> {
        let ev = match ev {
            BusRecv::Event(ev) => ev,
            BusRecv::Lagged => return self.refill().await,
            BusRecv::Closed => {
                // The bus is gone (shutdown or backend swap): resubscribe.
                self.sub = self.hub.bus.subscribe(&self.id).await?;
                return self.refill().await;
            }
        };
        let me = &self.hub.settings.instance_id;
        match &*ev {
            BusEvent::Committed(rec) => self.ingest(rec.clone()).await?,
            BusEvent::Resync => self.refill().await?,
            BusEvent::Access(AccessChange::Member { user, role }) => {
                let affected: Vec<u64> = self
                    .conns
                    .iter()
                    .filter(|c| &c.user.id == user)
                    .map(|c| c.id)
                    .collect();
                match role {
                    Some(role) => {
                        let mut told = Vec::new();
                        for c in self
                            .conns
                            .iter_mut()
                            .filter(|c| &c.user.id == user && c.role != Role::Owner)
                        {
                            if c.role != *role {
                                told.push(c.id);
                            }
                            c.role = *role;
                        }
                        let msg = text(ServerMessage::Role { role: *role });
                        for id in told {
                            self.send_to(id, msg.clone());
                        }
                    }
                    None => {
                        for id in &affected {
                            let m = "your access to this document was revoked";
                            self.send_to(*id, error_msg(ErrorCode::Forbidden, m, None));
                            self.send_to(*id, Outbound::Close(close::POLICY, "access revoked"));
                        }
                        self.drop_conns(&affected, "access revoked");
                    }
                }
            }
            BusEvent::Meta { instance, state } if instance != me => {
                let before = self.meta.view();
                self.meta.merge(state);
                let after = self.meta.view();
                if after != before {
                    self.broadcast(None, text(ServerMessage::Meta(&after)));
                }
            }
            BusEvent::Access(AccessChange::Deleted) => {
                let all: Vec<u64> = self.conns.iter().map(|c| c.id).collect();
                for id in &all {
                    self.send_to(
                        *id,
                        error_msg(ErrorCode::Forbidden, "this document was deleted", None),
                    );
                    self.send_to(*id, Outbound::Close(close::POLICY, "document deleted"));
                }
                self.drop_conns(&all, "document deleted");
                self.deleted = true;
            }
            BusEvent::Joined { instance, presence } if instance != me => {
                self.remote_joined(presence.clone())
            }
            BusEvent::Left { instance, presence } if instance != me => self.remote_left(presence),
            BusEvent::Cursor { instance, cursor } if instance != me => {
                self.broadcast(None, text(ServerMessage::Cursor(cursor)));
                self.keep_cursor(cursor.clone());
            }
            _ => {}
        }
        Ok(())
    }
}

fn unregister(hub: &Inner, id: &str, generation: u64) {
    let mut docs = hub.lock_docs();
    if docs.get(id).is_some_and(|(g, _)| *g == generation) {
        docs.remove(id);
    }
}
