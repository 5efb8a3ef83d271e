//! Pieces of the operations that do not depend on the backend's types: column lists
//! and statements, and the parsing of stored text into domain values.

use std::str::FromStr;

use berth_core::{AccessLevel, RegistryAccess, Visibility};
use berth_oci::Digest;

use crate::org::*;
use crate::{MetaError, Result};

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

/// Repositories waiting for a cleanup worker (scheduled or unfinished), in the order
/// workers take them: least recently started first (never cleaned before, then by the
/// start of their current or last run). A macro, so that the statements below can
/// embed it.
macro_rules! cleanup_queue {
    () => {
        "SELECT id FROM repositories \
         WHERE cleanup_status IN ('cleanup_scheduled', 'cleanup_unfinished') AND status IS NULL \
         ORDER BY cleanup_started_at IS NOT NULL, cleanup_started_at, id"
    };
}

/// Up to `$1` repositories of the queue.
pub(crate) const CLEANUP_QUEUE: &str = concat!(cleanup_queue!(), " LIMIT $1");

/// Claim the queue's head at `$1` (now) until `$2`, if fewer than `$3` live claims are
/// held; returns the repository's id and the claim's number.
pub(crate) const CLAIM_NEXT_CLEANUP: &str = concat!(
    "UPDATE repositories SET \
       cleanup_started_at = CASE WHEN cleanup_status = 'cleanup_scheduled' \
                                 THEN $1 ELSE COALESCE(cleanup_started_at, $1) END, \
       cleanup_status = 'cleanup_ongoing', cleanup_lease_until = $2, \
       cleanup_claim = COALESCE(cleanup_claim, 0) + 1 \
     WHERE id = (",
    cleanup_queue!(),
    " LIMIT 1) \
       AND (SELECT COUNT(*) FROM repositories \
            WHERE cleanup_status = 'cleanup_ongoing' AND cleanup_lease_until >= $1) < $3 \
     RETURNING id, cleanup_claim"
);

/// Move claim number `$3` of repository `$2` on to `$1`, if it is still held.
pub(crate) const RENEW_CLEANUP: &str = "UPDATE repositories SET cleanup_lease_until = $1 \
     WHERE id = $2 AND cleanup_claim = $3 AND cleanup_status = 'cleanup_ongoing'";

/// Hand back, as unfinished, every claim whose lease lapsed before `$1`.
pub(crate) const RESET_LAPSED_CLEANUPS: &str =
    "UPDATE repositories SET cleanup_status = 'cleanup_unfinished', cleanup_lease_until = NULL \
     WHERE cleanup_status = 'cleanup_ongoing' \
       AND (cleanup_lease_until IS NULL OR cleanup_lease_until < $1)";

/// How many cleanup claims are held.
pub(crate) const HELD_CLEANUPS: &str =
    "SELECT COUNT(*) FROM repositories WHERE cleanup_status = 'cleanup_ongoing'";

/// End claim number `$3` of repository `$2` with status `$1`, if it is still held.
pub(crate) const FINISH_CLEANUP: &str =
    "UPDATE repositories SET cleanup_status = $1, cleanup_lease_until = NULL \
     WHERE id = $2 AND cleanup_claim = $3 AND cleanup_status = 'cleanup_ongoing'";

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

/// The highest level in a `MAX(...)` result, `None` when nothing matched.
pub(crate) fn max_level(v: Option<i64>) -> Result<Option<AccessLevel>> {
    v.map(parse_level).transpose()
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

/// A tag search's name filter as a `LIKE` pattern with `\` as the escape, so that
/// `%` and `_` in the text match themselves.
pub(crate) fn like_pattern(query: &crate::repositories::TagQuery) -> Option<String> {
    let text = query.name_contains.as_deref().filter(|s| !s.is_empty())?;
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Some(format!("%{escaped}%"))
}

/// Layer blobs (not configs) of the `live` manifests.
pub(crate) const LIVE_LAYERS: &str = "SELECT mb.digest FROM manifest_blobs mb \
     JOIN manifests m ON m.id = mb.manifest_id JOIN live ON live.id = m.id \
     WHERE m.config_digest IS NULL OR mb.digest <> m.config_digest";
