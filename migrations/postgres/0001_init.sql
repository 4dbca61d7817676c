-- Users, documents (with their latest snapshot), members, the op journal and
-- each client's highest committed seq. Times are milliseconds since the epoch.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE documents (
    id               TEXT PRIMARY KEY,
    title            TEXT NOT NULL DEFAULT '',
    owner            TEXT REFERENCES users(id) ON DELETE SET NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    snapshot_version BIGINT NOT NULL DEFAULT 0,
    snapshot_content TEXT NOT NULL DEFAULT ''
);
CREATE INDEX documents_owner_idx ON documents (owner, updated_at DESC);

CREATE TABLE document_members (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('editor', 'viewer')),
    PRIMARY KEY (document_id, user_id)
);
CREATE INDEX document_members_user_idx ON document_members (user_id);

-- Primary key (document_id, version) serves "ops after version v" scans.
CREATE TABLE op_journal (
    document_id  TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    version      BIGINT NOT NULL,
    op           TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    client       TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    committed_at BIGINT NOT NULL,
    PRIMARY KEY (document_id, version)
);

CREATE TABLE client_seqs (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    client      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (document_id, client)
);
