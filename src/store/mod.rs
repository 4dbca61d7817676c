//! Durable storage: documents, snapshots, the op journal and client seq
//! high-water marks.
//!
//! Owns: the [`Store`] trait and its implementations (`sqlite.rs`: the
//! embedded default; `postgres.rs`: clustered mode). Only this module
//! touches sqlx.
//! Must not import: axum, redis, the hub.

pub mod accounts;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::bus::ClientSeq;
use crate::doc::Record;

pub use accounts::{Accounts, Documents};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// The latest durable state of a document.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub version: u64,
    pub content: String,
    pub clients: Vec<ClientSeq>,
}

/// What one persistence round writes for one document.
#[derive(Clone, Debug)]
pub struct DocPersist {
    pub doc: String,
    pub version: u64,
    pub content: String,
    pub journal: Vec<Arc<Record>>,
    pub clients: Vec<ClientSeq>,
}

#[async_trait]
pub trait Store: accounts::Accounts + accounts::Documents + Send + Sync + 'static {
    /// Write a batch in one transaction: journal rows (idempotent), client
    /// seqs, and snapshots (never replacing a newer one).
    async fn persist(&self, batch: &[DocPersist], now_ms: i64) -> Result<(), StoreError>;
}

/// Errors worth retrying: the connection or the pool, not the query.
pub(crate) fn transient(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
    ) || matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57")))
}

/// Run a read up to three times on transient errors.
pub(crate) async fn retry<T, F, Fut>(mut f: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..2 {
        match f().await {
            Err(e) if transient(&e) => {
                tokio::time::sleep(delay).await;
                delay *= 3;
            }
            r => return r,
        }
    }
    f().await
}
