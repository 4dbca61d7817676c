//! [`ConnHandle`], what a socket holds to talk to its document task (op,
//! cursor, awareness, undo, leave). What the task keeps per connection,
//! `ConnState`, is plain data in `state.rs`.
//! Imports from the hub: the leaves only (`types`, `edits`, `state`).
//! Must not import: axum, sqlx, redis, the `impl DocTask` files.

use tokio::sync::mpsc;

use super::edits::{Edit, Origin};
use super::state::Cmd;
use super::types::HubError;
use crate::ot::Operation;
use crate::protocol::PresenceState;

/// A socket's handle on its document task. Dropping it (or [`Self::leave`])
/// takes the connection out of the document.
pub struct ConnHandle {
    pub id: u64,
    tx: mpsc::Sender<Cmd>,
    left: bool,
}

impl ConnHandle {
    pub(super) fn new(id: u64, tx: mpsc::Sender<Cmd>) -> Self {
        Self {
            id,
            tx,
            left: false,
        }
    }

    async fn send(&self, cmd: Cmd) -> Result<(), HubError> {
        self.tx.send(cmd).await.map_err(|_| HubError::Gone)
    }

    /// Submit an op (decoded, not yet validated against the document).
    /// Submit an op, not traced.
    pub async fn op(&self, version: u64, seq: u64, op: Operation) -> Result<(), HubError> {
        self.op_in(version, seq, op, tracing::Span::none()).await
    }

    /// [`Self::op`] under `span`, its receipt span, which the commit's
    /// spans continue.
    pub async fn op_in(
        &self,
        version: u64,
        seq: u64,
        op: Operation,
        span: tracing::Span,
    ) -> Result<(), HubError> {
        self.send(Cmd::Edit {
            origin: Origin::Socket { conn: self.id, seq },
            edit: Edit::Op { version, op },
            span,
        })
        .await
    }

    pub async fn cursor(
        &self,
        version: u64,
        anchor: Option<u64>,
        head: Option<u64>,
    ) -> Result<(), HubError> {
        self.send(Cmd::Cursor {
            conn: self.id,
            version,
            anchor,
            head,
        })
        .await
    }

    /// An awareness update (`state` already checked).
    pub async fn awareness(
        &self,
        state: serde_json::Value,
        presence: Option<PresenceState>,
    ) -> Result<(), HubError> {
        self.send(Cmd::Awareness {
            conn: self.id,
            state,
            presence,
        })
        .await
    }

    /// `undo`, or with `redo` true, `redo`.
    pub async fn undo(&self, redo: bool) -> Result<(), HubError> {
        self.send(Cmd::Undo {
            conn: self.id,
            redo,
        })
        .await
    }

    pub async fn leave(mut self) {
        self.left = true;
        let _ = self.tx.send(Cmd::Leave(self.id)).await;
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        if !self.left {
            // Best effort; the task also sweeps connections whose outbound
            // receiver is gone, so a full inbox cannot leave a ghost.
            let _ = self.tx.try_send(Cmd::Leave(self.id));
        }
    }
}
