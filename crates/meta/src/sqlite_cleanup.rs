//! SQLite implementation of [`crate::CleanupMeta`].

use async_trait::async_trait;
use sqlx::Row;

use crate::cleanup::{CleanupClaim, CleanupLogEntry, CleanupMeta};
use crate::common::{
    CLAIM_NEXT_CLEANUP, CLEANUP_QUEUE, FINISH_CLEANUP, HELD_CLEANUPS, RENEW_CLEANUP,
    RESET_LAPSED_CLEANUPS,
};
use crate::repositories::{ExpirationPolicy, RepositoryInfo, RepositoryMeta};
use crate::sqlite::SqliteMeta;
use crate::Result;

#[async_trait]
impl CleanupMeta for SqliteMeta {
    async fn due_policies(&self, now: i64) -> Result<Vec<(i64, ExpirationPolicy)>> {
        let rows = sqlx::query(
            "SELECT project_id, enabled, cadence, keep_n, older_than, name_regex, \
             name_regex_keep, next_run_at FROM expiration_policies \
             WHERE enabled = 1 AND next_run_at IS NOT NULL AND next_run_at <= ? \
             ORDER BY next_run_at",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get(0),
                    ExpirationPolicy {
                        enabled: r.get::<i64, _>(1) != 0,
                        cadence: r.get(2),
                        keep_n: r.get(3),
                        older_than: r.get(4),
                        name_regex: r.get(5),
                        name_regex_keep: r.get(6),
                        next_run_at: r.get(7),
                    },
                )
            })
            .collect())
    }

    async fn start_policy_run(
        &self,
        project_id: i64,
        due_at: i64,
        next_run_at: i64,
    ) -> Result<Option<u64>> {
        let mut tx = self.write_tx().await?;
        let moved = sqlx::query(
            "UPDATE expiration_policies SET next_run_at = ? \
             WHERE project_id = ? AND next_run_at = ?",
        )
        .bind(next_run_at)
        .bind(project_id)
        .bind(due_at)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Ok(None);
        }
        let marked = sqlx::query(
            "UPDATE repositories SET cleanup_status = 'cleanup_scheduled' \
             WHERE project_id = ? AND status IS NULL AND cleanup_status = 'cleanup_unscheduled'",
        )
        .bind(project_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(marked.rows_affected()))
    }

    async fn cleanup_queue(&self, limit: i64) -> Result<Vec<RepositoryInfo>> {
        let ids: Vec<i64> = sqlx::query_scalar(CLEANUP_QUEUE)
            .bind(limit)
            .fetch_all(&self.read)
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
        // One statement: SQLite takes the write lock before it reads, so two workers
        // can neither take the same repository nor both see the last free slot.
        let claimed: Option<(i64, i64)> = sqlx::query_as(CLAIM_NEXT_CLEANUP)
            .bind(now)
            .bind(lease_until)
            .bind(capacity)
            .fetch_optional(&self.write)
            .await?;
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
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn finish_cleanup(&self, claim: &CleanupClaim, status: &str) -> Result<bool> {
        let done = sqlx::query(FINISH_CLEANUP)
            .bind(status)
            .bind(claim.repository.id)
            .bind(claim.number)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn reset_lapsed_cleanups(&self, now: i64) -> Result<(u64, u64)> {
        let reset = sqlx::query(RESET_LAPSED_CLEANUPS)
            .bind(now)
            .execute(&self.write)
            .await?
            .rows_affected();
        let held: i64 = sqlx::query_scalar(HELD_CLEANUPS)
            .fetch_one(&self.read)
            .await?;
        Ok((reset, held as u64))
    }

    async fn delete_tags_logged(
        &self,
        repository_id: i64,
        names: &[String],
        reason: &str,
        now: i64,
    ) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let repo: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT path, project_id FROM repositories WHERE id = ?")
                .bind(repository_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((path, project_id)) = repo else {
            return Ok(0);
        };
        let mut ended = 0;
        for name in names {
            let digest: Option<String> = sqlx::query_scalar(
                "UPDATE tags SET deleted_at = ? \
                 WHERE repository_id = ? AND name = ? AND deleted_at IS NULL \
                 RETURNING manifest_digest",
            )
            .bind(now)
            .bind(repository_id)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            let (Some(digest), Some(project_id)) = (digest, project_id) else {
                continue;
            };
            ended += 1;
            sqlx::query(
                "INSERT INTO cleanup_log (project_id, repository_id, repository_path, tag, \
                 digest, reason, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(project_id)
            .bind(repository_id)
            .bind(&path)
            .bind(name)
            .bind(&digest)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ended)
    }

    async fn cleanup_log(&self, project_id: i64, limit: i64) -> Result<Vec<CleanupLogEntry>> {
        let rows = sqlx::query(
            "SELECT project_id, repository_id, repository_path, tag, digest, reason, deleted_at \
             FROM cleanup_log WHERE project_id = ? ORDER BY deleted_at DESC, id DESC LIMIT ?",
        )
        .bind(project_id)
        .bind(limit)
        .fetch_all(&self.read)
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
            })
            .collect())
    }
}
