-- The manifest caches of other nodes are told of a change to repositories only when
-- a path changes (or a repository comes or goes), not on every update of the row.
-- A manifest lookup depends on a repository's path and id alone, while every blob
-- link and manifest push updates the repository's updated_at (and tag changes its
-- live tag count): with the old trigger each of those emptied every node's cache,
-- so under a stream of pushes anywhere the caches saved little. Changes to manifests
-- and tags still notify on every statement.
DROP TRIGGER repositories_notify_content ON repositories;
CREATE TRIGGER repositories_notify_content
    AFTER INSERT OR UPDATE OF path OR DELETE OR TRUNCATE ON repositories
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content();
