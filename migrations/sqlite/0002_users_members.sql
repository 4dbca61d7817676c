-- Kept in step with the PostgreSQL schema (migrations/postgres).
CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE document_members (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('editor', 'viewer')),
    PRIMARY KEY (document_id, user_id)
) WITHOUT ROWID;
CREATE INDEX document_members_user_idx ON document_members (user_id);
CREATE INDEX documents_owner_idx ON documents (owner, updated_at DESC);
