//! The registry of document tasks: the docs map (one inbox per open
//! document, tagged with the task's generation), spawning a task on first
//! use, asking it with a retry when it was unloading, unregistering, and
//! shutting everything down in order.
//!
//! Owns: [`Inner`] (what every document task shares: settings, backends,
//! store, persister, the map) and [`Background`].
//! Must not import: axum, sqlx, redis. The map's mutex guards a lookup only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Instrument};

use super::task::{Cmd, DocTask};
use super::{now_ms, Hub, HubError, HubSettings};
use crate::bus::{Backends, Bus, MetaStore, Sequencer, UndoStacks};
use crate::health::StorageHealth;
use crate::persist::Persister;
use crate::store::Store;

/// Capacity of each document task's inbox.
const INBOX: usize = 1024;

/// Open documents: id → (generation of the task serving it, its inbox).
type Docs = HashMap<String, (u64, mpsc::Sender<Cmd>)>;

/// What the hub and every document task share.
pub(super) struct Inner {
    pub(super) settings: HubSettings,
    pub(super) sequencer: Arc<dyn Sequencer>,
    pub(super) bus: Arc<dyn Bus>,
    pub(super) stacks: Arc<dyn UndoStacks>,
    pub(super) meta_store: Arc<dyn MetaStore>,
    pub(super) store: Arc<dyn Store>,
    pub(super) persister: Persister,
    /// Whether storage takes writes (readiness, metrics).
    pub(super) health: Arc<StorageHealth>,
    docs: Mutex<Docs>,
    next_id: AtomicU64,
    pub(super) clock: fn() -> i64,
    /// Cancels document tasks (shutdown).
    pub(super) cancel: CancellationToken,
    pub(super) docs_tracker: TaskTracker,
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

impl Inner {
    fn lock_docs(&self) -> MutexGuard<'_, Docs> {
        self.docs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh id (connections and task generations share the counter).
    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How long a presence entry written now stays valid: ⅔ of the TTL,
    /// refreshed every ⅓.
    pub(super) fn presence_lease_ms(&self) -> i64 {
        self.settings.presence_ttl.as_millis() as i64 * 2 / 3
    }

    /// Forget the task of generation `generation` (a newer one stays).
    pub(super) fn unregister(&self, id: &str, generation: u64) {
        self.unregister_unless(id, generation, || false);
    }

    /// Unregister, unless `still_wanted` says otherwise while the map is
    /// locked (so no one can find the task between the check and the removal).
    pub(super) fn unregister_unless(
        &self,
        id: &str,
        generation: u64,
        still_wanted: impl FnOnce() -> bool,
    ) -> bool {
        let mut docs = self.lock_docs();
        if still_wanted() {
            return false;
        }
        if docs.get(id).is_some_and(|(g, _)| *g == generation) {
            docs.remove(id);
        }
        true
    }
}

impl Hub {
    pub fn new(
        settings: HubSettings,
        backends: Backends,
        store: Arc<dyn Store>,
        background: Background,
    ) -> Self {
        let persist_tracker = TaskTracker::new();
        let health = Arc::new(StorageHealth::default());
        let persister = Persister::spawn(
            store.clone(),
            backends.sequencer.clone(),
            health.clone(),
            now_ms,
            &persist_tracker,
        );
        Self {
            inner: Arc::new(Inner {
                settings,
                sequencer: backends.sequencer,
                bus: backends.bus,
                stacks: backends.stacks,
                meta_store: backends.meta,
                store,
                persister,
                health,
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
        let generation = self.inner.next_id();
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
    pub(super) async fn ask<T>(
        &self,
        doc: &str,
        make: impl Fn(oneshot::Sender<Result<T, HubError>>) -> Cmd,
    ) -> Result<T, HubError> {
        self.ask_via(doc, make).await.map(|(v, _)| v)
    }

    /// [`Hub::ask`], also returning the inbox of the task that answered.
    pub(super) async fn ask_via<T>(
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

    /// Stop every document task (each hands its final snapshot to the
    /// persister and closes its connections with "going away"), then flush
    /// the persister. Returns whether everything was made durable.
    pub async fn shutdown(&self) -> bool {
        let inner = &self.inner;
        inner.cancel.cancel();
        inner.docs_tracker.close();
        inner.docs_tracker.wait().await;
        let ok = inner.persister.shutdown().await;
        inner.persist_tracker.close();
        inner.persist_tracker.wait().await;
        inner.background.cancel.cancel();
        inner.background.tracker.close();
        inner.background.tracker.wait().await;
        inner.store.close().await;
        ok
    }
}
