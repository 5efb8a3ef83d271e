-- What the REST API and cleanup policies need about registry content.

-- The image's own creation time (the config's `created`, Unix ms) and the sum of its
-- layers (an index: of its children), recorded at push so listings never read blobs.
ALTER TABLE manifests ADD COLUMN image_created_at INTEGER;
ALTER TABLE manifests ADD COLUMN total_size INTEGER NOT NULL DEFAULT 0;

-- NULL, or 'delete_scheduled' / 'delete_ongoing' / 'delete_failed' while a repository
-- deletion runs in the background (the repository is hidden from listings meanwhile).
ALTER TABLE repositories ADD COLUMN status TEXT;
-- Cleanup-policy bookkeeping, as GitLab shows it.
ALTER TABLE repositories ADD COLUMN cleanup_status TEXT NOT NULL DEFAULT 'cleanup_unscheduled';
ALTER TABLE repositories ADD COLUMN cleanup_started_at INTEGER;
-- The deletion worker's queue: only rows with a status, so it stays tiny.
CREATE INDEX repositories_status ON repositories(status) WHERE status IS NOT NULL;

-- Every tag row of a repository, ended ones included. Both tags indexes in 0001 are
-- partial (live rows only), so without a full one deleting a repository (ON DELETE
-- CASCADE) scanned the whole tag history of the registry under the write lock. With
-- deleted_at next it also counts live tags without reading rows, and with
-- manifest_digest last it finds a manifest's live tags (`deleted_at IS NULL` is an
-- equality here), which makes tags_live_manifest redundant.
CREATE INDEX tags_repository ON tags(repository_id, deleted_at, manifest_digest);
DROP INDEX tags_live_manifest;

-- One cleanup policy per project (container_expiration_policy in GitLab's API).
CREATE TABLE expiration_policies (
    project_id      INTEGER PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    enabled         INTEGER NOT NULL DEFAULT 0,
    cadence         TEXT NOT NULL DEFAULT '1d',
    keep_n          INTEGER,
    older_than      TEXT,
    name_regex      TEXT,
    name_regex_keep TEXT,
    next_run_at     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX expiration_policies_due ON expiration_policies(next_run_at) WHERE enabled = 1;

-- Exclusive leases with an expiry (GitLab's rate limit of one bulk tag delete per
-- repository per hour, and later job coordination).
CREATE TABLE leases (
    key        TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
