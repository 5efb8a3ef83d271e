-- Blobs whose metadata garbage collection removed and whose bytes are still to be
-- deleted. Written in the same transaction as the metadata removal, so a crash
-- between the two steps leaves a note that the next round finishes.
CREATE TABLE gc_blob_deletions (
    digest    TEXT PRIMARY KEY,
    size      INTEGER NOT NULL,
    queued_at INTEGER NOT NULL
);

-- A manifest pushed (typically by digest, untagged): with delete_untagged on, it is
-- garbage unless something comes to reference it.
CREATE TRIGGER gc_manifest_pushed AFTER INSERT ON manifests BEGIN
    INSERT INTO gc_manifest_review_queue (manifest_id, repository_id, queued_at, event)
    VALUES (NEW.id, NEW.repository_id, CAST(unixepoch('subsec') * 1000 AS INTEGER), 'manifest_upload')
    ON CONFLICT (manifest_id) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
END;
