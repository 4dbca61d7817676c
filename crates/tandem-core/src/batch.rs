//! A commit round's batch, as pure data: ops queued behind one another for
//! one document, each rebased to the head and then past the ops before it in
//! the batch (as if those had been committed first), with its inverse taken
//! against the exact text it applies to (for undo).
//!
//! Owns: [`Batch`].
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).

use ropey::Rope;

use crate::doc::{DocState, RebaseError, Tie};
use crate::ot::{OpError, Operation};

/// Ops that will be committed back to back after the head of a document.
#[derive(Debug)]
pub struct Batch {
    /// The head the batch applies to.
    base: u64,
    /// The text after the batch's ops so far.
    text: Rope,
    /// The batch's ops, each applying after the ones before it.
    ops: Vec<Operation>,
}

impl Batch {
    /// An empty batch on the head of `state`.
    pub fn new(state: &DocState) -> Self {
        Self {
            base: state.version(),
            text: state.rope().clone(),
            ops: Vec::new(),
        }
    }

    /// The head version the batch applies to.
    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Characters in the document once the batch's ops so far are applied.
    pub fn len_chars(&self) -> usize {
        self.text.len_chars()
    }

    /// `op`, based on `base`, rebased over `state`'s history to the head and
    /// then past this batch's ops (with `tie` deciding inserts at one
    /// place, as in [`DocState::rebase_with`]). `state` must be the state
    /// the batch was made on. Nothing changes until [`Batch::push`].
    pub fn rebase(
        &self,
        state: &DocState,
        base: u64,
        op: Operation,
        tie: Tie,
    ) -> Result<Operation, RebaseError> {
        debug_assert_eq!(state.version(), self.base, "batch made on another head");
        let mut op = state.rebase_with(base, op, tie)?;
        for prior in &self.ops {
            op = tie.transform(op, prior)?;
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

    /// Add `op` (from [`Batch::rebase`]) at the end; returns its inverse
    /// against the text it applies to. On error nothing changes.
    pub fn push(&mut self, op: Operation) -> Result<Operation, OpError> {
        let inverse = op.invert(&self.text)?;
        op.apply_rope(&mut self.text)?;
        self.ops.push(op);
        Ok(inverse)
    }

    /// The batch's ops so far, in order.
    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// The version the `i`th op of the batch (from 0) will produce.
    pub fn version_of(&self, i: usize) -> u64 {
        self.base + i as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::doc::Record;
    use crate::ot::splice;

    fn record(version: u64, op: Operation) -> Arc<Record> {
        Arc::new(Record {
            version,
            op,
            user: "u".into(),
            client: format!("c{version}"),
            seq: 1,
            time: 0,
            trace: None,
        })
    }

    /// Ops that each apply to `text` at version `base`.
    fn ops_on(text: &str, picks: &[(usize, usize, String)]) -> Vec<Operation> {
        let len = text.chars().count();
        picks
            .iter()
            .map(|(pos, del, ins)| {
                let pos = pos % (len + 1);
                let del = del % (len - pos + 1);
                splice(len, pos, del, ins)
            })
            .collect()
    }

    proptest! {
        /// A batch commits the same text as committing its ops one at a time
        /// (each rebased over the ones committed before it), and each
        /// inverse undoes its op exactly.
        #[test]
        fn batch_equals_sequential_commits(
            start in "[a-c]{0,12}",
            picks in proptest::collection::vec((0usize..20, 0usize..4, "[x-z]{0,3}"), 1..6),
        ) {
            let ops = ops_on(&start, &picks);
            // One at a time: each op based on version 0, rebased to the head.
            let mut seq = DocState::new(&start, 0, crate::doc::Retain::count(100));
            for (i, op) in ops.iter().enumerate() {
                let op = seq.rebase(0, op.clone()).unwrap();
                seq.apply(record(i as u64 + 1, op)).unwrap();
            }
            // As one batch.
            let state = DocState::new(&start, 0, crate::doc::Retain::count(100));
            let mut batch = Batch::new(&state);
            let mut text = start.clone();
            for op in &ops {
                let op = batch.rebase(&state, 0, op.clone(), Tie::RebasedFirst).unwrap();
                let before = text.clone();
                let inverse = batch.push(op.clone()).unwrap();
                text = op.apply(&text).unwrap();
                prop_assert_eq!(inverse.apply(&text).unwrap(), before);
            }
            prop_assert_eq!(text, seq.content());
            prop_assert_eq!(batch.len(), ops.len());
            prop_assert_eq!(batch.version_of(0), 1);
        }
    }

    #[test]
    fn refused_op_leaves_the_batch_alone() {
        let state = DocState::new("abc", 0, crate::doc::Retain::count(10));
        let mut batch = Batch::new(&state);
        let op = batch
            .rebase(&state, 0, splice(3, 3, 0, "d"), Tie::RebasedFirst)
            .unwrap();
        batch.push(op).unwrap();
        // Based on a version the document never had.
        assert!(batch
            .rebase(&state, 5, splice(3, 0, 0, "x"), Tie::RebasedFirst)
            .is_err());
        // Wrong length for the document.
        assert!(batch
            .rebase(&state, 0, splice(7, 0, 0, "x"), Tie::RebasedFirst)
            .is_err());
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.len_chars(), 4);
    }
}
