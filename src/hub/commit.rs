//! The edit pipeline, one entry for every edit: a socket's op, a REST edit
//! (ops, content replacement, restore), an undo or redo. Checks (role, seq,
//! resends), rebase to the head, the sequencer commit with
//! rebase-and-retry, and the answer to whoever made the edit.
//!
//! Owns: [`Edit`] (what is changed), [`Origin`] (who changed it and where
//! the answer goes) and [`Verdict`] (how it ended).
//! Must not import: axum, sqlx, redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::warn;

use super::task::DocTask;
use super::undo::Step;
use super::{count_refusal, error_msg, text, EditResult, HubError, Refusal};
use crate::bus::{BusError, CommitOutcome, CommitRequest};
use crate::doc::{RebaseError, Record};
use crate::ot::Operation;
use crate::protocol::{ErrorCode, Role, ServerMessage};

/// Rebase-and-retry rounds when another instance commits first. From the
/// third round on, a short random pause breaks lockstep between instances
/// racing on one hot document (otherwise the busiest one can starve).
const MAX_COMMIT_RETRIES: usize = 64;
/// Told to a client whose edit could not be committed (backend outage).
const UNAVAILABLE: &str = "the edit could not be committed right now; keep it and resend it";

/// A change to a document.
#[derive(Clone, Debug)]
pub enum Edit {
    /// `op` on `version`, rebased to the head like a socket's op.
    Op { version: u64, op: Operation },
    /// The whole content replaced by one diff op on the head.
    Replace(String),
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
    /// A resend of an edit committed before as this version.
    Duplicate(u64),
    Refused(Refusal),
}

impl Refusal {
    /// The edit could not be committed right now (backend outage).
    pub(super) fn unavailable() -> Self {
        Self::new(ErrorCode::Internal, UNAVAILABLE)
    }
}

fn refused(code: ErrorCode, message: &str) -> Verdict {
    Verdict::Refused(Refusal::new(code, message))
}

impl DocTask {
    /// Commit an edit and answer whoever made it.
    pub(super) async fn edit(&mut self, origin: Origin, edit: Edit) -> Result<(), HubError> {
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
        let verdict = self.commit(&origin, &author, base, op).await?;
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

    /// Checks, then rebase `op` from `base` to the head and sequence it.
    async fn commit(
        &mut self,
        origin: &Origin,
        author: &Author,
        base: u64,
        op: Operation,
    ) -> Result<Verdict, HubError> {
        let seq = origin.seq();
        if !author.role.can_edit() {
            return Ok(refused(ErrorCode::Forbidden, "viewers cannot edit"));
        }
        if seq == 0 {
            return Ok(refused(ErrorCode::BadMessage, "seq starts at 1"));
        }
        if base > self.state.version() {
            // Another instance may be ahead of us.
            self.refill().await?;
        }
        // A resubmit of a committed op is answered before any validation:
        // its base may be long gone.
        if let Some(&(last, version)) = self.clients.get(&author.client) {
            if seq <= last {
                return self.duplicate(&author.client, seq, version).await;
            }
        }
        metrics::histogram!("tandem_rebase_depth")
            .record(self.state.version().saturating_sub(base) as f64);
        match self.state.rebase(base, op) {
            Ok(op) => self.sequence(origin, author, op).await,
            Err(e) => self.unrebasable(author, seq, e).await,
        }
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
            _ if self.needs_catch_up => Verdict::Refused(Refusal::unavailable()),
            RebaseError::OutOfRange { base, oldest, head } => refused(
                ErrorCode::VersionOutOfRange,
                &format!("version {base} is outside {oldest}..={head}; reload the document"),
            ),
            RebaseError::Op(e) => refused(ErrorCode::BadOp, &e.to_string()),
        })
    }

    /// Commit `op` (based on the head) through the sequencer; when another
    /// instance got there first, apply what it committed, rebase, retry.
    async fn sequence(
        &mut self,
        origin: &Origin,
        author: &Author,
        mut op: Operation,
    ) -> Result<Verdict, HubError> {
        let seq = origin.seq();
        // The version `op` applies to; when the document moves past it
        // (missed commits, or a pause), the op is rebased once, here.
        let mut based_on = self.state.version();
        let mut reseeded = false;
        for attempt in 0..MAX_COMMIT_RETRIES {
            if attempt > 0 {
                metrics::counter!("tandem_commit_retries_total").increment(1);
            }
            if attempt >= 2 {
                let max_us = 200 * attempt as u64;
                let pause = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=max_us);
                tokio::time::sleep(Duration::from_micros(pause)).await;
                // Others committed meanwhile: catch up before trying again.
                self.refill().await?;
            }
            if self.state.version() > based_on {
                op = match self.state.rebase(based_on, op) {
                    Ok(op) => op,
                    Err(e) => {
                        warn!(error = %e, "rebase onto newer commits failed");
                        return Ok(Verdict::Refused(Refusal::unavailable()));
                    }
                };
                based_on = self.state.version();
            }
            let max = self.hub.settings.max_doc_chars;
            if op.target_len() > max && op.target_len() > op.base_len() {
                let m = format!(
                    "the document would have {} characters; the limit is {max}",
                    op.target_len()
                );
                return Ok(refused(ErrorCode::DocTooLarge, &m));
            }
            let req = CommitRequest {
                base: based_on,
                op: op.clone(),
                user: author.user.clone(),
                client: author.client.clone(),
                seq,
                time: (self.hub.clock)(),
            };
            let started = Instant::now();
            let outcome = match self.hub.sequencer.commit(&self.id, req).await {
                Ok(o) => o,
                Err(BusError::NotSeeded) if !reseeded => {
                    reseeded = true;
                    match self.reseed().await {
                        Ok(()) => continue,
                        Err(e) if super::sync::is_transient(&e) => {
                            return Ok(Verdict::Refused(Refusal::unavailable()))
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    warn!(error = %e, "commit failed");
                    return Ok(Verdict::Refused(Refusal::unavailable()));
                }
            };
            metrics::histogram!("tandem_commit_seconds").record(started.elapsed().as_secs_f64());
            match outcome {
                CommitOutcome::Committed(rec) => return self.committed(origin, author, rec).await,
                CommitOutcome::Duplicate { version } => {
                    return self.duplicate(&author.client, seq, version).await
                }
                CommitOutcome::Stale { missed } => {
                    // Rebased at the top of the next round.
                    for r in missed {
                        self.ingest(r).await?;
                    }
                }
            }
        }
        warn!("commit retries exhausted");
        Ok(refused(
            ErrorCode::Internal,
            "the document is too busy; resend the edit",
        ))
    }

    /// Apply and fan out a record this task committed, and keep its inverse
    /// for undo.
    async fn committed(
        &mut self,
        origin: &Origin,
        author: &Author,
        rec: Arc<Record>,
    ) -> Result<Verdict, HubError> {
        metrics::counter!("tandem_ops_committed_total").increment(1);
        let version = rec.version;
        // The state is at `version - 1` here: the inverse is exact.
        let inverse = rec.op.invert(self.state.rope());
        let time = rec.time;
        self.ingest(rec).await?;
        if let Ok(op) = inverse {
            let entry = crate::undo::UndoEntry { version, op, time };
            self.remember_for_undo(origin, &author.user, entry).await;
        }
        Ok(Verdict::Committed(version))
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
