//! A document task: the sole owner of one open document's state on this
//! instance. Loads the document, runs the select loop (commands, bus
//! events, heartbeat, tick), hands changed state to the persister, unloads
//! when idle, and stops on shutdown, reset or deletion.
//!
//! Owns: [`DocTask`] and its persistence state ([`Unsaved`]); the other
//! seams add methods to `DocTask` in their own files (the `impl DocTask`
//! files), and the data it holds is in the leaves (`state`, `edits`,
//! `types`, `shared`, `outbox`).
//! Imports from the hub: the leaves only.
//! Must not import: axum, sqlx, redis, the `impl DocTask` files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::edits::{Edits, RoundFuture};
use super::outbox::Outbox;
use super::shared::Inner;
use super::state::{Cmd, MetaState, Room};
use super::types::{close, DocView, HubError, Outbound};
use crate::bus::{
    BusError, BusEvent, BusRecv, ClientSeq, CommitReply, Seed, SeedReply, Subscription,
};
use crate::doc::{ClientSeqs, DocState, Record};
use crate::store::DocPersist;

/// Why the task loop stops.
enum Stop {
    Unloaded,
    Shutdown,
    /// State can no longer be trusted (e.g. the op log lost history we need):
    /// close connections so clients resume against a fresh load.
    Reset,
    /// The document was deleted: nothing to persist.
    Deleted,
}

/// What the store does not have yet: handed to the persister on the tick.
pub(super) struct Unsaved {
    /// The version last handed to the persister.
    pub(super) version: u64,
    /// Records applied since.
    pub(super) journal: Vec<Arc<Record>>,
    /// Clients whose committed seq moved since.
    pub(super) clients: Vec<String>,
}

pub(super) struct DocTask {
    pub(super) id: String,
    generation: u64,
    pub(super) hub: Arc<Inner>,
    pub(super) state: DocState,
    /// Highest committed seq (and its version) per client id (bounded).
    pub(super) clients: ClientSeqs,
    pub(super) unsaved: Unsaved,
    pub(super) room: Room,
    pub(super) sub: Subscription,
    pub(super) outbox: Outbox,
    /// A refill failed (backend down): when the next one is tried, and the
    /// back-off that set it (doubling from `sync::CATCH_UP_FIRST`,
    /// capped).
    pub(super) catch_up_retry: Option<(tokio::time::Instant, Duration)>,
    /// The document was deleted: stop without persisting.
    pub(super) deleted: bool,
    pub(super) meta: MetaState,
    /// Edits waiting for a commit round, the round in flight, and where
    /// their answers go.
    pub(super) edits: Edits,
    /// The history identity the sequencer holds (see `crate::epoch`): from
    /// the seed at load and at every re-seed. A resume is honoured only
    /// from a version of this history.
    pub(super) epoch: String,
}

/// Wait for the round in flight, if any (never ready without one).
async fn round_done(round: &mut Option<RoundFuture>) -> Result<CommitReply, BusError> {
    match round {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// How long a stopping task waits for its round in flight.
const ROUND_GRACE: Duration = Duration::from_secs(5);

impl DocTask {
    pub(super) async fn start(
        hub: Arc<Inner>,
        id: String,
        generation: u64,
        mut rx: mpsc::Receiver<Cmd>,
    ) {
        let task = match Self::load(hub.clone(), id.clone(), generation).await {
            Ok(t) => t,
            Err(e) => {
                match &e {
                    HubError::NotFound => debug!("no such document"),
                    e => warn!(error = %e, "could not load document"),
                }
                hub.unregister(&id, generation);
                // Answer whatever queued up meanwhile.
                rx.close();
                while let Some(cmd) = rx.recv().await {
                    cmd.refuse(&e);
                }
                return;
            }
        };
        task.run(rx).await;
    }

    async fn load(hub: Arc<Inner>, id: String, generation: u64) -> Result<Self, HubError> {
        let snap = hub.store.load(&id).await?.ok_or(HubError::NotFound)?;
        // Subscribe before reading the log, so nothing falls between.
        let sub = hub.bus.subscribe(&id).await?;
        let outbox = Outbox::spawn(&hub, &id);
        let mut task = DocTask {
            state: DocState::new(&snap.content, snap.version, hub.settings.history_retain),
            clients: {
                let mut seqs = ClientSeqs::new(hub.settings.max_clients_per_doc);
                for c in &snap.clients {
                    seqs.record(&c.client, c.seq, c.version);
                }
                seqs
            },
            unsaved: Unsaved {
                version: snap.version,
                journal: Vec::new(),
                clients: Vec::new(),
            },
            id,
            generation,
            hub: hub.clone(),
            room: Room {
                idle_since: Some(Instant::now()),
                ..Room::default()
            },
            sub,
            outbox,
            catch_up_retry: None,
            deleted: false,
            meta: MetaState::default(),
            edits: Edits::new(
                hub.settings.max_doc_chars,
                hub.settings
                    .commit_leader
                    .map(|ttl| (hub.settings.instance_id.clone(), ttl)),
            ),
            epoch: snap.epoch.clone(),
        };
        task.meta = MetaState::load(&hub, &task.id).await?;
        // The journal may be ahead of the snapshot: replayed a bounded page
        // at a time.
        loop {
            let recs = hub
                .store
                .journal_after(&task.id, task.state.version(), 10_000, 8 * 1024 * 1024)
                .await?;
            if recs.is_empty() {
                break;
            }
            for r in recs {
                task.apply_quiet(Arc::new(r))?;
            }
        }
        task.unsaved.version = task.state.version();
        let seed = Seed {
            version: task.state.version(),
            records: Vec::new(),
            clients: task.all_client_seqs(),
            epoch: snap.epoch,
            live: false,
        };
        let seeded = match hub.sequencer.seed(&task.id, &seed).await? {
            SeedReply::Seeded(s) => s,
            // A load seeds no records: nothing to conflict with.
            SeedReply::Conflict => {
                return Err(HubError::Diverged("a load's seed conflicted".into()))
            }
        };
        task.epoch = seeded.epoch;
        if seeded.head > task.state.version() {
            task.catch_up().await?;
        }
        let (live, _) = hub.bus.presence_list(&task.id, (hub.clock)()).await?;
        for e in live
            .into_iter()
            .filter(|e| e.instance != hub.settings.instance_id)
        {
            task.room
                .remote
                .insert(e.presence.client.clone(), e.presence);
        }
        task.load_awareness().await;
        info!(
            version = task.state.version(),
            chars = task.state.len_chars(),
            epoch = %task.epoch,
            "document loaded"
        );
        Ok(task)
    }

    /// Every client's mark, for a seed.
    pub(super) fn all_client_seqs(&self) -> Vec<ClientSeq> {
        self.clients
            .iter()
            .map(|(c, &(seq, version))| ClientSeq {
                client: c.clone(),
                seq,
                version,
            })
            .collect()
    }

    pub(super) fn client_seqs<'a>(&self, ids: impl Iterator<Item = &'a String>) -> Vec<ClientSeq> {
        ids.filter_map(|c| {
            self.clients.get(c).map(|(seq, version)| ClientSeq {
                client: c.clone(),
                seq,
                version,
            })
        })
        .collect()
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut tick = tokio::time::interval(self.hub.settings.snapshot_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut heartbeat = tokio::time::interval(self.hub.settings.presence_ttl / 3);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        let cancel = self.hub.cancel.clone();
        let mut round: Option<RoundFuture> = None;
        let stop = loop {
            if round.is_none() {
                match self.start_round().await {
                    Ok(r) => round = r,
                    Err(e) => {
                        error!(error = %e, "document state lost; resetting");
                        break Stop::Reset;
                    }
                }
            }
            let wake = self.lease_wake();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break Stop::Shutdown,
                outcome = round_done(&mut round) => {
                    round = None;
                    if let Err(e) = self.finish_round(outcome).await {
                        error!(error = %e, "document state lost; resetting");
                        break Stop::Reset;
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(cmd) => {
                        if let Err(e) = self.handle(cmd).await {
                            error!(error = %e, "document state lost; resetting");
                            break Stop::Reset;
                        }
                    }
                    None => break Stop::Shutdown,
                },
                ev = self.sub.recv() => {
                    if let Err(e) = self.handle_bus(ev).await {
                        error!(error = %e, "document state lost; resetting");
                        break Stop::Reset;
                    }
                    if self.deleted {
                        break Stop::Deleted;
                    }
                }
                _ = tokio::time::sleep_until(
                    self.catch_up_retry.map_or_else(tokio::time::Instant::now, |(at, _)| at)
                ), if self.catch_up_retry.is_some() => {
                    if let Err(e) = self.refill().await {
                        error!(error = %e, "document state lost; resetting");
                        break Stop::Reset;
                    }
                }
                // A forward to resend, a lease to ask for: the loop polls.
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)),
                    if wake.is_some() => {}
                _ = heartbeat.tick() => self.heartbeat().await,
                _ = tick.tick() => {
                    self.sweep_closed();
                    self.offer_persist();
                    if let Err(e) = self.store_meta().await {
                        warn!(error = %e, "metadata not stored; retrying next tick");
                    }
                    if self.idle_for() >= self.hub.settings.idle_unload && self.try_unload(&rx).await {
                        break Stop::Unloaded;
                    }
                }
            }
        };
        // Let the round in flight end, so what it committed is applied (and
        // persisted below) and its edits answered.
        if let Some(f) = round.take() {
            let outcome = tokio::time::timeout(ROUND_GRACE, f)
                .await
                .unwrap_or_else(|_| Err(BusError::Unavailable("round timed out".into())));
            if let Err(e) = self.finish_round(outcome).await {
                warn!(error = %e, "the last commit round failed");
            }
        }
        self.refuse_queue().await;
        match stop {
            Stop::Unloaded => info!("document unloaded"),
            Stop::Shutdown => {
                self.release_lease().await;
                if let Some(job) = self.persist_job() {
                    self.hub.persister.put(job).await;
                }
                if let Err(e) = self.store_meta().await {
                    warn!(error = %e, "metadata not stored at shutdown");
                }
                self.close_all(close::GOING_AWAY, "server shutting down; reconnect");
                self.hub.unregister(&self.id, self.generation);
            }
            Stop::Reset => {
                self.close_all(close::TRY_AGAIN, "document reloading; reconnect");
                self.hub.unregister(&self.id, self.generation);
            }
            Stop::Deleted => {
                info!("document deleted");
                self.hub.unregister(&self.id, self.generation);
                self.hub.sequencer.evict(&self.id).await;
            }
        }
    }

    async fn handle(&mut self, cmd: Cmd) -> Result<(), HubError> {
        match cmd {
            Cmd::Join {
                conn,
                resume,
                reply,
            } => self.join(*conn, resume, reply).await?,
            Cmd::Leave(id) => self.drop_conns(&[id], "left"),
            Cmd::Edit { origin, edit, span } => self.edit(origin, edit, span).await?,
            Cmd::Cursor {
                conn,
                version,
                anchor,
                head,
            } => self.cursor(conn, version, anchor, head),
            Cmd::Awareness {
                conn,
                state,
                presence,
            } => self.awareness(conn, state, presence),
            Cmd::Undo { conn, redo } => self.queue_undo(conn, redo).await?,
            Cmd::Meta(change, reply) => {
                let r = self.change_meta(change).await;
                let _ = reply.send(r);
            }
            Cmd::Records {
                since,
                limit,
                max_bytes,
                reply,
            } => {
                let r = self.records(since, limit, max_bytes).await;
                let _ = reply.send(r.map(|v| (self.state.version(), v)));
            }
            Cmd::View(reply) => {
                let _ = reply.send(Ok(DocView {
                    content: self.state.content(),
                    version: self.state.version(),
                    meta: self.meta_view(),
                }));
            }
            Cmd::Users(reply) => {
                let _ = reply.send(Ok(self.users()));
            }
        }
        Ok(())
    }

    async fn handle_bus(&mut self, ev: BusRecv) -> Result<(), HubError> {
        let ev = match ev {
            BusRecv::Event(ev) => ev,
            BusRecv::Lagged => {
                self.edits.pipeline.resync();
                return self.refill().await;
            }
            BusRecv::Closed => {
                // The bus is gone (shutdown or backend swap): resubscribe.
                self.sub = self.hub.bus.subscribe(&self.id).await?;
                return self.refill().await;
            }
        };
        let me = &self.hub.settings.instance_id;
        match &*ev {
            BusEvent::Committed(recs) => {
                for r in recs {
                    self.ingest(r.clone()).await?;
                }
            }
            BusEvent::Resync => {
                self.edits.pipeline.resync();
                self.refill().await?
            }
            BusEvent::Forward { from, to, edits } => {
                self.take_forward(from, to, edits.clone()).await?
            }
            BusEvent::Verdicts { to, items } if to == me => {
                self.take_verdicts(items.clone()).await?
            }
            BusEvent::Leader { token } => {
                let now = (self.hub.clock)();
                self.edits.pipeline.leader_event(token, now);
            }
            BusEvent::Access(change) => self.access_changed(change),
            BusEvent::Meta { instance, state } if instance != me => self.merge_meta(state),
            BusEvent::Joined { instance, presence } if instance != me => {
                self.remote_joined(presence.clone())
            }
            BusEvent::Left { instance, presence } if instance != me => self.remote_left(presence),
            BusEvent::Cursor { instance, cursor } if instance != me => self.remote_cursor(cursor),
            BusEvent::Awareness { instance, info } if instance != me => self.remote_awareness(info),
            _ => {}
        }
        Ok(())
    }

    fn idle_for(&self) -> Duration {
        self.room
            .idle_since
            .map_or(Duration::ZERO, |t: Instant| t.elapsed())
    }

    /// Flush, then leave the registry if nothing arrived meanwhile.
    async fn try_unload(&mut self, rx: &mpsc::Receiver<Cmd>) -> bool {
        if self.store_meta().await.is_err() {
            return false;
        }
        if let Some(job) = self.persist_job() {
            if !self.hub.persister.put(job).await {
                return false;
            }
            self.mark_persisted();
        }
        if !self.hub.persister.flush().await {
            return false;
        }
        let busy = || !rx.is_empty() || !self.room.conns.is_empty() || !self.edits.is_idle();
        if !self.hub.unregister_unless(&self.id, self.generation, busy) {
            return false;
        }
        self.release_lease().await;
        self.hub.sequencer.evict(&self.id).await;
        true
    }

    fn close_all(&mut self, code: u16, reason: &'static str) {
        for c in self.room.conns.drain(..) {
            let _ = c.tx.try_send(Outbound::Close(code, reason));
        }
    }

    // ---- persistence hand-off ----

    fn persist_job(&self) -> Option<DocPersist> {
        if self.state.version() <= self.unsaved.version && self.unsaved.clients.is_empty() {
            return None;
        }
        Some(DocPersist {
            doc: self.id.clone(),
            version: self.state.version(),
            content: self.state.content(),
            journal: self.unsaved.journal.clone(),
            clients: self.client_seqs(self.unsaved.clients.iter()),
            max_clients: self.hub.settings.max_clients_per_doc,
        })
    }

    fn mark_persisted(&mut self) {
        self.unsaved.version = self.state.version();
        self.unsaved.journal.clear();
        self.unsaved.clients.clear();
    }

    fn offer_persist(&mut self) {
        let lag = self.state.version().saturating_sub(self.unsaved.version);
        metrics::histogram!("tandem_snapshot_lag_versions").record(lag as f64);
        if let Some(job) = self.persist_job() {
            if self.hub.persister.offer(job) {
                self.mark_persisted();
            }
        }
    }
}
