//! [`crate::RepositoryMeta`], written once for both backends (see the crate doc).
//!
//! Tag listings read the partial index `tags_live (repository_id, name) WHERE deleted_at
//! IS NULL` in name order, so a page (offset or keyset) never sorts the whole tag list;
//! the total is a column kept by triggers. Names compare bytewise (SQLite's BINARY
//! collation, PostgreSQL's `COLLATE "C"`). Writes to a repository's tags lock its row
//! first ([`lock_repo`]), and moves hold [`lock_paths`]; both matter with PostgreSQL
//! only. Moves rewrite paths by prefix (`new || substr(path, length(old) + 1)`).

use std::collections::HashMap;

use async_trait::async_trait;
use futures::TryStreamExt;

use sqlx::Row;

use crate::common::*;
use crate::org::{Namespace, Project, Source};
use crate::repositories::{
    ExpirationPolicy, RepoOrder, RepoQuery, RepoScope, RepositoryInfo, RepositoryMeta, TagInfo,
    TagOrder, TagPage, TagQuery,
};
use crate::{MetaError, Result};

use super::org::{check_path_free, group_in, namespace_in, project_in, written, PATH_TAKEN};
use super::registry::{end_tag, lock_repo};
use super::{lock_paths, retry_deadlocks, Conn, Db, DbKind, DbRow};

/// The `SET` clause that moves `shown_name` with a path renamed from prefix `$2` to
/// `$3`: a root image shows its whole path; the others show the path below their
/// project, which a move leaves as it is.
const RENAMED: &str = "shown_name = CASE WHEN shown_name = path \
     THEN $3 || substr(path, length($2) + 1) ELSE shown_name END";

/// GitLab's size of each repository of `ids` (its id and bytes; none for one without
/// layers): the unique layers of the manifests reachable from its live tags (directly
/// or as index children).
fn repository_sizes_sql(ids: usize) -> String {
    format!(
        "WITH RECURSIVE live(k, id) AS ( \
         SELECT m.repository_id, m.id FROM manifests m \
         WHERE m.repository_id IN ({}) AND {TAGGED} \
         UNION SELECT live.k, r.child_id FROM manifest_references r \
         JOIN live ON live.id = r.parent_id) {LIVE_LAYERS_SIZES}",
        placeholders(ids)
    )
}

/// Live tags of one repository (bind: repository id) with their manifest's details.
const TAG_SELECT: &str = "SELECT t.name, t.manifest_digest, m.media_type, m.config_digest, \
     COALESCE(m.image_created_at, t.created_at), t.created_at, m.total_size \
     FROM tags t JOIN manifests m \
       ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest \
     WHERE t.repository_id = $1 AND t.deleted_at IS NULL";

/// Kept by triggers on `tags` (migration 0008).
const LIVE_TAG_COUNT: &str = "SELECT live_tags FROM repositories WHERE id = $1";

/// A group and every group below it (bind: the group's id). `UNION` (not `UNION ALL`)
/// so even a corrupt cycle cannot recurse forever.
const TREE: &str = "WITH RECURSIVE tree(id) AS ( \
         SELECT id FROM namespaces WHERE id = $1 \
         UNION SELECT c.id FROM namespaces c JOIN tree t ON c.parent_id = t.id) ";

/// The rows of the tags `names` lists (a `SELECT name FROM tags WHERE repository_id =
/// $1 … LIMIT … OFFSET …` read from the index alone), in name order `dir`: only the
/// page's rows are fetched, never every skipped one.
fn tags_named(names: &str, dir: &str) -> String {
    pick!(
        sqlite: format!("{TAG_SELECT} AND t.name IN ({names}) ORDER BY t.name {dir}"),
        // Each by its name. The lateral subquery is fenced (`OFFSET 0`) so PostgreSQL
        // cannot flatten it into a join: on tables it has no statistics for yet (a
        // repository just pushed), it would then scan every tag once per page row
        // (800 ms for a page of 100 out of 10,000 tags instead of 2 ms).
        postgres: format!(
            "SELECT x.* FROM ({names}) page \
             CROSS JOIN LATERAL (SELECT t.name, t.manifest_digest, m.media_type, \
                 m.config_digest, COALESCE(m.image_created_at, t.created_at) AS created, \
                 t.created_at, m.total_size \
               FROM tags t JOIN manifests m \
                 ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest \
               WHERE t.repository_id = $1 AND t.name = page.name AND t.deleted_at IS NULL \
               OFFSET 0) x \
             ORDER BY x.name {dir}"
        ),
    )
}

/// The SQL of one tag page. Binds: repository id, then (offset pages) limit and
/// offset, or (keyset pages) `last` when given, then limit.
pub(crate) fn tag_page_sql(page: &TagPage) -> String {
    match page {
        TagPage::Offset(_) => tags_named(
            "SELECT name FROM tags WHERE repository_id = $1 AND deleted_at IS NULL \
             ORDER BY name LIMIT $2 OFFSET $3",
            "ASC",
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
                format!(" AND t.name {cmp} $2")
            } else {
                String::new()
            };
            let limit = if last.is_some() { "$3" } else { "$2" };
            format!("{TAG_SELECT}{after} ORDER BY t.name {dir} LIMIT {limit}")
        }
    }
}

fn repo_row(r: DbRow) -> crate::repositories::RepositoryInfo {
    crate::repositories::RepositoryInfo {
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

fn tag_row(r: DbRow) -> crate::repositories::TagInfo {
    crate::repositories::TagInfo {
        name: r.get(0),
        digest: r.get(1),
        media_type: r.get(2),
        config_digest: r.get(3),
        created_at: r.get(4),
        pushed_at: r.get(5),
        total_size: r.get(6),
    }
}

/// An expiration policy from the columns of `expiration_policies` from `base` on.
pub(super) fn policy_at(r: &DbRow, base: usize) -> ExpirationPolicy {
    ExpirationPolicy {
        enabled: r.get(base),
        cadence: r.get(base + 1),
        keep_n: r.get(base + 2),
        older_than: r.get(base + 3),
        name_regex: r.get(base + 4),
        name_regex_keep: r.get(base + 5),
        next_run_at: r.get(base + 6),
    }
}

/// An argument of a statement built at run time.
enum Arg {
    Text(String),
    Int(i64),
}

/// `sql` with `args` bound in order.
fn bind_args<'q>(
    sql: &'q str,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, DbKind, <DbKind as sqlx::Database>::Arguments<'q>> {
    args.iter().fold(sqlx::query(sql), |q, a| match a {
        Arg::Text(t) => q.bind(t.as_str()),
        Arg::Int(i) => q.bind(*i),
    })
}

#[async_trait]
impl RepositoryMeta for Db {
    async fn search_repositories(
        &self,
        scope: RepoScope<'_>,
        query: &RepoQuery,
    ) -> Result<(Vec<RepositoryInfo>, i64)> {
        let mut args = Vec::new();
        let mut arg = |a: Arg| {
            args.push(a);
            format!("${}", args.len())
        };
        let mut filter = String::from("x.status IS NULL");
        // The same scope over projects, for their kept counts of live repositories.
        let projects = match scope {
            RepoScope::Projects([]) => return Ok((Vec::new(), 0)),
            RepoScope::Projects(ids) => {
                let marks: Vec<String> = ids.iter().map(|id| arg(Arg::Int(*id))).collect();
                let marks = marks.join(", ");
                filter.push_str(&format!(" AND x.project_id IN ({marks})"));
                format!("p.id IN ({marks})")
            }
            RepoScope::Under { group_path, except } => {
                // Paths under `g/` sort from `g/` up to (not including) `g0` (`/` + 1
                // is `0`), bytewise as both backends compare paths: a range of the
                // index of live paths. The projects of those repositories are the
                // projects under `g/`: their paths are the repositories' prefixes.
                let from = arg(Arg::Text(format!("{group_path}/")));
                let to = arg(Arg::Text(format!("{group_path}0")));
                filter.push_str(&format!(
                    " AND x.path >= {from} AND x.path < {to} AND x.project_id IS NOT NULL"
                ));
                let mut projects =
                    format!("lower(p.full_path) >= {from} AND lower(p.full_path) < {to}");
                if !except.is_empty() {
                    let marks: Vec<String> =
                        except.iter().map(|id| arg(Arg::Int(*id))).collect();
                    let marks = marks.join(", ");
                    filter.push_str(&format!(" AND x.project_id NOT IN ({marks})"));
                    projects.push_str(&format!(" AND p.id NOT IN ({marks})"));
                }
                projects
            }
        };
        let filtered = query.path_contains.is_some() || query.tagged.is_some();
        if let Some(pattern) = like_pattern(query.path_contains.as_deref()) {
            // Paths are lower case; so is the pattern (SQLite's LIKE ignores ASCII
            // case anyway, PostgreSQL's does not).
            let p = arg(Arg::Text(pattern.to_ascii_lowercase()));
            filter.push_str(&format!(" AND x.path LIKE {p} ESCAPE '\\'"));
        }
        match query.tagged {
            Some(true) => filter.push_str(" AND x.live_tags > 0"),
            Some(false) => filter.push_str(" AND x.live_tags = 0"),
            None => {}
        }
        let limit_count = query.count_up_to.saturating_add(1);
        // One read transaction, so the page and the total see the same snapshot.
        let mut tx = self.read_tx().await?;
        // Unfiltered, the total is the projects' kept counts: no walk of the scope.
        let kept = if filtered {
            None
        } else {
            let sql = format!(
                "SELECT CAST(COALESCE(SUM(p.live_repositories), 0) AS BIGINT) \
                 FROM projects p WHERE {projects}"
            );
            Some(bind_args(&sql, &args).fetch_one(&mut *tx).await?.get::<i64, _>(0))
        };
        let key = match query.order {
            RepoOrder::Path => "x.path",
            RepoOrder::Created => "x.created_at",
            RepoOrder::Updated => "x.updated_at",
            RepoOrder::Name => "x.shown_name",
        };
        let (limit, offset) = (query.window.limit.max(0), query.window.offset.max(0));
        // A page past the middle of a list of known length is read from its end, the
        // other way round: an offset walks every entry before it (the last of 1,001
        // pages of a group's 100,001 repositories took 21 ms that way).
        let (mut take, mut skip, mut backwards) = (limit, offset, false);
        if let Some(n) = kept.filter(|n| offset > n / 2) {
            let end = offset.saturating_add(limit).min(n);
            (take, skip, backwards) = ((end - offset).max(0), n - end, true);
        }
        let dir = if query.descending != backwards { " DESC" } else { "" };
        // A large scope in name order may walk the index of names, skipping what is
        // not in scope, instead of sorting the scope's every repository (32 ms on
        // SQLite for 100,000). PostgreSQL's planner weighs that from its statistics;
        // SQLite has none unless analysed, and would always sort: here it walks when
        // the entries walked to reach the page (estimated from the scope's share of
        // the ids given out) are fewer than four times the entries a sort would take.
        let mut from = "repositories x";
        if let (Some(n), RepoOrder::Name, true) =
            (kept, query.order, pick!(sqlite: true, postgres: false))
        {
            if n >= 1000 {
                let ids: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM repositories")
                    .fetch_one(&mut *tx)
                    .await?;
                let walked = (skip.saturating_add(take) as f64) * (ids as f64) / (n as f64);
                if walked <= 4.0 * n as f64 {
                    from = "repositories x INDEXED BY repositories_live_name";
                }
            }
        }
        // LIMIT and OFFSET last, bound apart: the count has its own limit.
        let (l, o) = (format!("${}", args.len() + 1), format!("${}", args.len() + 2));
        // The page's ids (and sort keys) first, from the index where the order has
        // one, then their rows.
        let page_sql = format!(
            "SELECT r.id, r.path, r.project_id, r.created_at, r.status, r.cleanup_status, \
             r.cleanup_started_at, r.live_tags, r.updated_at \
             FROM (SELECT x.id, {key} AS k, x.path FROM {from} WHERE {filter} \
                   ORDER BY {key}{dir}, x.path{dir} LIMIT {l} OFFSET {o}) s \
             JOIN repositories r ON r.id = s.id ORDER BY s.k{dir}, s.path{dir}"
        );
        let count_sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM repositories x WHERE {filter} \
             LIMIT {l} OFFSET {o}) c"
        );
        let mut rows = if take > 0 || !backwards {
            bind_args(&page_sql, &args)
                .bind(take)
                .bind(skip)
                .fetch_all(&mut *tx)
                .await?
        } else {
            Vec::new()
        };
        if backwards {
            rows.reverse();
        }
        // A page that ends the list says how long it is; otherwise count (up to the cap).
        let total = if let Some(n) = kept {
            if offset < n && offset.saturating_add(limit) >= n {
                n
            } else {
                n.min(limit_count)
            }
        } else if !rows.is_empty() && (rows.len() as i64) < limit {
            offset.saturating_add(rows.len() as i64)
        } else {
            bind_args(&count_sql, &args)
                .bind(limit_count)
                .bind(0_i64)
                .fetch_one(&mut *tx)
                .await?
                .get::<i64, _>(0)
        };
        tx.commit().await?;
        Ok((rows.into_iter().map(repo_row).collect(), total))
    }

    async fn repository_info(&self, id: i64) -> Result<Option<RepositoryInfo>> {
        Ok(sqlx::query(&repo_select(&format!(
            "SELECT {REPO_COLS} FROM repositories WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.reader())
        .await?
        .map(repo_row))
    }

    async fn repository_sizes(&self, ids: &[i64]) -> Result<HashMap<i64, i64>> {
        let mut sizes: HashMap<i64, i64> = ids.iter().map(|id| (*id, 0)).collect();
        for page in ids.chunks(500) {
            let sql = repository_sizes_sql(page.len());
            let mut q = sqlx::query_as::<_, (i64, i64)>(&sql);
            for id in page {
                q = q.bind(id);
            }
            sizes.extend(q.fetch_all(self.reader()).await?);
        }
        Ok(sizes)
    }

    async fn repository_tags(&self, id: i64, page: TagPage) -> Result<(Vec<TagInfo>, i64)> {
        let sql = tag_page_sql(&page);
        let mut tx = self.read_tx().await?;
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
            TagPage::Offset(w) => q.bind(w.limit.max(0)).bind(w.offset.max(0)),
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
        let pattern = like_pattern(query.name_contains.as_deref());
        // Binds: $1 repository id, then $2 the pattern when there is one, then limit
        // and offset.
        let (filter, next) = if pattern.is_some() {
            (
                // SQLite's LIKE ignores ASCII case, as PostgreSQL's ILIKE does.
                pick!(
                    sqlite: " AND name LIKE $2 ESCAPE '\\'",
                    postgres: " AND name ILIKE $2 ESCAPE '\\'",
                ),
                3,
            )
        } else {
            ("", 2)
        };
        let (limit, offset) = (format!("${next}"), format!("${}", next + 1));
        let dir = if query.descending { "DESC" } else { "ASC" };
        let mut tx = self.read_tx().await?;
        let total: i64 = match &pattern {
            None => sqlx::query_scalar::<_, i64>(LIVE_TAG_COUNT)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .unwrap_or(0),
            Some(p) => {
                sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM tags \
                     WHERE repository_id = $1 AND deleted_at IS NULL{filter}"
                ))
                .bind(id)
                .bind(p)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        let sql = match query.order {
            // The page's names come from the index alone; only their rows are fetched.
            TagOrder::Name => tags_named(
                &format!(
                    "SELECT name FROM tags \
                     WHERE repository_id = $1 AND deleted_at IS NULL{filter} \
                     ORDER BY name {dir} LIMIT {limit} OFFSET {offset}"
                ),
                dir,
            ),
            TagOrder::Created => {
                let filter = filter.replace("name", "t.name");
                format!(
                    "{TAG_SELECT}{filter} \
                     ORDER BY COALESCE(m.image_created_at, t.created_at) {dir}, t.name {dir} \
                     LIMIT {limit} OFFSET {offset}"
                )
            }
        };
        let q = sqlx::query(&sql).bind(id);
        let q = match &pattern {
            Some(p) => q.bind(p),
            None => q,
        };
        let rows = q
            .bind(query.window.limit.max(0))
            .bind(query.window.offset.max(0))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((rows.into_iter().map(tag_row).collect(), total))
    }

    async fn repository_tag(&self, id: i64, name: &str) -> Result<Option<TagInfo>> {
        Ok(sqlx::query(&format!("{TAG_SELECT} AND t.name = $2"))
            .bind(id)
            .bind(name)
            .fetch_optional(self.reader())
            .await?
            .map(tag_row))
    }

    async fn all_tags(&self, id: i64) -> Result<Vec<TagInfo>> {
        // Streamed, as `all_blobs`: SQLite's rows, fetched all at once, hold a copy of
        // every value beside the records made of them (a cleanup preview of 100,000
        // tags peaked at 162 MB that way).
        let sql = format!("{TAG_SELECT} ORDER BY t.name");
        let mut rows = sqlx::query(&sql).bind(id).fetch(self.reader());
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            out.push(tag_row(r));
        }
        Ok(out)
    }

    async fn delete_tags_by(
        &self,
        id: i64,
        names: &[String],
        now: i64,
        actor: &crate::Actor,
    ) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        if !lock_repo(&mut tx, id).await? {
            return Ok(0);
        }
        let mut ended = 0;
        for name in names {
            // One prepared statement (sqlx caches it), one index probe per name.
            if end_tag(&mut tx, id, name, now, "deleted", actor, None)
                .await?
                .is_some()
            {
                ended += 1;
            }
        }
        tx.commit().await?;
        Ok(ended)
    }

    async fn schedule_repository_delete(&self, id: i64) -> Result<bool> {
        // A failed deletion may be asked for again (GitLab's API does the same).
        let done = sqlx::query(
            "UPDATE repositories SET status = 'delete_scheduled' \
             WHERE id = $1 AND (status IS NULL OR status = 'delete_failed')",
        )
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn scheduled_repository_deletes(&self) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM repositories \
             WHERE status IN ('delete_scheduled', 'delete_ongoing') ORDER BY id",
        )
        .fetch_all(self.reader())
        .await?)
    }

    async fn delete_repository(&self, id: i64, now: i64) -> Result<()> {
        retry_deadlocks(move || async move {
            let mut tx = self.write_tx().await?;
            let path: Option<String> = sqlx::query_scalar(concat!(
                "SELECT path FROM repositories WHERE id = $1",
                pick!(sqlite: "", postgres: " FOR UPDATE")
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            // Already gone: deleting is idempotent, so a retried job just finishes.
            let Some(path) = path else {
                return Ok(());
            };
            remove_repository(&mut tx, id, &path, now).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn try_lease(&self, key: &str, until: i64, now: i64) -> Result<bool> {
        // One statement: insert, or take over only an expired lease. A held lease
        // makes the DO UPDATE's WHERE false, so no row changes.
        let done = sqlx::query(
            "INSERT INTO leases (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE leases.expires_at <= $3",
        )
        .bind(key)
        .bind(until)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_lease(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE key = $1")
            .bind(key)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn expiration_policy(&self, project_id: i64) -> Result<Option<ExpirationPolicy>> {
        let row = sqlx::query(
            "SELECT enabled, cadence, keep_n, older_than, name_regex, name_regex_keep, \
             next_run_at FROM expiration_policies WHERE project_id = $1",
        )
        .bind(project_id)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(|r| policy_at(&r, 0)))
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
             SELECT id, $1, $2, $3, $4, $5, $6, $7, $8, $9 FROM projects WHERE id = $10 \
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
        .execute(self.writer())
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
             WHERE r.project_id = $1",
        )
        .bind(project_id)
        .fetch_one(self.reader())
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
        lock_paths(&mut tx).await?;
        let project = project_in(&mut *tx, project_id)
            .await?
            .ok_or_else(|| MetaError::NotFound("Project not found".into()))?;
        let ns = namespace_in(&mut *tx, namespace_id)
            .await?
            .ok_or_else(|| MetaError::NotFound("Namespace not found".into()))?;
        let full_path = format!("{}/{}", ns.full_path, path);
        // The project itself may keep its path in another case.
        let me = Some(Source::Project(project_id));
        check_path_free(&mut tx, &full_path, me, PATH_TAKEN).await?;
        // Registry paths are lower case (ASCII, as the image-path rules lower them).
        let old_prefix = project.full_path.to_ascii_lowercase();
        let new_prefix = full_path.to_ascii_lowercase();
        // The project's repositories: its root image and the paths below it.
        // Binds: $1 the project, $2 the old prefix, $3 the new one.
        const MINE: &str = "r.project_id = $1 \
             AND (r.path = $2 OR substr(r.path, 1, length($2) + 1) = $2 || '/')";
        if old_prefix != new_prefix {
            let clash: Option<String> = sqlx::query_scalar(&format!(
                "SELECT o.path FROM repositories r \
                 JOIN repositories o ON o.path = $3 || substr(r.path, length($2) + 1) \
                 WHERE {MINE} AND (o.project_id IS NULL OR o.project_id <> $1) LIMIT 1"
            ))
            .bind(project_id)
            .bind(&old_prefix)
            .bind(&new_prefix)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(clash) = clash {
                return Err(MetaError::Conflict(format!(
                    "Container repository {clash} already exists"
                )));
            }
        }
        sqlx::query(
            "UPDATE projects SET namespace_id = $1, path = $2, name = $3, full_path = $4 \
             WHERE id = $5",
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
                "UPDATE repositories SET path = $3 || substr(path, length($2) + 1), {RENAMED} \
                 WHERE id IN (SELECT r.id FROM repositories r WHERE {MINE})"
            ))
            .bind(project_id)
            .bind(&old_prefix)
            .bind(&new_prefix)
            .execute(&mut *tx)
            .await?;
        }
        let moved = written(project_in(&mut *tx, project_id).await?, project_id)?;
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
        lock_paths(&mut tx).await?;
        let group = group_in(&mut tx, namespace_id, "Group not found").await?;
        let parent_id = parent_id.unwrap_or(group.parent_id);
        let full_path = match parent_id {
            None => path.to_string(),
            Some(parent_id) => {
                if parent_id == group.id {
                    return Err(MetaError::Conflict(
                        "A group cannot be moved into itself".into(),
                    ));
                }
                let parent = group_in(&mut tx, parent_id, "Parent group not found").await?;
                // Walk up from the new parent (a short chain): meeting the group means
                // the parent is one of its descendants.
                let cycle: i64 = sqlx::query_scalar(
                    "WITH RECURSIVE up(id, parent_id) AS ( \
                         SELECT id, parent_id FROM namespaces WHERE id = $1 \
                         UNION SELECT n.id, n.parent_id FROM namespaces n \
                         JOIN up ON n.id = up.parent_id) \
                     SELECT COUNT(*) FROM up WHERE id = $2",
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
        check_ancestors(segments(&full_path) - 1 + deepest)?;
        let stray: Option<String> = sqlx::query_scalar(&format!(
            "{TREE}SELECT p.full_path FROM projects p JOIN tree t ON t.id = p.namespace_id \
             WHERE substr(p.full_path, 1, length($2)) <> $2 LIMIT 1"
        ))
        .bind(group.id)
        .bind(&below)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(stray) = stray {
            return Err(corrupt(format!("project {stray} is not below {old}")));
        }

        let me = Some(Source::Namespace(group.id));
        check_path_free(&mut tx, &full_path, me, PATH_TAKEN).await?;

        // Repositories of every project below the group: lower-case paths under
        // `old_prefix/`.
        let old_prefix = old.to_ascii_lowercase();
        let new_prefix = full_path.to_ascii_lowercase();
        // Binds: $1 the group, $2 the old prefix, $3 the new one.
        let moved_repos = format!(
            "{TREE}, moved(id, path) AS ( \
                 SELECT r.id, r.path FROM repositories r \
                 JOIN projects p ON p.id = r.project_id \
                 JOIN tree t ON t.id = p.namespace_id \
                 WHERE substr(r.path, 1, length($2) + 1) = $2 || '/') "
        );
        if old_prefix != new_prefix {
            let clash: Option<String> = sqlx::query_scalar(&format!(
                "{moved_repos}SELECT o.path FROM moved mv \
                 JOIN repositories o ON o.path = $3 || substr(mv.path, length($2) + 1) \
                 WHERE o.id NOT IN (SELECT id FROM moved) LIMIT 1"
            ))
            .bind(group.id)
            .bind(&old_prefix)
            .bind(&new_prefix)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(clash) = clash {
                return Err(MetaError::Conflict(format!(
                    "Container repository {clash} already exists"
                )));
            }
        }

        sqlx::query("UPDATE namespaces SET path = $1, parent_id = $2 WHERE id = $3")
            .bind(path)
            .bind(parent_id)
            .bind(group.id)
            .execute(&mut *tx)
            .await?;
        for (table, in_tree) in [("namespaces", "id"), ("projects", "namespace_id")] {
            sqlx::query(&format!(
                "{TREE}UPDATE {table} SET full_path = $2 || substr(full_path, length($3) + 1) \
                 WHERE {in_tree} IN (SELECT id FROM tree)"
            ))
            .bind(group.id)
            .bind(&full_path)
            .bind(&old)
            .execute(&mut *tx)
            .await?;
        }
        if old_prefix != new_prefix {
            sqlx::query(&format!(
                "{moved_repos}UPDATE repositories SET path = $3 || substr(path, length($2) + 1), {RENAMED} \
                 WHERE id IN (SELECT id FROM moved)"
            ))
            .bind(group.id)
            .bind(&old_prefix)
            .bind(&new_prefix)
            .execute(&mut *tx)
            .await?;
        }
        let moved = written(namespace_in(&mut *tx, group.id).await?, group.id)?;
        tx.commit().await?;
        Ok(moved)
    }

    async fn delete_project(&self, project_id: i64, now: i64) -> Result<bool> {
        retry_deadlocks(move || async move {
            let mut tx = self.write_tx().await?;
            // Exclusive against pushes attaching new repositories to the project.
            lock_paths(&mut tx).await?;
            if project_in(&mut *tx, project_id).await?.is_none() {
                return Ok(false);
            }
            remove_project(&mut tx, project_id, now).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn delete_group(&self, namespace_id: i64, now: i64) -> Result<bool> {
        retry_deadlocks(move || async move {
            let mut tx = self.write_tx().await?;
            lock_paths(&mut tx).await?;
            match namespace_in(&mut *tx, namespace_id).await? {
                Some(n) if n.kind == crate::org::NamespaceKind::Group => {}
                _ => return Ok(false),
            }
            // The group and every group below it, deepest first: a parent row may
            // go only once no child names it.
            let groups: Vec<i64> = sqlx::query_scalar(
                "WITH RECURSIVE below(id) AS ( \
                   SELECT id FROM namespaces WHERE id = $1 \
                   UNION ALL SELECT n.id FROM namespaces n JOIN below b ON n.parent_id = b.id) \
                 SELECT n.id FROM namespaces n JOIN below b ON b.id = n.id \
                 ORDER BY length(n.full_path) DESC, n.id",
            )
            .bind(namespace_id)
            .fetch_all(&mut *tx)
            .await?;
            for ns in groups {
                let projects: Vec<i64> =
                    sqlx::query_scalar("SELECT id FROM projects WHERE namespace_id = $1")
                        .bind(ns)
                        .fetch_all(&mut *tx)
                        .await?;
                for p in projects {
                    remove_project(&mut tx, p, now).await?;
                }
                for sql in [
                    "DELETE FROM members WHERE source_kind = 'namespace' AND source_id = $1",
                    "DELETE FROM deploy_tokens WHERE source_kind = 'namespace' AND source_id = $1",
                    // The dependency proxy's cache links: dropping a blob link queues
                    // the blob for GC's review (trigger), so its bytes go if nothing
                    // else holds them.
                    "DELETE FROM dependency_proxy_manifests WHERE namespace_id = $1",
                    "DELETE FROM dependency_proxy_blobs WHERE namespace_id = $1",
                    "DELETE FROM dependency_proxy_settings WHERE namespace_id = $1",
                    "DELETE FROM namespaces WHERE id = $1",
                ] {
                    sqlx::query(sql).bind(ns).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }
}

/// Remove repository `id` (at `path`) inside the caller's transaction: its live tags
/// end (feeding GC's manifest review queue), its index links, manifests and blob
/// links go (feeding the blob review queue: bytes are GC's to free), its uploads go,
/// then the repository, and with it its tag history (ON DELETE CASCADE): a deleted
/// repository has nothing to restore tags into.
async fn remove_repository(conn: &mut Conn, id: i64, path: &str, now: i64) -> Result<()> {
    sqlx::query(
        "UPDATE tags SET deleted_at = $1 WHERE repository_id = $2 AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    // Index links first: a child may not go while a reference to it remains.
    sqlx::query(
        "DELETE FROM manifest_references \
         WHERE parent_id IN (SELECT id FROM manifests WHERE repository_id = $1) \
            OR child_id IN (SELECT id FROM manifests WHERE repository_id = $2)",
    )
    .bind(id)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    // manifest_blobs go with their manifests (ON DELETE CASCADE).
    sqlx::query("DELETE FROM manifests WHERE repository_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM repository_blobs WHERE repository_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM uploads WHERE repository_path = $1")
        .bind(path)
        .execute(&mut *conn)
        .await?;
    // The tag history goes with the repository (ON DELETE CASCADE).
    sqlx::query("DELETE FROM repositories WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Remove project `id` inside the caller's transaction (which holds [`lock_paths`]):
/// each of its repositories as [`remove_repository`] does, its memberships, deploy
/// tokens, cleanup policy, protection rules, then the project (its cleanup log and
/// runs and CI jobs go with it, ON DELETE CASCADE). Blobs stay for GC.
async fn remove_project(conn: &mut Conn, id: i64, now: i64) -> Result<()> {
    let repos: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, path FROM repositories WHERE project_id = $1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    for (repo, path) in repos {
        remove_repository(conn, repo, &path, now).await?;
    }
    for sql in [
        "DELETE FROM members WHERE source_kind = 'project' AND source_id = $1",
        "DELETE FROM deploy_tokens WHERE source_kind = 'project' AND source_id = $1",
        "DELETE FROM expiration_policies WHERE project_id = $1",
        "DELETE FROM registry_protection_rules WHERE project_id = $1",
        "DELETE FROM projects WHERE id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *conn).await?;
    }
    Ok(())
}
