//! The pipeline's rules, each on its own, without a task or a backend
//! (typing runs and undo steps in `steps.rs`).

mod lease;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::commit::CommitReply;
use crate::doc::{ApplyOutcome, Record, Retain};
use crate::ot::splice;

/// A document, its client marks, and a pipeline over it.
fn view<'a>(state: &'a DocState, clients: &'a ClientSeqs, catching_up: bool) -> Doc<'a> {
    Doc {
        state,
        clients,
        epoch: "e1",
        catching_up,
    }
}

struct Fixture {
    state: DocState,
    clients: ClientSeqs,
    p: Pipeline,
    catching_up: bool,
    next: u64,
    now: i64,
}

impl Fixture {
    fn new(limits: Limits) -> Self {
        Self {
            state: DocState::new("", 0, Retain::count(1000)),
            clients: ClientSeqs::new(1000),
            p: Pipeline::new(limits, 7),
            catching_up: false,
            next: 0,
            now: 1_000_000,
        }
    }

    /// `client`'s `seq`-th edit: `op` on `base`.
    fn submit_op(
        &mut self,
        client: &str,
        seq: u64,
        base: u64,
        op: Operation,
        role: Role,
    ) -> (EditId, Vec<Effect>) {
        self.next += 1;
        let id = EditId(self.next);
        let sub = Submission {
            id,
            author: Author {
                client: client.into(),
                user: format!("u-{client}"),
                role,
            },
            seq,
            base,
            op,
        };
        let mut out = Vec::new();
        let doc = view(&self.state, &self.clients, self.catching_up);
        self.p.submit(sub, &doc, &mut out);
        (id, out)
    }

    /// `client`'s `seq`-th edit: insert `text` at the end of the head.
    fn submit_as(
        &mut self,
        client: &str,
        seq: u64,
        text: &str,
        role: Role,
    ) -> (EditId, Vec<Effect>) {
        let len = self.state.len_chars();
        let (base, op) = (self.state.version(), splice(len, len, 0, text));
        self.submit_op(client, seq, base, op, role)
    }

    fn submit(&mut self, client: &str, seq: u64, text: &str) -> EditId {
        let (id, out) = self.submit_as(client, seq, text, Role::Editor);
        assert!(out.is_empty(), "{out:?}");
        id
    }

    fn poll(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        let doc = view(&self.state, &self.clients, self.catching_up);
        self.p.poll(&doc, self.now, &mut out);
        out
    }

    /// Poll for a round: its batch and ids.
    fn round(&mut self) -> (CommitBatch, Vec<EditId>, Option<Duration>) {
        let out = self.poll();
        match out.into_iter().last() {
            Some(Effect::Commit {
                batch, ids, pause, ..
            }) => (batch, ids, pause),
            other => panic!("no round: {other:?}"),
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Vec<Effect> {
        let mut out = Vec::new();
        self.p.finish(outcome, self.now, &mut out);
        out
    }

    /// Apply committed records as the task would.
    fn apply(&mut self, recs: &[Arc<Record>]) {
        for r in recs {
            assert_eq!(self.state.apply(r.clone()), Ok(ApplyOutcome::Applied));
            self.clients.record(&r.client, r.seq, r.version);
        }
    }

    /// Someone else commits `text` at the head.
    fn other_commits(&mut self, client: &str, text: &str) -> Arc<Record> {
        let len = self.state.len_chars();
        let rec = Arc::new(Record {
            version: self.state.version() + 1,
            op: splice(len, len, 0, text),
            user: "other".into(),
            client: client.into(),
            seq: 1,
            time: self.now,
            trace: None,
        });
        self.apply(std::slice::from_ref(&rec));
        rec
    }
}

fn answers(out: &[Effect]) -> Vec<(EditId, Verdict)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Answer { id, verdict } => Some((*id, verdict.clone())),
            _ => None,
        })
        .collect()
}

fn code(v: &Verdict) -> Option<ErrorCode> {
    match v {
        Verdict::Refused(r) => Some(r.code),
        _ => None,
    }
}

#[test]
fn refusals_at_submit() {
    let mut f = Fixture::new(Limits::new(100));
    let (_, out) = f.submit_as("v", 1, "x", Role::Viewer);
    assert_eq!(code(&answers(&out)[0].1), Some(ErrorCode::Forbidden));
    let (_, out) = f.submit_as("a", 0, "x", Role::Editor);
    assert_eq!(code(&answers(&out)[0].1), Some(ErrorCode::BadMessage));
    assert!(f.p.is_idle());
}

#[test]
fn a_resend_and_a_noop_are_answered_at_once() {
    let mut f = Fixture::new(Limits::new(100));
    f.other_commits("a", "hi");
    let (_, out) = f.submit_as("a", 1, "again", Role::Editor);
    assert_eq!(
        answers(&out)[0].1,
        Verdict::Duplicate {
            client: "a".into(),
            seq: 1,
            version: 1
        }
    );
    let (_, out) = f.submit_as("b", 1, "", Role::Editor);
    assert_eq!(answers(&out)[0].1, Verdict::Unchanged(1));
    assert!(f.p.is_idle());
}

#[test]
fn the_queue_is_capped_in_edits_and_bytes() {
    let mut f = Fixture::new(Limits {
        max_queued: 2,
        max_queued_bytes: 100,
        ..Limits::new(10_000)
    });
    f.submit("a", 1, "x");
    f.submit("b", 1, "x");
    let (_, out) = f.submit_as("c", 1, "x", Role::Editor);
    assert!(matches!(out[0], Effect::Note(Note::QueueFull)));
    assert_eq!(answers(&out)[0].1, Verdict::Refused(Refusal::busy()));
    let mut f = Fixture::new(Limits {
        max_queued_bytes: 100,
        ..Limits::new(10_000)
    });
    f.submit("a", 1, &"x".repeat(60));
    let (_, out) = f.submit_as("b", 1, &"y".repeat(60), Role::Editor);
    assert_eq!(code(&answers(&out)[0].1), Some(ErrorCode::Internal));
    assert_eq!(f.p.queued(), 1);
}

#[test]
fn a_round_takes_one_edit_per_client_up_to_the_caps() {
    let mut f = Fixture::new(Limits {
        max_batch_records: 3,
        ..Limits::new(10_000)
    });
    let a1 = f.submit("a", 1, "1");
    let b1 = f.submit("b", 1, "2");
    f.submit("a", 2, "3");
    f.submit("c", 1, "4");
    let (batch, ids, pause) = f.round();
    assert_eq!(ids, [a1, b1], "a's second edit waits for the next round");
    assert_eq!((batch.base, batch.epoch.as_str(), pause), (0, "e1", None));
    assert!(f.poll().is_empty(), "one round in flight");
    let recs = batch.into_records();
    f.apply(&recs);
    f.finish(Outcome::Reply(CommitReply::Committed(recs)));
    let (batch, ids, _) = f.round();
    assert_eq!((batch.base, ids.len()), (2, 2));
    // Bytes: one oversized op still goes, alone.
    let mut f = Fixture::new(Limits {
        max_batch_bytes: 10,
        ..Limits::new(10_000)
    });
    f.submit("a", 1, &"x".repeat(50));
    f.submit("b", 1, "y");
    assert_eq!(f.round().1.len(), 1);
}

#[test]
fn committed_applies_before_it_answers_in_batch_order() {
    let mut f = Fixture::new(Limits::new(100));
    let a = f.submit("a", 1, "x");
    let b = f.submit("b", 1, "y");
    let (batch, _, _) = f.round();
    let recs = batch.into_records();
    let out = f.finish(Outcome::Reply(CommitReply::Committed(recs)));
    assert!(matches!(&out[0], Effect::Apply(r) if r.len() == 2));
    assert_eq!(
        answers(&out),
        [(a, Verdict::Committed(1)), (b, Verdict::Committed(2))]
    );
    assert!(f.p.is_idle());
}

#[test]
fn duplicates_are_answered_and_the_rest_requeued_without_an_attempt() {
    let mut f = Fixture::new(Limits {
        max_commit_attempts: 1,
        ..Limits::new(100)
    });
    let a = f.submit("a", 1, "x");
    let b = f.submit("b", 1, "y");
    let c = f.submit("c", 1, "z");
    f.round();
    let out = f.finish(Outcome::Reply(CommitReply::Duplicates(vec![(1, 9)])));
    assert_eq!(
        answers(&out),
        [(
            b,
            Verdict::Duplicate {
                client: "b".into(),
                seq: 1,
                version: 9
            }
        )]
    );
    // One attempt allowed: a requeue that counted one would refuse them.
    let (_, ids, _) = f.round();
    assert_eq!(ids, [a, c]);
}

#[test]
fn stale_applies_what_was_missed_and_retries_with_a_growing_pause() {
    let mut f = Fixture::new(Limits::new(100));
    let a = f.submit("a", 1, "x");
    f.round();
    let missed = f.other_commits("o", "other");
    let out = f.finish(Outcome::Reply(CommitReply::Stale {
        missed: vec![missed],
    }));
    assert!(matches!(&out[..], [Effect::Apply(r)] if r.len() == 1));
    // The first loss retries at once, rebased on the new head.
    let (batch, ids, pause) = f.round();
    assert_eq!((batch.base, ids, pause), (1, vec![a], None));
    assert_eq!(batch.records[0].op, splice(5, 0, 0, "x"), "its text first");
    // From the second, a pause of at most 200 µs per round lost.
    for lost in 2..=5u64 {
        f.finish(Outcome::Reply(CommitReply::Stale { missed: vec![] }));
        let (_, _, pause) = f.round();
        let pause = pause.unwrap_or_default();
        assert!(pause <= Duration::from_micros(200 * lost), "{pause:?}");
    }
}

#[test]
fn the_racing_pause_is_a_function_of_the_seed() {
    let pauses = |seed| {
        let mut f = Fixture::new(Limits::new(100));
        f.p = Pipeline::new(Limits::new(100), seed);
        f.submit("a", 1, "x");
        f.round();
        (0..8)
            .map(|_| {
                f.finish(Outcome::Reply(CommitReply::Stale { missed: vec![] }));
                f.round().2
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(pauses(1), pauses(1));
    assert_ne!(pauses(1), pauses(2));
}

#[test]
fn an_edit_that_keeps_losing_is_refused_busy() {
    let mut f = Fixture::new(Limits {
        max_commit_attempts: 3,
        ..Limits::new(100)
    });
    let a = f.submit("a", 1, "x");
    for _ in 0..3 {
        f.round();
        f.finish(Outcome::Reply(CommitReply::Stale { missed: vec![] }));
    }
    let out = f.poll();
    assert!(matches!(out[0], Effect::Note(Note::RetriesExhausted)));
    assert_eq!(answers(&out), [(a, Verdict::Refused(Refusal::busy()))]);
}

#[test]
fn outages_pause_and_refuse_at_the_third() {
    let mut f = Fixture::new(Limits::new(100));
    let a = f.submit("a", 1, "x");
    f.round();
    for _ in 0..2 {
        assert!(f.finish(Outcome::Outage).is_empty());
        assert_eq!(f.round().2, Some(OUTAGE_PAUSE));
    }
    let out = f.finish(Outcome::Outage);
    assert_eq!(
        answers(&out),
        [(a, Verdict::Refused(Refusal::unavailable()))]
    );
    assert!(f.p.is_idle());
}

#[test]
fn settling_waits_bounded_and_counts_nothing() {
    let mut f = Fixture::new(Limits {
        max_commit_attempts: 1,
        ..Limits::new(100)
    });
    f.submit("a", 1, "x");
    f.round();
    f.finish(Outcome::Reply(CommitReply::Settling(Duration::from_secs(
        3,
    ))));
    assert_eq!(f.round().2, Some(SETTLE_PAUSE_MAX));
    f.finish(Outcome::Reply(CommitReply::Settling(
        Duration::from_millis(20),
    )));
    assert_eq!(f.round().2, Some(Duration::from_millis(20)));
}

#[test]
fn fenced_waits_for_the_lease_bounded_and_counts_nothing() {
    let mut f = Fixture::new(Limits {
        max_commit_attempts: 1,
        ..Limits::new(100)
    });
    f.submit("a", 1, "x");
    f.round();
    let holder = "3:i2:ab".to_owned();
    let left = Duration::from_millis(1_500);
    f.finish(Outcome::Reply(CommitReply::Fenced { holder, left }));
    assert_eq!(f.round().2, Some(SETTLE_PAUSE_MAX));
}

#[test]
fn not_seeded_holds_the_round_until_the_reseed_ends() {
    for (result, refused, reset) in [
        (Reseeded::Done, false, false),
        (Reseeded::Failed, true, false),
        (Reseeded::Conflict, true, true),
    ] {
        let mut f = Fixture::new(Limits::new(100));
        let a = f.submit("a", 1, "x");
        f.round();
        let out = f.finish(Outcome::Reply(CommitReply::NotSeeded));
        assert!(matches!(&out[..], [Effect::Reseed]));
        f.submit("b", 1, "y");
        assert!(f.poll().is_empty(), "no round while re-seeding");
        let mut out = Vec::new();
        f.p.reseeded(result, &mut out);
        let refusals = answers(&out);
        assert_eq!(refusals.first().map(|r| r.0 == a), refused.then_some(true));
        assert_eq!(matches!(out.last(), Some(Effect::Reset)), reset);
        if !refused {
            assert_eq!(f.round().1.len(), 2);
        }
    }
}

#[test]
fn a_broken_reply_refuses_the_round_and_resets() {
    let mut f = Fixture::new(Limits::new(100));
    let a = f.submit("a", 1, "x");
    f.round();
    let out = f.finish(Outcome::Broken);
    assert_eq!(
        answers(&out),
        [(a, Verdict::Refused(Refusal::unavailable()))]
    );
    assert!(matches!(out.last(), Some(Effect::Reset)));
}

#[test]
fn an_edit_that_does_not_rebase_is_looked_up() {
    let mut f = Fixture::new(Limits::new(100));
    f.other_commits("o", "abc");
    // Wrong length for version 1.
    f.submit_op("a", 1, 1, splice(7, 0, 0, "x"), Role::Editor);
    let out = f.poll();
    let Some(Effect::Lookup {
        client, seq, error, ..
    }) = out.into_iter().next()
    else {
        panic!("no lookup");
    };
    assert_eq!((client.as_str(), seq), ("a", 1));
    let dup = unrebasable("a", 1, Some((1, 4)), error.clone(), false);
    assert!(matches!(dup, Verdict::Duplicate { version: 4, .. }));
    assert_eq!(
        code(&unrebasable("a", 1, None, error.clone(), false)),
        Some(ErrorCode::BadOp)
    );
    assert_eq!(
        code(&unrebasable("a", 1, None, error, true)),
        Some(ErrorCode::StorageUnavailable)
    );
    let range = RebaseError::OutOfRange {
        base: 1,
        oldest: 5,
        head: 9,
    };
    assert_eq!(
        code(&unrebasable("a", 2, Some((1, 3)), range, false)),
        Some(ErrorCode::VersionOutOfRange)
    );
}

#[test]
fn only_an_edit_that_grows_the_text_past_the_limit_is_too_large() {
    let mut f = Fixture::new(Limits::new(5));
    f.other_commits("o", "abcde");
    let a = f.submit("a", 1, "x");
    let out = f.poll();
    assert_eq!(code(&answers(&out)[0].1), Some(ErrorCode::DocTooLarge));
    assert!(f.p.is_idle(), "{a:?} answered");
    // A delete at the limit goes.
    f.submit_op("b", 1, 1, splice(5, 0, 1, ""), Role::Editor);
    assert_eq!(f.round().1.len(), 1);
}

#[test]
fn drain_names_the_round_and_the_queue() {
    let mut f = Fixture::new(Limits::new(100));
    let a = f.submit("a", 1, "x");
    f.round();
    let b = f.submit("b", 1, "y");
    let mut out = Vec::new();
    f.p.submit_undo(EditId(50), false, &mut out);
    assert_eq!(f.p.drain(), (vec![a], vec![b, EditId(50)]));
    assert!(f.p.is_idle());
}

#[test]
fn an_edit_that_rebases_to_nothing_makes_no_version() {
    let mut f = Fixture::new(Limits::new(100));
    f.other_commits("o", "abc");
    // b deletes "b" on version 1; someone deletes it first.
    let (b, _) = f.submit_op("b", 1, 1, splice(3, 1, 1, ""), Role::Editor);
    let len = f.state.len_chars();
    let rec = Arc::new(Record {
        version: 2,
        op: splice(len, 1, 1, ""),
        user: "other".into(),
        client: "o".into(),
        seq: 2,
        time: f.now,
        trace: None,
    });
    f.apply(&[rec]);
    let out = f.poll();
    assert_eq!(answers(&out), [(b, Verdict::Unchanged(2))]);
    assert!(f.p.is_idle(), "nothing committed");
}
