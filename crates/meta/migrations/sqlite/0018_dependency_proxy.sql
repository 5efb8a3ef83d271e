-- The dependency proxy: a per-group pull-through cache of upstream registries
-- (GitLab's dependency_proxy_* tables). Cached blob bytes live in the blob store like
-- any other blob (a row in `blobs`); a cached blob is a reference that keeps garbage
-- collection off it until the group's cache lets go of it.

CREATE TABLE dependency_proxy_settings (
    namespace_id       INTEGER PRIMARY KEY REFERENCES namespaces(id) ON DELETE CASCADE,
    enabled            INTEGER NOT NULL,
    ttl_policy_enabled INTEGER NOT NULL,
    ttl_days           INTEGER NOT NULL
);

-- One row per image and reference as pulled (a tag or a digest), with the payload,
-- so manifest pulls never touch blob storage. `checked_at`: when the upstream last
-- confirmed the tag; `read_at`: when it was last pulled (for the TTL policy).
CREATE TABLE dependency_proxy_manifests (
    namespace_id INTEGER NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    image        TEXT NOT NULL,
    reference    TEXT NOT NULL,
    digest       TEXT NOT NULL,
    media_type   TEXT NOT NULL,
    payload      BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    checked_at   INTEGER NOT NULL,
    read_at      INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, image, reference)
);
CREATE INDEX dependency_proxy_manifests_digest ON dependency_proxy_manifests(namespace_id, image, digest);

CREATE TABLE dependency_proxy_blobs (
    namespace_id INTEGER NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    digest       TEXT NOT NULL REFERENCES blobs(digest),
    size         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    read_at      INTEGER NOT NULL,
    PRIMARY KEY (namespace_id, digest)
);
CREATE INDEX dependency_proxy_blobs_by_digest ON dependency_proxy_blobs(digest);

-- A group's cache let go of a blob (a purge, a group deleted): if nothing else
-- references it, it is garbage.
CREATE TRIGGER gc_proxy_blob_dropped AFTER DELETE ON dependency_proxy_blobs BEGIN
    INSERT INTO gc_blob_review_queue (digest, queued_at, event)
    VALUES (OLD.digest, CAST(unixepoch('subsec') * 1000 AS INTEGER), 'proxy_blob_delete')
    ON CONFLICT (digest) DO UPDATE SET queued_at = excluded.queued_at, event = excluded.event;
END;
