//! The edit pipeline's executor, one entry for every edit: a socket's op, a
//! REST edit (ops, content replacement, restore), an undo or redo. The
//! rules (checks, queue, group-commit rounds, retries, pauses) are the pure
//! [`crate::pipeline::Pipeline`]; this file only does what it says: sends
//! rounds to the sequencer, pops undo steps, refills, applies committed
//! records, and delivers each edit's answer to whoever made it. The
//! document task keeps serving joins, cursors and bus events while a round
//! is in flight.
//!
//! An `impl DocTask` file: the edit, its origin and the pipeline it waits
//! in (`Edit`, `Origin`, `Edits`) are plain data in `edits.rs`.
//! Imports from the hub: the leaves and `task` only.
//! Must not import: axum, sqlx, redis, the other `impl DocTask` files.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::edits::{Edit, Origin, RoundFuture};
use super::task::DocTask;
use super::types::{count_refusal, error_msg, is_transient, text, HubError, Refusal};
use crate::bus::{BusError, BusEvent, CommitBatch, CommitReply, LeaseAction, LeaseReply};
use crate::health::Part;
use crate::pipeline::{
    unrebasable, Author, Doc, EditId, Effect, Forwarded, Lease, Note, Outcome, Reseeded,
    Submission, Verdict,
};
use crate::protocol::ServerMessage;

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
            // Forwarded edits are submitted as they came.
            Origin::Remote { .. } => None,
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
        self.edits.pipeline.finish(outcome, now, &mut out);
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
                        Err(e) if is_transient(&e) => Reseeded::Failed,
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
                Effect::Acquire { nonce } => {
                    let mut more = Vec::new();
                    let reply = self.acquire(nonce).await;
                    let now = (self.hub.clock)();
                    self.edits.pipeline.lease_reply(reply, now, &mut more);
                    for e in more.into_iter().rev() {
                        work.push_front(e);
                    }
                }
                Effect::Forward { to, edits } => {
                    metrics::counter!("tandem_forwarded_edits_total").increment(edits.len() as u64);
                    let from = self.hub.settings.instance_id.clone();
                    self.outbox.publish(BusEvent::Forward { from, to, edits });
                }
            }
        }
        Ok(round)
    }

    /// Edits another instance forwarded to the lease holder `to`: taken
    /// if that is this instance.
    pub(super) async fn take_forward(
        &mut self,
        from: &str,
        to: &str,
        edits: Vec<Forwarded>,
    ) -> Result<(), HubError> {
        if !self.edits.pipeline.token_is(to) {
            return Ok(());
        }
        let mut out = Vec::new();
        for f in edits {
            if f.base > self.state.version() {
                self.refill().await?;
            }
            let origin = Origin::Remote {
                instance: from.to_owned(),
                client: f.client.clone(),
                seq: f.seq,
            };
            let id = self.edits.track(origin, tracing::Span::none());
            if !self.edits.pipeline.submit_forwarded(id, f, &mut out) {
                self.edits.tracked.remove(&id);
            }
        }
        self.execute(out).await.map(drop)
    }

    /// The lease holder's verdicts on edits this instance forwarded.
    pub(super) async fn take_verdicts(
        &mut self,
        items: Vec<(String, u64, Verdict)>,
    ) -> Result<(), HubError> {
        let now = (self.hub.clock)();
        let mut out = Vec::new();
        for (client, seq, verdict) in items {
            self.edits
                .pipeline
                .verdict(&client, seq, verdict, now, &mut out);
        }
        self.execute(out).await.map(drop)
    }

    /// When the pipeline next wants a poll with nothing else happening (a
    /// forward to resend, a lease to ask for).
    pub(super) fn lease_wake(&self) -> Option<tokio::time::Instant> {
        let at = self.edits.pipeline.next_wake()?;
        let wait = at.saturating_sub((self.hub.clock)()).max(5);
        Some(tokio::time::Instant::now() + Duration::from_millis(wait as u64))
    }

    /// Give up the document's commit lease if this instance holds it
    /// (stopping or unloading): another instance takes it at once instead
    /// of waiting it out.
    pub(super) async fn release_lease(&mut self) {
        let (Lease::Leader { token, .. }, Some((_, ttl))) = (
            self.edits.pipeline.lease().clone(),
            self.edits.leases.clone(),
        ) else {
            return;
        };
        let action = LeaseAction::Release { token };
        if let Err(e) = self.hub.sequencer.lease(&self.id, action, ttl).await {
            warn!(error = %e, "could not release the commit lease; it lapses");
        }
    }

    /// Ask for the document's commit lease (`None`: the call failed).
    async fn acquire(&mut self, nonce: u64) -> Option<LeaseReply> {
        let (instance, ttl) = self.edits.leases.clone()?;
        let action = LeaseAction::Acquire {
            instance,
            nonce: format!("{nonce:016x}"),
        };
        match self.hub.sequencer.lease(&self.id, action, ttl).await {
            Ok(reply) => {
                if let LeaseReply::Granted { token } = &reply {
                    metrics::counter!("tandem_leader_grants_total").increment(1);
                    info!(%token, "took the document's commit lease");
                }
                Some(reply)
            }
            Err(e) => {
                warn!(error = %e, "could not ask for the commit lease");
                None
            }
        }
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

    /// A forwarded edit's verdict goes back to the instance it came from,
    /// as it is (that instance acknowledges once it holds the version);
    /// one the leader committed is answered there by its record.
    fn answer_remote(&mut self, id: EditId, verdict: Verdict) {
        let Some(t) = self.edits.tracked.remove(&id) else {
            return;
        };
        if let (
            Origin::Remote {
                instance,
                client,
                seq,
            },
            false,
        ) = (t.origin, matches!(verdict, Verdict::Committed(_)))
        {
            let items = vec![(client, seq, verdict)];
            self.outbox.publish(BusEvent::Verdicts {
                to: instance,
                items,
            });
        }
    }

    /// An edit that changes nothing, found so at version `at_least`:
    /// acknowledged at the head its client has been sent, once this
    /// document holds that version.
    async fn unchanged(&mut self, at_least: u64) -> Result<Verdict, HubError> {
        if !self.holds(at_least).await? {
            return Ok(Verdict::Refused(Refusal::unavailable()));
        }
        Ok(Verdict::Unchanged(self.state.version()))
    }

    /// Whether this document holds `version`, refilling first if it is
    /// past the head (false: the backend could not give it now).
    async fn holds(&mut self, version: u64) -> Result<bool, HubError> {
        if version > self.state.version() {
            self.refill().await?;
        }
        Ok(version <= self.state.version())
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
        if !self.holds(version).await? {
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
        if let Some(Origin::Remote { .. }) = self.edits.origin(id) {
            self.answer_remote(id, verdict);
            return Ok(());
        }
        // The version to acknowledge at, once this document holds it.
        let verdict = match verdict {
            Verdict::Duplicate {
                client,
                seq,
                version,
            } => self.duplicate(&client, seq, version).await?,
            Verdict::Unchanged(at_least) => self.unchanged(at_least).await?,
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
            Origin::Remote { .. } => {}
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
