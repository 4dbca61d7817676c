//! Tandem: a real-time collaborative editing server (server-authoritative OT).
//!
//! Layers, inward only: `web` (axum) → `hub` (document tasks) → `bus`
//! (sequencer + fan-out) and `store` (durable state) → the pure core: `ot`,
//! `doc`, `protocol`, `client`, `undo`, `meta`, `limits` (crate
//! `tandem-core`, re-exported here). See ARCHITECTURE.md.

pub mod auth;
pub mod bus;
pub mod config;
pub mod epoch;
pub mod health;
pub mod hub;
pub mod otel;
pub mod persist;
pub mod store;
pub mod telemetry;
pub mod web;

// The pure core lives in its own crate (crates/tandem-core), which has no
// I/O dependencies; its modules keep their paths here (`crate::ot`,
// `tandem::protocol`, …).
#[doc(hidden)]
pub use tandem_core::fuzzing;
pub use tandem_core::{
    awareness, batch, checksum, client, commit, doc, language, limits, meta, ot, pipeline,
    protocol, runs, undo,
};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use tokio_util::sync::CancellationToken;

use crate::auth::{Keys, MIN_SECRET_BYTES};
use crate::bus::redis::{RedisBackend, RedisSettings};
use crate::bus::{Backends, BusError};
use crate::config::Config;
use crate::hub::{Background, Hub, HubSettings};
use crate::store::postgres::{PgSettings, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
pub use crate::web::{app, serve, AppState};

/// The store as the embedded sequencer's journal: the one place the bus's
/// `Journal` meets the store (neither module imports the other).
struct StoreJournal(Arc<dyn Store>);

#[async_trait::async_trait]
impl crate::bus::Journal for StoreJournal {
    async fn append(&self, doc: &str, records: &[Arc<doc::Record>]) -> Result<(), BusError> {
        self.append_many(&[(doc, records)]).await
    }

    async fn append_many(&self, batches: &[(&str, &[Arc<doc::Record>])]) -> Result<(), BusError> {
        self.0.journal_append(batches).await.map_err(|e| match e {
            StoreError::Corrupt(m) => BusError::Corrupt(m),
            e => BusError::Unavailable(format!("journal: {e}")),
        })
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Redis(#[from] BusError),
    #[error("{0}")]
    Config(String),
}

/// Token keys: JWT_SECRET if set (required, at least 32 bytes, in clustered
/// mode, where every instance must share it); otherwise a secret generated
/// once and kept in DATA_DIR/jwt_secret (embedded mode).
fn load_keys(config: &Config) -> Result<Keys, StartError> {
    let weak = |_| {
        StartError::Config(format!(
            "JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
        ))
    };
    let previous = config.jwt_previous_secret.as_ref().map(|s| s.0.as_bytes());
    let make = |secret: &[u8]| {
        Keys::new(
            secret,
            previous,
            &config.jwt_issuer,
            &config.jwt_audience,
            config.token_ttl_secs,
        )
        .map_err(weak)
    };
    if let Some(s) = &config.jwt_secret {
        return make(s.0.as_bytes());
    }
    if config.redis_url.is_some() {
        return Err(StartError::Config(
            "JWT_SECRET is required in clustered mode (REDIS_URL set): every instance must share it".into(),
        ));
    }
    let path = config.data_dir.join("jwt_secret");
    let secret = match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= MIN_SECRET_BYTES => s.trim().to_owned(),
        _ => {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            let s = hex::encode(bytes);
            write_private(&path, &s)
                .map_err(|e| StartError::Config(format!("cannot write {}: {e}", path.display())))?;
            s
        }
    };
    make(secret.as_bytes())
}

/// Write a file readable by its owner only.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    std::io::Write::write_all(&mut opts.open(path)?, contents.as_bytes())
}

/// Build the application state from the config: pick the store, sequencer
/// and bus, start the hub.
pub async fn build(config: Config) -> Result<AppState, StartError> {
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => Arc::new(
            PgStore::connect(&PgSettings {
                url: url.0.clone(),
                pool_size: config.db_pool_size,
                statement_timeout: Duration::from_millis(config.db_statement_timeout_ms.max(100)),
            })
            .await?,
        ),
        None => {
            if config.redis_url.is_some() {
                tracing::warn!(
                    "REDIS_URL without DATABASE_URL: this instance keeps snapshots in its own SQLite file; \
                     instances of a cluster should share PostgreSQL"
                );
            }
            Arc::new(
                SqliteStore::open_with(
                    &config.data_dir,
                    &crate::store::sqlite::SqliteSettings {
                        strict: config.durability == crate::config::Durability::Strict,
                        max_bytes: config.sqlite_max_bytes,
                    },
                )
                .await?,
            )
        }
    };
    let background = TaskTracker::new();
    let cancel = CancellationToken::new();
    let history_retain = doc::Retain {
        count: config.history_retain,
        bytes: config.history_retain_bytes,
    };
    let backends = match &config.redis_url {
        Some(url) => {
            let settings = RedisSettings {
                url: url.0.clone(),
                cluster: config.redis_cluster,
                wait: Some(crate::bus::redis::WaitReplicas {
                    replicas: config.redis_wait_replicas,
                    timeout_ms: config.redis_wait_timeout_ms,
                }),
                prefix: config.redis_prefix.clone(),
                retain: config.oplog_retain,
                retain_bytes: config.oplog_retain_bytes,
                max_clients: config.max_clients_per_doc,
                strict: config.durability == crate::config::Durability::Strict,
            };
            Backends::redis(RedisBackend::connect(settings, &background, cancel.clone()).await?)
        }
        // Embedded: a batch is in the store's journal before it is acked.
        None => Backends::memory(
            history_retain,
            config.max_clients_per_doc,
            Some(Arc::new(StoreJournal(store.clone()))),
        ),
    };
    let settings = HubSettings {
        instance_id: config.instance_id.clone().unwrap_or_else(|| {
            format!("tandem-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        }),
        history_retain,
        max_clients_per_doc: config.max_clients_per_doc,
        max_tags_per_doc: config.max_tags_per_doc,
        snapshot_interval: Duration::from_millis(config.snapshot_interval_ms.max(10)),
        idle_unload: Duration::from_millis(config.idle_unload_ms),
        outbound_queue: config.outbound_queue.max(128),
        max_doc_chars: config.max_doc_chars,
        presence_ttl: Duration::from_millis(config.presence_ttl_ms.max(300)),
        checksum_every: config.checksum_every,
        // One committer per document needs a lease every instance sees.
        commit_leader: (config.commit_leader && config.redis_url.is_some())
            .then(|| Duration::from_millis(config.leader_lease_ms)),
    };
    let keys = load_keys(&config)?;
    let conn_limits = web::ConnLimits::new(&config).map_err(StartError::Config)?;
    // Subscribed before the first request is served, so no revocation
    // announced from then on is missed.
    let tokens = web::tokens::Tokens::new(
        store.clone(),
        backends.revocations.clone(),
        Duration::from_millis(config.token_check_cache_ms),
    );
    let revocations = backends.revocations.subscribe_revocations().await?;
    background.spawn(tokens.clone().run(revocations, cancel.clone()));
    let background = Background {
        tracker: background,
        cancel,
    };
    let abuse = web::abuse::Abuse::new(&config, backends.rates.clone());
    let tickets = backends.tickets.clone();
    let hub = Hub::new(settings, backends, store.clone(), background);
    Ok(AppState {
        hub,
        store,
        config: Arc::new(config),
        keys: Arc::new(keys),
        tokens,
        sessions: TaskTracker::new(),
        metrics: telemetry::metrics_handle(),
        abuse,
        conn_limits,
        tickets,
    })
}

/// The state [`build`] makes from the default config (then `tune`), on the
/// memory sequencer and bus and SQLite in a temporary directory (kept as
/// long as the returned `TempDir`): in-process tests without network.
#[cfg(test)]
pub(crate) async fn test_state(tune: impl FnOnce(&mut Config)) -> (AppState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults();
    config.data_dir = dir.path().to_owned();
    config.database_url = None;
    config.redis_url = None;
    config.jwt_secret = Some(config::Secret("k".repeat(32)));
    config.instance_id = Some("test".into());
    tune(&mut config);
    (build(config).await.unwrap(), dir)
}
