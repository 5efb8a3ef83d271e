-- The tag-count triggers update repositories only when a statement started or ended
-- a live tag. They ran their UPDATE on every statement, and an UPDATE takes its
-- table's lock even when it changes no row: pruning old tag history (rows already
-- ended) locked tags and then repositories, the opposite order from offline GC's
-- sweep (repositories first, tags last), and PostgreSQL aborted the sweep of a
-- `berth gc` run beside a server to break the deadlock.

CREATE OR REPLACE FUNCTION tags_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF EXISTS (SELECT 1 FROM new_rows WHERE deleted_at IS NULL) THEN
            UPDATE repositories r SET live_tags = r.live_tags + n.c
            FROM (SELECT repository_id, count(*) AS c FROM new_rows
                  WHERE deleted_at IS NULL GROUP BY repository_id) n
            WHERE r.id = n.repository_id;
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        IF EXISTS (SELECT 1 FROM old_rows o JOIN new_rows w ON w.id = o.id
                   WHERE o.deleted_at IS NULL AND w.deleted_at IS NOT NULL) THEN
            UPDATE repositories r SET live_tags = r.live_tags - n.c
            FROM (SELECT o.repository_id, count(*) AS c
                  FROM old_rows o JOIN new_rows w ON w.id = o.id
                  WHERE o.deleted_at IS NULL AND w.deleted_at IS NOT NULL
                  GROUP BY o.repository_id) n
            WHERE r.id = n.repository_id;
        END IF;
    ELSE
        IF EXISTS (SELECT 1 FROM old_rows WHERE deleted_at IS NULL) THEN
            UPDATE repositories r SET live_tags = r.live_tags - n.c
            FROM (SELECT repository_id, count(*) AS c FROM old_rows
                  WHERE deleted_at IS NULL GROUP BY repository_id) n
            WHERE r.id = n.repository_id;
        END IF;
    END IF;
    RETURN NULL;
END $$;
