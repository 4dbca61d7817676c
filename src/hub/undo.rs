//! Server-side undo in the task: keeping each committed edit's inverse on
//! its user's stack (through the ordered bus writer, joining typing runs),
//! and `undo`/`redo`: pop the step, transform it past everything committed
//! since, and commit it through the one edit pipeline.
//!
//! Owns: [`Step`] (an undo or redo on its way through the pipeline) and
//! [`push_step`].
//! Must not import: axum, sqlx, redis.

use tracing::{debug, warn};

use super::commit::{Edit, Origin};
use super::outbox::BusWrite;
use super::task::DocTask;
use super::{error_msg, HubError, Refusal};
use crate::bus::{BusError, UndoStacks};
use crate::doc::Tie;
use crate::protocol::{ErrorCode, Role};
use crate::undo::{merge_run, Stack, StackPush, UndoEntry};

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

/// Push onto a user's stack; with `run`, an entry continuing the typing run
/// on top replaces it merged.
pub(super) async fn push_step(
    stacks: &dyn UndoStacks,
    doc: &str,
    user: &str,
    mut push: StackPush,
    run: bool,
) -> Result<(), BusError> {
    if run {
        if let Some(top) = stacks.top(doc, user, push.stack).await? {
            if let Ok(Some(merged)) = merge_run(&top, &push.entry) {
                push.entry = merged;
                push.replace_top_at = Some(top.version);
            }
        }
    }
    stacks.push(doc, user, &push).await
}

impl DocTask {
    /// Put a committed edit's inverse on its user's undo stack (or, for an
    /// undo, on the redo stack), in order with the document's other bus
    /// writes. Waits only when the outbox is full.
    pub(super) async fn remember_for_undo(&self, origin: &Origin, user: &str, entry: UndoEntry) {
        let (stack, run, clear_redo) = match origin {
            // An undo: redoable.
            Origin::Undo(step) if step.from == Stack::Undo => (Stack::Redo, false, false),
            // A redo: undoable again; the rest of the redo stack stays.
            Origin::Undo(_) => (Stack::Undo, false, false),
            // A new edit: undoable (joining the typing run on top), and it
            // clears redo.
            Origin::Socket { .. } | Origin::Rest { .. } => (Stack::Undo, true, true),
        };
        let w = BusWrite::Stack {
            user: user.to_owned(),
            push: StackPush {
                stack,
                entry,
                replace_top_at: None,
                clear_redo,
            },
            run,
        };
        if !self.outbox.send(w).await {
            debug!("bus writer gone; an undo step was not kept");
        }
    }

    /// `undo` / `redo`: revert the user's last step (or re-apply the last
    /// undone one), transformed past everything committed since, as a new
    /// edit every client receives. Steps that others' edits have already
    /// made empty are skipped.
    pub(super) async fn undo(&mut self, conn: u64, redo: bool) -> Result<(), HubError> {
        let Some(c) = self.room.conn(conn) else {
            return Ok(());
        };
        if !c.role.can_edit() {
            let m = "viewers cannot edit";
            self.send_to(conn, error_msg(ErrorCode::Forbidden, m, None));
            return Ok(());
        }
        let (user, role) = (c.user.id.clone(), c.role);
        let from = if redo { Stack::Redo } else { Stack::Undo };
        // The stacks must hold every edit this instance committed so far.
        self.outbox.drain().await;
        for _ in 0..MAX_EMPTY_STEPS {
            let entry = match self.hub.stacks.pop(&self.id, &user, from).await {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(()),
                Err(e) => {
                    warn!(error = %e, "undo stack unavailable");
                    let r = Refusal::unavailable();
                    self.send_to(conn, error_msg(r.code, &r.message, None));
                    return Ok(());
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
                    return Ok(());
                }
            };
            let kind = if redo { "redo" } else { "undo" };
            let step = Step {
                conn,
                client: format!("{kind}-{}", uuid::Uuid::new_v4().simple()),
                user,
                role,
                from,
                entry,
            };
            let version = self.state.version();
            let edit = Edit::Op { version, op };
            return self.edit(Origin::Undo(Box::new(step)), edit).await;
        }
        Ok(())
    }

    /// An undo or redo was not committed: keep the step for a later try and
    /// tell the socket why.
    pub(super) async fn undo_refused(&mut self, step: Step, refusal: Refusal) {
        let push = StackPush {
            stack: step.from,
            entry: step.entry,
            replace_top_at: None,
            clear_redo: false,
        };
        let _ = self.hub.stacks.push(&self.id, &step.user, &push).await;
        let msg = error_msg(refusal.code, &refusal.message, None);
        self.send_to(step.conn, msg);
    }
}
