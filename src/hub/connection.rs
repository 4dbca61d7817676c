//! One connection, from both ends: [`ConnHandle`], what a socket holds to
//! talk to its document task, and [`ConnState`], what the task keeps per
//! connection (who it is, its role, its outbound queue).
//! Must not import: axum, sqlx, redis.

use tokio::sync::mpsc;

use super::commit::{Edit, Origin};
use super::task::Cmd;
use super::{HubError, Outbound};
use crate::ot::Operation;
use crate::protocol::{Presence, PresenceState, Role, UserInfo};

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
