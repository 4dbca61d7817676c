//! One committer per document: the commit lease as the pipeline sees it.
//! With leases on, an instance commits only while it holds the document's
//! lease (its batches carry the token, which the sequencer checks: a
//! fenced round appends nothing). Every other instance forwards its
//! clients' edits to the holder and answers them when their records
//! arrive (or the holder's verdicts do), resending what stays unanswered.
//! A follower that hears nothing from the holder for a lease's length
//! asks for the lease itself.
//!
//! Must not import: anything that does I/O (this is the pure core).

use std::collections::BTreeMap;

use super::{Author, EditId, Effect, Kind, Pipeline, Queued, Verdict, Waiting};
use crate::commit::LeaseReply;
use crate::ot::Operation;
use crate::protocol::Role;
use crate::undo::Stack;

/// A forwarded edit unanswered this long is sent again.
pub const FORWARD_RESEND_MS: i64 = 1_000;
/// A leader stops starting rounds this long before its lease ends by its
/// own clock (the sequencer's clock decides; this keeps it off the edge).
const LEASE_MARGIN_MS: i64 = 250;
/// After a failed acquire, ask again after this long.
const ACQUIRE_RETRY_MS: i64 = 100;
/// Most edits one forward carries.
const MAX_FORWARD: usize = 256;

/// Leases on: who this instance is, and how long a lease lasts.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub instance: String,
    pub ttl_ms: i64,
}

/// Where this instance stands with the document's lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    /// No leases: this instance commits directly (embedded, or leases off).
    Solo,
    /// Nobody known: acquire when there is work, not before `after`.
    Unknown { after: i64 },
    /// An acquire is in flight, sent at `sent`.
    Acquiring { sent: i64 },
    /// Ours: rounds carry `token` until `valid_until` (our clock).
    Leader { token: String, valid_until: i64 },
    /// `holder`'s (a token): our edits go there; past `until` without a
    /// sign of it, we ask for the lease ourselves.
    Follower { holder: String, until: i64 },
}

/// An edit on its way to the leader (what a forward carries).
#[derive(Clone, Debug, PartialEq)]
pub struct Forwarded {
    pub client: String,
    pub user: String,
    pub role: Role,
    pub seq: u64,
    pub base: u64,
    pub op: Operation,
    /// An undo or redo step (its text yields at a tie; its inverse goes on
    /// the other stack): the stack it came from.
    pub step: Option<Stack>,
}

/// A forwarded edit waiting for its answer.
#[derive(Debug)]
pub(super) struct Pending {
    q: Queued,
    sent_at: i64,
}

/// Forwarded edits by `(client, seq)`.
pub(super) type PendingMap = BTreeMap<(String, u64), Pending>;

impl Pipeline {
    /// Leases on: this instance commits only while it holds the lease.
    pub fn with_leases(mut self, lease: LeaseSettings) -> Self {
        self.lease = Lease::Unknown { after: i64::MIN };
        self.leases = Some(lease);
        self
    }

    /// Where this instance stands with the lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Whether this instance holds the lease named by `token`.
    pub fn token_is(&self, token: &str) -> bool {
        matches!(&self.lease, Lease::Leader { token: t, .. } if t == token)
    }

    /// The lease's token when this instance holds it (batches carry it).
    pub(super) fn token(&self) -> Option<String> {
        match &self.lease {
            Lease::Solo => Some(String::new()),
            Lease::Leader { token, .. } => Some(token.clone()),
            _ => None,
        }
    }

    /// With leases: what to do instead of building a round; true when the
    /// poll is done (acquire, forward, wait).
    pub(super) fn lease_step(&mut self, now: i64, out: &mut Vec<Effect>) -> bool {
        if self.leases.is_none() {
            return false;
        }
        let work = !self.queue.is_empty() || !self.pending.is_empty();
        match &self.lease {
            Lease::Solo | Lease::Acquiring { .. } => {
                return matches!(self.lease, Lease::Acquiring { .. })
            }
            Lease::Leader { valid_until, .. } if now < *valid_until => return false,
            Lease::Leader { .. } => self.lease = Lease::Unknown { after: now },
            Lease::Follower { until, .. } if now >= *until && work => {
                self.lease = Lease::Unknown { after: now }
            }
            Lease::Follower { .. } | Lease::Unknown { .. } => {}
        }
        match self.lease.clone() {
            Lease::Unknown { after } if work && now >= after => {
                self.lease = Lease::Acquiring { sent: now };
                let nonce = self.draw(u64::MAX - 1);
                out.push(Effect::Acquire { nonce });
            }
            Lease::Follower { holder, .. } => self.forward(&holder, now, out),
            _ => {}
        }
        true
    }

    /// A follower's poll: the queue's edits (an undo's step popped first)
    /// go to the holder, with those unanswered past their resend time.
    fn forward(&mut self, holder: &str, now: i64, out: &mut Vec<Effect>) {
        let mut edits = Vec::new();
        let resend_all = std::mem::take(&mut self.resend_all);
        let mut oldest: Option<i64> = None;
        for p in self.pending.values_mut() {
            if (resend_all || now - p.sent_at >= FORWARD_RESEND_MS) && edits.len() < MAX_FORWARD {
                p.sent_at = now;
                edits.push(forwarded(&p.q));
            }
            oldest = Some(oldest.map_or(p.sent_at, |o| o.min(p.sent_at)));
        }
        while edits.len() < MAX_FORWARD {
            match self.queue.front() {
                Some(Waiting::Edit(_)) => {}
                // An undo's step is popped by the caller first.
                _ => break,
            }
            let Some(Waiting::Edit(q)) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= q.bytes;
            edits.push(forwarded(&q));
            let key = (q.author.client.clone(), q.seq);
            self.pending.insert(
                key,
                Pending {
                    q: *q,
                    sent_at: now,
                },
            );
            oldest.get_or_insert(now);
        }
        self.oldest_sent = oldest;
        if !edits.is_empty() {
            let to = holder.to_owned();
            out.push(Effect::Forward { to, edits });
        }
    }

    /// The answer to [`Effect::Acquire`] (`None`: the call failed).
    pub fn lease_reply(&mut self, reply: Option<LeaseReply>, now: i64, out: &mut Vec<Effect>) {
        let (Some(ttl), Lease::Acquiring { sent }) =
            (self.leases.as_ref().map(|l| l.ttl_ms), &self.lease)
        else {
            return;
        };
        let sent = *sent;
        self.lease = match reply {
            Some(LeaseReply::Granted { token }) => {
                // Ours from when we asked. What we forwarded is ours to
                // commit now (a resend of what the last holder committed is
                // answered as one), once we hold everything committed.
                let pending = std::mem::take(&mut self.pending);
                self.requeue(pending.into_values().map(|p| p.q));
                out.push(Effect::Refill);
                Lease::Leader {
                    token,
                    valid_until: sent + ttl - LEASE_MARGIN_MS,
                }
            }
            Some(LeaseReply::Held { token, left }) => {
                self.resend_all = true;
                let jitter = self.draw(100) as i64;
                Lease::Follower {
                    holder: token,
                    until: now + left.as_millis() as i64 + jitter,
                }
            }
            _ => Lease::Unknown {
                after: now + ACQUIRE_RETRY_MS,
            },
        };
    }

    /// A record was applied (whoever committed it): the leader is alive,
    /// and a forwarded edit it commits is answered.
    pub fn applied(
        &mut self,
        client: &str,
        seq: u64,
        version: u64,
        now: i64,
        out: &mut Vec<Effect>,
    ) {
        self.leader_seen(now);
        if let Some(p) = self.pending.remove(&(client.to_owned(), seq)) {
            let verdict = Verdict::Committed(version);
            out.push(Effect::Answer {
                id: p.q.id,
                verdict,
            });
        }
    }

    /// The leader's verdict on a forwarded edit it did not commit.
    pub fn verdict(
        &mut self,
        client: &str,
        seq: u64,
        verdict: Verdict,
        now: i64,
        out: &mut Vec<Effect>,
    ) {
        self.leader_seen(now);
        let Some(p) = self.pending.remove(&(client.to_owned(), seq)) else {
            return;
        };
        // An `Unchanged` names the leader's head: the task acknowledges
        // once it holds that version, at its own head.
        out.push(Effect::Answer {
            id: p.q.id,
            verdict,
        });
    }

    /// The sequencer told every instance the lease was granted (`token`)
    /// or released (empty): follow the new holder at once, or ask for it.
    pub fn leader_event(&mut self, token: &str, now: i64) {
        let Some(ttl) = self.leases.as_ref().map(|l| l.ttl_ms) else {
            return;
        };
        match &self.lease {
            Lease::Leader { token: mine, .. } if mine == token => {}
            Lease::Acquiring { .. } => {}
            _ if token.is_empty() => {
                let jitter = self.draw(50) as i64;
                self.lease = Lease::Unknown {
                    after: now + jitter,
                };
            }
            _ => {
                self.resend_all = true;
                self.lease = Lease::Follower {
                    holder: token.to_owned(),
                    until: now + ttl,
                };
            }
        }
    }

    /// The bus dropped messages (a resubscribe): forward everything
    /// unanswered again.
    pub fn resync(&mut self) {
        self.resend_all = true;
    }

    /// An edit forwarded to us. False when it is not ours to take (we do
    /// not hold the lease: its sender resends to whoever does) or a copy
    /// of it already waits here (the copy's answer serves).
    pub fn submit_forwarded(&mut self, id: EditId, f: Forwarded, out: &mut Vec<Effect>) -> bool {
        if !matches!(self.lease, Lease::Leader { .. }) {
            return false;
        }
        let waiting = |q: &Queued| q.author.client == f.client && q.seq == f.seq;
        let queued = self
            .queue
            .iter()
            .any(|w| matches!(w, Waiting::Edit(q) if waiting(q)));
        let in_round = self
            .round
            .as_ref()
            .is_some_and(|r| r.items.iter().any(waiting));
        if queued || in_round {
            return false;
        }
        let kind = f.step.map_or(Kind::Edit, |from| Kind::Step { from });
        let author = Author {
            client: f.client,
            user: f.user,
            role: f.role,
        };
        self.enqueue(id, author, f.seq, f.base, f.op, kind, out);
        true
    }

    /// When the pipeline next needs a poll without any event (a resend, a
    /// lease to ask for), on its clock.
    pub fn next_wake(&self) -> Option<i64> {
        if self.round.is_some() {
            // Its reply comes first.
            return None;
        }
        let work = !self.queue.is_empty() || !self.pending.is_empty();
        match &self.lease {
            Lease::Follower { until, .. } => {
                // Kept by `forward` (an answer since may make it early:
                // that poll finds nothing due and moves it on).
                let resend = self
                    .oldest_sent
                    .filter(|_| !self.pending.is_empty())
                    .map(|sent| sent + FORWARD_RESEND_MS);
                [resend, work.then_some(*until)].into_iter().flatten().min()
            }
            Lease::Unknown { after } if work => Some(*after),
            Lease::Leader { valid_until, .. } if work => Some(*valid_until),
            _ => None,
        }
    }

    /// A round the lease holder's sequencer answered (ok, dup, stale)
    /// proves the lease ours from when it was sent.
    pub(super) fn extended(&mut self, sent: i64) {
        let ttl = self.leases.as_ref().map_or(0, |l| l.ttl_ms);
        if let Lease::Leader { valid_until, .. } = &mut self.lease {
            *valid_until = (*valid_until).max(sent + ttl - LEASE_MARGIN_MS);
        }
    }

    /// A fenced round: someone else holds the lease (or nobody).
    pub(super) fn fenced(&mut self, holder: String, left_ms: i64, now: i64) {
        if self.leases.is_none() {
            return;
        }
        self.resend_all = true;
        self.lease = if holder.is_empty() {
            Lease::Unknown { after: now }
        } else {
            Lease::Follower {
                holder,
                until: now + left_ms,
            }
        };
    }

    fn leader_seen(&mut self, now: i64) {
        let ttl = self.leases.as_ref().map_or(0, |l| l.ttl_ms);
        if let Lease::Follower { until, .. } = &mut self.lease {
            *until = (*until).max(now + ttl);
        }
    }

    /// The ids of forwarded edits still unanswered (a stopping task).
    pub(super) fn drain_pending(&mut self) -> Vec<EditId> {
        std::mem::take(&mut self.pending)
            .into_values()
            .map(|p| p.q.id)
            .collect()
    }
}

fn forwarded(q: &Queued) -> Forwarded {
    Forwarded {
        client: q.author.client.clone(),
        user: q.author.user.clone(),
        role: q.author.role,
        seq: q.seq,
        base: q.base,
        op: q.op.clone(),
        step: match q.kind {
            Kind::Step { from } => Some(from),
            Kind::Edit => None,
        },
    }
}
