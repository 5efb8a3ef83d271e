-- The dependency proxy: a per-group pull-through cache of upstream registries
-- (GitLab's dependency_proxy_* tables). Cached blob bytes live in the blob store like
-- any other blob (a row in `blobs`); a cached blob is a reference that keeps garbage
-- collection off it until the group's cache lets go of it.

CREATE TABLE dependency_proxy_settings (
    namespace_id       BIGINT PRIMARY KEY REFERENCES namespaces(id) ON DELETE CASCADE,
    enabled            BOOLEAN NOT NULL,
    ttl_policy_enabled BOOLEAN NOT NULL,
    ttl_days           BIGINT NOT NULL
);

-- One row per image and reference as pulled (a tag or a digest), with the payload,
-- so manifest pulls never touch blob storage. `checked_at`: when the upstream last
-- confirmed the tag; `read_at`: when it was last pulled (for the TTL policy).
CREATE TABLE dependency_proxy_manifests (
    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    image        TEXT COLLATE "C" NOT NULL,
    reference    TEXT COLLATE "C" NOT NULL,
    digest       TEXT COLLATE "C" NOT NULL,
    media_type   TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    checked_at   BIGINT NOT NULL,
    read_at      BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, image, reference)
);
CREATE INDEX dependency_proxy_manifests_digest ON dependency_proxy_manifests(namespace_id, image, digest);

CREATE TABLE dependency_proxy_blobs (
    namespace_id BIGINT NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    digest       TEXT COLLATE "C" NOT NULL REFERENCES blobs(digest),
    size         BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    read_at      BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, digest)
);
CREATE INDEX dependency_proxy_blobs_by_digest ON dependency_proxy_blobs(digest);

-- A group's cache let go of a blob (a purge, a group deleted): if nothing else
-- references it, it is garbage.
CREATE FUNCTION gc_proxy_blob_dropped() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM berth_queue_blob(OLD.digest, 'proxy_blob_delete');
    RETURN NULL;
END $$;
CREATE TRIGGER gc_proxy_blob_dropped AFTER DELETE ON dependency_proxy_blobs
    FOR EACH ROW EXECUTE FUNCTION gc_proxy_blob_dropped();
