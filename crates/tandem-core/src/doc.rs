//! Document state: text (a rope), version, and the recent op history used to
//! rebase late ops, plus the rules for accepting an op.
//!
//! Owns: [`Record`] (a committed op), [`DocState`] and its `rebase`/`apply`.
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).
//! Pure and deterministic; the document task (`hub`) drives it, clocks and
//! ids come in as arguments.

use std::collections::VecDeque;
use std::sync::Arc;

use ropey::Rope;
use serde::{Deserialize, Serialize};

use crate::ot::{OpError, Operation};

/// A committed operation: the unit of the op log, the bus and the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The version this op produced (the op was based on `version - 1`).
    pub version: u64,
    pub op: Operation,
    pub user: String,
    pub client: String,
    pub seq: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub time: i64,
}

/// Wire/storage form of a record (op as its JSON array).
#[derive(Serialize, Deserialize)]
pub struct RecordWire {
    pub version: u64,
    pub op: serde_json::Value,
    pub user: String,
    pub client: String,
    pub seq: u64,
    pub time: i64,
}

impl Record {
    pub fn to_wire(&self) -> RecordWire {
        RecordWire {
            version: self.version,
            op: self.op.to_json(),
            user: self.user.clone(),
            client: self.client.clone(),
            seq: self.seq,
            time: self.time,
        }
    }

    /// Decode a record from storage or the bus. Records were validated when
    /// committed, so no component limit applies here.
    pub fn from_wire(w: RecordWire) -> Result<Self, OpError> {
        Ok(Record {
            version: w.version,
            op: Operation::from_json(&w.op, usize::MAX)?,
            user: w.user,
            client: w.client,
            seq: w.seq,
            time: w.time,
        })
    }
}

/// Why an op cannot be rebased onto the head.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RebaseError {
    /// Based on a version newer than the head, or older than retained history.
    #[error("version {base} is outside the retained range {oldest}..={head}")]
    OutOfRange { base: u64, oldest: u64, head: u64 },
    #[error(transparent)]
    Op(#[from] OpError),
}

/// Why a record could not be applied in order.
#[derive(Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    /// Already have it (version ≤ head): ignore.
    Old,
    /// Versions between head+1 and this one are missing: refill first.
    Gap {
        head: u64,
    },
}

/// A bounded run of committed records ending at `head`, oldest first:
/// `records[i].version == oldest() + i + 1`. Used by document state and by
/// the in-process sequencer's op log.
#[derive(Clone, Debug)]
pub struct History {
    head: u64,
    records: VecDeque<Arc<Record>>,
    cap: usize,
}

impl History {
    /// Empty, at `head`, keeping at most `cap` records.
    pub fn new(head: u64, cap: usize) -> Self {
        Self {
            head,
            records: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// The version just before the first record held.
    pub fn oldest(&self) -> u64 {
        self.head - self.records.len() as u64
    }

    /// Append the record following the head (`rec.version == head + 1`),
    /// dropping the oldest beyond the cap.
    pub fn push(&mut self, rec: Arc<Record>) {
        debug_assert_eq!(rec.version, self.head + 1);
        self.head = rec.version;
        self.records.push_back(rec);
        while self.records.len() > self.cap {
            self.records.pop_front();
        }
    }

    /// Records with version > `after`, if still held.
    pub fn after(&self, after: u64) -> Option<impl DoubleEndedIterator<Item = &Arc<Record>>> {
        if after < self.oldest() || after > self.head {
            return None;
        }
        Some(self.records.iter().skip((after - self.oldest()) as usize))
    }

    /// The record that produced `version`, if held.
    pub fn get(&self, version: u64) -> Option<&Arc<Record>> {
        let i = version.checked_sub(self.oldest() + 1)?;
        self.records.get(i as usize)
    }

    /// The version `(client, seq)` produced, if its record is still held.
    pub fn version_of(&self, client: &str, seq: u64) -> Option<u64> {
        self.records
            .iter()
            .rev()
            .find(|r| r.client == client && r.seq == seq)
            .map(|r| r.version)
    }
}

/// Whose text goes first when a rebased op and a committed one insert at
/// the same position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tie {
    RebasedFirst,
    CommittedFirst,
}

impl Tie {
    /// `op` transformed past `committed` (an op that goes before it), with
    /// this tie-break.
    pub fn transform(self, op: Operation, committed: &Operation) -> Result<Operation, OpError> {
        Ok(match self {
            Tie::RebasedFirst => op.transform(committed)?.0,
            Tie::CommittedFirst => committed.transform(&op)?.1,
        })
    }
}

/// Text, version and recent history of one document.
#[derive(Debug)]
pub struct DocState {
    text: Rope,
    history: History,
}

impl DocState {
    pub fn new(content: &str, version: u64, max_history: usize) -> Self {
        Self {
            text: Rope::from_str(content),
            history: History::new(version, max_history),
        }
    }

    pub fn version(&self) -> u64 {
        self.history.head()
    }
    pub fn history(&self) -> &History {
        &self.history
    }
    pub fn len_chars(&self) -> usize {
        self.text.len_chars()
    }
    pub fn rope(&self) -> &Rope {
        &self.text
    }
    pub fn content(&self) -> String {
        self.text.to_string()
    }
    /// Oldest version an op may be based on (rebasable from history).
    pub fn oldest(&self) -> u64 {
        self.history.oldest()
    }

    /// Committed records with version > `after`, if history still holds them.
    pub fn records_after(
        &self,
        after: u64,
    ) -> Option<impl DoubleEndedIterator<Item = &Arc<Record>>> {
        self.history.after(after)
    }

    /// Document length at version `v` (from history), if known.
    pub fn len_at(&self, v: u64) -> Option<usize> {
        if v == self.version() {
            return Some(self.text.len_chars());
        }
        self.records_after(v)?.next().map(|r| r.op.base_len())
    }

    /// Transform `op`, based on `base`, past every op committed since, so it
    /// applies to the head. Checks the op's length against the document at
    /// `base`. Where both insert at one position, `op`'s text goes first (the
    /// protocol's rule).
    pub fn rebase(&self, base: u64, op: Operation) -> Result<Operation, RebaseError> {
        self.rebase_with(base, op, Tie::RebasedFirst)
    }

    /// [`DocState::rebase`] with a choice of tie-break. Undo uses
    /// [`Tie::CommittedFirst`]: text it restores goes after text inserted at
    /// the same place since, so undo-then-redo of several steps puts each
    /// back where it was. (Any rule converges: the result is committed as a
    /// new op that every client applies as is.)
    pub fn rebase_with(
        &self,
        base: u64,
        op: Operation,
        tie: Tie,
    ) -> Result<Operation, RebaseError> {
        let out_of_range = RebaseError::OutOfRange {
            base,
            oldest: self.oldest(),
            head: self.version(),
        };
        let mut op = op;
        let records = self.records_after(base).ok_or(out_of_range)?;
        for r in records {
            op = tie.transform(op, &r.op)?;
        }
        if op.base_len() != self.text.len_chars() {
            return Err(OpError::BaseLength {
                op: op.base_len(),
                doc: self.text.len_chars(),
            }
            .into());
        }
        Ok(op)
    }

    /// Apply a committed record in version order.
    pub fn apply(&mut self, rec: Arc<Record>) -> Result<ApplyOutcome, OpError> {
        let head = self.version();
        if rec.version <= head {
            return Ok(ApplyOutcome::Old);
        }
        if rec.version > head + 1 {
            return Ok(ApplyOutcome::Gap { head });
        }
        rec.op.apply_rope(&mut self.text)?;
        self.history.push(rec);
        Ok(ApplyOutcome::Applied)
    }

    /// Transform a caret index given at version `v` to the head.
    pub fn transform_index(&self, v: u64, index: usize) -> Option<usize> {
        let mut i = index;
        for r in self.records_after(v)? {
            i = r.op.transform_index(i);
        }
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ot::splice;

    fn rec(version: u64, op: Operation) -> Arc<Record> {
        Arc::new(Record {
            version,
            op,
            user: "u".into(),
            client: "c".into(),
            seq: version,
            time: 0,
        })
    }

    #[test]
    fn history_keeps_a_bounded_tail_ending_at_head() {
        let mut h = History::new(10, 3);
        assert_eq!((h.oldest(), h.head()), (10, 10));
        assert_eq!(h.after(10).map(|i| i.count()), Some(0));
        for v in 11..=15 {
            let mut r = (*rec(v, splice(0, 0, 0, "x"))).clone();
            r.client = format!("c{v}");
            h.push(Arc::new(r));
        }
        // capped at 3: versions 13..=15 held
        assert_eq!((h.oldest(), h.head()), (12, 15));
        assert!(h.after(11).is_none() && h.after(16).is_none());
        let versions: Vec<u64> = h.after(13).unwrap().map(|r| r.version).collect();
        assert_eq!(versions, [14, 15]);
        assert_eq!(h.get(13).map(|r| r.version), Some(13));
        assert!(h.get(12).is_none() && h.get(16).is_none());
        assert_eq!(h.version_of("c14", 14), Some(14));
        assert_eq!(h.version_of("c11", 11), None); // trimmed
    }

    #[test]
    fn rebase_past_history_and_range_checks() {
        let mut d = DocState::new("abc", 0, 2);
        assert_eq!(
            d.apply(rec(1, splice(3, 0, 0, "X"))).unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(
            d.apply(rec(1, splice(4, 0, 0, "X"))).unwrap(),
            ApplyOutcome::Old
        );
        assert_eq!(
            d.apply(rec(3, splice(4, 0, 0, "X"))).unwrap(),
            ApplyOutcome::Gap { head: 1 }
        );
        // an op based on version 0 inserts at the end: rebased past "X"
        let op = d.rebase(0, splice(3, 3, 0, "!")).unwrap();
        assert_eq!(op.apply(&d.content()).unwrap(), "Xabc!");
        assert!(matches!(
            d.rebase(2, splice(4, 0, 0, "a")),
            Err(RebaseError::OutOfRange { .. })
        ));
        // wrong length at its base version
        assert!(matches!(
            d.rebase(0, splice(4, 0, 0, "a")),
            Err(RebaseError::Op(_))
        ));
        d.apply(rec(2, splice(4, 0, 0, "Y"))).unwrap();
        d.apply(rec(3, splice(5, 0, 0, "Z"))).unwrap();
        // history holds two records: version 0 is gone
        assert_eq!(d.oldest(), 1);
        assert!(matches!(
            d.rebase(0, splice(3, 0, 0, "a")),
            Err(RebaseError::OutOfRange { .. })
        ));
        assert_eq!(d.len_at(1), Some(4));
        assert_eq!(d.transform_index(1, 0), Some(2));
    }
}
