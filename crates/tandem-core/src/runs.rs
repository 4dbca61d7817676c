//! Typing runs: which of a user's edits undo as one step. A run is the
//! user's own: it goes on while they keep typing next to where they typed
//! last, with no pause over [`TYPING_RUN_MS`], for at most [`RUN_MAX_MS`],
//! whatever others commit in between; a multi-line paste is a step of its
//! own. Joining keeps undo exact: the run's inverse is transformed past the
//! ops others committed since (to the text the new edit applies to) before
//! the new edit's inverse is composed with it.
//!
//! Owns: [`Run`], [`is_paste`], [`next_step`].
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).

use crate::doc::Tie;
use crate::ot::{Component, OpError, Operation};
use crate::undo::{Stack, StackPush, UndoEntry, TYPING_RUN_MS};

/// A run never spans more than this (ms from its first edit to its last).
pub const RUN_MAX_MS: i64 = 5000;
/// A step whose inverse is larger than this ([`Operation::size_hint`]) is
/// one of its own: nothing joins it (so no large op is carried and composed
/// again on every keystroke after it).
pub const RUN_MAX_BYTES: usize = 64 * 1024;

/// A user's open run: the undo entry on top of their stack that their next
/// edit may join, and where their caret was left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The entry as pushed: its op reverts the whole run, at
    /// `entry.version` (the version of the run's last edit).
    pub entry: UndoEntry,
    /// Commit time of the run's first edit (ms).
    pub start: i64,
    /// The caret after the run's last edit, in the text at
    /// `entry.version`: `(lo, hi)` differ once someone inserted exactly at
    /// it (an editor may leave the caret before or after that text).
    pub caret: (usize, usize),
    /// A multi-line paste: nothing joins it.
    pub sealed: bool,
}

/// An insert of more than one character holding a line break and some
/// non-blank text: a paste (or a snippet), its own undo step. (Enter and
/// an auto-indent's "\n    " are typing.)
pub fn is_paste(op: &Operation) -> bool {
    op.components().iter().any(|c| match c {
        Component::Insert(s) => {
            s.contains('\n') && s.chars().count() > 1 && s.chars().any(|c| !c.is_whitespace())
        }
        _ => false,
    })
}

/// The region an op changes in the text before it, `[first, end]`, and
/// where the caret is after it (the end of its last change).
fn span(op: &Operation) -> (usize, usize, usize) {
    let comps = op.components();
    let lead = match comps.first() {
        Some(Component::Retain(n)) => *n,
        _ => 0,
    };
    let trail = match comps.last() {
        Some(Component::Retain(n)) if comps.len() > 1 => *n,
        _ => 0,
    };
    (
        lead,
        op.base_len().saturating_sub(trail),
        op.target_len().saturating_sub(trail),
    )
}

/// Where a caret at `index` lands after `op` when an insert exactly at it
/// stays after the caret (the other choice is [`Operation::transform_index`]).
fn index_staying(op: &Operation, index: usize) -> usize {
    let (mut pos, mut out) = (0usize, 0usize);
    for c in op.components() {
        match c {
            Component::Retain(n) => {
                if pos + n >= index {
                    return out + (index - pos);
                }
                pos += n;
                out += n;
            }
            Component::Insert(s) => {
                if pos == index {
                    return out;
                }
                out += s.chars().count();
            }
            Component::Delete(n) => {
                if pos + n >= index {
                    return out;
                }
                pos += n;
            }
        }
    }
    out
}

impl Run {
    /// A run opened by `op`, whose undo entry is `entry`.
    pub fn open(op: &Operation, entry: UndoEntry) -> Self {
        let (_, _, caret) = span(op);
        Self {
            start: entry.time,
            sealed: is_paste(op) || entry.op.size_hint() > RUN_MAX_BYTES,
            entry,
            caret: (caret, caret),
        }
    }

    /// The run carried past `other` (someone else's op, committed after
    /// the text the run is at): its inverse transformed (what it restores
    /// goes after text inserted at the same place since, as undo does), its
    /// caret moved. `entry.version` is left as the version of its last edit.
    pub fn past(mut self, other: &Operation) -> Result<Self, OpError> {
        self.entry.op = Tie::CommittedFirst.transform(self.entry.op, other)?;
        self.caret = (
            index_staying(other, self.caret.0),
            other.transform_index(self.caret.1),
        );
        Ok(self)
    }

    /// Whether `op` by the run's user at `time`, applying to the text the
    /// run was carried to, goes on with it: not sealed, not a paste nor
    /// large, within
    /// the pause and the longest span, touching the caret.
    pub fn goes_on_with(&self, op: &Operation, time: i64) -> bool {
        let (first, end, _) = span(op);
        !self.sealed
            && !is_paste(op)
            && op.size_hint() <= RUN_MAX_BYTES
            && time - self.entry.time <= TYPING_RUN_MS
            && time - self.start <= RUN_MAX_MS
            && first <= self.caret.1
            && self.caret.0 <= end
    }
}

/// The undo push for a user's new edit `op` (its inverse is `entry`), and
/// the user's run after it. `carried` is the user's open run carried past
/// every op committed since its last edit (see [`Run::past`]; `None` when
/// there is none, or someone's edit in between was the user's own from
/// elsewhere). Joining replaces the top the run pushed (compare-and-set on
/// `top_at`, the version its entry was pushed at); if the top moved (an undo
/// elsewhere), the new edit's own entry is pushed instead.
pub fn next_step(
    carried: Option<(Run, u64)>,
    op: &Operation,
    entry: UndoEntry,
) -> Result<(Run, StackPush), OpError> {
    if let Some((run, top_at)) = carried {
        if run.goes_on_with(op, entry.time) {
            let merged = UndoEntry {
                version: entry.version,
                // Revert the new edit first, then the run before it.
                op: entry.op.compose(&run.entry.op)?,
                time: entry.time,
            };
            let (_, _, caret) = span(op);
            let next = Run {
                sealed: merged.op.size_hint() > RUN_MAX_BYTES,
                entry: merged.clone(),
                start: run.start,
                caret: (caret, caret),
            };
            let push = StackPush {
                stack: Stack::Undo,
                entry: merged,
                replace_top_at: Some(top_at),
                fallback: Some(entry),
                clear_redo: true,
            };
            return Ok((next, push));
        }
    }
    let run = Run::open(op, entry.clone());
    let push = StackPush {
        stack: Stack::Undo,
        entry,
        replace_top_at: None,
        fallback: None,
        clear_redo: true,
    };
    Ok((run, push))
}

#[cfg(test)]
mod tests;
