//! The hub: a registry of document tasks, one per open document, each the
//! sole owner of that document's state on this instance.
//!
//! Owns: [`Hub`], the handle the web layer holds (join, edit, read, notify,
//! shut down), its settings, errors and answers. The seams live beside it:
//! `registry` (the docs map: spawn, look up, unregister, shutdown),
//! `connection` (the handle a socket holds and what the task keeps per
//! connection), `task` (a document task: load, the select loop, unload,
//! the persistence hand-off), `commit` (the one edit pipeline), `sync`
//! (ordered application of committed records), `presence` (fan-out, joins,
//! leaves, heartbeat, access changes), `join` (join and resume), `cursors`, `awareness`,
//! `undo`, `meta`, `history` and `outbox` (the ordered bus writer).
//! Sockets talk to a document task over a bounded channel; the task answers
//! on each connection's bounded outbound queue and disconnects a client
//! whose queue is full rather than wait for it.
//! Must not import: axum, sqlx, redis. No lock is held across `.await`.

mod awareness;
mod commit;
mod connection;
mod cursors;
mod history;
mod join;
mod meta;
mod outbox;
mod presence;
mod registry;
mod sync;
mod task;
#[cfg(test)]
mod tests;
mod undo;

use std::sync::Arc;
use std::time::Duration;

pub use crate::bus::AccessChange;
use crate::bus::{BusError, BusEvent};
use crate::health::{Fault, Part};
use crate::meta::MetaView;
use crate::protocol::{ErrorCode, Presence, Role, ServerMessage, UserInfo};
use crate::store::StoreError;
pub use commit::Edit;
use commit::Origin;
pub use connection::ConnHandle;
use connection::ConnState;
pub use history::HistoryPage;
pub use meta::{MetaChange, MetaResult};
pub use registry::Background;
use registry::Inner;
use task::Cmd;

/// Tuning for document tasks.
#[derive(Clone, Debug)]
pub struct HubSettings {
    pub instance_id: String,
    /// In-memory history per document: count and bytes.
    pub history_retain: crate::doc::Retain,
    /// Clients kept in a document's dedupe table.
    pub max_clients_per_doc: usize,
    /// Tags a document may carry (a local add beyond it is refused).
    pub max_tags_per_doc: usize,
    pub snapshot_interval: Duration,
    pub idle_unload: Duration,
    pub outbound_queue: usize,
    pub max_doc_chars: usize,
    /// A user of a vanished instance disappears for everyone within this.
    pub presence_ttl: Duration,
    /// Send a `check` after every version that is a multiple of this (0:
    /// never).
    pub checksum_every: u64,
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
    /// This instance's state of the document can no longer be trusted
    /// (the sequencer's history forked from ours, a gap the log cannot
    /// fill, a seed that conflicts): the task resets and reloads.
    #[error("document state diverged: {0}")]
    Diverged(String),
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("document task is gone")]
    Gone,
}

/// Why an edit was refused; the message is safe to show.
pub use crate::pipeline::Refusal;

/// How an edit submitted to the hub ended: the version it produced, or why
/// the document refused it (inner), or why the hub could not ask (outer).
pub type EditResult = Result<Result<u64, Refusal>, HubError>;

/// A client's claim to hold the document already: `version` of the history
/// named `history` (the `init.history` it got). Honoured (a replay of what
/// it missed) only on the document's current history; otherwise, or without
/// `history` (clients from before epochs), it gets a full init.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub version: u64,
    pub history: Option<String>,
}

/// The live state of a document, for REST reads.
#[derive(Clone, Debug)]
pub struct DocView {
    pub content: String,
    pub version: u64,
    /// Title, tags and views (replicated).
    pub meta: MetaView,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Handle to the document registry; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

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

/// A server message, encoded once.
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
