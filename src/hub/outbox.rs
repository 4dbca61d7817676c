//! A document's ordered bus writer: presence, cursor, awareness and metadata
//! writes the document task does not wait for, applied in order by one
//! worker per document. Losses (backend down) are repaired by the next
//! heartbeat.
//!
//! Owns: [`BusWrite`], [`Outbox`] (the task's end) and the worker.
//! A leaf: imports from the hub only `shared`.
//! Must not import: axum, sqlx, redis, the `impl DocTask` files.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::debug;

use super::shared::Inner;
use crate::bus::{BusEvent, PresenceEntry};
use crate::protocol::AwarenessInfo;

/// Writes queued per document before presence and cursors are dropped.
const CAPACITY: usize = 1024;

/// A write to the bus that the document task does not wait for.
pub(super) enum BusWrite {
    Publish(BusEvent),
    PresencePut(Vec<PresenceEntry>),
    PresenceRemove(PresenceEntry),
    /// This instance's metadata state (JSON).
    MetaPut(String),
    /// A local client's awareness, for instances loading the document.
    AwarenessPut(AwarenessInfo),
    /// Clients whose awareness is to go (left, or reaped).
    AwarenessRemove(Vec<String>),
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
            BusWrite::AwarenessPut(info) => {
                hub.bus
                    .awareness_put(&doc, &info, hub.presence_lease_ms())
                    .await
            }
            BusWrite::AwarenessRemove(clients) => hub.bus.awareness_remove(&doc, &clients).await,
            BusWrite::MetaPut(state) => {
                hub.meta_store
                    .put(&doc, &hub.settings.instance_id, &state)
                    .await
            }
        };
        if let Err(e) = r {
            debug!(error = %e, "bus write failed");
        }
    }
}
