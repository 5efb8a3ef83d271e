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

/// Whether a namespace or a project already has this full path (case-insensitive).
async fn path_taken(conn: &mut Conn, full_path: &str) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar(
        "SELECT CAST(1 AS BIGINT) FROM namespaces WHERE lower(full_path) = lower($1) \
         UNION ALL SELECT 1 FROM projects WHERE lower(full_path) = lower($2) LIMIT 1",
    )
    .bind(full_path)
    .bind(full_path)
    .fetch_optional(conn)
    .await?;
    Ok(hit.is_some())
}

async fn user_in<'c>(conn: impl Executor<'c, Database = DbKind>, id: i64) -> Result<Option<User>> {
    let sql = format!("{USER_SELECT} WHERE u.id = $1");
    let found = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
    found.map(user_row).transpose()
}

pub(super) async fn namespace_in<'c>(
    conn: impl Executor<'c, Database = DbKind>,
    id: i64,
) -> Result<Option<Namespace>> {
    let sql = format!("{NS_SELECT} WHERE n.id = $1");
    let found = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
    found.map(namespace_row).transpose()
}

pub(super) async fn project_in<'c>(
    conn: impl Executor<'c, Database = DbKind>,
    id: i64,
) -> Result<Option<Project>> {
    let sql = format!("{PROJECT_SELECT} WHERE p.id = $1");
    let found = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
    found.map(project_row).transpose()
}

async fn user_exists(conn: &mut Conn, id: i64) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(hit.is_some())
}

async fn project_exists(conn: &mut Conn, id: i64) -> Result<bool> {
    let hit: Option<i64> =
        sqlx::query_scalar("SELECT CAST(1 AS BIGINT) FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(hit.is_some())
}

/// Memberships and deploy tokens belong to a project or a group (never to a user
/// namespace, as in GitLab). `NotFound` otherwise.
async fn check_source(conn: &mut Conn, source: Source) -> Result<()> {
    match source {
        Source::Project(id) => {
            if !project_exists(conn, id).await? {
                return Err(MetaError::NotFound("Project not found".into()));
            }
        }
        Source::Namespace(id) => {
            let kind: Option<String> =
                sqlx::query_scalar("SELECT kind FROM namespaces WHERE id = $1")
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

impl Db {
    /// The row `sql` finds with `arg` as `$1`, read by `row`.
    async fn one<'q, T, A>(
        &self,
        sql: &'q str,
        arg: A,
        row: fn(DbRow) -> Result<T>,
    ) -> Result<Option<T>>
    where
        A: 'q + Send + sqlx::Encode<'q, DbKind> + sqlx::Type<DbKind>,
    {
        let found = sqlx::query(sql).bind(arg).fetch_optional(self.reader());
        found.await?.map(row).transpose()
    }

    /// One page of a searchable list and the total, in one read transaction so both
    /// see the same snapshot. `from` names the table for the count, `select` is the
    /// page's SELECT … FROM, `base` a fixed condition (`" WHERE …"` or empty) and
    /// `filter` the search condition (`$1` is the pattern), appended to
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
    ) -> Result<(Vec<DbRow>, i64)> {
        let pattern = search.map(contains_pattern);
        let condition = match (&pattern, base.is_empty()) {
            (None, _) => base.to_string(),
            (Some(_), false) => format!("{base}{filter}"),
            // No fixed condition: the filter starts the WHERE clause itself.
            (Some(_), true) => filter.to_string(),
        };
        let mut tx = self.read_tx().await?;
        let count_sql = format!("SELECT COUNT(*) {from}{condition}");
        let mut q = sqlx::query_scalar::<_, i64>(&count_sql);
        if let Some(p) = &pattern {
            q = q.bind(p);
        }
        let total = q.fetch_one(&mut *tx).await?;
        let (limit, offset) = if pattern.is_some() { (2, 3) } else { (1, 2) };
        let page_sql =
            format!("{select}{condition} ORDER BY {order} LIMIT ${limit} OFFSET ${offset}");
        let mut q = sqlx::query(&page_sql);
        if let Some(p) = &pattern {
            q = q.bind(p);
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
        // GitLab reports a taken namespace path against the username too.
        if taken.is_some() || path_taken(&mut tx, &user.username).await? {
            return Err(MetaError::Conflict(
                "Username has already been taken".into(),
            ));
        }
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
        let created = user_in(&mut *tx, id)
            .await?
            .ok_or_else(|| corrupt(format!("user {id} vanished")))?;
        tx.commit().await?;
        Ok(created)
    }

    async fn user(&self, id: i64) -> Result<Option<User>> {
        user_in(self.reader(), id).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        self.one(
            &format!("{USER_SELECT} WHERE lower(u.username) = lower($1)"),
            username,
            user_row,
        )
        .await
    }

    async fn users(&self, search: Option<&str>, window: Window) -> Result<(Vec<User>, i64)> {
        let filter = " WHERE (lower(u.username) LIKE lower($1) ESCAPE '\\' \
             OR lower(u.name) LIKE lower($1) ESCAPE '\\')";
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
                let parent = namespace_in(&mut *tx, parent_id)
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
        namespace_in(self.reader(), id).await
    }

    async fn namespace_by_path(&self, full_path: &str) -> Result<Option<Namespace>> {
        self.one(
            &format!("{NS_SELECT} WHERE lower(n.full_path) = lower($1)"),
            full_path,
            namespace_row,
        )
        .await
    }

    async fn groups(&self, search: Option<&str>, window: Window) -> Result<(Vec<Namespace>, i64)> {
        let filter = " AND (lower(n.name) LIKE lower($1) ESCAPE '\\' \
             OR lower(n.full_path) LIKE lower($1) ESCAPE '\\')";
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
            "{NS_SELECT} WHERE n.parent_id = $1 AND n.kind = 'group' ORDER BY n.full_path"
        ))
        .bind(id)
        .fetch_all(self.reader())
        .await?;
        collect(rows, namespace_row)
    }

    async fn descendant_groups(&self, id: i64) -> Result<Vec<Namespace>> {
        // UNION (not UNION ALL) so even a corrupt cycle cannot recurse forever.
        let rows = sqlx::query(&format!(
            "WITH RECURSIVE below(id) AS ( \
                 SELECT id FROM namespaces WHERE parent_id = $1 \
                 UNION SELECT c.id FROM namespaces c JOIN below b ON c.parent_id = b.id) \
             {NS_SELECT} JOIN below b ON b.id = n.id \
             WHERE n.kind = 'group' ORDER BY n.full_path"
        ))
        .bind(id)
        .fetch_all(self.reader())
        .await?;
        collect(rows, namespace_row)
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
        if path_taken(&mut tx, &full_path).await? {
            return Err(MetaError::Conflict("Path has already been taken".into()));
        }
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
        project_in(self.reader(), id).await
    }

    async fn project_by_path(&self, full_path: &str) -> Result<Option<Project>> {
        self.one(
            &format!("{PROJECT_SELECT} WHERE lower(p.full_path) = lower($1)"),
            full_path,
            project_row,
        )
        .await
    }

    async fn project_for_paths(&self, candidates: &[String]) -> Result<Option<Project>> {
        if candidates.is_empty() {
            return Ok(None);
        }
        // lower() of a COLLATE "C" column folds ASCII only, as to_ascii_lowercase does.
        let lowered: Vec<String> = candidates.iter().map(|c| c.to_ascii_lowercase()).collect();
        let marks: Vec<String> = (1..=lowered.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "{PROJECT_SELECT} WHERE lower(p.full_path) IN ({})",
            marks.join(", ")
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
        let rows = if descendants {
            sqlx::query(&format!(
                "WITH RECURSIVE tree(id) AS ( \
                     SELECT id FROM namespaces WHERE id = $1 \
                     UNION SELECT c.id FROM namespaces c JOIN tree t ON c.parent_id = t.id) \
                 {PROJECT_SELECT} JOIN tree t ON t.id = p.namespace_id ORDER BY p.full_path"
            ))
            .bind(namespace_id)
            .fetch_all(self.reader())
            .await?
        } else {
            sqlx::query(&format!(
                "{PROJECT_SELECT} WHERE p.namespace_id = $1 ORDER BY p.full_path"
            ))
            .bind(namespace_id)
            .fetch_all(self.reader())
            .await?
        };
        collect(rows, project_row)
    }

    async fn projects(&self, search: Option<&str>) -> Result<Vec<Project>> {
        let rows = match search {
            Some(s) => {
                let pattern = contains_pattern(s);
                sqlx::query(&format!(
                    "{PROJECT_SELECT} WHERE lower(p.name) LIKE lower($1) ESCAPE '\\' \
                     OR lower(p.full_path) LIKE lower($1) ESCAPE '\\' ORDER BY p.id"
                ))
                .bind(&pattern)
                .fetch_all(self.reader())
                .await?
            }
            None => {
                sqlx::query(&format!("{PROJECT_SELECT} ORDER BY p.id"))
                    .fetch_all(self.reader())
                    .await?
            }
        };
        collect(rows, project_row)
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
        if !user_exists(&mut tx, user_id).await? {
            return Err(MetaError::NotFound("User not found".into()));
        }
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
        if !user_exists(&mut tx, t.user_id).await? {
            return Err(MetaError::NotFound("User not found".into()));
        }
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
        self.one(&format!("{PAT_SELECT} WHERE id = $1"), id, pat_row)
            .await
    }

    async fn personal_token_by_digest(&self, digest: &str) -> Result<Option<PersonalToken>> {
        self.one(
            &format!("{PAT_SELECT} WHERE token_digest = $1"),
            digest,
            pat_row,
        )
        .await
    }

    async fn personal_tokens(&self, user_id: Option<i64>) -> Result<Vec<PersonalToken>> {
        let rows = match user_id {
            Some(u) => {
                sqlx::query(&format!("{PAT_SELECT} WHERE user_id = $1 ORDER BY id"))
                    .bind(u)
                    .fetch_all(self.reader())
                    .await?
            }
            None => {
                sqlx::query(&format!("{PAT_SELECT} ORDER BY id"))
                    .fetch_all(self.reader())
                    .await?
            }
        };
        collect(rows, pat_row)
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
            .execute(self.writer())
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
        let username = match &t.username {
            Some(u) => u.clone(),
            None => {
                let u = format!("gitlab+deploy-token-{id}");
                sqlx::query("UPDATE deploy_tokens SET username = $1 WHERE id = $2")
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
        self.one(&format!("{DEPLOY_SELECT} WHERE id = $1"), id, deploy_row)
            .await
    }

    async fn deploy_token_by_digest(&self, digest: &str) -> Result<Option<DeployToken>> {
        self.one(
            &format!("{DEPLOY_SELECT} WHERE token_digest = $1"),
            digest,
            deploy_row,
        )
        .await
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
        if !project_exists(&mut tx, project_id).await? {
            return Err(MetaError::NotFound("Project not found".into()));
        }
        if !user_exists(&mut tx, user_id).await? {
            return Err(MetaError::NotFound("User not found".into()));
        }
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
        self.one(&format!("{JOB_SELECT} WHERE id = $1"), id, job_row)
            .await
    }

    async fn job_by_digest(&self, digest: &str) -> Result<Option<CiJob>> {
        self.one(
            &format!("{JOB_SELECT} WHERE token_digest = $1"),
            digest,
            job_row,
        )
        .await
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
