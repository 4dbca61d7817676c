//! A document's ordered bus writer: presence, cursor, metadata and undo
//! writes the document task does not wait for, applied in order by one
//! worker per document. Losses (backend down) are repaired by the next
//! heartbeat.
//!
//! Owns: [`BusWrite`], [`Outbox`] (the task's end) and the worker.
//! Must not import: axum, sqlx, redis.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::registry::Inner;
use super::undo::push_step;
use crate::bus::{BusEvent, PresenceEntry};
use crate::undo::StackPush;

/// Writes queued per document before presence and cursors are dropped.
const CAPACITY: usize = 1024;

/// A write to the bus that the document task does not wait for.
pub(super) enum BusWrite {
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
    /// This instance's metadata state (JSON).
    MetaPut(String),
    /// Answered once every write queued before it is done.
    Barrier(oneshot::Sender<()>),
}

/// The document task's end of its bus writer.
pub(super) struct Outbox {
    tx: mpsc::Sender<BusWrite>,
}

impl Outbox {
    /// Start the worker for `doc`; it ends when the outbox is dropped.
    pub(super) fn spawn(hub: &Arc<Inner>, doc: &str) -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        hub.docs_tracker
            .spawn(bus_writer(hub.clone(), doc.to_owned(), rx));
        Self { tx }
    }

    /// Queue a write; presence and cursors never block the document (a full
    /// outbox drops the write; the heartbeat repairs presence).
    pub(super) fn write(&self, w: BusWrite) {
        if self.tx.try_send(w).is_err() {
            debug!("bus outbox full; dropped a write");
        }
    }

    pub(super) fn publish(&self, event: BusEvent) {
        self.write(BusWrite::Publish(event));
    }

    /// Queue a write that must not be dropped, waiting while the outbox is
    /// full; false if the worker is gone.
    pub(super) async fn send(&self, w: BusWrite) -> bool {
        self.tx.send(w).await.is_ok()
    }

    /// Wait until every write queued so far is done.
    pub(super) async fn drain(&self) {
        let (done, wait) = oneshot::channel();
        if self.send(BusWrite::Barrier(done)).await {
            let _ = wait.await;
        }
    }
}

/// Applies a document's bus writes in order; ends when the task drops the
/// sender.
async fn bus_writer(hub: Arc<Inner>, doc: String, mut rx: mpsc::Receiver<BusWrite>) {
    while let Some(w) = rx.recv().await {
        let r = match w {
            BusWrite::Publish(ev) => hub.bus.publish(&doc, ev).await,
            BusWrite::PresencePut(entries) => {
                hub.bus
                    .presence_put(&doc, &entries, (hub.clock)(), hub.presence_lease_ms())
                    .await
            }
            BusWrite::PresenceRemove(entry) => hub.bus.presence_remove(&doc, &entry).await,
            BusWrite::Stack { user, push, run } => {
                push_step(&*hub.stacks, &doc, &user, push, run).await
            }
            BusWrite::MetaPut(state) => {
                hub.meta_store
                    .put(&doc, &hub.settings.instance_id, &state)
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
