//! The edit pipeline, one entry for every edit: a socket's op, a REST edit
//! (ops, content replacement, restore), an undo or redo. Checks (role, seq,
//! resends), then a queue; the task commits the queue in rounds (group
//! commit): while one round is in flight, edits queue up and form the next
//! batch, rebased in order ([`crate::batch::Batch`]) and committed with
//! their undo steps in one sequencer call. The document task keeps serving
//! joins, cursors and bus events while a round is in flight. Rebase-and-
//! retry when another instance committed first; the answer to whoever made
//! each edit.
//!
//! Owns: [`Edit`] (what is changed), [`Origin`] (who changed it and where
//! the answer goes), [`Verdict`] (how it ended) and [`Pipeline`] (the queue
//! and the round in flight).
//! Must not import: axum, sqlx, redis.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::warn;

use super::task::DocTask;
use super::undo::Step;
use super::{count_refusal, error_msg, text, EditResult, HubError, Refusal};
use crate::batch::Batch;
use crate::bus::{BatchOutcome, BusError, CommitBatch, CommitRecord, MAX_BATCH_RECORDS};
use crate::doc::{RebaseError, Tie};
use crate::health::Part;
use crate::ot::Operation;
use crate::protocol::{ErrorCode, Role, ServerMessage};
use crate::runs::{next_step, Run};
use crate::undo::{Stack, StackPush, UndoEntry, TYPING_RUN_MS};

/// Rounds an edit may take part in when another instance keeps committing
/// first. From the third, a short random pause before the round breaks
/// lockstep between instances racing on one hot document.
const MAX_COMMIT_ATTEMPTS: u32 = 64;
/// Rounds an edit may take part in that fail for a backend outage (each a
/// little later) before its client is told to resend it.
const MAX_OUTAGE_ATTEMPTS: u32 = 3;
/// The longest pause for a settling document before the round asks again.
const SETTLE_PAUSE_MAX: Duration = Duration::from_millis(500);
/// Bytes of ops in one round (at least one op goes, whatever its size).
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Edits and bytes waiting for a round; beyond them an edit is refused
/// (its client resends it).
const MAX_QUEUED: usize = 4096;
const MAX_QUEUED_BYTES: usize = 32 << 20;
/// Told to a client whose edit could not be queued or kept losing races.
const BUSY: &str = "the document is too busy; resend the edit";
/// Told to a client whose edit could not be committed (storage refused the
/// write, or did not answer).
const UNAVAILABLE: &str =
    "storage could not take the edit right now; nothing was committed: keep it and resend it";

/// A change to a document.
#[derive(Clone, Debug)]
pub enum Edit {
    /// `op` on `version`, rebased to the head like a socket's op.
    Op { version: u64, op: Operation },
    /// The whole content replaced by one diff op on the head.
    Replace(String),
}

/// An edit waiting for (or in) a commit round.
pub(super) struct Queued {
    origin: Origin,
    author: Author,
    /// `op` applies to this version.
    base: u64,
    op: Operation,
    /// Whose text goes first when rebased (undo steps yield).
    tie: Tie,
    /// Rounds lost to other instances, and to outages.
    attempts: u32,
    outages: u32,
    /// `op.size_hint()`, for the byte caps.
    bytes: usize,
    /// The edit's receipt span, and its commit span this round (none when
    /// traces are not exported).
    span: tracing::Span,
    commit: tracing::Span,
}

/// What waits for the next round, in arrival order.
pub(super) enum Waiting {
    Edit(Box<Queued>),
    /// `undo` / `redo` from a socket: its step is taken from the stack when
    /// it reaches the front with no round in flight, so the stack holds
    /// every edit before it.
    Undo {
        conn: u64,
        redo: bool,
    },
}

/// The round in flight: its edits in batch order.
struct Round {
    items: Vec<Queued>,
    /// The users' typing runs once it commits.
    runs: Runs,
    started: Instant,
}

/// A round's sequencer call, polled by the task's select loop.
pub(super) type RoundFuture = Pin<Box<dyn Future<Output = Result<BatchOutcome, BusError>> + Send>>;

/// The queue and the round in flight.
#[derive(Default)]
pub(super) struct Pipeline {
    queue: VecDeque<Waiting>,
    queued_bytes: usize,
    round: Option<Round>,
    /// Each user's open typing run on this instance (the undo entry their
    /// next edit may join: `crate::runs`), as of the last committed round.
    runs: Runs,
    /// Wait this long before the next round's call (racing, outage).
    pause: Option<Duration>,
}

impl Pipeline {
    /// Nothing queued and no round in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.round.is_none()
    }

    /// Whether the task should start a round now.
    fn ready(&self) -> bool {
        self.round.is_none() && !self.queue.is_empty()
    }
}

/// Who made an edit: it decides the client id and seq the edit commits
/// under, where the answer goes, and which undo stack its inverse joins.
pub(super) enum Origin {
    /// A socket's op: answered on the socket (`ack` in the fan-out, in
    /// order, or `error`).
    Socket { conn: u64, seq: u64 },
    /// A REST edit: its own client (the id kept across the hub's retries)
    /// with one op, answered on `reply`.
    Rest {
        client: String,
        user: String,
        role: Role,
        reply: oneshot::Sender<EditResult>,
    },
    /// A socket's undo or redo: a fresh client with one op; a refusal puts
    /// the step back and tells the socket.
    Undo(Box<Step>),
}

impl Origin {
    /// The seq the edit commits under (REST edits and undo steps are each
    /// their own client's only op).
    fn seq(&self) -> u64 {
        match self {
            Origin::Socket { seq, .. } => *seq,
            Origin::Rest { .. } | Origin::Undo(_) => 1,
        }
    }

    /// The document task could not take the edit.
    pub(super) fn refuse(self, e: HubError) {
        if let Origin::Rest { reply, .. } = self {
            let _ = reply.send(Err(e));
        }
    }
}

/// Who an edit commits as.
struct Author {
    client: String,
    user: String,
    role: Role,
}

/// How an edit ended.
enum Verdict {
    /// Committed now as this version (a socket got its `ack` in the fan-out).
    Committed(u64),
    /// A resend of an edit committed before as this version, or an edit
    /// that changes nothing, acknowledged at this version without one.
    Duplicate(u64),
    Refused(Refusal),
}

impl Refusal {
    /// The edit could not be committed right now (storage refused the
    /// write or did not answer).
    pub(super) fn unavailable() -> Self {
        Self::new(ErrorCode::StorageUnavailable, UNAVAILABLE)
    }
}

fn refused(code: ErrorCode, message: &str) -> Verdict {
    Verdict::Refused(Refusal::new(code, message))
}

impl DocTask {
    /// Check an edit and queue it for the next commit round (or answer it
    /// now: refused, or a resend of a committed op).
    pub(super) async fn edit(
        &mut self,
        origin: Origin,
        edit: Edit,
        span: tracing::Span,
    ) -> Result<(), HubError> {
        let Some(author) = self.author(&origin) else {
            // The socket left meanwhile.
            return Ok(());
        };
        let (base, op) = match edit {
            Edit::Op { version, op } => (version, op),
            Edit::Replace(content) => (
                self.state.version(),
                crate::ot::diff(&self.state.content(), &content),
            ),
        };
        let seq = origin.seq();
        if let Origin::Socket { conn, .. } = &origin {
            self.room.sent(*conn, seq);
        }
        if !author.role.can_edit() {
            return self
                .answered(origin, refused(ErrorCode::Forbidden, "viewers cannot edit"))
                .await;
        }
        if seq == 0 {
            return self
                .answered(origin, refused(ErrorCode::BadMessage, "seq starts at 1"))
                .await;
        }
        if base > self.state.version() {
            // Another instance may be ahead of us.
            self.refill().await?;
        }
        // A resubmit of a committed op is answered before any validation:
        // its base may be long gone.
        if let Some((last, version)) = self.clients.get(&author.client) {
            if seq <= last {
                let verdict = self.duplicate(&author.client, seq, version).await?;
                return self.answered(origin, verdict).await;
            }
        }
        if op.is_noop() && self.state.len_at(base) == Some(op.base_len()) {
            // An edit that changes nothing (as sent: concurrent edits cannot
            // make it change something) makes no version: acknowledged at
            // the head, whose ops this client has all been sent.
            let head = self.state.version();
            return self.answered(origin, Verdict::Duplicate(head)).await;
        }
        let bytes = op.size_hint();
        let p = &mut self.pipeline;
        if p.queue.len() >= MAX_QUEUED || p.queued_bytes + bytes > MAX_QUEUED_BYTES {
            metrics::counter!("tandem_commit_queue_full_total").increment(1);
            return self
                .answered(origin, refused(ErrorCode::Internal, BUSY))
                .await;
        }
        p.queued_bytes += bytes;
        p.queue.push_back(Waiting::Edit(Box::new(Queued {
            origin,
            author,
            base,
            op,
            tie: Tie::RebasedFirst,
            attempts: 0,
            outages: 0,
            bytes,
            span,
            commit: tracing::Span::none(),
        })));
        Ok(())
    }

    /// Queue an `undo` / `redo` behind the edits before it.
    pub(super) fn queue_undo(&mut self, conn: u64, redo: bool) {
        if self.pipeline.queue.len() >= MAX_QUEUED {
            self.send_to(conn, error_msg(ErrorCode::Internal, BUSY, None));
            return;
        }
        self.pipeline.queue.push_back(Waiting::Undo { conn, redo });
    }

    /// An undo or redo step as an edit for the round being built.
    pub(super) fn step_edit(&self, step: Step, op: Operation) -> Queued {
        Queued {
            author: Author {
                client: step.client.clone(),
                user: step.user.clone(),
                role: step.role,
            },
            origin: Origin::Undo(Box::new(step)),
            base: self.state.version(),
            op,
            tie: Tie::CommittedFirst,
            attempts: 0,
            outages: 0,
            bytes: 0,
            span: tracing::Span::none(),
            commit: tracing::Span::none(),
        }
    }

    async fn answered(&mut self, origin: Origin, verdict: Verdict) -> Result<(), HubError> {
        self.answer(origin, verdict).await;
        Ok(())
    }

    fn author(&self, origin: &Origin) -> Option<Author> {
        match origin {
            Origin::Socket { conn, .. } => self.room.conn(*conn).map(|c| Author {
                client: c.client.clone(),
                user: c.user.id.clone(),
                role: c.role,
            }),
            Origin::Rest {
                client, user, role, ..
            } => Some(Author {
                client: client.clone(),
                user: user.clone(),
                role: *role,
            }),
            Origin::Undo(step) => Some(Author {
                client: step.client.clone(),
                user: step.user.clone(),
                role: step.role,
            }),
        }
    }

    /// Start a commit round if none is in flight and edits wait: the queue's
    /// front (up to the batch caps, one edit per client, an undo only
    /// first) rebased in order into one batch. Returns the round's call.
    pub(super) async fn start_round(&mut self) -> Result<Option<RoundFuture>, HubError> {
        while self.pipeline.ready() {
            let mut batch = Batch::new(&self.state);
            let mut items: Vec<Queued> = Vec::new();
            let mut records = Vec::new();
            let mut clients = HashSet::new();
            let mut bytes = 0;
            let time = (self.hub.clock)();
            let head = self.state.version();
            let mut runs = self.pipeline.runs.clone();
            runs.retain(|_, r| time - r.entry.time <= TYPING_RUN_MS);
            while items.len() < MAX_BATCH_RECORDS && bytes < MAX_BATCH_BYTES {
                let q = match self.pipeline.queue.front() {
                    None => break,
                    // Its stack must first hold this batch's steps.
                    Some(Waiting::Undo { .. }) if !items.is_empty() => break,
                    Some(Waiting::Edit(q)) if clients.contains(&q.author.client) => break,
                    Some(Waiting::Undo { conn, redo }) => {
                        let (conn, redo) = (*conn, *redo);
                        self.pipeline.queue.pop_front();
                        match self.pop_step(conn, redo).await? {
                            // A refill moved the head: build on the new one.
                            Some(q) if self.state.version() != head => {
                                self.requeue(std::iter::once(q));
                                break;
                            }
                            Some(q) => q,
                            None if self.state.version() != head => break,
                            None => continue,
                        }
                    }
                    Some(Waiting::Edit(_)) => match self.pipeline.queue.pop_front() {
                        Some(Waiting::Edit(q)) => {
                            self.pipeline.queued_bytes -= q.bytes;
                            *q
                        }
                        _ => break,
                    },
                };
                let prepared = self.prepare(&mut batch, q, time, &mut runs).await?;
                if self.state.version() != head {
                    // A refill moved the head while an edit was checked:
                    // build the batch again on the new head.
                    self.requeue(items.into_iter().chain(prepared.map(|(q, _)| q)));
                    items = Vec::new();
                    break;
                }
                if let Some((q, rec)) = prepared {
                    clients.insert(q.author.client.clone());
                    bytes += q.bytes.max(1);
                    items.push(q);
                    records.push(rec);
                }
            }
            if items.is_empty() {
                continue;
            }
            metrics::histogram!("tandem_commit_batch_ops").record(items.len() as f64);
            for q in &items {
                q.commit.record("batch", items.len());
            }
            let batch = CommitBatch {
                base: head,
                records,
                epoch: self.epoch.clone(),
            };
            self.pipeline.round = Some(Round {
                items,
                runs,
                started: Instant::now(),
            });
            let sequencer = self.hub.sequencer.clone();
            let id = self.id.clone();
            let pause = self.pipeline.pause.take();
            return Ok(Some(Box::pin(async move {
                if let Some(pause) = pause {
                    tokio::time::sleep(pause).await;
                }
                sequencer.commit_batch(&id, batch).await
            })));
        }
        Ok(None)
    }

    /// Put edits back at the front of the queue, in order.
    fn requeue(&mut self, items: impl DoubleEndedIterator<Item = Queued>) {
        for q in items.rev() {
            self.pipeline.queued_bytes += q.bytes;
            self.pipeline.queue.push_front(Waiting::Edit(Box::new(q)));
        }
    }

    /// Rebase one edit into the batch and make its record (with its undo
    /// step); `None` when the edit was answered instead.
    async fn prepare(
        &mut self,
        batch: &mut Batch,
        q: Queued,
        time: i64,
        runs: &mut Runs,
    ) -> Result<Option<(Queued, CommitRecord)>, HubError> {
        let seq = q.origin.seq();
        // A resend, or an edit an earlier round committed after all (its
        // answer was lost to a timeout).
        if let Some((last, version)) = self.clients.get(&q.author.client) {
            if seq <= last {
                let verdict = self.duplicate(&q.author.client, seq, version).await?;
                self.answer(q.origin, verdict).await;
                return Ok(None);
            }
        }
        if q.attempts >= MAX_COMMIT_ATTEMPTS {
            warn!("commit retries exhausted");
            self.answer(q.origin, refused(ErrorCode::Internal, BUSY))
                .await;
            return Ok(None);
        }
        metrics::histogram!("tandem_rebase_depth")
            .record(self.state.version().saturating_sub(q.base) as f64 + batch.len() as f64);
        let rebase = rebase_span(&q.span);
        let rebased = rebase.in_scope(|| batch.rebase(&self.state, q.base, q.op.clone(), q.tie));
        drop(rebase);
        let op = match rebased {
            Ok(op) => op,
            Err(e) => {
                let verdict = self.unrebasable(&q.author, seq, e).await?;
                self.answer(q.origin, verdict).await;
                return Ok(None);
            }
        };
        let max = self.hub.settings.max_doc_chars;
        if op.target_len() > max && op.target_len() > op.base_len() {
            let m = format!(
                "the document would have {} characters; the limit is {max}",
                op.target_len()
            );
            self.answer(q.origin, refused(ErrorCode::DocTooLarge, &m))
                .await;
            return Ok(None);
        }
        let inverse = match batch.push(op.clone()) {
            Ok(inverse) => inverse,
            Err(e) => {
                self.answer(q.origin, refused(ErrorCode::BadOp, &e.to_string()))
                    .await;
                return Ok(None);
            }
        };
        let entry = UndoEntry {
            version: batch.version_of(batch.len() - 1),
            op: inverse,
            time,
        };
        let undo = self.step_push(batch, &q.origin, &q.author.user, &op, entry, runs);
        let mut q = q;
        q.commit = commit_span(&q.span);
        let rec = CommitRecord {
            op,
            user: q.author.user.clone(),
            client: q.author.client.clone(),
            seq,
            time,
            undo: Some(undo),
            trace: crate::otel::traceparent(&q.commit),
        };
        Ok(Some((q, rec)))
    }

    /// The round's call ended: apply what it committed and answer its
    /// edits, or put them back for the next round.
    pub(super) async fn finish_round(
        &mut self,
        outcome: Result<BatchOutcome, BusError>,
    ) -> Result<(), HubError> {
        let Some(round) = self.pipeline.round.take() else {
            return Ok(());
        };
        metrics::histogram!("tandem_commit_seconds").record(round.started.elapsed().as_secs_f64());
        match &outcome {
            Ok(_) | Err(BusError::Settling(_) | BusError::NotSeeded) => {
                self.hub.health.ok(Part::Commit)
            }
            Err(e @ BusError::Unavailable(_)) => {
                self.hub
                    .health
                    .fail(Part::Commit, &e.to_string(), (self.hub.clock)());
            }
            Err(_) => {}
        }
        match outcome {
            Ok(BatchOutcome::Committed(recs)) => {
                metrics::counter!("tandem_ops_committed_total").increment(recs.len() as u64);
                let versions: Vec<u64> = recs.iter().map(|r| r.version).collect();
                for r in recs {
                    self.ingest(r).await?;
                }
                self.pipeline.runs = round.runs;
                for (q, v) in round.items.into_iter().zip(versions) {
                    self.answer(q.origin, Verdict::Committed(v)).await;
                }
            }
            Ok(BatchOutcome::Duplicates(dups)) => {
                let mut items: Vec<Option<Queued>> = round.items.into_iter().map(Some).collect();
                for (i, version) in dups {
                    if let Some(q) = items.get_mut(i).and_then(Option::take) {
                        let verdict = self
                            .duplicate(&q.author.client, q.origin.seq(), version)
                            .await?;
                        self.answer(q.origin, verdict).await;
                    }
                }
                self.requeue(items.into_iter().flatten());
            }
            Ok(BatchOutcome::Stale { missed }) => {
                metrics::counter!("tandem_commit_retries_total").increment(1);
                for r in missed {
                    self.ingest(r).await?;
                }
                let attempts = round.items.iter().map(|q| q.attempts).max().unwrap_or(0) + 1;
                if attempts >= 2 {
                    let max_us = 200 * u64::from(attempts);
                    let us = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=max_us);
                    self.pipeline.pause = Some(Duration::from_micros(us));
                }
                self.requeue(round.items.into_iter().map(|mut q| {
                    q.attempts += 1;
                    q
                }));
            }
            Err(BusError::NotSeeded) => match self.reseed().await {
                Ok(()) => self.requeue(round.items.into_iter().map(|mut q| {
                    q.attempts += 1;
                    q
                })),
                Err(e) if super::sync::is_transient(&e) => {
                    self.refuse_all(round.items).await;
                }
                Err(e) => {
                    self.refuse_all(round.items).await;
                    return Err(e);
                }
            },
            // Not an outage: the sequencer holds commits for a bounded
            // moment after a re-seed; the round waits it out.
            Err(BusError::Settling(left)) => {
                self.pipeline.pause = Some(left.min(SETTLE_PAUSE_MAX));
                self.requeue(round.items.into_iter());
            }
            Err(e @ (BusError::Corrupt(_) | BusError::SeedConflict)) => {
                self.refuse_all(round.items).await;
                return Err(e.into());
            }
            Err(e) => {
                warn!(error = %e, "commit failed");
                let mut again = Vec::new();
                for mut q in round.items {
                    q.outages += 1;
                    if q.outages >= MAX_OUTAGE_ATTEMPTS {
                        self.answer(q.origin, Verdict::Refused(Refusal::unavailable()))
                            .await;
                    } else {
                        again.push(q);
                    }
                }
                // An answer lost to a timeout may mean it committed: the
                // next round finds out (stale, or resends found committed).
                self.pipeline.pause = Some(Duration::from_millis(100));
                self.requeue(again.into_iter());
            }
        }
        Ok(())
    }

    async fn refuse_all(&mut self, items: Vec<Queued>) {
        for q in items {
            self.answer(q.origin, Verdict::Refused(Refusal::unavailable()))
                .await;
        }
    }

    /// The task is stopping: answer whatever still waits.
    pub(super) async fn refuse_queue(&mut self) {
        let round = self.pipeline.round.take();
        self.refuse_all(round.map(|r| r.items).unwrap_or_default())
            .await;
        while let Some(w) = self.pipeline.queue.pop_front() {
            if let Waiting::Edit(q) = w {
                q.origin.refuse(HubError::Gone);
            }
        }
        self.pipeline.queued_bytes = 0;
    }

    /// The op does not rebase onto the head: a resend committed through
    /// another instance we have not heard from, or a refusal.
    async fn unrebasable(
        &mut self,
        author: &Author,
        seq: u64,
        e: RebaseError,
    ) -> Result<Verdict, HubError> {
        if let Ok(Some((last, version))) =
            self.hub.sequencer.last_seq(&self.id, &author.client).await
        {
            if seq <= last {
                return self.duplicate(&author.client, seq, version).await;
            }
        }
        Ok(match e {
            _ if self.needs_catch_up() => Verdict::Refused(Refusal::unavailable()),
            RebaseError::OutOfRange { base, oldest, head } => refused(
                ErrorCode::VersionOutOfRange,
                &format!("version {base} is outside {oldest}..={head}; reload the document"),
            ),
            RebaseError::Op(e) => refused(ErrorCode::BadOp, &e.to_string()),
        })
    }

    /// A resend of a committed op: the version it produced, once this
    /// document has every op below that version.
    async fn duplicate(
        &mut self,
        client: &str,
        seq: u64,
        version: u64,
    ) -> Result<Verdict, HubError> {
        metrics::counter!("tandem_duplicate_resubmits_total").increment(1);
        if version > self.state.version() {
            self.refill().await?;
        }
        if version > self.state.version() {
            return Ok(Verdict::Refused(Refusal::unavailable()));
        }
        let version = self
            .state
            .history()
            .version_of(client, seq)
            .unwrap_or(version);
        Ok(Verdict::Duplicate(version))
    }

    /// Tell whoever made the edit how it ended.
    async fn answer(&mut self, origin: Origin, verdict: Verdict) {
        let seq = origin.seq();
        match origin {
            Origin::Socket { conn, .. } => match verdict {
                // The ack went out in the fan-out, in order.
                Verdict::Committed(_) => {}
                Verdict::Duplicate(version) => {
                    self.send_to(conn, text(ServerMessage::Ack { seq, version }));
                }
                Verdict::Refused(r) => {
                    self.send_to(conn, error_msg(r.code, &r.message, Some(seq)));
                }
            },
            Origin::Rest { reply, .. } => {
                let result = match verdict {
                    Verdict::Committed(v) | Verdict::Duplicate(v) => Ok(v),
                    Verdict::Refused(r) => {
                        count_refusal(r.code);
                        Err(r)
                    }
                };
                let _ = reply.send(Ok(result));
            }
            Origin::Undo(step) => {
                if let Verdict::Refused(r) = verdict {
                    self.undo_refused(*step, r).await;
                }
            }
        }
    }
}

impl DocTask {
    /// The stack push that keeps a committed edit's inverse: a new edit
    /// goes on the user's undo stack (joining their open typing run when it
    /// goes on with it: `crate::runs`) and clears redo; an undo goes on the
    /// redo stack, a redo back on the undo stack (and ends the run). `op` is
    /// the edit as just pushed on `batch`.
    fn step_push(
        &self,
        batch: &Batch,
        origin: &Origin,
        user: &str,
        op: &Operation,
        entry: UndoEntry,
        runs: &mut Runs,
    ) -> StackPush {
        let run = runs.remove(user);
        if let Origin::Undo(step) = origin {
            let stack = match step.from {
                Stack::Undo => Stack::Redo,
                Stack::Redo => Stack::Undo,
            };
            return StackPush {
                stack,
                entry,
                replace_top_at: None,
                fallback: None,
                clear_redo: false,
            };
        }
        let carried = run.and_then(|run| self.carry(batch, Run::clone(&run), user));
        match next_step(carried, op, entry.clone()) {
            Ok((run, push)) => {
                // A sealed run takes nothing more: not kept.
                if !run.sealed && runs.len() < MAX_RUNS {
                    runs.insert(user.to_owned(), Arc::new(run));
                }
                push
            }
            Err(_) => StackPush {
                stack: Stack::Undo,
                entry,
                replace_top_at: None,
                fallback: None,
                clear_redo: true,
            },
        }
    }

    /// `run` carried past every op committed after its last edit up to the
    /// one just pushed on `batch` (the history, then the batch's ops before
    /// it), with the version its entry was pushed at; `None` when the user
    /// edited since through another path (an undo, another instance), or
    /// the history no longer reaches back.
    fn carry(&self, batch: &Batch, run: Run, user: &str) -> Option<(Run, u64)> {
        let top_at = run.entry.version;
        let mut run = run;
        let before = batch.ops().len().checked_sub(1)?;
        let from = if top_at < batch.base() {
            for r in self.state.records_after(top_at)? {
                if r.user == user {
                    return None;
                }
                run = run.past(&r.op).ok()?;
            }
            0
        } else {
            usize::try_from(top_at - batch.base()).ok()?
        };
        for op in batch.ops().get(from..before)? {
            run = run.past(op).ok()?;
        }
        Some((run, top_at))
    }
}

/// Open typing runs by user (shared: each round starts from a copy).
type Runs = std::collections::HashMap<String, Arc<Run>>;

/// Users with an open run kept at most per document (runs close after a
/// second without an edit, so this is only reached by a crowd).
const MAX_RUNS: usize = 1024;

/// The span of a traced edit's rebase, under its receipt; none when the
/// edit is not traced (nothing is made on the hot path then).
fn rebase_span(receipt: &tracing::Span) -> tracing::Span {
    if receipt.is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(parent: receipt, "op.rebase")
}

/// The span of a traced edit's commit round (its batch size recorded when
/// the batch is built), under its receipt; none when not traced.
fn commit_span(receipt: &tracing::Span) -> tracing::Span {
    if receipt.is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(parent: receipt, "op.commit", batch = tracing::field::Empty)
}
