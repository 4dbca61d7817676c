//! What a commit round sends the sequencer and what it answers: a
//! [`CommitBatch`] of [`CommitRecord`]s (ops already rebased, back to back,
//! with their undo steps), and a [`CommitReply`] naming every answer a
//! sequencer gives besides a real failure (an outage or a corrupt reply,
//! the server's `BusError`). Replies are data, never errors: the commit
//! pipeline (`crate::pipeline`) decides what each means.
//!
//! Must not import: anything that does I/O (this is the pure core).

use std::sync::Arc;
use std::time::Duration;

use crate::doc::Record;
use crate::ot::Operation;
use crate::undo::StackPush;

/// Most records one commit round carries (and the Lua stack allows).
pub const MAX_BATCH_RECORDS: usize = 256;

/// One op of a commit batch, already rebased so that it applies right after
/// the records before it in the batch.
#[derive(Clone, Debug)]
pub struct CommitRecord {
    pub op: Operation,
    pub user: String,
    pub client: String,
    pub seq: u64,
    pub time: i64,
    /// The undo (or redo) step to keep for `user` once committed; its
    /// entry's version is the version this record produces.
    pub undo: Option<StackPush>,
    /// The edit's trace context (W3C `traceparent`), carried in the record
    /// to every instance.
    pub trace: Option<String>,
}

/// Ops to commit back to back as versions `base + 1 ..= base + n`.
#[derive(Clone, Debug, Default)]
pub struct CommitBatch {
    pub base: u64,
    pub records: Vec<CommitRecord>,
    /// The history identity `base` belongs to (the caller's epoch): a
    /// sequencer holding another answers [`CommitReply::NotSeeded`], and the
    /// caller's re-seed proves (or refutes) that its history continues
    /// there. Empty: not checked.
    pub epoch: String,
    /// The caller's commit lease token: a sequencer whose lease another
    /// holds (or nobody) answers [`CommitReply::Fenced`] and appends
    /// nothing. Empty: not checked.
    pub token: String,
}

impl CommitBatch {
    /// The records as committed: versions from `base + 1`.
    pub fn into_records(self) -> Vec<Arc<Record>> {
        let base = self.base;
        self.records
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                Arc::new(Record {
                    version: base + i as u64 + 1,
                    op: r.op,
                    user: r.user,
                    client: r.client,
                    seq: r.seq,
                    time: r.time,
                    trace: r.trace,
                })
            })
            .collect()
    }
}

/// How the sequencer answered a batch (every answer but a failure).
#[derive(Debug)]
pub enum CommitReply {
    /// Appended (and published, once, as one event) as these records.
    Committed(Vec<Arc<Record>>),
    /// Nothing was appended: these records (index in the batch, and the
    /// version their `(client, seq)` produced) were committed before. The
    /// caller answers them and prepares the rest again.
    Duplicates(Vec<(usize, u64)>),
    /// `base` is behind the head: these are the records after `base`
    /// (possibly none yet, in wait mode). Nothing was appended; the caller
    /// applies them, rebases and retries.
    Stale { missed: Vec<Arc<Record>> },
    /// The sequencer does not know the document (never seeded, it lost its
    /// data, or it holds another history, or less than the caller): seed
    /// it again from what the caller knows, then retry.
    NotSeeded,
    /// The sequencer re-created the document from an instance's copy after
    /// losing it, and holds commits for a moment so that every other live
    /// instance can add the records it holds: retry after this long.
    Settling(Duration),
    /// The batch's lease token is not the document's: `holder` has it
    /// (empty: nobody) for `left` more. Nothing was appended.
    Fenced { holder: String, left: Duration },
}

/// What an instance asks of a document's commit lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// Take it if nobody holds it; `nonce` makes the token unique.
    Acquire { instance: String, nonce: String },
    /// Extend it, if `token` still holds it.
    Renew { token: String },
    /// Give it up, if `token` still holds it.
    Release { token: String },
}

/// How the sequencer answered a [`LeaseAction`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseReply {
    /// Ours: commit with this token.
    Granted {
        token: String,
    },
    /// Another's, for `left` more.
    Held {
        token: String,
        left: Duration,
    },
    Renewed,
    /// Not ours (any more): whose it is now (empty: nobody's).
    Lost {
        holder: String,
    },
    Released,
}
