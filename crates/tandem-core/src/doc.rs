//! Document state: text (a rope), version, and the recent op history used to
//! rebase late ops, plus the rules for accepting an op.
//!
//! Owns: [`Record`] (a committed op), [`DocState`] and its `rebase`/`apply`.
//! Must not import: tokio, axum, hyper, redis, sqlx, utoipa, metrics
//! (enforced: tandem-core has no such dependency).
//! Pure and deterministic; the document task (`hub`) drives it, clocks and
//! ids come in as arguments.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ropey::Rope;
use serde::{Deserialize, Serialize};

use crate::ot::{OpError, Operation};

/// A committed operation: the unit of the op log, the bus and the journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The version this op produced (the op was based on `version - 1`).
    pub version: u64,
    pub op: Operation,
    pub user: String,
    pub client: String,
    pub seq: u64,
    /// Commit time, milliseconds since the Unix epoch.
    pub time: i64,
    /// The W3C `traceparent` of the edit's commit, when it is traced: the
    /// instances that fan it out join its trace. Not stored.
    pub trace: Option<String>,
}

/// Wire/storage form of a record (op as its JSON array).
#[derive(Serialize, Deserialize)]
pub struct RecordWire {
    pub version: u64,
    pub op: serde_json::Value,
    pub user: String,
    pub client: String,
    pub seq: u64,
    pub time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

impl Record {
    pub fn to_wire(&self) -> RecordWire {
        RecordWire {
            version: self.version,
            op: self.op.to_json(),
            user: self.user.clone(),
            client: self.client.clone(),
            seq: self.seq,
            time: self.time,
            trace: self.trace.clone(),
        }
    }

    /// Decode a record from storage or the bus. Records were validated when
    /// committed, so no component limit applies here.
    pub fn from_wire(w: RecordWire) -> Result<Self, OpError> {
        Ok(Record {
            version: w.version,
            op: Operation::from_json(&w.op, usize::MAX)?,
            user: w.user,
            client: w.client,
            seq: w.seq,
            time: w.time,
            trace: w.trace,
        })
    }
}

/// A client's highest committed seq and the version it produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSeq {
    pub client: String,
    pub seq: u64,
    pub version: u64,
}

/// Why an op cannot be rebased onto the head.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RebaseError {
    /// Based on a version newer than the head, or older than retained history.
    #[error("version {base} is outside the retained range {oldest}..={head}")]
    OutOfRange { base: u64, oldest: u64, head: u64 },
    #[error(transparent)]
    Op(#[from] OpError),
}

/// Why a record could not be applied in order.
#[derive(Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    /// Already have it (version ≤ head): ignore.
    Old,
    /// Versions between head+1 and this one are missing: refill first.
    Gap {
        head: u64,
    },
}

impl Record {
    /// Roughly the bytes the record holds (its op's [`Operation::size_hint`]
    /// plus its ids and fixed fields): what byte caps on histories count.
    pub fn size(&self) -> usize {
        self.op.size_hint() + self.user.len() + self.client.len() + RECORD_OVERHEAD
    }
}

/// What a record costs besides its op and ids (the `Arc`, the fields, the
/// op's vector), for [`Record::size`].
const RECORD_OVERHEAD: usize = 96;

/// How much of the past a [`History`] keeps: at most `count` records and at
/// most `bytes` of them ([`Record::size`]), but always the newest record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retain {
    pub count: usize,
    pub bytes: usize,
}

impl Retain {
    /// At most `count` records, whatever their size.
    pub fn count(count: usize) -> Self {
        Self {
            count,
            bytes: usize::MAX,
        }
    }
}

/// A bounded run of committed records ending at `head`, oldest first:
/// `records[i].version == oldest() + i + 1`. Used by document state and by
/// the in-process sequencer's op log. Bounded by count and by bytes
/// ([`Retain`]); the newest record is always kept.
#[derive(Clone, Debug)]
pub struct History {
    head: u64,
    records: VecDeque<Arc<Record>>,
    retain: Retain,
    /// Sum of the held records' [`Record::size`].
    bytes: usize,
}

impl History {
    /// Empty, at `head`, keeping what `retain` allows.
    pub fn new(head: u64, retain: Retain) -> Self {
        Self {
            head,
            records: VecDeque::new(),
            retain: Retain {
                count: retain.count.max(1),
                bytes: retain.bytes,
            },
            bytes: 0,
        }
    }

    /// Bytes the held records take ([`Record::size`] summed).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// The version just before the first record held.
    pub fn oldest(&self) -> u64 {
        self.head - self.records.len() as u64
    }

    /// Append the record following the head (`rec.version == head + 1`),
    /// dropping the oldest beyond the count or byte cap (never the newest).
    pub fn push(&mut self, rec: Arc<Record>) {
        debug_assert_eq!(rec.version, self.head + 1);
        self.head = rec.version;
        self.bytes += rec.size();
        self.records.push_back(rec);
        while self.records.len() > 1
            && (self.records.len() > self.retain.count || self.bytes > self.retain.bytes)
        {
            if let Some(old) = self.records.pop_front() {
                self.bytes -= old.size();
            }
        }
    }

    /// Records with version > `after`, if still held.
    pub fn after(&self, after: u64) -> Option<impl DoubleEndedIterator<Item = &Arc<Record>>> {
        if after < self.oldest() || after > self.head {
            return None;
        }
        Some(self.records.iter().skip((after - self.oldest()) as usize))
    }

    /// The record that produced `version`, if held.
    pub fn get(&self, version: u64) -> Option<&Arc<Record>> {
        let i = version.checked_sub(self.oldest() + 1)?;
        self.records.get(i as usize)
    }

    /// The version `(client, seq)` produced, if its record is still held.
    pub fn version_of(&self, client: &str, seq: u64) -> Option<u64> {
        self.records
            .iter()
            .rev()
            .find(|r| r.client == client && r.seq == seq)
            .map(|r| r.version)
    }
}

/// Client-seq rows kept per document for server-minted client ids (REST
/// edits, undo, redo): each is used for one edit, resent only by the
/// server's own retries within seconds, so only the newest few matter.
pub const EPHEMERAL_CLIENTS: usize = 256;

/// A client id the server mints for one edit (`kind~unique`): `~` is not
/// allowed in wire ids, so no socket can claim one.
pub fn ephemeral_client(kind: &str, unique: &str) -> String {
    format!("{kind}~{unique}")
}

/// Whether `client` was minted by [`ephemeral_client`].
pub fn is_ephemeral(client: &str) -> bool {
    client.contains('~')
}

/// Each client's highest committed `(seq, version)`: the dedupe table.
/// Bounded: at most `cap` clients (and [`EPHEMERAL_CLIENTS`] server-minted
/// ones, kept apart so a flood of REST edits cannot push out the sockets'
/// rows); beyond that the clients whose last commit is oldest are dropped
/// (trimmed in steps of an eighth, so a commit does not pay for a sort). A
/// dropped client's resend is no longer recognised: the price of the bound,
/// paid only by a client silent while `cap` others committed.
#[derive(Clone, Debug)]
pub struct ClientSeqs {
    kept: HashMap<String, (u64, u64)>,
    ephemeral: HashMap<String, (u64, u64)>,
    cap: usize,
}

impl ClientSeqs {
    pub fn new(cap: usize) -> Self {
        Self {
            kept: HashMap::new(),
            ephemeral: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// `client`'s highest committed `(seq, version)`, if kept.
    pub fn get(&self, client: &str) -> Option<(u64, u64)> {
        self.map(client).get(client).copied()
    }

    fn map(&self, client: &str) -> &HashMap<String, (u64, u64)> {
        if is_ephemeral(client) {
            &self.ephemeral
        } else {
            &self.kept
        }
    }

    /// Raise `client`'s mark to `(seq, version)` if `seq` is higher; true
    /// if it moved.
    pub fn record(&mut self, client: &str, seq: u64, version: u64) -> bool {
        let (map, cap) = if is_ephemeral(client) {
            (&mut self.ephemeral, EPHEMERAL_CLIENTS)
        } else {
            (&mut self.kept, self.cap)
        };
        if let Some(e) = map.get_mut(client) {
            if seq <= e.0 {
                return false;
            }
            *e = (seq, version);
            return true;
        }
        map.insert(client.to_owned(), (seq, version));
        if map.len() > cap + cap / 8 {
            Self::trim(map, cap);
        }
        true
    }

    /// Keep the `cap` clients with the newest versions.
    fn trim(map: &mut HashMap<String, (u64, u64)>, cap: usize) {
        let mut versions: Vec<u64> = map.values().map(|&(_, v)| v).collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(&floor) = versions.get(cap.saturating_sub(1)) {
            map.retain(|_, &mut (_, v)| v >= floor);
            // Equal versions (seeded rows) could keep a few more: cut any.
            let extra = map.len().saturating_sub(cap);
            if extra > 0 {
                let drop: Vec<String> = map
                    .iter()
                    .filter(|(_, &(_, v))| v == floor)
                    .take(extra)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in drop {
                    map.remove(&k);
                }
            }
        }
    }

    /// Every kept client and its mark.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &(u64, u64))> {
        self.kept.iter().chain(self.ephemeral.iter())
    }

    /// Clients kept (both kinds).
    pub fn len(&self) -> usize {
        self.kept.len() + self.ephemeral.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whose text goes first when a rebased op and a committed one insert at
/// the same position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tie {
    RebasedFirst,
    CommittedFirst,
}

impl Tie {
    /// `op` transformed past `committed` (an op that goes before it), with
    /// this tie-break.
    pub fn transform(self, op: Operation, committed: &Operation) -> Result<Operation, OpError> {
        Ok(match self {
            Tie::RebasedFirst => op.transform(committed)?.0,
            Tie::CommittedFirst => committed.transform(&op)?.1,
        })
    }
}

/// Text, version and recent history of one document.
#[derive(Debug)]
pub struct DocState {
    text: Rope,
    history: History,
}

impl DocState {
    pub fn new(content: &str, version: u64, retain: Retain) -> Self {
        Self {
            text: Rope::from_str(content),
            history: History::new(version, retain),
        }
    }

    pub fn version(&self) -> u64 {
        self.history.head()
    }
    pub fn history(&self) -> &History {
        &self.history
    }
    pub fn len_chars(&self) -> usize {
        self.text.len_chars()
    }
    pub fn rope(&self) -> &Rope {
        &self.text
    }
    pub fn content(&self) -> String {
        self.text.to_string()
    }
    /// Oldest version an op may be based on (rebasable from history).
    pub fn oldest(&self) -> u64 {
        self.history.oldest()
    }

    /// Committed records with version > `after`, if history still holds them.
    pub fn records_after(
        &self,
        after: u64,
    ) -> Option<impl DoubleEndedIterator<Item = &Arc<Record>>> {
        self.history.after(after)
    }

    /// Document length at version `v` (from history), if known.
    pub fn len_at(&self, v: u64) -> Option<usize> {
        if v == self.version() {
            return Some(self.text.len_chars());
        }
        self.records_after(v)?.next().map(|r| r.op.base_len())
    }

    /// Transform `op`, based on `base`, past every op committed since, so it
    /// applies to the head. Checks the op's length against the document at
    /// `base`. Where both insert at one position, `op`'s text goes first (the
    /// protocol's rule).
    pub fn rebase(&self, base: u64, op: Operation) -> Result<Operation, RebaseError> {
        self.rebase_with(base, op, Tie::RebasedFirst)
    }

    /// [`DocState::rebase`] with a choice of tie-break. Undo uses
    /// [`Tie::CommittedFirst`]: text it restores goes after text inserted at
    /// the same place since, so undo-then-redo of several steps puts each
    /// back where it was. (Any rule converges: the result is committed as a
    /// new op that every client applies as is.)
    pub fn rebase_with(
        &self,
        base: u64,
        op: Operation,
        tie: Tie,
    ) -> Result<Operation, RebaseError> {
        let out_of_range = RebaseError::OutOfRange {
            base,
            oldest: self.oldest(),
            head: self.version(),
        };
        let mut op = op;
        let records = self.records_after(base).ok_or(out_of_range)?;
        for r in records {
            op = tie.transform(op, &r.op)?;
        }
        if op.base_len() != self.text.len_chars() {
            return Err(OpError::BaseLength {
                op: op.base_len(),
                doc: self.text.len_chars(),
            }
            .into());
        }
        Ok(op)
    }

    /// Apply a committed record in version order.
    pub fn apply(&mut self, rec: Arc<Record>) -> Result<ApplyOutcome, OpError> {
        let head = self.version();
        if rec.version <= head {
            return Ok(ApplyOutcome::Old);
        }
        if rec.version > head + 1 {
            return Ok(ApplyOutcome::Gap { head });
        }
        rec.op.apply_rope(&mut self.text)?;
        self.history.push(rec);
        Ok(ApplyOutcome::Applied)
    }

    /// Transform a caret index given at version `v` to the head.
    pub fn transform_index(&self, v: u64, index: usize) -> Option<usize> {
        let mut i = index;
        for r in self.records_after(v)? {
            i = r.op.transform_index(i);
        }
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ot::splice;

    fn rec(version: u64, op: Operation) -> Arc<Record> {
        Arc::new(Record {
            version,
            op,
            user: "u".into(),
            client: "c".into(),
            seq: version,
            time: 0,
            trace: None,
        })
    }

    #[test]
    fn history_keeps_a_bounded_tail_ending_at_head() {
        let mut h = History::new(10, Retain::count(3));
        assert_eq!((h.oldest(), h.head()), (10, 10));
        assert_eq!(h.after(10).map(|i| i.count()), Some(0));
        for v in 11..=15 {
            let mut r = (*rec(v, splice(0, 0, 0, "x"))).clone();
            r.client = format!("c{v}");
            h.push(Arc::new(r));
        }
        // capped at 3: versions 13..=15 held
        assert_eq!((h.oldest(), h.head()), (12, 15));
        assert!(h.after(11).is_none() && h.after(16).is_none());
        let versions: Vec<u64> = h.after(13).unwrap().map(|r| r.version).collect();
        assert_eq!(versions, [14, 15]);
        assert_eq!(h.get(13).map(|r| r.version), Some(13));
        assert!(h.get(12).is_none() && h.get(16).is_none());
        assert_eq!(h.version_of("c14", 14), Some(14));
        assert_eq!(h.version_of("c11", 11), None); // trimmed
    }

    #[test]
    fn history_is_bounded_by_bytes_keeping_the_newest() {
        let big = |v: u64, n: usize| rec(v, splice(0, 0, 0, &"x".repeat(n)));
        let one = big(1, 1000).size();
        let mut h = History::new(
            0,
            Retain {
                count: 100,
                bytes: 3 * one,
            },
        );
        for v in 1..=10 {
            h.push(big(v, 1000));
            assert!(h.bytes() <= 3 * one, "{} bytes held", h.bytes());
        }
        assert_eq!((h.oldest(), h.head(), h.len()), (7, 10, 3));
        assert_eq!(h.bytes(), 3 * one);
        // One record over the budget is still kept (the newest always is).
        h.push(big(11, 10_000));
        assert_eq!((h.oldest(), h.head(), h.len()), (10, 11, 1));
        assert!(h.after(9).is_none());
        h.push(big(12, 10));
        assert_eq!((h.oldest(), h.len()), (11, 1));
        h.push(big(13, 10));
        assert_eq!((h.oldest(), h.len()), (11, 2));
    }

    #[test]
    fn client_seqs_are_bounded_keeping_the_newest_and_ephemeral_apart() {
        let mut c = ClientSeqs::new(8);
        for v in 1..=100u64 {
            assert!(c.record(&format!("c{v}"), 1, v));
            assert!(c.len() <= 9, "{} clients", c.len());
        }
        assert!(c.get("c100").is_some() && c.get("c93").is_some());
        assert!(c.get("c1").is_none());
        // A lower or equal seq does not move the mark.
        assert!(!c.record("c100", 1, 200));
        assert!(c.record("c100", 2, 201));
        assert_eq!(c.get("c100"), Some((2, 201)));
        // Server-minted ids fill their own table, not the sockets' one.
        for v in 1000..3000u64 {
            c.record(&ephemeral_client("http", &v.to_string()), 1, v);
        }
        assert!(c.get("c100").is_some(), "sockets' rows pushed out");
        assert!(c.len() <= 9 + EPHEMERAL_CLIENTS + EPHEMERAL_CLIENTS / 8);
        assert!(c.get(&ephemeral_client("http", "2999")).is_some());
        assert!(is_ephemeral("http~1") && !is_ephemeral("http-1"));
    }

    #[test]
    fn rebase_past_history_and_range_checks() {
        let mut d = DocState::new("abc", 0, Retain::count(2));
        assert_eq!(
            d.apply(rec(1, splice(3, 0, 0, "X"))).unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(
            d.apply(rec(1, splice(4, 0, 0, "X"))).unwrap(),
            ApplyOutcome::Old
        );
        assert_eq!(
            d.apply(rec(3, splice(4, 0, 0, "X"))).unwrap(),
            ApplyOutcome::Gap { head: 1 }
        );
        // an op based on version 0 inserts at the end: rebased past "X"
        let op = d.rebase(0, splice(3, 3, 0, "!")).unwrap();
        assert_eq!(op.apply(&d.content()).unwrap(), "Xabc!");
        assert!(matches!(
            d.rebase(2, splice(4, 0, 0, "a")),
            Err(RebaseError::OutOfRange { .. })
        ));
        // wrong length at its base version
        assert!(matches!(
            d.rebase(0, splice(4, 0, 0, "a")),
            Err(RebaseError::Op(_))
        ));
        d.apply(rec(2, splice(4, 0, 0, "Y"))).unwrap();
        d.apply(rec(3, splice(5, 0, 0, "Z"))).unwrap();
        // history holds two records: version 0 is gone
        assert_eq!(d.oldest(), 1);
        assert!(matches!(
            d.rebase(0, splice(3, 0, 0, "a")),
            Err(RebaseError::OutOfRange { .. })
        ));
        assert_eq!(d.len_at(1), Some(4));
        assert_eq!(d.transform_index(1, 0), Some(2));
    }
}
