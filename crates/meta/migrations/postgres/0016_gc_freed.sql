-- What online garbage collection freed, by the hour, so that every node's admin page
-- shows the installation's figures (the metrics are per process).
CREATE TABLE gc_freed (
    hour        BIGINT PRIMARY KEY,
    manifests   BIGINT NOT NULL DEFAULT 0,
    blobs       BIGINT NOT NULL DEFAULT 0,
    bytes       BIGINT NOT NULL DEFAULT 0
);
-- The admin area's last cleanup runs count the tags each deleted.
CREATE INDEX cleanup_log_run ON cleanup_log(run_id) WHERE run_id IS NOT NULL;
