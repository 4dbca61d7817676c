//! Per-user undo/redo stacks as pure data: what an entry is, when a new
//! entry joins the typing run on top of the stack, and the bounded stack
//! operations the sequencers store (in memory, or in Redis by `undo.lua`
//! with the same rules).
//!
//! Owns: [`UndoEntry`], [`merge_run`], [`Stack`], [`StackPush`], [`Stacks`].
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).

use serde::{Deserialize, Serialize};

use crate::ot::{OpError, Operation};

/// Keystrokes closer together than this (and with no one else's commit in
/// between) undo as one step.
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

/// The entry for `new` folded into `top` when `new` continues its typing
/// run: it was committed right after `top`'s last edit (no commit between)
/// within [`TYPING_RUN_MS`]. Undoing the result reverts both.
pub fn merge_run(top: &UndoEntry, new: &UndoEntry) -> Result<Option<UndoEntry>, OpError> {
    if new.version != top.version + 1 || new.time - top.time > TYPING_RUN_MS {
        return Ok(None);
    }
    // Revert the newer edit first, then the older ones.
    Ok(Some(UndoEntry {
        version: new.version,
        op: new.op.compose(&top.op)?,
        time: new.time,
    }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
/// never overwritten). `clear_redo`: a new edit forgets what was undone.
#[derive(Clone, Debug)]
pub struct StackPush {
    pub stack: Stack,
    pub entry: UndoEntry,
    pub replace_top_at: Option<u64>,
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
            _ => list.push(p.entry),
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
    fn a_typing_run_undoes_as_one_step() {
        // "" --"a"--> "a" (v1) --"b"--> "ab" (v2)
        let inv1 = splice(1, 0, 1, "");
        let inv2 = splice(2, 1, 1, "");
        let top = entry(1, 1000, inv1);
        let merged = merge_run(&top, &entry(2, 1500, inv2.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(merged.version, 2);
        assert_eq!(merged.op.apply("ab").unwrap(), "");
        // Too late, or someone else committed in between: a new step.
        assert!(merge_run(&top, &entry(2, 2001, inv2.clone()))
            .unwrap()
            .is_none());
        assert!(merge_run(&top, &entry(3, 1500, inv2)).unwrap().is_none());
    }

    #[test]
    fn stacks_replace_only_the_expected_top_and_stay_bounded() {
        let mut s = Stacks::default();
        let e = |v| entry(v, 0, splice(1, 0, 1, ""));
        s.push(StackPush {
            stack: Stack::Redo,
            entry: e(9),
            replace_top_at: None,
            clear_redo: false,
        });
        for v in 0..(STACK_LIMIT as u64 + 10) {
            s.push(StackPush {
                stack: Stack::Undo,
                entry: e(v),
                replace_top_at: None,
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
            clear_redo: false,
        });
        assert_eq!(big.undo.len(), 1);
        // CAS: replaces the top only when it is the one expected.
        s.push(StackPush {
            stack: Stack::Undo,
            entry: e(500),
            replace_top_at: Some(1),
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
            clear_redo: false,
        });
        assert_eq!(s.undo[STACK_LIMIT - 2].version, top);
        assert_eq!(s.pop(Stack::Undo).unwrap().version, 501);
        let round = UndoEntry::from_json(&e(7).to_json()).unwrap();
        assert_eq!(round, e(7));
    }
}
