-- History identity (src/epoch.rs): a short random id naming the document's
-- history, minted when the document is created. '' (rows from before this
-- column) reads as the legacy epoch "0". Kept in step with migrations/sqlite.
ALTER TABLE documents ADD COLUMN epoch TEXT NOT NULL DEFAULT '';
