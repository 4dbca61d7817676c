//! Undo steps in the pipeline: the stack push that keeps a committed
//! edit's inverse (joining the user's typing run where it goes on with
//! it), and the answer to an edit that did not rebase.
//!
//! Must not import: anything that does I/O (this is the pure core).

use std::sync::Arc;

use super::{refused, Kind, Refusal, Runs, Verdict};
use crate::batch::Batch;
use crate::doc::{DocState, RebaseError};
use crate::ot::Operation;
use crate::protocol::ErrorCode;
use crate::runs::{next_step, Run};
use crate::undo::{Stack, StackPush, UndoEntry};

/// Users with an open run kept at most per document (runs close after a
/// second without an edit, so this is only reached by a crowd).
pub const MAX_RUNS: usize = 1024;

/// The stack push that keeps a committed edit's inverse: a new edit goes on
/// the user's undo stack (joining their open typing run when it goes on
/// with it: `crate::runs`) and clears redo; an undo goes on the redo stack,
/// a redo back on the undo stack (and ends the run). `op` is the edit as
/// just pushed on `batch`.
pub(super) fn step_push(
    state: &DocState,
    batch: &Batch,
    kind: &Kind,
    user: &str,
    op: &Operation,
    entry: UndoEntry,
    runs: &mut Runs,
) -> StackPush {
    let run = runs.remove(user);
    if let Kind::Step { from } = kind {
        let stack = match from {
            Stack::Undo => Stack::Redo,
            Stack::Redo => Stack::Undo,
        };
        return StackPush {
            stack,
            entry,
            replace_top_at: None,
            fallback: None,
            clear_redo: false,
        };
    }
    let carried = run.and_then(|run| carry(state, batch, Run::clone(&run), user));
    match next_step(carried, op, entry.clone()) {
        Ok((run, push)) => {
            // A sealed run takes nothing more: not kept.
            if !run.sealed && runs.len() < MAX_RUNS {
                runs.insert(user.to_owned(), Arc::new(run));
            }
            push
        }
        Err(_) => StackPush {
            stack: Stack::Undo,
            entry,
            replace_top_at: None,
            fallback: None,
            clear_redo: true,
        },
    }
}

/// `run` carried past every op committed after its last edit up to the one
/// just pushed on `batch` (the history, then the batch's ops before it),
/// with the version its entry was pushed at; `None` when the user edited
/// since through another path (an undo, another instance), or the history
/// no longer reaches back.
fn carry(state: &DocState, batch: &Batch, run: Run, user: &str) -> Option<(Run, u64)> {
    let top_at = run.entry.version;
    let mut run = run;
    let before = batch.ops().len().checked_sub(1)?;
    let from = if top_at < batch.base() {
        for r in state.records_after(top_at)? {
            if r.user == user {
                return None;
            }
            run = run.past(&r.op).ok()?;
        }
        0
    } else {
        usize::try_from(top_at - batch.base()).ok()?
    };
    for op in batch.ops().get(from..before)? {
        run = run.past(op).ok()?;
    }
    Some((run, top_at))
}

/// The answer to an edit that did not rebase onto the head, once the
/// sequencer said the client's last committed seq (`last`: seq and the
/// version it produced): a resend committed through another instance we
/// have not heard from, or a refusal (`storage_unavailable` while a refill
/// is pending: the head may be behind).
pub fn unrebasable(
    client: &str,
    seq: u64,
    last: Option<(u64, u64)>,
    error: RebaseError,
    catching_up: bool,
) -> Verdict {
    if let Some((last, version)) = last {
        if seq <= last {
            return Verdict::Duplicate {
                client: client.to_owned(),
                seq,
                version,
            };
        }
    }
    match error {
        _ if catching_up => Verdict::Refused(Refusal::unavailable()),
        RebaseError::OutOfRange { base, oldest, head } => refused(
            ErrorCode::VersionOutOfRange,
            &format!("version {base} is outside {oldest}..={head}; reload the document"),
        ),
        RebaseError::Op(e) => refused(ErrorCode::BadOp, &e.to_string()),
    }
}
