//! Redis sequencer and bus (clustered mode). The only module that talks to
//! Redis.
//!
//! Keys are hash-tagged per document so one document's keys share a Redis
//! Cluster slot: `<prefix>:{doc:<id>}:head|log|clients|durable|presence`, and
//! its channel `<prefix>:{doc:<id>}:ch`. The commit is one Lua script
//! (`scripts/commit.lua`, loaded once, run by SHA). Pub/sub runs on its own
//! connection in a task with a reconnect loop; after every (re)connect each
//! subscriber gets `Resync` and refills from the op log.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::{
    AccessChange, Bus, BusError, BusEvent, CommitOutcome, CommitRequest, PresenceEntry, Seed,
    Sequencer, Subscription,
};
use crate::doc::{Record, RecordWire};
use crate::protocol::{CursorInfo, Presence};
use crate::undo::{Stack, StackPush, UndoEntry, STACK_LIMIT};

/// Scripts, hashed once; `invoke_async` runs EVALSHA and loads on NOSCRIPT.
struct Scripts {
    commit: Script,
    range: Script,
    seed: Script,
    durable: Script,
    presence: Script,
    undo: Script,
}

type Subs = Arc<Mutex<HashMap<String, broadcast::Sender<Arc<BusEvent>>>>>;

enum Ctl {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String),
}

/// Redis-backed [`Sequencer`] and [`Bus`].
pub struct RedisBackend {
    me: Weak<RedisBackend>,
    conn: ConnectionManager,
    prefix: String,
    retain: usize,
    scripts: Scripts,
    subs: Subs,
    ctl: mpsc::UnboundedSender<Ctl>,
}

/// Settings for [`RedisBackend::connect`].
#[derive(Clone, Debug)]
pub struct RedisSettings {
    pub url: String,
    /// Prepended to every key and channel (isolates deployments and tests).
    pub prefix: String,
    /// Op log tail kept per document (`OPLOG_RETAIN`).
    pub retain: usize,
}

fn unavailable(e: redis::RedisError) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// Presence, cursor and record events as they travel on a channel.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EventWire {
    Joined {
        instance: String,
        presence: Presence,
    },
    Left {
        instance: String,
        presence: Presence,
    },
    Cursor {
        instance: String,
        cursor: CursorInfo,
    },
    Access {
        access: AccessChange,
    },
    Meta {
        instance: String,
        state: Box<crate::meta::DocMeta>,
    },
}

fn record_json(r: &Record) -> String {
    serde_json::to_string(&r.to_wire()).unwrap_or_default()
}

fn parse_record(s: &str) -> Result<Arc<Record>, BusError> {
    let wire: RecordWire = serde_json::from_str(s).map_err(|e| BusError::Corrupt(e.to_string()))?;
    Record::from_wire(wire)
        .map(Arc::new)
        .map_err(|e| BusError::Corrupt(e.to_string()))
}

fn parse_u64(s: Option<&String>) -> Result<u64, BusError> {
    s.and_then(|s| s.parse().ok())
        .ok_or_else(|| BusError::Corrupt("bad number from script".into()))
}

/// Decode a channel payload: a committed record (the commit script publishes
/// records as they are in the log) or a presence/cursor event.
fn decode_event(payload: &str) -> Result<BusEvent, BusError> {
    if payload.starts_with("{\"version\":") {
        return parse_record(payload).map(BusEvent::Committed);
    }
    let wire: EventWire =
        serde_json::from_str(payload).map_err(|e| BusError::Corrupt(e.to_string()))?;
    Ok(match wire {
        EventWire::Joined { instance, presence } => BusEvent::Joined { instance, presence },
        EventWire::Left { instance, presence } => BusEvent::Left { instance, presence },
        EventWire::Cursor { instance, cursor } => BusEvent::Cursor { instance, cursor },
        EventWire::Access { access } => BusEvent::Access(access),
        EventWire::Meta { instance, state } => BusEvent::Meta { instance, state },
    })
}

fn encode_event(event: &BusEvent) -> Option<String> {
    let wire = match event.clone() {
        BusEvent::Committed(r) => return Some(record_json(&r)),
        BusEvent::Resync => return None,
        BusEvent::Joined { instance, presence } => EventWire::Joined { instance, presence },
        BusEvent::Left { instance, presence } => EventWire::Left { instance, presence },
        BusEvent::Cursor { instance, cursor } => EventWire::Cursor { instance, cursor },
        BusEvent::Access(access) => EventWire::Access { access },
        BusEvent::Meta { instance, state } => EventWire::Meta { instance, state },
    };
    serde_json::to_string(&wire).ok()
}

impl RedisBackend {
    /// Connect (commands on a reconnecting multiplexed connection, pub/sub on
    /// its own) and start the pub/sub task on `tracker`.
    pub async fn connect(
        settings: RedisSettings,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, BusError> {
        let client = redis::Client::open(settings.url.as_str()).map_err(unavailable)?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(cfg)
            .await
            .map_err(unavailable)?;
        let subs: Subs = Arc::default();
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        tracker.spawn(pubsub_loop(client, subs.clone(), ctl_rx, cancel));
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            conn,
            prefix: settings.prefix,
            retain: settings.retain.max(1),
            scripts: Scripts {
                commit: Script::new(include_str!("scripts/commit.lua")),
                range: Script::new(include_str!("scripts/range.lua")),
                seed: Script::new(include_str!("scripts/seed.lua")),
                durable: Script::new(include_str!("scripts/durable.lua")),
                presence: Script::new(include_str!("scripts/presence.lua")),
                undo: Script::new(include_str!("scripts/undo.lua")),
            },
            subs,
            ctl,
        }))
    }

    async fn stack_read(
        &self,
        doc: &str,
        user: &str,
        stack: Stack,
        action: &str,
    ) -> Result<Option<UndoEntry>, BusError> {
        let raw: Option<String> = self
            .scripts
            .undo
            .key(self.key(doc, "stacks"))
            .arg(action)
            .arg(format!("{}{user}", stack.prefix()))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match raw {
            None => Ok(None),
            Some(s) => UndoEntry::from_json(&s)
                .map(Some)
                .ok_or_else(|| BusError::Corrupt("undo entry".into())),
        }
    }

    fn key(&self, doc: &str, what: &str) -> String {
        format!("{}:{{doc:{}}}:{}", self.prefix, doc, what)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Delete every key under this backend's prefix (benchmarks, tests).
    pub async fn delete_all_keys(&self) -> Result<(), BusError> {
        let mut conn = self.conn();
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl Sequencer for RedisBackend {
    async fn seed(&self, doc: &str, seed: &Seed) -> Result<u64, BusError> {
        let mut inv = self.scripts.seed.prepare_invoke();
        inv.key(self.key(doc, "head"))
            .key(self.key(doc, "log"))
            .key(self.key(doc, "clients"))
            .key(self.key(doc, "durable"))
            .arg(seed.version)
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
            Some("ok") => parse_u64(out.get(1)),
            Some("conflict") => Err(BusError::SeedConflict),
            _ => Err(BusError::Corrupt("unexpected seed reply".into())),
        }
    }

    async fn commit(&self, doc: &str, req: CommitRequest) -> Result<CommitOutcome, BusError> {
        // The record without its version; the script puts the version first.
        let full = serde_json::to_string(&RecordWire {
            version: 0,
            op: req.op.to_json(),
            user: req.user,
            client: req.client.clone(),
            seq: req.seq,
            time: req.time,
        })
        .map_err(|e| BusError::Corrupt(e.to_string()))?;
        let tail = full
            .strip_prefix("{\"version\":0,")
            .ok_or_else(|| BusError::Corrupt("record encoding".into()))?;
        let out: Vec<String> = self
            .scripts
            .commit
            .key(self.key(doc, "head"))
            .key(self.key(doc, "log"))
            .key(self.key(doc, "clients"))
            .key(self.key(doc, "durable"))
            .arg(req.base)
            .arg(&req.client)
            .arg(req.seq)
            .arg(tail)
            .arg(self.retain)
            .arg(self.key(doc, "ch"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match out.first().map(String::as_str) {
            Some("ok") => Ok(CommitOutcome::Committed(parse_record(
                out.get(2).map_or("", |s| s),
            )?)),
            Some("dup") => Ok(CommitOutcome::Duplicate {
                version: parse_u64(out.get(1))?,
            }),
            Some("stale") => Ok(CommitOutcome::Stale {
                missed: out[1..]
                    .iter()
                    .map(|s| parse_record(s))
                    .collect::<Result<_, _>>()?,
            }),
            Some("noseed") => Err(BusError::NotSeeded),
            Some("range") => Err(BusError::Unavailable(format!(
                "base {} outside the op log {:?}",
                req.base,
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
            .arg(after)
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

    async fn stack_top(
        &self,
        doc: &str,
        user: &str,
        stack: Stack,
    ) -> Result<Option<UndoEntry>, BusError> {
        self.stack_read(doc, user, stack, "top").await
    }

    async fn stack_push(&self, doc: &str, user: &str, push: &StackPush) -> Result<(), BusError> {
        let clear = if push.clear_redo {
            format!("{}{user}", Stack::Redo.prefix())
        } else {
            String::new()
        };
        let _: i64 = self
            .scripts
            .undo
            .key(self.key(doc, "stacks"))
            .arg("push")
            .arg(format!("{}{user}", push.stack.prefix()))
            .arg(push.entry.to_json())
            .arg(
                push.replace_top_at
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            )
            .arg(STACK_LIMIT)
            .arg(clear)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn stack_pop(
        &self,
        doc: &str,
        user: &str,
        stack: Stack,
    ) -> Result<Option<UndoEntry>, BusError> {
        self.stack_read(doc, user, stack, "pop").await
    }

    async fn purge(&self, doc: &str) -> Result<(), BusError> {
        let keys: Vec<String> = [
            "head", "log", "clients", "durable", "presence", "stacks", "meta",
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

/// Unsubscribes when the last local subscriber of a channel goes.
struct Unsubscribe {
    backend: Weak<RedisBackend>,
    channel: String,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(b) = self.backend.upgrade() else {
            return;
        };
        let mut subs = b.subs.lock().unwrap_or_else(|e| e.into_inner());
        if subs
            .get(&self.channel)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            subs.remove(&self.channel);
            let _ = b.ctl.send(Ctl::Unsubscribe(self.channel.clone()));
        }
    }
}

#[async_trait]
impl Bus for RedisBackend {
    async fn publish(&self, doc: &str, event: BusEvent) -> Result<(), BusError> {
        let Some(payload) = encode_event(&event) else {
            return Ok(());
        };
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.key(doc, "ch"))
            .arg(payload)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn subscribe(&self, doc: &str) -> Result<Subscription, BusError> {
        let channel = self.key(doc, "ch");
        let (rx, new) = {
            let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
            match subs.get(&channel) {
                Some(tx) => (tx.subscribe(), false),
                None => {
                    let (tx, rx) = broadcast::channel(super::SUBSCRIBER_CAPACITY);
                    subs.insert(channel.clone(), tx);
                    (rx, true)
                }
            }
        };
        let guard = Unsubscribe {
            backend: self.me.clone(),
            channel: channel.clone(),
        };
        let sub = Subscription::new(rx, Some(Box::new(guard)));
        if new {
            // Wait until Redis confirms, so nothing published after this
            // returns can be missed.
            let (tx, confirmed) = oneshot::channel();
            let _ = self.ctl.send(Ctl::Subscribe(channel, tx));
            match tokio::time::timeout(Duration::from_secs(5), confirmed).await {
                Ok(Ok(true)) => {}
                _ => return Err(BusError::Unavailable("subscribe not confirmed".into())),
            }
        }
        Ok(sub)
    }

    async fn ping(&self) -> Result<(), BusError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn presence_put(
        &self,
        doc: &str,
        entries: &[PresenceEntry],
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(), BusError> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.key(doc, "presence");
        let mut pipe = redis::pipe();
        for e in entries {
            let member = serde_json::to_string(e).map_err(|e| BusError::Corrupt(e.to_string()))?;
            pipe.cmd("ZADD")
                .arg(&key)
                .arg(now_ms + ttl_ms)
                .arg(member)
                .ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms * 4).ignore();
        let () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn presence_remove(&self, doc: &str, entry: &PresenceEntry) -> Result<(), BusError> {
        let member = serde_json::to_string(entry).map_err(|e| BusError::Corrupt(e.to_string()))?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.key(doc, "presence"))
            .arg(member)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn meta_put(&self, doc: &str, instance: &str, state: &str) -> Result<(), BusError> {
        let key = self.key(doc, "meta");
        self.meta_cmd::<i64>(redis::cmd("HSET").arg(key).arg(instance).arg(state))
            .await?;
        Ok(())
    }

    async fn meta_all(&self, doc: &str) -> Result<Vec<String>, BusError> {
        self.meta_cmd(redis::cmd("HVALS").arg(self.key(doc, "meta")))
            .await
    }

    async fn presence_list(
        &self,
        doc: &str,
        now_ms: i64,
    ) -> Result<(Vec<PresenceEntry>, Vec<PresenceEntry>), BusError> {
        let out: Vec<String> = self
            .scripts
            .presence
            .key(self.key(doc, "presence"))
            .arg(now_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut parts = out.split(|s| s == "--");
        let decode = |v: &[String]| -> Vec<PresenceEntry> {
            v.iter()
                .filter_map(|s| serde_json::from_str(s).ok())
                .collect()
        };
        let live = decode(parts.next().unwrap_or_default());
        let reaped = decode(parts.next().unwrap_or_default());
        Ok((live, reaped))
    }
}

impl RedisBackend {
    async fn meta_cmd<T: redis::FromRedisValue>(
        &self,
        cmd: &mut redis::Cmd,
    ) -> Result<T, BusError> {
        cmd.query_async(&mut self.conn()).await.map_err(unavailable)
    }
}

/// The pub/sub connection: (re)connect, (re)subscribe every channel with
/// local subscribers, tell them to resync, then deliver messages until the
/// connection drops or the server shuts down.
async fn pubsub_loop(
    client: redis::Client,
    subs: Subs,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        let ps = tokio::select! {
            _ = cancel.cancelled() => return,
            ps = client.get_async_pubsub() => ps,
        };
        let (mut sink, mut stream) = match ps {
            Ok(ps) => ps.split(),
            Err(e) => {
                debug!(error = %e, "pub/sub connect failed");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let channels: Vec<String> = subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        if !channels.is_empty() && sink.subscribe(&channels).await.is_err() {
            continue;
        }
        backoff = Duration::from_millis(50);
        if connected_before {
            info!(channels = channels.len(), "pub/sub reconnected; resyncing");
            metrics::counter!("tandem_pubsub_reconnects_total").increment(1);
            let senders: Vec<_> = subs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for tx in senders {
                let _ = tx.send(Arc::new(BusEvent::Resync));
            }
        }
        connected_before = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                c = ctl.recv() => match c {
                    None => return,
                    Some(Ctl::Subscribe(ch, reply)) => {
                        let ok = sink.subscribe(&ch).await.is_ok();
                        let _ = reply.send(ok);
                        if !ok {
                            break;
                        }
                    }
                    Some(Ctl::Unsubscribe(ch)) => {
                        // Resubscribed meanwhile? Then keep it.
                        let wanted = subs.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&ch);
                        if !wanted && sink.unsubscribe(&ch).await.is_err() {
                            break;
                        }
                    }
                },
                m = stream.next() => {
                    let Some(msg) = m else {
                        warn!("pub/sub connection lost; reconnecting");
                        break;
                    };
                    let channel = msg.get_channel_name().to_owned();
                    let payload: String = match msg.get_payload() {
                        Ok(p) => p,
                        Err(_) => continue,
                    };
                    let tx = subs.lock().unwrap_or_else(|e| e.into_inner()).get(&channel).cloned();
                    let Some(tx) = tx else { continue };
                    match decode_event(&payload) {
                        Ok(ev) => {
                            let _ = tx.send(Arc::new(ev));
                        }
                        Err(e) => warn!(error = %e, "undecodable bus message"),
                    }
                }
            }
        }
    }
}
