-- Sessions of the web UI. Only a digest of the session id is stored, so a copy of the
-- database does not let anyone sign in; deleting the row signs the browser out.
CREATE TABLE web_sessions (
    id_digest   TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions(expires_at);
