//! Joining a document: replacing an older connection with the same client
//! id, counting the view, the resume replay (only on the document's current
//! history, its epoch; from memory, the sequencer's log, or the journal
//! joined to memory; else a full init), the init message, and announcing the
//! newcomer.
//! An `impl DocTask` file. Imports from the hub: the leaves and `task` only.
//! Must not import: axum, sqlx, redis, the other `impl DocTask` files.

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::outbox::BusWrite;
use super::state::ConnState;
use super::task::DocTask;
use super::types::{close, text, HubError, Outbound, Resume, INIT_LIST_MAX};
use crate::bus::BusEvent;
use crate::doc::Record;
use crate::protocol::ServerMessage;

/// Most op bytes a resume replays; a client further behind gets a full init
/// (the content, at most `MAX_DOC_CHARS`), which costs less.
const RESUME_REPLAY_BYTES: usize = 4 * 1024 * 1024;

impl DocTask {
    pub(super) async fn join(
        &mut self,
        conn: ConnState,
        resume: Option<Resume>,
        reply: oneshot::Sender<Result<(), HubError>>,
    ) -> Result<(), HubError> {
        // A newer connection with the same client id replaces the old one.
        if let Some(old) = self.room.conns.iter().find(|c| c.client == conn.client) {
            let _ = old.tx.try_send(Outbound::Close(
                close::REPLACED,
                "replaced by a newer connection",
            ));
            let id = old.id;
            self.drop_conns(&[id], "replaced");
        }
        if resume.is_none() {
            self.count_view();
        }
        let mut replay = None;
        if let Some(n) = self.resumable(resume.as_ref()) {
            if n > self.state.version() {
                // Another instance may be ahead of us.
                self.refill().await?;
            }
            // A refill may have re-seeded the sequencer under a new epoch.
            if self.resumable(resume.as_ref()).is_some() {
                // Leave room in the queue for live traffic after the replay.
                let cap = self.hub.settings.outbound_queue.saturating_sub(64);
                replay = self.records_for_resume(n, cap).await;
            }
        }
        let last_seq = match self.hub.sequencer.last_seq(&self.id, &conn.client).await {
            Ok(s) => s.map_or(0, |(seq, _)| seq),
            Err(e) => {
                warn!(error = %e, "last_seq unavailable; using local knowledge");
                self.clients.get(&conn.client).map_or(0, |c| c.0)
            }
        };
        let mut users = self.users();
        users.truncate(INIT_LIST_MAX - 1);
        users.push(self.room.shown(conn.presence()));
        let mut cursors = self.current_cursors();
        cursors.truncate(INIT_LIST_MAX);
        let (version, content) = match (&replay, &resume) {
            (Some(_), Some(r)) => (r.version, None),
            _ => (self.state.version(), Some(self.state.content())),
        };
        let init = text(ServerMessage::Init {
            document: &self.id,
            client: &conn.client,
            user: &conn.user,
            version,
            history: &self.epoch,
            content,
            users,
            cursors,
            role: conn.role,
            resumed: resume.as_ref().map(|_| replay.is_some()),
            seq: last_seq,
            meta: &self.meta_view(),
            awareness: &self.current_awareness(),
        });
        let mut queued = conn.tx.try_send(init).is_ok();
        for r in replay.iter().flatten() {
            let msg = text(ServerMessage::Op {
                version: r.version,
                op: &r.op,
                user: &r.user,
                client: &r.client,
                seq: r.seq,
            });
            queued &= conn.tx.try_send(msg).is_ok();
        }
        if !queued {
            // Cannot happen with a fresh queue sized above the replay cap.
            let _ = reply.send(Err(HubError::Gone));
            return Ok(());
        }
        let joined = text(ServerMessage::UserJoined {
            user: &conn.user,
            client: &conn.client,
        });
        self.broadcast(None, joined);
        self.outbox
            .write(BusWrite::PresencePut(vec![self.entry(&conn)]));
        self.outbox.publish(BusEvent::Joined {
            instance: self.hub.settings.instance_id.clone(),
            presence: conn.presence(),
        });
        debug!(
            client = %conn.client,
            user = %conn.user.id,
            resume = ?resume.map(|r| r.version),
            resumed = replay.is_some(),
            "joined"
        );
        self.room.conns.push(conn);
        self.room.idle_since = None;
        let _ = reply.send(Ok(()));
        Ok(())
    }

    /// The version to replay from, if the client resumes on this document's
    /// current history. A version of another history (the sequencer lost
    /// records and handed their numbers out again), or one whose history is
    /// not named (a client from before epochs), cannot be trusted: the
    /// client gets a full init.
    fn resumable(&self, resume: Option<&Resume>) -> Option<u64> {
        let r = resume?;
        (r.history.as_deref() == Some(self.epoch.as_str())).then_some(r.version)
    }

    /// Records after `n` up to the head, for a resume: from memory, else the
    /// sequencer's log, else the journal joined to memory. `None` (a full
    /// init) beyond `cap` records or [`RESUME_REPLAY_BYTES`].
    async fn records_for_resume(&self, n: u64, cap: usize) -> Option<Vec<Arc<Record>>> {
        let head = self.state.version();
        if n > head {
            return None;
        }
        if (head - n) as usize > cap {
            return None;
        }
        let fits = |v: &[Arc<Record>]| {
            v.iter().map(|r| r.op.size_hint()).sum::<usize>() <= RESUME_REPLAY_BYTES
        };
        if let Some(it) = self.state.records_after(n) {
            let v: Vec<Arc<Record>> = it.cloned().collect();
            return fits(&v).then_some(v);
        }
        let range = self.hub.sequencer.ops_since(&self.id, n, &self.epoch).await;
        if let Ok(crate::bus::Range::Records(v)) = range {
            if v.last().map_or(n, |r| r.version) == head {
                return fits(&v).then_some(v);
            }
        }
        let oldest = self.state.oldest();
        let journal = self
            .hub
            .store
            .journal_after(&self.id, n, (oldest - n) as u32, RESUME_REPLAY_BYTES)
            .await
            .ok()?;
        let contiguous = journal
            .iter()
            .enumerate()
            .all(|(i, r)| r.version == n + 1 + i as u64);
        if !contiguous || journal.last().map_or(n, |r| r.version) != oldest {
            return None;
        }
        let mut out: Vec<Arc<Record>> = journal.into_iter().map(Arc::new).collect();
        out.extend(self.state.records_after(oldest)?.cloned());
        fits(&out).then_some(out)
    }
}
