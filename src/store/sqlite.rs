//! SQLite store: the embedded default (a file under `DATA_DIR`). WAL mode,
//! migrations from `migrations/sqlite` embedded in the binary. Batches are
//! written in multi-row `INSERT`s of at most `ROWS_PER_INSERT` rows.
//! Must not import: axum, redis, the hub.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use super::{journal_error, to_i64, Backend, BatchRows, DocPersist, SqlStore, Store, StoreError};
use crate::doc::Record;

/// The embedded store: [`SqliteStore::open`].
pub type SqliteStore = SqlStore<Sqlite>;

impl Backend for Sqlite {
    fn rows_affected(r: &SqliteQueryResult) -> u64 {
        r.rows_affected()
    }
    // A write, so the transaction takes SQLite's one write lock first
    // (a read first could not upgrade past a concurrent writer).
    const LOCK_USER: &'static str =
        "UPDATE users SET tokens_valid_after = tokens_valid_after WHERE id = $1 RETURNING id";
    // A column no key holds: rewriting the key would re-check every row
    // that references the document.
    const LOCK_DOCUMENT: &'static str =
        "UPDATE documents SET updated_at = updated_at WHERE id = $1 RETURNING id";
}

/// SQLite caps bound parameters per statement; stay well under it.
const ROWS_PER_INSERT: usize = 100;

/// How the embedded store writes.
#[derive(Clone, Debug, Default)]
pub struct SqliteSettings {
    /// `synchronous=FULL` (`DURABILITY=strict`): every commit is on the
    /// disk before it returns, so a power loss takes nothing acknowledged.
    /// Otherwise `NORMAL`: a killed process loses nothing, a power loss the
    /// last commits of the WAL.
    pub strict: bool,
    /// The file's bound in bytes (`SQLITE_MAX_BYTES`; 0: none): past it a
    /// write fails as on a full disk.
    pub max_bytes: u64,
}

/// SQLite's page size (its default, set explicitly so the byte bound is exact).
const PAGE_BYTES: u64 = 4096;

impl SqliteStore {
    /// Open (creating if needed) `dir/tandem.db` and apply migrations.
    pub async fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, &SqliteSettings::default()).await
    }

    /// [`SqliteStore::open`] with settings.
    pub async fn open_with(dir: &Path, settings: &SqliteSettings) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
        let url = format!("sqlite://{}", dir.join("tandem.db").display());
        let mut opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if settings.strict {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .page_size(PAGE_BYTES as u32)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        if settings.max_bytes > 0 {
            let pages = (settings.max_bytes / PAGE_BYTES).max(16);
            opts = opts.pragma("max_page_count", pages.to_string());
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// Journal rows in multi-row inserts; `idempotent`: a version already
/// journaled is skipped (the persister's rows), else it is an error.
async fn insert_journal(
    conn: &mut <Sqlite as sqlx::Database>::Connection,
    rows: &[(&str, &Record)],
    idempotent: bool,
) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut q = QueryBuilder::new(
            "INSERT INTO op_journal (document_id, version, op, user_id, client, seq, committed_at) ",
        );
        q.push_values(chunk, |mut b, (doc, r)| {
            b.push_bind(*doc)
                .push_bind(to_i64(r.version))
                .push_bind(r.op.to_string())
                .push_bind(r.user.as_str())
                .push_bind(r.client.as_str())
                .push_bind(to_i64(r.seq))
                .push_bind(r.time);
        });
        if idempotent {
            q.push(" ON CONFLICT DO NOTHING");
        }
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
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
        let rows = BatchRows::new(batch, &existing);
        insert_journal(&mut tx, &rows.journal, true).await?;
        for chunk in rows.clients.chunks(ROWS_PER_INSERT) {
            let mut q =
                QueryBuilder::new("INSERT INTO client_seqs (document_id, client, seq, version) ");
            q.push_values(chunk, |mut b, (doc, c)| {
                b.push_bind(*doc)
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
        for d in rows.docs.iter().filter(|d| !d.clients.is_empty()) {
            sqlx::query(super::TRIM_CLIENTS)
                .bind(&d.doc)
                .bind(&d.doc)
                .bind(to_i64(d.max_clients.max(1) as u64 - 1))
                .execute(&mut *tx)
                .await?;
        }
        for d in &rows.docs {
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
}
