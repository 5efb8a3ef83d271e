//! SQLite implementation of [`crate::OrgMeta`].
//!
//! Paths are unique case-insensitively across namespaces *and* projects (GitLab keeps
//! both in one routes table). The per-table unique indexes cannot see across tables, so
//! every create checks both inside its write transaction; the one-connection write pool
//! makes check-then-insert safe. Hierarchies (ancestors, descendants) are walked with
//! `WITH RECURSIVE`, which PostgreSQL runs unchanged.

use std::str::FromStr;

use async_trait::async_trait;
use berth_core::{AccessLevel, RegistryAccess, Visibility};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::org::*;
use crate::{MetaError, Result, SqliteMeta};

/// GitLab's `Group::NUMBER_OF_ANCESTORS_ALLOWED`.
const MAX_ANCESTORS: usize = 20;

/// A user with its personal namespace's id (the namespace is found by owner).
const USER_SELECT: &str = "SELECT u.id, u.username, u.name, u.email, u.admin, u.state, \
     u.password_hash, n.id, u.created_at \
     FROM users u LEFT JOIN namespaces n ON n.owner_id = u.id AND n.kind = 'user'";
const USER_COLS: usize = 9;

const NS_SELECT: &str = "SELECT n.id, n.kind, n.name, n.path, n.full_path, n.parent_id, \
     n.owner_id, n.visibility, n.description, n.created_at FROM namespaces n";

const PROJECT_SELECT: &str = "SELECT p.id, p.namespace_id, p.name, p.path, p.full_path, \
     p.description, p.visibility, p.registry_access, p.creator_id, p.created_at \
     FROM projects p";

const PAT_SELECT: &str = "SELECT id, user_id, name, description, scopes, expires_at, revoked, \
     created_at, last_used_at FROM personal_access_tokens";

const DEPLOY_SELECT: &str = "SELECT id, source_kind, source_id, name, username, scopes, \
     expires_at, revoked, created_at FROM deploy_tokens";

const JOB_SELECT: &str =
    "SELECT id, project_id, user_id, status, expires_at, created_at FROM ci_jobs";

/// Not expired by `today`: a membership ends when its `expires_at` day begins, and
/// `YYYY-MM-DD` text sorts like the dates it names.
const LIVE_MEMBER: &str = "(m.expires_at IS NULL OR m.expires_at > ?)";

fn corrupt(e: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt(e.to_string())
}

fn parse_state(s: &str) -> Result<UserState> {
    match s {
        "active" => Ok(UserState::Active),
        "blocked" => Ok(UserState::Blocked),
        _ => Err(corrupt(format!("unknown user state {s:?}"))),
    }
}

fn parse_kind(s: &str) -> Result<NamespaceKind> {
    match s {
        "group" => Ok(NamespaceKind::Group),
        "user" => Ok(NamespaceKind::User),
        _ => Err(corrupt(format!("unknown namespace kind {s:?}"))),
    }
}

fn parse_visibility(s: &str) -> Result<Visibility> {
    Visibility::from_str(s).map_err(corrupt)
}

fn parse_registry_access(s: &str) -> Result<RegistryAccess> {
    RegistryAccess::from_str(s).map_err(corrupt)
}

fn parse_level(v: i64) -> Result<AccessLevel> {
    AccessLevel::from_value(v).ok_or_else(|| corrupt(format!("unknown access level {v}")))
}

fn source_parts(s: Source) -> (&'static str, i64) {
    match s {
        Source::Namespace(id) => ("namespace", id),
        Source::Project(id) => ("project", id),
    }
}

fn parse_source(kind: &str, id: i64) -> Result<Source> {
    match kind {
        "namespace" => Ok(Source::Namespace(id)),
        "project" => Ok(Source::Project(id)),
        _ => Err(corrupt(format!("unknown source kind {kind:?}"))),
    }
}

fn join_scopes(scopes: &[String]) -> String {
    scopes.join(",")
}

fn split_scopes(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// A `LIKE` pattern matching `search` anywhere, with the wildcards in it escaped
/// (used with `ESCAPE '\'`).
fn contains_pattern(search: &str) -> String {
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

fn user_at(r: &SqliteRow, base: usize) -> Result<User> {
    let id: i64 = r.get(base);
    let namespace_id: Option<i64> = r.get(base + 7);
    Ok(User {
        id,
        username: r.get(base + 1),
        name: r.get(base + 2),
        email: r.get(base + 3),
        admin: r.get(base + 4),
        state: parse_state(r.get(base + 5))?,
        password_hash: r.get(base + 6),
        namespace_id: namespace_id
            .ok_or_else(|| corrupt(format!("user {id} has no personal namespace")))?,
        created_at: r.get(base + 8),
    })
}

fn user_row(r: SqliteRow) -> Result<User> {
    user_at(&r, 0)
}

fn namespace_row(r: SqliteRow) -> Result<Namespace> {
    Ok(Namespace {
        id: r.get(0),
        kind: parse_kind(r.get(1))?,
        name: r.get(2),
        path: r.get(3),
        full_path: r.get(4),
        parent_id: r.get(5),
        owner_id: r.get(6),
        visibility: parse_visibility(r.get(7))?,
        description: r.get(8),
        created_at: r.get(9),
    })
}

fn project_row(r: SqliteRow) -> Result<Project> {
    Ok(Project {
        id: r.get(0),
        namespace_id: r.get(1),
        name: r.get(2),
        path: r.get(3),
        full_path: r.get(4),
        description: r.get(5),
        visibility: parse_visibility(r.get(6))?,
        registry_access: parse_registry_access(r.get(7))?,
        creator_id: r.get(8),
        created_at: r.get(9),
    })
}

fn pat_row(r: SqliteRow) -> Result<PersonalToken> {
    Ok(PersonalToken {
        id: r.get(0),
        user_id: r.get(1),
        name: r.get(2),
        description: r.get(3),
        scopes: split_scopes(r.get(4)),
        expires_at: r.get(5),
        revoked: r.get(6),
        created_at: r.get(7),
        last_used_at: r.get(8),
    })
}

fn deploy_row(r: SqliteRow) -> Result<DeployToken> {
    Ok(DeployToken {
        id: r.get(0),
        source: parse_source(r.get(1), r.get(2))?,
        name: r.get(3),
        username: r.get(4),
        scopes: split_scopes(r.get(5)),
        expires_at: r.get(6),
        revoked: r.get(7),
        created_at: r.get(8),
    })
}

fn job_row(r: SqliteRow) -> Result<CiJob> {
    let status: &str = r.get(3);
    Ok(CiJob {
        id: r.get(0),
        project_id: r.get(1),
        user_id: r.get(2),
        status: match status {
            "running" => JobStatus::Running,
            "finished" => JobStatus::Finished,
            _ => return Err(corrupt(format!("unknown job status {status:?}"))),
        },
        expires_at: r.get(4),
        created_at: r.get(5),
    })
}

fn collect<T>(rows: Vec<SqliteRow>, f: fn(SqliteRow) -> Result<T>) -> Result<Vec<T>> {
    rows.into_iter().map(f).collect()
}

/// Whether a namespace or a project already has this full path (case-insensitive).
async fn path_taken(conn: &mut SqliteConnection, full_path: &str) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM namespaces WHERE lower(full_path) = lower(?) \
         UNION ALL SELECT 1 FROM projects WHERE lower(full_path) = lower(?) LIMIT 1",
    )
    .bind(full_path)
    .bind(full_path)
    .fetch_optional(conn)
    .await?;
    Ok(hit.is_some())
}

async fn user_in(conn: &mut SqliteConnection, id: i64) -> Result<Option<User>> {
    sqlx::query(&format!("{USER_SELECT} WHERE u.id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(user_row)
        .transpose()
}

pub(crate) async fn namespace_in(
    conn: &mut SqliteConnection,
    id: i64,
) -> Result<Option<Namespace>> {
    sqlx::query(&format!("{NS_SELECT} WHERE n.id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(namespace_row)
        .transpose()
}

pub(crate) async fn project_in(conn: &mut SqliteConnection, id: i64) -> Result<Option<Project>> {
    sqlx::query(&format!("{PROJECT_SELECT} WHERE p.id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(project_row)
        .transpose()
}

async fn user_exists(conn: &mut SqliteConnection, id: i64) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(hit.is_some())
}

async fn project_exists(conn: &mut SqliteConnection, id: i64) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar("SELECT 1 FROM projects WHERE id = ?")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(hit.is_some())
}

/// Memberships and deploy tokens belong to a project or a group (never to a user
/// namespace, as in GitLab). `NotFound` otherwise.
async fn check_source(conn: &mut SqliteConnection, source: Source) -> Result<()> {
    match source {
        Source::Project(id) => {
            if !project_exists(conn, id).await? {
                return Err(MetaError::NotFound("Project not found".into()));
            }
        }
        Source::Namespace(id) => {
            let kind: Option<String> =
                sqlx::query_scalar("SELECT kind FROM namespaces WHERE id = ?")
                    .bind(id)
                    .fetch_optional(conn)
                    .await?;
            if kind.as_deref() != Some("group") {
                return Err(MetaError::NotFound("Group not found".into()));
            }
        }
    }
    Ok(())
}

/// The highest level in a `MAX(...)` result, `None` when nothing matched.
fn max_level(v: Option<i64>) -> Result<Option<AccessLevel>> {
    v.map(parse_level).transpose()
}

impl SqliteMeta {
    /// One page of a searchable list and the total, in one read transaction so both
    /// see the same snapshot. `from` names the table for the count, `select` is the
    /// page's SELECT … FROM, `base` a fixed condition (`" WHERE …"` or empty) and
    /// `filter` the search condition (two `?` for the same pattern), appended to
    /// `base` when searching.
    #[allow(clippy::too_many_arguments)]
    async fn search_page(
        &self,
        from: &str,
        select: &str,
        base: &str,
        filter: &str,
        order: &str,
        search: Option<&str>,
        window: Window,
    ) -> Result<(Vec<SqliteRow>, i64)> {
        let pattern = search.map(contains_pattern);
        let condition = match (&pattern, base.is_empty()) {
            (None, _) => base.to_string(),
            (Some(_), false) => format!("{base}{filter}"),
            // No fixed condition: the filter starts the WHERE clause itself.
            (Some(_), true) => filter.to_string(),
        };
        let mut tx = self.read.begin().await?;
        let count_sql = format!("SELECT COUNT(*) {from}{condition}");
        let mut q = sqlx::query_scalar::<_, i64>(&count_sql);
        if let Some(p) = &pattern {
            q = q.bind(p).bind(p);
        }
        let total = q.fetch_one(&mut *tx).await?;
        let page_sql = format!("{select}{condition} ORDER BY {order} LIMIT ? OFFSET ?");
        let mut q = sqlx::query(&page_sql);
        if let Some(p) = &pattern {
            q = q.bind(p).bind(p);
        }
        let rows = q
            .bind(window.limit)
            .bind(window.offset.max(0))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((rows, total))
    }
}

#[async_trait]
impl OrgMeta for SqliteMeta {
    async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.read)
            .await?)
    }

    async fn create_user(&self, user: &NewUser, now: i64) -> Result<User> {
        let mut tx = self.write_tx().await?;
        let taken: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM users WHERE lower(username) = lower(?)")
                .bind(&user.username)
                .fetch_optional(&mut *tx)
                .await?;
        // GitLab reports a taken namespace path against the username too.
        if taken.is_some() || path_taken(&mut tx, &user.username).await? {
            return Err(MetaError::Conflict(
                "Username has already been taken".into(),
            ));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, name, email, password_hash, admin, state, created_at) \
             VALUES (?, ?, ?, ?, ?, 'active', ?) RETURNING id",
        )
        .bind(&user.username)
        .bind(&user.name)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.admin)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        // A personal namespace is public, as in GitLab: it only groups the user's
        // projects, each of which has its own visibility.
        sqlx::query(
            "INSERT INTO namespaces (kind, name, path, full_path, parent_id, owner_id, \
             visibility, description, created_at) \
             VALUES ('user', ?, ?, ?, NULL, ?, 'public', '', ?)",
        )
        .bind(&user.name)
        .bind(&user.username)
        .bind(&user.username)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let created = user_in(&mut tx, id)
            .await?
            .ok_or_else(|| corrupt(format!("user {id} vanished")))?;
        tx.commit().await?;
        Ok(created)
    }

    async fn user(&self, id: i64) -> Result<Option<User>> {
        sqlx::query(&format!("{USER_SELECT} WHERE u.id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .map(user_row)
            .transpose()
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        sqlx::query(&format!("{USER_SELECT} WHERE lower(u.username) = lower(?)"))
            .bind(username)
            .fetch_optional(&self.read)
            .await?
            .map(user_row)
            .transpose()
    }

    async fn users(&self, search: Option<&str>, window: Window) -> Result<(Vec<User>, i64)> {
        let filter = " WHERE (lower(u.username) LIKE lower(?) ESCAPE '\\' \
             OR lower(u.name) LIKE lower(?) ESCAPE '\\')";
        let rows = self
            .search_page(
                "FROM users u",
                USER_SELECT,
                "",
                filter,
                "u.id",
                search,
                window,
            )
            .await?;
        Ok((collect(rows.0, user_row)?, rows.1))
    }

    async fn update_user(&self, id: i64, update: &UserUpdate) -> Result<Option<User>> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE users SET name = COALESCE(?, name), email = COALESCE(?, email), \
             password_hash = COALESCE(?, password_hash), admin = COALESCE(?, admin), \
             state = COALESCE(?, state) WHERE id = ?",
        )
        .bind(&update.name)
        .bind(&update.email)
        .bind(&update.password_hash)
        .bind(update.admin)
        .bind(update.state.map(UserState::as_str))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        // The personal namespace is named after its user, as GitLab keeps it.
        if let Some(name) = &update.name {
            sqlx::query("UPDATE namespaces SET name = ? WHERE owner_id = ? AND kind = 'user'")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let user = user_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn create_group(&self, group: &NewGroup, now: i64) -> Result<Namespace> {
        let mut tx = self.write_tx().await?;
        let full_path = match group.parent_id {
            None => group.path.clone(),
            Some(parent_id) => {
                let parent = namespace_in(&mut tx, parent_id)
                    .await?
                    .filter(|p| p.kind == NamespaceKind::Group)
                    .ok_or_else(|| MetaError::NotFound("Parent group not found".into()))?;
                // full_path has one segment per level, so the parent's segments are
                // exactly the new group's ancestors.
                if parent.full_path.split('/').count() > MAX_ANCESTORS {
                    return Err(MetaError::Conflict(format!(
                        "Group nesting is too deep: a group may have at most \
                         {MAX_ANCESTORS} ancestors"
                    )));
                }
                format!("{}/{}", parent.full_path, group.path)
            }
        };
        if path_taken(&mut tx, &full_path).await? {
            return Err(MetaError::Conflict("Path has already been taken".into()));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO namespaces (kind, name, path, full_path, parent_id, owner_id, \
             visibility, description, created_at) \
             VALUES ('group', ?, ?, ?, ?, NULL, ?, ?, ?) RETURNING id",
        )
        .bind(&group.name)
        .bind(&group.path)
        .bind(&full_path)
        .bind(group.parent_id)
        .bind(group.visibility.as_str())
        .bind(&group.description)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Namespace {
            id,
            kind: NamespaceKind::Group,
            name: group.name.clone(),
            path: group.path.clone(),
            full_path,
            parent_id: group.parent_id,
            owner_id: None,
            visibility: group.visibility,
            description: group.description.clone(),
            created_at: now,
        })
    }

    async fn namespace(&self, id: i64) -> Result<Option<Namespace>> {
        sqlx::query(&format!("{NS_SELECT} WHERE n.id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .map(namespace_row)
            .transpose()
    }

    async fn namespace_by_path(&self, full_path: &str) -> Result<Option<Namespace>> {
        sqlx::query(&format!("{NS_SELECT} WHERE lower(n.full_path) = lower(?)"))
            .bind(full_path)
            .fetch_optional(&self.read)
            .await?
            .map(namespace_row)
            .transpose()
    }

    async fn groups(&self, search: Option<&str>, window: Window) -> Result<(Vec<Namespace>, i64)> {
        let filter = " AND (lower(n.name) LIKE lower(?) ESCAPE '\\' \
             OR lower(n.full_path) LIKE lower(?) ESCAPE '\\')";
        let rows = self
            .search_page(
                "FROM namespaces n",
                NS_SELECT,
                " WHERE n.kind = 'group'",
                filter,
                "n.id",
                search,
                window,
            )
            .await?;
        Ok((collect(rows.0, namespace_row)?, rows.1))
    }

    async fn subgroups(&self, id: i64) -> Result<Vec<Namespace>> {
        let rows = sqlx::query(&format!(
            "{NS_SELECT} WHERE n.parent_id = ? AND n.kind = 'group' ORDER BY n.full_path"
        ))
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        collect(rows, namespace_row)
    }

    async fn descendant_groups(&self, id: i64) -> Result<Vec<Namespace>> {
        // UNION (not UNION ALL) so even a corrupt cycle cannot recurse forever.
        let rows = sqlx::query(&format!(
            "WITH RECURSIVE below(id) AS ( \
                 SELECT id FROM namespaces WHERE parent_id = ? \
                 UNION SELECT c.id FROM namespaces c JOIN below b ON c.parent_id = b.id) \
             {NS_SELECT} JOIN below b ON b.id = n.id \
             WHERE n.kind = 'group' ORDER BY n.full_path"
        ))
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        collect(rows, namespace_row)
    }

    async fn update_group(&self, id: i64, update: &GroupUpdate) -> Result<Option<Namespace>> {
        let mut tx = self.write_tx().await?;
        // Only groups: a user namespace follows its user (see update_user).
        let done = sqlx::query(
            "UPDATE namespaces SET name = COALESCE(?, name), \
             visibility = COALESCE(?, visibility), description = COALESCE(?, description) \
             WHERE id = ? AND kind = 'group'",
        )
        .bind(&update.name)
        .bind(update.visibility.map(Visibility::as_str))
        .bind(&update.description)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let ns = namespace_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(ns)
    }

    async fn create_project(&self, project: &NewProject, now: i64) -> Result<Project> {
        let mut tx = self.write_tx().await?;
        let ns = namespace_in(&mut tx, project.namespace_id)
            .await?
            .ok_or_else(|| MetaError::NotFound("Namespace not found".into()))?;
        let full_path = format!("{}/{}", ns.full_path, project.path);
        if path_taken(&mut tx, &full_path).await? {
            return Err(MetaError::Conflict("Path has already been taken".into()));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO projects (namespace_id, name, path, full_path, description, \
             visibility, registry_access, creator_id, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(project.namespace_id)
        .bind(&project.name)
        .bind(&project.path)
        .bind(&full_path)
        .bind(&project.description)
        .bind(project.visibility.as_str())
        .bind(project.registry_access.as_str())
        .bind(project.creator_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Project {
            id,
            namespace_id: project.namespace_id,
            name: project.name.clone(),
            path: project.path.clone(),
            full_path,
            description: project.description.clone(),
            visibility: project.visibility,
            registry_access: project.registry_access,
            creator_id: project.creator_id,
            created_at: now,
        })
    }

    async fn project(&self, id: i64) -> Result<Option<Project>> {
        sqlx::query(&format!("{PROJECT_SELECT} WHERE p.id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .map(project_row)
            .transpose()
    }

    async fn project_by_path(&self, full_path: &str) -> Result<Option<Project>> {
        sqlx::query(&format!(
            "{PROJECT_SELECT} WHERE lower(p.full_path) = lower(?)"
        ))
        .bind(full_path)
        .fetch_optional(&self.read)
        .await?
        .map(project_row)
        .transpose()
    }

    async fn project_for_paths(&self, candidates: &[String]) -> Result<Option<Project>> {
        if candidates.is_empty() {
            return Ok(None);
        }
        let marks = vec!["lower(?)"; candidates.len()].join(", ");
        let sql = format!("{PROJECT_SELECT} WHERE lower(p.full_path) IN ({marks})");
        let mut q = sqlx::query(&sql);
        for c in candidates {
            q = q.bind(c);
        }
        let found = collect(q.fetch_all(&self.read).await?, project_row)?;
        // The caller's order decides (longest first), not the database's.
        Ok(candidates.iter().find_map(|c| {
            found
                .iter()
                .find(|p| p.full_path.eq_ignore_ascii_case(c))
                .cloned()
        }))
    }

    async fn projects_in(&self, namespace_id: i64, descendants: bool) -> Result<Vec<Project>> {
        let rows = if descendants {
            sqlx::query(&format!(
                "WITH RECURSIVE tree(id) AS ( \
                     SELECT id FROM namespaces WHERE id = ? \
                     UNION SELECT c.id FROM namespaces c JOIN tree t ON c.parent_id = t.id) \
                 {PROJECT_SELECT} JOIN tree t ON t.id = p.namespace_id ORDER BY p.full_path"
            ))
            .bind(namespace_id)
            .fetch_all(&self.read)
            .await?
        } else {
            sqlx::query(&format!(
                "{PROJECT_SELECT} WHERE p.namespace_id = ? ORDER BY p.full_path"
            ))
            .bind(namespace_id)
            .fetch_all(&self.read)
            .await?
        };
        collect(rows, project_row)
    }

    async fn projects(&self, search: Option<&str>) -> Result<Vec<Project>> {
        let rows = match search {
            Some(s) => {
                let pattern = contains_pattern(s);
                sqlx::query(&format!(
                    "{PROJECT_SELECT} WHERE lower(p.name) LIKE lower(?) ESCAPE '\\' \
                     OR lower(p.full_path) LIKE lower(?) ESCAPE '\\' ORDER BY p.id"
                ))
                .bind(&pattern)
                .bind(&pattern)
                .fetch_all(&self.read)
                .await?
            }
            None => {
                sqlx::query(&format!("{PROJECT_SELECT} ORDER BY p.id"))
                    .fetch_all(&self.read)
                    .await?
            }
        };
        collect(rows, project_row)
    }

    async fn update_project(&self, id: i64, update: &ProjectUpdate) -> Result<Option<Project>> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE projects SET name = COALESCE(?, name), \
             description = COALESCE(?, description), visibility = COALESCE(?, visibility), \
             registry_access = COALESCE(?, registry_access) WHERE id = ?",
        )
        .bind(&update.name)
        .bind(&update.description)
        .bind(update.visibility.map(Visibility::as_str))
        .bind(update.registry_access.map(RegistryAccess::as_str))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let p = project_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(p)
    }

    async fn set_member(
        &self,
        source: Source,
        user_id: i64,
        level: AccessLevel,
        expires_at: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        check_source(&mut tx, source).await?;
        if !user_exists(&mut tx, user_id).await? {
            return Err(MetaError::NotFound("User not found".into()));
        }
        let (kind, id) = source_parts(source);
        // Replacing keeps created_at: the member has been one since then.
        sqlx::query(
            "INSERT INTO members (source_kind, source_id, user_id, access_level, expires_at, \
             created_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (source_kind, source_id, user_id) DO UPDATE SET \
             access_level = excluded.access_level, expires_at = excluded.expires_at",
        )
        .bind(kind)
        .bind(id)
        .bind(user_id)
        .bind(level.value())
        .bind(expires_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn remove_member(&self, source: Source, user_id: i64) -> Result<bool> {
        let (kind, id) = source_parts(source);
        let done = sqlx::query(
            "DELETE FROM members WHERE source_kind = ? AND source_id = ? AND user_id = ?",
        )
        .bind(kind)
        .bind(id)
        .bind(user_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn members(&self, source: Source) -> Result<Vec<Member>> {
        let (kind, id) = source_parts(source);
        let rows = sqlx::query(
            "SELECT u.id, u.username, u.name, u.email, u.admin, u.state, u.password_hash, \
             n.id, u.created_at, m.access_level, m.expires_at, m.created_at \
             FROM members m JOIN users u ON u.id = m.user_id \
             LEFT JOIN namespaces n ON n.owner_id = u.id AND n.kind = 'user' \
             WHERE m.source_kind = ? AND m.source_id = ? ORDER BY u.id",
        )
        .bind(kind)
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    source,
                    user: user_at(r, 0)?,
                    access_level: parse_level(r.get(USER_COLS))?,
                    expires_at: r.get(USER_COLS + 1),
                    created_at: r.get(USER_COLS + 2),
                })
            })
            .collect()
    }

    async fn project_role(
        &self,
        user_id: i64,
        project_id: i64,
        today: &str,
    ) -> Result<Option<AccessLevel>> {
        let level: Option<i64> = sqlx::query_scalar(&format!(
            "WITH RECURSIVE up(id, parent_id) AS ( \
                 SELECT n.id, n.parent_id FROM namespaces n \
                 JOIN projects p ON p.namespace_id = n.id WHERE p.id = ? \
                 UNION SELECT n.id, n.parent_id FROM namespaces n JOIN up ON n.id = up.parent_id) \
             SELECT MAX(level) FROM ( \
                 SELECT m.access_level AS level FROM members m \
                 WHERE m.source_kind = 'project' AND m.source_id = ? AND m.user_id = ? \
                   AND {LIVE_MEMBER} \
                 UNION ALL \
                 SELECT m.access_level FROM members m JOIN up ON m.source_id = up.id \
                 WHERE m.source_kind = 'namespace' AND m.user_id = ? AND {LIVE_MEMBER} \
                 UNION ALL \
                 SELECT ? FROM projects p JOIN namespaces n ON n.id = p.namespace_id \
                 WHERE p.id = ? AND n.kind = 'user' AND n.owner_id = ? \
             ) AS levels"
        ))
        .bind(project_id)
        .bind(project_id)
        .bind(user_id)
        .bind(today)
        .bind(user_id)
        .bind(today)
        .bind(AccessLevel::Owner.value())
        .bind(project_id)
        .bind(user_id)
        .fetch_one(&self.read)
        .await?;
        max_level(level)
    }

    async fn group_role(
        &self,
        user_id: i64,
        namespace_id: i64,
        today: &str,
    ) -> Result<Option<AccessLevel>> {
        let level: Option<i64> = sqlx::query_scalar(&format!(
            "WITH RECURSIVE up(id, parent_id) AS ( \
                 SELECT id, parent_id FROM namespaces WHERE id = ? \
                 UNION SELECT n.id, n.parent_id FROM namespaces n JOIN up ON n.id = up.parent_id) \
             SELECT MAX(level) FROM ( \
                 SELECT m.access_level AS level FROM members m JOIN up ON m.source_id = up.id \
                 WHERE m.source_kind = 'namespace' AND m.user_id = ? AND {LIVE_MEMBER} \
                 UNION ALL \
                 SELECT ? FROM namespaces n \
                 WHERE n.id = ? AND n.kind = 'user' AND n.owner_id = ? \
             ) AS levels"
        ))
        .bind(namespace_id)
        .bind(user_id)
        .bind(today)
        .bind(AccessLevel::Owner.value())
        .bind(namespace_id)
        .bind(user_id)
        .fetch_one(&self.read)
        .await?;
        max_level(level)
    }

    async fn create_personal_token(&self, t: &NewPersonalToken, now: i64) -> Result<PersonalToken> {
        let mut tx = self.write_tx().await?;
        if !user_exists(&mut tx, t.user_id).await? {
            return Err(MetaError::NotFound("User not found".into()));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO personal_access_tokens (user_id, name, description, token_digest, \
             scopes, expires_at, revoked, created_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?) \
             RETURNING id",
        )
        .bind(t.user_id)
        .bind(&t.name)
        .bind(&t.description)
        .bind(&t.digest)
        .bind(join_scopes(&t.scopes))
        .bind(&t.expires_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PersonalToken {
            id,
            user_id: t.user_id,
            name: t.name.clone(),
            description: t.description.clone(),
            scopes: t.scopes.clone(),
            expires_at: t.expires_at.clone(),
            revoked: false,
            created_at: now,
            last_used_at: None,
        })
    }

    async fn personal_token(&self, id: i64) -> Result<Option<PersonalToken>> {
        sqlx::query(&format!("{PAT_SELECT} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .map(pat_row)
            .transpose()
    }

    async fn personal_token_by_digest(&self, digest: &str) -> Result<Option<PersonalToken>> {
        sqlx::query(&format!("{PAT_SELECT} WHERE token_digest = ?"))
            .bind(digest)
            .fetch_optional(&self.read)
            .await?
            .map(pat_row)
            .transpose()
    }

    async fn personal_tokens(&self, user_id: Option<i64>) -> Result<Vec<PersonalToken>> {
        let rows = match user_id {
            Some(u) => {
                sqlx::query(&format!("{PAT_SELECT} WHERE user_id = ? ORDER BY id"))
                    .bind(u)
                    .fetch_all(&self.read)
                    .await?
            }
            None => {
                sqlx::query(&format!("{PAT_SELECT} ORDER BY id"))
                    .fetch_all(&self.read)
                    .await?
            }
        };
        collect(rows, pat_row)
    }

    async fn revoke_personal_token(&self, id: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE personal_access_tokens SET revoked = 1 WHERE id = ? AND revoked = 0",
        )
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_personal_token(&self, id: i64, now: i64) -> Result<()> {
        sqlx::query("UPDATE personal_access_tokens SET last_used_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn create_deploy_token(&self, t: &NewDeployToken, now: i64) -> Result<DeployToken> {
        let mut tx = self.write_tx().await?;
        check_source(&mut tx, t.source).await?;
        let (kind, source_id) = source_parts(t.source);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deploy_tokens (source_kind, source_id, name, username, token_digest, \
             scopes, expires_at, revoked, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?) \
             RETURNING id",
        )
        .bind(kind)
        .bind(source_id)
        .bind(&t.name)
        .bind(t.username.as_deref().unwrap_or(""))
        .bind(&t.digest)
        .bind(join_scopes(&t.scopes))
        .bind(t.expires_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        // The default name carries the id, known only once the row exists.
        let username = match &t.username {
            Some(u) => u.clone(),
            None => {
                let u = format!("gitlab+deploy-token-{id}");
                sqlx::query("UPDATE deploy_tokens SET username = ? WHERE id = ?")
                    .bind(&u)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                u
            }
        };
        tx.commit().await?;
        Ok(DeployToken {
            id,
            source: t.source,
            name: t.name.clone(),
            username,
            scopes: t.scopes.clone(),
            expires_at: t.expires_at,
            revoked: false,
            created_at: now,
        })
    }

    async fn deploy_token(&self, id: i64) -> Result<Option<DeployToken>> {
        sqlx::query(&format!("{DEPLOY_SELECT} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .map(deploy_row)
            .transpose()
    }

    async fn deploy_token_by_digest(&self, digest: &str) -> Result<Option<DeployToken>> {
        sqlx::query(&format!("{DEPLOY_SELECT} WHERE token_digest = ?"))
            .bind(digest)
            .fetch_optional(&self.read)
            .await?
            .map(deploy_row)
            .transpose()
    }

    async fn deploy_tokens(&self, source: Option<Source>) -> Result<Vec<DeployToken>> {
        let rows = match source {
            Some(s) => {
                let (kind, id) = source_parts(s);
                sqlx::query(&format!(
                    "{DEPLOY_SELECT} WHERE source_kind = ? AND source_id = ? ORDER BY id"
                ))
                .bind(kind)
                .bind(id)
                .fetch_all(&self.read)
                .await?
            }
            None => {
                sqlx::query(&format!("{DEPLOY_SELECT} ORDER BY id"))
                    .fetch_all(&self.read)
                    .await?
            }
        };
        collect(rows, deploy_row)
    }

    async fn revoke_deploy_token(&self, id: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE deploy_tokens SET revoked = 1 WHERE id = ? AND revoked = 0")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn deploy_token_covers(&self, source: Source, project_id: i64) -> Result<bool> {
        match source {
            Source::Project(p) => Ok(p == project_id),
            Source::Namespace(group) => {
                // Walk up from the project (a short chain) rather than down the group.
                let hits: i64 = sqlx::query_scalar(
                    "WITH RECURSIVE up(id, parent_id) AS ( \
                         SELECT n.id, n.parent_id FROM namespaces n \
                         JOIN projects p ON p.namespace_id = n.id WHERE p.id = ? \
                         UNION SELECT n.id, n.parent_id FROM namespaces n \
                         JOIN up ON n.id = up.parent_id) \
                     SELECT COUNT(*) FROM up WHERE id = ?",
                )
                .bind(project_id)
                .bind(group)
                .fetch_one(&self.read)
                .await?;
                Ok(hits > 0)
            }
        }
    }

    async fn create_job(
        &self,
        project_id: i64,
        user_id: i64,
        digest: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<CiJob> {
        let mut tx = self.write_tx().await?;
        if !project_exists(&mut tx, project_id).await? {
            return Err(MetaError::NotFound("Project not found".into()));
        }
        if !user_exists(&mut tx, user_id).await? {
            return Err(MetaError::NotFound("User not found".into()));
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO ci_jobs (project_id, user_id, token_digest, status, expires_at, \
             created_at) VALUES (?, ?, ?, 'running', ?, ?) RETURNING id",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(digest)
        .bind(expires_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(CiJob {
            id,
            project_id,
            user_id,
            status: JobStatus::Running,
            expires_at,
            created_at: now,
        })
    }

    async fn job(&self, id: i64) -> Result<Option<CiJob>> {
        sqlx::query(&format!("{JOB_SELECT} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .map(job_row)
            .transpose()
    }

    async fn job_by_digest(&self, digest: &str) -> Result<Option<CiJob>> {
        sqlx::query(&format!("{JOB_SELECT} WHERE token_digest = ?"))
            .bind(digest)
            .fetch_optional(&self.read)
            .await?
            .map(job_row)
            .transpose()
    }

    async fn finish_job(&self, id: i64, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ci_jobs SET status = 'finished', finished_at = ? \
             WHERE id = ? AND status = 'running'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_job_deploy_credential(
        &self,
        job_id: i64,
        deploy_token_id: i64,
        digest: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO ci_job_deploy_credentials (job_id, deploy_token_id, token_digest) \
             VALUES (?, ?, ?)",
        )
        .bind(job_id)
        .bind(deploy_token_id)
        .bind(digest)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn job_deploy_credential(&self, digest: &str) -> Result<Option<(CiJob, i64)>> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT job_id, deploy_token_id FROM ci_job_deploy_credentials WHERE token_digest = ?",
        )
        .bind(digest)
        .fetch_optional(&self.read)
        .await?;
        let Some((job_id, token_id)) = row else {
            return Ok(None);
        };
        Ok(self.job(job_id).await?.map(|j| (j, token_id)))
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessLevel::*;

    async fn open() -> (tempfile::TempDir, SqliteMeta) {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMeta::open(&dir.path().join("m.db")).await.unwrap();
        (dir, m)
    }

    fn all() -> Window {
        Window {
            offset: 0,
            limit: 100,
        }
    }

    async fn user(m: &SqliteMeta, username: &str) -> User {
        m.create_user(
            &NewUser {
                username: username.into(),
                name: format!("{username} name"),
                email: None,
                password_hash: None,
                admin: false,
            },
            1,
        )
        .await
        .unwrap()
    }

    fn new_group(path: &str, parent_id: Option<i64>) -> NewGroup {
        NewGroup {
            name: path.to_uppercase(),
            path: path.into(),
            parent_id,
            visibility: Visibility::Private,
            description: String::new(),
        }
    }

    async fn group(m: &SqliteMeta, path: &str, parent_id: Option<i64>) -> Namespace {
        m.create_group(&new_group(path, parent_id), 2)
            .await
            .unwrap()
    }

    fn new_project(namespace_id: i64, path: &str) -> NewProject {
        NewProject {
            namespace_id,
            name: path.to_uppercase(),
            path: path.into(),
            description: String::new(),
            visibility: Visibility::Private,
            registry_access: RegistryAccess::Enabled,
            creator_id: None,
        }
    }

    async fn project(m: &SqliteMeta, namespace_id: i64, path: &str) -> Project {
        m.create_project(&new_project(namespace_id, path), 3)
            .await
            .unwrap()
    }

    fn conflict<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(MetaError::Conflict(msg)) => msg,
            other => panic!("expected Conflict, got {other:?}"),
        }
    }

    fn not_found<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(MetaError::NotFound(msg)) => msg,
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn user_gets_personal_namespace() {
        let (_d, m) = open().await;
        assert_eq!(m.count_users().await.unwrap(), 0);
        let u = m
            .create_user(
                &NewUser {
                    username: "Alice".into(),
                    name: "Alice A".into(),
                    email: Some("a@example.com".into()),
                    password_hash: Some("$argon2id$x".into()),
                    admin: true,
                },
                7,
            )
            .await
            .unwrap();
        assert_eq!(u.username, "Alice");
        assert!(u.admin);
        assert_eq!(u.state, UserState::Active);
        assert_eq!(u.created_at, 7);
        assert_eq!(m.count_users().await.unwrap(), 1);
        assert_eq!(m.user(u.id).await.unwrap(), Some(u.clone()));
        assert_eq!(m.user(999).await.unwrap(), None);

        let ns = m.namespace(u.namespace_id).await.unwrap().unwrap();
        assert_eq!(ns.kind, NamespaceKind::User);
        assert_eq!(ns.path, "Alice");
        assert_eq!(ns.full_path, "Alice");
        assert_eq!(ns.name, "Alice A");
        assert_eq!(ns.owner_id, Some(u.id));
        assert_eq!(ns.parent_id, None);
        assert_eq!(
            m.namespace_by_path("alice").await.unwrap().map(|n| n.id),
            Some(u.namespace_id)
        );
        // A user namespace is not a group.
        assert!(m.groups(None, all()).await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn username_conflicts_ignore_case() {
        let (_d, m) = open().await;
        let alice = user(&m, "alice").await;
        assert_eq!(
            m.user_by_username("ALICE").await.unwrap().map(|u| u.id),
            Some(alice.id)
        );
        assert_eq!(m.user_by_username("bob").await.unwrap(), None);

        let dup = NewUser {
            username: "AlIcE".into(),
            name: "other".into(),
            email: None,
            password_hash: None,
            admin: false,
        };
        assert_eq!(
            conflict(m.create_user(&dup, 2).await),
            "Username has already been taken"
        );
        // A group's path is a namespace path too.
        group(&m, "Ops", None).await;
        let clash = NewUser {
            username: "ops".into(),
            ..dup.clone()
        };
        assert_eq!(
            conflict(m.create_user(&clash, 2).await),
            "Username has already been taken"
        );
        // Nothing was left behind by the refused creations.
        assert_eq!(m.count_users().await.unwrap(), 1);
        assert_eq!(m.users(None, all()).await.unwrap().1, 1);
    }

    #[tokio::test]
    async fn update_user_changes_only_given_fields() {
        let (_d, m) = open().await;
        let u = m
            .create_user(
                &NewUser {
                    username: "carol".into(),
                    name: "Carol".into(),
                    email: Some("c@example.com".into()),
                    password_hash: Some("h1".into()),
                    admin: false,
                },
                1,
            )
            .await
            .unwrap();
        let got = m
            .update_user(
                u.id,
                &UserUpdate {
                    name: Some("Carol C".into()),
                    state: Some(UserState::Blocked),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.name, "Carol C");
        assert_eq!(got.state, UserState::Blocked);
        assert_eq!(got.email.as_deref(), Some("c@example.com"));
        assert_eq!(got.password_hash.as_deref(), Some("h1"));
        assert!(!got.admin);
        // The personal namespace follows the user's name.
        assert_eq!(
            m.namespace(u.namespace_id).await.unwrap().unwrap().name,
            "Carol C"
        );

        let got = m
            .update_user(
                u.id,
                &UserUpdate {
                    email: Some("new@example.com".into()),
                    password_hash: Some("h2".into()),
                    admin: Some(true),
                    state: Some(UserState::Active),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.name, "Carol C");
        assert_eq!(got.email.as_deref(), Some("new@example.com"));
        assert_eq!(got.password_hash.as_deref(), Some("h2"));
        assert!(got.admin);
        assert_eq!(got.state, UserState::Active);
        assert_eq!(m.user(u.id).await.unwrap(), Some(got));
        assert_eq!(
            m.update_user(999, &UserUpdate::default()).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn users_page_count_and_search() {
        let (_d, m) = open().await;
        for name in ["ann", "bob", "anna", "dan", "zed"] {
            user(&m, name).await;
        }
        let (page, total) = m
            .users(
                None,
                Window {
                    offset: 1,
                    limit: 2,
                },
            )
            .await
            .unwrap();
        assert_eq!(total, 5);
        let names: Vec<_> = page.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["bob", "anna"]);
        // Past the end: an empty page, the total still right.
        let (page, total) = m
            .users(
                None,
                Window {
                    offset: 10,
                    limit: 2,
                },
            )
            .await
            .unwrap();
        assert!(page.is_empty());
        assert_eq!(total, 5);

        // Substring of the username or the name, any case; "an" is in ann, anna, dan.
        let (page, total) = m
            .users(
                Some("AN"),
                Window {
                    offset: 0,
                    limit: 2,
                },
            )
            .await
            .unwrap();
        assert_eq!(total, 3);
        let names: Vec<_> = page.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["ann", "anna"]);
        let (page, _) = m.users(Some("ZED NAME"), all()).await.unwrap();
        assert_eq!(page.len(), 1);
        // LIKE wildcards in the search are literal.
        assert_eq!(m.users(Some("%"), all()).await.unwrap().1, 0);
        assert_eq!(m.users(Some("_"), all()).await.unwrap().1, 0);
    }

    #[tokio::test]
    async fn nested_groups_and_paths() {
        let (_d, m) = open().await;
        let top = group(&m, "Acme", None).await;
        assert_eq!(top.full_path, "Acme");
        assert_eq!(top.kind, NamespaceKind::Group);
        assert_eq!(top.owner_id, None);
        let web = group(&m, "web", Some(top.id)).await;
        assert_eq!(web.full_path, "Acme/web");
        assert_eq!(web.parent_id, Some(top.id));
        let ui = group(&m, "ui", Some(web.id)).await;
        assert_eq!(ui.full_path, "Acme/web/ui");
        let api = group(&m, "api", Some(top.id)).await;
        assert_eq!(m.namespace(ui.id).await.unwrap(), Some(ui.clone()));
        assert_eq!(
            m.namespace_by_path("acme/WEB/ui").await.unwrap(),
            Some(ui.clone())
        );
        assert_eq!(m.namespace_by_path("acme/nope").await.unwrap(), None);

        // Direct subgroups only, and every depth, both by full path.
        let ids = |v: Vec<Namespace>| v.into_iter().map(|n| n.id).collect::<Vec<_>>();
        assert_eq!(ids(m.subgroups(top.id).await.unwrap()), [api.id, web.id]);
        assert_eq!(
            ids(m.descendant_groups(top.id).await.unwrap()),
            [api.id, web.id, ui.id]
        );
        assert_eq!(ids(m.descendant_groups(web.id).await.unwrap()), [ui.id]);
        assert!(m.subgroups(ui.id).await.unwrap().is_empty());

        // Taken paths, whatever their case; the same path elsewhere is fine.
        assert_eq!(
            conflict(m.create_group(&new_group("WEB", Some(top.id)), 2).await),
            "Path has already been taken"
        );
        assert_eq!(
            conflict(m.create_group(&new_group("acme", None), 2).await),
            "Path has already been taken"
        );
        group(&m, "web", Some(api.id)).await;
        // A project's path is taken for groups as well.
        project(&m, top.id, "site").await;
        assert_eq!(
            conflict(m.create_group(&new_group("Site", Some(top.id)), 2).await),
            "Path has already been taken"
        );
        // A username is a top-level path.
        user(&m, "dora").await;
        assert_eq!(
            conflict(m.create_group(&new_group("DORA", None), 2).await),
            "Path has already been taken"
        );

        // The parent must exist and be a group.
        assert_eq!(
            not_found(m.create_group(&new_group("x", Some(999)), 2).await),
            "Parent group not found"
        );
        let dora = m.user_by_username("dora").await.unwrap().unwrap();
        assert_eq!(
            not_found(
                m.create_group(&new_group("x", Some(dora.namespace_id)), 2)
                    .await
            ),
            "Parent group not found"
        );
    }

    #[tokio::test]
    async fn group_nesting_is_limited_to_twenty_ancestors() {
        let (_d, m) = open().await;
        let mut parent = group(&m, "g0", None).await;
        // g1 .. g20: the last has exactly 20 ancestors, which is allowed.
        for i in 1..=MAX_ANCESTORS {
            parent = group(&m, &format!("g{i}"), Some(parent.id)).await;
        }
        assert_eq!(parent.full_path.split('/').count(), MAX_ANCESTORS + 1);
        let msg = conflict(m.create_group(&new_group("deep", Some(parent.id)), 2).await);
        assert!(msg.contains("20 ancestors"), "{msg}");
        // A project still fits at the deepest level.
        project(&m, parent.id, "p").await;
    }

    #[tokio::test]
    async fn update_group_changes_only_given_fields() {
        let (_d, m) = open().await;
        let g = group(&m, "team", None).await;
        let got = m
            .update_group(
                g.id,
                &GroupUpdate {
                    visibility: Some(Visibility::Public),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.visibility, Visibility::Public);
        assert_eq!(got.name, g.name);
        let got = m
            .update_group(
                g.id,
                &GroupUpdate {
                    name: Some("The Team".into()),
                    description: Some("d".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.name, "The Team");
        assert_eq!(got.description, "d");
        assert_eq!(got.visibility, Visibility::Public);
        assert_eq!(got.path, "team");
        assert_eq!(m.namespace(g.id).await.unwrap(), Some(got));
        assert_eq!(
            m.update_group(999, &GroupUpdate::default()).await.unwrap(),
            None
        );
        // A user namespace is not a group to update.
        let u = user(&m, "erin").await;
        assert_eq!(
            m.update_group(u.namespace_id, &GroupUpdate::default())
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn groups_page_count_and_search() {
        let (_d, m) = open().await;
        user(&m, "infra-person").await;
        let infra = group(&m, "infra", None).await;
        group(&m, "apps", None).await;
        group(&m, "db", Some(infra.id)).await;
        group(&m, "web", None).await;
        let (page, total) = m
            .groups(
                None,
                Window {
                    offset: 0,
                    limit: 2,
                },
            )
            .await
            .unwrap();
        assert_eq!(total, 4);
        let paths: Vec<_> = page.iter().map(|g| g.full_path.as_str()).collect();
        assert_eq!(paths, ["infra", "apps"]);
        // By full path ("infra/db") or name, any case; never the user namespace.
        let (page, total) = m.groups(Some("INFRA"), all()).await.unwrap();
        assert_eq!(total, 2);
        let paths: Vec<_> = page.iter().map(|g| g.full_path.as_str()).collect();
        assert_eq!(paths, ["infra", "infra/db"]);
        // Names are the upper-cased paths here.
        assert_eq!(m.groups(Some("we"), all()).await.unwrap().1, 1);
    }

    #[tokio::test]
    async fn projects_paths_and_lookups() {
        let (_d, m) = open().await;
        let u = user(&m, "fay").await;
        let g = group(&m, "Grp", None).await;
        let sub = group(&m, "sub", Some(g.id)).await;
        let subsub = group(&m, "deep", Some(sub.id)).await;
        let other = group(&m, "other", None).await;

        let p = m
            .create_project(
                &NewProject {
                    creator_id: Some(u.id),
                    registry_access: RegistryAccess::Private,
                    visibility: Visibility::Internal,
                    description: "desc".into(),
                    ..new_project(g.id, "App")
                },
                9,
            )
            .await
            .unwrap();
        assert_eq!(p.full_path, "Grp/App");
        assert_eq!(p.creator_id, Some(u.id));
        assert_eq!(p.registry_access, RegistryAccess::Private);
        assert_eq!(p.visibility, Visibility::Internal);
        assert_eq!(p.created_at, 9);
        assert_eq!(m.project(p.id).await.unwrap(), Some(p.clone()));
        assert_eq!(m.project(999).await.unwrap(), None);
        assert_eq!(m.project_by_path("grp/app").await.unwrap(), Some(p.clone()));
        assert_eq!(m.project_by_path("grp").await.unwrap(), None);

        let personal = project(&m, u.namespace_id, "dots").await;
        assert_eq!(personal.full_path, "fay/dots");
        let in_sub = project(&m, sub.id, "svc").await;
        let in_deep = project(&m, subsub.id, "lib").await;
        let elsewhere = project(&m, other.id, "x").await;

        // Taken paths, any case, by projects or groups.
        assert_eq!(
            conflict(m.create_project(&new_project(g.id, "APP"), 3).await),
            "Path has already been taken"
        );
        assert_eq!(
            conflict(m.create_project(&new_project(g.id, "SUB"), 3).await),
            "Path has already been taken"
        );
        assert_eq!(
            not_found(m.create_project(&new_project(999, "p"), 3).await),
            "Namespace not found"
        );

        // The first existing candidate wins (callers pass the longest first).
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            m.project_for_paths(&c(&["grp/app/img/x", "grp/app/img", "grp/app"]))
                .await
                .unwrap()
                .map(|p| p.id),
            Some(p.id)
        );
        assert_eq!(
            m.project_for_paths(&c(&["grp/sub/svc", "grp/sub"]))
                .await
                .unwrap()
                .map(|p| p.id),
            Some(in_sub.id)
        );
        // With two existing candidates, the caller's first.
        project(&m, g.id, "a").await;
        let ab = project(&m, g.id, "a-b").await;
        let two = m
            .project_for_paths(&c(&["grp/a-b", "grp/a"]))
            .await
            .unwrap();
        assert_eq!(two.map(|p| p.id), Some(ab.id));
        assert_eq!(m.project_for_paths(&c(&["nope/x"])).await.unwrap(), None);
        assert_eq!(m.project_for_paths(&[]).await.unwrap(), None);

        // Namespace listings, ordered by full path.
        let ids = |v: Vec<Project>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(
            ids(m.projects_in(sub.id, false).await.unwrap()),
            [in_sub.id]
        );
        assert_eq!(
            ids(m.projects_in(sub.id, true).await.unwrap()),
            [in_deep.id, in_sub.id]
        );
        let all_g: Vec<_> = m
            .projects_in(g.id, true)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.full_path)
            .collect();
        assert_eq!(
            all_g,
            [
                "Grp/App",
                "Grp/a",
                "Grp/a-b",
                "Grp/sub/deep/lib",
                "Grp/sub/svc"
            ]
        );
        assert_eq!(m.projects_in(g.id, false).await.unwrap().len(), 3);
        assert_eq!(
            ids(m.projects_in(other.id, true).await.unwrap()),
            [elsewhere.id]
        );

        // Every project by id, optionally searched by name or path.
        let every = m.projects(None).await.unwrap();
        assert_eq!(every.len(), 7);
        assert!(every.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(
            ids(m.projects(Some("SUB/")).await.unwrap()),
            [in_sub.id, in_deep.id]
        );
        // Names are the upper-cased paths here.
        assert_eq!(ids(m.projects(Some("dOtS")).await.unwrap()), [personal.id]);
        assert!(m.projects(Some("zzz")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn update_project_changes_only_given_fields() {
        let (_d, m) = open().await;
        let g = group(&m, "g", None).await;
        let p = project(&m, g.id, "p").await;
        let got = m
            .update_project(
                p.id,
                &ProjectUpdate {
                    registry_access: Some(RegistryAccess::Disabled),
                    visibility: Some(Visibility::Public),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.registry_access, RegistryAccess::Disabled);
        assert_eq!(got.visibility, Visibility::Public);
        assert_eq!(got.name, p.name);
        assert_eq!(got.description, p.description);
        let got = m
            .update_project(
                p.id,
                &ProjectUpdate {
                    name: Some("New".into()),
                    description: Some("about".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.name, "New");
        assert_eq!(got.description, "about");
        assert_eq!(got.registry_access, RegistryAccess::Disabled);
        assert_eq!(got.full_path, "g/p");
        assert_eq!(m.project(p.id).await.unwrap(), Some(got));
        assert_eq!(
            m.update_project(999, &ProjectUpdate::default())
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn members_upsert_list_and_remove() {
        let (_d, m) = open().await;
        let a = user(&m, "a").await;
        let b = user(&m, "b").await;
        let g = group(&m, "g", None).await;
        let p = project(&m, g.id, "p").await;

        m.set_member(Source::Project(p.id), b.id, Developer, None, 5)
            .await
            .unwrap();
        m.set_member(Source::Project(p.id), a.id, Guest, Some("2030-01-01"), 6)
            .await
            .unwrap();
        let list = m.members(Source::Project(p.id)).await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].user, a);
        assert_eq!(list[0].access_level, Guest);
        assert_eq!(list[0].expires_at.as_deref(), Some("2030-01-01"));
        assert_eq!(list[0].source, Source::Project(p.id));
        assert_eq!(list[1].user, b);
        assert_eq!(list[1].access_level, Developer);

        // Replacing changes the level and expiry, not when membership began.
        m.set_member(Source::Project(p.id), a.id, Maintainer, None, 9)
            .await
            .unwrap();
        let list = m.members(Source::Project(p.id)).await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].access_level, Maintainer);
        assert_eq!(list[0].expires_at, None);
        assert_eq!(list[0].created_at, 6);

        // Group members are separate from project members with the same id.
        m.set_member(Source::Namespace(g.id), a.id, Owner, None, 1)
            .await
            .unwrap();
        let gl = m.members(Source::Namespace(g.id)).await.unwrap();
        assert_eq!(gl.len(), 1);
        assert_eq!(gl[0].access_level, Owner);

        assert!(m.remove_member(Source::Project(p.id), a.id).await.unwrap());
        assert!(!m.remove_member(Source::Project(p.id), a.id).await.unwrap());
        assert_eq!(m.members(Source::Project(p.id)).await.unwrap().len(), 1);
        assert_eq!(m.members(Source::Namespace(g.id)).await.unwrap().len(), 1);

        // Memberships need a real project or group and a real user.
        not_found(
            m.set_member(Source::Project(999), a.id, Guest, None, 1)
                .await,
        );
        not_found(
            m.set_member(Source::Namespace(999), a.id, Guest, None, 1)
                .await,
        );
        not_found(
            m.set_member(Source::Namespace(b.namespace_id), a.id, Guest, None, 1)
                .await,
        );
        not_found(
            m.set_member(Source::Project(p.id), 999, Guest, None, 1)
                .await,
        );
    }

    #[tokio::test]
    async fn roles_take_the_highest_inherited_level() {
        let (_d, m) = open().await;
        let u = user(&m, "u").await;
        let top = group(&m, "top", None).await;
        let mid = group(&m, "mid", Some(top.id)).await;
        let low = group(&m, "low", Some(mid.id)).await;
        let p = project(&m, low.id, "p").await;
        let today = "2024-06-15";

        assert_eq!(m.project_role(u.id, p.id, today).await.unwrap(), None);
        assert_eq!(m.group_role(u.id, low.id, today).await.unwrap(), None);

        // Each level of the chain counts; the highest wins wherever it sits.
        m.set_member(Source::Namespace(low.id), u.id, Guest, None, 1)
            .await
            .unwrap();
        m.set_member(Source::Namespace(top.id), u.id, Maintainer, None, 1)
            .await
            .unwrap();
        m.set_member(Source::Namespace(mid.id), u.id, Reporter, None, 1)
            .await
            .unwrap();
        m.set_member(Source::Project(p.id), u.id, Developer, None, 1)
            .await
            .unwrap();
        assert_eq!(
            m.project_role(u.id, p.id, today).await.unwrap(),
            Some(Maintainer)
        );
        assert_eq!(
            m.group_role(u.id, low.id, today).await.unwrap(),
            Some(Maintainer)
        );
        assert_eq!(
            m.group_role(u.id, top.id, today).await.unwrap(),
            Some(Maintainer)
        );

        // Without the top membership, the direct project one is the highest.
        assert!(m
            .remove_member(Source::Namespace(top.id), u.id)
            .await
            .unwrap());
        assert_eq!(
            m.project_role(u.id, p.id, today).await.unwrap(),
            Some(Developer)
        );
        assert_eq!(
            m.group_role(u.id, low.id, today).await.unwrap(),
            Some(Reporter)
        );
        // Roles flow down, never up.
        assert_eq!(m.group_role(u.id, top.id, today).await.unwrap(), None);

        // A direct project membership above every group one.
        m.set_member(Source::Project(p.id), u.id, Owner, None, 1)
            .await
            .unwrap();
        assert_eq!(
            m.project_role(u.id, p.id, today).await.unwrap(),
            Some(Owner)
        );

        // Someone else has nothing; a missing project or group gives nothing.
        let v = user(&m, "v").await;
        assert_eq!(m.project_role(v.id, p.id, today).await.unwrap(), None);
        assert_eq!(m.project_role(u.id, 999, today).await.unwrap(), None);
        assert_eq!(m.group_role(u.id, 999, today).await.unwrap(), None);
    }

    #[tokio::test]
    async fn expired_memberships_do_not_count() {
        let (_d, m) = open().await;
        let u = user(&m, "u").await;
        let top = group(&m, "top", None).await;
        let sub = group(&m, "sub", Some(top.id)).await;
        let p = project(&m, sub.id, "p").await;
        let today = "2024-06-15";

        // Expires when the day begins: today's date is already expired.
        m.set_member(Source::Namespace(top.id), u.id, Owner, Some(today), 1)
            .await
            .unwrap();
        m.set_member(
            Source::Project(p.id),
            u.id,
            Maintainer,
            Some("2024-06-14"),
            1,
        )
        .await
        .unwrap();
        m.set_member(
            Source::Namespace(sub.id),
            u.id,
            Reporter,
            Some("2024-06-16"),
            1,
        )
        .await
        .unwrap();
        assert_eq!(
            m.project_role(u.id, p.id, today).await.unwrap(),
            Some(Reporter)
        );
        assert_eq!(
            m.group_role(u.id, sub.id, today).await.unwrap(),
            Some(Reporter)
        );
        assert_eq!(m.group_role(u.id, top.id, today).await.unwrap(), None);
        // The day before, all three still count.
        assert_eq!(
            m.project_role(u.id, p.id, "2024-06-13").await.unwrap(),
            Some(Owner)
        );
        // The day the last one ends, nothing is left.
        assert_eq!(
            m.project_role(u.id, p.id, "2024-06-16").await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn user_namespace_owner_is_owner() {
        let (_d, m) = open().await;
        let u = user(&m, "owner").await;
        let other = user(&m, "other").await;
        let p = project(&m, u.namespace_id, "mine").await;
        let today = "2024-01-01";
        assert_eq!(
            m.project_role(u.id, p.id, today).await.unwrap(),
            Some(Owner)
        );
        assert_eq!(
            m.group_role(u.id, u.namespace_id, today).await.unwrap(),
            Some(Owner)
        );
        assert_eq!(m.project_role(other.id, p.id, today).await.unwrap(), None);
        assert_eq!(
            m.group_role(other.id, u.namespace_id, today).await.unwrap(),
            None
        );
        m.set_member(Source::Project(p.id), other.id, Reporter, None, 1)
            .await
            .unwrap();
        assert_eq!(
            m.project_role(other.id, p.id, today).await.unwrap(),
            Some(Reporter)
        );
        // Ownership of a personal namespace reaches only its own projects.
        let g = group(&m, "g", None).await;
        let gp = project(&m, g.id, "p").await;
        assert_eq!(m.project_role(u.id, gp.id, today).await.unwrap(), None);
    }

    #[tokio::test]
    async fn personal_tokens() {
        let (_d, m) = open().await;
        let a = user(&m, "a").await;
        let b = user(&m, "b").await;
        let new = |user_id, digest: &str| NewPersonalToken {
            user_id,
            name: "ci".into(),
            description: "for ci".into(),
            scopes: vec!["read_registry".into(), "write_registry".into()],
            expires_at: Some("2030-01-01".into()),
            digest: digest.into(),
        };
        let t1 = m.create_personal_token(&new(a.id, "d1"), 10).await.unwrap();
        assert_eq!(t1.scopes, ["read_registry", "write_registry"]);
        assert_eq!(t1.expires_at.as_deref(), Some("2030-01-01"));
        assert!(!t1.revoked);
        assert_eq!(t1.created_at, 10);
        assert_eq!(t1.last_used_at, None);
        assert_eq!(m.personal_token(t1.id).await.unwrap(), Some(t1.clone()));
        assert_eq!(
            m.personal_token_by_digest("d1").await.unwrap(),
            Some(t1.clone())
        );
        assert_eq!(m.personal_token_by_digest("nope").await.unwrap(), None);

        let t2 = m
            .create_personal_token(
                &NewPersonalToken {
                    scopes: vec![],
                    expires_at: None,
                    ..new(b.id, "d2")
                },
                11,
            )
            .await
            .unwrap();
        assert_eq!(m.personal_token(t2.id).await.unwrap(), Some(t2.clone()));
        let t3 = m.create_personal_token(&new(a.id, "d3"), 12).await.unwrap();
        let ids = |v: Vec<PersonalToken>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(
            ids(m.personal_tokens(None).await.unwrap()),
            [t1.id, t2.id, t3.id]
        );
        assert_eq!(
            ids(m.personal_tokens(Some(a.id)).await.unwrap()),
            [t1.id, t3.id]
        );
        assert_eq!(ids(m.personal_tokens(Some(b.id)).await.unwrap()), [t2.id]);

        m.touch_personal_token(t1.id, 99).await.unwrap();
        assert_eq!(
            m.personal_token(t1.id).await.unwrap().unwrap().last_used_at,
            Some(99)
        );
        assert!(m.revoke_personal_token(t1.id).await.unwrap());
        assert!(!m.revoke_personal_token(t1.id).await.unwrap());
        assert!(!m.revoke_personal_token(999).await.unwrap());
        assert!(m.personal_token(t1.id).await.unwrap().unwrap().revoked);
        assert!(!m.personal_token(t3.id).await.unwrap().unwrap().revoked);

        not_found(m.create_personal_token(&new(999, "d4"), 1).await);
    }

    #[tokio::test]
    async fn deploy_tokens_and_coverage() {
        let (_d, m) = open().await;
        let top = group(&m, "top", None).await;
        let sub = group(&m, "sub", Some(top.id)).await;
        let subsub = group(&m, "subsub", Some(sub.id)).await;
        let sibling = group(&m, "sibling", None).await;
        let deep = project(&m, subsub.id, "deep").await;
        let near = project(&m, top.id, "near").await;
        let away = project(&m, sibling.id, "away").await;

        let new = |source, digest: &str| NewDeployToken {
            source,
            name: "gitlab-deploy-token".into(),
            username: None,
            scopes: vec!["read_registry".into()],
            expires_at: Some(5000),
            digest: digest.into(),
        };
        let gt = m
            .create_deploy_token(&new(Source::Namespace(top.id), "g1"), 10)
            .await
            .unwrap();
        assert_eq!(gt.username, format!("gitlab+deploy-token-{}", gt.id));
        assert_eq!(gt.source, Source::Namespace(top.id));
        assert_eq!(gt.expires_at, Some(5000));
        assert_eq!(gt.scopes, ["read_registry"]);
        assert!(!gt.revoked);
        assert_eq!(m.deploy_token(gt.id).await.unwrap(), Some(gt.clone()));
        assert_eq!(
            m.deploy_token_by_digest("g1").await.unwrap(),
            Some(gt.clone())
        );
        assert_eq!(m.deploy_token_by_digest("zz").await.unwrap(), None);

        let pt = m
            .create_deploy_token(
                &NewDeployToken {
                    username: Some("robot".into()),
                    expires_at: None,
                    ..new(Source::Project(deep.id), "p1")
                },
                11,
            )
            .await
            .unwrap();
        assert_eq!(pt.username, "robot");
        assert_eq!(m.deploy_token(pt.id).await.unwrap(), Some(pt.clone()));
        let st = m
            .create_deploy_token(&new(Source::Namespace(subsub.id), "s1"), 12)
            .await
            .unwrap();

        let ids = |v: Vec<DeployToken>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(
            ids(m.deploy_tokens(None).await.unwrap()),
            [gt.id, pt.id, st.id]
        );
        assert_eq!(
            ids(m
                .deploy_tokens(Some(Source::Namespace(top.id)))
                .await
                .unwrap()),
            [gt.id]
        );
        assert_eq!(
            ids(m
                .deploy_tokens(Some(Source::Project(deep.id)))
                .await
                .unwrap()),
            [pt.id]
        );
        // A project and a namespace with the same id are different sources.
        assert!(m
            .deploy_tokens(Some(Source::Project(top.id)))
            .await
            .unwrap()
            .iter()
            .all(|t| t.source == Source::Project(top.id)));

        // A group token reaches every project below it, at any depth, and no further.
        let covers = |s, p| m.deploy_token_covers(s, p);
        assert!(covers(Source::Namespace(top.id), deep.id).await.unwrap());
        assert!(covers(Source::Namespace(top.id), near.id).await.unwrap());
        assert!(!covers(Source::Namespace(top.id), away.id).await.unwrap());
        assert!(covers(Source::Namespace(subsub.id), deep.id).await.unwrap());
        assert!(!covers(Source::Namespace(subsub.id), near.id).await.unwrap());
        assert!(!covers(Source::Namespace(sibling.id), deep.id)
            .await
            .unwrap());
        assert!(!covers(Source::Namespace(top.id), 999).await.unwrap());
        // A project token reaches its project only.
        assert!(covers(Source::Project(deep.id), deep.id).await.unwrap());
        assert!(!covers(Source::Project(deep.id), near.id).await.unwrap());

        assert!(m.revoke_deploy_token(gt.id).await.unwrap());
        assert!(!m.revoke_deploy_token(gt.id).await.unwrap());
        assert!(m.deploy_token(gt.id).await.unwrap().unwrap().revoked);
        assert!(!m.deploy_token(pt.id).await.unwrap().unwrap().revoked);

        // The source must exist, and a namespace source must be a group.
        not_found(
            m.create_deploy_token(&new(Source::Project(999), "x1"), 1)
                .await,
        );
        not_found(
            m.create_deploy_token(&new(Source::Namespace(999), "x2"), 1)
                .await,
        );
        let u = user(&m, "u").await;
        not_found(
            m.create_deploy_token(&new(Source::Namespace(u.namespace_id), "x3"), 1)
                .await,
        );
        assert_eq!(m.deploy_tokens(None).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn jobs_run_then_finish() {
        let (_d, m) = open().await;
        let u = user(&m, "u").await;
        let g = group(&m, "g", None).await;
        let p = project(&m, g.id, "p").await;
        let j = m.create_job(p.id, u.id, "jd", 5000, 10).await.unwrap();
        assert_eq!(j.status, JobStatus::Running);
        assert_eq!(j.project_id, p.id);
        assert_eq!(j.user_id, u.id);
        assert_eq!(j.expires_at, 5000);
        assert_eq!(j.created_at, 10);
        assert_eq!(m.job(j.id).await.unwrap(), Some(j.clone()));
        assert_eq!(m.job_by_digest("jd").await.unwrap(), Some(j.clone()));
        assert_eq!(m.job_by_digest("nope").await.unwrap(), None);
        assert!(m.finish_job(j.id, 20).await.unwrap());
        assert!(!m.finish_job(j.id, 21).await.unwrap());
        assert!(!m.finish_job(999, 21).await.unwrap());
        assert_eq!(
            m.job(j.id).await.unwrap().unwrap().status,
            JobStatus::Finished
        );
        not_found(m.create_job(999, u.id, "x", 1, 1).await);
        not_found(m.create_job(p.id, 999, "y", 1, 1).await);
    }

    #[tokio::test]
    async fn settings_upsert() {
        let (_d, m) = open().await;
        assert_eq!(m.setting("jwt_ttl").await.unwrap(), None);
        m.set_setting("jwt_ttl", "300").await.unwrap();
        assert_eq!(m.setting("jwt_ttl").await.unwrap().as_deref(), Some("300"));
        m.set_setting("jwt_ttl", "600").await.unwrap();
        assert_eq!(m.setting("jwt_ttl").await.unwrap().as_deref(), Some("600"));
        assert_eq!(m.setting("other").await.unwrap(), None);
    }
}
