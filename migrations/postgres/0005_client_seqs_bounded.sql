-- Client seq rows are bounded per document (MAX_CLIENTS_PER_DOC): the rows
-- with the oldest versions go first, found by this index. REST edits no
-- longer leave rows (their client ids are server-minted, one per edit, and
-- never resent after the edit ends): drop the ones earlier versions left
-- ('http-' and 32 hex digits). Kept in step with migrations/sqlite.
CREATE INDEX client_seqs_version_idx ON client_seqs (document_id, version);
DELETE FROM client_seqs WHERE client LIKE 'http-%' AND length(client) = 37;
