//! Redis backend (clustered mode): one [`RedisBackend`] serving the
//! sequencer (`sequencer.rs`), the bus (`bus.rs`), undo stacks and metadata
//! (`stacks.rs`), rate limits every instance shares (`rates.rs`) and
//! single-use WebSocket tickets (`tickets.rs`).
//! The only module that talks to Redis.
//!
//! Keys are hash-tagged per document so one document's keys share a Redis
//! Cluster slot: `<prefix>:{doc:<id>}:head|log|clients|durable|epoch|presence|stacks|meta|rhead|…`,
//! and its channel `<prefix>:{doc:<id>}:ch` (sharded pub/sub on a cluster,
//! `pushes.rs`); token revocations travel on the instance-wide channel
//! `<prefix>:revocations`. One server or a cluster: `conn.rs`. The commit is one Lua script
//! (`scripts/commit.lua` with `scripts/stack.lua` before it, loaded once,
//! run by SHA) taking a whole batch. Pub/sub runs on its own
//! connection in a task with a reconnect loop; after every (re)connect each
//! subscriber gets `Resync` and refills from the op log.
//! Owns: the connection, the scripts, key names and the record codec.
//! Must not import: axum, sqlx, the hub.

mod bus;
mod checks;
mod conn;
mod forwards;
mod pushes;
mod rates;
mod replies;
mod sequencer;
mod stacks;
mod tickets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use ::redis::Script;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::conn::Conn;
pub use self::conn::Topology;
use super::{BusError, BusEvent};
use crate::doc::{Record, RecordWire};

/// Scripts, hashed once; `invoke_async` runs EVALSHA and loads on NOSCRIPT.
struct Scripts {
    commit: Script,
    release: Script,
    range: Script,
    seed: Script,
    durable: Script,
    presence: Script,
    undo: Script,
    rate: Script,
    tickets: Script,
    lease: Script,
}

type Subs = Arc<Mutex<HashMap<String, broadcast::Sender<Arc<BusEvent>>>>>;

enum Ctl {
    Subscribe(String, oneshot::Sender<bool>),
    Unsubscribe(String),
}

/// Redis-backed [`super::Sequencer`], [`super::Bus`], [`super::UndoStacks`]
/// and [`super::MetaStore`].
pub struct RedisBackend {
    me: Weak<RedisBackend>,
    conn: Conn,
    cluster: bool,
    wait: Option<WaitReplicas>,
    /// Wait mode: connections of their own for `WAIT`, which blocks the
    /// connection it runs on (commits on `conn` go on meanwhile); several,
    /// so that documents' WAITs do not queue behind each other.
    wait_conns: Vec<Conn>,
    prefix: String,
    retain: usize,
    retain_bytes: usize,
    max_clients: usize,
    scripts: Scripts,
    subs: Subs,
    ctl: mpsc::UnboundedSender<Ctl>,
}

/// Connections kept for WAIT in wait mode (a document always uses the same
/// one).
const WAIT_CONNECTIONS: usize = 4;

/// `WAIT` on the commit path: an edit is acked (and shown to anyone) only
/// once this many replicas hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitReplicas {
    pub replicas: u32,
    pub timeout_ms: u64,
}

/// Settings for [`RedisBackend::connect`].
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `REDIS_URL`: one URL, or with `cluster` a comma-separated seed list.
    pub url: String,
    /// `REDIS_CLUSTER`: talk to a Redis Cluster (sharded pub/sub).
    pub cluster: bool,
    /// `REDIS_WAIT_REPLICAS` (0: none) and `REDIS_WAIT_TIMEOUT_MS`.
    pub wait: Option<WaitReplicas>,
    /// Prepended to every key and channel (isolates deployments and tests).
    pub prefix: String,
    /// Op log tail kept per document (`OPLOG_RETAIN`)...
    pub retain: usize,
    /// ...and its bytes of record JSON (`OPLOG_RETAIN_BYTES`).
    pub retain_bytes: usize,
    /// Clients kept in each document's dedupe hash (`MAX_CLIENTS_PER_DOC`).
    pub max_clients: usize,
    /// `DURABILITY=strict`: refuse to start unless an ack survives a power
    /// loss (`appendfsync always` on every master, or `WAIT` on replicas).
    pub strict: bool,
}

impl Default for RedisSettings {
    /// The server's defaults, on a local Redis.
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            cluster: false,
            wait: None,
            prefix: "tandem".into(),
            retain: 10_000,
            retain_bytes: 32 * 1024 * 1024,
            max_clients: 10_000,
            strict: false,
        }
    }
}

/// A script that uses the stack rules: `stack.lua` goes first.
fn with_stacks(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("../scripts/stack.lua")))
}

/// A script that keeps the op log's and the dedupe hash's bounds:
/// `bounds.lua` goes first.
fn with_bounds(body: &str) -> String {
    format!("{}\n{body}", include_str!("../scripts/bounds.lua"))
}

fn unavailable(e: redis::RedisError) -> BusError {
    BusError::Unavailable(e.to_string())
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

impl RedisBackend {
    /// Connect (commands on a reconnecting multiplexed connection, pub/sub on
    /// its own) and start the pub/sub task on `tracker`.
    pub async fn connect(
        settings: RedisSettings,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, BusError> {
        let topology =
            Topology::parse(&settings.url, settings.cluster).map_err(BusError::Unavailable)?;
        let mut conn = Conn::open(&topology).await.map_err(unavailable)?;
        let wait = settings.wait.filter(|w| w.replicas > 0);
        checks::check_server(&mut conn, settings.strict, wait.map_or(0, |w| w.replicas)).await?;
        let mut wait_conns = Vec::new();
        if wait.is_some() {
            for _ in 0..WAIT_CONNECTIONS {
                wait_conns.push(Conn::open(&topology).await.map_err(unavailable)?);
            }
        }
        let subs: Subs = Arc::default();
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let cluster = matches!(topology, Topology::Cluster(_));
        match topology {
            Topology::Single(url) => {
                let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
                tracker.spawn(bus::pubsub_loop(client, subs.clone(), ctl_rx, cancel));
            }
            Topology::Cluster(nodes) => {
                tracker.spawn(pushes::cluster_pubsub_loop(
                    nodes,
                    subs.clone(),
                    ctl_rx,
                    cancel,
                ));
            }
        }
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            conn,
            cluster,
            wait,
            wait_conns,
            prefix: settings.prefix,
            retain: settings.retain.max(1),
            retain_bytes: settings.retain_bytes,
            max_clients: settings.max_clients.max(1),
            scripts: Scripts {
                commit: with_stacks(&with_bounds(include_str!("../scripts/commit.lua"))),
                release: Script::new(include_str!("../scripts/release.lua")),
                range: Script::new(include_str!("../scripts/range.lua")),
                seed: Script::new(&with_bounds(include_str!("../scripts/seed.lua"))),
                durable: Script::new(include_str!("../scripts/durable.lua")),
                presence: Script::new(include_str!("../scripts/presence.lua")),
                undo: with_stacks(include_str!("../scripts/undo.lua")),
                rate: Script::new(include_str!("../scripts/rate.lua")),
                tickets: Script::new(include_str!("../scripts/tickets.lua")),
                lease: Script::new(include_str!("../scripts/lease.lua")),
            },
            subs,
            ctl,
        }))
    }

    fn key(&self, doc: &str, what: &str) -> String {
        format!("{}:{{doc:{}}}:{}", self.prefix, doc, what)
    }

    /// The instance-wide channel (no document's: theirs are
    /// `<prefix>:{doc:<id>}:ch`).
    fn revocations_channel(&self) -> String {
        format!("{}:revocations", self.prefix)
    }

    /// The connection for `doc`'s WAITs (the command connection if none).
    fn wait_conn(&self, doc: &str) -> Conn {
        if self.wait_conns.is_empty() {
            return self.conn();
        }
        let h = doc.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.wait_conns[h % self.wait_conns.len()].clone()
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The command that publishes on a document's channel: sharded in a
    /// cluster (only the document's shard carries it), plain otherwise.
    fn doc_publish(&self) -> &'static str {
        if self.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Delete every key under this backend's prefix (benchmarks, tests), on
    /// every master.
    pub async fn delete_all_keys(&self) -> Result<(), BusError> {
        let mut conn = self.conn();
        let mut keys_cmd = redis::cmd("KEYS");
        keys_cmd.arg(format!("{}:*", self.prefix));
        let replies = conn.on_each_master(keys_cmd).await.map_err(unavailable)?;
        let mut keys: Vec<String> = Vec::new();
        for r in replies {
            keys.extend(
                redis::from_redis_value::<Vec<String>>(r)
                    .map_err(|e| BusError::Corrupt(e.to_string()))?,
            );
        }
        // One DEL per key: in a cluster they live in different slots.
        for k in keys {
            let _: i64 = redis::cmd("DEL")
                .arg(k)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}
