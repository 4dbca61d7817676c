//! Building a round: the undo at the queue's front turned into its edit
//! (its step popped, refilled past, skipped when empty), then the front's
//! edits rebased in order into one batch on the head, each with its record
//! and undo step, or answered instead.
//!
//! Must not import: anything that does I/O (this is the pure core).

use std::collections::HashSet;

use super::{
    refused, resend, steps, Doc, Effect, Kind, Note, Pipeline, Queued, Refusal, Round, Runs,
    Verdict, Waiting, MAX_EMPTY_STEPS,
};
use crate::batch::Batch;
use crate::commit::{CommitBatch, CommitRecord};
use crate::doc::Tie;
use crate::protocol::ErrorCode;
use crate::undo::{UndoEntry, TYPING_RUN_MS};

/// What became of an edit taken into a round.
enum Prepared {
    Record(Box<(Queued, CommitRecord)>),
    /// Answered instead (refused, a resend, looked up, unchanged).
    Answered,
    /// Back to the queue for the next round.
    Later(Queued),
}

impl Pipeline {
    /// Start a round if none is in flight and edits wait: the queue's front
    /// (up to the batch caps, one edit per client, an undo only first)
    /// rebased in order into one batch on the head. `now_ms` stamps the
    /// records and ages typing runs.
    pub fn poll(&mut self, doc: &Doc, now_ms: i64, out: &mut Vec<Effect>) {
        if self.round.is_some() {
            return;
        }
        let refilled = std::mem::take(&mut self.refilled);
        loop {
            if !self.queue.is_empty() && !self.front_step(doc, refilled, out) {
                return;
            }
            // Not the lease holder: forward (or ask for the lease).
            if self.lease_step(now_ms, out) || self.queue.is_empty() {
                return;
            }
            if self.build(doc, now_ms, out) {
                return;
            }
        }
    }

    /// Turn an undo at the front into its edit. False when the task must
    /// act first (pop a step, refill).
    fn front_step(&mut self, doc: &Doc, refilled: bool, out: &mut Vec<Effect>) -> bool {
        let Some(Waiting::Undo(u)) = self.queue.front_mut() else {
            return true;
        };
        let (id, redo) = (u.id, u.redo);
        let Some(p) = u.popped.take() else {
            out.push(Effect::PopStep { id, redo });
            return false;
        };
        let head = doc.state.version();
        if p.entry.version > head && !refilled {
            u.popped = Some(p);
            self.refilled = true;
            out.push(Effect::Refill);
            return false;
        }
        let rebased =
            doc.state
                .rebase_with(p.entry.version, p.entry.op.clone(), Tie::CommittedFirst);
        match rebased {
            Ok(op) if op.is_noop() => {
                u.skipped += 1;
                if u.skipped >= MAX_EMPTY_STEPS {
                    self.queue.pop_front();
                    out.push(Effect::StepGone { id, refusal: None });
                    return true;
                }
                out.push(Effect::PopStep { id, redo });
                false
            }
            Ok(op) => {
                let kind = Kind::Step { from: p.from };
                let q = Queued {
                    id,
                    author: p.author,
                    seq: 1,
                    base: head,
                    op,
                    tie: kind.tie(),
                    kind,
                    attempts: 0,
                    outages: 0,
                    bytes: 0,
                };
                // Counted as queued: building takes it out again.
                if let Some(front) = self.queue.front_mut() {
                    *front = Waiting::Edit(Box::new(q));
                }
                true
            }
            Err(_) => {
                self.queue.pop_front();
                let m = "the step to undo is older than the history the server keeps";
                let refusal = Some(Refusal::new(ErrorCode::VersionOutOfRange, m));
                out.push(Effect::StepGone { id, refusal });
                true
            }
        }
    }

    /// Build a batch from the queue's front. True when a round started.
    fn build(&mut self, doc: &Doc, now_ms: i64, out: &mut Vec<Effect>) -> bool {
        let state = doc.state;
        let mut batch = Batch::new(state);
        let mut runs = self.runs.clone();
        runs.retain(|_, r| now_ms - r.entry.time <= TYPING_RUN_MS);
        let (mut items, mut records, mut depths) = (Vec::new(), Vec::new(), Vec::new());
        let mut clients = HashSet::new();
        let mut later = Vec::new();
        let mut bytes = 0;
        while items.len() < self.limits.max_batch_records && bytes < self.limits.max_batch_bytes {
            match self.queue.front() {
                Some(Waiting::Edit(q)) if !clients.contains(&q.author.client) => {}
                // An undo waits for a round of its own: its stack must
                // first hold this batch's steps.
                _ => break,
            }
            let Some(Waiting::Edit(q)) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= q.bytes;
            let depth = state.version().saturating_sub(q.base) + batch.len() as u64;
            match self.prepare(doc, &mut batch, *q, now_ms, &mut runs, out) {
                Prepared::Record(prepared) => {
                    let (q, rec) = *prepared;
                    clients.insert(q.author.client.clone());
                    bytes += q.bytes.max(1);
                    items.push(q);
                    records.push(rec);
                    depths.push(depth);
                }
                Prepared::Answered => {}
                Prepared::Later(q) => {
                    // Its client's next edits wait behind it.
                    clients.insert(q.author.client.clone());
                    later.push(q);
                }
            }
        }
        self.requeue(later.into_iter());
        if items.is_empty() {
            return false;
        }
        let ids = items.iter().map(|q| q.id).collect();
        out.push(Effect::Commit {
            batch: CommitBatch {
                base: state.version(),
                records,
                epoch: doc.epoch.to_owned(),
                token: self.token().unwrap_or_default(),
            },
            ids,
            depths,
            pause: self.pause.take(),
        });
        self.round = Some(Round {
            items,
            runs,
            sent: now_ms,
        });
        true
    }

    /// Rebase one edit into the batch and make its record (with its undo
    /// step), or what became of it instead.
    fn prepare(
        &mut self,
        doc: &Doc,
        batch: &mut Batch,
        q: Queued,
        time: i64,
        runs: &mut Runs,
        out: &mut Vec<Effect>,
    ) -> Prepared {
        let id = q.id;
        let answer = |out: &mut Vec<Effect>, verdict| out.push(Effect::Answer { id, verdict });
        // A resend, or an edit an earlier round committed after all (its
        // answer was lost to a timeout).
        if let Some(verdict) = resend(doc, &q.author.client, q.seq) {
            answer(out, verdict);
            return Prepared::Answered;
        }
        if q.attempts >= self.limits.max_commit_attempts {
            out.push(Effect::Note(Note::RetriesExhausted));
            answer(out, Verdict::Refused(Refusal::busy()));
            return Prepared::Answered;
        }
        let op = match batch.rebase(doc.state, q.base, q.op.clone(), q.tie) {
            Ok(op) => op,
            Err(error) => {
                let (client, seq) = (q.author.client, q.seq);
                out.push(Effect::Lookup {
                    id,
                    client,
                    seq,
                    error,
                });
                return Prepared::Answered;
            }
        };
        if op.is_noop() {
            // Others' edits took away everything it did: it makes no
            // version (the protocol's rule for an op that changes nothing).
            // Committed as a version, it could be acknowledged twice: as
            // unchanged where its client resent it, and by its record.
            if !batch.is_empty() {
                // Emptied by this round's ops, which its client has not
                // been sent yet: answered once they are committed.
                return Prepared::Later(q);
            }
            answer(out, Verdict::Unchanged(doc.state.version()));
            return Prepared::Answered;
        }
        let max = self.limits.max_doc_chars;
        if op.target_len() > max && op.target_len() > op.base_len() {
            let m = format!(
                "the document would have {} characters; the limit is {max}",
                op.target_len()
            );
            answer(out, refused(ErrorCode::DocTooLarge, &m));
            return Prepared::Answered;
        }
        let inverse = match batch.push(op.clone()) {
            Ok(inverse) => inverse,
            Err(e) => {
                answer(out, refused(ErrorCode::BadOp, &e.to_string()));
                return Prepared::Answered;
            }
        };
        let entry = UndoEntry {
            version: batch.version_of(batch.len() - 1),
            op: inverse,
            time,
        };
        let undo = steps::step_push(doc.state, batch, &q.kind, &q.author.user, &op, entry, runs);
        let rec = CommitRecord {
            op,
            user: q.author.user.clone(),
            client: q.author.client.clone(),
            seq: q.seq,
            time,
            undo: Some(undo),
            trace: None,
        };
        Prepared::Record(Box::new((q, rec)))
    }
}
