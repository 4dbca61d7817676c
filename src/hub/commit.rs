//! The edit pipeline's executor, one entry for every edit: a socket's op, a
//! REST edit (ops, content replacement, restore), an undo or redo. The
//! rules (checks, queue, group-commit rounds, retries, pauses) are the pure
//! [`crate::pipeline::Pipeline`]; this file only does what it says: sends
//! rounds to the sequencer, pops undo steps, refills, applies committed
//! records, and delivers each edit's answer to whoever made it. The
//! document task keeps serving joins, cursors and bus events while a round
//! is in flight.
//!
//! Owns: [`Edit`] (what is changed), [`Origin`] (who changed it and where
//! the answer goes) and [`Edits`] (the pipeline and the origins of the
//! edits in it).
//! Must not import: axum, sqlx, redis.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::warn;

use super::task::DocTask;
use super::undo::Step;
use super::{count_refusal, error_msg, text, EditResult, HubError, Refusal};
use crate::bus::{BusError, CommitBatch, CommitReply};
use crate::health::Part;
use crate::ot::Operation;
use crate::pipeline::{
    unrebasable, Author, Doc, EditId, Effect, Limits, Note, Outcome, Pipeline, Reseeded,
    Submission, Verdict,
};
use crate::protocol::{Role, ServerMessage};

/// A change to a document.
#[derive(Clone, Debug)]
pub enum Edit {
    /// `op` on `version`, rebased to the head like a socket's op.
    Op { version: u64, op: Operation },
    /// The whole content replaced by one diff op on the head.
    Replace(String),
}

/// A round's sequencer call, polled by the task's select loop.
pub(super) type RoundFuture = Pin<Box<dyn Future<Output = Result<CommitReply, BusError>> + Send>>;

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
    /// A socket's undo or redo: once popped, its step (a fresh client with
    /// one op); a refusal puts the step back and tells the socket.
    Undo { conn: u64, step: Option<Box<Step>> },
}

impl Origin {
    /// The seq the edit commits under (REST edits and undo steps are each
    /// their own client's only op).
    fn seq(&self) -> u64 {
        match self {
            Origin::Socket { seq, .. } => *seq,
            Origin::Rest { .. } | Origin::Undo { .. } => 1,
        }
    }

    /// The document task could not take the edit.
    pub(super) fn refuse(self, e: HubError) {
        if let Origin::Rest { reply, .. } = self {
            let _ = reply.send(Err(e));
        }
    }
}

/// An edit in the pipeline, as the task knows it.
struct Tracked {
    origin: Origin,
    /// The edit's receipt span, and its commit span once in a round (none
    /// when traces are not exported).
    span: tracing::Span,
    commit: tracing::Span,
}

/// The pipeline, and where each of its edits' answers goes.
pub(super) struct Edits {
    pipeline: Pipeline,
    tracked: HashMap<EditId, Tracked>,
    next: u64,
    /// When the round in flight was sent.
    started: Option<Instant>,
    /// Why the pipeline asked for a reset (returned by the task).
    fault: Option<HubError>,
}

impl Edits {
    pub(super) fn new(max_doc_chars: usize) -> Self {
        Self {
            pipeline: Pipeline::new(Limits::new(max_doc_chars), rand::random()),
            tracked: HashMap::new(),
            next: 0,
            started: None,
            fault: None,
        }
    }

    /// Nothing queued and no round in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.pipeline.is_idle()
    }

    pub(super) fn origin(&self, id: EditId) -> Option<&Origin> {
        self.tracked.get(&id).map(|t| &t.origin)
    }

    pub(super) fn origin_mut(&mut self, id: EditId) -> Option<&mut Origin> {
        self.tracked.get_mut(&id).map(|t| &mut t.origin)
    }

    pub(super) fn step_popped(&mut self, id: EditId, popped: crate::pipeline::Popped) {
        self.pipeline.step_popped(id, popped);
    }

    /// The undo request is done without an edit: the socket that asked.
    pub(super) fn step_gone(&mut self, id: EditId) -> Option<u64> {
        self.pipeline.step_gone(id);
        match self.tracked.remove(&id)?.origin {
            Origin::Undo { conn, .. } | Origin::Socket { conn, .. } => Some(conn),
            Origin::Rest { .. } => None,
        }
    }

    fn track(&mut self, origin: Origin, span: tracing::Span) -> EditId {
        self.next += 1;
        let id = EditId(self.next);
        let commit = tracing::Span::none();
        self.tracked.insert(
            id,
            Tracked {
                origin,
                span,
                commit,
            },
        );
        id
    }
}

/// What the pipeline reads of the task's document.
macro_rules! doc_of {
    ($task:expr) => {
        Doc {
            state: &$task.state,
            clients: &$task.clients,
            epoch: &$task.epoch,
            catching_up: $task.catch_up_retry.is_some(),
        }
    };
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
        if base > self.state.version() && author.role.can_edit() {
            // Another instance may be ahead of us.
            self.refill().await?;
        }
        let id = self.edits.track(origin, span);
        let sub = Submission {
            id,
            author,
            seq,
            base,
            op,
        };
        let mut out = Vec::new();
        self.edits.pipeline.submit(sub, &doc_of!(self), &mut out);
        self.execute(out).await.map(drop)
    }

    /// Queue an `undo` / `redo` behind the edits before it.
    pub(super) async fn queue_undo(&mut self, conn: u64, redo: bool) -> Result<(), HubError> {
        let id = self
            .edits
            .track(Origin::Undo { conn, step: None }, tracing::Span::none());
        let mut out = Vec::new();
        self.edits.pipeline.submit_undo(id, redo, &mut out);
        self.execute(out).await.map(drop)
    }

    fn author(&self, origin: &Origin) -> Option<Author> {
        match origin {
            Origin::Socket { conn, .. } | Origin::Undo { conn, .. } => {
                self.room.conn(*conn).map(|c| Author {
                    client: c.client.clone(),
                    user: c.user.id.clone(),
                    role: c.role,
                })
            }
            Origin::Rest {
                client, user, role, ..
            } => Some(Author {
                client: client.clone(),
                user: user.clone(),
                role: *role,
            }),
        }
    }

    /// Start a commit round if none is in flight and edits wait. Returns
    /// the round's call.
    pub(super) async fn start_round(&mut self) -> Result<Option<RoundFuture>, HubError> {
        loop {
            let mut out = Vec::new();
            let now = (self.hub.clock)();
            self.edits.pipeline.poll(&doc_of!(self), now, &mut out);
            if out.is_empty() {
                return Ok(None);
            }
            if let Some(round) = self.execute(out).await? {
                return Ok(Some(round));
            }
        }
    }

    /// The round's call ended: hand its answer to the pipeline and do what
    /// it says.
    pub(super) async fn finish_round(
        &mut self,
        reply: Result<CommitReply, BusError>,
    ) -> Result<(), HubError> {
        if !self.edits.pipeline.in_flight() {
            return Ok(());
        }
        if let Some(started) = self.edits.started.take() {
            metrics::histogram!("tandem_commit_seconds").record(started.elapsed().as_secs_f64());
        }
        let now = (self.hub.clock)();
        match &reply {
            Ok(_) => self.hub.health.ok(Part::Commit),
            Err(e @ BusError::Unavailable(_)) => {
                self.hub.health.fail(Part::Commit, &e.to_string(), now)
            }
            Err(_) => {}
        }
        let outcome = match reply {
            Ok(r) => {
                match &r {
                    CommitReply::Committed(recs) => {
                        metrics::counter!("tandem_ops_committed_total")
                            .increment(recs.len() as u64);
                    }
                    CommitReply::Stale { .. } => {
                        metrics::counter!("tandem_commit_retries_total").increment(1)
                    }
                    _ => {}
                }
                Outcome::Reply(r)
            }
            Err(e @ BusError::Corrupt(_)) => {
                self.edits.fault = Some(e.into());
                Outcome::Broken
            }
            Err(e) => {
                warn!(error = %e, "commit failed");
                Outcome::Outage
            }
        };
        let mut out = Vec::new();
        self.edits.pipeline.finish(outcome, &mut out);
        self.execute(out).await.map(drop)
    }

    /// Do what the pipeline said, in order (a step may add more, done next).
    /// Returns the round's call if one started.
    async fn execute(&mut self, out: Vec<Effect>) -> Result<Option<RoundFuture>, HubError> {
        let mut work: VecDeque<Effect> = out.into();
        let mut round = None;
        while let Some(effect) = work.pop_front() {
            match effect {
                Effect::Commit {
                    batch,
                    ids,
                    depths,
                    pause,
                } => round = Some(self.send_round(batch, &ids, &depths, pause)),
                Effect::PopStep { id, redo } => self.pop_step(id, redo).await,
                Effect::Refill => self.refill().await?,
                Effect::Apply(recs) => {
                    for r in recs {
                        self.ingest(r).await?;
                    }
                }
                Effect::Answer { id, verdict } => self.answer(id, verdict).await?,
                Effect::Lookup {
                    id,
                    client,
                    seq,
                    error,
                } => {
                    let last = self.hub.sequencer.last_seq(&self.id, &client).await;
                    let catching_up = self.needs_catch_up();
                    let verdict =
                        unrebasable(&client, seq, last.ok().flatten(), error, catching_up);
                    self.answer(id, verdict).await?;
                }
                Effect::StepGone { id, refusal } => self.step_gone(id, refusal),
                Effect::Reseed => {
                    let result = match self.reseed().await {
                        Ok(()) => Reseeded::Done,
                        Err(e) if super::sync::is_transient(&e) => Reseeded::Failed,
                        Err(e) => {
                            self.edits.fault = Some(e);
                            Reseeded::Conflict
                        }
                    };
                    let mut more = Vec::new();
                    self.edits.pipeline.reseeded(result, &mut more);
                    for e in more.into_iter().rev() {
                        work.push_front(e);
                    }
                }
                Effect::Reset => {
                    return Err(self.edits.fault.take().unwrap_or_else(|| {
                        HubError::Diverged("the commit pipeline asked for a reset".into())
                    }))
                }
                Effect::Note(Note::QueueFull) => {
                    metrics::counter!("tandem_commit_queue_full_total").increment(1)
                }
                Effect::Note(Note::RetriesExhausted) => warn!("commit retries exhausted"),
            }
        }
        Ok(round)
    }

    /// Trace and measure a round, and make its sequencer call (after its
    /// pause).
    fn send_round(
        &mut self,
        mut batch: CommitBatch,
        ids: &[EditId],
        depths: &[u64],
        pause: Option<Duration>,
    ) -> RoundFuture {
        metrics::histogram!("tandem_commit_batch_ops").record(ids.len() as f64);
        for d in depths {
            metrics::histogram!("tandem_rebase_depth").record(*d as f64);
        }
        for (rec, id) in batch.records.iter_mut().zip(ids) {
            if let Some(t) = self.edits.tracked.get_mut(id) {
                if !t.span.is_none() {
                    drop(tracing::info_span!(parent: &t.span, "op.rebase"));
                    t.commit = tracing::info_span!(parent: &t.span, "op.commit", batch = ids.len());
                    rec.trace = crate::otel::traceparent(&t.commit);
                }
            }
        }
        self.edits.started = Some(Instant::now());
        let sequencer = self.hub.sequencer.clone();
        let id = self.id.clone();
        Box::pin(async move {
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
            sequencer.commit_batch(&id, batch).await
        })
    }

    /// The task is stopping: answer whatever still waits.
    pub(super) async fn refuse_queue(&mut self) {
        let (round, _) = self.edits.pipeline.drain();
        for id in round {
            let verdict = Verdict::Refused(Refusal::unavailable());
            if let Err(e) = self.answer(id, verdict).await {
                warn!(error = %e, "an edit's answer was lost");
            }
        }
        for (_, t) in self.edits.tracked.drain() {
            t.origin.refuse(HubError::Gone);
        }
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
        Ok(Verdict::Unchanged(version))
    }

    /// Tell whoever made the edit how it ended.
    async fn answer(&mut self, id: EditId, verdict: Verdict) -> Result<(), HubError> {
        let verdict = match verdict {
            Verdict::Duplicate {
                client,
                seq,
                version,
            } => self.duplicate(&client, seq, version).await?,
            v => v,
        };
        let Some(t) = self.edits.tracked.remove(&id) else {
            return Ok(());
        };
        let seq = t.origin.seq();
        match t.origin {
            Origin::Socket { conn, .. } => match verdict {
                // The ack went out in the fan-out, in order.
                Verdict::Committed(_) => {}
                Verdict::Unchanged(version) | Verdict::Duplicate { version, .. } => {
                    self.send_to(conn, text(ServerMessage::Ack { seq, version }));
                }
                Verdict::Refused(r) => {
                    self.send_to(conn, error_msg(r.code, &r.message, Some(seq)));
                }
            },
            Origin::Rest { reply, .. } => {
                let result = match verdict {
                    Verdict::Committed(v)
                    | Verdict::Unchanged(v)
                    | Verdict::Duplicate { version: v, .. } => Ok(v),
                    Verdict::Refused(r) => {
                        count_refusal(r.code);
                        Err(r)
                    }
                };
                let _ = reply.send(Ok(result));
            }
            Origin::Undo { conn, step } => match (verdict, step) {
                (Verdict::Refused(r), Some(step)) => self.undo_refused(*step, r).await,
                (Verdict::Refused(r), None) => {
                    self.send_to(conn, error_msg(r.code, &r.message, None));
                }
                _ => {}
            },
        }
        Ok(())
    }
}
