//! Per-user undo/redo stacks as pure data: what an entry is, and the
//! bounded stack operations the sequencers store (in memory, or in Redis by
//! `undo.lua` with the same rules). Which edits join one entry: `runs.rs`.
//!
//! Owns: [`UndoEntry`], [`Stack`], [`StackPush`], [`Stacks`].
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).

use serde::{Deserialize, Serialize};

use crate::ot::Operation;

/// A user's keystrokes closer together than this (next to each other,
/// whatever others commit in between) undo as one step (`runs.rs`).
pub const TYPING_RUN_MS: i64 = 1000;
/// Entries kept per user and stack.
pub const STACK_LIMIT: usize = 100;
/// Bytes of entries kept per user and stack (the oldest go first; the
/// newest is always kept): 100 pastes of 256 KB would otherwise hold 25 MB.
/// Measured as [`Operation::size_hint`] here and as the entries' JSON length
/// in Redis, which is about the same.
pub const STACK_BYTES: usize = 4 << 20;

/// One undoable step: the op that reverts it, applying to the document at
/// `version` (the version its last edit produced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UndoEntry {
    pub version: u64,
    pub op: Operation,
    /// Commit time of the last edit in the step (ms since the epoch).
    pub time: i64,
}

#[derive(Serialize, Deserialize)]
struct EntryWire {
    version: u64,
    op: serde_json::Value,
    time: i64,
}

impl UndoEntry {
    pub fn to_json(&self) -> String {
        let w = EntryWire {
            version: self.version,
            op: self.op.to_json(),
            time: self.time,
        };
        serde_json::to_string(&w).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Option<Self> {
        let w: EntryWire = serde_json::from_str(s).ok()?;
        Some(Self {
            version: w.version,
            op: Operation::from_json(&w.op, usize::MAX).ok()?,
            time: w.time,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stack {
    Undo,
    Redo,
}

impl Stack {
    /// Field prefix in the Redis hash of a document's stacks.
    pub fn prefix(self) -> &'static str {
        match self {
            Stack::Undo => "u:",
            Stack::Redo => "r:",
        }
    }
}

/// A push: `entry` goes on top, or replaces the top when the top is still
/// the entry at `replace_top_at` (compare-and-set, so a concurrent push is
/// never overwritten); when it is not, `fallback` (if any) goes on top
/// instead of `entry` (a run's merged entry must not land on another top).
/// `clear_redo`: a new edit forgets what was undone.
#[derive(Clone, Debug)]
pub struct StackPush {
    pub stack: Stack,
    pub entry: UndoEntry,
    pub replace_top_at: Option<u64>,
    pub fallback: Option<UndoEntry>,
    pub clear_redo: bool,
}

/// One user's two stacks (the in-memory store; Redis keeps the same shape).
#[derive(Clone, Debug, Default)]
pub struct Stacks {
    pub undo: Vec<UndoEntry>,
    pub redo: Vec<UndoEntry>,
}

impl Stacks {
    fn list(&mut self, s: Stack) -> &mut Vec<UndoEntry> {
        match s {
            Stack::Undo => &mut self.undo,
            Stack::Redo => &mut self.redo,
        }
    }

    pub fn top(&mut self, s: Stack) -> Option<UndoEntry> {
        self.list(s).last().cloned()
    }

    pub fn push(&mut self, p: StackPush) {
        let list = self.list(p.stack);
        match (p.replace_top_at, list.last_mut()) {
            (Some(v), Some(top)) if top.version == v => *top = p.entry,
            _ => list.push(p.fallback.unwrap_or(p.entry)),
        }
        if list.len() > STACK_LIMIT {
            let extra = list.len() - STACK_LIMIT;
            list.drain(..extra);
        }
        let mut bytes: usize = list.iter().map(|e| e.op.size_hint()).sum();
        let mut drop = 0;
        while bytes > STACK_BYTES && drop + 1 < list.len() {
            bytes -= list[drop].op.size_hint();
            drop += 1;
        }
        list.drain(..drop);
        if p.clear_redo {
            self.redo.clear();
        }
    }

    pub fn pop(&mut self, s: Stack) -> Option<UndoEntry> {
        self.list(s).pop()
    }

    pub fn is_empty(&self) -> bool {
        self.undo.is_empty() && self.redo.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ot::splice;

    fn entry(version: u64, time: i64, op: Operation) -> UndoEntry {
        UndoEntry { version, op, time }
    }

    #[test]
    fn stacks_replace_only_the_expected_top_and_stay_bounded() {
        let mut s = Stacks::default();
        let e = |v| entry(v, 0, splice(1, 0, 1, ""));
        s.push(StackPush {
            stack: Stack::Redo,
            entry: e(9),
            replace_top_at: None,
            fallback: None,
            clear_redo: false,
        });
        for v in 0..(STACK_LIMIT as u64 + 10) {
            s.push(StackPush {
                stack: Stack::Undo,
                entry: e(v),
                replace_top_at: None,
                fallback: None,
                clear_redo: false,
            });
        }
        assert_eq!(s.undo.len(), STACK_LIMIT);
        assert_eq!(s.undo[0].version, 10);
        // By bytes too: 1 MiB entries, at most 4 MiB kept; a larger one alone.
        let mut big = Stacks::default();
        let mib = |v| entry(v, 0, splice(0, 0, 0, &"x".repeat(1 << 20)));
        for v in 0..6 {
            big.push(StackPush {
                stack: Stack::Undo,
                entry: mib(v),
                replace_top_at: None,
                fallback: None,
                clear_redo: false,
            });
        }
        let kept: usize = big.undo.iter().map(|e| e.op.size_hint()).sum();
        assert!(kept <= STACK_BYTES && big.undo.len() == 3, "{kept}");
        assert_eq!(big.undo.last().unwrap().version, 5);
        big.push(StackPush {
            stack: Stack::Undo,
            entry: entry(9, 0, splice(0, 0, 0, &"y".repeat(5 << 20))),
            replace_top_at: None,
            fallback: None,
            clear_redo: false,
        });
        assert_eq!(big.undo.len(), 1);
        // CAS: replaces the top only when it is the one expected.
        s.push(StackPush {
            stack: Stack::Undo,
            entry: e(500),
            replace_top_at: Some(1),
            fallback: None,
            clear_redo: true,
        });
        assert_eq!(s.top(Stack::Undo).unwrap().version, 500);
        assert_eq!(s.undo.len(), STACK_LIMIT);
        assert!(s.redo.is_empty());
        let top = s.undo[STACK_LIMIT - 2].version;
        s.push(StackPush {
            stack: Stack::Undo,
            entry: e(501),
            replace_top_at: Some(500),
            fallback: None,
            clear_redo: false,
        });
        assert_eq!(s.undo[STACK_LIMIT - 2].version, top);
        assert_eq!(s.top(Stack::Undo).unwrap().version, 501);
        // The top moved: the fallback goes on instead of the merged entry.
        s.push(StackPush {
            stack: Stack::Undo,
            entry: e(600),
            replace_top_at: Some(42),
            fallback: Some(e(601)),
            clear_redo: false,
        });
        assert_eq!(s.pop(Stack::Undo).unwrap().version, 601);
        let round = UndoEntry::from_json(&e(7).to_json()).unwrap();
        assert_eq!(round, e(7));
    }
}
