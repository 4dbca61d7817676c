//! What the hub handle and every document task share: [`Inner`] (settings,
//! backends, store, persister, the docs map with its generations and the id
//! counter), [`Hub`] (the handle over it; its methods live in `mod.rs`,
//! `registry.rs` and `history.rs`) and [`Background`].
//! A leaf: imports from the hub only `types` and `state`.
//! Must not import: axum, sqlx, redis, the `impl DocTask` files. The map's
//! mutex guards a lookup only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::Cmd;
use super::types::HubSettings;
use crate::bus::{Bus, MetaStore, Sequencer, UndoStacks};
use crate::health::StorageHealth;
use crate::persist::Persister;
use crate::store::Store;

/// Handle to the document registry; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    pub(super) inner: Arc<Inner>,
}

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
    pub(super) docs: Mutex<Docs>,
    pub(super) next_id: AtomicU64,
    pub(super) clock: fn() -> i64,
    /// Cancels document tasks (shutdown).
    pub(super) cancel: CancellationToken,
    pub(super) docs_tracker: TaskTracker,
    pub(super) persist_tracker: TaskTracker,
    /// Backend tasks (e.g. the pub/sub loop), stopped last.
    pub(super) background: Background,
}

/// Long-lived backend tasks owned by the hub: cancelled and awaited after
/// documents and the persister have stopped.
pub struct Background {
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
}

impl Inner {
    pub(super) fn lock_docs(&self) -> MutexGuard<'_, Docs> {
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
