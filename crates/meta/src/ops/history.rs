//! [`crate::HistoryMeta`], written once for both backends (see the crate doc).
//!
//! A restore takes the repository's lock first, as every writer of its content does
//! (and as a GC review of its manifests does), then checks that the manifest is there
//! and starts the tag's row: so a restore and the GC of the same manifest are ordered,
//! and a restored tag never points at a deleted manifest.

use async_trait::async_trait;
use sqlx::Row;

use crate::history::{Actor, CleanupRun, DeletedTag, HistoryMeta, Restore, RunRestore, TagEvent};
use crate::org::Window;
use crate::Result;

use super::registry::{end_tag, lock_repo, start_tag};
use super::{Conn, Db};

/// Rows of a tag's last change being a deletion (not a move) whose manifest is there.
/// A name's live row is always its newest, so "no newer row" is "no live row and no
/// newer ended row": each found through its own (partial) index.
const DELETED_TAGS: &str = "FROM tags t \
     WHERE t.repository_id = $1 AND t.deleted_at IS NOT NULL \
       AND COALESCE(t.end_reason, 'deleted') <> 'moved' \
       AND NOT EXISTS (SELECT 1 FROM tags n WHERE n.repository_id = t.repository_id \
                       AND n.name = t.name AND n.deleted_at IS NULL) \
       AND NOT EXISTS (SELECT 1 FROM tags n WHERE n.repository_id = t.repository_id \
                       AND n.name = t.name AND n.deleted_at IS NOT NULL AND n.id > t.id) \
       AND EXISTS (SELECT 1 FROM manifests m \
                   WHERE m.repository_id = t.repository_id AND m.digest = t.manifest_digest)";

async fn manifest_exists(conn: &mut Conn, repo: i64, digest: &str) -> Result<bool> {
    let hit: Option<i64> =
        sqlx::query_scalar("SELECT id FROM manifests WHERE repository_id = $1 AND digest = $2")
            .bind(repo)
            .bind(digest)
            .fetch_optional(conn)
            .await?;
    Ok(hit.is_some())
}

async fn live_digest(conn: &mut Conn, repo: i64, name: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT manifest_digest FROM tags \
         WHERE repository_id = $1 AND name = $2 AND deleted_at IS NULL",
    )
    .bind(repo)
    .bind(name)
    .fetch_optional(conn)
    .await?)
}

#[async_trait]
impl HistoryMeta for Db {
    async fn tag_history(&self, repo: i64, name: &str, limit: i64) -> Result<Vec<TagEvent>> {
        // Each row is a push or restore (its start) and, unless a move ended it (the
        // next row's push says so), a deletion (its end). Newest rows first; a row's
        // end comes before its start.
        let rows = sqlx::query(
            "SELECT manifest_digest, created_at, created_action, created_by_kind, created_by_id, \
             created_by_name, previous_digest, deleted_at, end_reason, deleted_by_kind, \
             deleted_by_id, deleted_by_name, cleanup_run_id, id \
             FROM tags WHERE repository_id = $1 AND name = $2 AND deleted_at IS NULL \
             UNION ALL SELECT manifest_digest, created_at, created_action, created_by_kind, \
             created_by_id, created_by_name, previous_digest, deleted_at, end_reason, \
             deleted_by_kind, deleted_by_id, deleted_by_name, cleanup_run_id, id \
             FROM tags WHERE repository_id = $1 AND name = $2 AND deleted_at IS NOT NULL \
             ORDER BY 14 DESC LIMIT $3",
        )
        .bind(repo)
        .bind(name)
        .bind(limit)
        .fetch_all(self.reader())
        .await?;
        let mut events = Vec::with_capacity(rows.len() * 2);
        for r in rows {
            let digest: String = r.get(0);
            let deleted_at: Option<i64> = r.get(7);
            let end_reason: Option<String> = r.get(8);
            if let Some(at) = deleted_at.filter(|_| end_reason.as_deref() != Some("moved")) {
                events.push(TagEvent {
                    action: "deleted".into(),
                    digest: digest.clone(),
                    previous_digest: None,
                    at,
                    actor: Actor::from_columns(r.get(9), r.get(10), r.get(11)),
                    cleanup_run_id: r.get(12),
                });
            }
            let action: Option<String> = r.get(2);
            events.push(TagEvent {
                action: match action.as_deref() {
                    Some("restore") => "restored",
                    _ => "pushed",
                }
                .into(),
                digest,
                previous_digest: r.get(6),
                at: r.get(1),
                actor: Actor::from_columns(r.get(3), r.get(4), r.get(5)),
                cleanup_run_id: None,
            });
        }
        events.truncate(limit.max(0) as usize);
        Ok(events)
    }

    async fn deleted_tags(&self, repo: i64, window: Window) -> Result<(Vec<DeletedTag>, i64)> {
        let mut tx = self.read_tx().await?;
        let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) {DELETED_TAGS}"))
            .bind(repo)
            .fetch_one(&mut *tx)
            .await?;
        let rows = sqlx::query(&format!(
            "SELECT t.name, t.manifest_digest, t.deleted_at, t.deleted_by_kind, t.deleted_by_id, \
             t.deleted_by_name, t.cleanup_run_id {DELETED_TAGS} ORDER BY t.name LIMIT $2 OFFSET $3"
        ))
        .bind(repo)
        .bind(window.limit)
        .bind(window.offset)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let tags = rows
            .into_iter()
            .map(|r| DeletedTag {
                name: r.get(0),
                digest: r.get(1),
                deleted_at: r.get(2),
                deleted_by: Actor::from_columns(r.get(3), r.get(4), r.get(5)),
                cleanup_run_id: r.get(6),
            })
            .collect();
        Ok((tags, total))
    }

    async fn restore_tag(
        &self,
        repo: i64,
        name: &str,
        digest: Option<&str>,
        force: bool,
        actor: &Actor,
        now: i64,
    ) -> Result<Restore> {
        let mut tx = self.write_tx().await?;
        if !lock_repo(&mut tx, repo).await? {
            return Ok(Restore::Unknown);
        }
        let current = live_digest(&mut tx, repo, name).await?;
        if digest.is_some() && digest == current.as_deref() {
            return Ok(Restore::Unchanged(current.unwrap_or_default()));
        }
        // The digest must be one the tag had: its latest ended row's by default.
        let target: Option<String> = sqlx::query_scalar(
            "SELECT manifest_digest FROM tags WHERE repository_id = $1 AND name = $2 \
             AND deleted_at IS NOT NULL AND ($3 IS NULL OR manifest_digest = $4) \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(repo)
        .bind(name)
        .bind(digest)
        .bind(digest)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(target) = target else {
            return Ok(Restore::Unknown);
        };
        if current.as_deref() == Some(target.as_str()) {
            return Ok(Restore::Unchanged(target));
        }
        if let Some(current) = &current {
            if !force {
                return Ok(Restore::Conflict {
                    current: current.clone(),
                });
            }
        }
        if !manifest_exists(&mut tx, repo, &target).await? {
            return Ok(Restore::Gone(target));
        }
        if current.is_some() {
            end_tag(&mut tx, repo, name, now, "moved", actor, None).await?;
        }
        let previous = current.as_deref();
        start_tag(
            &mut tx, repo, name, &target, previous, "restore", actor, now,
        )
        .await?;
        tx.commit().await?;
        Ok(Restore::Restored(target))
    }

    async fn start_cleanup_run(
        &self,
        project_id: i64,
        reason: &str,
        actor: &Actor,
        now: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO cleanup_runs (project_id, reason, started_at, actor_kind, actor_id, \
             actor_name) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(project_id)
        .bind(reason)
        .bind(now)
        .bind(actor.kind_column())
        .bind(actor.id)
        .bind(&actor.username)
        .fetch_one(self.writer())
        .await?)
    }

    async fn cleanup_run(&self, id: i64) -> Result<Option<CleanupRun>> {
        let row = sqlx::query(
            "SELECT id, project_id, reason, started_at, actor_kind, actor_id, actor_name \
             FROM cleanup_runs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(|r| CleanupRun {
            id: r.get(0),
            project_id: r.get(1),
            reason: r.get(2),
            started_at: r.get(3),
            actor: Actor::from_columns(r.get(4), r.get(5), r.get(6)),
        }))
    }

    async fn restore_cleanup_run(&self, run: i64, actor: &Actor, now: i64) -> Result<RunRestore> {
        let mut tx = self.write_tx().await?;
        // Repositories in id order, each locked before its tags are read, as a
        // restore of one tag does: two undos never wait for each other crosswise.
        let repos: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT repository_id FROM tags WHERE cleanup_run_id = $1 \
             AND end_reason = 'cleanup' ORDER BY repository_id",
        )
        .bind(run)
        .fetch_all(&mut *tx)
        .await?;
        let mut outcome = RunRestore::default();
        for repo in repos {
            if !lock_repo(&mut tx, repo).await? {
                continue;
            }
            let rows = sqlx::query(
                "SELECT t.name, t.manifest_digest, \
                   EXISTS (SELECT 1 FROM tags n WHERE n.repository_id = t.repository_id \
                           AND n.name = t.name AND n.deleted_at IS NULL) \
                   OR EXISTS (SELECT 1 FROM tags n WHERE n.repository_id = t.repository_id \
                           AND n.name = t.name AND n.deleted_at IS NOT NULL AND n.id > t.id), \
                   EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = t.repository_id \
                           AND m.digest = t.manifest_digest) \
                 FROM tags t WHERE t.cleanup_run_id = $1 AND t.repository_id = $2 \
                   AND t.end_reason = 'cleanup' ORDER BY t.id",
            )
            .bind(run)
            .bind(repo)
            .fetch_all(&mut *tx)
            .await?;
            for r in rows {
                let (name, digest): (String, String) = (r.get(0), r.get(1));
                let (superseded, present): (bool, bool) = (r.get(2), r.get(3));
                if superseded {
                    outcome.skipped += 1;
                } else if !present {
                    outcome.gone += 1;
                } else {
                    start_tag(&mut tx, repo, &name, &digest, None, "restore", actor, now).await?;
                    outcome.restored += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn prune_tag_history(&self, before: i64) -> Result<u64> {
        // In batches, so a large backlog never holds the writer for long.
        let mut pruned = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM tags WHERE id IN (SELECT id FROM tags \
                 WHERE deleted_at IS NOT NULL AND deleted_at < $1 LIMIT 5000)",
            )
            .bind(before)
            .execute(self.writer())
            .await?
            .rows_affected();
            pruned += done;
            if done < 5000 {
                return Ok(pruned);
            }
        }
    }
}
