-- The live repositories of a group in path order, from the index alone: the group
-- registry page (`GET /groups/:id/registry/repositories`) walks it to its offset and
-- counts up to 10,001 entries, never the rows of a group's every repository.
CREATE INDEX repositories_live_path ON repositories (path, project_id, id) WHERE status IS NULL;
