//! The SQL of [`Accounts`] for [`SqlStore`], written once for both backends
//! (placeholders `$1..$n`, numbered in order of appearance, which both
//! accept): users and tokens, document rows, metadata states, members.
//! Must not import: axum, redis, the hub.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::accounts::{
    role_from_str, role_str, Accounts, Created, DocListItem, DocumentRow, MemberRow, Revoked,
    Shared, TokenState, UserRow, MAX_MEMBERS_PAGE,
};
use super::{Backend, SqlStore, StoreError};
use crate::protocol::Role;

impl<DB> SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
{
    /// The user `sql` (selecting the `UserRow` columns) finds by `key`.
    async fn user_where(
        &self,
        sql: &'static str,
        key: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| UserRow {
            id: r.get("id"),
            username: r.get("username"),
            name: r.get("name"),
            password_hash: r.get("password_hash"),
        }))
    }
}

/// Lock the row a backend's `LOCK_*` query selects by `key` until the
/// transaction ends; false when there is no such row.
async fn lock_row<DB>(
    conn: &mut DB::Connection,
    lock: &'static str,
    key: &str,
) -> Result<bool, StoreError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    Ok(sqlx::query(lock)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

// The bounds are those of `Documents for SqlStore<DB>` (`documents.rs`).
#[async_trait]
impl<DB> Accounts for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB> + ColumnIndex<DB::Row>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
{
    async fn create_user(&self, u: &UserRow, now_ms: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO users (id, username, name, password_hash, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(u.id.as_str())
        .bind(u.username.as_str())
        .bind(u.name.as_str())
        .bind(u.password_hash.as_str())
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&r) == 1)
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where(
            "SELECT id, username, name, password_hash FROM users WHERE username = $1",
            username,
        )
        .await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where(
            "SELECT id, username, name, password_hash FROM users WHERE id = $1",
            id,
        )
        .await
    }

    async fn token_state(
        &self,
        user_id: &str,
        jti: Option<&str>,
    ) -> Result<Option<TokenState>, StoreError> {
        let jti = jti.unwrap_or("");
        let row = super::retry(|| {
            sqlx::query(
                "SELECT u.tokens_valid_after, \
                 (SELECT COUNT(*) FROM revoked_tokens r WHERE r.jti = $1 AND r.user_id = u.id) AS revoked \
                 FROM users u WHERE u.id = $2",
            )
            .bind(jti)
            .bind(user_id)
            .fetch_optional(&self.pool)
        })
        .await?;
        Ok(row.map(|r| TokenState {
            valid_after_ms: r.get("tokens_valid_after"),
            revoked: r.get::<i64, _>("revoked") > 0,
        }))
    }

    async fn revoke_token(
        &self,
        user_id: &str,
        jti: &str,
        expires_ms: i64,
        now_ms: i64,
        max_per_user: i64,
    ) -> Result<Revoked, StoreError> {
        let mut w = self.writer().await?;
        let mut tx = w.begin().await?;
        // A write first: the sweep keeps the table to unexpired tokens.
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM users WHERE id = $1) AS present, \
             (SELECT COUNT(*) FROM revoked_tokens WHERE user_id = $1) AS kept",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        let (present, kept): (i64, i64) = (row.get("present"), row.get("kept"));
        let outcome = if present == 0 {
            Revoked::NoUser
        } else if kept < max_per_user {
            // A second logout of the same token changes nothing.
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, user_id, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti)
            .bind(user_id)
            .bind(expires_ms)
            .execute(&mut *tx)
            .await?;
            Revoked::Token
        } else {
            let r = sqlx::query(
                "UPDATE users SET tokens_valid_after = \
                 CASE WHEN tokens_valid_after < $1 THEN $1 ELSE tokens_valid_after END WHERE id = $2",
            )
            .bind(now_ms)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM revoked_tokens WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&r) == 1 {
                Revoked::AllBefore { before_ms: now_ms }
            } else {
                Revoked::NoUser
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn revoke_tokens_before(
        &self,
        user_id: &str,
        before_ms: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET tokens_valid_after = \
             CASE WHEN tokens_valid_after < $1 THEN $1 ELSE tokens_valid_after END WHERE id = $2",
        )
        .bind(before_ms)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&r) == 1)
    }

    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        before_ms: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE users SET password_hash = $1, tokens_valid_after = \
             CASE WHEN tokens_valid_after < $2 THEN $2 ELSE tokens_valid_after END WHERE id = $3",
        )
        .bind(password_hash)
        .bind(before_ms)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&r) == 1)
    }

    async fn delete_user(&self, user_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut w = self.writer().await?;
        let mut tx = w.begin().await?;
        // Lock the user first: a document created for it meanwhile must
        // not outlive it (PostgreSQL would make it ownerless).
        if !lock_row::<DB>(&mut tx, DB::LOCK_USER, user_id).await? {
            return Ok(None);
        }
        // Journals, members, metadata and client seqs go by cascade.
        let docs: Vec<String> = sqlx::query("DELETE FROM documents WHERE owner = $1 RETURNING id")
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get("id"))
            .collect();
        // Memberships and revoked-token rows go by cascade.
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(docs))
    }

    async fn user_name(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT name FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get("name")))
    }

    async fn create_document(
        &self,
        id: &str,
        title: &str,
        owner: &str,
        now_ms: i64,
        max_owned: u64,
    ) -> Result<Created, StoreError> {
        let epoch = crate::epoch::fresh();
        let max_owned = i64::try_from(max_owned).unwrap_or(i64::MAX);
        // The owner's row is locked first: creations of one owner take turns,
        // so concurrent ones cannot all pass the quota, and none outlives an
        // account being deleted.
        let mut w = self.writer().await?;
        let mut tx = w.begin().await?;
        if !lock_row::<DB>(&mut tx, DB::LOCK_USER, owner).await? {
            return Err(StoreError::Corrupt("no such owner".into()));
        }
        let r = sqlx::query(
            "INSERT INTO documents (id, title, owner, created_at, updated_at, epoch) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE (SELECT COUNT(*) FROM documents WHERE owner = $7) < $8 \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(title)
        .bind(owner)
        .bind(now_ms)
        .bind(now_ms)
        .bind(epoch.as_str())
        .bind(owner)
        .bind(max_owned)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&r) == 1 {
            tx.commit().await?;
            return Ok(Created::Created);
        }
        let owned: i64 = sqlx::query("SELECT COUNT(*) AS n FROM documents WHERE owner = $1")
            .bind(owner)
            .fetch_one(&mut *tx)
            .await?
            .get("n");
        tx.commit().await?;
        Ok(if owned >= max_owned {
            Created::OverQuota
        } else {
            Created::Exists
        })
    }

    async fn document_row(&self, id: &str) -> Result<Option<DocumentRow>, StoreError> {
        let row = sqlx::query(
            "SELECT d.id, d.title, d.owner, u.username AS owner_username, d.created_at, d.updated_at \
             FROM documents d LEFT JOIN users u ON u.id = d.owner WHERE d.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| DocumentRow {
            id: r.get("id"),
            title: r.get("title"),
            owner: r.get("owner"),
            owner_username: r.get("owner_username"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }))
    }

    async fn role_of(&self, doc: &str, user_id: &str) -> Result<Option<Role>, StoreError> {
        let row = sqlx::query(
            "SELECT CASE WHEN d.owner = $1 THEN 'owner' ELSE m.role END AS role FROM documents d \
             LEFT JOIN document_members m ON m.document_id = d.id AND m.user_id = $1 WHERE d.id = $2",
        )
        .bind(user_id)
        .bind(doc)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .and_then(|r| r.get::<Option<String>, _>("role"))
            .and_then(|s| role_from_str(&s)))
    }

    async fn list_documents(
        &self,
        user_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DocListItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.title, d.language, d.snapshot_version, d.updated_at, o.username AS owner_username, \
             CASE WHEN d.owner = $1 THEN 'owner' ELSE m.role END AS role FROM documents d \
             LEFT JOIN document_members m ON m.document_id = d.id AND m.user_id = $1 \
             LEFT JOIN users o ON o.id = d.owner \
             WHERE d.owner = $1 OR m.user_id IS NOT NULL \
             ORDER BY d.updated_at DESC, d.id LIMIT $2 OFFSET $3",
        )
        .bind(user_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(DocListItem {
                    id: r.get("id"),
                    title: r.get("title"),
                    language: r.get("language"),
                    version: r.get::<i64, _>("snapshot_version") as u64,
                    updated_at: r.get("updated_at"),
                    role: role_from_str(&r.get::<String, _>("role"))?,
                    owner: r.get("owner_username"),
                })
            })
            .collect())
    }

    async fn meta_states(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let rows = super::retry(|| {
            sqlx::query("SELECT state FROM document_meta WHERE document_id = $1")
                .bind(id)
                .fetch_all(&self.pool)
        })
        .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>("state")).collect())
    }

    async fn put_meta(
        &self,
        id: &str,
        instance: &str,
        state: &str,
        title: &str,
        language: &str,
    ) -> Result<(), StoreError> {
        // Skipped when the document is gone (deleted meanwhile).
        sqlx::query(
            "INSERT INTO document_meta (document_id, instance, state) \
             SELECT id, $2, $3 FROM documents WHERE id = $1 \
             ON CONFLICT (document_id, instance) DO UPDATE SET state = excluded.state",
        )
        .bind(id)
        .bind(instance)
        .bind(state)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE documents SET title = $1, language = $2 WHERE id = $3 \
             AND (title <> $1 OR language <> $2)",
        )
        .bind(title)
        .bind(language)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_document(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM documents WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&r) == 1)
    }

    async fn set_member(
        &self,
        doc: &str,
        user_id: &str,
        role: Role,
        max_members: u64,
    ) -> Result<Shared, StoreError> {
        let max = i64::try_from(max_members).unwrap_or(i64::MAX);
        let mut w = self.writer().await?;
        let mut tx = w.begin().await?;
        if !lock_row::<DB>(&mut tx, DB::LOCK_DOCUMENT, doc).await? {
            return Err(StoreError::Corrupt("no such document".into()));
        }
        let r = sqlx::query(
            "INSERT INTO document_members (document_id, user_id, role) \
             SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM document_members \
               WHERE document_id = $4 AND user_id = $5) \
             OR (SELECT COUNT(*) FROM document_members WHERE document_id = $6) < $7 \
             ON CONFLICT (document_id, user_id) DO UPDATE SET role = excluded.role",
        )
        .bind(doc)
        .bind(user_id)
        .bind(role_str(role))
        .bind(doc)
        .bind(user_id)
        .bind(doc)
        .bind(max)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if DB::rows_affected(&r) == 0 {
            Shared::Full
        } else {
            Shared::Done
        })
    }

    async fn members(
        &self,
        doc: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MemberRow>, StoreError> {
        // The owner sorts first (k = 0) and only on the first page.
        let rows = sqlx::query(
            "SELECT u.username, u.name, 'owner' AS role, 0 AS k FROM documents d \
             JOIN users u ON u.id = d.owner WHERE d.id = $1 AND $2 = '' \
             UNION ALL SELECT u.username, u.name, m.role, 1 AS k FROM document_members m \
             JOIN users u ON u.id = m.user_id WHERE m.document_id = $3 AND u.username > $4 \
             ORDER BY k, username LIMIT $5",
        )
        .bind(doc)
        .bind(after.unwrap_or(""))
        .bind(doc)
        .bind(after.unwrap_or(""))
        .bind(limit.clamp(1, MAX_MEMBERS_PAGE) + i64::from(after.is_none()))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                Some(MemberRow {
                    username: r.get("username"),
                    name: r.get("name"),
                    role: role_from_str(&r.get::<String, _>("role"))?,
                })
            })
            .collect())
    }

    async fn member_count(&self, doc: &str) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM document_members WHERE document_id = $1")
                .bind(doc)
                .fetch_one(&self.pool)
                .await?
                .get("n");
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn remove_member(&self, doc: &str, user_id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM document_members WHERE document_id = $1 AND user_id = $2")
            .bind(doc)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&r) == 1)
    }
}
