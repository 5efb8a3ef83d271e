//! SQLite implementation of [`crate::RepositoryMeta`].
//!
//! Tag listings read the partial index `tags_live (repository_id, name) WHERE deleted_at
//! IS NULL` in name order, so a page (offset or keyset) never sorts the whole tag list;
//! the total is a separate index-only `COUNT(*)` (over `tags_repository (repository_id,
//! deleted_at, manifest_digest)`, migration 0004). Names compare bytewise
//! (SQLite's BINARY collation); PostgreSQL will need `COLLATE "C"` for the same order.
//!
//! Moves rewrite paths by prefix (`new || substr(path, length(old) + 1)`), which
//! PostgreSQL runs unchanged, as it does `WITH RECURSIVE ... UPDATE`.

use async_trait::async_trait;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::org::{Namespace, NamespaceKind, Project, Window};
use crate::repositories::{
    ExpirationPolicy, RepositoryInfo, RepositoryMeta, TagInfo, TagOrder, TagPage, TagQuery,
};
use crate::sqlite_org::{namespace_in, project_in};
use crate::{MetaError, Result, SqliteMeta};

/// GitLab's `Group::NUMBER_OF_ANCESTORS_ALLOWED` (as in `sqlite_org`).
const MAX_ANCESTORS: usize = 20;

/// The columns `repo_select` reads.
const REPO_COLS: &str =
    "id, path, project_id, created_at, status, cleanup_status, cleanup_started_at, live_tags, \
     updated_at";

/// Repositories chosen by `rows` (a `SELECT {REPO_COLS} FROM repositories ...`),
/// each with its number of live tags (kept by triggers).
fn repo_select(rows: &str) -> String {
    format!(
        "SELECT r.id, r.path, r.project_id, r.created_at, r.status, r.cleanup_status, \
         r.cleanup_started_at, r.live_tags, r.updated_at \
         FROM ({rows}) r"
    )
}

/// Manifests reachable from live tags of repository `?1` (directly or as index
/// children), for GitLab's size: the unique layers of what is tagged.
const LIVE_MANIFESTS: &str = "WITH RECURSIVE live(id) AS ( \
     SELECT m.id FROM manifests m JOIN tags t \
       ON t.repository_id = m.repository_id AND t.manifest_digest = m.digest \
     WHERE m.repository_id = ?1 AND t.deleted_at IS NULL \
     UNION SELECT r.child_id FROM manifest_references r JOIN live ON live.id = r.parent_id)";
/// Layer blobs (not configs) of the `live` manifests.
const LIVE_LAYERS: &str = "SELECT mb.digest FROM manifest_blobs mb \
     JOIN manifests m ON m.id = mb.manifest_id JOIN live ON live.id = m.id \
     WHERE m.config_digest IS NULL OR mb.digest <> m.config_digest";

/// Live tags of one repository (bind: repository id) with their manifest's details.
const TAG_SELECT: &str = "SELECT t.name, t.manifest_digest, m.media_type, m.config_digest, \
     COALESCE(m.image_created_at, t.created_at), t.created_at, m.total_size \
     FROM tags t JOIN manifests m \
       ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest \
     WHERE t.repository_id = ? AND t.deleted_at IS NULL";

/// Kept by triggers on `tags` (migration 0008).
const LIVE_TAG_COUNT: &str = "SELECT live_tags FROM repositories WHERE id = ?";

/// A group and every group below it (bind: the group's id). `UNION` (not `UNION ALL`)
/// so even a corrupt cycle cannot recurse forever.
const TREE: &str = "WITH RECURSIVE tree(id) AS ( \
         SELECT id FROM namespaces WHERE id = ? \
         UNION SELECT c.id FROM namespaces c JOIN tree t ON c.parent_id = t.id) ";

/// The SQL of one tag page. Binds: repository id, then (offset pages) the repository
/// id again, limit and offset, or (keyset pages) `last` when given, then limit.
fn tag_page_sql(page: &TagPage) -> String {
    match page {
        // Skip through the covering index first, then join only the page's rows:
        // an OFFSET over the join would build every skipped row.
        TagPage::Offset(_) => format!(
            "{TAG_SELECT} AND t.name IN (SELECT name FROM tags \
               WHERE repository_id = ? AND deleted_at IS NULL ORDER BY name LIMIT ? OFFSET ?) \
             ORDER BY t.name"
        ),
        TagPage::After {
            last, descending, ..
        } => {
            let (cmp, dir) = if *descending {
                ("<", "DESC")
            } else {
                (">", "ASC")
            };
            let after = if last.is_some() {
                format!(" AND t.name {cmp} ?")
            } else {
                String::new()
            };
            format!("{TAG_SELECT}{after} ORDER BY t.name {dir} LIMIT ?")
        }
    }
}

/// `query`'s name filter as a `LIKE` pattern (ASCII case-insensitive in SQLite).
fn like_pattern(query: &TagQuery) -> Option<String> {
    let text = query.name_contains.as_deref().filter(|s| !s.is_empty())?;
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Some(format!("%{escaped}%"))
}

fn corrupt(e: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt(e.to_string())
}

fn repo_row(r: SqliteRow) -> RepositoryInfo {
    RepositoryInfo {
        id: r.get(0),
        path: r.get(1),
        project_id: r.get(2),
        created_at: r.get(3),
        status: r.get(4),
        cleanup_status: r.get(5),
        cleanup_started_at: r.get(6),
        tags_count: r.get(7),
        updated_at: r.get(8),
    }
}

fn tag_row(r: SqliteRow) -> TagInfo {
    TagInfo {
        name: r.get(0),
        digest: r.get(1),
        media_type: r.get(2),
        config_digest: r.get(3),
        created_at: r.get(4),
        pushed_at: r.get(5),
        total_size: r.get(6),
    }
}

fn segments(path: &str) -> usize {
    path.split('/').count()
}

#[async_trait]
impl RepositoryMeta for SqliteMeta {
    async fn repositories_of(
        &self,
        project_ids: &[i64],
        window: Window,
    ) -> Result<(Vec<RepositoryInfo>, i64)> {
        if project_ids.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let marks = vec!["?"; project_ids.len()].join(", ");
        let filter = format!("r.project_id IN ({marks}) AND r.status IS NULL");
        // One read transaction, so the page and the total see the same snapshot.
        let mut tx = self.read.begin().await?;
        let count_sql = format!("SELECT COUNT(*) FROM repositories r WHERE {filter}");
        let mut q = sqlx::query_scalar::<_, i64>(&count_sql);
        for id in project_ids {
            q = q.bind(id);
        }
        let total = q.fetch_one(&mut *tx).await?;
        let page_sql = format!(
            "{} ORDER BY r.path",
            repo_select(&format!(
                "SELECT {REPO_COLS} FROM repositories r WHERE {filter} \
                 ORDER BY r.path LIMIT ? OFFSET ?"
            ))
        );
        let mut q = sqlx::query(&page_sql);
        for id in project_ids {
            q = q.bind(id);
        }
        let rows = q
            .bind(window.limit.max(0))
            .bind(window.offset.max(0))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((rows.into_iter().map(repo_row).collect(), total))
    }

    async fn repository_info(&self, id: i64) -> Result<Option<RepositoryInfo>> {
        Ok(sqlx::query(&repo_select(&format!(
            "SELECT {REPO_COLS} FROM repositories WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .map(repo_row))
    }

    async fn repository_size(&self, id: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!(
            "{LIVE_MANIFESTS} SELECT COALESCE(SUM(b.size), 0) FROM blobs b WHERE b.digest IN ({LIVE_LAYERS})"
        ))
        .bind(id)
        .fetch_one(&self.read)
        .await?)
    }

    async fn repository_tags(&self, id: i64, page: TagPage) -> Result<(Vec<TagInfo>, i64)> {
        let sql = tag_page_sql(&page);
        let mut tx = self.read.begin().await?;
        // Counting 100,000 tags costs more than reading a page of them; only offset
        // pages need the total.
        let total: i64 = match page {
            TagPage::Offset(_) => sqlx::query_scalar::<_, i64>(LIVE_TAG_COUNT)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0),
            TagPage::After { .. } => 0,
        };
        let q = sqlx::query(&sql).bind(id);
        let q = match &page {
            TagPage::Offset(w) => q.bind(id).bind(w.limit.max(0)).bind(w.offset.max(0)),
            TagPage::After { last, limit, .. } => match last {
                Some(last) => q.bind(last.as_str()).bind((*limit).max(0)),
                None => q.bind((*limit).max(0)),
            },
        };
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok((rows.into_iter().map(tag_row).collect(), total))
    }

    async fn search_tags(&self, id: i64, query: &TagQuery) -> Result<(Vec<TagInfo>, i64)> {
        let pattern = like_pattern(query);
        let filter = if pattern.is_some() {
            " AND name LIKE ? ESCAPE '\\'"
        } else {
            ""
        };
        let dir = if query.descending { "DESC" } else { "ASC" };
        let mut tx = self.read.begin().await?;
        let total: i64 = match &pattern {
            None => sqlx::query_scalar::<_, i64>(LIVE_TAG_COUNT)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0),
            Some(p) => {
                sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM tags \
                     WHERE repository_id = ? AND deleted_at IS NULL{filter}"
                ))
                .bind(id)
                .bind(p)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        let rows = match query.order {
            // The page's names come from the index alone; only they are joined.
            TagOrder::Name => {
                let sql = format!(
                    "{TAG_SELECT} AND t.name IN (SELECT name FROM tags \
                       WHERE repository_id = ? AND deleted_at IS NULL{filter} \
                       ORDER BY name {dir} LIMIT ? OFFSET ?) \
                     ORDER BY t.name {dir}"
                );
                let q = sqlx::query(&sql).bind(id).bind(id);
                let q = match &pattern {
                    Some(p) => q.bind(p),
                    None => q,
                };
                q.bind(query.window.limit.max(0))
                    .bind(query.window.offset.max(0))
                    .fetch_all(&mut *tx)
                    .await?
            }
            TagOrder::Created => {
                let filter = filter.replace("name", "t.name");
                let sql = format!(
                    "{TAG_SELECT}{filter} \
                     ORDER BY COALESCE(m.image_created_at, t.created_at) {dir}, t.name {dir} \
                     LIMIT ? OFFSET ?"
                );
                let q = sqlx::query(&sql).bind(id);
                let q = match &pattern {
                    Some(p) => q.bind(p),
                    None => q,
                };
                q.bind(query.window.limit.max(0))
                    .bind(query.window.offset.max(0))
                    .fetch_all(&mut *tx)
                    .await?
            }
        };
        tx.commit().await?;
        Ok((rows.into_iter().map(tag_row).collect(), total))
    }

    async fn repository_tag(&self, id: i64, name: &str) -> Result<Option<TagInfo>> {
        Ok(sqlx::query(&format!("{TAG_SELECT} AND t.name = ?"))
            .bind(id)
            .bind(name)
            .fetch_optional(&self.read)
            .await?
            .map(tag_row))
    }

    async fn all_tags(&self, id: i64) -> Result<Vec<TagInfo>> {
        Ok(sqlx::query(&format!("{TAG_SELECT} ORDER BY t.name"))
            .bind(id)
            .fetch_all(&self.read)
            .await?
            .into_iter()
            .map(tag_row)
            .collect())
    }

    async fn delete_tags(&self, id: i64, names: &[String], now: i64) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut ended = 0;
        for name in names {
            // One prepared statement (sqlx caches it), one index probe per name.
            ended += sqlx::query(
                "UPDATE tags SET deleted_at = ? \
                 WHERE repository_id = ? AND name = ? AND deleted_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(ended)
    }

    async fn schedule_repository_delete(&self, id: i64) -> Result<bool> {
        // A failed deletion may be asked for again (GitLab's API does the same).
        let done = sqlx::query(
            "UPDATE repositories SET status = 'delete_scheduled' \
             WHERE id = ? AND (status IS NULL OR status = 'delete_failed')",
        )
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn scheduled_repository_deletes(&self) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM repositories \
             WHERE status IN ('delete_scheduled', 'delete_ongoing') ORDER BY id",
        )
        .fetch_all(&self.read)
        .await?)
    }

    async fn delete_repository(&self, id: i64, now: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let path: Option<String> = sqlx::query_scalar("SELECT path FROM repositories WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        // Already gone: deleting is idempotent, so a retried job just finishes.
        let Some(path) = path else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE tags SET deleted_at = ? WHERE repository_id = ? AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // Index links first: a child may not go while a reference to it remains.
        sqlx::query(
            "DELETE FROM manifest_references \
             WHERE parent_id IN (SELECT id FROM manifests WHERE repository_id = ?) \
                OR child_id IN (SELECT id FROM manifests WHERE repository_id = ?)",
        )
        .bind(id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        // manifest_blobs go with their manifests (ON DELETE CASCADE).
        sqlx::query("DELETE FROM manifests WHERE repository_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM repository_blobs WHERE repository_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM uploads WHERE repository_path = ?")
            .bind(&path)
            .execute(&mut *tx)
            .await?;
        // The tag history goes with the repository (ON DELETE CASCADE).
        sqlx::query("DELETE FROM repositories WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn try_lease(&self, key: &str, until: i64, now: i64) -> Result<bool> {
        // One statement: insert, or take over only an expired lease. A held lease
        // makes the DO UPDATE's WHERE false, so no row changes.
        let done = sqlx::query(
            "INSERT INTO leases (key, expires_at) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE leases.expires_at <= ?",
        )
        .bind(key)
        .bind(until)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_lease(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE key = ?")
            .bind(key)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn expiration_policy(&self, project_id: i64) -> Result<Option<ExpirationPolicy>> {
        let row = sqlx::query(
            "SELECT enabled, cadence, keep_n, older_than, name_regex, name_regex_keep, \
             next_run_at FROM expiration_policies WHERE project_id = ?",
        )
        .bind(project_id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| ExpirationPolicy {
            enabled: r.get(0),
            cadence: r.get(1),
            keep_n: r.get(2),
            older_than: r.get(3),
            name_regex: r.get(4),
            name_regex_keep: r.get(5),
            next_run_at: r.get(6),
        }))
    }

    async fn set_expiration_policy(
        &self,
        project_id: i64,
        p: &ExpirationPolicy,
        now: i64,
    ) -> Result<()> {
        // INSERT ... SELECT FROM projects: an unknown project inserts nothing. (The
        // WHERE also settles SQLite's parsing ambiguity between SELECT and ON CONFLICT.)
        let done = sqlx::query(
            "INSERT INTO expiration_policies (project_id, enabled, cadence, keep_n, \
             older_than, name_regex, name_regex_keep, next_run_at, created_at, updated_at) \
             SELECT id, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM projects WHERE id = ? \
             ON CONFLICT (project_id) DO UPDATE SET enabled = excluded.enabled, \
             cadence = excluded.cadence, keep_n = excluded.keep_n, \
             older_than = excluded.older_than, name_regex = excluded.name_regex, \
             name_regex_keep = excluded.name_regex_keep, next_run_at = excluded.next_run_at, \
             updated_at = excluded.updated_at",
        )
        .bind(p.enabled)
        .bind(&p.cadence)
        .bind(p.keep_n)
        .bind(&p.older_than)
        .bind(&p.name_regex)
        .bind(&p.name_regex_keep)
        .bind(p.next_run_at)
        .bind(now)
        .bind(now)
        .bind(project_id)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(MetaError::NotFound("Project not found".into()));
        }
        Ok(())
    }

    async fn project_tags_count(&self, project_id: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM repositories r \
             JOIN tags t ON t.repository_id = r.id AND t.deleted_at IS NULL \
             WHERE r.project_id = ?",
        )
        .bind(project_id)
        .fetch_one(&self.read)
        .await?)
    }

    async fn move_project(
        &self,
        project_id: i64,
        namespace_id: i64,
        path: &str,
        name: &str,
    ) -> Result<Project> {
        let mut tx = self.write_tx().await?;
        let project = project_in(&mut tx, project_id)
            .await?
            .ok_or_else(|| MetaError::NotFound("Project not found".into()))?;
        let ns = namespace_in(&mut tx, namespace_id)
            .await?
            .ok_or_else(|| MetaError::NotFound("Namespace not found".into()))?;
        let full_path = format!("{}/{}", ns.full_path, path);
        // Paths are unique across namespaces and projects, case-insensitively; the
        // project itself may keep its path in another case.
        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM namespaces WHERE lower(full_path) = lower(?) \
             UNION ALL SELECT 1 FROM projects WHERE lower(full_path) = lower(?) AND id <> ? \
             LIMIT 1",
        )
        .bind(&full_path)
        .bind(&full_path)
        .bind(project_id)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(MetaError::Conflict("Path has already been taken".into()));
        }
        // Registry paths are lower case (ASCII, as the image-path rules lower them).
        let old_prefix = project.full_path.to_ascii_lowercase();
        let new_prefix = full_path.to_ascii_lowercase();
        // The project's repositories: its root image and the paths below it.
        const MINE: &str = "r.project_id = ? \
             AND (r.path = ? OR substr(r.path, 1, length(?) + 1) = ? || '/')";
        if old_prefix != new_prefix {
            let clash: Option<String> = sqlx::query_scalar(&format!(
                "SELECT o.path FROM repositories r \
                 JOIN repositories o ON o.path = ? || substr(r.path, length(?) + 1) \
                 WHERE {MINE} AND (o.project_id IS NULL OR o.project_id <> ?) LIMIT 1"
            ))
            .bind(&new_prefix)
            .bind(&old_prefix)
            .bind(project_id)
            .bind(&old_prefix)
            .bind(&old_prefix)
            .bind(&old_prefix)
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(clash) = clash {
                return Err(MetaError::Conflict(format!(
                    "Container repository {clash} already exists"
                )));
            }
        }
        sqlx::query(
            "UPDATE projects SET namespace_id = ?, path = ?, name = ?, full_path = ? \
             WHERE id = ?",
        )
        .bind(namespace_id)
        .bind(path)
        .bind(name)
        .bind(&full_path)
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
        if old_prefix != new_prefix {
            sqlx::query(&format!(
                "UPDATE repositories SET path = ? || substr(path, length(?) + 1) \
                 WHERE id IN (SELECT r.id FROM repositories r WHERE {MINE})"
            ))
            .bind(&new_prefix)
            .bind(&old_prefix)
            .bind(project_id)
            .bind(&old_prefix)
            .bind(&old_prefix)
            .bind(&old_prefix)
            .execute(&mut *tx)
            .await?;
        }
        let moved = project_in(&mut tx, project_id)
            .await?
            .ok_or_else(|| corrupt(format!("project {project_id} vanished")))?;
        tx.commit().await?;
        Ok(moved)
    }

    async fn move_group(
        &self,
        namespace_id: i64,
        parent_id: Option<Option<i64>>,
        path: &str,
    ) -> Result<Namespace> {
        let mut tx = self.write_tx().await?;
        let group = namespace_in(&mut tx, namespace_id)
            .await?
            .filter(|n| n.kind == NamespaceKind::Group)
            .ok_or_else(|| MetaError::NotFound("Group not found".into()))?;
        let parent_id = parent_id.unwrap_or(group.parent_id);
        let full_path = match parent_id {
            None => path.to_string(),
            Some(parent_id) => {
                if parent_id == group.id {
                    return Err(MetaError::Conflict(
                        "A group cannot be moved into itself".into(),
                    ));
                }
                let parent = namespace_in(&mut tx, parent_id)
                    .await?
                    .filter(|p| p.kind == NamespaceKind::Group)
                    .ok_or_else(|| MetaError::NotFound("Parent group not found".into()))?;
                // Walk up from the new parent (a short chain): meeting the group means
                // the parent is one of its descendants.
                let cycle: i64 = sqlx::query_scalar(
                    "WITH RECURSIVE up(id, parent_id) AS ( \
                         SELECT id, parent_id FROM namespaces WHERE id = ? \
                         UNION SELECT n.id, n.parent_id FROM namespaces n \
                         JOIN up ON n.id = up.parent_id) \
                     SELECT COUNT(*) FROM up WHERE id = ?",
                )
                .bind(parent_id)
                .bind(group.id)
                .fetch_one(&mut *tx)
                .await?;
                if cycle > 0 {
                    return Err(MetaError::Conflict(
                        "A group cannot be moved into one of its own subgroups".into(),
                    ));
                }
                format!("{}/{}", parent.full_path, path)
            }
        };

        // The group and its descendants keep their depth relative to the group; the
        // deepest must stay within the nesting limit.
        let tree_paths: Vec<String> = sqlx::query_scalar(&format!(
            "{TREE}SELECT n.full_path FROM namespaces n JOIN tree t ON t.id = n.id"
        ))
        .bind(group.id)
        .fetch_all(&mut *tx)
        .await?;
        let old = group.full_path.clone();
        let below = format!("{old}/");
        let mut deepest = 0;
        for p in &tree_paths {
            if *p != old && !p.starts_with(&below) {
                return Err(corrupt(format!("group {p} is not below {old}")));
            }
            deepest = deepest.max(segments(p) - segments(&old));
        }
        if segments(&full_path) - 1 + deepest > MAX_ANCESTORS {
            return Err(MetaError::Conflict(format!(
                "Group nesting is too deep: a group may have at most {MAX_ANCESTORS} ancestors"
            )));
        }
        let stray: Option<String> = sqlx::query_scalar(&format!(
            "{TREE}SELECT p.full_path FROM projects p JOIN tree t ON t.id = p.namespace_id \
             WHERE substr(p.full_path, 1, length(?)) <> ? LIMIT 1"
        ))
        .bind(group.id)
        .bind(&below)
        .bind(&below)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(stray) = stray {
            return Err(corrupt(format!("project {stray} is not below {old}")));
        }

        let taken: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM namespaces WHERE lower(full_path) = lower(?) AND id <> ? \
             UNION ALL SELECT 1 FROM projects WHERE lower(full_path) = lower(?) LIMIT 1",
        )
        .bind(&full_path)
        .bind(group.id)
        .bind(&full_path)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(MetaError::Conflict("Path has already been taken".into()));
        }

        // Repositories of every project below the group: lower-case paths under
        // `old_prefix/`.
        let old_prefix = old.to_ascii_lowercase();
        let new_prefix = full_path.to_ascii_lowercase();
        let moved_repos = format!(
            "{TREE}, moved(id, path) AS ( \
                 SELECT r.id, r.path FROM repositories r \
                 JOIN projects p ON p.id = r.project_id \
                 JOIN tree t ON t.id = p.namespace_id \
                 WHERE substr(r.path, 1, length(?) + 1) = ? || '/') "
        );
        if old_prefix != new_prefix {
            let clash: Option<String> = sqlx::query_scalar(&format!(
                "{moved_repos}SELECT o.path FROM moved mv \
                 JOIN repositories o ON o.path = ? || substr(mv.path, length(?) + 1) \
                 WHERE o.id NOT IN (SELECT id FROM moved) LIMIT 1"
            ))
            .bind(group.id)
            .bind(&old_prefix)
            .bind(&old_prefix)
            .bind(&new_prefix)
            .bind(&old_prefix)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(clash) = clash {
                return Err(MetaError::Conflict(format!(
                    "Container repository {clash} already exists"
                )));
            }
        }

        sqlx::query("UPDATE namespaces SET path = ?, parent_id = ? WHERE id = ?")
            .bind(path)
            .bind(parent_id)
            .bind(group.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "{TREE}UPDATE namespaces SET full_path = ? || substr(full_path, length(?) + 1) \
             WHERE id IN (SELECT id FROM tree)"
        ))
        .bind(group.id)
        .bind(&full_path)
        .bind(&old)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "{TREE}UPDATE projects SET full_path = ? || substr(full_path, length(?) + 1) \
             WHERE namespace_id IN (SELECT id FROM tree)"
        ))
        .bind(group.id)
        .bind(&full_path)
        .bind(&old)
        .execute(&mut *tx)
        .await?;
        if old_prefix != new_prefix {
            sqlx::query(&format!(
                "{moved_repos}UPDATE repositories SET path = ? || substr(path, length(?) + 1) \
                 WHERE id IN (SELECT id FROM moved)"
            ))
            .bind(group.id)
            .bind(&old_prefix)
            .bind(&old_prefix)
            .bind(&new_prefix)
            .bind(&old_prefix)
            .execute(&mut *tx)
            .await?;
        }
        let moved = namespace_in(&mut tx, group.id)
            .await?
            .ok_or_else(|| corrupt(format!("group {} vanished", group.id)))?;
        tx.commit().await?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::org::{NewGroup, NewProject, OrgMeta};
    use crate::{ManifestRef, NewManifest, RegistryMeta, Upload};
    use berth_core::{RegistryAccess, Visibility};
    use berth_oci::Digest;

    async fn open() -> (tempfile::TempDir, SqliteMeta) {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMeta::open(&dir.path().join("m.db")).await.unwrap();
        (dir, m)
    }

    fn window(offset: i64, limit: i64) -> Window {
        Window { offset, limit }
    }

    async fn group(m: &SqliteMeta, path: &str, parent_id: Option<i64>) -> Namespace {
        m.create_group(
            &NewGroup {
                name: path.to_uppercase(),
                path: path.into(),
                parent_id,
                visibility: Visibility::Private,
                description: String::new(),
            },
            1,
        )
        .await
        .unwrap()
    }

    async fn project(m: &SqliteMeta, namespace_id: i64, path: &str) -> Project {
        m.create_project(
            &NewProject {
                namespace_id,
                name: path.to_uppercase(),
                path: path.into(),
                description: String::new(),
                visibility: Visibility::Private,
                registry_access: RegistryAccess::Enabled,
                creator_id: None,
            },
            1,
        )
        .await
        .unwrap()
    }

    fn blob(name: &str) -> Digest {
        Digest::sha256_of(name.as_bytes())
    }

    /// A manifest over `layers` (linked into `repo` with their sizes) and an optional
    /// config, pushed with `tag` at `now`.
    async fn push(
        m: &SqliteMeta,
        repo: &str,
        payload: &str,
        layers: &[(&str, u64)],
        image_created_at: Option<i64>,
        tag: Option<&str>,
        now: i64,
    ) -> NewManifest {
        let mut blobs = Vec::new();
        for (name, size) in layers {
            let d = blob(name);
            m.link_blob(repo, &d, *size, now).await.unwrap();
            blobs.push(d);
        }
        let man = NewManifest {
            digest: Digest::sha256_of(payload.as_bytes()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            payload: payload.as_bytes().to_vec(),
            config: blobs.first().cloned(),
            blobs,
            children: vec![],
            subject: None,
            artifact_type: None,
            image_created_at,
            total_size: layers.iter().skip(1).map(|(_, s)| *s as i64).sum(),
            annotations: None,
        };
        m.put_manifest(repo, &man, tag, now).await.unwrap();
        man
    }

    async fn tag(m: &SqliteMeta, repo: &str, man: &NewManifest, name: &str, now: i64) {
        m.put_manifest(repo, man, Some(name), now).await.unwrap();
    }

    async fn repo_id(m: &SqliteMeta, path: &str) -> i64 {
        m.repository(path).await.unwrap().unwrap().id
    }

    fn names(tags: &[TagInfo]) -> Vec<&str> {
        tags.iter().map(|t| t.name.as_str()).collect()
    }

    #[tokio::test]
    async fn tag_search_filters_sorts_and_pages_in_the_database() {
        let (_d, m) = open().await;
        let g = group(&m, "g", None).await;
        project(&m, g.id, "p").await;
        // Image creation times run against name order, so the two orders differ.
        let tag_names = ["v1", "v2", "V3_x", "main", "v10"];
        for (i, n) in tag_names.iter().enumerate() {
            let man = push(
                &m,
                "g/p",
                &format!("m{i}"),
                &[(&format!("cfg{i}"), 1)],
                Some(100 - i as i64),
                None,
                10,
            )
            .await;
            tag(&m, "g/p", &man, n, 10).await;
        }
        m.delete_tag("g/p", "main", 11).await.unwrap();
        let id = repo_id(&m, "g/p").await;
        let q = |text: Option<&str>, order, descending, offset, limit| TagQuery {
            name_contains: text.map(String::from),
            order,
            descending,
            window: window(offset, limit),
        };
        let (page, total) = m
            .search_tags(id, &q(None, TagOrder::Name, false, 0, 10))
            .await
            .unwrap();
        assert_eq!((names(&page), total), (vec!["V3_x", "v1", "v10", "v2"], 4));
        let (page, total) = m
            .search_tags(id, &q(Some("v1"), TagOrder::Name, true, 0, 10))
            .await
            .unwrap();
        assert_eq!((names(&page), total), (vec!["v10", "v1"], 2));
        // LIKE's wildcards are taken literally, and case does not matter.
        let (page, total) = m
            .search_tags(id, &q(Some("3_"), TagOrder::Name, false, 0, 10))
            .await
            .unwrap();
        assert_eq!((names(&page), total), (vec!["V3_x"], 1));
        let (page, _) = m
            .search_tags(id, &q(Some("_"), TagOrder::Name, false, 0, 10))
            .await
            .unwrap();
        assert_eq!(names(&page), ["V3_x"]);
        let (page, total) = m
            .search_tags(id, &q(None, TagOrder::Created, false, 1, 2))
            .await
            .unwrap();
        assert_eq!((names(&page), total), (vec!["V3_x", "v2"], 4));
        let (page, _) = m
            .search_tags(id, &q(Some("V"), TagOrder::Created, true, 0, 10))
            .await
            .unwrap();
        assert_eq!(names(&page), ["v1", "v2", "V3_x", "v10"]);
        let info = m.repository_info(id).await.unwrap().unwrap();
        assert_eq!(info.updated_at, 10);
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

    async fn ns(m: &SqliteMeta, id: i64) -> String {
        m.namespace(id).await.unwrap().unwrap().full_path
    }

    async fn full(m: &SqliteMeta, id: i64) -> String {
        m.project(id).await.unwrap().unwrap().full_path
    }

    async fn count(m: &SqliteMeta, sql: &str, id: i64) -> i64 {
        sqlx::query_scalar(sql)
            .bind(id)
            .fetch_one(&m.read)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn repositories_of_pages_by_path_with_tag_counts() {
        let (_d, m) = open().await;
        let g = group(&m, "g", None).await;
        let p1 = project(&m, g.id, "p1").await;
        let p2 = project(&m, g.id, "p2").await;
        let p3 = project(&m, g.id, "p3").await;
        let a = push(&m, "g/p1/b", "a", &[("cfg", 1)], None, Some("v1"), 10).await;
        tag(&m, "g/p1/b", &a, "v2", 11).await;
        tag(&m, "g/p1/b", &a, "gone", 11).await;
        m.delete_tag("g/p1/b", "gone", 12).await.unwrap();
        push(&m, "g/p1", "b", &[("cfg", 1)], None, Some("latest"), 13).await;
        push(&m, "g/p1/a", "c", &[("cfg", 1)], None, None, 14).await;
        push(&m, "g/p2/z", "d", &[("cfg", 1)], None, Some("x"), 15).await;
        push(&m, "g/p3/y", "e", &[("cfg", 1)], None, Some("x"), 16).await;

        let (all, total) = m
            .repositories_of(&[p1.id, p2.id], window(0, 10))
            .await
            .unwrap();
        assert_eq!(total, 4);
        let paths: Vec<_> = all.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["g/p1", "g/p1/a", "g/p1/b", "g/p2/z"]);
        let counts: Vec<_> = all.iter().map(|r| r.tags_count).collect();
        assert_eq!(counts, [1, 0, 2, 1]);
        let first = &all[0];
        assert_eq!(first.project_id, Some(p1.id));
        assert_eq!(first.created_at, 13);
        assert_eq!(first.status, None);
        assert_eq!(first.cleanup_status, "cleanup_unscheduled");
        assert_eq!(first.cleanup_started_at, None);

        let (page, total) = m
            .repositories_of(&[p1.id, p2.id], window(1, 2))
            .await
            .unwrap();
        assert_eq!(total, 4);
        assert_eq!(page, all[1..3].to_vec());
        let (page, total) = m
            .repositories_of(&[p1.id, p2.id], window(4, 2))
            .await
            .unwrap();
        assert!(page.is_empty());
        assert_eq!(total, 4);

        let (page, total) = m.repositories_of(&[p3.id], window(0, 10)).await.unwrap();
        assert_eq!(total, 1);
        assert_eq!(page[0].path, "g/p3/y");
        assert_eq!(
            m.repositories_of(&[], window(0, 10)).await.unwrap(),
            (vec![], 0)
        );
        assert_eq!(
            m.repositories_of(&[999], window(0, 10)).await.unwrap(),
            (vec![], 0)
        );

        assert_eq!(
            m.repository_info(all[2].id).await.unwrap(),
            Some(all[2].clone())
        );
        assert_eq!(m.repository_info(999).await.unwrap(), None);
        assert_eq!(m.project_tags_count(p1.id).await.unwrap(), 3);
        assert_eq!(m.project_tags_count(p3.id).await.unwrap(), 1);
        assert_eq!(m.project_tags_count(999).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn scheduled_deletion_hides_repository() {
        let (_d, m) = open().await;
        let g = group(&m, "g", None).await;
        let p = project(&m, g.id, "p").await;
        push(&m, "g/p/a", "a", &[("cfg", 1)], None, Some("v1"), 1).await;
        push(&m, "g/p/b", "b", &[("cfg", 1)], None, Some("v1"), 1).await;
        let a = repo_id(&m, "g/p/a").await;
        assert!(m.scheduled_repository_deletes().await.unwrap().is_empty());

        assert!(m.schedule_repository_delete(a).await.unwrap());
        assert!(!m.schedule_repository_delete(a).await.unwrap());
        assert!(!m.schedule_repository_delete(999).await.unwrap());
        assert_eq!(m.scheduled_repository_deletes().await.unwrap(), [a]);

        let (list, total) = m.repositories_of(&[p.id], window(0, 10)).await.unwrap();
        assert_eq!(total, 1);
        assert_eq!(list[0].path, "g/p/b");
        let info = m.repository_info(a).await.unwrap().unwrap();
        assert_eq!(info.status.as_deref(), Some("delete_scheduled"));
        assert_eq!(info.tags_count, 1);

        // A deletion the worker gave up on may be asked for again.
        sqlx::query("UPDATE repositories SET status = 'delete_failed' WHERE id = ?")
            .bind(a)
            .execute(&m.write)
            .await
            .unwrap();
        assert!(m.scheduled_repository_deletes().await.unwrap().is_empty());
        assert!(m.schedule_repository_delete(a).await.unwrap());
        assert_eq!(m.scheduled_repository_deletes().await.unwrap(), [a]);
    }

    #[tokio::test]
    async fn tag_pages_offset_and_keyset() {
        let (_d, m) = open().await;
        let man = push(&m, "r", "m", &[("cfg", 1)], None, None, 1).await;
        // Byte order: upper case before lower case, "v1.10" before "v1.2".
        for name in ["b", "a", "v1.2", "v1.10", "Z", "e"] {
            tag(&m, "r", &man, name, 2).await;
        }
        tag(&m, "r", &man, "deleted", 2).await;
        m.delete_tag("r", "deleted", 3).await.unwrap();
        let id = repo_id(&m, "r").await;
        let sorted = ["Z", "a", "b", "e", "v1.10", "v1.2"];

        let (all, total) = m
            .repository_tags(id, TagPage::Offset(window(0, 100)))
            .await
            .unwrap();
        assert_eq!(total, 6);
        assert_eq!(names(&all), sorted);
        let (page, total) = m
            .repository_tags(id, TagPage::Offset(window(2, 3)))
            .await
            .unwrap();
        assert_eq!((names(&page), total), (vec!["b", "e", "v1.10"], 6));
        let (page, _) = m
            .repository_tags(id, TagPage::Offset(window(6, 3)))
            .await
            .unwrap();
        assert!(page.is_empty());

        let after = |last: Option<&str>, limit, descending| TagPage::After {
            last: last.map(str::to_string),
            limit,
            descending,
        };
        let (page, total) = m.repository_tags(id, after(None, 2, false)).await.unwrap();
        // Keyset pages are not counted (GitLab sends no totals with them).
        assert_eq!((names(&page), total), (vec!["Z", "a"], 0));
        let (page, _) = m
            .repository_tags(id, after(Some("a"), 2, false))
            .await
            .unwrap();
        assert_eq!(names(&page), ["b", "e"]);
        // `last` need not be a tag that exists.
        let (page, _) = m
            .repository_tags(id, after(Some("c"), 10, false))
            .await
            .unwrap();
        assert_eq!(names(&page), ["e", "v1.10", "v1.2"]);
        let (page, _) = m
            .repository_tags(id, after(Some("v1.2"), 10, false))
            .await
            .unwrap();
        assert!(page.is_empty());
        let (page, total) = m.repository_tags(id, after(None, 2, true)).await.unwrap();
        assert_eq!((names(&page), total), (vec!["v1.2", "v1.10"], 0));
        let (page, _) = m
            .repository_tags(id, after(Some("v1.10"), 3, true))
            .await
            .unwrap();
        assert_eq!(names(&page), ["e", "b", "a"]);
        let (page, _) = m
            .repository_tags(id, after(Some("Z"), 3, true))
            .await
            .unwrap();
        assert!(page.is_empty());

        assert_eq!(names(&m.all_tags(id).await.unwrap()), sorted);
        assert_eq!(
            m.repository_tags(999, TagPage::Offset(window(0, 10)))
                .await
                .unwrap(),
            (vec![], 0)
        );
    }

    #[tokio::test]
    async fn tag_details() {
        let (_d, m) = open().await;
        let built = push(
            &m,
            "r",
            "built",
            &[("cfg", 10), ("l1", 100), ("l2", 200)],
            Some(500),
            Some("built"),
            1000,
        )
        .await;
        // No creation time in the config: the push time stands in.
        let bare = push(&m, "r", "bare", &[("l1", 100)], None, Some("bare"), 2000).await;
        let id = repo_id(&m, "r").await;

        let t = m.repository_tag(id, "built").await.unwrap().unwrap();
        assert_eq!(
            t,
            TagInfo {
                name: "built".into(),
                digest: built.digest.to_string(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                config_digest: Some(blob("cfg").to_string()),
                created_at: 500,
                pushed_at: 1000,
                total_size: 300,
            }
        );
        let t = m.repository_tag(id, "bare").await.unwrap().unwrap();
        assert_eq!(t.created_at, 2000);
        assert_eq!(t.pushed_at, 2000);
        assert_eq!(t.digest, bare.digest.to_string());

        // Moving a tag restarts its push time; the image's creation time stays the image's.
        tag(&m, "r", &built, "bare", 3000).await;
        let t = m.repository_tag(id, "bare").await.unwrap().unwrap();
        assert_eq!((t.created_at, t.pushed_at), (500, 3000));
        assert_eq!(t.digest, built.digest.to_string());
        // Re-pushing the same manifest under the same tag is not a move.
        tag(&m, "r", &built, "bare", 4000).await;
        let t = m.repository_tag(id, "bare").await.unwrap().unwrap();
        assert_eq!(t.pushed_at, 3000);

        assert_eq!(m.repository_tag(id, "nope").await.unwrap(), None);
        assert_eq!(m.repository_tag(999, "built").await.unwrap(), None);
        let (page, _) = m
            .repository_tags(id, TagPage::Offset(window(0, 10)))
            .await
            .unwrap();
        assert_eq!(page, m.all_tags(id).await.unwrap());
        assert_eq!(
            page[0],
            m.repository_tag(id, "bare").await.unwrap().unwrap()
        );
    }

    #[tokio::test]
    async fn repository_size_counts_shared_blobs_once() {
        let (_d, m) = open().await;
        let one = push(
            &m,
            "r",
            "one",
            &[("cfg", 10), ("base", 1000), ("l1", 100)],
            None,
            Some("one"),
            1,
        )
        .await;
        let two = push(
            &m,
            "r",
            "two",
            &[("cfg", 10), ("base", 1000), ("l2", 200)],
            None,
            Some("two"),
            1,
        )
        .await;
        // Untagged: not part of the size.
        push(
            &m,
            "r",
            "untagged",
            &[("cfg", 10), ("l9", 700)],
            None,
            None,
            1,
        )
        .await;
        // Linked but referenced by no manifest: not part of the size.
        m.link_blob("r", &blob("stray"), 5000, 1).await.unwrap();
        // Another repository with the same blobs and more.
        push(
            &m,
            "other",
            "three",
            &[("base", 1000), ("big", 9000)],
            None,
            None,
            1,
        )
        .await;
        let id = repo_id(&m, "r").await;
        // GitLab's size: unique layers (not configs) of tagged manifests.
        assert_eq!(m.repository_size(id).await.unwrap(), 1000 + 100 + 200);
        // Untagging `two` drops its own layer from the size.
        m.delete_tag("r", "two", 2).await.unwrap();
        assert_eq!(m.repository_size(id).await.unwrap(), 1000 + 100);
        let _ = (one, two);
        assert_eq!(m.repository_size(999).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn delete_tags_keeps_manifests() {
        let (_d, m) = open().await;
        let man = push(&m, "r", "m", &[("cfg", 1)], None, Some("a"), 1).await;
        for name in ["b", "c", "d"] {
            tag(&m, "r", &man, name, 1).await;
        }
        let other = push(&m, "o", "m", &[("cfg", 1)], None, Some("a"), 1).await;
        let id = repo_id(&m, "r").await;
        let names_to_end = ["a", "c", "missing", "a"].map(String::from);
        assert_eq!(m.delete_tags(id, &names_to_end, 5).await.unwrap(), 2);
        assert_eq!(names(&m.all_tags(id).await.unwrap()), ["b", "d"]);
        assert_eq!(m.delete_tags(id, &names_to_end, 6).await.unwrap(), 0);
        assert_eq!(m.delete_tags(id, &[], 6).await.unwrap(), 0);
        assert!(m
            .manifest("r", ManifestRef::Digest(&man.digest))
            .await
            .unwrap()
            .is_some());
        // The same names in another repository are untouched.
        assert!(m
            .manifest("o", ManifestRef::Tag("a"))
            .await
            .unwrap()
            .is_some_and(|s| s.digest == other.digest));
        // The ended rows stay as history.
        let ended: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tags WHERE repository_id = ? AND deleted_at = 5",
        )
        .bind(id)
        .fetch_one(&m.read)
        .await
        .unwrap();
        assert_eq!(ended, 2);
    }

    #[tokio::test]
    async fn delete_repository_removes_everything() {
        let (_d, m) = open().await;
        let g = group(&m, "g", None).await;
        let p = project(&m, g.id, "p").await;
        let child = push(
            &m,
            "g/p/a",
            "child",
            &[("cfg", 1), ("shared", 10)],
            None,
            Some("c"),
            1,
        )
        .await;
        let index = NewManifest {
            digest: Digest::sha256_of(b"index"),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            payload: b"index".to_vec(),
            blobs: vec![],
            children: vec![child.digest.clone()],
            subject: None,
            config: None,
            artifact_type: None,
            image_created_at: None,
            total_size: 0,
            annotations: None,
        };
        m.put_manifest("g/p/a", &index, Some("multi"), 2)
            .await
            .unwrap();
        m.delete_tag("g/p/a", "c", 3).await.unwrap();
        let kept = push(
            &m,
            "g/p/b",
            "kept",
            &[("cfg", 1), ("shared", 10)],
            None,
            Some("v"),
            1,
        )
        .await;
        let upload = |id: &str, path: &str| Upload {
            id: id.into(),
            repository_path: path.into(),
            created_at: 1,
            updated_at: 1,
        };
        m.create_upload(&upload("ua", "g/p/a")).await.unwrap();
        m.create_upload(&upload("ub", "g/p/b")).await.unwrap();
        let a = repo_id(&m, "g/p/a").await;
        assert!(m.schedule_repository_delete(a).await.unwrap());

        m.delete_repository(a, 10).await.unwrap();
        assert_eq!(m.repository("g/p/a").await.unwrap(), None);
        assert_eq!(m.repository_info(a).await.unwrap(), None);
        assert!(m.scheduled_repository_deletes().await.unwrap().is_empty());
        for table in ["manifests", "repository_blobs", "tags"] {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE repository_id = ?");
            assert_eq!(count(&m, &sql, a).await, 0, "{table}");
        }
        assert_eq!(
            count(
                &m,
                "SELECT COUNT(*) FROM manifest_references WHERE ? > 0",
                1
            )
            .await,
            0
        );
        assert_eq!(
            count(
                &m,
                "SELECT COUNT(*) FROM manifest_blobs mb \
                 WHERE NOT EXISTS (SELECT 1 FROM manifests WHERE id = mb.manifest_id) AND ? > 0",
                1
            )
            .await,
            0
        );
        assert_eq!(m.upload("ua").await.unwrap(), None);
        assert!(m.upload("ub").await.unwrap().is_some());

        // The neighbour sharing blobs is untouched, and blobs stay for GC.
        let b = repo_id(&m, "g/p/b").await;
        assert_eq!(names(&m.all_tags(b).await.unwrap()), ["v"]);
        assert!(m
            .manifest("g/p/b", ManifestRef::Digest(&kept.digest))
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            m.repository_blob("g/p/b", &blob("shared")).await.unwrap(),
            Some(10)
        );
        assert_eq!(m.blob(&blob("shared")).await.unwrap(), Some(10));
        let (list, total) = m.repositories_of(&[p.id], window(0, 10)).await.unwrap();
        assert_eq!((list.len(), total), (1, 1));

        // Deleting again (a retried job) is harmless; the path can be pushed anew.
        m.delete_repository(a, 11).await.unwrap();
        push(&m, "g/p/a", "child", &[("cfg", 1)], None, Some("c"), 12).await;
        let again = repo_id(&m, "g/p/a").await;
        assert_eq!(names(&m.all_tags(again).await.unwrap()), ["c"]);
        assert_eq!(
            m.repository_info(again).await.unwrap().unwrap().project_id,
            Some(p.id)
        );
    }

    #[tokio::test]
    async fn leases() {
        let (_d, m) = open().await;
        assert!(m.try_lease("k", 100, 0).await.unwrap());
        assert!(!m.try_lease("k", 200, 50).await.unwrap());
        assert!(!m.try_lease("k", 200, 99).await.unwrap());
        // Another key is independent.
        assert!(m.try_lease("other", 100, 50).await.unwrap());
        // Expired (at its expiry time): taken over, with the new expiry.
        assert!(m.try_lease("k", 300, 100).await.unwrap());
        assert!(!m.try_lease("k", 400, 299).await.unwrap());
        m.release_lease("k").await.unwrap();
        assert!(m.try_lease("k", 400, 150).await.unwrap());
        assert!(!m.try_lease("k", 500, 160).await.unwrap());
        m.release_lease("never").await.unwrap();
    }

    #[tokio::test]
    async fn expiration_policy_upsert() {
        let (_d, m) = open().await;
        let g = group(&m, "g", None).await;
        let p = project(&m, g.id, "p").await;
        let q = project(&m, g.id, "q").await;
        assert_eq!(m.expiration_policy(p.id).await.unwrap(), None);
        let policy = ExpirationPolicy {
            enabled: true,
            cadence: "7d".into(),
            keep_n: Some(10),
            older_than: Some("90d".into()),
            name_regex: Some(".*".into()),
            name_regex_keep: None,
            next_run_at: Some(5000),
        };
        m.set_expiration_policy(p.id, &policy, 100).await.unwrap();
        assert_eq!(
            m.expiration_policy(p.id).await.unwrap(),
            Some(policy.clone())
        );
        let changed = ExpirationPolicy {
            enabled: false,
            cadence: "1month".into(),
            keep_n: None,
            older_than: None,
            name_regex: Some("v.*".into()),
            name_regex_keep: Some("keep".into()),
            next_run_at: None,
        };
        m.set_expiration_policy(p.id, &changed, 200).await.unwrap();
        assert_eq!(m.expiration_policy(p.id).await.unwrap(), Some(changed));
        let (created, updated): (i64, i64) = sqlx::query_as(
            "SELECT created_at, updated_at FROM expiration_policies WHERE project_id = ?",
        )
        .bind(p.id)
        .fetch_one(&m.read)
        .await
        .unwrap();
        assert_eq!((created, updated), (100, 200));
        assert_eq!(m.expiration_policy(q.id).await.unwrap(), None);
        assert_eq!(
            not_found(m.set_expiration_policy(999, &policy, 1).await),
            "Project not found"
        );
    }

    #[tokio::test]
    async fn move_project_moves_its_repositories() {
        let (_d, m) = open().await;
        let g = group(&m, "G", None).await;
        let h = group(&m, "h", None).await;
        let p = project(&m, g.id, "App").await;
        let neighbour = project(&m, g.id, "app2").await;
        push(&m, "g/app", "root", &[("cfg", 1)], None, Some("v1"), 1).await;
        let img = push(&m, "g/app/img", "img", &[("cfg", 1)], None, Some("v1"), 1).await;
        push(&m, "g/app/x/y", "deep", &[("cfg", 1)], None, Some("v1"), 1).await;
        push(&m, "g/app2/img", "n", &[("cfg", 1)], None, Some("v1"), 1).await;
        let img_id = repo_id(&m, "g/app/img").await;

        let moved = m
            .move_project(p.id, h.id, "Renamed", "New name")
            .await
            .unwrap();
        assert_eq!(moved.full_path, "h/Renamed");
        assert_eq!(
            (moved.path.as_str(), moved.name.as_str()),
            ("Renamed", "New name")
        );
        assert_eq!(moved.namespace_id, h.id);
        assert_eq!(moved.created_at, p.created_at);
        assert_eq!(m.project(p.id).await.unwrap(), Some(moved.clone()));
        let (repos, _) = m.repositories_of(&[p.id], window(0, 10)).await.unwrap();
        let paths: Vec<_> = repos.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["h/renamed", "h/renamed/img", "h/renamed/x/y"]);
        assert_eq!(repo_id(&m, "h/renamed/img").await, img_id);
        assert_eq!(m.repository("g/app/img").await.unwrap(), None);
        assert_eq!(m.repository("g/app").await.unwrap(), None);
        assert!(m
            .manifest("h/renamed/img", ManifestRef::Tag("v1"))
            .await
            .unwrap()
            .is_some_and(|s| s.digest == img.digest));
        // The neighbour whose path starts the same is untouched.
        assert!(m.repository("g/app2/img").await.unwrap().is_some());
        assert_eq!(
            m.repositories_of(&[neighbour.id], window(0, 10))
                .await
                .unwrap()
                .1,
            1
        );
        // The old path is free again.
        project(&m, g.id, "app").await;

        // A case-only rename keeps the registry paths.
        let moved = m.move_project(p.id, h.id, "renamed", "n").await.unwrap();
        assert_eq!(moved.full_path, "h/renamed");
        assert!(m.repository("h/renamed/img").await.unwrap().is_some());

        // Taken by a project (in any case) or a group.
        assert_eq!(
            conflict(m.move_project(p.id, g.id, "APP2", "n").await),
            "Path has already been taken"
        );
        group(&m, "sub", Some(h.id)).await;
        assert_eq!(
            conflict(m.move_project(p.id, h.id, "sub", "n").await),
            "Path has already been taken"
        );
        // A repository without a project already at one of the new paths.
        let x = group(&m, "x", None).await;
        m.link_blob("x/free/img", &blob("cfg"), 1, 1).await.unwrap();
        let orphan = m.repository("x/free/img").await.unwrap().unwrap();
        assert_eq!(orphan.project_id, None);
        let msg = conflict(m.move_project(p.id, x.id, "free", "n").await);
        assert!(msg.contains("x/free/img"), "{msg}");
        // Nothing moved.
        assert_eq!(
            m.project(p.id).await.unwrap().unwrap().full_path,
            "h/renamed"
        );
        assert!(m.repository("h/renamed/img").await.unwrap().is_some());
        assert!(m.repository("x/free").await.unwrap().is_none());

        assert_eq!(
            not_found(m.move_project(999, h.id, "p", "p").await),
            "Project not found"
        );
        assert_eq!(
            not_found(m.move_project(p.id, 999, "p", "p").await),
            "Namespace not found"
        );
    }

    #[tokio::test]
    async fn move_group_moves_everything_below() {
        let (_d, m) = open().await;
        let top = group(&m, "top", None).await;
        let a = group(&m, "a", Some(top.id)).await;
        let b = group(&m, "b", Some(a.id)).await;
        let c = group(&m, "c", Some(b.id)).await;
        let other = group(&m, "other", None).await;
        let pa = project(&m, a.id, "pa").await;
        let pc = project(&m, c.id, "pc").await;
        let pt = project(&m, top.id, "pt").await;
        push(&m, "top/a/pa", "1", &[("cfg", 1)], None, Some("v"), 1).await;
        push(&m, "top/a/pa/img", "2", &[("cfg", 1)], None, Some("v"), 1).await;
        push(
            &m,
            "top/a/b/c/pc/img",
            "3",
            &[("cfg", 1)],
            None,
            Some("v"),
            1,
        )
        .await;
        push(&m, "top/pt/img", "4", &[("cfg", 1)], None, Some("v"), 1).await;

        // Under another parent, renamed.
        let moved = m
            .move_group(a.id, Some(Some(other.id)), "A2")
            .await
            .unwrap();
        assert_eq!(moved.full_path, "other/A2");
        assert_eq!(moved.path, "A2");
        assert_eq!(moved.parent_id, Some(other.id));
        assert_eq!(moved.name, a.name);
        assert_eq!(ns(&m, b.id).await, "other/A2/b");
        assert_eq!(ns(&m, c.id).await, "other/A2/b/c");
        assert_eq!(ns(&m, top.id).await, "top");
        assert_eq!(full(&m, pa.id).await, "other/A2/pa");
        assert_eq!(full(&m, pc.id).await, "other/A2/b/c/pc");
        assert_eq!(full(&m, pt.id).await, "top/pt");
        let mut catalog = m.catalog(None, 100).await.unwrap();
        catalog.sort();
        assert_eq!(
            catalog,
            [
                "other/a2/b/c/pc/img",
                "other/a2/pa",
                "other/a2/pa/img",
                "top/pt/img"
            ]
        );
        assert!(m
            .manifest("other/a2/b/c/pc/img", ManifestRef::Tag("v"))
            .await
            .unwrap()
            .is_some());
        assert_eq!(
            m.descendant_groups(top.id).await.unwrap(),
            vec![],
            "top has nothing below it now"
        );
        // The old paths are free.
        group(&m, "a", Some(top.id)).await;

        // Keep the parent, rename only.
        let moved = m.move_group(b.id, None, "bee").await.unwrap();
        assert_eq!(
            (moved.full_path.as_str(), moved.parent_id),
            ("other/A2/bee", Some(a.id))
        );
        assert_eq!(full(&m, pc.id).await, "other/A2/bee/c/pc");
        assert!(m
            .repository("other/a2/bee/c/pc/img")
            .await
            .unwrap()
            .is_some());

        // To the top level.
        let moved = m.move_group(b.id, Some(None), "bee").await.unwrap();
        assert_eq!((moved.full_path.as_str(), moved.parent_id), ("bee", None));
        assert_eq!(ns(&m, c.id).await, "bee/c");
        assert_eq!(full(&m, pc.id).await, "bee/c/pc");
        assert!(m.repository("bee/c/pc/img").await.unwrap().is_some());
        assert_eq!(m.projects_in(b.id, true).await.unwrap()[0].id, pc.id);

        // Cycles are refused.
        let msg = conflict(m.move_group(b.id, Some(Some(c.id)), "bee").await);
        assert!(msg.contains("subgroups"), "{msg}");
        let msg = conflict(m.move_group(b.id, Some(Some(b.id)), "bee").await);
        assert!(msg.contains("itself"), "{msg}");
        let d = group(&m, "d", Some(c.id)).await;
        let msg = conflict(m.move_group(b.id, Some(Some(d.id)), "x").await);
        assert!(msg.contains("subgroups"), "{msg}");
        // Taken paths, by a group or a project.
        assert_eq!(
            conflict(m.move_group(b.id, Some(None), "TOP").await),
            "Path has already been taken"
        );
        assert_eq!(
            conflict(m.move_group(b.id, Some(Some(top.id)), "pt").await),
            "Path has already been taken"
        );
        // Nothing moved by the refusals.
        assert_eq!(ns(&m, c.id).await, "bee/c");
        // A case-only rename.
        let moved = m.move_group(b.id, None, "BEE").await.unwrap();
        assert_eq!(moved.full_path, "BEE");
        assert_eq!(full(&m, pc.id).await, "BEE/c/pc");
        assert!(m.repository("bee/c/pc/img").await.unwrap().is_some());

        assert_eq!(
            not_found(m.move_group(999, None, "x").await),
            "Group not found"
        );
        assert_eq!(
            not_found(m.move_group(b.id, Some(Some(999)), "x").await),
            "Parent group not found"
        );
        let u = m
            .create_user(
                &crate::org::NewUser {
                    username: "alice".into(),
                    name: "Alice".into(),
                    email: None,
                    password_hash: None,
                    admin: false,
                },
                1,
            )
            .await
            .unwrap();
        assert_eq!(
            not_found(m.move_group(u.namespace_id, Some(None), "x").await),
            "Group not found"
        );
        assert_eq!(
            not_found(m.move_group(b.id, Some(Some(u.namespace_id)), "x").await),
            "Parent group not found"
        );
    }

    #[tokio::test]
    async fn move_group_keeps_the_nesting_limit_and_repository_paths() {
        let (_d, m) = open().await;
        // A chain of 20 groups: the last has 19 ancestors.
        let mut chain = vec![group(&m, "g0", None).await];
        for i in 1..20 {
            let parent = chain.last().unwrap().id;
            chain.push(group(&m, &format!("g{i}"), Some(parent)).await);
        }
        let deepest = chain.last().unwrap().id;
        let x = group(&m, "x", None).await;
        let y = group(&m, "y", Some(x.id)).await;
        // x alone may go below the deepest (20 ancestors); with y below it, y would
        // have 21.
        let msg = conflict(m.move_group(x.id, Some(Some(deepest)), "x").await);
        assert!(msg.contains("at most 20 ancestors"), "{msg}");
        let moved = m.move_group(y.id, Some(Some(deepest)), "y").await.unwrap();
        assert_eq!(moved.full_path.split('/').count(), 21);

        // A repository without a project already at a path the move would produce.
        let p = project(&m, x.id, "p").await;
        push(&m, "x/p/img", "1", &[("cfg", 1)], None, Some("v"), 1).await;
        let z = group(&m, "z", None).await;
        m.link_blob("z/x/p/img", &blob("cfg"), 1, 1).await.unwrap();
        let msg = conflict(m.move_group(x.id, Some(Some(z.id)), "x").await);
        assert!(msg.contains("z/x/p/img"), "{msg}");
        assert_eq!(m.project(p.id).await.unwrap().unwrap().full_path, "x/p");
        assert!(m.repository("x/p/img").await.unwrap().is_some());
        assert_eq!(m.namespace(x.id).await.unwrap().unwrap().parent_id, None);
    }

    /// The plan SQLite chooses for `sql`, one detail line per step.
    async fn plan(m: &SqliteMeta, sql: &str, binds: &[&str]) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut q = sqlx::query(&explain);
        for b in binds {
            q = q.bind(*b);
        }
        q.fetch_all(&m.read)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn hundred_thousand_tags_page_through_the_index() {
        let (_d, m) = open().await;
        let man = push(&m, "big", "m", &[("cfg", 1)], Some(7), None, 1).await;
        let id = repo_id(&m, "big").await;
        // One statement: t000000 .. t099999, each ended once before (history rows).
        let mut tx = m.write_tx().await.unwrap();
        for deleted_at in [Some(1i64), None] {
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99999) \
                 INSERT INTO tags (repository_id, name, manifest_digest, created_at, deleted_at) \
                 SELECT ?, printf('t%06d', i), ?, 2, ? FROM n",
            )
            .bind(id)
            .bind(man.digest.as_str())
            .bind(deleted_at)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();

        let after = |last: &str, descending| TagPage::After {
            last: Some(last.into()),
            limit: 100,
            descending,
        };
        let (page, total) = m
            .repository_tags(id, after("t054321", false))
            .await
            .unwrap();
        assert_eq!(total, 0);
        let want: Vec<String> = (54322..54422).map(|i| format!("t{i:06}")).collect();
        assert_eq!(names(&page), want);
        assert!(page.iter().all(|t| t.created_at == 7 && t.pushed_at == 2));
        let (page, _) = m.repository_tags(id, after("t054321", true)).await.unwrap();
        let want: Vec<String> = (54221..54321).rev().map(|i| format!("t{i:06}")).collect();
        assert_eq!(names(&page), want);
        let (page, _) = m
            .repository_tags(id, TagPage::Offset(window(99_990, 100)))
            .await
            .unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].name, "t099990");
        assert_eq!(
            m.repository_info(id).await.unwrap().unwrap().tags_count,
            100_000
        );

        // Every page walks tags_live in name order: no sort of the tag list.
        let idx = id.to_string();
        let pages = [
            (
                TagPage::Offset(window(0, 100)),
                vec![idx.as_str(), "100", "0"],
            ),
            (after("t1", false), vec![idx.as_str(), "t1", "100"]),
            (after("t1", true), vec![idx.as_str(), "t1", "100"]),
            (
                TagPage::After {
                    last: None,
                    limit: 100,
                    descending: true,
                },
                vec![idx.as_str(), "100"],
            ),
        ];
        for (page, binds) in pages {
            let p = plan(&m, &tag_page_sql(&page), &binds).await;
            assert!(
                p.contains("SEARCH t USING INDEX tags_live"),
                "{page:?}: {p}"
            );
            assert!(!p.contains("TEMP B-TREE"), "{page:?}: {p}");
            assert!(
                p.contains("sqlite_autoindex_manifests_1 (repository_id=? AND digest=?)"),
                "{page:?}: {p}"
            );
        }
        // The total is one row's column, kept by triggers.
        let (_, total) = m
            .repository_tags(
                id,
                TagPage::Offset(Window {
                    offset: 0,
                    limit: 1,
                }),
            )
            .await
            .unwrap();
        assert_eq!(total, 100_000);
        // Deleting a repository finds its tag history by index (the cascade's lookup).
        let p = plan(&m, "DELETE FROM tags WHERE repository_id = ?", &[&idx]).await;
        assert!(
            p.contains("USING INDEX") || p.contains("USING COVERING INDEX"),
            "{p}"
        );

        // And the whole repository goes in one transaction.
        m.delete_repository(id, 3).await.unwrap();
        assert_eq!(
            count(&m, "SELECT COUNT(*) FROM tags WHERE repository_id = ?", id).await,
            0
        );
    }
}
