//! The plain data a document task holds and is sent: [`Cmd`] (what the hub
//! and sockets ask of a task), [`ConnState`] (what the task keeps per
//! connection: who it is, its role, its outbound queue), the [`Room`]
//! (local connections, other instances' users, carets, awareness),
//! [`MetaState`] and the metadata answers, and [`HistoryPage`]. What the
//! task does with them is in the `impl DocTask` files.
//! A leaf: imports from the hub only `types` and `edits`.
//! Must not import: axum, sqlx, redis, the `impl DocTask` files.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::edits::{Edit, Origin};
use super::types::{DocView, HubError, Outbound, Refusal, Resume};
use crate::doc::Record;
use crate::meta::{DocMeta, MetaView};
use crate::protocol::{AwarenessInfo, CursorInfo, Presence, Role, UserInfo};

/// What a document task is asked to do.
pub(super) enum Cmd {
    Join {
        conn: Box<ConnState>,
        /// The client already has the document at a version.
        resume: Option<Resume>,
        reply: oneshot::Sender<Result<(), HubError>>,
    },
    Leave(u64),
    /// An edit from a socket or the REST API.
    Edit {
        origin: Origin,
        edit: Edit,
        /// The edit's receipt span (none when traces are not exported).
        span: tracing::Span,
    },
    Cursor {
        conn: u64,
        version: u64,
        anchor: Option<u64>,
        head: Option<u64>,
    },
    /// An awareness update from a socket (its state already checked).
    Awareness {
        conn: u64,
        state: serde_json::Value,
        presence: Option<crate::protocol::PresenceState>,
    },
    /// `undo` (or with `redo`, `redo`) from a socket.
    Undo {
        conn: u64,
        redo: bool,
    },
    View(oneshot::Sender<Result<DocView, HubError>>),
    /// Read or change the replicated metadata.
    Meta(MetaChange, oneshot::Sender<MetaResult>),
    /// Committed records after a version, oldest first (memory, else journal).
    Records {
        since: u64,
        limit: usize,
        max_bytes: usize,
        reply: oneshot::Sender<Result<HistoryPage, HubError>>,
    },
    Users(oneshot::Sender<Result<Vec<Presence>, HubError>>),
}

impl Cmd {
    /// Refuse a command (the document could not be loaded).
    pub(super) fn refuse(self, e: &HubError) {
        let e = match e {
            HubError::NotFound => HubError::NotFound,
            _ => HubError::Gone,
        };
        match self {
            Cmd::Join { reply, .. } => drop(reply.send(Err(e))),
            Cmd::View(reply) => drop(reply.send(Err(e))),
            Cmd::Records { reply, .. } => drop(reply.send(Err(e))),
            Cmd::Meta(_, reply) => drop(reply.send(Err(e))),
            Cmd::Users(reply) => drop(reply.send(Err(e))),
            Cmd::Edit { origin, .. } => origin.refuse(e),
            Cmd::Leave(_) | Cmd::Cursor { .. } | Cmd::Awareness { .. } | Cmd::Undo { .. } => {}
        }
    }
}

/// What a document task keeps per local connection.
#[derive(Clone)]
pub(super) struct ConnState {
    pub(super) id: u64,
    pub(super) user: UserInfo,
    pub(super) client: String,
    pub(super) role: Role,
    pub(super) tx: mpsc::Sender<Outbound>,
    /// The seq of the first edit this connection sent: the fan-out acks a
    /// record of this client here only from that seq on. An older record of
    /// the same client id (sent on an earlier connection, or committed in a
    /// history the client was told less of) goes out as an `op`, which a
    /// client with no such seq in flight applies.
    pub(super) first_sent_seq: Option<u64>,
}

impl ConnState {
    pub(super) fn presence(&self) -> Presence {
        Presence {
            id: self.user.id.clone(),
            name: self.user.name.clone(),
            color: self.user.color.clone(),
            client: self.client.clone(),
            // Shared entries carry no state (it changes; they must not).
            state: None,
        }
    }
}

/// Everyone on the document, as this instance sees it.
#[derive(Default)]
pub(super) struct Room {
    /// Local connections, in join order.
    pub(super) conns: Vec<ConnState>,
    /// Presence on other instances, by client id.
    pub(super) remote: HashMap<String, Presence>,
    /// The last caret of each client, for later joiners.
    pub(super) cursors: HashMap<String, CursorInfo>,
    /// The awareness of each present client that set one (bounded by
    /// `MAX_CLIENTS_PER_DOC`; see `awareness.rs`).
    pub(super) awareness: HashMap<String, AwarenessInfo>,
    /// Since when no local connection is left (`None`: someone is here).
    pub(super) idle_since: Option<Instant>,
}

impl Room {
    pub(super) fn conn(&self, id: u64) -> Option<&ConnState> {
        self.conns.iter().find(|c| c.id == id)
    }

    /// Note the seq of an edit `id` sent (see [`ConnState::first_sent_seq`]).
    pub(super) fn sent(&mut self, id: u64, seq: u64) {
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
            c.first_sent_seq.get_or_insert(seq);
        }
    }

    /// Local and remote users, with their presence state.
    pub(super) fn users(&self) -> Vec<Presence> {
        let mut users: Vec<Presence> = self.conns.iter().map(ConnState::presence).collect();
        users.extend(self.remote.values().cloned());
        users.into_iter().map(|p| self.shown(p)).collect()
    }

    /// `p` as clients see it: with its client's presence state.
    pub(super) fn shown(&self, mut p: Presence) -> Presence {
        let state = self.awareness.get(&p.client).map(|a| a.presence);
        p.state = Some(state.unwrap_or_default());
        p
    }
}

/// How a metadata change ended: the view after it, or why the document
/// refused it (inner), or why the hub could not ask (outer).
pub type MetaResult = Result<Result<MetaView, Refusal>, HubError>;

/// A change to a document's metadata.
#[derive(Clone, Debug)]
pub enum MetaChange {
    Title(String),
    /// A [`crate::language`] id, or empty: back to guessing from the title.
    Language(String),
    AddTag(String),
    RemoveTag(String),
}

/// Replicated metadata: this instance's view of the merged state.
#[derive(Default)]
pub(super) struct MetaState {
    pub(super) merged: DocMeta,
    /// `merged` changed here since it was last stored.
    pub(super) dirty: bool,
}

/// The head version and a page of committed records.
pub type HistoryPage = (u64, Vec<Arc<Record>>);
