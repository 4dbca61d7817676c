-- The language chosen for a document (a `language` id of tandem-core, or
-- empty: guessed from the title), kept beside the title for lists; the
-- replicated value lives in document_meta. Kept in step with
-- migrations/sqlite.
ALTER TABLE documents ADD COLUMN language TEXT NOT NULL DEFAULT '';
