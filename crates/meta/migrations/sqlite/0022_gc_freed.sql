-- What online garbage collection freed, by the hour, so that every node's admin page
-- shows the installation's figures (the metrics are per process).
CREATE TABLE gc_freed (
    hour        INTEGER PRIMARY KEY,
    manifests   INTEGER NOT NULL DEFAULT 0,
    blobs       INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0
);
-- (The admin area's last cleanup runs count the tags each deleted through the index
-- cleanup_log_run, made with the kept-tags column before this.)
