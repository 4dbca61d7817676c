//! Storage health: whether the commit path (the embedded journal, or Redis
//! in clustered mode) and the write-behind persistence (snapshots, journal
//! rows, client seqs) are taking writes, and why not. Failing storage is a
//! state here, not a log line: readiness answers from it, metrics export
//! it, and each change is logged once.
//!
//! Owns: [`StorageHealth`], [`Part`], [`Fault`] (what a failed write's
//! error says, in words safe to show anyone).
//! Must not import: axum, sqlx, redis, the hub.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};

use tracing::{info, warn};

/// A part of storage with its own health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The write an ack waits for: the embedded journal (SQLite), or the
    /// commit script (Redis). Failing, edits are refused.
    Commit,
    /// Snapshots, journal rows and client seqs written behind the live
    /// path (SQLite or PostgreSQL). Failing, editing goes on (clustered)
    /// or is already refused by the commit part (embedded, one disk).
    Persist,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Commit => "commit",
            Part::Persist => "persist",
        }
    }
}

/// Why a write failed, as far as its error says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No room: a full disk (SQLite `SQLITE_FULL`, PostgreSQL `53100`).
    DiskFull,
    /// Redis over `maxmemory` (`OOM`).
    OutOfMemory,
    /// Redis refuses writes after a failed save (`MISCONF`), or is a
    /// read-only replica (`READONLY`).
    ReadOnly,
    /// The database refused the row itself (a constraint, an encoding).
    Refused,
    /// No answer: connection lost, pool exhausted, timeout.
    Unreachable,
    /// Anything else (an I/O error, a lock held too long).
    Other,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::DiskFull,
        Fault::OutOfMemory,
        Fault::ReadOnly,
        Fault::Refused,
        Fault::Unreachable,
        Fault::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fault::DiskFull => "disk_full",
            Fault::OutOfMemory => "out_of_memory",
            Fault::ReadOnly => "read_only",
            Fault::Refused => "refused",
            Fault::Unreachable => "unreachable",
            Fault::Other => "other",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Fault::DiskFull => "disk full",
            Fault::OutOfMemory => "Redis out of memory",
            Fault::ReadOnly => "Redis refuses writes",
            Fault::Refused => "a write was refused",
            Fault::Unreachable => "unreachable",
            Fault::Other => "write errors",
        }
    }

    fn from_u8(v: u8) -> Self {
        Self::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(Fault::Other)
    }

    /// Read an error's text (sqlx's and redis's errors name their codes;
    /// redis quotes a server's code: `"OOM": command not allowed …`).
    pub fn classify(error: &str) -> Self {
        let e = error.to_ascii_lowercase().replace('"', "");
        let has = |needles: &[&str]| needles.iter().any(|n| e.contains(n));
        if has(&[
            "disk is full",
            "disk full",
            "no space left",
            "(code: 13)",
            "53100",
        ]) {
            Fault::DiskFull
        } else if has(&["oom command not allowed", "oom:", "out of memory"]) {
            Fault::OutOfMemory
        } else if has(&["misconf", "readonly", "read only", "read-only"]) {
            Fault::ReadOnly
        } else if has(&[
            "invalid byte sequence",
            "violates",
            "constraint",
            "value too long",
            "out of range",
        ]) {
            Fault::Refused
        } else if has(&[
            "timed out",
            "timeout",
            "connection",
            "broken pipe",
            "unavailable",
            "pool",
            "io error",
        ]) {
            Fault::Unreachable
        } else {
            Fault::Other
        }
    }
}

#[derive(Default)]
struct PartState {
    failing: AtomicBool,
    fault: AtomicU8,
    since_ms: AtomicI64,
}

/// Each part's state; shared by the hub, the persister and the web layer.
#[derive(Default)]
pub struct StorageHealth {
    parts: [PartState; 2],
}

/// A part that is failing: since when, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failing {
    pub part: Part,
    pub fault: Fault,
    pub since_ms: i64,
}

impl Failing {
    /// Words for readiness and logs: no internal error text.
    pub fn describe(&self, now_ms: i64) -> String {
        let secs = (now_ms - self.since_ms).max(0) / 1000;
        let what = match self.part {
            Part::Commit => "commits failing",
            Part::Persist => "persistence failing",
        };
        format!("{what} ({}) for {secs} s", self.fault.words())
    }
}

impl StorageHealth {
    fn state(&self, part: Part) -> &PartState {
        &self.parts[part as usize]
    }

    /// A write of `part` succeeded.
    pub fn ok(&self, part: Part) {
        let s = self.state(part);
        if s.failing.swap(false, Ordering::AcqRel) {
            metrics::gauge!("tandem_storage_failing", "part" => part.as_str()).set(0.0);
            info!(part = part.as_str(), "storage takes writes again");
        }
    }

    /// A write of `part` failed with `error` (the internal text: logged on
    /// the first failure only, never shown to clients).
    pub fn fail(&self, part: Part, error: &str, now_ms: i64) {
        self.fail_as(part, Fault::classify(error), error, now_ms);
    }

    /// [`StorageHealth::fail`] with the error already classified.
    pub fn fail_as(&self, part: Part, fault: Fault, error: &str, now_ms: i64) {
        let s = self.state(part);
        s.fault.store(fault as u8, Ordering::Release);
        metrics::counter!("tandem_storage_faults_total", "fault" => fault.as_str()).increment(1);
        if !s.failing.swap(true, Ordering::AcqRel) {
            s.since_ms.store(now_ms, Ordering::Release);
            metrics::gauge!("tandem_storage_failing", "part" => part.as_str()).set(1.0);
            warn!(
                part = part.as_str(),
                fault = fault.as_str(),
                error,
                "storage refuses writes"
            );
        }
    }

    /// `part`'s failure, if it is failing.
    pub fn failing(&self, part: Part) -> Option<Failing> {
        let s = self.state(part);
        s.failing.load(Ordering::Acquire).then(|| Failing {
            part,
            fault: Fault::from_u8(s.fault.load(Ordering::Acquire)),
            since_ms: s.since_ms.load(Ordering::Acquire),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_their_codes() {
        let cases = [
            ("error returned from database: (code: 13) database or disk is full", Fault::DiskFull),
            ("journal: error returned from database: could not extend file: No space left on device", Fault::DiskFull),
            // As `BusError::Unavailable` carries redis's errors.
            ("backend unavailable: \"OOM\": command not allowed when used memory > 'maxmemory'. script: ff96, on @user_script:1.", Fault::OutOfMemory),
            ("backend unavailable: \"MISCONF\": Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.", Fault::ReadOnly),
            ("backend unavailable: ReadOnly: You can't write against a read only replica.", Fault::ReadOnly),
            ("backend unavailable: Connection refused (os error 111)", Fault::Unreachable),
            ("error returned from database: invalid byte sequence for encoding \"UTF8\": 0x00", Fault::Refused),
            ("pool timed out while waiting for an open connection", Fault::Unreachable),
            ("something else entirely", Fault::Other),
        ];
        for (text, fault) in cases {
            assert_eq!(Fault::classify(text), fault, "{text}");
        }
    }

    #[test]
    fn a_part_fails_until_a_write_succeeds() {
        let h = StorageHealth::default();
        assert_eq!(h.failing(Part::Commit), None);
        h.fail(Part::Commit, "database or disk is full", 1_000);
        h.fail(Part::Commit, "database or disk is full", 5_000);
        let f = h.failing(Part::Commit).unwrap();
        assert_eq!((f.fault, f.since_ms), (Fault::DiskFull, 1_000));
        assert_eq!(f.describe(4_000), "commits failing (disk full) for 3 s");
        assert_eq!(h.failing(Part::Persist), None);
        h.ok(Part::Commit);
        assert_eq!(h.failing(Part::Commit), None);
    }
}
