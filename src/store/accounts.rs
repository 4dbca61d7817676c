//! Users (and their tokens' revocation state), document rows, members and
//! replicated metadata states: the [`Accounts`] trait and the rows and
//! answers it speaks in. Its SQL, written once for both backends, is
//! `accounts_sql.rs`.
//! Must not import: axum, redis, the hub.

use async_trait::async_trait;

use super::StoreError;
use crate::protocol::Role;

#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub name: String,
    pub password_hash: String,
}

/// A document's stored row, with its owner's username. (Its replicated
/// title and tags are the metadata CRDT in `meta`, not this.)
/// How [`Accounts::create_document`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    Created,
    /// The id is taken.
    Exists,
    /// The owner already owns the most documents allowed.
    OverQuota,
}

#[derive(Clone, Debug)]
pub struct DocumentRow {
    pub id: String,
    pub title: String,
    pub owner: Option<String>,
    pub owner_username: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug)]
pub struct DocListItem {
    pub id: String,
    pub title: String,
    /// The language chosen for it (empty: none; the title says).
    pub language: String,
    pub version: u64,
    pub updated_at: i64,
    pub role: Role,
    /// The owner's username (`None`: an unowned, anonymous-mode document).
    pub owner: Option<String>,
}

/// Someone with access to a document: its owner or a member.
#[derive(Clone, Debug)]
pub struct MemberRow {
    pub username: String,
    pub name: String,
    pub role: Role,
}

/// Members listed in one page at most (the owner, on the first page,
/// besides them).
pub const MAX_MEMBERS_PAGE: i64 = 1000;

/// What sharing a document did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shared {
    /// The user is a member with the role now.
    Done,
    /// The document has its most members (`MAX_MEMBERS_PER_DOC`) and the
    /// user is not one of them: nothing changed.
    Full,
}

pub fn role_from_str(s: &str) -> Option<Role> {
    match s {
        "owner" => Some(Role::Owner),
        "editor" => Some(Role::Editor),
        "viewer" => Some(Role::Viewer),
        _ => None,
    }
}

pub fn role_str(r: Role) -> &'static str {
    match r {
        Role::Owner => "owner",
        Role::Editor => "editor",
        Role::Viewer => "viewer",
    }
}

/// What the store says about a token of a user (see `auth::Claims`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenState {
    /// Tokens issued before this (ms) are refused.
    pub valid_after_ms: i64,
    /// The token's jti was revoked (logout).
    pub revoked: bool,
}

/// What a logout did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// The token alone is revoked.
    Token,
    /// The user had too many revoked tokens kept: every token of the user
    /// issued before `before_ms` is refused instead (and the kept rows go).
    AllBefore { before_ms: i64 },
    /// No such user (deleted meanwhile).
    NoUser,
}

#[async_trait]
pub trait Accounts: Send + Sync {
    /// False if the username is taken.
    async fn create_user(&self, u: &UserRow, now_ms: i64) -> Result<bool, StoreError>;
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>, StoreError>;
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError>;
    /// The revocation state of the user's token `jti` (`None`: a token
    /// without one); `None` when the user does not exist (deleted).
    async fn token_state(
        &self,
        user_id: &str,
        jti: Option<&str>,
    ) -> Result<Option<TokenState>, StoreError>;
    /// Revoke one token until `expires_ms` (when it would expire anyway).
    /// Expired rows are swept first; a user already holding `max_per_user`
    /// rows gets every token issued before `now_ms` refused instead.
    async fn revoke_token(
        &self,
        user_id: &str,
        jti: &str,
        expires_ms: i64,
        now_ms: i64,
        max_per_user: i64,
    ) -> Result<Revoked, StoreError>;
    /// Refuse the user's tokens issued before `before_ms` (never moves the
    /// bound back); false if there is no such user.
    async fn revoke_tokens_before(&self, user_id: &str, before_ms: i64)
        -> Result<bool, StoreError>;
    /// Set a new password hash and refuse every token issued before
    /// `before_ms`, in one statement; false if there is no such user.
    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        before_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Delete the user, its memberships, its revoked-token rows and every
    /// document it owns (with their journals, members and metadata), in
    /// one transaction. Returns the deleted documents' ids; `None` if there
    /// was no such user.
    async fn delete_user(&self, user_id: &str) -> Result<Option<Vec<String>>, StoreError>;
    /// A user's display name by id.
    async fn user_name(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// A new document owned by `owner` (with a fresh epoch), unless the id
    /// exists or `owner` already owns `max_owned` documents (checked in the
    /// insert itself; concurrent creates on PostgreSQL may pass it by the
    /// few that raced).
    async fn create_document(
        &self,
        id: &str,
        title: &str,
        owner: &str,
        now_ms: i64,
        max_owned: u64,
    ) -> Result<Created, StoreError>;
    async fn document_row(&self, id: &str) -> Result<Option<DocumentRow>, StoreError>;
    /// The user's role on the document (owner, or member role), if any.
    async fn role_of(&self, doc: &str, user_id: &str) -> Result<Option<Role>, StoreError>;
    /// Documents the user owns or is a member of, newest first.
    async fn list_documents(
        &self,
        user_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DocListItem>, StoreError>;
    /// Every instance's metadata state of the document (JSON, see `meta.rs`).
    async fn meta_states(&self, id: &str) -> Result<Vec<String>, StoreError>;
    /// Store this instance's metadata state, and the merged title and
    /// chosen language (empty: none) for lists.
    async fn put_meta(
        &self,
        id: &str,
        instance: &str,
        state: &str,
        title: &str,
        language: &str,
    ) -> Result<(), StoreError>;
    /// False if there was no such document.
    async fn delete_document(&self, id: &str) -> Result<bool, StoreError>;
    /// Make the user a member with `role` (or change its role), unless the
    /// document has `max_members` members already and the user is not one:
    /// checked while the document's row is locked, so concurrent shares
    /// cannot all pass the cap.
    async fn set_member(
        &self,
        doc: &str,
        user_id: &str,
        role: Role,
        max_members: u64,
    ) -> Result<Shared, StoreError>;
    /// One page of who has access: with no `after`, the owner, then the
    /// members by username; with one, the members whose username follows
    /// it. At most `limit` members (and [`MAX_MEMBERS_PAGE`]).
    async fn members(
        &self,
        doc: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MemberRow>, StoreError>;
    /// Members of the document, the owner not counted.
    async fn member_count(&self, doc: &str) -> Result<u64, StoreError>;
    async fn remove_member(&self, doc: &str, user_id: &str) -> Result<bool, StoreError>;
}
