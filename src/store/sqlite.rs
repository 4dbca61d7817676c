//! SQLite store: the embedded default (a file under `DATA_DIR`). WAL mode,
//! migrations from `migrations/sqlite` embedded in the binary.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use super::{DocPersist, Snapshot, Store, StoreError};
use crate::bus::ClientSeq;
use crate::doc::{Record, RecordWire};

pub struct SqliteStore {
    pool: SqlitePool,
}

/// SQLite caps bound parameters per statement; stay well under it.
const ROWS_PER_INSERT: usize = 100;

impl SqliteStore {
    /// Open (creating if needed) `dir/tandem.db` and apply migrations.
    pub async fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
        let url = format!("sqlite://{}", dir.join("tandem.db").display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_document(&self, doc: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO documents (id, created_at, updated_at) VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING")
            .bind(doc)
            .bind(now_ms)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn load(&self, doc: &str) -> Result<Option<Snapshot>, StoreError> {
        let Some(row) =
            sqlx::query("SELECT snapshot_version, snapshot_content FROM documents WHERE id = ?")
                .bind(doc)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let clients =
            sqlx::query("SELECT client, seq, version FROM client_seqs WHERE document_id = ?")
                .bind(doc)
                .fetch_all(&self.pool)
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
            content: row.get("snapshot_content"),
            clients,
        }))
    }

    async fn journal_after(
        &self,
        doc: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, op, user_id, client, seq, committed_at FROM op_journal \
             WHERE document_id = ? AND version > ? ORDER BY version LIMIT ?",
        )
        .bind(doc)
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let op: String = r.get("op");
                let wire = RecordWire {
                    version: r.get::<i64, _>("version") as u64,
                    op: serde_json::from_str(&op)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    user: r.get("user_id"),
                    client: r.get("client"),
                    seq: r.get::<i64, _>("seq") as u64,
                    time: r.get("committed_at"),
                };
                Record::from_wire(wire).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    async fn persist(&self, batch: &[DocPersist], now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Documents deleted meanwhile are skipped, not an error for the batch.
        let mut existing = std::collections::HashSet::new();
        for chunk in batch.chunks(ROWS_PER_INSERT * 5) {
            let mut q = QueryBuilder::new("SELECT id FROM documents WHERE id IN (");
            let mut sep = q.separated(", ");
            for d in chunk {
                sep.push_bind(d.doc.as_str());
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *tx).await? {
                existing.insert(row.get::<String, _>("id"));
            }
        }
        let batch: Vec<&DocPersist> = batch.iter().filter(|d| existing.contains(&d.doc)).collect();
        let journal: Vec<_> = batch
            .iter()
            .flat_map(|d| d.journal.iter().map(move |r| (&d.doc, r)))
            .collect();
        for chunk in journal.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::new(
                "INSERT INTO op_journal (document_id, version, op, user_id, client, seq, committed_at) ",
            );
            q.push_values(chunk, |mut b, (doc, r)| {
                b.push_bind(doc.as_str())
                    .push_bind(to_i64(r.version))
                    .push_bind(r.op.to_string())
                    .push_bind(r.user.as_str())
                    .push_bind(r.client.as_str())
                    .push_bind(to_i64(r.seq))
                    .push_bind(r.time);
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        let clients: Vec<_> = batch
            .iter()
            .flat_map(|d| d.clients.iter().map(move |c| (&d.doc, c)))
            .collect();
        for chunk in clients.chunks(ROWS_PER_INSERT) {
            let mut q =
                QueryBuilder::new("INSERT INTO client_seqs (document_id, client, seq, version) ");
            q.push_values(chunk, |mut b, (doc, c)| {
                b.push_bind(doc.as_str())
                    .push_bind(c.client.as_str())
                    .push_bind(to_i64(c.seq))
                    .push_bind(to_i64(c.version));
            });
            q.push(
                " ON CONFLICT(document_id, client) DO UPDATE SET seq = excluded.seq, version = excluded.version \
                 WHERE excluded.seq > client_seqs.seq",
            );
            q.build().execute(&mut *tx).await?;
        }
        for d in &batch {
            sqlx::query(
                "UPDATE documents SET snapshot_version = ?, snapshot_content = ?, updated_at = ? \
                 WHERE id = ? AND snapshot_version < ?",
            )
            .bind(to_i64(d.version))
            .bind(&d.content)
            .bind(now_ms)
            .bind(&d.doc)
            .bind(to_i64(d.version))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

super::accounts::impl_accounts!(SqliteStore);
