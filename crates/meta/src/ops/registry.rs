//! [`crate::RegistryMeta`], written once for both backends (see the crate doc), and
//! the helpers the other operations share.

use async_trait::async_trait;
use berth_oci::Digest;
use sqlx::Row;

use super::{lock_paths_shared, retry_deadlocks, Conn, Db, DbRow, CONCURRENT_WRITERS};
use crate::cache::Scope;
use crate::common::digest;
use crate::{
    Actor, ManifestRef, MetaError, NewManifest, Referrer, RegistryMeta, Repository, Result,
    StoredManifest, TagExpect, Upload,
};

/// Whether repository `id` exists; with concurrent writers (PostgreSQL) also locks its
/// row for the rest of the transaction, as every writer of its content does first.
pub(super) async fn lock_repo(conn: &mut Conn, id: i64) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar(concat!(
        "SELECT id FROM repositories WHERE id = $1",
        pick!(sqlite: "", postgres: " FOR UPDATE")
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(hit.is_some())
}

/// The repository's id, locked for the transaction (PostgreSQL), creating it (attached to the
/// project that owns its path, by GitLab's longest-prefix rule) when this is its first
/// content.
async fn ensure_repo(conn: &mut Conn, path: &str, now: i64) -> Result<i64> {
    const TOUCH: &str = "UPDATE repositories SET updated_at = $1 WHERE path = $2 RETURNING id";
    let touched: Option<i64> = sqlx::query_scalar(TOUCH)
        .bind(now)
        .bind(path)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(id) = touched {
        return Ok(id);
    }
    // A project created or moved meanwhile must not be missed: project paths change
    // under the exclusive side of this lock.
    lock_paths_shared(&mut *conn).await?;
    let mut project_id = None;
    // The name lists show: the path below the project, or all of it for its root image.
    let mut shown_name = path;
    for candidate in berth_core::paths::project_candidates(path) {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM projects WHERE lower(full_path) = $1")
                .bind(&candidate)
                .fetch_optional(&mut *conn)
                .await?;
        if found.is_some() {
            project_id = found;
            if let Some(below) = path.get(candidate.len() + 1..).filter(|b| !b.is_empty()) {
                shown_name = below;
            }
            break;
        }
    }
    let created: Option<i64> = sqlx::query_scalar(
        "INSERT INTO repositories (path, project_id, created_at, updated_at, shown_name) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (path) DO NOTHING RETURNING id",
    )
    .bind(path)
    .bind(project_id)
    .bind(now)
    .bind(now)
    .bind(shown_name)
    .fetch_optional(&mut *conn)
    .await?;
    match created {
        Some(id) => Ok(id),
        // Another node's push created it first: use theirs (locked like any other).
        None => sqlx::query_scalar(TOUCH)
            .bind(now)
            .bind(path)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| MetaError::Corrupt(format!("repository {path} vanished"))),
    }
}

/// Record a verified blob in `blobs` (when new), for a link to it in the same
/// transaction: a repository's, or a dependency proxy cache's.
/// Record a blob and let `repository` reach it (creating the repository), within a
/// transaction the caller commits.
async fn link_in(conn: &mut Conn, repository: &str, d: &Digest, size: u64, now: i64) -> Result<()> {
    let repo = ensure_repo(conn, repository, now).await?;
    record_blob(conn, d, size, now).await?;
    sqlx::query(
        "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(repo)
    .bind(d.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // Uploaded or mounted again: a queued review starts its delay over (a new link
    // does this through its trigger; an existing link does not fire it).
    sqlx::query(
        "UPDATE gc_blob_review_queue SET queued_at = $1 WHERE digest = $2 AND queued_at < $3",
    )
    .bind(now)
    .bind(d.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn record_blob(conn: &mut Conn, d: &Digest, size: u64, now: i64) -> Result<()> {
    if CONCURRENT_WRITERS {
        // Wait out a GC review that is removing this blob, so it is recorded anew
        // below instead of the link failing its foreign key.
        sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 FOR KEY SHARE")
            .bind(d.as_str())
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(d.as_str())
    .bind(size as i64)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The id of an existing repository, locked for the transaction (PostgreSQL).
async fn locked_repo_id(conn: &mut Conn, path: &str) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(concat!(
        "SELECT id FROM repositories WHERE path = $1",
        pick!(sqlite: "", postgres: " FOR UPDATE")
    ))
    .bind(path)
    .fetch_optional(conn)
    .await?)
}

/// End the live row of a tag, if any: `reason` is `moved`, `deleted` or `cleanup`
/// (then `run` is the cleanup run), `actor` who did it. Returns the digest it had.
pub(super) async fn end_tag(
    conn: &mut Conn,
    repo: i64,
    tag: &str,
    now: i64,
    reason: &str,
    actor: &Actor,
    run: Option<i64>,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE tags SET deleted_at = $1, end_reason = $4, deleted_by_kind = $5, \
         deleted_by_id = $6, deleted_by_name = $7, cleanup_run_id = $8 \
         WHERE repository_id = $2 AND name = $3 AND deleted_at IS NULL \
         RETURNING manifest_digest",
    )
    .bind(now)
    .bind(repo)
    .bind(tag)
    .bind(reason)
    .bind(actor.kind_column())
    .bind(actor.id)
    .bind(&actor.username)
    .bind(run)
    .fetch_optional(conn)
    .await?)
}

/// Start a live row of a tag (none must be live): `action` is `push` or `restore`;
/// `previous` the digest it moved from.
#[allow(clippy::too_many_arguments)]
pub(super) async fn start_tag(
    conn: &mut Conn,
    repo: i64,
    tag: &str,
    digest: &str,
    previous: Option<&str>,
    action: &str,
    actor: &Actor,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tags (repository_id, name, manifest_digest, created_at, created_action, \
         created_by_kind, created_by_id, created_by_name, previous_digest) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(repo)
    .bind(tag)
    .bind(digest)
    .bind(now)
    .bind(action)
    .bind(actor.kind_column())
    .bind(actor.id)
    .bind(&actor.username)
    .bind(previous)
    .execute(conn)
    .await?;
    Ok(())
}

const UPLOAD_SELECT: &str =
    "SELECT id, repository_path, created_at, updated_at, created_by FROM uploads";

fn upload_row(r: DbRow) -> Upload {
    Upload {
        id: r.get(0),
        repository_path: r.get(1),
        created_at: r.get(2),
        updated_at: r.get(3),
        created_by: r.get(4),
    }
}

#[async_trait]
impl RegistryMeta for Db {
    async fn repository(&self, path: &str) -> Result<Option<Repository>> {
        let row = sqlx::query(
            "SELECT id, path, project_id, created_at FROM repositories WHERE path = $1",
        )
        .bind(path)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(|r| Repository {
            id: r.get(0),
            path: r.get(1),
            project_id: r.get(2),
            created_at: r.get(3),
        }))
    }

    async fn catalog(&self, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        let page = self.catalog_with_projects(last, n).await?;
        Ok(page.into_iter().map(|(path, _)| path).collect())
    }

    async fn catalog_with_projects(
        &self,
        last: Option<&str>,
        n: u32,
    ) -> Result<Vec<(String, Option<i64>)>> {
        let rows = sqlx::query(
            "SELECT path, project_id FROM repositories WHERE path > $1 ORDER BY path LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn link_blob(&self, repository: &str, d: &Digest, size: u64, now: i64) -> Result<()> {
        // Blob rows and links, and the repository's `updated_at` (or a new repository,
        // which has no manifest to look up yet): nothing a manifest lookup reads.
        let mut tx = self.write_tx_scoped(Scope::Nothing).await?;
        link_in(&mut tx, repository, d, size, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn publish_upload(
        &self,
        id: &str,
        repository: &str,
        d: &Digest,
        size: u64,
        now: i64,
    ) -> Result<Option<i64>> {
        // As `link_blob`; the session's row is not read by manifest lookups either.
        let mut tx = self.write_tx_scoped(Scope::Nothing).await?;
        link_in(&mut tx, repository, d, size, now).await?;
        let created: Option<i64> =
            sqlx::query_scalar("DELETE FROM uploads WHERE id = $1 RETURNING created_at")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn repository_blob(&self, repository: &str, d: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repository_blobs rb \
             JOIN repositories r ON r.id = rb.repository_id \
             JOIN blobs b ON b.digest = rb.digest \
             WHERE r.path = $1 AND rb.digest = $2",
        )
        .bind(repository)
        .bind(d.as_str())
        .fetch_optional(self.reader())
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn repositories_with_blob(
        &self,
        d: &Digest,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT r.path FROM repository_blobs rb \
             JOIN repositories r ON r.id = rb.repository_id \
             WHERE rb.digest = $1 \
             ORDER BY CASE WHEN substr(r.path, 1, length($2)) = $2 THEN 0 ELSE 1 END, r.path \
             LIMIT $3",
        )
        .bind(d.as_str())
        .bind(prefix)
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?)
    }

    async fn blob(&self, d: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(d.as_str())
            .fetch_optional(self.reader())
            .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn unlink_blob(&self, repository: &str, d: &Digest) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM repository_blobs WHERE digest = $1 AND repository_id = \
             (SELECT id FROM repositories WHERE path = $2)",
        )
        .bind(d.as_str())
        .bind(repository)
        .execute(self.writer_scoped(Scope::Nothing))
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_manifest_if(
        &self,
        repository: &str,
        m: &NewManifest,
        tag: Option<&str>,
        expect: Option<&TagExpect>,
        now: i64,
        actor: &Actor,
    ) -> Result<bool> {
        let mut tx = self
            .write_tx_scoped(Scope::Repository(repository.to_owned()))
            .await?;
        // Also the lock that orders concurrent pushes to one repository (PostgreSQL:
        // the row stays locked until commit), so the tag read below is the one this
        // write replaces.
        let repo = ensure_repo(&mut tx, repository, now).await?;
        // Check reachability inside the transaction, and (PostgreSQL) lock the blobs
        // (GC reviews lock them for update), so a concurrent delete cannot slip
        // between the check and the insert. Only the blob rows: a review deletes the
        // links after locking the blob, so a lock on a link here could close a
        // deadlock cycle.
        for b in &m.blobs {
            let ok: Option<i64> = sqlx::query_scalar(pick!(
                sqlite: "SELECT 1 FROM repository_blobs WHERE repository_id = $1 AND digest = $2",
                postgres: "SELECT CAST(1 AS BIGINT) FROM repository_blobs rb \
                           JOIN blobs b ON b.digest = rb.digest \
                           WHERE rb.repository_id = $1 AND rb.digest = $2 FOR SHARE OF b",
            ))
            .bind(repo)
            .bind(b.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if ok.is_none() {
                return Err(MetaError::BlobUnknown(b.clone()));
            }
        }
        let mut child_ids = Vec::with_capacity(m.children.len());
        for c in &m.children {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM manifests WHERE repository_id = $1 AND digest = $2",
            )
            .bind(repo)
            .bind(c.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            child_ids.push(id.ok_or_else(|| MetaError::ManifestUnknown(c.clone()))?);
        }
        // An index's size and creation time come from its children.
        let (total_size, image_created_at) = if child_ids.is_empty() {
            (m.total_size, m.image_created_at)
        } else {
            let mut total = 0i64;
            let mut created: Option<i64> = None;
            for id in &child_ids {
                let (size, at): (i64, Option<i64>) = sqlx::query_as(
                    "SELECT total_size, image_created_at FROM manifests WHERE id = $1",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                total += size;
                created = created.max(at);
            }
            (total, created)
        };
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM manifests WHERE repository_id = $1 AND digest = $2")
                .bind(repo)
                .bind(m.digest.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if existing.is_none() {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, \
                 subject_digest, config_digest, size, payload, annotations, created_at, \
                 image_created_at, total_size) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
            )
            .bind(repo)
            .bind(m.digest.as_str())
            .bind(&m.media_type)
            .bind(&m.artifact_type)
            .bind(m.subject.as_ref().map(|d| d.as_str()))
            .bind(m.config.as_ref().map(|d| d.as_str()))
            .bind(m.payload.len() as i64)
            .bind(&m.payload)
            .bind(&m.annotations)
            .bind(now)
            .bind(image_created_at)
            .bind(total_size)
            .fetch_one(&mut *tx)
            .await?;
            for b in &m.blobs {
                sqlx::query(
                    "INSERT INTO manifest_blobs (manifest_id, digest) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(b.as_str())
                .execute(&mut *tx)
                .await?;
            }
            for child in child_ids {
                sqlx::query(
                    "INSERT INTO manifest_references (parent_id, child_id) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(child)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(tag) = tag {
            let current: Option<String> = sqlx::query_scalar(
                "SELECT manifest_digest FROM tags \
                 WHERE repository_id = $1 AND name = $2 AND deleted_at IS NULL",
            )
            .bind(repo)
            .bind(tag)
            .fetch_optional(&mut *tx)
            .await?;
            if expect.is_some_and(|e| !e.holds(current.as_deref())) {
                // Dropped without commit: nothing of this push is written.
                return Ok(false);
            }
            if current.as_deref() != Some(m.digest.as_str()) {
                if current.is_some() {
                    end_tag(&mut tx, repo, tag, now, "moved", actor, None).await?;
                }
                let previous = current.as_deref();
                start_tag(
                    &mut tx,
                    repo,
                    tag,
                    m.digest.as_str(),
                    previous,
                    "push",
                    actor,
                    now,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn manifest(
        &self,
        repository: &str,
        reference: ManifestRef<'_>,
    ) -> Result<Option<StoredManifest>> {
        let key = match reference {
            ManifestRef::Digest(d) => d.as_str(),
            ManifestRef::Tag(t) => t,
        };
        if let Some(hit) = self.cache.get(repository, key) {
            return Ok(Some(hit));
        }
        // Taken before reading: a write that commits meanwhile leaves it stale.
        let stamp = pick!(
            sqlite: self.cache.stamp(repository),
            postgres: self.cache_stamp(repository),
        );
        let row = match reference {
            ManifestRef::Digest(d) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.payload FROM manifests m \
                     JOIN repositories r ON r.id = m.repository_id \
                     WHERE r.path = $1 AND m.digest = $2",
                )
                .bind(repository)
                .bind(d.as_str())
                .fetch_optional(self.reader())
                .await?
            }
            ManifestRef::Tag(t) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.payload FROM tags t \
                     JOIN repositories r ON r.id = t.repository_id \
                     JOIN manifests m ON m.repository_id = t.repository_id \
                          AND m.digest = t.manifest_digest \
                     WHERE r.path = $1 AND t.name = $2 AND t.deleted_at IS NULL",
                )
                .bind(repository)
                .bind(t)
                .fetch_optional(self.reader())
                .await?
            }
        };
        let Some(r) = row else {
            return Ok(None);
        };
        let found = StoredManifest {
            digest: digest(r.get(0))?,
            media_type: r.get(1),
            payload: r.get::<Vec<u8>, _>(2).into(),
        };
        if let Some(stamp) = stamp {
            self.cache.put(repository, key, stamp, &found);
        }
        Ok(Some(found))
    }

    async fn delete_manifest_if(
        &self,
        repository: &str,
        d: &Digest,
        tags: Option<&[String]>,
        now: i64,
        actor: &Actor,
    ) -> Result<Option<bool>> {
        retry_deadlocks(move || async move {
            let mut tx = self
                .write_tx_scoped(Scope::Repository(repository.to_owned()))
                .await?;
            // Locked (PostgreSQL) as every push locks it first, so no tag lands on
            // the manifest between the comparison below and the delete.
            let Some(repo) = locked_repo_id(&mut tx, repository).await? else {
                return Ok(tags.is_none_or(|t| t.is_empty()).then_some(false));
            };
            if let Some(expected) = tags {
                let mut live: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM tags WHERE repository_id = $1 AND manifest_digest = $2 \
                     AND deleted_at IS NULL",
                )
                .bind(repo)
                .bind(d.as_str())
                .fetch_all(&mut *tx)
                .await?;
                let mut expected = expected.to_vec();
                live.sort();
                expected.sort();
                if live != expected {
                    return Ok(None);
                }
            }
            let parent: Option<String> = sqlx::query_scalar(
                "SELECT p.digest FROM manifests c \
                 JOIN manifest_references r ON r.child_id = c.id \
                 JOIN manifests p ON p.id = r.parent_id \
                 WHERE c.repository_id = $1 AND c.digest = $2 LIMIT 1",
            )
            .bind(repo)
            .bind(d.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(parent) = parent {
                return Err(MetaError::ManifestReferenced(digest(parent)?));
            }
            sqlx::query(
                "UPDATE tags SET deleted_at = $1, end_reason = 'deleted', deleted_by_kind = $4, \
                 deleted_by_id = $5, deleted_by_name = $6 \
                 WHERE repository_id = $2 AND manifest_digest = $3 AND deleted_at IS NULL",
            )
            .bind(now)
            .bind(repo)
            .bind(d.as_str())
            .bind(actor.kind_column())
            .bind(actor.id)
            .bind(&actor.username)
            .execute(&mut *tx)
            .await?;
            let done =
                sqlx::query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
                    .bind(repo)
                    .bind(d.as_str())
                    .execute(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok(Some(done.rows_affected() > 0))
        })
        .await
    }

    async fn delete_tag_by(
        &self,
        repository: &str,
        tag: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<bool> {
        let mut tx = self
            .write_tx_scoped(Scope::Repository(repository.to_owned()))
            .await?;
        let Some(repo) = locked_repo_id(&mut tx, repository).await? else {
            return Ok(false);
        };
        let ended = end_tag(&mut tx, repo, tag, now, "deleted", actor, None).await?;
        tx.commit().await?;
        Ok(ended.is_some())
    }

    async fn tags(&self, repository: &str, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        const PAGE: &str =
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.path = $1 AND t.deleted_at IS NULL AND t.name > $2 \
             ORDER BY t.name LIMIT $3";
        pick!(
            sqlite: {
                // One row holding a JSON array instead of a row per tag: decoding rows
                // one by one dominated the time of large lists.
                let json: Option<String> =
                    sqlx::query_scalar(&format!("SELECT json_group_array(name) FROM ({PAGE})"))
                        .bind(repository)
                        .bind(last.unwrap_or(""))
                        .bind(n as i64)
                        .fetch_one(self.reader())
                        .await?;
                let mut names: Vec<String> = match json {
                    Some(j) => serde_json::from_str(&j).map_err(crate::common::corrupt)?,
                    None => Vec::new(),
                };
                // The aggregate keeps the subquery's order in practice; make sure.
                if !names.is_sorted() {
                    names.sort();
                }
                Ok(names)
            },
            postgres: Ok(sqlx::query_scalar(PAGE)
                .bind(repository)
                .bind(last.unwrap_or(""))
                .bind(n as i64)
                .fetch_all(self.reader())
                .await?),
        )
    }

    async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations \
             FROM manifests m JOIN repositories r ON r.id = m.repository_id \
             WHERE r.path = $1 AND m.subject_digest = $2 \
               AND ($3 IS NULL OR m.artifact_type = $4) \
             ORDER BY m.created_at, m.id",
        )
        .bind(repository)
        .bind(subject.as_str())
        .bind(artifact_type)
        .bind(artifact_type)
        .fetch_all(self.reader())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Referrer {
                    digest: digest(r.get(0))?,
                    media_type: r.get(1),
                    size: r.get(2),
                    artifact_type: r.get(3),
                    annotations: r.get(4),
                })
            })
            .collect()
    }

    async fn create_upload(&self, u: &Upload) -> Result<()> {
        sqlx::query(
            "INSERT INTO uploads (id, repository_path, created_at, updated_at, created_by) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&u.id)
        .bind(&u.repository_path)
        .bind(u.created_at)
        .bind(u.updated_at)
        .bind(&u.created_by)
        .execute(self.writer_scoped(Scope::Nothing))
        .await?;
        Ok(())
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>> {
        let row = sqlx::query(&format!("{UPLOAD_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        Ok(row.map(upload_row))
    }

    async fn touch_upload(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE uploads SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.writer_scoped(Scope::Nothing))
            .await?;
        Ok(())
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(self.writer_scoped(Scope::Nothing))
            .await?;
        Ok(())
    }

    async fn stale_uploads(&self, before: i64) -> Result<Vec<Upload>> {
        let rows = sqlx::query(&format!("{UPLOAD_SELECT} WHERE updated_at < $1"))
            .bind(before)
            .fetch_all(self.reader())
            .await?;
        Ok(rows.into_iter().map(upload_row).collect())
    }
}
