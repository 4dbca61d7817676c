//! The Redis [`Sequencer`]: seed (which also keeps the document's epoch),
//! commit, range, durable mark and purge, each one script or command on the
//! document's hash-tagged keys.
//!
//! Wait mode (`REDIS_WAIT_REPLICAS`): the commit script appends without
//! publishing; `WAIT` then asks the document's master for its replicas'
//! acknowledgement, and only then `release.lua` raises the document's
//! replicated head and publishes. The op log is read (stale replies,
//! refills) only up to that head, so no client ever holds a version a
//! failover could take back; a batch whose WAIT fell short is released by
//! whoever next finds it (a resend, a writer behind it: mark, WAIT,
//! `release.lua`). Mark and WAIT go as one pipeline on a connection kept
//! for WAIT; `release.lua` checks that the batch it releases is still in
//! the log.
//! Must not import: axum, sqlx, the hub.

use std::time::Duration;

use async_trait::async_trait;

use super::conn::MarkKeys;
use super::replies::{self, CommitScript, LeaseScript, RangeScript, SeedScript};
use super::stacks::push_fields;
use super::{record_json, unavailable, RedisBackend, WaitReplicas};
use crate::bus::{
    BusError, CommitBatch, CommitRecord, CommitReply, LeaseAction, LeaseReply, Range, Seed,
    SeedReply, Seeded, Sequencer,
};
use crate::doc::{RecordWire, EPHEMERAL_CLIENTS};
use crate::undo::{STACK_BYTES, STACK_LIMIT};

/// How long a document Redis lost, re-created by a re-seed from a live copy,
/// holds commits so that every live instance's seed lands first (seed.lua).
/// It covers the pub/sub reconnect after a restart (back-off capped at 1 s)
/// and the resync that re-seeds (a failed one retried from 100 ms).
const RESEED_SETTLE: Duration = Duration::from_millis(2500);
/// How long a commit that proves its lease holder alive extends the lease.
pub const LEASE_TTL: Duration = Duration::from_millis(2000);

/// A record's JSON without its version: the script puts the version first.
fn record_tail(r: &CommitRecord) -> Result<String, BusError> {
    let full = serde_json::to_string(&RecordWire {
        version: 0,
        op: r.op.to_json(),
        user: r.user.clone(),
        client: r.client.clone(),
        seq: r.seq,
        time: r.time,
        trace: r.trace.clone(),
    })
    .map_err(|e| BusError::Corrupt(e.to_string()))?;
    full.strip_prefix("{\"version\":0,")
        .map(str::to_owned)
        .ok_or_else(|| BusError::Corrupt("record encoding".into()))
}

/// A re-seed from a live copy re-creates a document Redis had and lost: if
/// it creates it, it settles. A load from the store does not wait (no live
/// copy could extend a log it leaves empty).
fn settle_ms(seed: &Seed) -> u128 {
    if seed.live {
        RESEED_SETTLE.as_millis()
    } else {
        0
    }
}

#[async_trait]
impl Sequencer for RedisBackend {
    async fn seed(&self, doc: &str, seed: &Seed) -> Result<SeedReply, BusError> {
        // A document Redis does not hold is created under a fresh epoch,
        // never the caller's: Redis may have lost records the store never
        // got, and their versions are about to be handed out again. Minted
        // here, as a script's randomness is deterministic.
        let fresh = crate::epoch::fresh();
        let mut inv = self.scripts.seed.prepare_invoke();
        inv.key(self.key(doc, "head"))
            .key(self.key(doc, "log"))
            .key(self.key(doc, "clients"))
            .key(self.key(doc, "durable"))
            .key(self.key(doc, "epoch"))
            .key(self.key(doc, "logbytes"))
            .key(self.key(doc, "clientv"))
            .key(self.key(doc, "clientv~"))
            .key(self.key(doc, "rhead"))
            .key(self.key(doc, "settle"))
            .key(self.key(doc, "baseepoch"))
            .arg(seed.version)
            .arg(&fresh)
            .arg(self.retain)
            .arg(self.retain_bytes)
            .arg(self.max_clients)
            .arg(EPHEMERAL_CLIENTS)
            .arg(seed.clients.len())
            .arg(settle_ms(seed))
            .arg(&seed.epoch);
        for c in &seed.clients {
            inv.arg(&c.client).arg(c.seq).arg(c.version);
        }
        for r in &seed.records {
            inv.arg(record_json(r));
        }
        let out: Vec<String> = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match replies::seed(&out)? {
            SeedScript::Ok { head, epoch } => SeedReply::Seeded(Seeded { head, epoch }),
            SeedScript::Conflict => SeedReply::Conflict,
        })
    }

    async fn commit_batch(&self, doc: &str, batch: CommitBatch) -> Result<CommitReply, BusError> {
        let reply = match replies::commit(&self.commit_script(doc, &batch).await?)? {
            // Everything after our base waits for its replicas: see it
            // replicated (or fail), then try once more.
            CommitScript::Unrepl => {
                if let Some(w) = self.wait {
                    if !self.replicate(doc, w, None).await? {
                        return Ok(CommitReply::NotSeeded);
                    }
                }
                replies::commit(&self.commit_script(doc, &batch).await?)?
            }
            reply => reply,
        };
        Ok(match reply {
            CommitScript::Ok { head } => {
                if head != batch.base + batch.records.len() as u64 {
                    return Err(BusError::Corrupt("commit reply head".into()));
                }
                if let Some(w) = self.wait {
                    let last = batch
                        .records
                        .last()
                        .ok_or_else(|| BusError::Corrupt("empty batch committed".into()))?;
                    if !self.replicate(doc, w, Some((head, last))).await? {
                        return Ok(CommitReply::NotSeeded);
                    }
                }
                CommitReply::Committed(batch.into_records())
            }
            CommitScript::Dup(dups) => {
                // Committed before, perhaps by a round whose WAIT fell
                // short: acked only once replicated.
                if let Some(w) = self.wait {
                    if !self.replicate(doc, w, None).await? {
                        return Ok(CommitReply::NotSeeded);
                    }
                }
                CommitReply::Duplicates(dups)
            }
            CommitScript::Stale(missed) => CommitReply::Stale { missed },
            // Another writer's records are still unreplicated: try again.
            CommitScript::Unrepl => CommitReply::Stale { missed: Vec::new() },
            // Unknown, or under another history than our base's: seed.
            CommitScript::NoSeed => CommitReply::NotSeeded,
            CommitScript::Settling(d) => CommitReply::Settling(d),
            CommitScript::Fenced { holder, left } => CommitReply::Fenced { holder, left },
            // Our head is past Redis's: it lost records we hold, which a
            // seed gives back.
            CommitScript::Range { head, .. } if batch.base > head => CommitReply::NotSeeded,
            // Behind what its log still reaches: this state cannot go on;
            // the document task reloads (and a lost history has a new epoch).
            CommitScript::Range { oldest, head } => {
                return Err(BusError::Corrupt(format!(
                    "base {} outside the op log {oldest}..={head}",
                    batch.base
                )))
            }
        })
    }

    async fn ops_since(&self, doc: &str, after: u64, epoch: &str) -> Result<Range, BusError> {
        let out: Vec<String> = self
            .scripts
            .range
            .key(self.key(doc, "head"))
            .key(self.key(doc, "log"))
            .key(self.key(doc, "rhead"))
            .key(self.key(doc, "epoch"))
            .arg(after)
            .arg(if self.wait.is_some() { "1" } else { "0" })
            .arg(epoch)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match replies::range(&out)? {
            RangeScript::Ok(recs) => Range::Records(recs),
            // Past Redis's head: it lost records we hold (seed them back).
            RangeScript::Range { head, .. } if after > head => Range::NotSeeded,
            RangeScript::Range { .. } => Range::Trimmed,
            RangeScript::NoSeed => Range::NotSeeded,
        })
    }

    async fn lease(
        &self,
        doc: &str,
        action: LeaseAction,
        ttl: Duration,
    ) -> Result<LeaseReply, BusError> {
        let (verb, token) = match action {
            LeaseAction::Acquire { instance, nonce } => ("acquire", format!("{instance}:{nonce}")),
            LeaseAction::Renew { token } => ("renew", token),
            LeaseAction::Release { token } => ("release", token),
        };
        let out: Vec<String> = self
            .scripts
            .lease
            .key(self.key(doc, "lease"))
            .key(self.key(doc, "term"))
            .arg(verb)
            .arg(token)
            .arg(ttl.as_millis() as u64)
            // Followers hear of a grant or a release at once.
            .arg(self.doc_publish())
            .arg(self.key(doc, "ch"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match replies::lease(&out)? {
            LeaseScript::Granted(token) => LeaseReply::Granted { token },
            LeaseScript::Held { token, left } => LeaseReply::Held { token, left },
            LeaseScript::Renewed => LeaseReply::Renewed,
            LeaseScript::Lost(holder) => LeaseReply::Lost { holder },
            LeaseScript::Released => LeaseReply::Released,
        })
    }

    async fn last_seq(&self, doc: &str, client: &str) -> Result<Option<(u64, u64)>, BusError> {
        let v: Option<String> = redis::cmd("HGET")
            .arg(self.key(doc, "clients"))
            .arg(client)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(v.and_then(|v| {
            let (s, ver) = v.split_once(':')?;
            Some((s.parse().ok()?, ver.parse().ok()?))
        }))
    }

    async fn mark_durable(&self, doc: &str, version: u64) -> Result<(), BusError> {
        let _: i64 = self
            .scripts
            .durable
            .key(self.key(doc, "durable"))
            .key(self.key(doc, "head"))
            .arg(version)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn evict(&self, _doc: &str) {}

    async fn probe_write(&self, instance: &str) -> Result<(), BusError> {
        // A write Redis refuses as it would a commit (OOM past maxmemory,
        // MISCONF after a failed save, READONLY on a replica).
        let _: () = redis::cmd("SET")
            .arg(format!("{}:probe:{instance}", self.prefix))
            .arg(1)
            .arg("PX")
            .arg(60_000)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn purge(&self, doc: &str) -> Result<(), BusError> {
        let keys: Vec<String> = [
            "head",
            "log",
            "clients",
            "durable",
            "epoch",
            "presence",
            "stacks",
            "meta",
            "logbytes",
            "clientv",
            "clientv~",
            "aware",
            "rhead",
            "rmark",
            "settle",
            "baseepoch",
            "lease",
            "term",
        ]
        .iter()
        .map(|k| self.key(doc, k))
        .collect();
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

impl RedisBackend {
    /// Run `commit.lua` on `batch`: its raw reply.
    async fn commit_script(&self, doc: &str, batch: &CommitBatch) -> Result<Vec<String>, BusError> {
        let publish = if self.wait.is_some() {
            ""
        } else {
            self.doc_publish()
        };
        let mut inv = self.scripts.commit.prepare_invoke();
        inv.key(self.key(doc, "head"))
            .key(self.key(doc, "log"))
            .key(self.key(doc, "clients"))
            .key(self.key(doc, "durable"))
            .key(self.key(doc, "stacks"))
            .key(self.key(doc, "logbytes"))
            .key(self.key(doc, "clientv"))
            .key(self.key(doc, "clientv~"))
            .key(self.key(doc, "rhead"))
            .key(self.key(doc, "settle"))
            .key(self.key(doc, "epoch"))
            .key(self.key(doc, "lease"))
            .arg(batch.base)
            .arg(self.retain)
            .arg(self.key(doc, "ch"))
            .arg(STACK_LIMIT)
            .arg(batch.records.len())
            .arg(self.retain_bytes)
            .arg(self.max_clients)
            .arg(EPHEMERAL_CLIENTS)
            .arg(STACK_BYTES)
            .arg(publish)
            .arg(&batch.epoch)
            .arg(&batch.token)
            .arg(LEASE_TTL.as_millis() as u64);
        for r in &batch.records {
            let [field, entry, at, clear, fallback] = match &r.undo {
                Some(push) => push_fields(&r.user, push),
                None => Default::default(),
            };
            inv.arg(&r.client)
                .arg(r.seq)
                .arg(record_tail(r)?)
                .arg(field)
                .arg(entry)
                .arg(at)
                .arg(clear)
                .arg(fallback);
        }
        inv.invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// Wait mode: have `w.replicas` replicas acknowledge the document's log
    /// as it is now (whoever wrote it: one pipeline reads the head, writes
    /// a mark and WAITs, on one of the connections kept for WAIT), then release it:
    /// up to `ours` (our batch's head, checked to still hold our last
    /// record there: a failover between commit and WAIT may have taken it
    /// back) or, without it, up to the head read. False when Redis no
    /// longer holds the document (it lost its data).
    async fn replicate(
        &self,
        doc: &str,
        w: WaitReplicas,
        ours: Option<(u64, &CommitRecord)>,
    ) -> Result<bool, BusError> {
        let mut conn = self.wait_conn(doc);
        let (head_key, clients_key, mark_key) = (
            self.key(doc, "head"),
            self.key(doc, "clients"),
            self.key(doc, "rmark"),
        );
        let marked = conn
            .mark_and_wait(
                MarkKeys {
                    head: &head_key,
                    clients: &clients_key,
                    client: ours.map_or("", |(_, r)| r.client.as_str()),
                    mark: &mark_key,
                },
                w.replicas,
                w.timeout_ms,
            )
            .await
            .map_err(unavailable)?;
        let Some(head) = marked.head else {
            return Ok(false);
        };
        if marked.replicas < w.replicas {
            metrics::counter!("tandem_redis_wait_shortfalls_total").increment(1);
            return Err(BusError::Unavailable(format!(
                "{} of {} replicas acknowledged within {} ms",
                marked.replicas, w.replicas, w.timeout_ms
            )));
        }
        // The node that WAITed must be the one that holds our batch (a
        // stale slot map could have sent the pipeline elsewhere).
        if let Some((version, last)) = ours {
            if marked.client_seq != Some(format!("{}:{version}", last.seq)) {
                return Err(BusError::Unavailable(
                    "the WAIT ran where the batch is not (the slot moved)".into(),
                ));
            }
        }
        let mut inv = self.scripts.release.prepare_invoke();
        inv.key(self.key(doc, "rhead"))
            .key(self.key(doc, "head"))
            .key(self.key(doc, "log"))
            .arg(self.doc_publish())
            .arg(self.key(doc, "ch"));
        match ours {
            Some((version, last)) => inv.arg(version).arg(&last.client).arg(last.seq),
            None => inv.arg(head).arg("").arg(0),
        };
        let released: i64 = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if released < 0 {
            return Err(BusError::Unavailable(
                "the batch is no longer in the log (a failover took it back)".into(),
            ));
        }
        Ok(true)
    }
}
