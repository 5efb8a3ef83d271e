-- The group registry page of 100,000 repositories, from indexes: its default order
-- (the name shown) and its total (the live repositories of the projects it shows)
-- without sorting or counting the group's every repository.
--
-- shown_name: the path below the project, or the whole path for a project's root
-- image (and for a repository of no project). Written with the path.
ALTER TABLE repositories ADD COLUMN shown_name TEXT NOT NULL DEFAULT '';
UPDATE repositories SET shown_name = path;
UPDATE repositories SET shown_name = substr(repositories.path, length(p.full_path) + 2)
    FROM projects p
    WHERE p.id = repositories.project_id AND length(repositories.path) > length(p.full_path);
CREATE INDEX repositories_live_name ON repositories (shown_name, path, project_id, id)
    WHERE status IS NULL;

-- live_repositories: a project's repositories not being deleted, kept by triggers.
ALTER TABLE projects ADD COLUMN live_repositories INTEGER NOT NULL DEFAULT 0;
UPDATE projects SET live_repositories =
    (SELECT count(*) FROM repositories r WHERE r.project_id = projects.id AND r.status IS NULL);
CREATE TRIGGER repositories_count_insert AFTER INSERT ON repositories
    WHEN NEW.status IS NULL AND NEW.project_id IS NOT NULL BEGIN
    UPDATE projects SET live_repositories = live_repositories + 1 WHERE id = NEW.project_id;
END;
CREATE TRIGGER repositories_count_status AFTER UPDATE OF status ON repositories
    WHEN (OLD.status IS NULL) <> (NEW.status IS NULL) AND NEW.project_id IS NOT NULL BEGIN
    UPDATE projects SET live_repositories = live_repositories
        + CASE WHEN NEW.status IS NULL THEN 1 ELSE -1 END
        WHERE id = NEW.project_id;
END;
CREATE TRIGGER repositories_count_delete AFTER DELETE ON repositories
    WHEN OLD.status IS NULL AND OLD.project_id IS NOT NULL BEGIN
    UPDATE projects SET live_repositories = live_repositories - 1 WHERE id = OLD.project_id;
END;
