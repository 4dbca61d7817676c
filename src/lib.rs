//! Tandem: a real-time collaborative editing server (server-authoritative OT).
//!
//! Layers, inward only: `web` (axum) → `hub` (document tasks) → `bus`
//! (sequencer + fan-out) and `store` (durable state) → the pure core: `ot`,
//! `doc`, `protocol`, `client`, `limits`. See ARCHITECTURE.md.

pub mod bus;
pub mod client;
pub mod config;
pub mod doc;
pub mod hub;
pub mod limits;
pub mod ot;
pub mod persist;
pub mod protocol;
pub mod store;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::bus::memory::{MemoryBus, MemorySequencer};
use crate::bus::redis::{RedisBackend, RedisSettings};
use crate::bus::{Bus, BusError, Sequencer};
use crate::config::Config;
use crate::hub::{Background, Hub, HubSettings};
use crate::store::postgres::{PgSettings, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
pub use crate::web::{app, serve, AppState};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Redis(#[from] BusError),
}

/// The process-wide Prometheus recorder (installed once).
fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().ok())
        .clone()
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
            Arc::new(SqliteStore::open(&config.data_dir).await?)
        }
    };
    let background = TaskTracker::new();
    let cancel = CancellationToken::new();
    let (sequencer, bus): (Arc<dyn Sequencer>, Arc<dyn Bus>) = match &config.redis_url {
        Some(url) => {
            let settings = RedisSettings {
                url: url.0.clone(),
                prefix: config.redis_prefix.clone(),
                retain: config.oplog_retain,
            };
            let redis = RedisBackend::connect(settings, &background, cancel.clone()).await?;
            (redis.clone(), redis)
        }
        None => {
            let bus = MemoryBus::new();
            (
                Arc::new(MemorySequencer::new(bus.clone(), config.history_retain)),
                bus,
            )
        }
    };
    let settings = HubSettings {
        instance_id: config.instance_id.clone().unwrap_or_else(|| {
            format!("tandem-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
        }),
        history_retain: config.history_retain,
        snapshot_interval: Duration::from_millis(config.snapshot_interval_ms.max(10)),
        idle_unload: Duration::from_millis(config.idle_unload_ms),
        outbound_queue: config.outbound_queue.max(128),
        max_doc_chars: config.max_doc_chars,
        presence_ttl: Duration::from_millis(config.presence_ttl_ms.max(300)),
    };
    let hub = Hub::new(
        settings,
        sequencer,
        bus,
        store,
        Background {
            tracker: background,
            cancel,
        },
    );
    Ok(AppState {
        hub,
        config: Arc::new(config),
        sessions: TaskTracker::new(),
        metrics: metrics_handle(),
    })
}
