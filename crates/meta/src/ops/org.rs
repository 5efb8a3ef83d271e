//! [`crate::OrgMeta`], written once for both backends (see the crate doc).
//!
//! Paths are unique case-insensitively across namespaces *and* projects (GitLab keeps
//! both in one routes table). The per-table unique indexes cannot see across tables, so
//! every create checks both under [`lock_paths`] (PostgreSQL's paths advisory lock;
//! SQLite's one writer needs none), which makes check-then-insert safe.

use async_trait::async_trait;
use berth_core::{AccessLevel, RegistryAccess, Visibility};
use sqlx::{Executor, Row};

use crate::common::*;
use crate::cache::Scope;
use crate::org::*;
use crate::{MetaError, Result};

use super::{lock_paths, Conn, Db, DbKind, DbRow};

// Rows of the organisation's tables as structs.

fn user_at(r: &DbRow, base: usize) -> Result<User> {
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
        password_change_required: r.get(base + 9),
    })
}

fn user_row(r: DbRow) -> Result<User> {
    user_at(&r, 0)
}

fn namespace_row(r: DbRow) -> Result<Namespace> {
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

fn project_row(r: DbRow) -> Result<Project> {
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

fn pat_row(r: DbRow) -> Result<PersonalToken> {
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

fn deploy_row(r: DbRow) -> Result<DeployToken> {
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

fn job_row(r: DbRow) -> Result<CiJob> {
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

fn collect<T>(rows: Vec<DbRow>, f: fn(DbRow) -> Result<T>) -> Result<Vec<T>> {
    rows.into_iter().map(f).collect()
}

/// GitLab's answer to a path that is taken.
pub(super) const PATH_TAKEN: &str = "Path has already been taken";

/// `Conflict(taken)` when a namespace or a project other than `except` already has
/// this full path (case-insensitive).
pub(super) async fn check_path_free(
    conn: &mut Conn,
    full_path: &str,
    except: Option<Source>,
    taken: &str,
) -> Result<()> {
    // Ids start at 1: 0 excludes nothing.
    let (namespace, project) = match except {
        Some(Source::Namespace(id)) => (id, 0),
        Some(Source::Project(id)) => (0, id),
        None => (0, 0),
    };
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(1 AS BIGINT) FROM namespaces WHERE lower(full_path) = lower($1) AND id <> $2 \
         UNION ALL SELECT 1 FROM projects WHERE lower(full_path) = lower($1) AND id <> $3 LIMIT 1",
    )
    .bind(full_path)
    .bind(namespace)
    .bind(project)
    .fetch_optional(conn)
    .await?;
    hit.map_or(Ok(()), |_| Err(MetaError::Conflict(taken.into())))
}

/// Group `id`, or `NotFound(missing)`.
pub(super) async fn group_in(conn: &mut Conn, id: i64, missing: &str) -> Result<Namespace> {
    let found = namespace_in(conn, id).await?;
    found
        .filter(|n| n.kind == NamespaceKind::Group)
        .ok_or_else(|| MetaError::NotFound(missing.into()))
}

/// The row `sql` finds with `arg` as `$1`, read by `row`.
async fn one<'c, 'q, T, A>(
    conn: impl Executor<'c, Database = DbKind>,
    sql: &'q str,
    arg: A,
    row: fn(DbRow) -> Result<T>,
) -> Result<Option<T>>
where
    A: 'q + Send + sqlx::Encode<'q, DbKind> + sqlx::Type<DbKind>,
{
    let found = sqlx::query(sql).bind(arg).fetch_optional(conn).await?;
    found.map(row).transpose()
}

/// Row `id`, just written by the caller's transaction, as read back.
pub(super) fn written<T>(found: Option<T>, id: i64) -> Result<T> {
    found.ok_or_else(|| corrupt(format!("row {id} vanished as it was written")))
}

async fn user_in<'c>(conn: impl Executor<'c, Database = DbKind>, id: i64) -> Result<Option<User>> {
    let sql = format!("{USER_SELECT} WHERE u.id = $1");
    one(conn, &sql, id, user_row).await
}

pub(super) async fn namespace_in<'c>(
    conn: impl Executor<'c, Database = DbKind>,
    id: i64,
) -> Result<Option<Namespace>> {
    let sql = format!("{NS_SELECT} WHERE n.id = $1");
    one(conn, &sql, id, namespace_row).await
}

pub(super) async fn project_in<'c>(
    conn: impl Executor<'c, Database = DbKind>,
    id: i64,
) -> Result<Option<Project>> {
    let sql = format!("{PROJECT_SELECT} WHERE p.id = $1");
    one(conn, &sql, id, project_row).await
}

/// `NotFound("<what> not found")` unless `table` has a row with id `id`.
async fn require(conn: &mut Conn, table: &str, what: &str, id: i64) -> Result<()> {
    let sql = format!("SELECT CAST(1 AS BIGINT) FROM {table} WHERE id = $1");
    let hit: Option<i64> = sqlx::query_scalar(&sql)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    hit.map(drop)
        .ok_or_else(|| MetaError::NotFound(format!("{what} not found")))
}

/// Memberships and deploy tokens belong to a project or a group (never to a user
/// namespace, as in GitLab). `NotFound` otherwise.
async fn check_source(conn: &mut Conn, source: Source) -> Result<()> {
    match source {
        Source::Project(id) => require(conn, "projects", "Project", id).await,
        Source::Namespace(id) => group_in(conn, id, "Group not found").await.map(drop),
    }
}

impl Db {
    /// The rows `sql` finds (with `arg` as `$1` when given), read by `row`.
    async fn all<'q, T, A>(
        &self,
        sql: &'q str,
        arg: Option<A>,
        row: fn(DbRow) -> Result<T>,
    ) -> Result<Vec<T>>
    where
        A: 'q + Send + sqlx::Encode<'q, DbKind> + sqlx::Type<DbKind>,
    {
        let q = sqlx::query(sql);
        let q = match arg {
            Some(a) => q.bind(a),
            None => q,
        };
        collect(q.fetch_all(self.reader()).await?, row)
    }

    /// One page of a searchable list (by its first column, the id) and the total, in
    /// one read transaction so both see the same snapshot. `select` is the list's
    /// SELECT … FROM, `base` a fixed condition (or empty) and `columns` the two
    /// columns a search looks in.
    async fn search_page<T>(
        &self,
        (select, base, columns): (&str, &str, [&str; 2]),
        search: Option<&str>,
        window: Window,
        row: fn(DbRow) -> Result<T>,
    ) -> Result<(Vec<T>, i64)> {
        let pattern = search.map(contains_pattern);
        let filter = pattern.as_ref().map(|_| contains_filter(columns));
        let condition = match [base, filter.as_deref().unwrap_or("")] {
            ["", ""] => String::new(),
            [c, ""] | ["", c] => format!(" WHERE {c}"),
            [b, f] => format!(" WHERE {b} AND {f}"),
        };
        let mut tx = self.read_tx().await?;
        // `$1`, the pattern, is bound (NULL when not searching) even where unread.
        let count_sql = format!("SELECT COUNT(*) FROM ({select}{condition}) AS matched");
        let total: i64 = sqlx::query_scalar(&count_sql)
            .bind(&pattern)
            .fetch_one(&mut *tx)
            .await?;
        let page_sql = format!("{select}{condition} ORDER BY 1 LIMIT $2 OFFSET $3");
        let rows = sqlx::query(&page_sql)
            .bind(&pattern)
            .bind(window.limit)
            .bind(window.offset.max(0))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((collect(rows, row)?, total))
    }
}

#[async_trait]
impl OrgMeta for Db {
    async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.reader())
            .await?)
    }

    async fn create_user(&self, user: &NewUser, now: i64) -> Result<User> {
        let mut tx = self.write_tx().await?;
        lock_paths(&mut tx).await?;
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(1 AS BIGINT) FROM users WHERE lower(username) = lower($1)",
        )
        .bind(&user.username)
        .fetch_optional(&mut *tx)
        .await?;
        const USERNAME_TAKEN: &str = "Username has already been taken";
        if taken.is_some() {
            return Err(MetaError::Conflict(USERNAME_TAKEN.into()));
        }
        // GitLab reports a taken namespace path against the username too.
        check_path_free(&mut tx, &user.username, None, USERNAME_TAKEN).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, name, email, password_hash, admin, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'active', $6) RETURNING id",
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
             VALUES ('user', $1, $2, $3, NULL, $4, 'public', '', $5)",
        )
        .bind(&user.name)
        .bind(&user.username)
        .bind(&user.username)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let created = written(user_in(&mut *tx, id).await?, id)?;
        tx.commit().await?;
        Ok(created)
    }

    async fn user(&self, id: i64) -> Result<Option<User>> {
        user_in(self.reader(), id).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let sql = format!("{USER_SELECT} WHERE lower(u.username) = lower($1)");
        one(self.reader(), &sql, username, user_row).await
    }

    async fn users(&self, search: Option<&str>, window: Window) -> Result<(Vec<User>, i64)> {
        let list = (USER_SELECT, "", ["u.username", "u.name"]);
        self.search_page(list, search, window, user_row).await
    }

    async fn update_user(&self, id: i64, update: &UserUpdate) -> Result<Option<User>> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE users SET name = COALESCE($1, name), email = COALESCE($2, email), \
             password_hash = COALESCE($3, password_hash), admin = COALESCE($4, admin), \
             state = COALESCE($5, state), \
             password_change_required = COALESCE($6, password_change_required) WHERE id = $7",
        )
        .bind(&update.name)
        .bind(&update.email)
        .bind(&update.password_hash)
        .bind(update.admin)
        .bind(update.state.map(UserState::as_str))
        .bind(update.password_change_required)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        // The personal namespace is named after its user, as GitLab keeps it.
        if let Some(name) = &update.name {
            sqlx::query("UPDATE namespaces SET name = $1 WHERE owner_id = $2 AND kind = 'user'")
                .bind(name)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let user = user_in(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn create_group(&self, group: &NewGroup, now: i64) -> Result<Namespace> {
        let mut tx = self.write_tx().await?;
        lock_paths(&mut tx).await?;
        let full_path = match group.parent_id {
            None => group.path.clone(),
            Some(parent_id) => {
                let parent = group_in(&mut tx, parent_id, "Parent group not found").await?;
                // full_path has one segment per level, so the parent's segments are
                // exactly the new group's ancestors.
                check_ancestors(segments(&parent.full_path))?;
                format!("{}/{}", parent.full_path, group.path)
            }
        };
        check_path_free(&mut tx, &full_path, None, PATH_TAKEN).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO namespaces (kind, name, path, full_path, parent_id, owner_id, \
             visibility, description, created_at) \
             VALUES ('group', $1, $2, $3, $4, NULL, $5, $6, $7) RETURNING id",
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
        let created = written(namespace_in(&mut *tx, id).await?, id)?;
        tx.commit().await?;
        Ok(created)
    }

    async fn namespace(&self, id: i64) -> Result<Option<Namespace>> {
        namespace_in(self.reader(), id).await
    }

    async fn namespace_by_path(&self, full_path: &str) -> Result<Option<Namespace>> {
        let sql = format!("{NS_SELECT} WHERE lower(n.full_path) = lower($1)");
        one(self.reader(), &sql, full_path, namespace_row).await
    }

    async fn groups(&self, search: Option<&str>, window: Window) -> Result<(Vec<Namespace>, i64)> {
        let list = (NS_SELECT, "n.kind = 'group'", ["n.name", "n.full_path"]);
        self.search_page(list, search, window, namespace_row).await
    }

    async fn subgroups(&self, id: i64) -> Result<Vec<Namespace>> {
        let sql =
            format!("{NS_SELECT} WHERE n.parent_id = $1 AND n.kind = 'group' ORDER BY n.full_path");
        self.all(&sql, Some(id), namespace_row).await
    }

    async fn descendant_groups(&self, id: i64) -> Result<Vec<Namespace>> {
        // UNION (not UNION ALL) so even a corrupt cycle cannot recurse forever.
        let sql = format!(
            "WITH RECURSIVE below(id) AS ( \
                 SELECT id FROM namespaces WHERE parent_id = $1 \
                 UNION SELECT c.id FROM namespaces c JOIN below b ON c.parent_id = b.id) \
             {NS_SELECT} JOIN below b ON b.id = n.id \
             WHERE n.kind = 'group' ORDER BY n.full_path"
        );
        self.all(&sql, Some(id), namespace_row).await
    }

    async fn update_group(&self, id: i64, update: &GroupUpdate) -> Result<Option<Namespace>> {
        let mut tx = self.write_tx().await?;
        // Only groups: a user namespace follows its user (see update_user).
        let done = sqlx::query(
            "UPDATE namespaces SET name = COALESCE($1, name), \
             visibility = COALESCE($2, visibility), description = COALESCE($3, description) \
             WHERE id = $4 AND kind = 'group'",
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
        let ns = namespace_in(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(ns)
    }

    async fn create_project(&self, project: &NewProject, now: i64) -> Result<Project> {
        let mut tx = self.write_tx().await?;
        lock_paths(&mut tx).await?;
        let ns = namespace_in(&mut *tx, project.namespace_id)
            .await?
            .ok_or_else(|| MetaError::NotFound("Namespace not found".into()))?;
        let full_path = format!("{}/{}", ns.full_path, project.path);
        check_path_free(&mut tx, &full_path, None, PATH_TAKEN).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO projects (namespace_id, name, path, full_path, description, \
             visibility, registry_access, creator_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
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
        let created = written(project_in(&mut *tx, id).await?, id)?;
        tx.commit().await?;
        Ok(created)
    }

    async fn project(&self, id: i64) -> Result<Option<Project>> {
        project_in(self.reader(), id).await
    }

    async fn projects_by_ids(&self, ids: &[i64]) -> Result<Vec<Project>> {
        let mut out = Vec::with_capacity(ids.len());
        for page in ids.chunks(500) {
            let sql = format!("{PROJECT_SELECT} WHERE p.id IN ({})", placeholders(page.len()));
            let mut q = sqlx::query(&sql);
            for id in page {
                q = q.bind(*id);
            }
            out.extend(collect(q.fetch_all(self.reader()).await?, project_row)?);
        }
        Ok(out)
    }

    async fn project_by_path(&self, full_path: &str) -> Result<Option<Project>> {
        let sql = format!("{PROJECT_SELECT} WHERE lower(p.full_path) = lower($1)");
        one(self.reader(), &sql, full_path, project_row).await
    }

    async fn project_for_paths(&self, candidates: &[String]) -> Result<Option<Project>> {
        if candidates.is_empty() {
            return Ok(None);
        }
        // lower() of a COLLATE "C" column folds ASCII only, as to_ascii_lowercase does.
        let lowered: Vec<String> = candidates.iter().map(|c| c.to_ascii_lowercase()).collect();
        let sql = format!(
            "{PROJECT_SELECT} WHERE lower(p.full_path) IN ({})",
            placeholders(lowered.len())
        );
        let mut q = sqlx::query(&sql);
        for c in &lowered {
            q = q.bind(c);
        }
        let rows = q.fetch_all(self.reader()).await?;
        let found = collect(rows, project_row)?;
        // The caller's order decides (longest first), not the database's.
        Ok(candidates.iter().find_map(|c| {
            found
                .iter()
                .find(|p| p.full_path.eq_ignore_ascii_case(c))
                .cloned()
        }))
    }

    async fn projects_in(&self, namespace_id: i64, descendants: bool) -> Result<Vec<Project>> {
        let sql = if descendants {
            format!(
                "WITH RECURSIVE tree(id) AS ( \
                     SELECT id FROM namespaces WHERE id = $1 \
                     UNION SELECT c.id FROM namespaces c JOIN tree t ON c.parent_id = t.id) \
                 {PROJECT_SELECT} JOIN tree t ON t.id = p.namespace_id ORDER BY p.full_path"
            )
        } else {
            format!("{PROJECT_SELECT} WHERE p.namespace_id = $1 ORDER BY p.full_path")
        };
        self.all(&sql, Some(namespace_id), project_row).await
    }

    async fn projects(&self, search: Option<&str>) -> Result<Vec<Project>> {
        let sql = match search {
            Some(_) => {
                let filter = contains_filter(["p.name", "p.full_path"]);
                format!("{PROJECT_SELECT} WHERE {filter} ORDER BY p.id")
            }
            None => format!("{PROJECT_SELECT} ORDER BY p.id"),
        };
        self.all(&sql, search.map(contains_pattern), project_row)
            .await
    }

    async fn update_project(&self, id: i64, update: &ProjectUpdate) -> Result<Option<Project>> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE projects SET name = COALESCE($1, name), \
             description = COALESCE($2, description), visibility = COALESCE($3, visibility), \
             registry_access = COALESCE($4, registry_access) WHERE id = $5",
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
        let p = project_in(&mut *tx, id).await?;
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
        require(&mut tx, "users", "User", user_id).await?;
        let (kind, id) = source_parts(source);
        // Replacing keeps created_at: the member has been one since then.
        sqlx::query(
            "INSERT INTO members (source_kind, source_id, user_id, access_level, expires_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) \
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
            "DELETE FROM members WHERE source_kind = $1 AND source_id = $2 AND user_id = $3",
        )
        .bind(kind)
        .bind(id)
        .bind(user_id)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn members(&self, source: Source) -> Result<Vec<Member>> {
        let (kind, id) = source_parts(source);
        let rows = sqlx::query(
            "SELECT u.id, u.username, u.name, u.email, u.admin, u.state, u.password_hash, \
             n.id, u.created_at, u.password_change_required, m.access_level, m.expires_at, \
             m.created_at \
             FROM members m JOIN users u ON u.id = m.user_id \
             LEFT JOIN namespaces n ON n.owner_id = u.id AND n.kind = 'user' \
             WHERE m.source_kind = $1 AND m.source_id = $2 ORDER BY u.id",
        )
        .bind(kind)
        .bind(id)
        .fetch_all(self.reader())
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
        // $1 project, $2 user, $3 today, $4 the owner's level. A membership ends
        // when its `expires_at` day begins; `YYYY-MM-DD` text sorts like the dates.
        let level: Option<i64> = sqlx::query_scalar(
            "WITH RECURSIVE up(id, parent_id) AS ( \
                 SELECT n.id, n.parent_id FROM namespaces n \
                 JOIN projects p ON p.namespace_id = n.id WHERE p.id = $1 \
                 UNION SELECT n.id, n.parent_id FROM namespaces n JOIN up ON n.id = up.parent_id) \
             SELECT MAX(level) FROM ( \
                 SELECT m.access_level AS level FROM members m \
                 WHERE m.source_kind = 'project' AND m.source_id = $1 AND m.user_id = $2 \
                   AND (m.expires_at IS NULL OR m.expires_at > $3) \
                 UNION ALL \
                 SELECT m.access_level FROM members m JOIN up ON m.source_id = up.id \
                 WHERE m.source_kind = 'namespace' AND m.user_id = $2 \
                   AND (m.expires_at IS NULL OR m.expires_at > $3) \
                 UNION ALL \
                 SELECT $4 FROM projects p JOIN namespaces n ON n.id = p.namespace_id \
                 WHERE p.id = $1 AND n.kind = 'user' AND n.owner_id = $2 \
             ) AS levels",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(today)
        .bind(AccessLevel::Owner.value())
        .fetch_one(self.reader())
        .await?;
        max_level(level)
    }

    async fn project_roles(
        &self,
        user_id: i64,
        project_ids: &[i64],
        today: &str,
    ) -> Result<std::collections::HashMap<i64, AccessLevel>> {
        let mut roles = std::collections::HashMap::new();
        // The same levels as `project_role`, for a page of projects per query, each
        // row of the ancestor walk carrying the project it started from.
        for page in project_ids.chunks(500) {
            let ids = (0..page.len())
                .map(|i| format!("${}", i + 4))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "WITH RECURSIVE up(project_id, id, parent_id) AS ( \
                     SELECT p.id, n.id, n.parent_id FROM namespaces n \
                     JOIN projects p ON p.namespace_id = n.id WHERE p.id IN ({ids}) \
                     UNION SELECT up.project_id, n.id, n.parent_id FROM namespaces n \
                     JOIN up ON n.id = up.parent_id) \
                 SELECT project_id, MAX(level) FROM ( \
                     SELECT m.source_id AS project_id, m.access_level AS level FROM members m \
                     WHERE m.source_kind = 'project' AND m.source_id IN ({ids}) AND m.user_id = $1 \
                       AND (m.expires_at IS NULL OR m.expires_at > $2) \
                     UNION ALL \
                     SELECT up.project_id, m.access_level FROM members m JOIN up ON m.source_id = up.id \
                     WHERE m.source_kind = 'namespace' AND m.user_id = $1 \
                       AND (m.expires_at IS NULL OR m.expires_at > $2) \
                     UNION ALL \
                     SELECT p.id, $3 FROM projects p JOIN namespaces n ON n.id = p.namespace_id \
                     WHERE p.id IN ({ids}) AND n.kind = 'user' AND n.owner_id = $1 \
                 ) AS levels GROUP BY project_id"
            );
            let mut q = sqlx::query(&sql)
                .bind(user_id)
                .bind(today)
                .bind(AccessLevel::Owner.value());
            for id in page {
                q = q.bind(*id);
            }
            for row in q.fetch_all(self.reader()).await? {
                if let Some(level) = max_level(row.get(1))? {
                    roles.insert(row.get::<i64, _>(0), level);
                }
            }
        }
        Ok(roles)
    }

    async fn group_role(
        &self,
        user_id: i64,
        namespace_id: i64,
        today: &str,
    ) -> Result<Option<AccessLevel>> {
        // $1 group, $2 user, $3 today, $4 the owner's level.
        let level: Option<i64> = sqlx::query_scalar(
            "WITH RECURSIVE up(id, parent_id) AS ( \
                 SELECT id, parent_id FROM namespaces WHERE id = $1 \
                 UNION SELECT n.id, n.parent_id FROM namespaces n JOIN up ON n.id = up.parent_id) \
             SELECT MAX(level) FROM ( \
                 SELECT m.access_level AS level FROM members m JOIN up ON m.source_id = up.id \
                 WHERE m.source_kind = 'namespace' AND m.user_id = $2 \
                   AND (m.expires_at IS NULL OR m.expires_at > $3) \
                 UNION ALL \
                 SELECT $4 FROM namespaces n \
                 WHERE n.id = $1 AND n.kind = 'user' AND n.owner_id = $2 \
             ) AS levels",
        )
        .bind(namespace_id)
        .bind(user_id)
        .bind(today)
        .bind(AccessLevel::Owner.value())
        .fetch_one(self.reader())
        .await?;
        max_level(level)
    }

    async fn create_personal_token(&self, t: &NewPersonalToken, now: i64) -> Result<PersonalToken> {
        let mut tx = self.write_tx().await?;
        require(&mut tx, "users", "User", t.user_id).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO personal_access_tokens (user_id, name, description, token_digest, \
             scopes, expires_at, revoked, created_at) VALUES ($1, $2, $3, $4, $5, $6, false, $7) \
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
        let sql = format!("{PAT_SELECT} WHERE id = $1");
        let created = written(one(&mut *tx, &sql, id, pat_row).await?, id)?;
        tx.commit().await?;
        Ok(created)
    }

    async fn personal_token(&self, id: i64) -> Result<Option<PersonalToken>> {
        let sql = format!("{PAT_SELECT} WHERE id = $1");
        one(self.reader(), &sql, id, pat_row).await
    }

    async fn personal_token_by_digest(&self, digest: &str) -> Result<Option<PersonalToken>> {
        let sql = format!("{PAT_SELECT} WHERE token_digest = $1");
        one(self.reader(), &sql, digest, pat_row).await
    }

    async fn personal_tokens(&self, user_id: Option<i64>) -> Result<Vec<PersonalToken>> {
        let sql = match user_id {
            Some(_) => format!("{PAT_SELECT} WHERE user_id = $1 ORDER BY id"),
            None => format!("{PAT_SELECT} ORDER BY id"),
        };
        self.all(&sql, user_id, pat_row).await
    }

    async fn revoke_personal_token(&self, id: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE personal_access_tokens SET revoked = true WHERE id = $1 AND NOT revoked",
        )
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_personal_token(&self, id: i64, now: i64) -> Result<()> {
        sqlx::query("UPDATE personal_access_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.writer_scoped(Scope::Nothing))
            .await?;
        Ok(())
    }

    async fn create_deploy_token(&self, t: &NewDeployToken, now: i64) -> Result<DeployToken> {
        let mut tx = self.write_tx().await?;
        check_source(&mut tx, t.source).await?;
        let (kind, source_id) = source_parts(t.source);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO deploy_tokens (source_kind, source_id, name, username, token_digest, \
             scopes, expires_at, revoked, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8) \
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
        if t.username.is_none() {
            sqlx::query("UPDATE deploy_tokens SET username = $1 WHERE id = $2")
                .bind(format!("gitlab+deploy-token-{id}"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let sql = format!("{DEPLOY_SELECT} WHERE id = $1");
        let created = written(one(&mut *tx, &sql, id, deploy_row).await?, id)?;
        tx.commit().await?;
        Ok(created)
    }

    async fn deploy_token(&self, id: i64) -> Result<Option<DeployToken>> {
        let sql = format!("{DEPLOY_SELECT} WHERE id = $1");
        one(self.reader(), &sql, id, deploy_row).await
    }

    async fn deploy_token_by_digest(&self, digest: &str) -> Result<Option<DeployToken>> {
        let sql = format!("{DEPLOY_SELECT} WHERE token_digest = $1");
        one(self.reader(), &sql, digest, deploy_row).await
    }

    async fn deploy_tokens(&self, source: Option<Source>) -> Result<Vec<DeployToken>> {
        let rows = match source {
            Some(s) => {
                let (kind, id) = source_parts(s);
                sqlx::query(&format!(
                    "{DEPLOY_SELECT} WHERE source_kind = $1 AND source_id = $2 ORDER BY id"
                ))
                .bind(kind)
                .bind(id)
                .fetch_all(self.reader())
                .await?
            }
            None => {
                sqlx::query(&format!("{DEPLOY_SELECT} ORDER BY id"))
                    .fetch_all(self.reader())
                    .await?
            }
        };
        collect(rows, deploy_row)
    }

    async fn revoke_deploy_token(&self, id: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE deploy_tokens SET revoked = true WHERE id = $1 AND NOT revoked")
                .bind(id)
                .execute(self.writer())
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
                         JOIN projects p ON p.namespace_id = n.id WHERE p.id = $1 \
                         UNION SELECT n.id, n.parent_id FROM namespaces n \
                         JOIN up ON n.id = up.parent_id) \
                     SELECT COUNT(*) FROM up WHERE id = $2",
                )
                .bind(project_id)
                .bind(group)
                .fetch_one(self.reader())
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
        require(&mut tx, "projects", "Project", project_id).await?;
        require(&mut tx, "users", "User", user_id).await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO ci_jobs (project_id, user_id, token_digest, status, expires_at, \
             created_at) VALUES ($1, $2, $3, 'running', $4, $5) RETURNING id",
        )
        .bind(project_id)
        .bind(user_id)
        .bind(digest)
        .bind(expires_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let sql = format!("{JOB_SELECT} WHERE id = $1");
        let created = written(one(&mut *tx, &sql, id, job_row).await?, id)?;
        tx.commit().await?;
        Ok(created)
    }

    async fn job(&self, id: i64) -> Result<Option<CiJob>> {
        let sql = format!("{JOB_SELECT} WHERE id = $1");
        one(self.reader(), &sql, id, job_row).await
    }

    async fn job_by_digest(&self, digest: &str) -> Result<Option<CiJob>> {
        let sql = format!("{JOB_SELECT} WHERE token_digest = $1");
        one(self.reader(), &sql, digest, job_row).await
    }

    async fn finish_job(&self, id: i64, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ci_jobs SET status = 'finished', finished_at = $1 \
             WHERE id = $2 AND status = 'running'",
        )
        .bind(now)
        .bind(id)
        .execute(self.writer())
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
             VALUES ($1, $2, $3)",
        )
        .bind(job_id)
        .bind(deploy_token_id)
        .bind(digest)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn job_deploy_credential(&self, digest: &str) -> Result<Option<(CiJob, i64)>> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT job_id, deploy_token_id FROM ci_job_deploy_credentials WHERE token_digest = $1",
        )
        .bind(digest)
        .fetch_optional(self.reader())
        .await?;
        let Some((job_id, token_id)) = row else {
            return Ok(None);
        };
        Ok(self.job(job_id).await?.map(|j| (j, token_id)))
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(self.reader())
                .await?,
        )
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(self.writer())
        .await?;
        Ok(())
    }
}
