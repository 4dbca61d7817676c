//! A seeded, in-process simulation of clients and the server's commit rules:
//! random interleavings, delayed delivery, duplicated resubmits and
//! reconnects that lose messages in flight. Every client must converge to
//! the server text, and every op must be applied exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tandem::client::{OtClient, Outgoing};
use tandem::doc::{DocState, Record};
use tandem::ot::{splice, Operation};

const ALPHABET: &[&str] = &["a", "b", "é", "中", "😀", "👍🏽", "\n", " "];

enum Down {
    Ack { seq: u64, version: u64 },
    Op(Arc<Record>),
}

/// The server's rules: dedupe by (client, seq), rebase, apply, fan out.
struct Server {
    doc: DocState,
    last: HashMap<String, (u64, u64)>,
    /// Every committed (client, seq), to check exactly-once.
    committed: Vec<(String, u64)>,
}

impl Server {
    fn receive(
        &mut self,
        from: &str,
        msg: Outgoing,
    ) -> Result<(Option<Down>, Option<Arc<Record>>), String> {
        if let Some(&(seq, version)) = self.last.get(from) {
            if msg.seq <= seq {
                assert_eq!(msg.seq, seq, "only the in-flight op can be resent");
                return Ok((Some(Down::Ack { seq, version }), None));
            }
        }
        let op = self
            .doc
            .rebase(msg.version, msg.op)
            .map_err(|e| e.to_string())?;
        let rec = Arc::new(Record {
            version: self.doc.version() + 1,
            op,
            user: from.into(),
            client: from.into(),
            seq: msg.seq,
            time: 0,
            trace: None,
        });
        self.doc.apply(rec.clone()).map_err(|e| e.to_string())?;
        self.last.insert(from.into(), (msg.seq, rec.version));
        self.committed.push((from.into(), msg.seq));
        Ok((None, Some(rec)))
    }
}

struct Peer {
    ot: OtClient,
    up: VecDeque<Outgoing>,
    down: VecDeque<Down>,
}

fn random_edit(rng: &mut ChaCha8Rng, len: usize) -> Operation {
    let pos = rng.gen_range(0..=len);
    let del = if len > pos && rng.gen_bool(0.3) {
        rng.gen_range(1..=(len - pos).min(3))
    } else {
        0
    };
    let ins: String = (0..rng.gen_range(0..4))
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())])
        .collect();
    splice(
        len,
        pos,
        del,
        if del == 0 && ins.is_empty() {
            "x"
        } else {
            &ins
        },
    )
}

fn deliver_down(p: &mut Peer) {
    let Some(msg) = p.down.pop_front() else {
        return;
    };
    let next = match msg {
        Down::Ack { seq, version } => p.ot.on_ack(seq, version),
        Down::Op(r) => p.ot.on_remote(r.version, &r.op, &r.client, r.seq),
    }
    .expect("client accepts server messages in order");
    if let Some(out) = next {
        p.up.push_back(out);
    }
}

fn run(seed: u64, clients: usize, steps: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut server = Server {
        doc: DocState::new("", 0, tandem::doc::Retain::count(100_000)),
        last: HashMap::new(),
        committed: Vec::new(),
    };
    let mut peers: Vec<Peer> = (0..clients)
        .map(|i| Peer {
            ot: OtClient::new(format!("c{i}"), "", 0, 0),
            up: VecDeque::new(),
            down: VecDeque::new(),
        })
        .collect();
    let mut edits = 0;

    let step = |server: &mut Server,
                peers: &mut Vec<Peer>,
                rng: &mut ChaCha8Rng,
                i: usize,
                action: u32| {
        match action {
            // deliver one client → server message
            0..=29 => {
                if let Some(msg) = peers[i].up.pop_front() {
                    let from = peers[i].ot.client_id.clone();
                    let (reply, rec) = server.receive(&from, msg).expect("valid op");
                    if let Some(r) = reply {
                        peers[i].down.push_back(r);
                    }
                    if let Some(rec) = rec {
                        for (j, p) in peers.iter_mut().enumerate() {
                            p.down.push_back(if j == i {
                                Down::Ack {
                                    seq: rec.seq,
                                    version: rec.version,
                                }
                            } else {
                                Down::Op(rec.clone())
                            });
                        }
                    }
                }
            }
            // deliver one server → client message
            30..=64 => deliver_down(&mut peers[i]),
            // a duplicated resubmit of the in-flight op
            65..=67 => {
                if let Some(out) = peers[i].ot.resend() {
                    peers[i].up.push_back(out);
                }
            }
            // reconnect: messages in flight both ways are lost; resume from
            // the client's version (replay), then resend the in-flight op.
            68..=70 => {
                let p = &mut peers[i];
                p.up.clear();
                p.down.clear();
                for r in server
                    .doc
                    .records_after(p.ot.version)
                    .expect("history retained")
                {
                    p.down.push_back(Down::Op(r.clone()));
                }
                if let Some(out) = p.ot.resend() {
                    p.up.push_back(out);
                }
            }
            _ => {}
        }
        let _ = rng;
    };

    for _ in 0..steps {
        let i = rng.gen_range(0..clients);
        let action = rng.gen_range(0..100);
        if action >= 71 {
            let len = peers[i].ot.len_chars();
            let op = random_edit(&mut rng, len);
            edits += 1;
            if let Some(out) = peers[i].ot.local_edit(op).unwrap() {
                peers[i].up.push_back(out);
            }
        } else {
            step(&mut server, &mut peers, &mut rng, i, action);
        }
    }
    // Quiesce: deliver everything, in random order, until nothing is pending.
    let mut rounds = 0;
    while peers
        .iter()
        .any(|p| !p.up.is_empty() || !p.down.is_empty() || p.ot.has_pending())
    {
        let i = rng.gen_range(0..clients);
        let action = if rng.gen_bool(0.5) { 0 } else { 30 };
        step(&mut server, &mut peers, &mut rng, i, action);
        rounds += 1;
        assert!(rounds < 1_000_000, "seed {seed}: no progress");
    }
    let text = server.doc.content();
    for p in &peers {
        assert_eq!(
            p.ot.text(),
            text,
            "seed {seed}: client {} diverged",
            p.ot.client_id
        );
        assert_eq!(p.ot.version, server.doc.version(), "seed {seed}");
    }
    // Exactly once: no (client, seq) committed twice, and every op was
    // committed (composed edits share a seq, so count seqs per client).
    let mut seen = std::collections::HashSet::new();
    for c in &server.committed {
        assert!(seen.insert(c.clone()), "seed {seed}: {c:?} committed twice");
    }
    assert!(server.committed.len() <= edits);
}

#[test]
fn clients_converge_under_random_schedules() {
    for seed in 0..300 {
        run(seed, 2 + (seed as usize % 6), 400);
    }
}

#[test]
fn long_runs_with_many_clients_converge() {
    for seed in 1000..1010 {
        run(seed, 8, 5000);
    }
}
