//! Document state: text (a rope), version, and the recent op history used to
//! rebase late ops, plus the rules for accepting an op.
//!
//! Owns: [`Record`] (a committed op), [`DocState`] and its `rebase`/`apply`.
//! Must not import: tokio, axum, redis, sqlx. Pure and deterministic; the
//! document task (`hub`) drives it, clocks and ids come in as arguments.

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

/// Text, version and recent history of one document.
#[derive(Debug)]
pub struct DocState {
    text: Rope,
    version: u64,
    /// Committed records, oldest first; `history[i].version == oldest + i + 1`.
    history: VecDeque<Arc<Record>>,
    max_history: usize,
}

impl DocState {
    pub fn new(content: &str, version: u64, max_history: usize) -> Self {
        Self {
            text: Rope::from_str(content),
            version,
            history: VecDeque::new(),
            max_history: max_history.max(1),
        }
    }

    pub fn version(&self) -> u64 {
        self.version
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
        self.version - self.history.len() as u64
    }

    /// Committed records with version > `after`, if history still holds them.
    pub fn records_after(
        &self,
        after: u64,
    ) -> Option<impl DoubleEndedIterator<Item = &Arc<Record>>> {
        if after < self.oldest() || after > self.version {
            return None;
        }
        Some(self.history.iter().skip((after - self.oldest()) as usize))
    }

    /// Document length at version `v` (from history), if known.
    pub fn len_at(&self, v: u64) -> Option<usize> {
        if v == self.version {
            return Some(self.text.len_chars());
        }
        self.records_after(v)?.next().map(|r| r.op.base_len())
    }

    /// Transform `op`, based on `base`, past every op committed since, so it
    /// applies to the head. Checks the op's length against the document at
    /// `base`.
    pub fn rebase(&self, base: u64, op: Operation) -> Result<Operation, RebaseError> {
        let out_of_range = RebaseError::OutOfRange {
            base,
            oldest: self.oldest(),
            head: self.version,
        };
        let mut op = op;
        let records = self.records_after(base).ok_or(out_of_range)?;
        for r in records {
            op = op.transform(&r.op)?.0;
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
        if rec.version <= self.version {
            return Ok(ApplyOutcome::Old);
        }
        if rec.version > self.version + 1 {
            return Ok(ApplyOutcome::Gap { head: self.version });
        }
        rec.op.apply_rope(&mut self.text)?;
        self.version = rec.version;
        self.history.push_back(rec);
        while self.history.len() > self.max_history {
            self.history.pop_front();
        }
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
