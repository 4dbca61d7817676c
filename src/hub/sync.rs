//! Ordered application of committed records: every record, whether this
//! instance committed it, the bus delivered it or a refill fetched it, is
//! applied in version order (a gap triggers a refill from the sequencer's
//! log) and then fanned out; one at a version already applied must be the
//! record we hold there, else the histories forked and the task resets.
//! Re-seeds a sequencer that lost the document, and keeps the epoch it
//! answers with.
//! An `impl DocTask` file. Imports from the hub: the leaves and `task` only.
//! Must not import: axum, sqlx, redis, the other `impl DocTask` files.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::task::DocTask;
use super::types::{is_transient, HubError};
use crate::bus::{Range, Seed, SeedReply};
use crate::doc::{ApplyOutcome, Record};

/// The first retry of a failed refill, soon: after a backend restart this
/// instance's records must reach the sequencer within its settle window.
pub(super) const CATCH_UP_FIRST: Duration = Duration::from_millis(100);
/// Retries of a failed refill back off to this.
const CATCH_UP_MAX: Duration = Duration::from_secs(2);

impl DocTask {
    /// Apply a record in order without telling anyone (loading); false if
    /// it was already applied.
    pub(super) fn apply_quiet(&mut self, rec: Arc<Record>) -> Result<bool, HubError> {
        match self.state.apply(rec.clone()) {
            Ok(ApplyOutcome::Applied) => {
                self.clients.record(&rec.client, rec.seq, rec.version);
                let now = (self.hub.clock)();
                self.edits.applied(&rec.client, rec.seq, rec.version, now);
                // Server-minted ids are resent only by this server's own
                // retries: the store need not keep them.
                if !crate::doc::is_ephemeral(&rec.client)
                    && !self.unsaved.clients.contains(&rec.client)
                {
                    self.unsaved.clients.push(rec.client.clone());
                }
                if !self.hub.sequencer.journals() {
                    self.unsaved.journal.push(rec);
                }
                Ok(true)
            }
            Ok(ApplyOutcome::Old) => self.check_same(&rec).map(|()| false),
            Ok(ApplyOutcome::Gap { head }) => Err(HubError::Diverged(format!(
                "gap: head {head}, got {}",
                rec.version
            ))),
            Err(e) => Err(HubError::Diverged(format!(
                "record {} does not apply: {e}",
                rec.version
            ))),
        }
    }

    /// A record at a version we already hold must be the one we hold (the
    /// same `(client, seq)`), as far as our history reaches back. Anything
    /// else means the sequencer lost records and handed their versions out
    /// again (a fork): ignoring it would apply the rest of that history on
    /// top of ours. The task resets; its clients resume onto the new history.
    fn check_same(&self, rec: &Record) -> Result<(), HubError> {
        match self.state.history().get(rec.version) {
            Some(mine) if (mine.client.as_str(), mine.seq) != (rec.client.as_str(), rec.seq) => {
                metrics::counter!("tandem_forks_total").increment(1);
                Err(HubError::Diverged(format!(
                    "the sequencer's history forked from ours at version {}",
                    rec.version
                )))
            }
            _ => Ok(()),
        }
    }

    /// Apply a committed record and fan it out; refill first on a gap.
    pub(super) async fn ingest(&mut self, rec: Arc<Record>) -> Result<(), HubError> {
        if rec.version > self.state.version() + 1 {
            self.refill().await?;
            if rec.version > self.state.version() + 1 {
                // Backend down: the record waits for the next refill.
                return Ok(());
            }
        }
        self.apply_and_fanout(rec)
    }

    fn apply_and_fanout(&mut self, rec: Arc<Record>) -> Result<(), HubError> {
        if self.apply_quiet(rec.clone())? {
            self.fanout(&rec);
        }
        Ok(())
    }

    /// [`Self::catch_up`], but a backend outage only marks the document for a
    /// retry on the next tick. Errors that remain mean the state is lost.
    pub(super) async fn refill(&mut self) -> Result<(), HubError> {
        match self.catch_up().await {
            Err(e) if is_transient(&e) => {
                if !self.needs_catch_up() {
                    warn!(error = %e, "refill failed; will retry");
                }
                let backoff = self
                    .catch_up_retry
                    .map_or(CATCH_UP_FIRST, |(_, b)| (b * 2).min(CATCH_UP_MAX));
                self.catch_up_retry = Some((tokio::time::Instant::now() + backoff, backoff));
                Ok(())
            }
            r => {
                self.catch_up_retry = None;
                r
            }
        }
    }

    /// A refill failed and waits for its retry.
    pub(super) fn needs_catch_up(&self) -> bool {
        self.catch_up_retry.is_some()
    }

    /// Pull every record after our head from the sequencer's log; re-seed
    /// the sequencer if it lost the document.
    pub(super) async fn catch_up(&mut self) -> Result<(), HubError> {
        let after = self.state.version();
        // Records of another history (Redis lost ours and someone re-seeded
        // it) are read only once our re-seed has shown that ours continues
        // in it: applied on a head they do not follow, they would corrupt
        // the text.
        let seq = &self.hub.sequencer;
        let mut range = seq.ops_since(&self.id, after, &self.epoch).await?;
        if let Range::NotSeeded = range {
            self.reseed().await?;
            let seq = &self.hub.sequencer;
            range = seq
                .ops_since(&self.id, self.state.version(), &self.epoch)
                .await?;
        }
        let recs = match range {
            Range::Records(recs) => recs,
            Range::Trimmed => {
                let m = format!("op log no longer reaches version {after}");
                return Err(HubError::Diverged(m));
            }
            Range::NotSeeded => {
                let m = "the sequencer does not hold the document just seeded";
                return Err(HubError::Diverged(m.into()));
            }
        };
        if !recs.is_empty() {
            metrics::counter!("tandem_gap_refills_total").increment(1);
            debug!(from = after, count = recs.len(), "refilled from the op log");
        }
        for r in recs {
            self.apply_and_fanout(r)?;
        }
        Ok(())
    }

    /// The sequencer lost this document (e.g. Redis restarted empty): give it
    /// everything this instance knows — its history and client seqs.
    pub(super) async fn reseed(&mut self) -> Result<(), HubError> {
        let oldest = self.state.oldest();
        let seed = Seed {
            version: oldest,
            records: self
                .state
                .records_after(oldest)
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
            clients: self.all_client_seqs(),
            epoch: self.epoch.clone(),
            live: true,
        };
        let seeded = match self.hub.sequencer.seed(&self.id, &seed).await? {
            SeedReply::Seeded(s) => s,
            SeedReply::Conflict => {
                let m = "the seed conflicts with the sequencer's history";
                return Err(HubError::Diverged(m.into()));
            }
        };
        if seeded.head < self.state.version() {
            // Our history does not reach down to its head: nothing here can
            // continue it.
            return Err(HubError::Diverged(format!(
                "the sequencer's head {} is behind ours ({}) past what we retain",
                seeded.head,
                self.state.version()
            )));
        }
        warn!(
            version = self.state.version(),
            head = seeded.head,
            epoch = %seeded.epoch,
            was = %self.epoch,
            "re-seeded the sequencer"
        );
        // Usually a new epoch: whoever re-seeded first could not prove the
        // sequencer had nothing beyond what it knew. Our history continues
        // in it (the seed did not conflict), so connected clients stay;
        // resumes naming the old epoch get a full init.
        self.epoch = seeded.epoch;
        metrics::counter!("tandem_reseeds_total").increment(1);
        Ok(())
    }
}
