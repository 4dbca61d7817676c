//! Durable storage: documents, snapshots, the op journal and client seq
//! high-water marks.
//!
//! Owns: the [`Store`] trait and its one implementation, [`SqlStore`],
//! generic over the sqlx backend. The SQL both backends share is written
//! once, generic over [`Backend`]: `documents.rs` (snapshots, journal) and
//! `accounts_sql.rs` (users, document rows, members, metadata; the
//! [`Accounts`] trait and its rows are `accounts.rs`). `sqlite.rs` (the
//! embedded default) and `postgres.rs` (clustered mode) add connecting,
//! migrating and their batched [`Store::persist`]. Only this module touches
//! sqlx.
//! Must not import: axum, redis, the hub, the bus (the embedded journal is
//! joined to the bus in `lib.rs`).

pub mod accounts;
mod accounts_sql;
mod documents;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::doc::ClientSeq;
use crate::doc::Record;

pub use accounts::Accounts;
pub use documents::Documents;

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
    /// The document's history identity as stored (see `crate::epoch`):
    /// minted when the document was created, the legacy `"0"` for rows from
    /// before epochs. The embedded sequencer's source; Redis mints its own.
    pub epoch: String,
}

/// What one persistence round writes for one document.
#[derive(Clone, Debug)]
pub struct DocPersist {
    pub doc: String,
    pub version: u64,
    pub content: String,
    pub journal: Vec<Arc<Record>>,
    pub clients: Vec<ClientSeq>,
    /// Client rows the store keeps for the document (`MAX_CLIENTS_PER_DOC`):
    /// beyond it, those with the oldest versions are deleted.
    pub max_clients: usize,
}

/// A store on one sqlx backend: its pool. [`sqlite::SqliteStore`] and
/// [`postgres::PgStore`] name the two instances.
pub struct SqlStore<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
}

impl<DB: sqlx::Database> SqlStore<DB> {
    /// A connection for one write transaction (see [`Writer`]).
    async fn writer(&self) -> Result<Writer<DB>, sqlx::Error> {
        Ok(Writer {
            conn: self.pool.acquire().await?,
            committed: false,
        })
    }
}

/// A pooled connection held for one write transaction: back to the pool
/// only once the transaction committed ([`WriteTx::commit`]); after anything
/// else (an error, an early return) it is closed instead. A failed write
/// can leave the connection out of step with the database: SQLite rolls a
/// whole transaction back by itself on `SQLITE_FULL` or `SQLITE_IOERR`
/// while sqlx still counts it open, so the next `begin` on that connection
/// opens a savepoint — a real transaction that every later "commit" only
/// nests in. Writes on it were then acknowledged and never written, and it
/// held SQLite's write lock against every other connection (issue 30).
/// Locals drop in reverse order, so a [`WriteTx`] borrowed from the
/// writer is rolled back before the connection closes.
pub(crate) struct Writer<DB: sqlx::Database> {
    conn: sqlx::pool::PoolConnection<DB>,
    committed: bool,
}

impl<DB: sqlx::Database> Writer<DB> {
    pub(crate) async fn begin(&mut self) -> Result<WriteTx<'_, DB>, sqlx::Error> {
        let Writer { conn, committed } = self;
        Ok(WriteTx {
            tx: sqlx::Connection::begin(&mut **conn).await?,
            committed,
        })
    }
}

/// The transaction of a [`Writer`]: statements run on it as on a
/// connection; its commit returns the connection to the pool.
pub(crate) struct WriteTx<'a, DB: sqlx::Database> {
    tx: sqlx::Transaction<'a, DB>,
    committed: &'a mut bool,
}

impl<DB: sqlx::Database> WriteTx<'_, DB> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        *self.committed = true;
        Ok(())
    }
}

impl<DB: sqlx::Database> std::ops::Deref for WriteTx<'_, DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for WriteTx<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

impl<DB: sqlx::Database> Drop for Writer<DB> {
    fn drop(&mut self) {
        if !self.committed {
            metrics::counter!("tandem_store_connections_discarded_total").increment(1);
            self.conn.close_on_drop();
        }
    }
}

/// What the shared SQL needs of a backend beyond [`sqlx::Database`]: the
/// backends' query results share no trait.
pub trait Backend: sqlx::Database {
    fn rows_affected(r: &Self::QueryResult) -> u64;
    /// Inside a transaction, lock user `$1`'s row against concurrent
    /// references (a document being created for it) until the end;
    /// returns its id, or no row.
    const LOCK_USER: &'static str;
    /// The same for document `$1`'s row (its members being changed).
    const LOCK_DOCUMENT: &'static str;
}

/// One batch's rows by table, for the documents that still exist (those
/// deleted meanwhile are skipped, not an error for the batch).
struct BatchRows<'a> {
    docs: Vec<&'a DocPersist>,
    journal: Vec<(&'a str, &'a Record)>,
    clients: Vec<(&'a str, &'a ClientSeq)>,
}

impl<'a> BatchRows<'a> {
    fn new(batch: &'a [DocPersist], existing: &HashSet<String>) -> Self {
        let docs: Vec<&DocPersist> = batch.iter().filter(|d| existing.contains(&d.doc)).collect();
        let journal = docs
            .iter()
            .flat_map(|&d| d.journal.iter().map(move |r| (d.doc.as_str(), &**r)))
            .collect();
        let clients = docs
            .iter()
            .flat_map(|&d| d.clients.iter().map(move |c| (d.doc.as_str(), c)))
            .collect();
        Self {
            docs,
            journal,
            clients,
        }
    }
}

/// Keep a document's `max_clients` newest client rows (binds: the document
/// twice, then `max_clients - 1`): a resend from a client silent that long
/// is no longer recognised, the price of a bounded table.
const TRIM_CLIENTS: &str = "DELETE FROM client_seqs WHERE document_id = $1 AND version < \
     (SELECT version FROM client_seqs WHERE document_id = $2 ORDER BY version DESC LIMIT 1 OFFSET $3)";

/// Versions and seqs are stored as BIGINT.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A journal write that failed: a version already journaled means the op
/// log and the journal disagree (never overwritten: `Corrupt`); anything
/// else is an outage the commit may retry.
fn journal_error(e: sqlx::Error) -> StoreError {
    match e.as_database_error() {
        Some(d) if d.is_unique_violation() => {
            StoreError::Corrupt("the journal already holds a version being committed".into())
        }
        _ => StoreError::Db(e),
    }
}

/// Everything durable: accounts, documents, and the op journal the embedded
/// sequencer appends to before an op counts as committed.
#[async_trait]
pub trait Store: Accounts + Documents + Send + Sync + 'static {
    /// Write a batch in one transaction: journal rows (idempotent), client
    /// seqs, and snapshots (never replacing a newer one).
    async fn persist(&self, batch: &[DocPersist], now_ms: i64) -> Result<(), StoreError>;
    /// The embedded commit's durable write: several documents' new records
    /// in one transaction (all or none). A version the journal already
    /// holds is [`StoreError::Corrupt`], never overwritten.
    async fn journal_append(&self, batches: &[(&str, &[Arc<Record>])]) -> Result<(), StoreError>;
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
