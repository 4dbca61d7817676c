-- Snapshots as the UTF-8 bytes of the text: PostgreSQL's TEXT cannot hold
-- U+0000, which the OT model accepts like any other code point, and one
-- refused row used to stop every save of an instance (issue 30). SQLite's
-- TEXT holds it as is, so migrations/sqlite has no counterpart. The
-- rewrite takes an exclusive lock on `documents` for its duration.
ALTER TABLE documents
    ALTER COLUMN snapshot_content DROP DEFAULT,
    ALTER COLUMN snapshot_content TYPE BYTEA USING convert_to(snapshot_content, 'UTF8'),
    ALTER COLUMN snapshot_content SET DEFAULT ''::bytea;

-- One row per instance, rewritten by the readiness probe while writes are
-- failing: the store takes writes again once this does. Kept in step with
-- migrations/sqlite.
CREATE TABLE storage_probe (
    instance TEXT PRIMARY KEY,
    at       BIGINT NOT NULL
);
