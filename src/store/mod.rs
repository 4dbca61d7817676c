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

use async_trait::async_trait;

use crate::bus::ClientSeq;
use crate::doc::Record;

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
pub trait Store: accounts::Accounts + Send + Sync + 'static {
    /// Create the document (empty, version 0) unless it exists.
    async fn ensure_document(&self, doc: &str, now_ms: i64) -> Result<(), StoreError>;
    /// The newest snapshot, or `None` if there is no such document.
    async fn load(&self, doc: &str) -> Result<Option<Snapshot>, StoreError>;
    /// Journal records with version > `after`, oldest first, at most `limit`.
    async fn journal_after(
        &self,
        doc: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError>;
    /// Write a batch in one transaction: journal rows (idempotent), client
    /// seqs, and snapshots (never replacing a newer one).
    async fn persist(&self, batch: &[DocPersist], now_ms: i64) -> Result<(), StoreError>;
    async fn close(&self);
    /// The database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
