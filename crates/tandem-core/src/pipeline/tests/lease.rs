//! One committer per document: lease, forwarding and fencing rules.

use super::*;
use crate::commit::LeaseReply;
use crate::pipeline::{Forwarded, Lease, LeaseSettings, FORWARD_RESEND_MS};

fn leased() -> Fixture {
    let mut f = Fixture::new(Limits::new(100));
    f.p = Pipeline::new(Limits::new(100), 3).with_leases(LeaseSettings {
        instance: "i1".into(),
        ttl_ms: 2_000,
    });
    f
}

fn lease_reply(f: &mut Fixture, reply: LeaseReply) -> Vec<Effect> {
    let mut out = Vec::new();
    f.p.lease_reply(Some(reply), f.now, &mut out);
    out
}

/// Ask for the lease and be told `i2` holds it for `left_ms`.
fn follow(f: &mut Fixture, left_ms: u64) {
    f.poll();
    let held = LeaseReply::Held {
        token: "4:i2:b".into(),
        left: Duration::from_millis(left_ms),
    };
    lease_reply(f, held);
}

fn granted(f: &mut Fixture) {
    assert!(matches!(&f.poll()[..], [Effect::Acquire { .. }]));
    let out = lease_reply(
        f,
        LeaseReply::Granted {
            token: "1:i1:a".into(),
        },
    );
    assert!(
        matches!(&out[..], [Effect::Refill]),
        "refill before the first round"
    );
}

#[test]
fn no_round_before_the_lease_and_rounds_carry_its_token() {
    let mut f = leased();
    f.submit("a", 1, "x");
    granted(&mut f);
    let (batch, _, _) = f.round();
    assert_eq!(batch.token, "1:i1:a");
    // Past its lease by our clock: no round; ask again.
    f.finish(Outcome::Outage);
    f.now += 5_000;
    assert!(matches!(&f.poll()[..], [Effect::Acquire { .. }]));
}

#[test]
fn a_follower_forwards_and_its_edits_are_answered_by_their_records() {
    let mut f = leased();
    let a = f.submit("a", 1, "x");
    follow(&mut f, 1_500);
    let out = f.poll();
    let [Effect::Forward { to, edits }] = &out[..] else {
        panic!("{out:?}");
    };
    assert_eq!((to.as_str(), edits.len()), ("4:i2:b", 1));
    assert_eq!((edits[0].client.as_str(), edits[0].seq), ("a", 1));
    assert!(f.poll().is_empty(), "not sent twice");
    assert!(!f.p.is_idle());
    // Unanswered for a second: sent again.
    f.now += FORWARD_RESEND_MS;
    assert!(matches!(&f.poll()[..], [Effect::Forward { .. }]));
    // Its record arrives: answered, and the leader is alive.
    let mut out = Vec::new();
    f.p.applied("a", 1, 1, f.now, &mut out);
    assert_eq!(answers(&out), [(a, Verdict::Committed(1))]);
    assert!(f.p.is_idle());
}

#[test]
fn a_leaders_verdict_answers_a_forwarded_edit() {
    let mut f = leased();
    let a = f.submit("a", 1, "x");
    follow(&mut f, 1_500);
    f.poll();
    let mut out = Vec::new();
    f.p.verdict("a", 1, Verdict::Unchanged(7), f.now, &mut out);
    assert_eq!(answers(&out), [(a, Verdict::Unchanged(7))]);
    // A verdict for nothing pending is ignored.
    f.p.verdict("a", 1, Verdict::Unchanged(7), f.now, &mut out);
    assert_eq!(answers(&out).len(), 1);
}

#[test]
fn a_silent_leader_is_replaced() {
    let mut f = leased();
    f.submit("a", 1, "x");
    follow(&mut f, 500);
    f.poll();
    f.now += 700;
    // Past the lease it reported, nothing heard: ask for it.
    let out = f.poll();
    assert!(matches!(&out[..], [Effect::Acquire { .. }]), "{out:?}");
    // Granted: the forwarded edit is ours to commit now.
    lease_reply(
        &mut f,
        LeaseReply::Granted {
            token: "5:i1:c".into(),
        },
    );
    let (batch, _, _) = f.round();
    assert_eq!(
        (batch.records[0].client.as_str(), batch.token.as_str()),
        ("a", "5:i1:c")
    );
}

#[test]
fn a_fenced_round_goes_to_the_holder_and_nothing_is_refused() {
    let mut f = leased();
    f.submit("a", 1, "x");
    granted(&mut f);
    f.round();
    let fenced = CommitReply::Fenced {
        holder: "9:i3:z".into(),
        left: Duration::from_millis(1_000),
    };
    let out = f.finish(Outcome::Reply(fenced));
    assert!(answers(&out).is_empty());
    assert!(matches!(f.p.lease(), Lease::Follower { holder, .. } if holder == "9:i3:z"));
    let out = f.poll();
    assert!(
        matches!(&out[..], [Effect::Forward { to, .. }] if to == "9:i3:z"),
        "{out:?}"
    );
}

#[test]
fn only_the_holder_takes_forwards_and_a_copy_is_taken_once() {
    let mut f = leased();
    let fwd = Forwarded {
        client: "b".into(),
        user: "ub".into(),
        role: Role::Editor,
        seq: 1,
        base: 0,
        op: splice(0, 0, 0, "y"),
        step: None,
    };
    let mut out = Vec::new();
    assert!(
        !f.p.submit_forwarded(EditId(90), fwd.clone(), &mut out),
        "not the holder"
    );
    f.submit("a", 1, "x");
    granted(&mut f);
    assert!(f.p.submit_forwarded(EditId(91), fwd.clone(), &mut out));
    assert!(
        !f.p.submit_forwarded(EditId(92), fwd, &mut out),
        "a copy already waits"
    );
    let (batch, ids, _) = f.round();
    assert_eq!(ids.len(), 2);
    assert_eq!(batch.records[1].client, "b");
}
