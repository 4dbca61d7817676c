//! Server-side undo in the task: `undo`/`redo` pop the user's step,
//! transform it past everything committed since, and commit it through the
//! one edit pipeline. (Each committed edit's inverse goes on its user's
//! stack in the same sequencer call as the edit: see `commit.rs`.)
//!
//! Owns: [`Step`] (an undo or redo on its way through the pipeline).
//! Must not import: axum, sqlx, redis.

use tracing::warn;

use super::commit::Queued;
use super::task::DocTask;
use super::{error_msg, HubError, Refusal};
use crate::doc::Tie;
use crate::protocol::{ErrorCode, Role};
use crate::undo::{Stack, StackPush, UndoEntry};

/// Steps skipped at most when others' edits have made them empty.
const MAX_EMPTY_STEPS: usize = 16;

/// An undo or redo being committed for a socket's user.
pub(super) struct Step {
    /// The socket that asked (told if the step is refused).
    pub(super) conn: u64,
    /// A fresh client id for the step's one op.
    pub(super) client: String,
    pub(super) user: String,
    pub(super) role: Role,
    /// The stack the step was popped from (and goes back to if refused).
    pub(super) from: Stack,
    pub(super) entry: UndoEntry,
}

impl DocTask {
    /// `undo` / `redo` reaching the front of the queue (no round in
    /// flight, so the stacks hold every edit committed so far): pop the
    /// user's step, transformed past everything committed since, as an edit
    /// for the round being built. Steps that others' edits have already
    /// made empty are skipped; `None` when there is nothing to do (or the
    /// socket was told why not).
    pub(super) async fn pop_step(
        &mut self,
        conn: u64,
        redo: bool,
    ) -> Result<Option<Queued>, HubError> {
        let Some(c) = self.room.conn(conn) else {
            return Ok(None);
        };
        if !c.role.can_edit() {
            let m = "viewers cannot edit";
            self.send_to(conn, error_msg(ErrorCode::Forbidden, m, None));
            return Ok(None);
        }
        let (user, role) = (c.user.id.clone(), c.role);
        let from = if redo { Stack::Redo } else { Stack::Undo };
        for _ in 0..MAX_EMPTY_STEPS {
            let entry = match self.hub.stacks.pop(&self.id, &user, from).await {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(None),
                Err(e) => {
                    warn!(error = %e, "undo stack unavailable");
                    let r = Refusal::unavailable();
                    self.send_to(conn, error_msg(r.code, &r.message, None));
                    return Ok(None);
                }
            };
            if entry.version > self.state.version() {
                self.refill().await?;
            }
            let rebased =
                self.state
                    .rebase_with(entry.version, entry.op.clone(), Tie::CommittedFirst);
            let op = match rebased {
                Ok(op) if op.is_noop() => continue,
                Ok(op) => op,
                Err(_) => {
                    let m = "the step to undo is older than the history the server keeps";
                    self.send_to(conn, error_msg(ErrorCode::VersionOutOfRange, m, None));
                    return Ok(None);
                }
            };
            let kind = if redo { "redo" } else { "undo" };
            let step = Step {
                conn,
                client: crate::doc::ephemeral_client(
                    kind,
                    &uuid::Uuid::new_v4().simple().to_string(),
                ),
                user,
                role,
                from,
                entry,
            };
            return Ok(Some(self.step_edit(step, op)));
        }
        Ok(None)
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
