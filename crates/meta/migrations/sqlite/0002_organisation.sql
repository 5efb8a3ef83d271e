-- The organisation: users, namespaces (groups and user namespaces), projects,
-- memberships, and credentials. Secrets are stored as SHA-256 digests (tokens) or
-- argon2 hashes (passwords). Times are Unix milliseconds; day dates are YYYY-MM-DD.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL,
    name          TEXT NOT NULL,
    email         TEXT,
    password_hash TEXT,
    admin         INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'blocked')),
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_username ON users(lower(username));

CREATE TABLE namespaces (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('group', 'user')),
    name        TEXT NOT NULL,
    path        TEXT NOT NULL,
    full_path   TEXT NOT NULL,
    parent_id   INTEGER REFERENCES namespaces(id),
    owner_id    INTEGER REFERENCES users(id) ON DELETE CASCADE,
    visibility  TEXT NOT NULL DEFAULT 'private',
    description TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    -- A user namespace is top level and has its owner; a group has no owner.
    CHECK ((kind = 'user' AND owner_id IS NOT NULL AND parent_id IS NULL)
        OR (kind = 'group' AND owner_id IS NULL))
);
CREATE UNIQUE INDEX namespaces_full_path ON namespaces(lower(full_path));
CREATE INDEX namespaces_parent ON namespaces(parent_id);
-- Every user load finds the personal namespace by its owner; one per user.
CREATE UNIQUE INDEX namespaces_owner ON namespaces(owner_id) WHERE kind = 'user';

CREATE TABLE projects (
    id              INTEGER PRIMARY KEY,
    namespace_id    INTEGER NOT NULL REFERENCES namespaces(id),
    name            TEXT NOT NULL,
    path            TEXT NOT NULL,
    full_path       TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    visibility      TEXT NOT NULL DEFAULT 'private',
    registry_access TEXT NOT NULL DEFAULT 'enabled',
    creator_id      INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX projects_full_path ON projects(lower(full_path));
CREATE INDEX projects_namespace ON projects(namespace_id);

-- source_kind 'namespace' (a group) or 'project'.
CREATE TABLE members (
    source_kind  TEXT NOT NULL CHECK (source_kind IN ('namespace', 'project')),
    source_id    INTEGER NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    access_level INTEGER NOT NULL,
    expires_at   TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (source_kind, source_id, user_id)
);
CREATE INDEX members_user ON members(user_id);

CREATE TABLE personal_access_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    token_digest TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    expires_at   TEXT,
    revoked      INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX personal_access_tokens_user ON personal_access_tokens(user_id);

CREATE TABLE deploy_tokens (
    id           INTEGER PRIMARY KEY,
    source_kind  TEXT NOT NULL CHECK (source_kind IN ('namespace', 'project')),
    source_id    INTEGER NOT NULL,
    name         TEXT NOT NULL,
    username     TEXT NOT NULL,
    token_digest TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    expires_at   INTEGER,
    revoked      INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
CREATE INDEX deploy_tokens_source ON deploy_tokens(source_kind, source_id);

CREATE TABLE ci_jobs (
    id           INTEGER PRIMARY KEY,
    project_id   INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_digest TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'finished')),
    expires_at   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Repositories belong to the project that owns their path.
ALTER TABLE repositories ADD COLUMN project_id INTEGER REFERENCES projects(id);
CREATE INDEX repositories_project ON repositories(project_id);
