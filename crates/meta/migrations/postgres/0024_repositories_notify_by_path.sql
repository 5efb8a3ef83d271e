-- The repositories trigger no longer tells every node to drop its whole manifest
-- cache when a repository is created, and names the repositories it deletes.
--
-- A repository coming into existence cannot make a cached lookup stale: an entry is
-- cached under a path whose repository existed when it was read, and that path is
-- only free again after the repository was deleted or renamed, which notified. The
-- old trigger also fired for every `INSERT ... ON CONFLICT DO NOTHING` that inserted
-- nothing (statement triggers run for zero rows), which every first blob link of a
-- push runs. Node-local writes now declare what they change (`cache::Scope`), and a
-- blob link declares nothing: the test that holds each declaration against these
-- notifications needs the trigger to agree.
--
-- Deletions now send the deleted repositories' paths (nothing when no row went),
-- path changes and TRUNCATE still an empty payload ("anything may have changed").
CREATE FUNCTION berth_notify_content_of_repositories() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    paths TEXT;
BEGIN
    SELECT string_agg(DISTINCT path, E'\n') INTO paths FROM changed;
    IF paths IS NULL THEN
        RETURN NULL; -- no rows: nothing changed
    END IF;
    IF octet_length(paths) > 7000 THEN
        paths := '';
    END IF;
    PERFORM pg_notify('berth_content', paths);
    RETURN NULL;
END;
$$;

DROP TRIGGER repositories_notify_content ON repositories;

CREATE TRIGGER repositories_notify_content_delete AFTER DELETE ON repositories
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content_of_repositories();
CREATE TRIGGER repositories_notify_content_path AFTER UPDATE OF path ON repositories
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content();
CREATE TRIGGER repositories_notify_content_truncate AFTER TRUNCATE ON repositories
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content();
