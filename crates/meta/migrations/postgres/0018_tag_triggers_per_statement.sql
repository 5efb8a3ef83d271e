-- The triggers on tags run per statement instead of per row.
--
-- repositories.live_tags: the row triggers updated the repository's row once for
-- every tag a statement started or ended, so a cleanup batch ending 10,000 tags of one repository updated that one row 10,000
-- times in one transaction, and each update first walks the row's chain of versions
-- left by the ones before it: the cost grew with the square of the batch. A
-- statement trigger reads the rows from its transition tables and updates each
-- repository once, by the same amounts as before: +1 for a tag inserted live, -1 for
-- one whose deleted_at went from NULL to a value, -1 for a live one deleted.
-- (Transition tables exclude column lists, so the update trigger fires on every
-- statement that updates tags and counts only the rows that were ended.)

CREATE FUNCTION tags_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE repositories r SET live_tags = r.live_tags + n.c
        FROM (SELECT repository_id, count(*) AS c FROM new_rows
              WHERE deleted_at IS NULL GROUP BY repository_id) n
        WHERE r.id = n.repository_id;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE repositories r SET live_tags = r.live_tags - n.c
        FROM (SELECT o.repository_id, count(*) AS c
              FROM old_rows o JOIN new_rows w ON w.id = o.id
              WHERE o.deleted_at IS NULL AND w.deleted_at IS NOT NULL
              GROUP BY o.repository_id) n
        WHERE r.id = n.repository_id;
    ELSE
        UPDATE repositories r SET live_tags = r.live_tags - n.c
        FROM (SELECT repository_id, count(*) AS c FROM old_rows
              WHERE deleted_at IS NULL GROUP BY repository_id) n
        WHERE r.id = n.repository_id;
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER tags_count_insert ON tags;
DROP TRIGGER tags_count_end ON tags;
DROP TRIGGER tags_count_delete ON tags;
DROP FUNCTION tags_count();

CREATE TRIGGER tags_count_insert AFTER INSERT ON tags
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tags_counted();
CREATE TRIGGER tags_count_end AFTER UPDATE ON tags
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tags_counted();
CREATE TRIGGER tags_count_delete AFTER DELETE ON tags
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tags_counted();

-- A tag ended (deleted or moved): its manifest may now be untagged. The row trigger
-- queued the manifest once per ended tag, so a cleanup batch ending the 10,000 tags of
-- one manifest updated that manifest's queue row 10,000 times (the same chain of
-- versions as above); now each manifest is queued once per statement.
CREATE FUNCTION gc_tags_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO gc_manifest_review_queue (manifest_id, repository_id, queued_at, event)
    SELECT m.id, m.repository_id, berth_now_ms(), 'tag_delete'
    FROM (SELECT DISTINCT w.repository_id, w.manifest_digest
          FROM old_rows o JOIN new_rows w ON w.id = o.id
          WHERE o.deleted_at IS NULL AND w.deleted_at IS NOT NULL) e
    JOIN manifests m ON m.repository_id = e.repository_id AND m.digest = e.manifest_digest
    ON CONFLICT (manifest_id) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
    RETURN NULL;
END $$;

DROP TRIGGER gc_tag_ended ON tags;
DROP FUNCTION gc_tag_ended();
CREATE TRIGGER gc_tag_ended AFTER UPDATE ON tags
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION gc_tags_ended();
