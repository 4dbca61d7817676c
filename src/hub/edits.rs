//! The edits a document task holds: [`Edit`] (what is changed), [`Origin`]
//! (who changed it and where the answer goes), [`Step`] (an undo or redo on
//! its way through the pipeline, as the task keeps it to put it back if
//! refused) and [`Edits`] (the pipeline and the origins of the edits in
//! it). Plain data: executing the pipeline's effects is `commit.rs`, popping
//! and refusing steps is `undo.rs`.
//! A leaf: imports from the hub only `types`.
//! Must not import: axum, sqlx, redis, the `impl DocTask` files.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use tokio::sync::oneshot;

use super::types::{EditResult, HubError};
use crate::bus::{BusError, CommitReply};
use crate::ot::Operation;
use crate::pipeline::{EditId, Effect, LeaseSettings, Limits, Pipeline, Verdict};
use crate::protocol::Role;
use crate::undo::{Stack, UndoEntry};

/// A change to a document.
#[derive(Clone, Debug)]
pub enum Edit {
    /// `op` on `version`, rebased to the head like a socket's op.
    Op { version: u64, op: Operation },
    /// The whole content replaced by one diff op on the head.
    Replace(String),
}

/// A round's sequencer call, polled by the task's select loop.
pub(super) type RoundFuture = Pin<Box<dyn Future<Output = Result<CommitReply, BusError>> + Send>>;

/// Who made an edit: it decides the client id and seq the edit commits
/// under, where the answer goes, and which undo stack its inverse joins.
pub(super) enum Origin {
    /// A socket's op: answered on the socket (`ack` in the fan-out, in
    /// order, or `error`).
    Socket { conn: u64, seq: u64 },
    /// A REST edit: its own client (the id kept across the hub's retries)
    /// with one op, answered on `reply`.
    Rest {
        client: String,
        user: String,
        role: Role,
        reply: oneshot::Sender<EditResult>,
    },
    /// A socket's undo or redo: once popped, its step (a fresh client with
    /// one op); a refusal puts the step back and tells the socket.
    Undo { conn: u64, step: Option<Box<Step>> },
    /// Forwarded by `instance` (this one holds the commit lease): a
    /// verdict goes back there unless its record answers it.
    Remote {
        instance: String,
        client: String,
        seq: u64,
    },
}

impl Origin {
    /// The seq the edit commits under (REST edits and undo steps are each
    /// their own client's only op).
    pub(super) fn seq(&self) -> u64 {
        match self {
            Origin::Socket { seq, .. } | Origin::Remote { seq, .. } => *seq,
            Origin::Rest { .. } | Origin::Undo { .. } => 1,
        }
    }

    /// The document task could not take the edit.
    pub(super) fn refuse(self, e: HubError) {
        if let Origin::Rest { reply, .. } = self {
            let _ = reply.send(Err(e));
        }
    }
}

/// An edit in the pipeline, as the task knows it.
pub(super) struct Tracked {
    pub(super) origin: Origin,
    /// The edit's receipt span, and its commit span once in a round (none
    /// when traces are not exported).
    pub(super) span: tracing::Span,
    pub(super) commit: tracing::Span,
}

/// The pipeline, and where each of its edits' answers goes.
pub(super) struct Edits {
    pub(super) pipeline: Pipeline,
    pub(super) tracked: HashMap<EditId, Tracked>,
    next: u64,
    /// When the round in flight was sent.
    pub(super) started: Option<Instant>,
    /// Why the pipeline asked for a reset (returned by the task).
    pub(super) fault: Option<HubError>,
    /// With a commit leader: this instance's id and the lease's length.
    pub(super) leases: Option<(String, std::time::Duration)>,
}

impl Edits {
    /// `leases`: one committer per document (this instance's id, the
    /// lease's length); `None`: this instance commits directly.
    pub(super) fn new(max_doc_chars: usize, leases: Option<(String, std::time::Duration)>) -> Self {
        let pipeline = Pipeline::new(Limits::new(max_doc_chars), rand::random());
        let pipeline = match &leases {
            Some((instance, ttl)) => pipeline.with_leases(LeaseSettings {
                instance: instance.clone(),
                ttl_ms: ttl.as_millis() as i64,
            }),
            None => pipeline,
        };
        Self {
            pipeline,
            tracked: HashMap::new(),
            next: 0,
            started: None,
            fault: None,
            leases,
        }
    }

    /// A record was applied: a forwarded edit it commits is answered (a
    /// socket's ack went in the fan-out; a REST edit gets its version).
    pub(super) fn applied(&mut self, client: &str, seq: u64, version: u64, now: i64) {
        let mut out = Vec::new();
        self.pipeline.applied(client, seq, version, now, &mut out);
        for e in out {
            if let Effect::Answer { id, verdict } = e {
                if let (Some(t), Verdict::Committed(v)) = (self.tracked.remove(&id), verdict) {
                    if let Origin::Rest { reply, .. } = t.origin {
                        let _ = reply.send(Ok(Ok(v)));
                    }
                }
            }
        }
    }

    /// Nothing queued and no round in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.pipeline.is_idle()
    }

    pub(super) fn origin(&self, id: EditId) -> Option<&Origin> {
        self.tracked.get(&id).map(|t| &t.origin)
    }

    pub(super) fn origin_mut(&mut self, id: EditId) -> Option<&mut Origin> {
        self.tracked.get_mut(&id).map(|t| &mut t.origin)
    }

    pub(super) fn step_popped(&mut self, id: EditId, popped: crate::pipeline::Popped) {
        self.pipeline.step_popped(id, popped);
    }

    /// The undo request is done without an edit: the socket that asked.
    pub(super) fn step_gone(&mut self, id: EditId) -> Option<u64> {
        self.pipeline.step_gone(id);
        match self.tracked.remove(&id)?.origin {
            Origin::Undo { conn, .. } | Origin::Socket { conn, .. } => Some(conn),
            Origin::Rest { .. } | Origin::Remote { .. } => None,
        }
    }

    pub(super) fn track(&mut self, origin: Origin, span: tracing::Span) -> EditId {
        self.next += 1;
        let id = EditId(self.next);
        let commit = tracing::Span::none();
        self.tracked.insert(
            id,
            Tracked {
                origin,
                span,
                commit,
            },
        );
        id
    }
}

/// An undo or redo being committed for a socket's user.
pub(super) struct Step {
    pub(super) user: String,
    /// The stack the step was popped from (and goes back to if refused).
    pub(super) from: Stack,
    pub(super) entry: UndoEntry,
    /// The socket that asked (told if the step is refused).
    pub(super) conn: u64,
}
