//! The registry of document tasks: building the hub, spawning a task on
//! first use into the docs map (one inbox per open document, tagged with
//! the task's generation), asking it with a retry when it was unloading,
//! and shutting everything down in order. The map itself and unregistering
//! are [`Inner`]'s, in `shared.rs`.
//! Imports from the hub: the leaves and `task` (to spawn a `DocTask`).
//! Must not import: axum, sqlx, redis, the `impl DocTask` files. The map's
//! mutex guards a lookup only.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info_span, Instrument};

use super::shared::{Background, Hub, Inner};
use super::state::Cmd;
use super::task::DocTask;
use super::types::{now_ms, HubError, HubSettings};
use crate::bus::Backends;
use crate::health::StorageHealth;
use crate::persist::Persister;
use crate::store::Store;

/// Capacity of each document task's inbox.
const INBOX: usize = 1024;

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
