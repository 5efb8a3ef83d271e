-- The registry's core metadata. Times are Unix milliseconds (UTC).

CREATE TABLE repositories (
    id          INTEGER PRIMARY KEY,
    path        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Blobs are global and content-addressed; repository_blobs says which repository may
-- reach which blob (the basis of authorisation, mounts and garbage collection).
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE repository_blobs (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL REFERENCES blobs(digest),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs(digest);

-- Manifests keep their exact payload here so a manifest GET never touches blob storage.
CREATE TABLE manifests (
    id             INTEGER PRIMARY KEY,
    repository_id  INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest         TEXT NOT NULL,
    media_type     TEXT NOT NULL,
    artifact_type  TEXT,
    subject_digest TEXT,
    config_digest  TEXT,
    size           INTEGER NOT NULL,
    payload        BLOB NOT NULL,
    annotations    TEXT,
    created_at     INTEGER NOT NULL,
    UNIQUE (repository_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repository_id, subject_digest)
    WHERE subject_digest IS NOT NULL;

-- Blobs a manifest references (config and layers).
CREATE TABLE manifest_blobs (
    manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    PRIMARY KEY (manifest_id, digest)
);
CREATE INDEX manifest_blobs_digest ON manifest_blobs(digest);

-- Index -> child manifest. A child cannot be deleted while an index references it.
CREATE TABLE manifest_references (
    parent_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    child_id  INTEGER NOT NULL REFERENCES manifests(id),
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX manifest_references_child ON manifest_references(child_id);

-- Tags are history rows: moving or deleting a tag ends its row (deleted_at) and a
-- move starts a new one. The live tags are the rows with deleted_at NULL.
CREATE TABLE tags (
    id              INTEGER PRIMARY KEY,
    repository_id   INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    deleted_at      INTEGER
);
CREATE UNIQUE INDEX tags_live ON tags(repository_id, name) WHERE deleted_at IS NULL;
CREATE INDEX tags_live_manifest ON tags(repository_id, manifest_digest) WHERE deleted_at IS NULL;

-- Upload sessions, so any node (and a restarted one) knows an upload and when to expire it.
CREATE TABLE uploads (
    id              TEXT PRIMARY KEY,
    repository_path TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX uploads_updated ON uploads(updated_at);
