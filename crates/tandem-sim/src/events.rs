//! What travels in the simulated world: the events on its clock and the
//! messages an instance sends its clients, each described for a trace.
//!
//! Must not import: anything that does I/O.

use std::sync::Arc;

use tandem_core::client::Outgoing;
use tandem_core::commit::{CommitBatch, CommitReply, LeaseReply};
use tandem_core::doc::Record;
use tandem_core::pipeline::{Forwarded, Verdict};

pub(crate) enum Down {
    Ack { seq: u64, version: u64 },
    Op(Arc<Record>),
    Error { seq: u64 },
}

pub(crate) enum Ev {
    Type(usize),
    Up {
        c: usize,
        conn: u64,
        out: Outgoing,
    },
    Down {
        c: usize,
        conn: u64,
        msg: Down,
    },
    Call {
        i: usize,
        inc: u64,
        batch: CommitBatch,
    },
    Reply {
        i: usize,
        inc: u64,
        reply: Option<CommitReply>,
    },
    Publish {
        i: usize,
        recs: Vec<Arc<Record>>,
    },
    Crash(usize),
    Restart(usize),
    Connect(usize),
    Resend {
        c: usize,
        conn: u64,
        seq: u64,
    },
    /// An instance's subscription came back after dropping messages: it
    /// refills from the log.
    Resync(usize),
    /// An instance asks for the lease.
    LeaseCall {
        i: usize,
        inc: u64,
        nonce: u64,
    },
    LeaseReply {
        i: usize,
        inc: u64,
        reply: Option<LeaseReply>,
    },
    /// Edits forwarded by instance `from` to the holder of `to`, as
    /// instance `i` receives them (every instance gets the message).
    Forward {
        i: usize,
        from: usize,
        to: String,
        edits: Vec<Forwarded>,
    },
    /// The leader's verdict on a forwarded edit, at its origin `i`.
    Verdict {
        i: usize,
        client: String,
        seq: u64,
        verdict: Verdict,
    },
    /// An instance's timer (resends, lease expiry).
    Wake(usize),
    /// The instance freezes (SIGSTOP) until then; what arrives waits.
    Pause(usize),
    /// A client's connection drops (its network blinked): it reconnects at
    /// once, perhaps to another instance, and resends.
    Blink(usize),
}

impl Ev {
    pub(crate) fn describe(&self) -> String {
        let recs = |r: &[Arc<Record>]| {
            r.iter()
                .map(|r| format!("v{}={}/{}", r.version, r.client, r.seq))
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Ev::Type(c) => format!("type c{c}"),
            Ev::Up { c, conn, out } => {
                format!("up c{c}#{conn} seq {} on v{}", out.seq, out.version)
            }
            Ev::Down { c, conn, msg } => match msg {
                Down::Ack { seq, version } => format!("down c{c}#{conn} ack {seq} v{version}"),
                Down::Op(r) => format!("down c{c}#{conn} op {}", recs(std::slice::from_ref(r))),
                Down::Error { seq } => format!("down c{c}#{conn} error {seq}"),
            },
            Ev::Call { i, inc, batch } => format!(
                "call i{i}.{inc} base {} [{}]",
                batch.base,
                batch
                    .records
                    .iter()
                    .map(|r| format!("{}/{}", r.client, r.seq))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Ev::Reply { i, inc, reply } => format!("reply i{i}.{inc} {reply:?}")
                .chars()
                .take(200)
                .collect(),
            Ev::Publish { i, recs: r } => format!("publish i{i} {}", recs(r)),
            Ev::Crash(i) => format!("crash i{i}"),
            Ev::Restart(i) => format!("restart i{i}"),
            Ev::Connect(c) => format!("connect c{c}"),
            Ev::Resend { c, conn, seq } => format!("resend c{c}#{conn} {seq}"),
            Ev::Resync(i) => format!("resync i{i}"),
            Ev::Blink(c) => format!("blink c{c}"),
            Ev::LeaseCall { i, inc, .. } => format!("acquire i{i}.{inc}"),
            Ev::LeaseReply { i, inc, reply } => format!("lease i{i}.{inc} {reply:?}"),
            Ev::Forward { i, from, to, edits } => format!(
                "forward i{from}->i{i} to {to} [{}]",
                edits
                    .iter()
                    .map(|e| format!("{}/{}", e.client, e.seq))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Ev::Verdict {
                i,
                client,
                seq,
                verdict,
            } => format!("verdict i{i} {client}/{seq} {verdict:?}"),
            Ev::Wake(i) => format!("wake i{i}"),
            Ev::Pause(i) => format!("pause i{i}"),
        }
    }
}
