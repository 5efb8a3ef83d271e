-- Tags removed by cleanup policies and bulk deletion, for the project's cleanup log.
CREATE TABLE cleanup_log (
    id              INTEGER PRIMARY KEY,
    project_id      INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    repository_id   INTEGER,
    repository_path TEXT NOT NULL,
    tag             TEXT NOT NULL,
    digest          TEXT NOT NULL,
    -- 'policy', 'bulk_delete' or 'command'
    reason          TEXT NOT NULL,
    deleted_at      INTEGER NOT NULL
);
CREATE INDEX cleanup_log_project ON cleanup_log(project_id, deleted_at);
CREATE INDEX repositories_cleanup ON repositories(cleanup_status)
    WHERE cleanup_status <> 'cleanup_unscheduled';
