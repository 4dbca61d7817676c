//! The end of a commit round: what each sequencer answer means for the
//! round's edits (answered, requeued in order, paused, re-seeded, reset),
//! and what a stopping task does with whatever still waits.
//!
//! Must not import: anything that does I/O (this is the pure core).

use std::time::Duration;

use super::{EditId, Effect, Pipeline, Queued, Refusal, Verdict, Waiting};
use crate::commit::CommitReply;

/// The longest pause for a settling document before the round asks again.
pub const SETTLE_PAUSE_MAX: Duration = Duration::from_millis(500);
/// The pause after an outage before the round is tried again.
pub const OUTAGE_PAUSE: Duration = Duration::from_millis(100);
/// Microseconds of racing pause per round lost (drawn uniformly up to it).
const RACE_PAUSE_US: u64 = 200;

/// How a round's sequencer call ended.
#[derive(Debug)]
pub enum Outcome {
    Reply(CommitReply),
    /// The sequencer refused the write or did not answer (it may have
    /// committed: the next round finds out, as a duplicate or stale).
    Outage,
    /// The sequencer's answer cannot be trusted (a corrupt reply, a
    /// history behind ours): refuse and reset.
    Broken,
}

/// How a re-seed asked for by [`Effect::Reseed`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reseeded {
    Done,
    /// An outage: the round's edits are refused (their clients resend).
    Failed,
    /// Our history conflicts with the sequencer's: refuse and reset.
    Conflict,
}

impl Pipeline {
    /// The round's call ended: what it committed is applied and its edits
    /// answered, or they go back to the front of the queue.
    pub fn finish(&mut self, outcome: Outcome, now_ms: i64, out: &mut Vec<Effect>) {
        let Some(round) = self.round.take() else {
            return;
        };
        if let Outcome::Reply(
            CommitReply::Committed(_) | CommitReply::Duplicates(_) | CommitReply::Stale { .. },
        ) = &outcome
        {
            self.extended(round.sent);
        }
        match outcome {
            // Another instance holds the lease: what we had goes to it.
            Outcome::Reply(CommitReply::Fenced { holder, left }) if self.leases.is_some() => {
                self.fenced(holder, left.as_millis() as i64, now_ms);
                self.requeue(round.items.into_iter());
            }
            Outcome::Reply(CommitReply::Committed(recs)) => {
                let versions: Vec<u64> = recs.iter().map(|r| r.version).collect();
                out.push(Effect::Apply(recs));
                self.runs = round.runs;
                for (q, v) in round.items.into_iter().zip(versions) {
                    let verdict = Verdict::Committed(v);
                    out.push(Effect::Answer { id: q.id, verdict });
                }
            }
            Outcome::Reply(CommitReply::Duplicates(dups)) => {
                let mut items: Vec<Option<Queued>> = round.items.into_iter().map(Some).collect();
                for (i, version) in dups {
                    if let Some(q) = items.get_mut(i).and_then(Option::take) {
                        let verdict = Verdict::Duplicate {
                            client: q.author.client,
                            seq: q.seq,
                            version,
                        };
                        out.push(Effect::Answer { id: q.id, verdict });
                    }
                }
                self.requeue(items.into_iter().flatten());
            }
            Outcome::Reply(CommitReply::Stale { missed }) => {
                if !missed.is_empty() {
                    out.push(Effect::Apply(missed));
                }
                let attempts = round.items.iter().map(|q| q.attempts).max().unwrap_or(0) + 1;
                if attempts >= 2 {
                    let us = self.draw(RACE_PAUSE_US * u64::from(attempts));
                    self.pause = Some(Duration::from_micros(us));
                }
                self.requeue(round.items.into_iter().map(|mut q| {
                    q.attempts += 1;
                    q
                }));
            }
            Outcome::Reply(CommitReply::NotSeeded) => {
                // Held until the re-seed ends (`reseeded`).
                self.round = Some(round);
                out.push(Effect::Reseed);
            }
            // Not an outage: the sequencer holds commits for a bounded
            // moment after a re-seed, or another instance holds the
            // document's commit lease; the round waits it out.
            Outcome::Reply(CommitReply::Settling(left) | CommitReply::Fenced { left, .. }) => {
                self.pause = Some(left.min(SETTLE_PAUSE_MAX));
                self.requeue(round.items.into_iter());
            }
            Outcome::Broken => {
                refuse_all(round.items, out);
                out.push(Effect::Reset);
            }
            Outcome::Outage => {
                let mut again = Vec::new();
                for mut q in round.items {
                    q.outages += 1;
                    if q.outages >= self.limits.max_outage_attempts {
                        let verdict = Verdict::Refused(Refusal::unavailable());
                        out.push(Effect::Answer { id: q.id, verdict });
                    } else {
                        again.push(q);
                    }
                }
                self.pause = Some(OUTAGE_PAUSE);
                self.requeue(again.into_iter());
            }
        }
    }

    /// The re-seed [`Effect::Reseed`] asked for ended: the held round goes
    /// back to the queue (one attempt counted), or is refused.
    pub fn reseeded(&mut self, result: Reseeded, out: &mut Vec<Effect>) {
        let Some(round) = self.round.take() else {
            return;
        };
        match result {
            Reseeded::Done => self.requeue(round.items.into_iter().map(|mut q| {
                q.attempts += 1;
                q
            })),
            Reseeded::Failed => refuse_all(round.items, out),
            Reseeded::Conflict => {
                refuse_all(round.items, out);
                out.push(Effect::Reset);
            }
        }
    }

    /// The task is stopping: everything that waits, as `(in the round,
    /// queued)`. The pipeline is empty after.
    pub fn drain(&mut self) -> (Vec<EditId>, Vec<EditId>) {
        let round = self.round.take().map(|r| r.items).unwrap_or_default();
        let mut queued: Vec<EditId> = self
            .queue
            .drain(..)
            .map(|w| match w {
                Waiting::Edit(q) => q.id,
                Waiting::Undo(u) => u.id,
            })
            .collect();
        self.queued_bytes = 0;
        queued.extend(self.drain_pending());
        (round.into_iter().map(|q| q.id).collect(), queued)
    }

    /// Put edits back at the front of the queue, in order.
    pub(super) fn requeue(&mut self, items: impl DoubleEndedIterator<Item = Queued>) {
        for q in items.rev() {
            self.queued_bytes += q.bytes;
            self.queue.push_front(Waiting::Edit(Box::new(q)));
        }
    }
}

fn refuse_all(items: Vec<Queued>, out: &mut Vec<Effect>) {
    for q in items {
        let verdict = Verdict::Refused(Refusal::unavailable());
        out.push(Effect::Answer { id: q.id, verdict });
    }
}
