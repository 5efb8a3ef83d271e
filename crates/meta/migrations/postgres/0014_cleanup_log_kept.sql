-- The cleanup log also records the tags a run selected but a protection rule kept:
-- kept_by_rule is that rule's id (NULL: the row is a deletion).
ALTER TABLE cleanup_log ADD COLUMN kept_by_rule BIGINT;
-- A run that resumes over several turns logs each kept tag once.
CREATE INDEX cleanup_log_run ON cleanup_log(run_id, repository_id) WHERE run_id IS NOT NULL;
