-- Online garbage collection (GitLab's model): whatever may have lost its last
-- reference is queued for review; a worker re-checks each item after a delay, inside
-- one transaction, and deletes it only if nothing references it. Triggers fill the
-- queues, so no code path that drops a reference can forget to.

CREATE TABLE gc_blob_review_queue (
    digest    TEXT PRIMARY KEY,
    queued_at INTEGER NOT NULL,
    event     TEXT NOT NULL
);
CREATE INDEX gc_blob_review_due ON gc_blob_review_queue(queued_at);

-- No foreign key: the reviewed manifest may be gone by review time.
CREATE TABLE gc_manifest_review_queue (
    manifest_id   INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL,
    queued_at     INTEGER NOT NULL,
    event         TEXT NOT NULL
);
CREATE INDEX gc_manifest_review_due ON gc_manifest_review_queue(queued_at);

-- A blob linked to a repository (an upload finished, a mount): if no manifest comes
-- to reference it, it is garbage.
CREATE TRIGGER gc_blob_linked AFTER INSERT ON repository_blobs BEGIN
    INSERT INTO gc_blob_review_queue (digest, queued_at, event)
    VALUES (NEW.digest, CAST(unixepoch('subsec') * 1000 AS INTEGER), 'blob_upload')
    ON CONFLICT (digest) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
END;

CREATE TRIGGER gc_blob_unlinked AFTER DELETE ON repository_blobs BEGIN
    INSERT INTO gc_blob_review_queue (digest, queued_at, event)
    VALUES (OLD.digest, CAST(unixepoch('subsec') * 1000 AS INTEGER), 'blob_unlink')
    ON CONFLICT (digest) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
END;

-- A manifest stopped referencing a blob (the manifest was deleted).
CREATE TRIGGER gc_layer_dropped AFTER DELETE ON manifest_blobs BEGIN
    INSERT INTO gc_blob_review_queue (digest, queued_at, event)
    VALUES (OLD.digest, CAST(unixepoch('subsec') * 1000 AS INTEGER), 'manifest_delete')
    ON CONFLICT (digest) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
END;

-- A tag ended (deleted or moved): its manifest may now be untagged.
CREATE TRIGGER gc_tag_ended AFTER UPDATE OF deleted_at ON tags
WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL BEGIN
    INSERT INTO gc_manifest_review_queue (manifest_id, repository_id, queued_at, event)
    SELECT id, repository_id, CAST(unixepoch('subsec') * 1000 AS INTEGER), 'tag_delete'
    FROM manifests WHERE repository_id = NEW.repository_id AND digest = NEW.manifest_digest
    ON CONFLICT (manifest_id) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
END;

-- An index went away: its children may now be unreferenced.
CREATE TRIGGER gc_child_dropped AFTER DELETE ON manifest_references BEGIN
    INSERT INTO gc_manifest_review_queue (manifest_id, repository_id, queued_at, event)
    SELECT id, repository_id, CAST(unixepoch('subsec') * 1000 AS INTEGER), 'index_delete'
    FROM manifests WHERE id = OLD.child_id
    ON CONFLICT (manifest_id) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
END;

-- A subject went away: its referrers (signatures, SBOMs) may now be garbage.
CREATE TRIGGER gc_subject_dropped AFTER DELETE ON manifests BEGIN
    INSERT INTO gc_manifest_review_queue (manifest_id, repository_id, queued_at, event)
    SELECT id, repository_id, CAST(unixepoch('subsec') * 1000 AS INTEGER), 'subject_delete'
    FROM manifests WHERE repository_id = OLD.repository_id AND subject_digest = OLD.digest
    ON CONFLICT (manifest_id) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
END;
