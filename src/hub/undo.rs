//! Server-side undo in the task: `undo`/`redo` pop the user's step,
//! transform it past everything committed since, and commit it through the
//! one edit pipeline. (Each committed edit's inverse goes on its user's
//! stack in the same sequencer call as the edit: see `commit.rs`.)
//!
//! An `impl DocTask` file: the [`Step`] it pops and puts back is plain data
//! in `edits.rs`.
//! Imports from the hub: the leaves and `task` only.
//! Must not import: axum, sqlx, redis, the other `impl DocTask` files.

use tracing::warn;

use super::edits::{Origin, Step};
use super::task::DocTask;
use super::types::{error_msg, Refusal};
use crate::pipeline::{Author, EditId, Popped};
use crate::protocol::ErrorCode;
use crate::undo::{Stack, StackPush};

impl DocTask {
    /// `undo` / `redo` at the front of the queue with no round in flight
    /// (so the stacks hold every edit committed so far): pop the user's
    /// step for the pipeline, which transforms it past everything committed
    /// since (or asks for the next when others' edits made it empty). The
    /// socket is told when there is nothing it may undo.
    pub(super) async fn pop_step(&mut self, id: EditId, redo: bool) {
        let Some(Origin::Undo { conn, .. }) = self.edits.origin(id) else {
            return self.step_gone(id, None);
        };
        let conn = *conn;
        let Some(c) = self.room.conn(conn) else {
            return self.step_gone(id, None);
        };
        if !c.role.can_edit() {
            let refusal = Refusal::new(ErrorCode::Forbidden, "viewers cannot edit");
            return self.step_gone(id, Some(refusal));
        }
        let (user, role) = (c.user.id.clone(), c.role);
        let from = if redo { Stack::Redo } else { Stack::Undo };
        let entry = match self.hub.stacks.pop(&self.id, &user, from).await {
            Ok(Some(e)) => e,
            Ok(None) => return self.step_gone(id, None),
            Err(e) => {
                warn!(error = %e, "undo stack unavailable");
                return self.step_gone(id, Some(Refusal::unavailable()));
            }
        };
        let kind = if redo { "redo" } else { "undo" };
        let client = crate::doc::ephemeral_client(kind, &uuid::Uuid::new_v4().simple().to_string());
        let popped = Popped {
            author: Author {
                client,
                user: user.clone(),
                role,
            },
            from,
            entry: entry.clone(),
        };
        let step = Step {
            user,
            from,
            entry,
            conn,
        };
        if let Some(Origin::Undo { step: s, .. }) = self.edits.origin_mut(id) {
            *s = Some(Box::new(step));
        }
        self.edits.step_popped(id, popped);
    }

    /// An undo or redo ended without an edit: tell its socket why, if
    /// there is a why (nothing to undo is no answer).
    pub(super) fn step_gone(&mut self, id: EditId, refusal: Option<Refusal>) {
        let conn = self.edits.step_gone(id);
        if let (Some(conn), Some(r)) = (conn, refusal) {
            self.send_to(conn, error_msg(r.code, &r.message, None));
        }
    }

    /// An undo or redo was not committed: keep the step for a later try and
    /// tell the socket why.
    pub(super) async fn undo_refused(&mut self, step: Step, refusal: Refusal) {
        let push = StackPush {
            stack: step.from,
            entry: step.entry,
            replace_top_at: None,
            fallback: None,
            clear_redo: false,
        };
        let _ = self.hub.stacks.push(&self.id, &step.user, &push).await;
        let msg = error_msg(refusal.code, &refusal.message, None);
        self.send_to(step.conn, msg);
    }
}
