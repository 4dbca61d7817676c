-- Documents with their latest snapshot, the op journal, and each client's
-- highest committed seq (so a resent op is recognised after a restart).
CREATE TABLE documents (
    id               TEXT PRIMARY KEY NOT NULL,
    title            TEXT NOT NULL DEFAULT '',
    owner            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    snapshot_version INTEGER NOT NULL DEFAULT 0,
    snapshot_content TEXT NOT NULL DEFAULT ''
);

CREATE TABLE op_journal (
    document_id  TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    op           TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    client       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    committed_at INTEGER NOT NULL,
    PRIMARY KEY (document_id, version)
) WITHOUT ROWID;

CREATE TABLE client_seqs (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    client      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    PRIMARY KEY (document_id, client)
) WITHOUT ROWID;
