-- repositories.live_tags is kept per statement instead of per row. The row triggers
-- updated the repository's row once for every tag a statement started or ended, so a
-- cleanup batch ending 10,000 tags of one repository updated that one row 10,000
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
