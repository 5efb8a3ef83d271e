-- The number of live tags of each repository, kept by triggers, so offset pages of a
-- repository with 100,000 tags need not count them on every request.
ALTER TABLE repositories ADD COLUMN live_tags INTEGER NOT NULL DEFAULT 0;

UPDATE repositories SET live_tags =
    (SELECT count(*) FROM tags t WHERE t.repository_id = repositories.id AND t.deleted_at IS NULL);

CREATE TRIGGER tags_count_insert AFTER INSERT ON tags WHEN NEW.deleted_at IS NULL BEGIN
    UPDATE repositories SET live_tags = live_tags + 1 WHERE id = NEW.repository_id;
END;

CREATE TRIGGER tags_count_end AFTER UPDATE OF deleted_at ON tags
WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL BEGIN
    UPDATE repositories SET live_tags = live_tags - 1 WHERE id = NEW.repository_id;
END;

CREATE TRIGGER tags_count_delete AFTER DELETE ON tags WHEN OLD.deleted_at IS NULL BEGIN
    UPDATE repositories SET live_tags = live_tags - 1 WHERE id = OLD.repository_id;
END;
