//! PostgreSQL store: the durable home of every document in clustered mode.
//! Migrations from `migrations/postgres` are embedded and applied at start.
//! Batches are written with `UNNEST` arrays: one statement per table per
//! batch, whatever the number of rows.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row;

use super::{DocPersist, Snapshot, Store, StoreError};
use crate::bus::ClientSeq;
use crate::doc::{Record, RecordWire};

/// Pool and timeout settings.
#[derive(Clone, Debug)]
pub struct PgSettings {
    pub url: String,
    pub pool_size: u32,
    pub statement_timeout: Duration,
}

pub struct PgStore {
    pool: PgPool,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Errors worth retrying: the connection or the pool, not the query.
fn transient(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
    ) || matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57")))
}

/// Run a read up to three times on transient errors.
async fn retry<T, F, Fut>(mut f: F) -> Result<T, sqlx::Error>
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

impl PgStore {
    pub async fn connect(settings: &PgSettings) -> Result<Self, StoreError> {
        let timeout_ms = settings.statement_timeout.as_millis().to_string();
        let opts: PgConnectOptions = settings
            .url
            .parse::<PgConnectOptions>()?
            .options([("statement_timeout", timeout_ms.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size.max(1))
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ensure_document(&self, doc: &str, now_ms: i64) -> Result<(), StoreError> {
        retry(|| {
            sqlx::query(
                "INSERT INTO documents (id, created_at, updated_at) VALUES ($1, $2, $2) ON CONFLICT (id) DO NOTHING",
            )
            .bind(doc)
            .bind(now_ms)
            .execute(&self.pool)
        })
        .await?;
        Ok(())
    }

    async fn load(&self, doc: &str) -> Result<Option<Snapshot>, StoreError> {
        let row = retry(|| {
            sqlx::query("SELECT snapshot_version, snapshot_content FROM documents WHERE id = $1")
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
        let rows = retry(|| {
            sqlx::query(
                "SELECT version, op, user_id, client, seq, committed_at FROM op_journal \
                 WHERE document_id = $1 AND version > $2 ORDER BY version LIMIT $3",
            )
            .bind(doc)
            .bind(to_i64(after))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
        })
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
        let ids: Vec<&str> = batch.iter().map(|d| d.doc.as_str()).collect();
        let existing: std::collections::HashSet<String> =
            sqlx::query_scalar("SELECT id FROM documents WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let batch: Vec<&DocPersist> = batch.iter().filter(|d| existing.contains(&d.doc)).collect();
        let rows: Vec<_> = batch
            .iter()
            .flat_map(|d| d.journal.iter().map(move |r| (&d.doc, r)))
            .collect();
        if !rows.is_empty() {
            sqlx::query(
                "INSERT INTO op_journal (document_id, version, op, user_id, client, seq, committed_at) \
                 SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(rows.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| to_i64(r.version)).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.op.to_string()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.user.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.client.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| to_i64(r.seq)).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.time).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        let seqs: Vec<_> = batch
            .iter()
            .flat_map(|d| d.clients.iter().map(move |c| (&d.doc, c)))
            .collect();
        if !seqs.is_empty() {
            sqlx::query(
                "INSERT INTO client_seqs (document_id, client, seq, version) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT (document_id, client) DO UPDATE SET seq = excluded.seq, version = excluded.version \
                 WHERE excluded.seq > client_seqs.seq",
            )
            .bind(seqs.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>())
            .bind(seqs.iter().map(|(_, c)| c.client.as_str()).collect::<Vec<_>>())
            .bind(seqs.iter().map(|(_, c)| to_i64(c.seq)).collect::<Vec<_>>())
            .bind(seqs.iter().map(|(_, c)| to_i64(c.version)).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        // A snapshot never replaces a newer one, whichever instance wrote it.
        sqlx::query(
            "UPDATE documents d SET snapshot_version = u.v, snapshot_content = u.c, updated_at = $4 \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS u(id, v, c) \
             WHERE d.id = u.id AND d.snapshot_version < u.v",
        )
        .bind(batch.iter().map(|d| d.doc.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|d| to_i64(d.version)).collect::<Vec<_>>())
        .bind(batch.iter().map(|d| d.content.as_str()).collect::<Vec<_>>())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
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

super::accounts::impl_accounts!(PgStore);
