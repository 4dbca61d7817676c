//! The replies of `commit.lua`, `range.lua`, `seed.lua` and `lease.lua`, read from the
//! raw strings the scripts return into one enum per script (every arm the
//! script can answer; anything else is [`BusError::Corrupt`]). Pure: the
//! sequencer decides what each means for the caller.
//! Must not import: axum, sqlx, the hub.

use std::sync::Arc;
use std::time::Duration;

use super::{parse_record, parse_u64};
use crate::bus::BusError;
use crate::doc::Record;

/// `commit.lua`'s answer.
#[derive(Debug, PartialEq)]
pub(super) enum CommitScript {
    /// Appended; the document's head after.
    Ok { head: u64 },
    /// Nothing appended: these records (index from 0, version their
    /// `(client, seq)` produced) were committed before.
    Dup(Vec<(usize, u64)>),
    /// `base` is not the head: the records after it (up to the replicated
    /// head in wait mode).
    Stale(Vec<Arc<Record>>),
    /// Wait mode: records after `base` are not replicated yet.
    Unrepl,
    /// No such document, or another history than the batch's epoch.
    NoSeed,
    /// Re-seeded a moment ago: commits wait this long.
    Settling(Duration),
    /// `base` is outside the log (`oldest..=head`).
    Range { oldest: u64, head: u64 },
    /// The batch's lease token is not the document's: who holds it ('':
    /// nobody) and for how long.
    Fenced { holder: String, left: Duration },
}

/// `lease.lua`'s answer.
#[derive(Debug, PartialEq)]
pub(super) enum LeaseScript {
    Granted(String),
    Held { token: String, left: Duration },
    Renewed,
    Lost(String),
    Released,
}

/// `range.lua`'s answer.
#[derive(Debug, PartialEq)]
pub(super) enum RangeScript {
    Ok(Vec<Arc<Record>>),
    Range { oldest: u64, head: u64 },
    NoSeed,
}

/// `seed.lua`'s answer.
#[derive(Debug, PartialEq)]
pub(super) enum SeedScript {
    Ok { head: u64, epoch: String },
    Conflict,
}

fn records(out: &[String]) -> Result<Vec<Arc<Record>>, BusError> {
    out.iter().map(|s| parse_record(s)).collect()
}

fn unexpected(script: &str) -> BusError {
    BusError::Corrupt(format!("unexpected {script} reply"))
}

pub(super) fn commit(out: &[String]) -> Result<CommitScript, BusError> {
    let rest = out.get(1..).unwrap_or_default();
    Ok(match out.first().map(String::as_str) {
        Some("ok") => CommitScript::Ok {
            head: parse_u64(out.get(1))?,
        },
        Some("dup") if !rest.is_empty() && rest.len() % 2 == 0 => CommitScript::Dup(
            rest.chunks(2)
                .map(|p| {
                    let i = parse_u64(p.first())?;
                    let v = parse_u64(p.get(1))?;
                    let i = i
                        .checked_sub(1)
                        .ok_or_else(|| BusError::Corrupt("dup index 0".into()))?;
                    Ok((i as usize, v))
                })
                .collect::<Result<_, BusError>>()?,
        ),
        Some("stale") => CommitScript::Stale(records(rest)?),
        Some("unrepl") => CommitScript::Unrepl,
        Some("noseed" | "epoch") => CommitScript::NoSeed,
        Some("settling") => CommitScript::Settling(Duration::from_millis(parse_u64(out.get(1))?)),
        Some("range") => CommitScript::Range {
            oldest: parse_u64(out.get(1))?,
            head: parse_u64(out.get(2))?,
        },
        Some("fenced") if out.len() == 3 => CommitScript::Fenced {
            holder: out[1].clone(),
            left: pttl(out.get(2))?,
        },
        _ => return Err(unexpected("commit")),
    })
}

/// A PTTL as the scripts return it (-1: no expiry, -2: no key: none left).
fn pttl(s: Option<&String>) -> Result<Duration, BusError> {
    let ms: i64 = s
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BusError::Corrupt("bad pttl from script".into()))?;
    Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

pub(super) fn lease(out: &[String]) -> Result<LeaseScript, BusError> {
    let token = |i: usize| {
        out.get(i)
            .filter(|t| !t.is_empty())
            .cloned()
            .ok_or_else(|| BusError::Corrupt("lease reply without a token".into()))
    };
    Ok(match out.first().map(String::as_str) {
        Some("granted") => LeaseScript::Granted(token(1)?),
        Some("held") => LeaseScript::Held {
            token: token(1)?,
            left: pttl(out.get(2))?,
        },
        Some("renewed") => LeaseScript::Renewed,
        Some("lost") if out.len() == 2 => LeaseScript::Lost(out[1].clone()),
        Some("released") => LeaseScript::Released,
        _ => return Err(unexpected("lease")),
    })
}

pub(super) fn range(out: &[String]) -> Result<RangeScript, BusError> {
    Ok(match out.first().map(String::as_str) {
        // The head, then the records.
        Some("ok") if out.len() >= 2 => RangeScript::Ok(records(&out[2..])?),
        Some("range") => RangeScript::Range {
            oldest: parse_u64(out.get(1))?,
            head: parse_u64(out.get(2))?,
        },
        Some("noseed" | "epoch") => RangeScript::NoSeed,
        _ => return Err(unexpected("range")),
    })
}

pub(super) fn seed(out: &[String]) -> Result<SeedScript, BusError> {
    Ok(match out.first().map(String::as_str) {
        Some("ok") => SeedScript::Ok {
            head: parse_u64(out.get(1))?,
            epoch: out
                .get(2)
                .filter(|e| !e.is_empty())
                .cloned()
                .ok_or_else(|| BusError::Corrupt("seed reply without an epoch".into()))?,
        },
        Some("conflict") => SeedScript::Conflict,
        _ => return Err(unexpected("seed")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    const REC: &str = r#"{"version":3,"op":[1,"x"],"user":"u","client":"c","seq":2,"time":5}"#;

    #[test]
    fn every_commit_arm() {
        assert_eq!(
            commit(&v(&["ok", "7"])).unwrap(),
            CommitScript::Ok { head: 7 }
        );
        assert_eq!(
            commit(&v(&["dup", "1", "4", "3", "9"])).unwrap(),
            CommitScript::Dup(vec![(0, 4), (2, 9)])
        );
        let CommitScript::Stale(recs) = commit(&v(&["stale", REC])).unwrap() else {
            panic!("not stale");
        };
        assert_eq!((recs[0].version, recs[0].seq), (3, 2));
        assert_eq!(commit(&v(&["stale"])).unwrap(), CommitScript::Stale(vec![]));
        assert_eq!(commit(&v(&["unrepl"])).unwrap(), CommitScript::Unrepl);
        assert_eq!(commit(&v(&["noseed"])).unwrap(), CommitScript::NoSeed);
        assert_eq!(commit(&v(&["epoch"])).unwrap(), CommitScript::NoSeed);
        assert_eq!(
            commit(&v(&["settling", "250"])).unwrap(),
            CommitScript::Settling(Duration::from_millis(250))
        );
        assert_eq!(
            commit(&v(&["range", "10", "20"])).unwrap(),
            CommitScript::Range {
                oldest: 10,
                head: 20
            }
        );
    }

    #[test]
    fn fenced_and_lease_arms() {
        assert_eq!(
            commit(&v(&["fenced", "2:i1:ab", "1500"])).unwrap(),
            CommitScript::Fenced {
                holder: "2:i1:ab".into(),
                left: Duration::from_millis(1500)
            }
        );
        assert_eq!(
            commit(&v(&["fenced", "", "-2"])).unwrap(),
            CommitScript::Fenced {
                holder: String::new(),
                left: Duration::ZERO
            }
        );
        assert!(commit(&v(&["fenced", "x"])).is_err());
        assert_eq!(
            lease(&v(&["granted", "1:i:n"])).unwrap(),
            LeaseScript::Granted("1:i:n".into())
        );
        assert_eq!(
            lease(&v(&["held", "1:i:n", "900"])).unwrap(),
            LeaseScript::Held {
                token: "1:i:n".into(),
                left: Duration::from_millis(900)
            }
        );
        assert_eq!(lease(&v(&["renewed"])).unwrap(), LeaseScript::Renewed);
        assert_eq!(
            lease(&v(&["lost", ""])).unwrap(),
            LeaseScript::Lost(String::new())
        );
        assert_eq!(lease(&v(&["released"])).unwrap(), LeaseScript::Released);
        for bad in [
            v(&["granted"]),
            v(&["granted", ""]),
            v(&["held", "t"]),
            v(&["lost"]),
            v(&["x"]),
        ] {
            assert!(lease(&bad).is_err(), "{bad:?} was read");
        }
    }

    #[test]
    fn malformed_commit_replies_are_corrupt() {
        for bad in [
            v(&[]),
            v(&["what"]),
            v(&["ok"]),
            v(&["ok", "x"]),
            v(&["dup"]),
            v(&["dup", "1"]),
            v(&["dup", "0", "4"]),
            v(&["stale", "{not json"]),
            v(&["settling"]),
            v(&["range", "1"]),
        ] {
            assert!(
                matches!(commit(&bad), Err(BusError::Corrupt(_))),
                "{bad:?} was read"
            );
        }
    }

    #[test]
    fn every_range_and_seed_arm() {
        let RangeScript::Ok(recs) = range(&v(&["ok", "3", REC])).unwrap() else {
            panic!("not ok");
        };
        assert_eq!(recs.len(), 1);
        assert_eq!(range(&v(&["ok", "3"])).unwrap(), RangeScript::Ok(vec![]));
        assert_eq!(
            range(&v(&["range", "4", "9"])).unwrap(),
            RangeScript::Range { oldest: 4, head: 9 }
        );
        assert_eq!(range(&v(&["epoch"])).unwrap(), RangeScript::NoSeed);
        assert!(range(&v(&["ok"])).is_err());
        assert!(range(&v(&["nope"])).is_err());
        assert_eq!(
            seed(&v(&["ok", "5", "e1"])).unwrap(),
            SeedScript::Ok {
                head: 5,
                epoch: "e1".into()
            }
        );
        assert_eq!(seed(&v(&["conflict"])).unwrap(), SeedScript::Conflict);
        assert!(seed(&v(&["ok", "5", ""])).is_err());
        assert!(seed(&v(&["ok", "5"])).is_err());
    }
}
