-- Replicated metadata (src/meta.rs): one CRDT state per document and
-- instance; the document's metadata is the merge of its rows. Each instance
-- writes only its own row, so writes never conflict and never go backwards.
-- Kept in step with migrations/sqlite.
CREATE TABLE document_meta (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    instance    TEXT NOT NULL,
    state       TEXT NOT NULL,
    PRIMARY KEY (document_id, instance)
);
