-- Protection rules of a project's registry (GitLab's protected container
-- repositories, protected container tags and immutable tags). `kind` is `repository`
-- or `tag`. A repository rule's `pattern` is kept relative to its project's full path
-- (`''`, `/image`, `/*`, `*`), so moving or renaming the project keeps the rule on the
-- same repositories; the API shows it prefixed with the project's current path. A tag
-- rule's `pattern` is an RE2 tag name pattern. Levels: maintainer, owner or admin.
CREATE TABLE registry_protection_rules (
    id           INTEGER PRIMARY KEY,
    project_id   INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    pattern      TEXT NOT NULL,
    push_level   TEXT,
    delete_level TEXT,
    immutable    BOOLEAN NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX registry_protection_rules_pattern
    ON registry_protection_rules(project_id, kind, pattern);
