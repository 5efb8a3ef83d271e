-- Failed sign-ins by key (`ip:<address>`, `user:<username>`), in Unix seconds, shared
-- by every node so that the limit on them holds for the installation, not per node.
-- Rows older than the window are pruned as new ones are written.
CREATE TABLE login_failures (
    key  TEXT COLLATE "C" NOT NULL,
    at   BIGINT NOT NULL
);
CREATE INDEX login_failures_key_at ON login_failures (key, at);
CREATE INDEX login_failures_at ON login_failures (at);
