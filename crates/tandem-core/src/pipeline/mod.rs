//! The commit pipeline of one document, as pure rules: the queue of edits,
//! the commit rounds built from it (group commit), typing runs, and what
//! every answer of the sequencer means. It does no I/O and reads no clock:
//! the document task submits edits, calls [`Pipeline::poll`] for the next
//! round, and hands back what the sequencer answered; the pipeline says
//! what to do as [`Effect`]s (commit this batch, pop an undo step, refill,
//! apply these records, answer that edit, re-seed, reset), which the task
//! executes in order. Time comes in as an argument; the pause that breaks
//! lockstep between instances racing on one document draws from a seeded
//! generator, so every rule is a unit test that runs in microseconds.
//!
//! Owns: [`Pipeline`], [`EditId`] (the task maps it to where the answer
//! goes), [`Effect`], [`Verdict`], [`Refusal`], [`Limits`].
//! Must not import: anything that does I/O (this is the pure core).

mod build;
mod lease;
mod round;
mod steps;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use crate::commit::{CommitBatch, MAX_BATCH_RECORDS};
use crate::doc::{ClientSeqs, DocState, RebaseError, Tie};
use crate::ot::Operation;
use crate::protocol::{ErrorCode, Role};
use crate::runs::Run;
use crate::undo::{Stack, UndoEntry};

pub use lease::{Forwarded, Lease, LeaseSettings, FORWARD_RESEND_MS};
pub use round::{Outcome, Reseeded, OUTAGE_PAUSE, SETTLE_PAUSE_MAX};
pub use steps::unrebasable;

/// Told to a client whose edit could not be queued or kept losing races.
pub const BUSY: &str = "the document is too busy; resend the edit";
/// Told to a client whose edit could not be committed (storage refused the
/// write, or did not answer).
pub const UNAVAILABLE: &str =
    "storage could not take the edit right now; nothing was committed: keep it and resend it";
/// Steps skipped at most when others' edits have made them empty.
pub const MAX_EMPTY_STEPS: usize = 16;

/// The pipeline's bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Edits and bytes waiting for a round; beyond them an edit is refused
    /// (its client resends it).
    pub max_queued: usize,
    pub max_queued_bytes: usize,
    /// One round's records and bytes of ops (at least one op goes, whatever
    /// its size).
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    /// The longest document, in characters (an edit that grows it past
    /// this is refused).
    pub max_doc_chars: usize,
    /// Rounds an edit may take part in when another instance keeps
    /// committing first. From the third, a short random pause before the
    /// round breaks lockstep between instances racing on one document.
    pub max_commit_attempts: u32,
    /// Rounds an edit may take part in that fail for an outage (each a
    /// little later) before its client is told to resend it.
    pub max_outage_attempts: u32,
}

impl Limits {
    /// Today's bounds, with the document size limit given.
    pub fn new(max_doc_chars: usize) -> Self {
        Self {
            max_queued: 4096,
            max_queued_bytes: 32 << 20,
            max_batch_records: MAX_BATCH_RECORDS,
            max_batch_bytes: 1 << 20,
            max_doc_chars,
            max_commit_attempts: 64,
            max_outage_attempts: 3,
        }
    }
}

/// An edit's handle: the task keeps where its answer goes under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EditId(pub u64);

/// Who an edit commits as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    pub client: String,
    pub user: String,
    pub role: Role,
}

/// An edit as submitted: `op` on `base`, the `seq`-th of its client.
#[derive(Clone, Debug)]
pub struct Submission {
    pub id: EditId,
    pub author: Author,
    pub seq: u64,
    pub base: u64,
    pub op: Operation,
}

/// An undo or redo step taken from a stack, to commit as an edit.
#[derive(Clone, Debug)]
pub struct Popped {
    /// A fresh client for the step's one op (seq 1), and who it is for.
    pub author: Author,
    /// The stack it came from (and goes back to if refused).
    pub from: Stack,
    pub entry: UndoEntry,
}

/// Why an edit was refused; the message is safe to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: &str) -> Self {
        Self {
            code,
            message: message.to_owned(),
        }
    }

    /// The edit could not be committed right now (storage refused the
    /// write or did not answer).
    pub fn unavailable() -> Self {
        Self::new(ErrorCode::StorageUnavailable, UNAVAILABLE)
    }

    /// The document is too busy for the edit: resend it.
    pub fn busy() -> Self {
        Self::new(ErrorCode::Internal, BUSY)
    }
}

/// How an edit ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Committed now as this version (a socket's ack goes in the fan-out).
    Committed(u64),
    /// `(client, seq)` was committed before and produced `version`: the
    /// task answers once it holds that version (refilling if need be), at
    /// the version its history names.
    Duplicate {
        client: String,
        seq: u64,
        version: u64,
    },
    /// An edit that changes nothing: acknowledged without making a
    /// version, at the head its client has been sent, once that head is
    /// at least this version (the head it was found unchanged at).
    Unchanged(u64),
    Refused(Refusal),
}

/// Something worth counting or logging that the pipeline decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// An edit refused because the queue was full.
    QueueFull,
    /// An edit refused after losing [`Limits::max_commit_attempts`] rounds.
    RetriesExhausted,
}

/// What the task must do, in order.
#[derive(Debug)]
pub enum Effect {
    /// Send this round to the sequencer (after `pause`) and hand its answer
    /// to [`Pipeline::finish`]. At most one round is in flight.
    Commit {
        batch: CommitBatch,
        /// The edits, in batch order (one record each).
        ids: Vec<EditId>,
        /// Each record's rebase depth (versions and batch ops it was
        /// rebased past).
        depths: Vec<u64>,
        pause: Option<Duration>,
    },
    /// Pop the top of the asking user's undo (or redo) stack and hand it to
    /// [`Pipeline::step_popped`] (or, nothing there or not allowed,
    /// [`Pipeline::step_gone`]); then poll again.
    PopStep {
        id: EditId,
        redo: bool,
    },
    /// Pull what the sequencer committed past our head, then poll again.
    Refill,
    /// Apply these committed records in order and fan them out (before the
    /// answers that follow).
    Apply(Vec<Arc<crate::doc::Record>>),
    Answer {
        id: EditId,
        verdict: Verdict,
    },
    /// The edit did not rebase onto the head: ask the sequencer for the
    /// client's last committed seq and answer with [`unrebasable`].
    Lookup {
        id: EditId,
        client: String,
        seq: u64,
        error: RebaseError,
    },
    /// An undo or redo ended without an edit: tell its socket the refusal,
    /// if any (nothing to undo is no answer).
    StepGone {
        id: EditId,
        refusal: Option<Refusal>,
    },
    /// Seed the sequencer again from this instance's state, then hand the
    /// result to [`Pipeline::reseeded`].
    Reseed,
    /// The document's state can no longer be trusted: stop and reload.
    Reset,
    /// Ask for the document's commit lease (`nonce` makes the token
    /// unique) and hand the answer to [`Pipeline::lease_reply`].
    Acquire {
        nonce: u64,
    },
    /// Send these edits to the lease holder (`to`, its token); their
    /// answers come back as records ([`Pipeline::applied`]) or verdicts
    /// ([`Pipeline::verdict`]).
    Forward {
        to: String,
        edits: Vec<Forwarded>,
    },
    Note(Note),
}

/// What the pipeline reads of the document (owned by the task).
#[derive(Clone, Copy)]
pub struct Doc<'a> {
    pub state: &'a DocState,
    pub clients: &'a ClientSeqs,
    /// The history identity the task holds.
    pub epoch: &'a str,
    /// A refill failed and waits for its retry: the head may be behind.
    pub catching_up: bool,
}

/// How an edit's inverse is kept once committed.
#[derive(Clone, Debug)]
enum Kind {
    Edit,
    /// An undo or redo: its inverse goes on the other stack.
    Step {
        from: Stack,
    },
}

impl Kind {
    /// Whose text goes first when rebased: an edit's, or (undo and redo
    /// steps yield) the committed text's.
    fn tie(&self) -> Tie {
        match self {
            Kind::Step { .. } => Tie::CommittedFirst,
            Kind::Edit => Tie::RebasedFirst,
        }
    }
}

/// An edit waiting for (or in) a round.
#[derive(Clone, Debug)]
struct Queued {
    id: EditId,
    author: Author,
    seq: u64,
    /// `op` applies to this version.
    base: u64,
    op: Operation,
    /// Whose text goes first when rebased (undo steps yield).
    tie: Tie,
    kind: Kind,
    /// Rounds lost to other instances, and to outages.
    attempts: u32,
    outages: u32,
    /// `op.size_hint()`, for the byte caps.
    bytes: usize,
}

/// An `undo`/`redo` in the queue: its step is popped when it reaches the
/// front with no round in flight, so the stack holds every edit before it.
#[derive(Debug)]
struct UndoWait {
    id: EditId,
    redo: bool,
    popped: Option<Popped>,
    /// Popped steps that others' edits had made empty.
    skipped: usize,
}

#[derive(Debug)]
enum Waiting {
    Edit(Box<Queued>),
    Undo(UndoWait),
}

/// The round in flight: its edits in batch order, and the users' typing
/// runs once it commits.
#[derive(Debug)]
struct Round {
    items: Vec<Queued>,
    runs: Runs,
    /// When it was sent (a reply proves the lease from then on).
    sent: i64,
}

/// Open typing runs by user (shared: each round starts from a copy).
type Runs = HashMap<String, Arc<Run>>;

/// The queue and the round in flight of one document.
#[derive(Debug)]
pub struct Pipeline {
    queue: VecDeque<Waiting>,
    queued_bytes: usize,
    round: Option<Round>,
    /// Each user's open typing run (the undo entry their next edit may
    /// join: `crate::runs`), as of the last committed round.
    runs: Runs,
    /// Wait this long before the next round's call (racing, outage).
    pause: Option<Duration>,
    /// The last poll asked for a refill: this one does not ask again.
    refilled: bool,
    /// xorshift64 state for the racing pause.
    rng: u64,
    limits: Limits,
    /// Leases on (`with_leases`), and where this instance stands.
    leases: Option<LeaseSettings>,
    lease: Lease,
    /// Edits forwarded to the lease holder, unanswered.
    pending: lease::PendingMap,
    /// Forward every pending edit again at the next poll.
    resend_all: bool,
    /// The earliest time a pending edit was (last) forwarded: its resend
    /// is the next one due, without a scan of every pending edit on each
    /// of the task's events.
    oldest_sent: Option<i64>,
}

impl Pipeline {
    /// An empty pipeline; `seed` feeds the racing pause's generator.
    pub fn new(limits: Limits, seed: u64) -> Self {
        Self {
            queue: VecDeque::new(),
            queued_bytes: 0,
            round: None,
            runs: Runs::new(),
            pause: None,
            refilled: false,
            rng: seed | 1,
            limits,
            leases: None,
            lease: Lease::Solo,
            pending: lease::PendingMap::new(),
            resend_all: false,
            oldest_sent: None,
        }
    }

    /// Nothing queued and no round in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.round.is_none() && self.pending.is_empty()
    }

    /// A round is in flight.
    pub fn in_flight(&self) -> bool {
        self.round.is_some()
    }

    /// Edits (and undo requests) waiting for a round.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Check an edit and queue it for a round, or answer it now: refused,
    /// a resend of a committed op, or a change of nothing. The task has
    /// refilled first when `base` is past its head.
    pub fn submit(&mut self, sub: Submission, doc: &Doc, out: &mut Vec<Effect>) {
        let id = sub.id;
        let answer = |out: &mut Vec<Effect>, verdict| out.push(Effect::Answer { id, verdict });
        if !sub.author.role.can_edit() {
            let r = Refusal::new(ErrorCode::Forbidden, "viewers cannot edit");
            return answer(out, Verdict::Refused(r));
        }
        if sub.seq == 0 {
            let r = Refusal::new(ErrorCode::BadMessage, "seq starts at 1");
            return answer(out, Verdict::Refused(r));
        }
        // A resubmit of a committed op is answered before any validation:
        // its base may be long gone.
        if let Some(verdict) = resend(doc, &sub.author.client, sub.seq) {
            return answer(out, verdict);
        }
        if sub.op.is_noop() && doc.state.len_at(sub.base) == Some(sub.op.base_len()) {
            // Changes nothing (as sent: concurrent edits cannot make it
            // change something): acknowledged at the head, whose ops this
            // client has all been sent.
            return answer(out, Verdict::Unchanged(doc.state.version()));
        }
        let (author, seq, base, op) = (sub.author, sub.seq, sub.base, sub.op);
        self.enqueue(id, author, seq, base, op, Kind::Edit, out);
    }

    /// Queue an edit at the back (bounded in edits and bytes: past either
    /// it is refused, its client resends it).
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        id: EditId,
        author: Author,
        seq: u64,
        base: u64,
        op: Operation,
        kind: Kind,
        out: &mut Vec<Effect>,
    ) {
        let bytes = op.size_hint();
        if self.queue.len() >= self.limits.max_queued
            || self.queued_bytes + bytes > self.limits.max_queued_bytes
        {
            out.push(Effect::Note(Note::QueueFull));
            let verdict = Verdict::Refused(Refusal::busy());
            return out.push(Effect::Answer { id, verdict });
        }
        let tie = kind.tie();
        self.queued_bytes += bytes;
        self.queue.push_back(Waiting::Edit(Box::new(Queued {
            id,
            author,
            seq,
            base,
            op,
            tie,
            kind,
            attempts: 0,
            outages: 0,
            bytes,
        })));
    }

    /// Queue an `undo` / `redo` behind the edits before it.
    pub fn submit_undo(&mut self, id: EditId, redo: bool, out: &mut Vec<Effect>) {
        if self.queue.len() >= self.limits.max_queued {
            let refusal = Some(Refusal::busy());
            return out.push(Effect::StepGone { id, refusal });
        }
        self.queue.push_back(Waiting::Undo(UndoWait {
            id,
            redo,
            popped: None,
            skipped: 0,
        }));
    }

    /// The step [`Effect::PopStep`] asked for.
    pub fn step_popped(&mut self, id: EditId, popped: Popped) {
        if let Some(Waiting::Undo(u)) = self.queue.front_mut() {
            if u.id == id {
                u.popped = Some(popped);
            }
        }
    }

    /// [`Effect::PopStep`] found nothing to pop (or the socket may not):
    /// the undo request is done (the task told its socket).
    pub fn step_gone(&mut self, id: EditId) {
        if matches!(self.queue.front(), Some(Waiting::Undo(u)) if u.id == id) {
            self.queue.pop_front();
        }
    }

    /// A uniform draw from `0..=max` (xorshift64).
    fn draw(&mut self, max: u64) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x % (max + 1)
    }
}

fn refused(code: ErrorCode, message: &str) -> Verdict {
    Verdict::Refused(Refusal::new(code, message))
}

/// The answer to `(client, seq)` if the document already committed it.
fn resend(doc: &Doc, client: &str, seq: u64) -> Option<Verdict> {
    let (last, version) = doc.clients.get(client)?;
    (seq <= last).then(|| Verdict::Duplicate {
        client: client.to_owned(),
        seq,
        version,
    })
}
