//! PostgreSQL store: the durable home of every document in clustered mode.
//! Migrations from `migrations/postgres` are embedded and applied at start.
//! Batches are written with `UNNEST` arrays: one statement per table per
//! batch, whatever the number of rows.
//! Must not import: axum, redis, the hub.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult, Postgres};

use super::{journal_error, to_i64, Backend, BatchRows, DocPersist, SqlStore, Store, StoreError};
use crate::doc::Record;

/// Pool and timeout settings.
#[derive(Clone, Debug)]
pub struct PgSettings {
    pub url: String,
    pub pool_size: u32,
    pub statement_timeout: Duration,
}

/// The clustered mode's store: [`PgStore::connect`].
pub type PgStore = SqlStore<Postgres>;

impl Backend for Postgres {
    fn rows_affected(r: &PgQueryResult) -> u64 {
        r.rows_affected()
    }
    // FOR UPDATE conflicts with the KEY SHARE lock a foreign key check
    // takes, so a document being created for the user waits, then fails.
    const LOCK_USER: &'static str = "SELECT id FROM users WHERE id = $1 FOR UPDATE";
    // NO KEY: journal inserts (a KEY SHARE lock for their foreign key) go on.
    const LOCK_DOCUMENT: &'static str = "SELECT id FROM documents WHERE id = $1 FOR NO KEY UPDATE";
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

/// Journal rows in one statement; `idempotent`: a version already
/// journaled is skipped (the persister's rows), else it is an error.
async fn insert_journal(
    conn: &mut <Postgres as sqlx::Database>::Connection,
    rows: &[(&str, &Record)],
    idempotent: bool,
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let conflict = if idempotent {
        " ON CONFLICT DO NOTHING"
    } else {
        ""
    };
    sqlx::query(&format!(
        "INSERT INTO op_journal (document_id, version, op, user_id, client, seq, committed_at) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]){conflict}",
    ))
    .bind(rows.iter().map(|(d, _)| *d).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| to_i64(r.version)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.op.to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.user.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.client.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| to_i64(r.seq)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, r)| r.time).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn journal_append(&self, batches: &[(&str, &[Arc<Record>])]) -> Result<(), StoreError> {
        let rows: Vec<(&str, &Record)> = batches
            .iter()
            .flat_map(|(doc, recs)| recs.iter().map(move |r| (*doc, &**r)))
            .collect();
        let mut w = self.writer().await.map_err(journal_error)?;
        let mut tx = w.begin().await.map_err(journal_error)?;
        insert_journal(&mut tx, &rows, false)
            .await
            .map_err(journal_error)?;
        tx.commit().await.map_err(journal_error)
    }

    async fn persist(&self, batch: &[DocPersist], now_ms: i64) -> Result<(), StoreError> {
        let mut w = self.writer().await?;
        let mut tx = w.begin().await?;
        let ids: Vec<&str> = batch.iter().map(|d| d.doc.as_str()).collect();
        let existing: std::collections::HashSet<String> =
            sqlx::query_scalar("SELECT id FROM documents WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
        let BatchRows {
            docs,
            journal,
            clients,
        } = BatchRows::new(batch, &existing);
        insert_journal(&mut tx, &journal, true).await?;
        if !clients.is_empty() {
            sqlx::query(
                "INSERT INTO client_seqs (document_id, client, seq, version) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT (document_id, client) DO UPDATE SET seq = excluded.seq, version = excluded.version \
                 WHERE excluded.seq > client_seqs.seq",
            )
            .bind(clients.iter().map(|(d, _)| *d).collect::<Vec<_>>())
            .bind(clients.iter().map(|(_, c)| c.client.as_str()).collect::<Vec<_>>())
            .bind(clients.iter().map(|(_, c)| to_i64(c.seq)).collect::<Vec<_>>())
            .bind(clients.iter().map(|(_, c)| to_i64(c.version)).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        for d in docs.iter().filter(|d| !d.clients.is_empty()) {
            sqlx::query(super::TRIM_CLIENTS)
                .bind(&d.doc)
                .bind(&d.doc)
                .bind(to_i64(d.max_clients.max(1) as u64 - 1))
                .execute(&mut *tx)
                .await?;
        }
        // A snapshot never replaces a newer one, whichever instance wrote it.
        sqlx::query(
            "UPDATE documents d SET snapshot_version = u.v, snapshot_content = u.c, updated_at = $4 \
             FROM UNNEST($1::text[], $2::bigint[], $3::bytea[]) AS u(id, v, c) \
             WHERE d.id = u.id AND d.snapshot_version < u.v",
        )
        .bind(docs.iter().map(|d| d.doc.as_str()).collect::<Vec<_>>())
        .bind(docs.iter().map(|d| to_i64(d.version)).collect::<Vec<_>>())
        .bind(docs.iter().map(|d| d.content.as_bytes()).collect::<Vec<_>>())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
