//! The sequencer as a model: one document's op log and client marks, with
//! `commit.lua`'s checks in its order (per-record dedupe, then the version
//! check, then append). What the simulated instances call instead of Redis.
//!
//! Must not import: anything that does I/O.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use tandem_core::commit::{CommitBatch, CommitReply, LeaseReply};
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
    /// Rounds refused for a token that is not the lease.
    pub fenced: u64,
    /// The commit lease: its token and when it expires (µs, the
    /// sequencer's clock), and the last term granted.
    lease: Option<(String, i64)>,
    term: u64,
}

impl SeqModel {
    pub fn head(&self) -> u64 {
        self.log.len() as u64
    }

    pub fn log(&self) -> &[Arc<Record>] {
        &self.log
    }

    /// `lease.lua` acquire at `now` (µs).
    pub fn acquire(&mut self, instance: &str, nonce: u64, now: i64, ttl: i64) -> LeaseReply {
        if let Some((token, until)) = &self.lease {
            if *until > now {
                let left = Duration::from_micros((until - now) as u64);
                let token = token.clone();
                return LeaseReply::Held { token, left };
            }
        }
        self.term += 1;
        let token = format!("{}:{instance}:{nonce:x}", self.term);
        self.lease = Some((token.clone(), now + ttl));
        LeaseReply::Granted { token }
    }

    /// Dedupe, check the base, append; with a token, only the lease's
    /// (and a commit, dup or stale reply extends it by `ttl`).
    pub fn commit(&mut self, batch: &CommitBatch, now: i64, ttl: i64) -> CommitReply {
        if !batch.token.is_empty() {
            let holder = match &self.lease {
                Some((t, until)) if *until > now => Some((t.clone(), *until)),
                _ => None,
            };
            match holder {
                Some((t, until)) if t == batch.token => {
                    self.lease = Some((t, until.max(now + ttl)))
                }
                other => {
                    self.fenced += 1;
                    let (holder, left) = other.map_or((String::new(), 0), |(t, u)| (t, u - now));
                    let left = Duration::from_micros(left as u64);
                    return CommitReply::Fenced { holder, left };
                }
            }
        }
        self.check_and_append(batch)
    }

    fn check_and_append(&mut self, batch: &CommitBatch) -> CommitReply {
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
