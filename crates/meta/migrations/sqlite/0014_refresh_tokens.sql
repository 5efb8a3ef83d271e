-- OAuth2 refresh tokens of the registry's token service (docker's identity tokens).
-- Only a digest of the token is stored. Each is bound to the credential it was
-- issued for: the user's password (by a fingerprint of the stored hash, so a new
-- password ends it), a personal access token or a deploy token, and is refused once
-- that credential is revoked, expired or changed.
CREATE TABLE refresh_tokens (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    digest          TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    user_id         INTEGER REFERENCES users(id) ON DELETE CASCADE,
    credential_id   INTEGER,
    fingerprint     TEXT,
    client_id       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens(expires_at);
