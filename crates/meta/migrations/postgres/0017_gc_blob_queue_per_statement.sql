-- Blob reviews are queued once per deleting statement instead of once per deleted row.
-- The row triggers ran a PL/pgSQL call and an INSERT … ON CONFLICT for every
-- repository_blobs and manifest_blobs row a bulk delete removed: half of offline GC's
-- sweep time on PostgreSQL (5,000 blobs: ~0.6 s of ~1.3 s), and the same per row when
-- a repository or many manifests go. A statement trigger reads the deleted rows from
-- its transition table and queues each digest once (a statement that cascades from
-- manifests to their layers fires it once, for all of them). Same rows, same times
-- (the wall clock when queued), same events as before.

CREATE FUNCTION gc_blobs_dropped() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- DISTINCT first: one upsert may not touch the same digest twice.
    INSERT INTO gc_blob_review_queue (digest, queued_at, event)
    SELECT digest, berth_now_ms(), TG_ARGV[0] FROM (SELECT DISTINCT digest FROM dropped) d
    ON CONFLICT (digest) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
    RETURN NULL;
END $$;

-- A blob unlinked from a repository.
DROP TRIGGER gc_blob_unlinked ON repository_blobs;
DROP FUNCTION gc_blob_unlinked();
CREATE TRIGGER gc_blob_unlinked AFTER DELETE ON repository_blobs
    REFERENCING OLD TABLE AS dropped
    FOR EACH STATEMENT EXECUTE FUNCTION gc_blobs_dropped('blob_unlink');

-- A manifest stopped referencing a blob (the manifest was deleted).
DROP TRIGGER gc_layer_dropped ON manifest_blobs;
DROP FUNCTION gc_layer_dropped();
CREATE TRIGGER gc_layer_dropped AFTER DELETE ON manifest_blobs
    REFERENCING OLD TABLE AS dropped
    FOR EACH STATEMENT EXECUTE FUNCTION gc_blobs_dropped('manifest_delete');
