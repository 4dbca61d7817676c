//! Reads of documents' durable state — the latest snapshot with its client
//! seqs, and the op journal — written once for both backends (placeholders
//! `$1..$n`, numbered in order of appearance, which both accept). Reads
//! retry transient connection errors.
//! Must not import: axum, redis, the hub.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{retry, to_i64, Backend, Snapshot, SqlStore, StoreError};
use crate::doc::ClientSeq;
use crate::doc::{Record, RecordWire};

/// Reads of documents' durable state.
#[async_trait]
pub trait Documents: Send + Sync {
    /// Create the document (empty, version 0, no owner, a fresh epoch)
    /// unless it exists.
    async fn ensure_document(&self, doc: &str, now_ms: i64) -> Result<(), StoreError>;
    /// The newest snapshot, or `None` if there is no such document.
    async fn load(&self, doc: &str) -> Result<Option<Snapshot>, StoreError>;
    /// Journal records with version > `after`, oldest first, at most
    /// `limit` and at most `max_bytes` of op JSON (but at least one record
    /// if there is one): the database sums the sizes, so no more than the
    /// page is read into memory.
    async fn journal_after(
        &self,
        doc: &str,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError>;
    /// The database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// The database takes a write: one small row of `instance`'s, in a
    /// transaction of its own (readiness while writes are failing).
    async fn probe_write(&self, instance: &str, now_ms: i64) -> Result<(), StoreError>;
    /// Close the pool (shutdown).
    async fn close(&self);
}

// The bounds are those of `Accounts for SqlStore<DB>` (`accounts_sql.rs`): what
// the shared SQL binds and reads. Rust does not imply them from a helper
// trait, so each impl states them.
#[async_trait]
impl<DB> Documents for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + Type<DB>,
{
    async fn ensure_document(&self, doc: &str, now_ms: i64) -> Result<(), StoreError> {
        let epoch = crate::epoch::fresh();
        retry(|| {
            sqlx::query(
                "INSERT INTO documents (id, created_at, updated_at, epoch) VALUES ($1, $2, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(doc)
            .bind(now_ms)
            .bind(epoch.as_str())
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn load(&self, doc: &str) -> Result<Option<Snapshot>, StoreError> {
        let row = retry(|| {
            sqlx::query(
                "SELECT snapshot_version, snapshot_content, epoch FROM documents WHERE id = $1",
            )
            .bind(doc)
            .fetch_optional(&self.pool)
        })
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let clients = retry(|| {
            sqlx::query("SELECT client, seq, version FROM client_seqs WHERE document_id = $1")
                .bind(doc)
                .fetch_all(&self.pool)
        })
        .await?
        .into_iter()
        .map(|r| ClientSeq {
            client: r.get("client"),
            seq: r.get::<i64, _>("seq") as u64,
            version: r.get::<i64, _>("version") as u64,
        })
        .collect();
        Ok(Some(Snapshot {
            version: row.get::<i64, _>("snapshot_version") as u64,
            content: String::from_utf8(row.get::<Vec<u8>, _>("snapshot_content")).map_err(
                |_| StoreError::Corrupt(format!("document {doc}: snapshot is not UTF-8")),
            )?,
            clients,
            epoch: crate::epoch::from_stored(row.get("epoch")),
        }))
    }

    async fn journal_after(
        &self,
        doc: &str,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let after = to_i64(after);
        let max_bytes = to_i64(max_bytes as u64);
        // The running total of op sizes picks the page; the first record
        // comes whatever its size.
        let rows = retry(|| {
            sqlx::query(
                "SELECT version, op, user_id, client, seq, committed_at FROM ( \
                   SELECT version, op, user_id, client, seq, committed_at, octet_length(op) AS size, \
                     SUM(octet_length(op)) OVER (ORDER BY version ROWS UNBOUNDED PRECEDING) AS upto \
                   FROM (SELECT * FROM op_journal WHERE document_id = $1 AND version > $2 \
                         ORDER BY version LIMIT $3) AS j \
                 ) AS w WHERE upto <= $4 OR upto = size ORDER BY version",
            )
            .bind(doc)
            .bind(after)
            .bind(i64::from(limit))
            .bind(max_bytes)
            .fetch_all(&self.pool)
        })
        .await?;
        let corrupt = |e: String| StoreError::Corrupt(e);
        rows.into_iter()
            .map(|r| {
                let op: String = r.get("op");
                let wire = RecordWire {
                    version: r.get::<i64, _>("version") as u64,
                    op: serde_json::from_str(&op).map_err(|e| corrupt(e.to_string()))?,
                    user: r.get("user_id"),
                    client: r.get("client"),
                    seq: r.get::<i64, _>("seq") as u64,
                    time: r.get("committed_at"),
                    trace: None,
                };
                Record::from_wire(wire).map_err(|e| corrupt(e.to_string()))
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn probe_write(&self, instance: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut w = self.writer().await?;
        let mut tx = w.begin().await?;
        sqlx::query(
            "INSERT INTO storage_probe (instance, at) VALUES ($1, $2) \
             ON CONFLICT (instance) DO UPDATE SET at = excluded.at",
        )
        .bind(instance)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
