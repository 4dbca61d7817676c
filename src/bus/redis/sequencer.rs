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
//! whoever next finds it (a resend, a writer behind it: `mark.lua`, WAIT,
//! `release.lua`).
//! Must not import: axum, sqlx, the hub.

use std::sync::Arc;

use async_trait::async_trait;

use super::stacks::push_fields;
use super::{parse_record, parse_u64, record_json, unavailable, RedisBackend, WaitReplicas};
use crate::bus::{BatchOutcome, BusError, CommitBatch, CommitRecord, Seed, Seeded, Sequencer};
use crate::doc::{Record, RecordWire, EPHEMERAL_CLIENTS};
use crate::undo::{STACK_BYTES, STACK_LIMIT};

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

#[async_trait]
impl Sequencer for RedisBackend {
    async fn seed(&self, doc: &str, seed: &Seed) -> Result<Seeded, BusError> {
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
            .arg(seed.version)
            .arg(&fresh)
            .arg(self.retain)
            .arg(self.retain_bytes)
            .arg(self.max_clients)
            .arg(EPHEMERAL_CLIENTS)
            .arg(seed.clients.len());
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
        match out.first().map(String::as_str) {
            Some("ok") => Ok(Seeded {
                head: parse_u64(out.get(1))?,
                epoch: out
                    .get(2)
                    .filter(|e| !e.is_empty())
                    .cloned()
                    .ok_or_else(|| BusError::Corrupt("seed reply without an epoch".into()))?,
            }),
            Some("conflict") => Err(BusError::SeedConflict),
            _ => Err(BusError::Corrupt("unexpected seed reply".into())),
        }
    }

    async fn commit_batch(&self, doc: &str, batch: CommitBatch) -> Result<BatchOutcome, BusError> {
        let out = match self.commit_script(doc, &batch).await? {
            // Everything after our base waits for its replicas: see it
            // replicated (or fail), then try once more.
            out if out.first().map(String::as_str) == Some("unrepl") => {
                if let Some(w) = self.wait {
                    self.replicate(doc, w).await?;
                }
                self.commit_script(doc, &batch).await?
            }
            out => out,
        };
        match out.first().map(String::as_str) {
            Some("ok") => {
                let head = parse_u64(out.get(1))?;
                if head != batch.base + batch.records.len() as u64 {
                    return Err(BusError::Corrupt("commit reply head".into()));
                }
                if let Some(w) = self.wait {
                    self.await_replicas(doc, w).await?;
                    self.release(doc, Some(head)).await?;
                }
                Ok(BatchOutcome::Committed(batch.into_records()))
            }
            Some("dup") => {
                // Committed before, perhaps by a round whose WAIT fell
                // short: acked only once replicated.
                if let Some(w) = self.wait {
                    self.replicate(doc, w).await?;
                }
                Ok(BatchOutcome::Duplicates(
                    out[1..]
                        .chunks(2)
                        .map(|p| {
                            let i = parse_u64(p.first())?;
                            let v = parse_u64(p.get(1))?;
                            Ok((i.saturating_sub(1) as usize, v))
                        })
                        .collect::<Result<_, BusError>>()?,
                ))
            }
            Some("stale") => Ok(BatchOutcome::Stale {
                missed: out[1..]
                    .iter()
                    .map(|s| parse_record(s))
                    .collect::<Result<_, _>>()?,
            }),
            // Another writer's records are still unreplicated: try again.
            Some("unrepl") => Ok(BatchOutcome::Stale { missed: Vec::new() }),
            Some("noseed") => Err(BusError::NotSeeded),
            // Our head is past Redis's (it lost records we hold) or behind
            // what its log still reaches: this state cannot go on; the
            // document task reloads (and a lost history has a new epoch).
            Some("range") => Err(BusError::Corrupt(format!(
                "base {} outside the op log {:?}",
                batch.base,
                &out[1..]
            ))),
            _ => Err(BusError::Corrupt("unexpected commit reply".into())),
        }
    }

    async fn ops_since(&self, doc: &str, after: u64) -> Result<Option<Vec<Arc<Record>>>, BusError> {
        let out: Vec<String> = self
            .scripts
            .range
            .key(self.key(doc, "head"))
            .key(self.key(doc, "log"))
            .key(self.key(doc, "rhead"))
            .arg(after)
            .arg(if self.wait.is_some() { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match out.first().map(String::as_str) {
            Some("ok") => Ok(Some(
                out[2..]
                    .iter()
                    .map(|s| parse_record(s))
                    .collect::<Result<_, _>>()?,
            )),
            Some("range") => Ok(None),
            Some("noseed") => Err(BusError::NotSeeded),
            _ => Err(BusError::Corrupt("unexpected range reply".into())),
        }
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

    async fn purge(&self, doc: &str) -> Result<(), BusError> {
        let keys: Vec<String> = [
            "head", "log", "clients", "durable", "epoch", "presence", "stacks", "meta", "logbytes",
            "clientv", "clientv~", "aware", "rhead", "rmark",
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
            .arg(batch.base)
            .arg(self.retain)
            .arg(self.key(doc, "ch"))
            .arg(STACK_LIMIT)
            .arg(batch.records.len())
            .arg(self.retain_bytes)
            .arg(self.max_clients)
            .arg(EPHEMERAL_CLIENTS)
            .arg(STACK_BYTES)
            .arg(publish);
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

    /// `WAIT` for the document's master to have `w.replicas` replicas
    /// acknowledge every write sent before it on our connection.
    async fn await_replicas(&self, doc: &str, w: WaitReplicas) -> Result<(), BusError> {
        let got = self
            .conn()
            .wait_replicas(&self.key(doc, "head"), w.replicas, w.timeout_ms)
            .await
            .map_err(unavailable)?;
        if got < w.replicas {
            metrics::counter!("tandem_redis_wait_shortfalls_total").increment(1);
            return Err(BusError::Unavailable(format!(
                "{got} of {} replicas acknowledged within {} ms",
                w.replicas, w.timeout_ms
            )));
        }
        Ok(())
    }

    /// Raise the replicated head to `version` (`None`: the head) and
    /// publish what that newly covers.
    async fn release(&self, doc: &str, version: Option<u64>) -> Result<(), BusError> {
        let _: u64 = self
            .scripts
            .release
            .key(self.key(doc, "rhead"))
            .key(self.key(doc, "head"))
            .key(self.key(doc, "log"))
            .arg(version.map(|v| v.to_string()).unwrap_or_default())
            .arg(self.doc_publish())
            .arg(self.key(doc, "ch"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// See the whole log as it is now replicated, whoever wrote it, and
    /// release it.
    async fn replicate(&self, doc: &str, w: WaitReplicas) -> Result<(), BusError> {
        let head: Option<u64> = self
            .scripts
            .mark
            .key(self.key(doc, "head"))
            .key(self.key(doc, "rmark"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some(head) = head else {
            return Err(BusError::NotSeeded);
        };
        self.await_replicas(doc, w).await?;
        self.release(doc, Some(head)).await
    }
}
