//! [`crate::CleanupMeta`], written once for both backends (see the crate doc).
//! Claiming a repository is one conditional UPDATE: SQLite takes the write lock before
//! it reads, and PostgreSQL re-checks the condition on the row it waited for, so of
//! several workers (or nodes) exactly one gets each run. Claims are taken under
//! [`lock_cleanup_claims`], so the worker capacity holds across nodes.

use async_trait::async_trait;
use sqlx::Row;

use crate::cleanup::{CleanupClaim, CleanupLogEntry, CleanupMeta, CleanupRunSummary, KeptTag};
use crate::repositories::{ExpirationPolicy, RepositoryInfo, RepositoryMeta};
use crate::{Actor, Result};

use super::repositories::policy_at;
use super::{lock_cleanup_claims, Db};

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
const CLEANUP_QUEUE: &str = concat!(cleanup_queue!(), " LIMIT $1");

/// Claim the queue's head at `$1` (now) until `$2`, if fewer than `$3` live claims are
/// held; returns the repository's id and the claim's number.
const CLAIM_NEXT_CLEANUP: &str = concat!(
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
const RENEW_CLEANUP: &str = "UPDATE repositories SET cleanup_lease_until = $1 \
     WHERE id = $2 AND cleanup_claim = $3 AND cleanup_status = 'cleanup_ongoing'";

/// Hand back, as unfinished, every claim whose lease lapsed before `$1`.
const RESET_LAPSED_CLEANUPS: &str =
    "UPDATE repositories SET cleanup_status = 'cleanup_unfinished', cleanup_lease_until = NULL \
     WHERE cleanup_status = 'cleanup_ongoing' \
       AND (cleanup_lease_until IS NULL OR cleanup_lease_until < $1)";

/// How many cleanup claims are held.
const HELD_CLEANUPS: &str =
    "SELECT COUNT(*) FROM repositories WHERE cleanup_status = 'cleanup_ongoing'";

/// End claim number `$3` of repository `$2` with status `$1`, if it is still held.
const FINISH_CLEANUP: &str =
    "UPDATE repositories SET cleanup_status = $1, cleanup_lease_until = NULL \
     WHERE id = $2 AND cleanup_claim = $3 AND cleanup_status = 'cleanup_ongoing'";

#[async_trait]
impl CleanupMeta for Db {
    async fn due_policies(&self, now: i64) -> Result<Vec<(i64, ExpirationPolicy)>> {
        let rows = sqlx::query(
            "SELECT project_id, enabled, cadence, keep_n, older_than, name_regex, \
             name_regex_keep, next_run_at FROM expiration_policies \
             WHERE enabled AND next_run_at IS NOT NULL AND next_run_at <= $1 \
             ORDER BY next_run_at",
        )
        .bind(now)
        .fetch_all(self.reader())
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), policy_at(r, 1))).collect())
    }

    async fn start_policy_run(
        &self,
        project_id: i64,
        due_at: i64,
        next_run_at: i64,
    ) -> Result<Option<u64>> {
        let mut tx = self.write_tx().await?;
        // The row lock makes a second node's update wait, then find the new value.
        let moved = sqlx::query(
            "UPDATE expiration_policies SET next_run_at = $1 \
             WHERE project_id = $2 AND next_run_at = $3",
        )
        .bind(next_run_at)
        .bind(project_id)
        .bind(due_at)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(None);
        }
        // The run gets an id, which the tags it deletes carry, so it can be undone.
        let run: i64 = sqlx::query_scalar(
            "INSERT INTO cleanup_runs (project_id, reason, started_at, actor_kind) \
             VALUES ($1, 'policy', $2, 'cleanup_policy') RETURNING id",
        )
        .bind(project_id)
        .bind(due_at)
        .fetch_one(&mut *tx)
        .await?;
        let marked = sqlx::query(
            "UPDATE repositories SET cleanup_status = 'cleanup_scheduled', cleanup_run_id = $2 \
             WHERE project_id = $1 AND status IS NULL AND cleanup_status = 'cleanup_unscheduled'",
        )
        .bind(project_id)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(marked.rows_affected()))
    }

    async fn cleanup_queue(&self, limit: i64) -> Result<Vec<RepositoryInfo>> {
        let ids: Vec<i64> = sqlx::query_scalar(CLEANUP_QUEUE)
            .bind(limit)
            .fetch_all(self.reader())
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = self.repository_info(id).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    async fn claim_next_cleanup(
        &self,
        now: i64,
        lease_until: i64,
        capacity: i64,
    ) -> Result<Option<CleanupClaim>> {
        // Claims are taken one at a time across all nodes, so neither the queue's head
        // nor the count of held claims can change between reading and claiming.
        let mut tx = self.write_tx().await?;
        lock_cleanup_claims(&mut tx).await?;
        let claimed: Option<(i64, i64)> = sqlx::query_as(CLAIM_NEXT_CLEANUP)
            .bind(now)
            .bind(lease_until)
            .bind(capacity)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let Some((id, number)) = claimed else {
            return Ok(None);
        };
        Ok(self
            .repository_info(id)
            .await?
            .map(|repository| CleanupClaim { repository, number }))
    }

    async fn renew_cleanup(&self, claim: &CleanupClaim, lease_until: i64) -> Result<bool> {
        let done = sqlx::query(RENEW_CLEANUP)
            .bind(lease_until)
            .bind(claim.repository.id)
            .bind(claim.number)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn finish_cleanup(&self, claim: &CleanupClaim, status: &str) -> Result<bool> {
        let done = sqlx::query(FINISH_CLEANUP)
            .bind(status)
            .bind(claim.repository.id)
            .bind(claim.number)
            .execute(self.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn reset_lapsed_cleanups(&self, now: i64) -> Result<(u64, u64)> {
        let reset = sqlx::query(RESET_LAPSED_CLEANUPS)
            .bind(now)
            .execute(self.writer())
            .await?
            .rows_affected();
        let held: i64 = sqlx::query_scalar(HELD_CLEANUPS)
            .fetch_one(self.reader())
            .await?;
        Ok((reset, held as u64))
    }

    async fn delete_tags_logged(
        &self,
        repository_id: i64,
        names: &[String],
        reason: &str,
        run: Option<i64>,
        actor: &Actor,
        now: i64,
    ) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let repo: Option<(String, Option<i64>, Option<i64>)> = sqlx::query_as(concat!(
            "SELECT path, project_id, cleanup_run_id FROM repositories WHERE id = $1",
            pick!(sqlite: "", postgres: " FOR UPDATE")
        ))
        .bind(repository_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((path, project_id, policy_run)) = repo else {
            return Ok(0);
        };
        let run = run.or(policy_run);
        // Each name once, in the order given.
        let mut seen = std::collections::HashSet::new();
        let names: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| seen.insert(*n))
            .collect();
        if names.is_empty() {
            return Ok(0);
        }
        // A statement or two for the whole batch on both backends: one per tag was a
        // round trip to SQLite's worker thread each, 180,000 of them for 90,000 tags.
        let ended: u64 = pick!(
            sqlite: {
                let marks: Vec<String> = (0..names.len()).map(|i| format!("${}", i + 7)).collect();
                // By the index of live names: with a list of names SQLite's planner
                // prefers (repository_id, deleted_at, …), every live tag of the
                // repository (18 ms a batch among 100,000 tags).
                let sql = format!(
                    "UPDATE tags INDEXED BY tags_live SET deleted_at = $1, \
                     end_reason = 'cleanup', \
                     deleted_by_kind = $3, deleted_by_id = $4, deleted_by_name = $5, \
                     cleanup_run_id = $6 \
                     WHERE repository_id = $2 AND deleted_at IS NULL AND name IN ({}) \
                     RETURNING name, manifest_digest",
                    marks.join(", ")
                );
                let mut q = sqlx::query_as::<_, (String, String)>(&sql)
                    .bind(now)
                    .bind(repository_id)
                    .bind(actor.kind_column())
                    .bind(actor.id)
                    .bind(&actor.username)
                    .bind(run);
                for name in &names {
                    q = q.bind(*name);
                }
                let mut done = q.fetch_all(&mut *tx).await?;
                // Logged in the order given, as PostgreSQL's statement logs them (only
                // for a repository of a project, and only those counted).
                let order: std::collections::HashMap<&str, usize> =
                    names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
                done.sort_by_key(|(name, _)| order.get(name.as_str()).copied());
                let logged = project_id.filter(|_| !done.is_empty());
                if let Some(project_id) = logged {
                    let rows: Vec<String> = (0..done.len())
                        .map(|i| format!("(${}, ${})", 2 * i + 7, 2 * i + 8))
                        .collect();
                    let sql = format!(
                        "INSERT INTO cleanup_log (project_id, repository_id, \
                         repository_path, tag, digest, reason, deleted_at, run_id) \
                         SELECT $1, $2, $3, column1, column2, $4, $5, $6 \
                         FROM (VALUES {})",
                        rows.join(", ")
                    );
                    let mut q = sqlx::query(&sql)
                        .bind(project_id)
                        .bind(repository_id)
                        .bind(&path)
                        .bind(reason)
                        .bind(now)
                        .bind(run);
                    for (name, digest) in &done {
                        q = q.bind(name).bind(digest);
                    }
                    q.execute(&mut *tx).await?;
                }
                if logged.is_some() { done.len() as u64 } else { 0 }
            },
            postgres: {
                // One statement for the whole batch (the same as ending the tags one by one,
                // logged in the order given): 10,000 tags take one round trip, not 20,000.
                let ended: i64 = sqlx::query_scalar(
                    "WITH ended AS ( \
                         UPDATE tags SET deleted_at = $1, end_reason = 'cleanup', \
                             deleted_by_kind = $7, deleted_by_id = $8, deleted_by_name = $9, \
                             cleanup_run_id = $10 \
                         WHERE repository_id = $2 AND name = ANY($3) AND deleted_at IS NULL \
                         RETURNING name, manifest_digest), \
                     logged AS ( \
                         INSERT INTO cleanup_log (project_id, repository_id, repository_path, tag, \
                             digest, reason, deleted_at, run_id) \
                         SELECT $4, $2, $5, e.name, e.manifest_digest, $6, $1, $10 \
                         FROM ended e JOIN unnest($3::text[]) WITH ORDINALITY AS n(name, i) \
                           ON n.name = e.name \
                         WHERE $4::bigint IS NOT NULL \
                         ORDER BY n.i \
                         RETURNING 1) \
                     SELECT COUNT(*) FROM logged",
                )
                // Planned for these names each time, not cached: PostgreSQL's generic
                // plan for a cached statement guesses a repository holds a few tags and
                // scans all of its tags for the names (300 ms a batch of 100 among
                // 100,000 tags, against 2 ms by index).
                .persistent(false)
                .bind(now)
                .bind(repository_id)
                .bind(&names)
                .bind(project_id)
                .bind(&path)
                .bind(reason)
                .bind(actor.kind_column())
                .bind(actor.id)
                .bind(&actor.username)
                .bind(run)
                .fetch_one(&mut *tx)
                .await?;
                ended as u64
            },
        );
        tx.commit().await?;
        Ok(ended)
    }

    async fn log_kept_tags(
        &self,
        repository_id: i64,
        kept: &[KeptTag],
        reason: &str,
        run: Option<i64>,
        now: i64,
    ) -> Result<u64> {
        if kept.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        let repo: Option<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT path, project_id, cleanup_run_id FROM repositories WHERE id = $1",
        )
        .bind(repository_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((path, Some(project_id), policy_run)) = repo else {
            return Ok(0);
        };
        let run = run.or(policy_run);
        let mut added = 0;
        for k in kept {
            added += sqlx::query(
                "INSERT INTO cleanup_log (project_id, repository_id, repository_path, tag, \
                 digest, reason, deleted_at, run_id, kept_by_rule) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
                 WHERE $8 IS NULL OR NOT EXISTS (SELECT 1 FROM cleanup_log \
                     WHERE run_id = $10 AND repository_id = $2 AND tag = $4 \
                       AND kept_by_rule IS NOT NULL)",
            )
            .bind(project_id)
            .bind(repository_id)
            .bind(&path)
            .bind(&k.tag)
            .bind(&k.digest)
            .bind(reason)
            .bind(now)
            .bind(run)
            .bind(k.rule_id)
            .bind(run)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn cleanup_log(&self, project_id: i64, limit: i64) -> Result<Vec<CleanupLogEntry>> {
        let rows = sqlx::query(
            "SELECT project_id, repository_id, repository_path, tag, digest, reason, deleted_at, \
             run_id, kept_by_rule FROM cleanup_log WHERE project_id = $1 ORDER BY deleted_at DESC, id DESC LIMIT $2",
        )
        .bind(project_id)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| CleanupLogEntry {
                project_id: r.get(0),
                repository_id: r.get::<Option<i64>, _>(1).unwrap_or_default(),
                repository_path: r.get(2),
                tag: r.get(3),
                digest: r.get(4),
                reason: r.get(5),
                deleted_at: r.get(6),
                run_id: r.get(7),
                kept_by_rule: r.get(8),
            })
            .collect())
    }

    async fn recent_cleanup_runs(&self, limit: i64) -> Result<Vec<CleanupRunSummary>> {
        let rows = sqlx::query(
            "SELECT r.id, p.full_path, r.reason, r.started_at, \
             (SELECT COUNT(*) FROM cleanup_log l WHERE l.run_id = r.id), \
             (SELECT COUNT(*) FROM repositories x WHERE x.cleanup_run_id = r.id \
                AND x.cleanup_status IN ('cleanup_scheduled', 'cleanup_unfinished', 'cleanup_ongoing')), \
             (SELECT COUNT(*) FROM repositories x WHERE x.cleanup_run_id = r.id \
                AND x.cleanup_status = 'cleanup_ongoing') \
             FROM cleanup_runs r JOIN projects p ON p.id = r.project_id \
             ORDER BY r.id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| CleanupRunSummary {
                id: r.get(0),
                project_path: r.get(1),
                reason: r.get(2),
                started_at: r.get(3),
                tags_deleted: r.get(4),
                repositories_waiting: r.get(5),
                repositories_running: r.get(6),
            })
            .collect())
    }
}
