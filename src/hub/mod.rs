//! The hub: a registry of document tasks, one per open document, each the
//! sole owner of that document's state on this instance.
//!
//! Owns: [`Hub`]'s methods for the web layer (ready, join, edit, read,
//! notify) and the hub's outside face: everything public is re-exported
//! here. The seams live beside it. Leaves, importing no `impl DocTask`
//! file: `types` (settings, errors, answers, close codes, encoders),
//! `edits` (an edit, its origin, undo steps, the pipeline's bookkeeping),
//! `state` (commands, per-connection state, the room, metadata state),
//! `shared` (what every task shares, and the `Hub` handle) and `outbox`
//! (the ordered bus writer). `task` holds `DocTask` (load, the select
//! loop, unload, the persistence hand-off) and imports only leaves. The
//! `impl DocTask` files import only leaves and `task`: `commit` (the one
//! edit pipeline), `sync` (ordered application of committed records),
//! `presence` (fan-out, leaves, heartbeat, access changes), `join` (join
//! and resume), `cursors`, `awareness`, `undo`, `meta`, `history` (also
//! `Hub::history`). `registry` (spawn, ask, shutdown) and `connection`
//! (the handle a socket holds) sit above them. No hub module imports this
//! one (but its tests): the import graph is acyclic.
//! Sockets talk to a document task over a bounded channel; the task answers
//! on each connection's bounded outbound queue and disconnects a client
//! whose queue is full rather than wait for it.
//! Must not import: axum, sqlx, redis. No lock is held across `.await`.

mod awareness;
mod commit;
mod connection;
mod cursors;
mod edits;
mod history;
mod join;
mod meta;
mod outbox;
mod presence;
mod registry;
mod shared;
mod state;
mod sync;
mod task;
#[cfg(test)]
mod tests;
mod types;
mod undo;

use std::time::Duration;

pub use crate::bus::AccessChange;
use crate::bus::BusEvent;
use crate::health::{Fault, Part};
use crate::protocol::{Presence, Role, UserInfo};
pub use connection::ConnHandle;
pub use edits::Edit;
use edits::Origin;
pub use shared::{Background, Hub};
use state::{Cmd, ConnState};
pub use state::{HistoryPage, MetaChange, MetaResult};
pub use types::{
    close, error_msg, now_ms, DocView, EditResult, HubError, HubSettings, Outbound, Refusal, Resume,
};

impl Hub {
    pub fn instance_id(&self) -> &str {
        &self.inner.settings.instance_id
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Ready for traffic: not draining, Redis (if any) and the database
    /// answer. The error says which part is not ready.
    ///
    /// Storage that is failing to take writes is tried again here (one
    /// small write), so an instance recovers its readiness by itself once
    /// the store takes writes, edits or not. Failing commits (the embedded
    /// journal, or Redis) make the instance not ready: it can take no edit.
    /// Failing persistence alone does not, in clustered mode, where edits
    /// still commit to Redis: every instance shares the one database, and
    /// taking them all out would stop editing too. It is reported as a
    /// degradation (the `Ok` text) and in `tandem_storage_failing`.
    pub async fn ready(&self) -> Result<Option<String>, String> {
        if self.is_shutting_down() {
            return Err("draining".into());
        }
        let timeout = Duration::from_secs(2);
        let inner = &self.inner;
        let embedded = inner.sequencer.journals();
        let now = (inner.clock)();
        match tokio::time::timeout(timeout, inner.bus.ping()).await {
            Ok(Ok(())) => {}
            // A Redis whose last save failed refuses PING too (`MISCONF`):
            // it answers, but takes no commit.
            Ok(Err(e)) => {
                let e = e.to_string();
                let fault = Fault::classify(&e);
                if fault == Fault::Unreachable {
                    return Err("redis unreachable".into());
                }
                inner.health.fail_as(Part::Commit, fault, &e, now);
                let f = inner.health.failing(Part::Commit);
                return Err(f.map_or_else(|| "redis refuses writes".into(), |f| f.describe(now)));
            }
            Err(_) => return Err("redis unreachable".into()),
        }
        let store_up = matches!(
            tokio::time::timeout(timeout, inner.store.ping()).await,
            Ok(Ok(()))
        );
        if !store_up && embedded {
            return Err("database unreachable".into());
        }
        let instance = self.instance_id();
        if let Some(f) = inner.health.failing(Part::Commit) {
            let probe = async {
                if embedded {
                    inner
                        .store
                        .probe_write(instance, now)
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    inner
                        .sequencer
                        .probe_write(instance)
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            match tokio::time::timeout(timeout, probe).await {
                Ok(Ok(())) => inner.health.ok(Part::Commit),
                Ok(Err(e)) => {
                    inner.health.fail(Part::Commit, &e, now);
                    return Err(f.describe(now));
                }
                Err(_) => return Err(f.describe(now)),
            }
        }
        let mut degraded = Vec::new();
        if !store_up {
            degraded.push("database unreachable".to_owned());
        }
        if let Some(f) = inner.health.failing(Part::Persist) {
            // The persister finds out by itself on its next round; the
            // probe only says whether that will go through.
            match tokio::time::timeout(timeout, inner.store.probe_write(instance, now)).await {
                Ok(Ok(())) => {}
                _ => degraded.push(f.describe(now)),
            }
        }
        Ok((!degraded.is_empty()).then(|| degraded.join("; ")))
    }

    /// Create the document unless it exists (anonymous mode opens, and so
    /// creates, documents nobody owns).
    pub async fn ensure_document(&self, doc: &str) -> Result<(), HubError> {
        let now = (self.inner.clock)();
        self.inner.store.ensure_document(doc, now).await?;
        Ok(())
    }

    /// Join a document as `user` with connection id `client` (`resume`: the
    /// client already has the document at a version). On success the init
    /// (and any resume replay) is already queued on the receiver.
    pub async fn join(
        &self,
        doc: &str,
        user: UserInfo,
        client: String,
        role: Role,
        resume: Option<Resume>,
    ) -> Result<(ConnHandle, tokio::sync::mpsc::Receiver<Outbound>), HubError> {
        let (otx, orx) = tokio::sync::mpsc::channel(self.inner.settings.outbound_queue);
        let id = self.inner.next_id();
        let conn = ConnState {
            id,
            user,
            client,
            role,
            tx: otx,
            first_sent_seq: None,
        };
        let ((), tx) = self
            .ask_via(doc, |reply| Cmd::Join {
                conn: Box::new(conn.clone()),
                resume: resume.clone(),
                reply,
            })
            .await?;
        Ok((ConnHandle::new(id, tx), orx))
    }

    /// Live content and version (loads the document if needed).
    pub async fn view(&self, doc: &str) -> Result<DocView, HubError> {
        self.ask(doc, Cmd::View).await
    }

    /// The document's metadata after `change`, replicated to every instance
    /// (or why the document refused the change: too many tags).
    pub async fn meta(&self, doc: &str, change: MetaChange) -> MetaResult {
        self.ask(doc, |reply| Cmd::Meta(change.clone(), reply))
            .await
    }

    /// Commit an edit made over REST by `user` (transformed like a socket's
    /// op). Returns the version it produced.
    pub async fn edit(&self, doc: &str, user: &str, role: Role, edit: Edit) -> EditResult {
        // One client id per REST edit, kept across retries so a retry is
        // deduplicated.
        let client =
            crate::doc::ephemeral_client("http", &uuid::Uuid::new_v4().simple().to_string());
        self.ask(doc, |reply| Cmd::Edit {
            origin: Origin::Rest {
                client: client.clone(),
                user: user.to_owned(),
                role,
                reply,
            },
            edit: edit.clone(),
            // The REST request's span (it follows an incoming traceparent).
            span: crate::otel::edit_span(),
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
}
