-- Token revocation (src/web/tokens.rs). A user's tokens issued before
-- tokens_valid_after (ms; a password change sets it) are refused; a logout
-- revokes one token by its jti until that token would have expired anyway
-- (rows past expires_at, ms, are swept). Kept in step with migrations/sqlite.
ALTER TABLE users ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;

CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_user_idx ON revoked_tokens (user_id);
CREATE INDEX revoked_tokens_expiry_idx ON revoked_tokens (expires_at);
