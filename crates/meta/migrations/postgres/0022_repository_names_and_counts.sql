-- The group registry page of 100,000 repositories, from indexes: its default order
-- (the name shown) and its total (the live repositories of the projects it shows)
-- without sorting or counting the group's every repository.
--
-- shown_name: the path below the project, or the whole path for a project's root
-- image (and for a repository of no project). Written with the path.
ALTER TABLE repositories ADD COLUMN shown_name TEXT COLLATE "C" NOT NULL DEFAULT '';
UPDATE repositories r SET shown_name = CASE
        WHEN p.id IS NOT NULL AND length(r.path) > length(p.full_path)
        THEN substr(r.path, length(p.full_path) + 2) ELSE r.path END
    FROM repositories x LEFT JOIN projects p ON p.id = x.project_id
    WHERE x.id = r.id;
CREATE INDEX repositories_live_name ON repositories (shown_name, path, project_id, id)
    WHERE status IS NULL;

-- live_repositories: a project's repositories not being deleted, kept by triggers:
-- per row for inserts and status changes (one repository at a time), per statement
-- for deletes (a project's every repository at once). Each updates projects only
-- when it changes a count, so no statement takes that table's lock for nothing.
ALTER TABLE projects ADD COLUMN live_repositories BIGINT NOT NULL DEFAULT 0;
UPDATE projects p SET live_repositories = n.c
    FROM (SELECT project_id, count(*) AS c FROM repositories
          WHERE status IS NULL AND project_id IS NOT NULL GROUP BY project_id) n
    WHERE p.id = n.project_id;

CREATE FUNCTION repositories_counted_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE projects SET live_repositories = live_repositories
        + CASE WHEN NEW.status IS NULL THEN 1 ELSE -1 END
        WHERE id = NEW.project_id;
    RETURN NULL;
END $$;
CREATE TRIGGER repositories_count_insert AFTER INSERT ON repositories
    FOR EACH ROW WHEN (NEW.status IS NULL AND NEW.project_id IS NOT NULL)
    EXECUTE FUNCTION repositories_counted_row();
CREATE TRIGGER repositories_count_status AFTER UPDATE OF status ON repositories
    FOR EACH ROW WHEN ((OLD.status IS NULL) <> (NEW.status IS NULL) AND NEW.project_id IS NOT NULL)
    EXECUTE FUNCTION repositories_counted_row();

CREATE FUNCTION repositories_counted_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM old_rows WHERE status IS NULL AND project_id IS NOT NULL) THEN
        UPDATE projects p SET live_repositories = p.live_repositories - n.c
        FROM (SELECT project_id, count(*) AS c FROM old_rows
              WHERE status IS NULL AND project_id IS NOT NULL GROUP BY project_id) n
        WHERE p.id = n.project_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER repositories_count_delete AFTER DELETE ON repositories
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION repositories_counted_delete();
