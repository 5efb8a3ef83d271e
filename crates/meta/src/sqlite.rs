//! SQLite metadata (the zero-config default), in WAL mode. Writes go through a
//! one-connection pool so they queue in-process instead of failing with SQLITE_BUSY;
//! reads use their own pool and run concurrently with the writer.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::Digest;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::common::digest;
use crate::{
    ManifestRef, MetaError, NewManifest, Referrer, RegistryMeta, Repository, Result,
    StoredManifest, Upload,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub struct SqliteMeta {
    pub(crate) read: SqlitePool,
    pub(crate) write: SqlitePool,
}

impl SqliteMeta {
    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front, so a
    /// transaction that reads before it writes cannot fail to upgrade when another
    /// process (an admin command, say) wrote in between; it waits instead.
    ///
    /// A transaction that ended badly can leave the one writer connection wedged:
    /// when SQLite itself rolls back (a full disk, SQLITE_FULL; an I/O error) the
    /// failed `COMMIT` and the `ROLLBACK` on drop both fail, and sqlx still counts a
    /// transaction that no longer exists, refusing every later `BEGIN IMMEDIATE`
    /// (InvalidSavePointStatement) until a restart. Such a connection is closed
    /// (closing ends anything SQLite still held) and the pool opens a fresh one.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        match self.write.begin_with("BEGIN IMMEDIATE").await {
            Err(sqlx::Error::InvalidSavePointStatement) => {
                use sqlx::Connection as _;
                let conn = self.write.acquire().await?;
                if conn.is_in_transaction() {
                    tracing::warn!("closing the SQLite writer left inside a failed transaction");
                    // An error closing it is beside the point: it is gone either way.
                    let _ = conn.close().await;
                }
                Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
            }
            begun => Ok(begun?),
        }
    }

    /// Open (creating and migrating if needed) the database at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteMeta { read, write })
    }
}

async fn repo_id(conn: &mut SqliteConnection, path: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM repositories WHERE path = ?")
            .bind(path)
            .fetch_optional(conn)
            .await?,
    )
}

/// The repository's id, creating it (attached to the project that owns its path, by
/// GitLab's longest-prefix rule) when this is its first content.
async fn ensure_repo(conn: &mut SqliteConnection, path: &str, now: i64) -> Result<i64> {
    if let Some(id) = repo_id(conn, path).await? {
        sqlx::query("UPDATE repositories SET updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        return Ok(id);
    }
    let mut project_id = None;
    for candidate in berth_core::paths::project_candidates(path) {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM projects WHERE lower(full_path) = ?")
                .bind(&candidate)
                .fetch_optional(&mut *conn)
                .await?;
        if found.is_some() {
            project_id = found;
            break;
        }
    }
    Ok(sqlx::query_scalar(
        "INSERT INTO repositories (path, project_id, created_at, updated_at) \
         VALUES (?, ?, ?, ?) RETURNING id",
    )
    .bind(path)
    .bind(project_id)
    .bind(now)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?)
}

/// End the live row of a tag, if any.
async fn end_tag(conn: &mut SqliteConnection, repo: i64, tag: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE tags SET deleted_at = ? WHERE repository_id = ? AND name = ? AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(repo)
    .bind(tag)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[async_trait]
impl RegistryMeta for SqliteMeta {
    async fn repository(&self, path: &str) -> Result<Option<Repository>> {
        let row =
            sqlx::query("SELECT id, path, project_id, created_at FROM repositories WHERE path = ?")
                .bind(path)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|r| Repository {
            id: r.get(0),
            path: r.get(1),
            project_id: r.get(2),
            created_at: r.get(3),
        }))
    }

    async fn catalog(&self, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar(
                "SELECT path FROM repositories WHERE path > ? ORDER BY path LIMIT ?",
            )
            .bind(last.unwrap_or(""))
            .bind(n as i64)
            .fetch_all(&self.read)
            .await?,
        )
    }

    async fn catalog_with_projects(
        &self,
        last: Option<&str>,
        n: u32,
    ) -> Result<Vec<(String, Option<i64>)>> {
        let rows = sqlx::query(
            "SELECT path, project_id FROM repositories WHERE path > ? ORDER BY path LIMIT ?",
        )
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn link_blob(&self, repository: &str, d: &Digest, size: u64, now: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let repo = ensure_repo(&mut tx, repository, now).await?;
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(d.as_str())
        .bind(size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(repo)
        .bind(d.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Uploaded or mounted again: a queued review starts its delay over (a new
        // link does this through its trigger; an existing link does not fire it).
        sqlx::query(
            "UPDATE gc_blob_review_queue SET queued_at = ? WHERE digest = ? AND queued_at < ?",
        )
        .bind(now)
        .bind(d.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn repository_blob(&self, repository: &str, d: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repository_blobs rb \
             JOIN repositories r ON r.id = rb.repository_id \
             JOIN blobs b ON b.digest = rb.digest \
             WHERE r.path = ? AND rb.digest = ?",
        )
        .bind(repository)
        .bind(d.as_str())
        .fetch_optional(&self.read)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn blob(&self, d: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = ?")
            .bind(d.as_str())
            .fetch_optional(&self.read)
            .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn unlink_blob(&self, repository: &str, d: &Digest) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM repository_blobs WHERE digest = ? AND repository_id = \
             (SELECT id FROM repositories WHERE path = ?)",
        )
        .bind(d.as_str())
        .bind(repository)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_manifest(
        &self,
        repository: &str,
        m: &NewManifest,
        tag: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let repo = ensure_repo(&mut tx, repository, now).await?;
        // Check reachability inside the transaction, so a concurrent delete cannot
        // slip between the check and the insert.
        for b in &m.blobs {
            let ok: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM repository_blobs WHERE repository_id = ? AND digest = ?",
            )
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
                "SELECT id FROM manifests WHERE repository_id = ? AND digest = ?",
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
                    "SELECT total_size, image_created_at FROM manifests WHERE id = ?",
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
            sqlx::query_scalar("SELECT id FROM manifests WHERE repository_id = ? AND digest = ?")
                .bind(repo)
                .bind(m.digest.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if existing.is_none() {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, \
                 subject_digest, config_digest, size, payload, annotations, created_at, \
                 image_created_at, total_size) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
                    "INSERT INTO manifest_blobs (manifest_id, digest) VALUES (?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(b.as_str())
                .execute(&mut *tx)
                .await?;
            }
            for child in child_ids {
                sqlx::query(
                    "INSERT INTO manifest_references (parent_id, child_id) VALUES (?, ?) \
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
                 WHERE repository_id = ? AND name = ? AND deleted_at IS NULL",
            )
            .bind(repo)
            .bind(tag)
            .fetch_optional(&mut *tx)
            .await?;
            if current.as_deref() != Some(m.digest.as_str()) {
                end_tag(&mut tx, repo, tag, now).await?;
                sqlx::query(
                    "INSERT INTO tags (repository_id, name, manifest_digest, created_at) \
                     VALUES (?, ?, ?, ?)",
                )
                .bind(repo)
                .bind(tag)
                .bind(m.digest.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn manifest(
        &self,
        repository: &str,
        reference: ManifestRef<'_>,
    ) -> Result<Option<StoredManifest>> {
        let row = match reference {
            ManifestRef::Digest(d) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.payload FROM manifests m \
                     JOIN repositories r ON r.id = m.repository_id \
                     WHERE r.path = ? AND m.digest = ?",
                )
                .bind(repository)
                .bind(d.as_str())
                .fetch_optional(&self.read)
                .await?
            }
            ManifestRef::Tag(t) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.payload FROM tags t \
                     JOIN repositories r ON r.id = t.repository_id \
                     JOIN manifests m ON m.repository_id = t.repository_id \
                          AND m.digest = t.manifest_digest \
                     WHERE r.path = ? AND t.name = ? AND t.deleted_at IS NULL",
                )
                .bind(repository)
                .bind(t)
                .fetch_optional(&self.read)
                .await?
            }
        };
        row.map(|r| {
            Ok(StoredManifest {
                digest: digest(r.get(0))?,
                media_type: r.get(1),
                payload: r.get(2),
            })
        })
        .transpose()
    }

    async fn delete_manifest(&self, repository: &str, d: &Digest, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some(repo) = repo_id(&mut tx, repository).await? else {
            return Ok(false);
        };
        let parent: Option<String> = sqlx::query_scalar(
            "SELECT p.digest FROM manifests c \
             JOIN manifest_references r ON r.child_id = c.id \
             JOIN manifests p ON p.id = r.parent_id \
             WHERE c.repository_id = ? AND c.digest = ? LIMIT 1",
        )
        .bind(repo)
        .bind(d.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(parent) = parent {
            return Err(MetaError::ManifestReferenced(digest(parent)?));
        }
        sqlx::query(
            "UPDATE tags SET deleted_at = ? \
             WHERE repository_id = ? AND manifest_digest = ? AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(repo)
        .bind(d.as_str())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM manifests WHERE repository_id = ? AND digest = ?")
            .bind(repo)
            .bind(d.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_tag(&self, repository: &str, tag: &str, now: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Some(repo) = repo_id(&mut tx, repository).await? else {
            return Ok(false);
        };
        let ended = end_tag(&mut tx, repo, tag, now).await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn tags(&self, repository: &str, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        // One row holding a JSON array instead of a row per tag: decoding rows one by
        // one dominated the time of large lists.
        let json: Option<String> = sqlx::query_scalar(
            "SELECT json_group_array(name) FROM ( \
                SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id \
                WHERE r.path = ? AND t.deleted_at IS NULL AND t.name > ? \
                ORDER BY t.name LIMIT ?)",
        )
        .bind(repository)
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_one(&self.read)
        .await?;
        let mut names: Vec<String> = match json {
            Some(j) => serde_json::from_str(&j).map_err(|e| MetaError::Corrupt(e.to_string()))?,
            None => Vec::new(),
        };
        // The aggregate keeps the subquery's order in practice; make sure.
        if !names.is_sorted() {
            names.sort();
        }
        Ok(names)
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
             WHERE r.path = ? AND m.subject_digest = ? \
               AND (? IS NULL OR m.artifact_type = ?) \
             ORDER BY m.created_at, m.id",
        )
        .bind(repository)
        .bind(subject.as_str())
        .bind(artifact_type)
        .bind(artifact_type)
        .fetch_all(&self.read)
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
            "INSERT INTO uploads (id, repository_path, created_at, updated_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&u.id)
        .bind(&u.repository_path)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>> {
        let row = sqlx::query(
            "SELECT id, repository_path, created_at, updated_at FROM uploads WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| Upload {
            id: r.get(0),
            repository_path: r.get(1),
            created_at: r.get(2),
            updated_at: r.get(3),
        }))
    }

    async fn touch_upload(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE uploads SET updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn stale_uploads(&self, before: i64) -> Result<Vec<Upload>> {
        let rows = sqlx::query(
            "SELECT id, repository_path, created_at, updated_at FROM uploads WHERE updated_at < ?",
        )
        .bind(before)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Upload {
                id: r.get(0),
                repository_path: r.get(1),
                created_at: r.get(2),
                updated_at: r.get(3),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    crate::suite::meta_suite!(crate::suite::open_sqlite);

    /// SQLite ends a transaction by itself on a full disk (SQLITE_FULL) or an I/O
    /// error; here it is ended behind sqlx's back with a plain `COMMIT`, which leaves
    /// the same state: the transaction's own `COMMIT` and its `ROLLBACK` on drop both
    /// fail. The writer must take the next transactions all the same.
    #[tokio::test]
    async fn a_transaction_sqlite_ended_by_itself_does_not_wedge_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let meta = super::SqliteMeta::open(&dir.path().join("meta.db"))
            .await
            .unwrap();
        let mut tx = meta.write_tx().await.unwrap();
        sqlx::raw_sql("COMMIT").execute(&mut *tx).await.unwrap();
        assert!(tx.commit().await.is_err());
        for i in 0..3 {
            let mut tx = meta.write_tx().await.unwrap();
            sqlx::query("CREATE TABLE IF NOT EXISTS after_wedge (n INTEGER)")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO after_wedge (n) VALUES (?)")
                .bind(i)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM after_wedge")
            .fetch_one(&meta.read)
            .await
            .unwrap();
        assert_eq!(n, 3);
    }
}
