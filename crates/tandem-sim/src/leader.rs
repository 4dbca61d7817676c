//! The world's side of one committer per document: lease calls to the
//! model sequencer, forwards and verdicts on the bus (at most once, like
//! pub/sub), instance timers, and instances frozen past their lease.
//!
//! Must not import: anything that does I/O.

use rand::Rng;
use tandem_core::pipeline::{EditId, Forwarded, LeaseSettings, Verdict};

use crate::events::Ev;
use crate::instance::Origin;
use crate::world::{Config, World, MS};

/// The lease's length (ms), as `LEADER_LEASE_MS`.
pub(crate) const LEASE_TTL_MS: i64 = 2_000;

/// With leases on (`cfg`), instance `i`'s settings (its id outlives
/// restarts).
pub(crate) fn lease_settings(cfg: &Config, i: usize) -> Option<LeaseSettings> {
    cfg.leases.then(|| LeaseSettings {
        instance: format!("i{i}"),
        ttl_ms: LEASE_TTL_MS,
    })
}

impl World {
    /// `lease.lua` at the sequencer (the reply may be lost).
    pub(crate) fn lease_call(&mut self, i: usize, inc: u64, nonce: u64) {
        if self.cfg.faults && self.rng.gen_bool(0.01) {
            return self.lose_reply(Ev::LeaseReply {
                i,
                inc,
                reply: None,
            });
        }
        let reply = self
            .seq
            .acquire(&format!("i{i}"), nonce, self.now, LEASE_TTL_MS * MS);
        let d = self.delay();
        let reply = Some(reply);
        self.at(d, Ev::LeaseReply { i, inc, reply });
    }

    /// Publish a forward: every live instance receives it (or drops it).
    pub(crate) fn forward(&mut self, from: usize, to: String, edits: Vec<Forwarded>) {
        self.report.forwards += 1;
        for i in 0..self.inst.len() {
            if i == from || (self.cfg.faults && self.rng.gen_bool(0.02)) {
                continue;
            }
            let d = self.delay();
            let (to, edits) = (to.clone(), edits.clone());
            self.ordered((4, from, i), d, Ev::Forward { i, from, to, edits });
        }
    }

    pub(crate) fn send_verdict(&mut self, to: usize, client: String, seq: u64, verdict: Verdict) {
        if self.cfg.faults && self.rng.gen_bool(0.02) {
            return;
        }
        let d = self.delay();
        self.at(
            d,
            Ev::Verdict {
                i: to,
                client,
                seq,
                verdict,
            },
        );
    }

    /// Edits forwarded to instance `i`: taken if it holds the lease they
    /// name.
    pub(crate) fn take_forward(
        &mut self,
        i: usize,
        from: usize,
        to: &str,
        edits: Vec<Forwarded>,
    ) -> Result<(), String> {
        if self.inst[i].pipeline.token_is(to) {
            for f in edits {
                if f.base > self.inst[i].state.version() {
                    self.refill(i)?;
                }
                let x = &mut self.inst[i];
                x.next_id += 1;
                let id = EditId(x.next_id);
                let origin = Origin::Remote {
                    from,
                    client: f.client.clone(),
                    seq: f.seq,
                };
                let mut out = Vec::new();
                if x.pipeline.submit_forwarded(id, f, &mut out) {
                    x.tracked.insert(id, origin);
                }
                self.exec(i, out)?;
            }
        }
        self.poll(i)
    }

    /// Schedule the instance's next timer, if its pipeline wants one
    /// earlier than the one set.
    pub(crate) fn arm(&mut self, i: usize) {
        let Some(at) = self.inst[i].pipeline.next_wake() else {
            return;
        };
        let at = at * MS;
        if at <= self.now {
            // Due now: the poll after this event saw it.
            return;
        }
        if self.inst[i].wake_at.is_none_or(|w| w > at || w < self.now) {
            self.inst[i].wake_at = Some(at);
            self.at(at - self.now, Ev::Wake(i));
        }
    }

    /// Freeze an instance past its lease (SIGSTOP, then SIGCONT).
    pub(crate) fn pause(&mut self, i: usize) {
        let until = self.now + self.rng.gen_range(500 * MS..4_000 * MS);
        self.inst[i].paused_until = until;
        self.report.pauses += 1;
    }
}
