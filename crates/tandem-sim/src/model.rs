//! The sequencer as a model: one document's op log and client marks, with
//! `commit.lua`'s checks in its order (per-record dedupe, then the version
//! check, then append). What the simulated instances call instead of Redis.
//!
//! Must not import: anything that does I/O.

use std::collections::HashMap;
use std::sync::Arc;

use tandem_core::commit::{CommitBatch, CommitReply};
use tandem_core::doc::Record;

/// One document's log, as the sequencer holds it.
#[derive(Debug, Default)]
pub struct SeqModel {
    log: Vec<Arc<Record>>,
    /// Highest committed seq per client, and the version it produced.
    clients: HashMap<String, (u64, u64)>,
    /// Rounds answered stale (the race between instances).
    pub stale: u64,
    pub committed_rounds: u64,
    /// Rounds answered with resends named.
    pub duplicate_rounds: u64,
}

impl SeqModel {
    pub fn head(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn log(&self) -> &[Arc<Record>] {
        &self.log
    }

    /// Dedupe, check the base, append.
    pub fn commit(&mut self, batch: &CommitBatch) -> CommitReply {
        let dups: Vec<(usize, u64)> = batch
            .records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let &(seq, version) = self.clients.get(&r.client)?;
                (r.seq <= seq).then(|| (i, self.version_of(&r.client, r.seq).unwrap_or(version)))
            })
            .collect();
        if !dups.is_empty() {
            self.duplicate_rounds += 1;
            return CommitReply::Duplicates(dups);
        }
        if batch.base != self.head() {
            self.stale += 1;
            return CommitReply::Stale {
                missed: self.after(batch.base),
            };
        }
        let recs = batch.clone().into_records();
        for r in &recs {
            self.clients.insert(r.client.clone(), (r.seq, r.version));
            self.log.push(r.clone());
        }
        self.committed_rounds += 1;
        CommitReply::Committed(recs)
    }

    /// Records after `version`.
    pub fn after(&self, version: u64) -> Vec<Arc<Record>> {
        self.log
            .get(usize::try_from(version).unwrap_or(usize::MAX)..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    pub fn last_seq(&self, client: &str) -> Option<(u64, u64)> {
        self.clients.get(client).copied()
    }

    fn version_of(&self, client: &str, seq: u64) -> Option<u64> {
        self.log
            .iter()
            .find(|r| r.client == client && r.seq == seq)
            .map(|r| r.version)
    }
}
