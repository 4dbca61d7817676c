//! Runs against a simulated server: two users typing, interleaved, with
//! pauses, cursor jumps and pastes; each commit's inverse goes on its
//! user's stack through [`next_step`] (the hub's procedure: the open run
//! carried past the ops committed since), undo and redo as the hub does
//! them (the step rebased to the head, restored text after text inserted
//! at its place since). Every character is tagged with who typed it in
//! which run, so "A's undo removed exactly A's last run" is checked
//! character by character.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::ot::splice;
use crate::undo::Stacks;

/// Who typed a character: user, and their run number (the oracle's count,
/// from the rules written out independently of the code under test).
type Tag = (char, u32);

#[derive(Default)]
struct Sim {
    /// Characters with their tags.
    text: Vec<(char, Tag)>,
    /// Committed ops with their user, version i+1 at index i.
    log: Vec<(char, Operation)>,
    runs: HashMap<char, Run>,
    stacks: HashMap<char, Stacks>,
    time: i64,
}

impl Sim {
    fn string(&self) -> String {
        self.text.iter().map(|(c, _)| *c).collect()
    }

    fn version(&self) -> u64 {
        self.log.len() as u64
    }

    /// The user's run carried past everything committed since its last
    /// edit, as the hub does (`None` if the user edited elsewhere since).
    fn carried(&self, user: char) -> Option<(Run, u64)> {
        let run = self.runs.get(&user)?.clone();
        let top_at = run.entry.version;
        let mut carried = run;
        for (who, op) in &self.log[top_at as usize..] {
            if *who == user {
                return None;
            }
            carried = carried.past(op).ok()?;
        }
        Some((carried, top_at))
    }

    /// Commit an edit inserting `ins` at `pos`, tagged `tag`.
    fn type_at(&mut self, user: char, pos: usize, ins: &str, tag: Tag) {
        let len = self.text.len();
        let op = splice(len, pos, 0, ins);
        let rope = ropey::Rope::from_str(&self.string());
        let inverse = op.invert(&rope).unwrap();
        for (i, c) in ins.chars().enumerate() {
            self.text.insert(pos + i, (c, tag));
        }
        // The run carried up to the text this edit applies to.
        let carried = self.carried(user);
        self.log.push((user, op.clone()));
        let entry = UndoEntry {
            version: self.version(),
            op: inverse,
            time: self.time,
        };
        let (run, push) = next_step(carried, &op, entry).unwrap();
        self.runs.insert(user, run);
        self.stacks.entry(user).or_default().push(push);
    }

    /// Apply a committed op to the tagged text (deletes drop characters;
    /// inserts are tagged `tag`).
    fn apply(&mut self, user: char, op: &Operation, tag: Tag) {
        let mut pos = 0;
        for c in op.components() {
            match c {
                Component::Retain(n) => pos += n,
                Component::Insert(s) => {
                    for ch in s.chars() {
                        self.text.insert(pos, (ch, tag));
                        pos += 1;
                    }
                }
                Component::Delete(n) => {
                    self.text.drain(pos..pos + n);
                }
            }
        }
        self.log.push((user, op.clone()));
    }

    /// Undo (or redo) the user's top step as the hub does; the inverse goes
    /// on the other stack; the user's run ends.
    fn step(&mut self, user: char, from: Stack) -> bool {
        let Some(entry) = self.stacks.entry(user).or_default().pop(from) else {
            return false;
        };
        let mut op = entry.op;
        for (_, committed) in &self.log[entry.version as usize..] {
            op = Tie::CommittedFirst.transform(op, committed).unwrap();
        }
        let rope = ropey::Rope::from_str(&self.string());
        let inverse = op.invert(&rope).unwrap();
        self.apply(user, &op, (user, u32::MAX));
        let to = match from {
            Stack::Undo => Stack::Redo,
            Stack::Redo => Stack::Undo,
        };
        let push = StackPush {
            stack: to,
            entry: UndoEntry {
                version: self.version(),
                op: inverse,
                time: self.time,
            },
            replace_top_at: None,
            fallback: None,
            clear_redo: false,
        };
        self.stacks.entry(user).or_default().push(push);
        self.runs.remove(&user);
        true
    }
}

/// One action: who, how long after the previous action (ms), whether they
/// jump away from their caret (and where to), what they type.
#[derive(Clone, Debug)]
struct Action {
    alice: bool,
    delay: i64,
    jump: Option<usize>,
    paste: bool,
    text: String,
}

fn action() -> impl Strategy<Value = Action> {
    (
        any::<bool>(),
        prop_oneof![0i64..400, 0i64..1500, 900i64..1100],
        proptest::option::weighted(0.15, 0usize..1000),
        proptest::bool::weighted(0.08),
        "[a-c]{1,2}",
    )
        .prop_map(|(alice, delay, jump, paste, text)| Action {
            alice,
            delay,
            jump,
            paste,
            text,
        })
}

/// Each user's caret after what they typed, moved by others' inserts
/// before it; one exactly at it may leave it before (`lo`, where this
/// typist types on) or after (`hi`) it: both count as at the caret.
struct Typist {
    lo: usize,
    hi: usize,
    /// The oracle's run: number, last edit's time, first edit's time, and
    /// whether the last edit was a paste.
    run: Option<(u32, i64, i64, bool)>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// After Alice's undo the text is the text with exactly Alice's last
    /// run removed, every character of Bob's still there; Bob types on;
    /// Alice's redo puts her run back (Bob's new text aside, the text is
    /// what it was before the undo).
    #[test]
    fn undo_removes_exactly_my_last_run(
        actions in proptest::collection::vec(action(), 1..40),
        after in proptest::collection::vec((0usize..100, "[A-C]{1,2}"), 0..4),
    ) {
        let mut sim = Sim { time: 10_000, ..Sim::default() };
        let mut typists: HashMap<char, Typist> = HashMap::new();
        for u in ['a', 'b'] {
            typists.insert(u, Typist { lo: 0, hi: 0, run: None });
        }
        let mut alice_typed = false;
        for act in &actions {
            sim.time += act.delay;
            let user = if act.alice { 'a' } else { 'b' };
            // Alice types a..c, Bob x..z: whose text is whose at a glance.
            let mut text: String = if act.alice {
                act.text.clone()
            } else {
                act.text.chars().map(|c| (c as u8 + 23) as char).collect()
            };
            if act.paste {
                text = format!("{text}\n{text}");
            }
            let len = sim.text.len();
            let t = typists.get_mut(&user).unwrap();
            // A jump goes somewhere not next to the caret (else it is typing on).
            let jump = act.jump.map(|j| j % (len + 1)).filter(|p| *p < t.lo || *p > t.hi);
            let pos = jump.unwrap_or(t.lo).min(len);
            // The oracle's rule: a new run after a pause over 1 s, past 5 s,
            // on a jump, for a paste and after one.
            let run = match t.run {
                Some((n, last, start, pasted))
                    if sim.time - last <= TYPING_RUN_MS
                        && sim.time - start <= RUN_MAX_MS
                        && jump.is_none()
                        && !act.paste
                        && !pasted => (n, start),
                Some((n, ..)) => (n + 1, sim.time),
                None => (0, sim.time),
            };
            t.run = Some((run.0, sim.time, run.1, act.paste));
            t.lo = pos + text.chars().count();
            t.hi = t.lo;
            sim.type_at(user, pos, &text, (user, run.0));
            // The other's caret moves past the insert (if it is after it).
            let other = typists.get_mut(&if act.alice { 'b' } else { 'a' }).unwrap();
            let n = text.chars().count();
            if other.lo > pos {
                other.lo += n;
            }
            if other.hi >= pos {
                other.hi += n;
            }
            alice_typed |= act.alice;
        }
        prop_assume!(alice_typed);
        let before = sim.string();
        let last = typists[&'a'].run.unwrap().0;
        let expected: String = sim
            .text
            .iter()
            .filter(|(_, tag)| *tag != ('a', last))
            .map(|(c, _)| *c)
            .collect();
        sim.time += 100;
        prop_assert!(sim.step('a', Stack::Undo));
        prop_assert_eq!(sim.string(), expected);
        // Bob types on, then Alice redoes.
        for (pos, ins) in &after {
            let pos = pos % (sim.text.len() + 1);
            sim.type_at('b', pos, ins, ('b', u32::MAX));
        }
        prop_assert!(sim.step('a', Stack::Redo));
        let restored: String = sim.string().chars().filter(|c| !c.is_ascii_uppercase()).collect();
        prop_assert_eq!(restored, before);
    }
}

#[test]
fn a_run_goes_on_across_others_commits_and_breaks_on_a_pause_or_jump() {
    let mut sim = Sim {
        time: 0,
        ..Sim::default()
    };
    // Alice types "hello" one key at a time, Bob types "XY" at the start
    // between her keystrokes.
    for (i, c) in "hello".chars().enumerate() {
        sim.time += 200;
        sim.type_at('a', sim.text.len(), &c.to_string(), ('a', 0));
        if i < 2 {
            sim.type_at('b', i, if i == 0 { "X" } else { "Y" }, ('b', 0));
        }
    }
    assert_eq!(sim.string(), "XYhello");
    assert_eq!(sim.stacks[&'a'].undo.len(), 1, "one step for the whole run");
    // A pause: a new step.
    sim.time += 1500;
    sim.type_at('a', 7, "!", ('a', 1));
    assert_eq!(sim.stacks[&'a'].undo.len(), 2);
    // A jump (typing at the start, away from the caret): a new step.
    sim.time += 100;
    sim.type_at('a', 0, ">", ('a', 2));
    assert_eq!(sim.stacks[&'a'].undo.len(), 3);
    assert!(sim.step('a', Stack::Undo));
    assert!(sim.step('a', Stack::Undo));
    assert!(sim.step('a', Stack::Undo));
    assert_eq!(sim.string(), "XY");
    // A paste is a step of its own, and so is what follows it.
    sim.time += 100;
    sim.type_at('a', 2, "fn a() {\n}", ('a', 3));
    sim.time += 100;
    sim.type_at('a', 12, "x", ('a', 4));
    assert_eq!(sim.stacks[&'a'].undo.len(), 2);
    // Enter and auto-indent are typing.
    assert!(!is_paste(&splice(0, 0, 0, "\n    ")));
    assert!(is_paste(&splice(0, 0, 0, "a\nb")));
}

#[test]
fn a_run_longer_than_its_span_is_cut() {
    let mut sim = Sim::default();
    for i in 0..30 {
        sim.time += 300;
        sim.type_at('a', i, "a", ('a', 0));
    }
    // 9 s of typing without a pause: at least two steps.
    assert!(sim.stacks[&'a'].undo.len() >= 2);
    let first = &sim.stacks[&'a'].undo[0];
    assert!(first.version <= 17, "{}", first.version);
}

#[test]
fn a_large_edit_is_a_step_of_its_own() {
    let big = "x".repeat(RUN_MAX_BYTES + 1);
    let n = big.chars().count();
    // Deleting a large text: its inverse (re-inserting it) is large.
    let delete = splice(n, 0, n, "");
    let entry = UndoEntry {
        version: 1,
        op: splice(0, 0, 0, &big),
        time: 0,
    };
    let run = Run::open(&delete, entry);
    assert!(run.sealed);
    assert!(!run.goes_on_with(&splice(0, 0, 0, "c"), 10));
    // A large edit does not join a small run either.
    let small = Run::open(
        &splice(0, 0, 0, "a"),
        UndoEntry {
            version: 1,
            op: splice(1, 0, 1, ""),
            time: 0,
        },
    );
    assert!(small.goes_on_with(&splice(1, 1, 0, "b"), 10));
    assert!(!small.goes_on_with(&splice(1, 1, 0, &big), 10));
}
