//! Typing runs and undo steps through the pipeline.

use super::*;

/// Commit whatever the next round holds.
fn commit_round(f: &mut Fixture) -> Vec<Arc<Record>> {
    let (batch, _, _) = f.round();
    let recs = batch.into_records();
    f.apply(&recs);
    f.finish(Outcome::Reply(CommitReply::Committed(recs.clone())));
    recs
}

#[test]
fn typing_runs_join_within_a_second_and_only_once_committed() {
    let mut f = Fixture::new(Limits::new(100));
    f.submit("a", 1, "h");
    let (batch, _, _) = f.round();
    assert_eq!(batch.records[0].undo.as_ref().unwrap().replace_top_at, None);
    let recs = batch.into_records();
    f.apply(&recs);
    f.finish(Outcome::Reply(CommitReply::Committed(recs)));
    // The next keystroke joins the run: it replaces the top pushed at 1.
    f.now += 200;
    f.submit("a", 2, "i");
    let (batch, _, _) = f.round();
    let push = batch.records[0].undo.clone().unwrap();
    assert_eq!(push.replace_top_at, Some(1));
    // Not committed: the run of this round is not adopted.
    f.finish(Outcome::Outage);
    let (batch, _, _) = f.round();
    assert_eq!(
        batch.records[0].undo.as_ref().unwrap().replace_top_at,
        Some(1)
    );
    f.finish(Outcome::Outage);
    f.round();
    f.finish(Outcome::Outage);
    // After a second without an edit the run is closed.
    f.now += 1_500;
    f.submit("a", 3, "j");
    let (batch, _, _) = f.round();
    assert_eq!(batch.records[0].undo.as_ref().unwrap().replace_top_at, None);
}

fn popped(user: &str, entry: UndoEntry) -> Popped {
    Popped {
        author: Author {
            client: "undo~1".into(),
            user: user.into(),
            role: Role::Editor,
        },
        from: Stack::Undo,
        entry,
    }
}

#[test]
fn an_undo_pops_its_step_at_the_front_and_commits_alone_first() {
    let mut f = Fixture::new(Limits::new(100));
    f.submit("a", 1, "hello");
    let recs = commit_round(&mut f);
    let entry = recs[0].op.invert(&ropey::Rope::new()).unwrap();
    let e = f.submit("b", 1, "!");
    f.next += 1;
    let u = EditId(f.next);
    let mut out = Vec::new();
    f.p.submit_undo(u, false, &mut out);
    f.submit("c", 1, "?");
    // The edit before it goes first; the undo waits for its own round.
    let (_, ids, _) = f.round();
    assert_eq!(ids, [e]);
    f.finish(Outcome::Outage);
    let (batch, _, _) = f.round();
    let recs = batch.into_records();
    f.apply(&recs);
    f.finish(Outcome::Reply(CommitReply::Committed(recs)));
    let out = f.poll();
    assert!(matches!(&out[..], [Effect::PopStep { id, redo: false }] if *id == u));
    assert!(f.poll().iter().all(|e| matches!(e, Effect::PopStep { .. })));
    f.p.step_popped(
        u,
        popped(
            "u-a",
            UndoEntry {
                version: 1,
                op: entry,
                time: 0,
            },
        ),
    );
    let (batch, ids, _) = f.round();
    assert_eq!(ids.first(), Some(&u), "the undo leads its round");
    let push = batch.records[0].undo.clone().unwrap();
    assert_eq!(push.stack, Stack::Redo, "an undo's inverse goes on redo");
    let recs = batch.into_records();
    f.apply(&recs);
    assert_eq!(
        f.state.content(),
        "?!",
        "hello undone; ? went first at one place"
    );
}

#[test]
fn empty_steps_are_skipped_at_most_sixteen_times() {
    let mut f = Fixture::new(Limits::new(100));
    f.other_commits("o", "abc");
    let u = EditId(99);
    let mut out = Vec::new();
    f.p.submit_undo(u, false, &mut out);
    let noop = UndoEntry {
        version: 1,
        op: splice(3, 0, 0, ""),
        time: 0,
    };
    for _ in 0..MAX_EMPTY_STEPS - 1 {
        assert!(matches!(&f.poll()[..], [Effect::PopStep { .. }]));
        f.p.step_popped(u, popped("u", noop.clone()));
    }
    assert!(matches!(&f.poll()[..], [Effect::PopStep { .. }]));
    f.p.step_popped(u, popped("u", noop));
    let out = f.poll();
    assert!(matches!(&out[..], [Effect::StepGone { refusal: None, .. }]));
    assert!(f.p.is_idle());
}

#[test]
fn a_step_past_the_head_refills_once_then_is_refused() {
    let mut f = Fixture::new(Limits::new(100));
    let u = EditId(1);
    let mut out = Vec::new();
    f.p.submit_undo(u, true, &mut out);
    f.poll();
    let ahead = UndoEntry {
        version: 3,
        op: splice(0, 0, 0, "x"),
        time: 0,
    };
    f.p.step_popped(u, popped("u", ahead));
    assert!(matches!(&f.poll()[..], [Effect::Refill]));
    // The refill brought nothing: the step cannot be placed.
    let out = f.poll();
    let Some(Effect::StepGone {
        refusal: Some(r), ..
    }) = out.first()
    else {
        panic!("{out:?}");
    };
    assert_eq!(r.code, ErrorCode::VersionOutOfRange);
}
