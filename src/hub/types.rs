//! What every part of the hub shares and the outside sees: the settings
//! ([`HubSettings`]), errors ([`HubError`], [`Refusal`]), answers
//! ([`EditResult`], [`DocView`], [`Resume`]), what a task sends a
//! connection ([`Outbound`], [`close`] codes) and the encoders for it
//! (`text`, [`error_msg`]), and the small shared rules (`is_transient`,
//! `INIT_LIST_MAX`).
//! A leaf: imports nothing from the rest of the hub.
//! Must not import: axum, sqlx, redis, any other `hub` module.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::BusError;
use crate::meta::MetaView;
use crate::protocol::{ErrorCode, ServerMessage};
use crate::store::StoreError;

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
    /// One committer per document (`COMMIT_LEADER`, clustered): the
    /// lease's length; `None`: every instance commits its own edits.
    pub commit_leader: Option<Duration>,
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

/// A backend outage: refuse or retry, but keep the document and its sockets.
pub(super) fn is_transient(e: &HubError) -> bool {
    matches!(
        e,
        HubError::Bus(BusError::Unavailable(_)) | HubError::Store(_)
    )
}

/// Most entries in an init's `users` and `cursors` lists: a crowded
/// document's newcomer still gets a bounded first frame (the rest arrive as
/// they join or move).
pub(super) const INIT_LIST_MAX: usize = 256;

/// A server message, encoded once.
pub(super) fn text(msg: ServerMessage<'_>) -> Outbound {
    Outbound::Text(msg.to_text().into())
}

/// A refusal, counted by code.
pub fn error_msg(code: ErrorCode, message: &str, seq: Option<u64>) -> Outbound {
    count_refusal(code);
    text(ServerMessage::Error { code, message, seq })
}

pub(super) fn count_refusal(code: ErrorCode) {
    metrics::counter!("tandem_refusals_total", "code" => code.as_str()).increment(1);
}
