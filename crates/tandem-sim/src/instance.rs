//! A simulated instance: the document task's part of the commit path —
//! the core's pipeline over its own document state, executing the
//! pipeline's effects against the model sequencer, applying records in
//! order and fanning them out to its clients.
//!
//! Must not import: anything that does I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tandem_core::client::Outgoing;
use tandem_core::doc::{ApplyOutcome, ClientSeqs, DocState, Record, Retain};
use tandem_core::pipeline::{
    unrebasable, Author, Doc, EditId, Effect, LeaseSettings, Limits, Pipeline, Refusal, Submission,
    Verdict,
};
use tandem_core::protocol::Role;

use crate::events::{Down, Ev};
use crate::model::SeqModel;
use crate::world::{World, MS};

/// A connection on an instance: the first seq it sent (records of its
/// client from then on are its acks).
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) first_sent: Option<u64>,
}

/// Who made an edit an instance holds.
#[derive(Clone, Debug)]
pub(crate) enum Origin {
    /// A client of this instance, its seq.
    Local(usize, u64),
    /// Forwarded by instance `from`: answered there.
    Remote {
        from: usize,
        client: String,
        seq: u64,
    },
}

pub(crate) struct Instance {
    pub(crate) up: bool,
    /// Incarnation: replies to a crashed one are dropped.
    pub(crate) inc: u64,
    pub(crate) state: DocState,
    pub(crate) clients: ClientSeqs,
    pub(crate) pipeline: Pipeline,
    pub(crate) tracked: HashMap<EditId, Origin>,
    /// When a wake is scheduled (µs), if one is.
    pub(crate) wake_at: Option<i64>,
    /// Frozen (SIGSTOP) until then: events wait.
    pub(crate) paused_until: i64,
    pub(crate) next_id: u64,
    pub(crate) conns: BTreeMap<usize, Conn>,
}

impl World {
    pub(crate) fn submit(&mut self, i: usize, c: usize, out: Outgoing) -> Result<(), String> {
        if let Some(k) = self.inst[i].conns.get_mut(&c) {
            k.first_sent.get_or_insert(out.seq);
        }
        if out.version > self.inst[i].state.version() {
            self.refill(i)?;
        }
        let x = &mut self.inst[i];
        x.next_id += 1;
        let id = EditId(x.next_id);
        x.tracked.insert(id, Origin::Local(c, out.seq));
        let sub = Submission {
            id,
            author: Author {
                client: self.clients[c].ot.client_id.clone(),
                user: format!("u{c}"),
                role: Role::Editor,
            },
            seq: out.seq,
            base: out.version,
            op: out.op,
        };
        let mut effects = Vec::new();
        x.pipeline
            .submit(sub, &doc(&x.state, &x.clients), &mut effects);
        self.exec(i, effects)?;
        self.poll(i)
    }

    /// Start a round if the pipeline has one.
    pub(crate) fn poll(&mut self, i: usize) -> Result<(), String> {
        loop {
            let x = &mut self.inst[i];
            let mut out = Vec::new();
            x.pipeline
                .poll(&doc(&x.state, &x.clients), self.now / MS, &mut out);
            if out.is_empty() {
                return Ok(());
            }
            if self.exec(i, out)? {
                return Ok(());
            }
        }
    }

    /// Do what the pipeline said; true if a round started.
    pub(crate) fn exec(&mut self, i: usize, out: Vec<Effect>) -> Result<bool, String> {
        let mut started = false;
        for e in out {
            match e {
                Effect::Commit { batch, pause, .. } => {
                    let pause = pause.map_or(0, |p| p.as_micros() as i64);
                    let d = self.delay();
                    let inc = self.inst[i].inc;
                    self.ordered((3, i, 0), pause + d, Ev::Call { i, inc, batch });
                    started = true;
                }
                Effect::Refill => self.refill(i)?,
                Effect::Apply(recs) => {
                    for r in recs {
                        self.ingest(i, r)?;
                    }
                }
                Effect::Answer { id, verdict } => self.answer(i, id, verdict)?,
                Effect::Lookup {
                    id,
                    client,
                    seq,
                    error,
                } => {
                    let last = self.seq.last_seq(&client);
                    let verdict = unrebasable(&client, seq, last, error, false);
                    self.answer(i, id, verdict)?;
                }
                Effect::Note(_) => {}
                Effect::Acquire { nonce } => {
                    let d = self.delay();
                    let inc = self.inst[i].inc;
                    self.ordered((3, i, 0), d, Ev::LeaseCall { i, inc, nonce });
                }
                Effect::Forward { to, edits } => self.forward(i, to, edits),
                e @ (Effect::PopStep { .. }
                | Effect::StepGone { .. }
                | Effect::Reseed
                | Effect::Reset) => return Err(format!("unexpected effect {e:?}")),
            }
        }
        Ok(started)
    }

    pub(crate) fn answer(&mut self, i: usize, id: EditId, verdict: Verdict) -> Result<(), String> {
        let (c, seq) = match self.inst[i].tracked.remove(&id) {
            None => return Ok(()),
            Some(Origin::Local(c, seq)) => (c, seq),
            Some(Origin::Remote { from, client, seq }) => {
                // Committed: its origin learns from the record.
                if !matches!(verdict, Verdict::Committed(_)) {
                    self.send_verdict(from, client, seq, verdict);
                }
                return Ok(());
            }
        };
        let msg = match verdict {
            // The ack goes in the fan-out.
            Verdict::Committed(_) => return Ok(()),
            Verdict::Unchanged(version) => {
                if self.holds(i, version)? {
                    let version = self.inst[i].state.version();
                    Down::Ack { seq, version }
                } else {
                    Down::Error { seq }
                }
            }
            Verdict::Duplicate {
                client, version, ..
            } => {
                if self.holds(i, version)? {
                    let history = self.inst[i].state.history();
                    let version = history.version_of(&client, seq).unwrap_or(version);
                    Down::Ack { seq, version }
                } else {
                    Down::Error { seq }
                }
            }
            Verdict::Refused(Refusal { .. }) => Down::Error { seq },
        };
        self.send_down(i, c, msg);
        Ok(())
    }

    /// Whether instance `i` holds `version`, refilling first if need be.
    fn holds(&mut self, i: usize, version: u64) -> Result<bool, String> {
        if version > self.inst[i].state.version() {
            self.refill(i)?;
        }
        Ok(version <= self.inst[i].state.version())
    }

    pub(crate) fn refill(&mut self, i: usize) -> Result<(), String> {
        for r in self.seq.after(self.inst[i].state.version()) {
            self.apply(i, r)?;
        }
        Ok(())
    }

    pub(crate) fn ingest(&mut self, i: usize, r: Arc<Record>) -> Result<(), String> {
        if r.version > self.inst[i].state.version() + 1 {
            self.refill(i)?;
        }
        self.apply(i, r)
    }

    /// Apply a record in order and fan it out to this instance's clients.
    pub(crate) fn apply(&mut self, i: usize, r: Arc<Record>) -> Result<(), String> {
        let x = &mut self.inst[i];
        match x.state.apply(r.clone()) {
            Ok(ApplyOutcome::Applied) => {}
            Ok(ApplyOutcome::Old) => {
                return match x.state.history().get(r.version) {
                    Some(m) if (m.client.as_str(), m.seq) != (r.client.as_str(), r.seq) => {
                        Err(format!("fork at version {}", r.version))
                    }
                    _ => Ok(()),
                };
            }
            other => return Err(format!("record {} did not apply: {other:?}", r.version)),
        }
        x.clients.record(&r.client, r.seq, r.version);
        let mut effects = Vec::new();
        let now = self.now / MS;
        x.pipeline
            .applied(&r.client, r.seq, r.version, now, &mut effects);
        let x = &self.inst[i];
        let mut to = Vec::new();
        for (&c, k) in &x.conns {
            let own = self.clients[c].ot.client_id == r.client;
            let msg = if own && k.first_sent.is_some_and(|f| r.seq >= f) {
                Down::Ack {
                    seq: r.seq,
                    version: r.version,
                }
            } else {
                Down::Op(r.clone())
            };
            to.push((c, msg));
        }
        for (c, msg) in to {
            self.send_down(i, c, msg);
        }
        self.exec(i, effects).map(drop)
    }
}

impl Instance {
    /// A fresh instance loaded from the sequencer's log.
    pub(crate) fn load(seq: &SeqModel, seed: u64, leases: Option<LeaseSettings>) -> Self {
        let mut state = DocState::new("", 0, Retain::count(1 << 20));
        let mut clients = ClientSeqs::new(1 << 16);
        for r in seq.log() {
            let _ = state.apply(r.clone());
            clients.record(&r.client, r.seq, r.version);
        }
        Self {
            up: true,
            inc: 0,
            state,
            clients,
            pipeline: match leases {
                Some(l) => Pipeline::new(Limits::new(1 << 20), seed).with_leases(l),
                None => Pipeline::new(Limits::new(1 << 20), seed),
            },
            tracked: HashMap::new(),
            wake_at: None,
            paused_until: 0,
            next_id: 0,
            conns: BTreeMap::new(),
        }
    }
}

fn doc<'a>(state: &'a DocState, clients: &'a ClientSeqs) -> Doc<'a> {
    Doc {
        state,
        clients,
        epoch: "",
        catching_up: false,
    }
}
