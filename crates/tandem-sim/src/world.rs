//! The simulated world: an event queue on a virtual clock (µs), instances
//! executing the pipeline's effects, the model sequencer, the bus, clients,
//! and the faults drawn from the seed.
//!
//! Must not import: anything that does I/O.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem_core::client::{OtClient, Outgoing};
use tandem_core::commit::{CommitBatch, CommitReply};
use tandem_core::doc::{DocState, Record, Retain};
use tandem_core::ot::splice;
use tandem_core::pipeline::Outcome;

use crate::events::{Down, Ev};
use crate::instance::{Conn, Instance};
use crate::model::SeqModel;

/// What one schedule runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub instances: usize,
    pub clients: usize,
    pub edits_per_client: usize,
    /// Lost replies, lost calls, crashed instances (delays always vary).
    pub faults: bool,
    /// One committer per document (the commit lease), or every instance
    /// racing.
    pub leases: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            instances: 3,
            clients: 6,
            edits_per_client: 40,
            faults: true,
            leases: false,
        }
    }
}

/// What a schedule did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub rounds: u64,
    /// Rounds the sequencer answered stale: another instance won the race.
    pub stale: u64,
    /// Rounds the sequencer answered with resends named.
    pub duplicates: u64,
    pub edits: usize,
    pub crashes: u32,
    pub lost_replies: u32,
    pub lost_publishes: u32,
    pub blinks: u32,
    /// Forwards sent, rounds fenced, instances frozen.
    pub forwards: u64,
    pub fenced: u64,
    pub pauses: u32,
    /// Virtual time at quiescence (ms).
    pub end_ms: i64,
}

pub(crate) const MS: i64 = 1_000;
/// How long an instance waits for a reply before it counts an outage.
pub(crate) const REPLY_TIMEOUT: i64 = 2_000 * MS;
/// The end of the world: a schedule not quiet by then failed liveness.
const HORIZON: i64 = 600_000 * MS;
const ALPHABET: &[&str] = &["a", "b", "é", "中", "😀", "\n", " "];

pub(crate) struct Client {
    pub(crate) ot: OtClient,
    at: Option<(usize, u64)>,
    typed: usize,
}

pub(crate) struct World {
    pub(crate) cfg: Config,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) now: i64,
    pub(crate) queue: BinaryHeap<Reverse<(i64, u64)>>,
    pub(crate) events: HashMap<u64, Ev>,
    pub(crate) next_ev: u64,
    /// Last delivery time per ordered channel (a TCP connection, a
    /// subscription): messages on one never overtake each other.
    pub(crate) fifo: HashMap<(u8, usize, usize), i64>,
    pub(crate) seq: SeqModel,
    pub(crate) inst: Vec<Instance>,
    pub(crate) clients: Vec<Client>,
    pub(crate) acked: HashSet<(String, u64)>,
    pub(crate) next_conn: u64,
    pub(crate) report: Report,
    /// `TANDEM_SIM_TRACE` set: print every event.
    pub(crate) trace: bool,
}

/// Run one schedule from `seed`.
pub fn run(seed: u64, cfg: &Config) -> Result<Report, String> {
    let mut w = World::new(seed, cfg.clone());
    while let Some(Reverse((at, n))) = w.queue.pop() {
        w.now = at;
        if at > HORIZON {
            return Err(format!(
                "not quiet after {} s (liveness)",
                HORIZON / MS / 1000
            ));
        }
        let ev = w.events.remove(&n).ok_or("lost event")?;
        // A frozen instance gets nothing until it wakes.
        if let Some(i) = w.target(&ev) {
            let until = w.inst[i].paused_until;
            if until > w.now {
                w.at(until - w.now, ev);
                continue;
            }
        }
        if w.trace {
            eprintln!("{:>9} {}", w.now, ev.describe());
        }
        w.handle(ev)?;
        for i in 0..w.inst.len() {
            if w.inst[i].up {
                w.arm(i);
            }
        }
    }
    w.check()?;
    w.report.end_ms = w.now / MS;
    w.report.stale = w.seq.stale;
    w.report.duplicates = w.seq.duplicate_rounds;
    w.report.fenced = w.seq.fenced;
    Ok(w.report)
}

impl World {
    fn new(seed: u64, cfg: Config) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let inst = (0..cfg.instances)
            .map(|i| {
                let leases = crate::leader::lease_settings(&cfg, i);
                Instance::load(&SeqModel::default(), rng.gen(), leases)
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|c| Client {
                ot: OtClient::new(format!("c{c}"), "", 0, 0),
                at: None,
                typed: 0,
            })
            .collect();
        let mut w = World {
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_ev: 0,
            fifo: HashMap::new(),
            seq: SeqModel::default(),
            inst,
            clients,
            acked: HashSet::new(),
            next_conn: 0,
            report: Report::default(),
            trace: std::env::var_os("TANDEM_SIM_TRACE").is_some(),
            cfg,
        };
        for c in 0..w.cfg.clients {
            w.connect(c);
            let t = w.rng.gen_range(0..20 * MS);
            w.at(t, Ev::Type(c));
        }
        if w.cfg.faults && w.cfg.leases && w.rng.gen_bool(0.5) {
            let i = w.rng.gen_range(0..w.cfg.instances);
            let t = w.rng.gen_range(50 * MS..1_500 * MS);
            w.at(t, Ev::Pause(i));
        }
        if w.cfg.faults && w.rng.gen_bool(0.5) {
            let i = w.rng.gen_range(0..w.cfg.instances);
            let t = w.rng.gen_range(50 * MS..1_500 * MS);
            w.at(t, Ev::Crash(i));
        }
        w
    }

    pub(crate) fn at(&mut self, delay: i64, ev: Ev) {
        let n = self.next_ev;
        self.next_ev += 1;
        self.events.insert(n, ev);
        self.queue.push(Reverse((self.now + delay, n)));
    }

    /// Deliver on an ordered channel after a random delay.
    pub(crate) fn ordered(&mut self, chan: (u8, usize, usize), delay: i64, ev: Ev) {
        let at = (self.now + delay).max(self.fifo.get(&chan).copied().unwrap_or(0));
        self.fifo.insert(chan, at);
        self.at(at - self.now, ev);
    }

    pub(crate) fn delay(&mut self) -> i64 {
        // Mostly quick, sometimes slow (a busy core, a long GC).
        if self.rng.gen_bool(0.05) {
            self.rng.gen_range(20 * MS..300 * MS)
        } else {
            self.rng.gen_range(200..5 * MS)
        }
    }

    /// The instance an event happens on, if any.
    fn target(&self, ev: &Ev) -> Option<usize> {
        match ev {
            Ev::Up { c, .. } => self.clients[*c].at.map(|(i, _)| i),
            // A frozen process sends nothing either: a call it made just
            // before it froze leaves when it wakes (and may be fenced).
            Ev::Call { i, .. }
            | Ev::LeaseCall { i, .. }
            | Ev::Reply { i, .. }
            | Ev::Publish { i, .. }
            | Ev::LeaseReply { i, .. }
            | Ev::Forward { i, .. }
            | Ev::Verdict { i, .. }
            | Ev::Wake(i)
            | Ev::Resync(i) => Some(*i),
            _ => None,
        }
    }

    fn handle(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Type(c) => self.type_edit(c)?,
            Ev::Up { c, conn, out } => {
                let Some((i, cur)) = self.clients[c].at else {
                    return Ok(());
                };
                if cur == conn && self.inst[i].up {
                    self.submit(i, c, out)?;
                }
            }
            Ev::Down { c, conn, msg } => {
                if self.clients[c].at.map(|(_, k)| k) == Some(conn) {
                    self.client_gets(c, conn, msg)?;
                }
            }
            Ev::Call { i, inc, batch } => self.call(i, inc, &batch),
            Ev::Reply { i, inc, reply } => {
                if self.inst[i].up && self.inst[i].inc == inc {
                    let outcome = reply.map_or(Outcome::Outage, Outcome::Reply);
                    let mut out = Vec::new();
                    let now = self.now / MS;
                    self.inst[i].pipeline.finish(outcome, now, &mut out);
                    self.exec(i, out)?;
                    self.poll(i)?;
                }
            }
            Ev::Publish { i, recs } => {
                if self.inst[i].up {
                    for r in recs {
                        self.ingest(i, r)?;
                    }
                    self.poll(i)?;
                }
            }
            Ev::Crash(i) => self.crash(i),
            Ev::Restart(i) => {
                let inc = self.inst[i].inc + 1;
                let leases = crate::leader::lease_settings(&self.cfg, i);
                self.inst[i] = Instance::load(&self.seq, self.rng.gen(), leases);
                self.inst[i].inc = inc;
            }
            Ev::LeaseCall { i, inc, nonce } => self.lease_call(i, inc, nonce),
            Ev::LeaseReply { i, inc, reply } => {
                if self.inst[i].up && self.inst[i].inc == inc {
                    let mut out = Vec::new();
                    let now = self.now / MS;
                    self.inst[i].pipeline.lease_reply(reply, now, &mut out);
                    self.exec(i, out)?;
                    self.poll(i)?;
                }
            }
            Ev::Forward { i, from, to, edits } => {
                if self.inst[i].up {
                    self.take_forward(i, from, &to, edits)?;
                }
            }
            Ev::Verdict {
                i,
                client,
                seq,
                verdict,
            } => {
                if self.inst[i].up {
                    let mut out = Vec::new();
                    let now = self.now / MS;
                    self.inst[i]
                        .pipeline
                        .verdict(&client, seq, verdict, now, &mut out);
                    self.exec(i, out)?;
                    self.poll(i)?;
                }
            }
            Ev::Wake(i) => {
                if self.inst[i].up && self.inst[i].wake_at.is_some_and(|w| w <= self.now) {
                    self.inst[i].wake_at = None;
                    self.poll(i)?;
                }
            }
            Ev::Pause(i) => {
                if self.inst[i].up {
                    self.pause(i);
                }
            }
            Ev::Connect(c) => self.connect(c),
            Ev::Blink(c) => {
                if let Some((i, _)) = self.clients[c].at.take() {
                    self.inst[i].conns.remove(&c);
                    self.report.blinks += 1;
                    self.connect(c);
                }
            }
            Ev::Resync(i) => {
                if self.inst[i].up {
                    self.refill(i)?;
                    self.inst[i].pipeline.resync();
                    self.poll(i)?;
                }
            }
            Ev::Resend { c, conn, seq } => {
                let cl = &self.clients[c];
                if cl.at.map(|(_, k)| k) == Some(conn) && cl.ot.inflight_seq() == Some(seq) {
                    if let Some(out) = cl.ot.resend() {
                        self.send_up(c, out);
                    }
                }
            }
        }
        Ok(())
    }

    fn type_edit(&mut self, c: usize) -> Result<(), String> {
        let len = self.clients[c].ot.len_chars();
        let pos = self.rng.gen_range(0..=len);
        let del = self.rng.gen_range(0..=(len - pos).min(3));
        let n = self.rng.gen_range(usize::from(del == 0)..=3);
        let ins: String = (0..n)
            .map(|_| ALPHABET[self.rng.gen_range(0..ALPHABET.len())])
            .collect();
        let cl = &mut self.clients[c];
        let out = cl.ot.local_edit(splice(len, pos, del, &ins));
        cl.typed += 1;
        self.report.edits += 1;
        if let Some(out) = out.map_err(|e| format!("local edit: {e}"))? {
            self.send_up(c, out);
        }
        if self.cfg.faults && self.rng.gen_bool(0.03) {
            let t = self.rng.gen_range(0..10 * MS);
            self.at(t, Ev::Blink(c));
        }
        if self.clients[c].typed < self.cfg.edits_per_client {
            let t = self.rng.gen_range(2 * MS..60 * MS);
            self.at(t, Ev::Type(c));
        }
        Ok(())
    }

    fn send_up(&mut self, c: usize, out: Outgoing) {
        if let Some((i, conn)) = self.clients[c].at {
            let d = self.delay();
            self.ordered((0, c, i), d, Ev::Up { c, conn, out });
        }
    }

    pub(crate) fn send_down(&mut self, i: usize, c: usize, msg: Down) {
        if let Some(conn) = self.inst[i].conns.get(&c).map(|k| k.id) {
            let d = self.delay();
            self.ordered((1, i, c), d, Ev::Down { c, conn, msg });
        }
    }

    /// A client (re)connects to a live instance: resumes from its version
    /// and resends its op in flight.
    fn connect(&mut self, c: usize) {
        let live: Vec<usize> = (0..self.inst.len()).filter(|&i| self.inst[i].up).collect();
        if live.is_empty() {
            return self.at(200 * MS, Ev::Connect(c));
        }
        let i = live[self.rng.gen_range(0..live.len())];
        self.next_conn += 1;
        let conn = self.next_conn;
        // A client ahead of the instance waits for it to catch up (what
        // the refill fans out is not for this connection, whose replay
        // follows); otherwise it gets what the instance holds.
        if self.clients[c].ot.version > self.inst[i].state.version() {
            self.refill(i).unwrap_or_default();
        }
        self.clients[c].at = Some((i, conn));
        self.inst[i].conns.insert(
            c,
            Conn {
                id: conn,
                first_sent: None,
            },
        );
        let from = self.clients[c].ot.version;
        let missed: Vec<Arc<Record>> = self.inst[i]
            .state
            .records_after(from)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for r in missed {
            self.send_down(i, c, Down::Op(r));
        }
        if let Some(out) = self.clients[c].ot.resend() {
            self.send_up(c, out);
        }
    }

    fn crash(&mut self, i: usize) {
        if !self.inst[i].up || self.inst.iter().filter(|x| x.up).count() < 2 {
            return;
        }
        self.report.crashes += 1;
        self.inst[i].up = false;
        let conns: Vec<usize> = std::mem::take(&mut self.inst[i].conns)
            .into_keys()
            .collect();
        for c in conns {
            self.clients[c].at = None;
            let t = self.rng.gen_range(100 * MS..1_000 * MS);
            self.at(t, Ev::Connect(c));
        }
        let t = self.rng.gen_range(1_000 * MS..3_000 * MS);
        self.at(t, Ev::Restart(i));
    }

    /// A call's answer is lost: its caller times out (`timeout`, a reply
    /// of `None`).
    pub(crate) fn lose_reply(&mut self, timeout: Ev) {
        self.report.lost_replies += 1;
        self.at(REPLY_TIMEOUT, timeout);
    }

    /// The sequencer runs a round (whoever sent it, crashed or not).
    fn call(&mut self, i: usize, inc: u64, batch: &CommitBatch) {
        let faults = self.cfg.faults;
        if faults && self.rng.gen_bool(0.01) {
            // Lost on the way: never ran.
            return self.lose_reply(Ev::Reply {
                i,
                inc,
                reply: None,
            });
        }
        self.report.rounds += 1;
        let reply = self
            .seq
            .commit(batch, self.now, crate::leader::LEASE_TTL_MS * MS);
        if let CommitReply::Committed(recs) = &reply {
            for j in 0..self.inst.len() {
                if faults && self.rng.gen_bool(0.03) {
                    // Pub/sub is at most once: the subscription dropped
                    // it, and says so when it is back.
                    self.report.lost_publishes += 1;
                    let t = self.rng.gen_range(10 * MS..1_000 * MS);
                    self.at(t, Ev::Resync(j));
                    continue;
                }
                let d = self.delay();
                let recs = recs.clone();
                self.ordered((2, 0, j), d, Ev::Publish { i: j, recs });
            }
        }
        if faults && self.rng.gen_bool(0.02) {
            // Ran, but the answer was lost: the caller times out.
            return self.lose_reply(Ev::Reply {
                i,
                inc,
                reply: None,
            });
        }
        let d = self.delay();
        self.at(
            d,
            Ev::Reply {
                i,
                inc,
                reply: Some(reply),
            },
        );
    }

    fn client_gets(&mut self, c: usize, conn: u64, msg: Down) -> Result<(), String> {
        let cl = &mut self.clients[c];
        let id = cl.ot.client_id.clone();
        let next = match msg {
            Down::Ack { seq, version } => {
                // An op that others' edits made empty is acknowledged
                // without a version: nothing to find in the log.
                let empty = cl.ot.resend().is_some_and(|o| o.op.is_noop());
                if cl.ot.inflight_seq() == Some(seq) && !empty {
                    self.acked.insert((id, seq));
                }
                cl.ot.on_ack(seq, version)
            }
            Down::Op(r) => {
                if r.client == id && cl.ot.inflight_seq() == Some(r.seq) {
                    self.acked.insert((id, r.seq));
                }
                cl.ot.on_remote(r.version, &r.op, &r.client, r.seq)
            }
            Down::Error { seq } => {
                if cl.ot.inflight_seq() == Some(seq) {
                    let t = self.rng.gen_range(50 * MS..300 * MS);
                    self.at(t, Ev::Resend { c, conn, seq });
                }
                Ok(None)
            }
        };
        let next = next.map_err(|e| format!("client c{c}: {e}"))?;
        if let Some(out) = next {
            self.send_up(c, out);
        }
        Ok(())
    }

    /// The end of a schedule: exactly once, convergence, nothing pending.
    fn check(&mut self) -> Result<(), String> {
        let mut seen = HashSet::new();
        let mut replay = DocState::new("", 0, Retain::count(1 << 20));
        for r in self.seq.log() {
            if !seen.insert((r.client.clone(), r.seq)) {
                return Err(format!("({}, {}) committed twice", r.client, r.seq));
            }
            replay
                .apply(r.clone())
                .map_err(|e| format!("log replay: {e}"))?;
        }
        if let Some(lost) = self.acked.iter().find(|k| !seen.contains(*k)) {
            return Err(format!("acknowledged {lost:?} is not in the log"));
        }
        let text = replay.content();
        for (c, cl) in self.clients.iter().enumerate() {
            if cl.ot.has_pending() {
                return Err(format!("c{c} still has edits pending"));
            }
            if cl.ot.text() != text {
                return Err(format!("c{c} diverged: {:?} vs {text:?}", cl.ot.text()));
            }
        }
        for i in 0..self.inst.len() {
            if self.inst[i].up {
                self.refill(i)?;
                if self.inst[i].state.content() != text || !self.inst[i].pipeline.is_idle() {
                    return Err(format!("instance {i} diverged or busy"));
                }
            }
        }
        Ok(())
    }
}
