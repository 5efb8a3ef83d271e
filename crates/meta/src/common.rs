//! Pieces of the operations that do not depend on the backend's types: column lists
//! and statements, and the parsing of stored text into domain values.

use std::str::FromStr;

use berth_core::{AccessLevel, RegistryAccess, Visibility};
use berth_oci::Digest;

use crate::org::*;
use crate::{MetaError, Result};

/// Begin a transaction on `pool`, in a task of its own. sqlx 0.8's `BEGIN` is not safe
/// to cancel: a request dropped while its `BEGIN` is in flight (a client that went
/// away, a browser that aborted a fetch) hands the connection back to the pool inside
/// a transaction nobody ends, and whoever takes that connection next runs in it (under
/// SQLite, a reader serving an old snapshot from then on). A spawned task always runs
/// to the end; when its caller is gone the finished transaction is dropped there,
/// which rolls it back.
pub(crate) async fn begin<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
) -> Result<sqlx::Transaction<'static, DB>> {
    let pool = pool.clone();
    Ok(tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))??)
}

pub(crate) fn digest(text: String) -> Result<Digest> {
    Digest::parse(&text).map_err(|e| MetaError::Corrupt(e.to_string()))
}

/// GitLab's `Group::NUMBER_OF_ANCESTORS_ALLOWED`.
pub(crate) const MAX_ANCESTORS: usize = 20;

/// A user with its personal namespace's id (the namespace is found by owner).
pub(crate) const USER_SELECT: &str = "SELECT u.id, u.username, u.name, u.email, u.admin, u.state, \
     u.password_hash, n.id, u.created_at, u.password_change_required \
     FROM users u LEFT JOIN namespaces n ON n.owner_id = u.id AND n.kind = 'user'";

pub(crate) const USER_COLS: usize = 10;

pub(crate) const NS_SELECT: &str =
    "SELECT n.id, n.kind, n.name, n.path, n.full_path, n.parent_id, \
     n.owner_id, n.visibility, n.description, n.created_at FROM namespaces n";

pub(crate) const PROJECT_SELECT: &str =
    "SELECT p.id, p.namespace_id, p.name, p.path, p.full_path, \
     p.description, p.visibility, p.registry_access, p.creator_id, p.created_at \
     FROM projects p";

pub(crate) const PAT_SELECT: &str =
    "SELECT id, user_id, name, description, scopes, expires_at, revoked, \
     created_at, last_used_at FROM personal_access_tokens";

pub(crate) const DEPLOY_SELECT: &str =
    "SELECT id, source_kind, source_id, name, username, scopes, \
     expires_at, revoked, created_at FROM deploy_tokens";

pub(crate) const JOB_SELECT: &str =
    "SELECT id, project_id, user_id, status, expires_at, created_at FROM ci_jobs";

pub(crate) fn corrupt(e: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt(e.to_string())
}

pub(crate) fn parse_state(s: &str) -> Result<UserState> {
    match s {
        "active" => Ok(UserState::Active),
        "blocked" => Ok(UserState::Blocked),
        _ => Err(corrupt(format!("unknown user state {s:?}"))),
    }
}

pub(crate) fn parse_kind(s: &str) -> Result<NamespaceKind> {
    match s {
        "group" => Ok(NamespaceKind::Group),
        "user" => Ok(NamespaceKind::User),
        _ => Err(corrupt(format!("unknown namespace kind {s:?}"))),
    }
}

pub(crate) fn parse_visibility(s: &str) -> Result<Visibility> {
    Visibility::from_str(s).map_err(corrupt)
}

pub(crate) fn parse_registry_access(s: &str) -> Result<RegistryAccess> {
    RegistryAccess::from_str(s).map_err(corrupt)
}

pub(crate) fn parse_level(v: i64) -> Result<AccessLevel> {
    AccessLevel::from_value(v).ok_or_else(|| corrupt(format!("unknown access level {v}")))
}

pub(crate) fn source_parts(s: Source) -> (&'static str, i64) {
    match s {
        Source::Namespace(id) => ("namespace", id),
        Source::Project(id) => ("project", id),
    }
}

pub(crate) fn parse_source(kind: &str, id: i64) -> Result<Source> {
    match kind {
        "namespace" => Ok(Source::Namespace(id)),
        "project" => Ok(Source::Project(id)),
        _ => Err(corrupt(format!("unknown source kind {kind:?}"))),
    }
}

pub(crate) fn join_scopes(scopes: &[String]) -> String {
    scopes.join(",")
}

pub(crate) fn split_scopes(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// A `LIKE` pattern matching `search` anywhere, with the wildcards in it escaped
/// (used with `ESCAPE '\'`).
pub(crate) fn contains_pattern(search: &str) -> String {
    let mut p = String::with_capacity(search.len() + 2);
    p.push('%');
    for c in search.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A condition: either of `columns` holds the [`contains_pattern`] bound as `$1`.
pub(crate) fn contains_filter([a, b]: [&str; 2]) -> String {
    format!("(lower({a}) LIKE lower($1) ESCAPE '\\' OR lower({b}) LIKE lower($1) ESCAPE '\\')")
}

/// The highest level in a `MAX(...)` result, `None` when nothing matched.
pub(crate) fn max_level(v: Option<i64>) -> Result<Option<AccessLevel>> {
    v.map(parse_level).transpose()
}

/// `Conflict` when a group would have more than [`MAX_ANCESTORS`] ancestors.
pub(crate) fn check_ancestors(ancestors: usize) -> Result<()> {
    if ancestors > MAX_ANCESTORS {
        return Err(MetaError::Conflict(format!(
            "Group nesting is too deep: a group may have at most {MAX_ANCESTORS} ancestors"
        )));
    }
    Ok(())
}

/// Path depth in segments.
pub(crate) fn segments(path: &str) -> usize {
    path.split('/').count()
}

/// The columns `repo_select` reads.
pub(crate) const REPO_COLS: &str =
    "id, path, project_id, created_at, status, cleanup_status, cleanup_started_at, live_tags, \
     updated_at";

/// Repositories chosen by `rows` (a `SELECT {REPO_COLS} FROM repositories ...`),
/// each with its number of live tags (kept by triggers).
pub(crate) fn repo_select(rows: &str) -> String {
    format!(
        "SELECT r.id, r.path, r.project_id, r.created_at, r.status, r.cleanup_status, \
         r.cleanup_started_at, r.live_tags, r.updated_at \
         FROM ({rows}) r"
    )
}

/// A search's substring as a `LIKE` pattern with `\` as the escape, so that `%` and
/// `_` in the text match themselves; `None` for no text.
pub(crate) fn like_pattern(text: Option<&str>) -> Option<String> {
    let text = text.filter(|s| !s.is_empty())?;
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Some(format!("%{escaped}%"))
}

/// `$1, $2, …, $n`: the marks of a list of `n` bound values.
pub(crate) fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Manifest `m` has a live tag: probed once per manifest in the tag index of live
/// manifests (not a walk of every tag: a repository may hold 100,000 tags of one
/// manifest, which as a join took 13 ms on SQLite and 256 ms for a project on
/// PostgreSQL, against under a millisecond and 4 ms this way).
pub(crate) const TAGGED: &str = "EXISTS (SELECT 1 FROM tags t \
     WHERE t.repository_id = m.repository_id AND t.manifest_digest = m.digest \
     AND t.deleted_at IS NULL)";

/// The bytes of the layer blobs (not configs) of the `live(k, id)` manifests, each blob
/// once per `k`: rows of `k` and its bytes (none for a `k` without layers).
/// Driven from `live` to the manifests' layers to their blob rows: `CROSS JOIN` keeps
/// that order in SQLite (PostgreSQL plans it as any join), whose planner otherwise
/// may start from every blob or every manifest layer of the installation (0.2 to 5 s
/// a repository with a million blobs, instead of a millisecond).
pub(crate) const LIVE_LAYERS_SIZES: &str = "SELECT layer.k, CAST(SUM(b.size) AS BIGINT) \
     FROM (SELECT DISTINCT live.k, mb.digest FROM live CROSS JOIN manifests m \
       CROSS JOIN manifest_blobs mb WHERE m.id = live.id AND mb.manifest_id = m.id \
       AND (m.config_digest IS NULL OR mb.digest <> m.config_digest)) layer \
     CROSS JOIN blobs b WHERE b.digest = layer.digest GROUP BY layer.k";
