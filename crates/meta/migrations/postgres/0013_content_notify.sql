-- Every node caches manifest lookups (tag or digest -> manifest) and must drop them
-- when another node, or any other process, changes what a lookup would answer. A
-- change to repositories (paths), manifests or tags notifies channel berth_content;
-- PostgreSQL delivers the notification when the transaction commits, once per
-- transaction however many statements sent it. Statement-level triggers: a cleanup
-- deleting 90,000 tags sends one notification, not 90,000.
CREATE FUNCTION berth_notify_content() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('berth_content', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER repositories_notify_content
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON repositories
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content();
CREATE TRIGGER manifests_notify_content
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON manifests
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content();
CREATE TRIGGER tags_notify_content
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tags
    FOR EACH STATEMENT EXECUTE FUNCTION berth_notify_content();
