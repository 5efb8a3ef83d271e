-- Tag history and restore (issue 16). Tags already are history rows (a move or a
-- delete ends one row, a push or a restore starts one); these columns say who did
-- each and why, so the rows are the tag history and a deleted tag can be put back.

-- Who started the row, and how: 'push' (NULL in rows from before) or 'restore'.
ALTER TABLE tags ADD COLUMN created_action TEXT;
ALTER TABLE tags ADD COLUMN created_by_kind TEXT;
ALTER TABLE tags ADD COLUMN created_by_id INTEGER;
ALTER TABLE tags ADD COLUMN created_by_name TEXT;
-- The digest the tag moved from, when this row replaced a live one.
ALTER TABLE tags ADD COLUMN previous_digest TEXT;
-- Why the row ended: 'moved' (a push put the tag on another digest), 'deleted' (a
-- user; NULL in rows from before), 'cleanup' (a cleanup run, cleanup_run_id).
ALTER TABLE tags ADD COLUMN end_reason TEXT;
ALTER TABLE tags ADD COLUMN deleted_by_kind TEXT;
ALTER TABLE tags ADD COLUMN deleted_by_id INTEGER;
ALTER TABLE tags ADD COLUMN deleted_by_name TEXT;
ALTER TABLE tags ADD COLUMN cleanup_run_id INTEGER;

-- A tag's ended rows in order (history, the latest deletion of a name). Partial, so
-- pages of live tags keep walking tags_live: the live row is found there.
CREATE INDEX tags_ended ON tags(repository_id, name, id) WHERE deleted_at IS NOT NULL;
-- The ended rows of a manifest: garbage collection keeps a manifest a tag left within
-- the review delay.
CREATE INDEX tags_ended_manifest ON tags(repository_id, manifest_digest, deleted_at)
    WHERE deleted_at IS NOT NULL;
-- Pruning ended rows past the retention.
CREATE INDEX tags_ended_at ON tags(deleted_at) WHERE deleted_at IS NOT NULL;
-- The rows one cleanup run ended, to undo the run.
CREATE INDEX tags_cleanup_run ON tags(cleanup_run_id) WHERE cleanup_run_id IS NOT NULL;

-- Cleanup runs: one per policy run of a project, bulk deletion or `berth cleanup`.
CREATE TABLE cleanup_runs (
    id              INTEGER PRIMARY KEY,
    project_id      INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    -- 'policy', 'bulk_delete' or 'command', as in the cleanup log.
    reason          TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    actor_kind      TEXT,
    actor_id        INTEGER,
    actor_name      TEXT
);
CREATE INDEX cleanup_runs_project ON cleanup_runs(project_id, id);

-- The policy run a repository's scheduled (or unfinished) cleanup belongs to.
ALTER TABLE repositories ADD COLUMN cleanup_run_id INTEGER;
ALTER TABLE cleanup_log ADD COLUMN run_id INTEGER;
