-- A change to manifests or tags now tells the other nodes which repositories it
-- touched: the notification's payload is their paths, one a line, and a node drops
-- the cached lookups of those repositories only, instead of its whole cache. With many
-- nodes and a steady stream of pushes, each node's cache was emptied by every push
-- anywhere; now by pushes into the repositories it serves (and by its own writes).
--
-- An empty payload still means "anything may have changed": it is what the
-- repositories trigger sends (paths changed, repositories came or went), what a
-- statement whose rows belong to no repository any more sends (a cascade from a
-- repository being deleted), what TRUNCATE sends, and what goes out when the paths
-- would not fit in one notification (PostgreSQL allows 8,000 bytes).
--
-- Transition tables are only allowed on triggers of one event, so each table gets
-- a trigger per event; the function reads the rows as `changed` in each.
CREATE FUNCTION berth_notify_content_of_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    paths TEXT;
    orphans BOOLEAN;
BEGIN
    SELECT string_agg(DISTINCT r.path, E'\n'), bool_or(r.id IS NULL)
      INTO paths, orphans
      FROM changed c LEFT JOIN repositories r ON r.id = c.repository_id;
    IF paths IS NULL AND orphans IS NULL THEN
        RETURN NULL; -- no rows: nothing changed
    END IF;
    IF orphans OR paths IS NULL OR octet_length(paths) > 7000 THEN
        paths := '';
    END IF;
    PERFORM pg_notify('berth_content', paths);
    RETURN NULL;
END;
$$;

DROP TRIGGER manifests_notify_content ON manifests;
DROP TRIGGER tags_notify_content ON tags;

CREATE TRIGGER manifests_notify_content_insert AFTER INSERT ON manifests
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content_of_rows();
CREATE TRIGGER manifests_notify_content_update AFTER UPDATE ON manifests
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content_of_rows();
CREATE TRIGGER manifests_notify_content_delete AFTER DELETE ON manifests
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content_of_rows();
CREATE TRIGGER manifests_notify_content_truncate AFTER TRUNCATE ON manifests
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content();

CREATE TRIGGER tags_notify_content_insert AFTER INSERT ON tags
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content_of_rows();
CREATE TRIGGER tags_notify_content_update AFTER UPDATE ON tags
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content_of_rows();
CREATE TRIGGER tags_notify_content_delete AFTER DELETE ON tags
    REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content_of_rows();
CREATE TRIGGER tags_notify_content_truncate AFTER TRUNCATE ON tags
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content();
