-- One row per instance, rewritten by the readiness probe while writes are
-- failing: the store takes writes again once this does. Kept in step with
-- migrations/postgres (whose 0007 also turns snapshots into bytes: SQLite's
-- TEXT already holds U+0000).
CREATE TABLE storage_probe (
    instance TEXT PRIMARY KEY,
    at       BIGINT NOT NULL
);
