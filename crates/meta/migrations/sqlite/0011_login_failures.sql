-- Failed sign-ins by key (`ip:<address>`, `user:<username>`), in Unix seconds, so
-- that the limit on them holds for the installation rather than per process.
-- Rows older than the window are pruned as new ones are written.
CREATE TABLE login_failures (
    key  TEXT NOT NULL,
    at   INTEGER NOT NULL
);
CREATE INDEX login_failures_key_at ON login_failures (key, at);
CREATE INDEX login_failures_at ON login_failures (at);
