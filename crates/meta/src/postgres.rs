//! PostgreSQL metadata, for several Berth nodes sharing one database. The same
//! behaviour as SQLite, which serialises every write with one writer; here
//! transactions run concurrently under READ COMMITTED, so each one that reads before it
//! writes takes the row locks that make it equivalent to running alone:
//!
//! - every write to a repository's content (links, manifests, tags, deletes, manifest
//!   reviews) first locks the repository's row, so pushes, tag moves and GC reviews of
//!   one repository queue behind each other as they do in SQLite;
//! - a manifest locks the blobs it references (`FOR SHARE`) and a blob review locks
//!   its blob (`FOR UPDATE`), so GC cannot free a blob a push is about to reference;
//! - creating or moving a path (users, groups, projects: unique across tables) holds
//!   one transaction-scoped advisory lock;
//! - review queues are claimed with `FOR UPDATE SKIP LOCKED`, so with several nodes
//!   each item is reviewed by exactly one of them.
//!
//! Inserts that may race (a repository's first blob, the same blob pushed twice) use
//! `ON CONFLICT`, so concurrent pushes never fail with a unique violation.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::Digest;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Row};

use crate::common::digest;
use crate::{
    ManifestRef, MetaError, NewManifest, Referrer, RegistryMeta, Repository, Result,
    StoredManifest, Upload,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Advisory lock held while a user, group or project path is created or moved: path
/// uniqueness spans two tables, which no unique index can see.
pub(crate) const PATHS_LOCK: i64 = 0x6265_7274_6870_6174; // "berthpat"

/// Connections per node when the configuration does not say.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

#[derive(Clone)]
pub struct PgMeta {
    pub(crate) pool: PgPool,
    /// Connections that hold the cross-node blob lock (see `postgres_instance`): a pool
    /// of their own, so lock holders never wait on the pool their work needs.
    pub(crate) locks: PgPool,
    /// The connection that holds this node's upload claims (see `postgres_instance`).
    pub(crate) claims: std::sync::Arc<crate::postgres_instance::UploadClaims>,
}

impl PgMeta {
    pub(crate) async fn tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        begin(&self.pool).await
    }

    /// A read-only transaction whose statements all see one snapshot (a page and
    /// its total, say); READ COMMITTED would give each statement its own.
    pub(crate) async fn read_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = begin(&self.pool).await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Connect to `url` (`postgres://…`) and bring the schema up to date. Several
    /// nodes may start at once: sqlx runs migrations under an advisory lock.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        let locks = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            .connect_lazy_with(opts.clone());
        let claims = crate::postgres_instance::UploadClaims::new(opts);
        Ok(PgMeta {
            pool,
            locks,
            claims,
        })
    }

    /// The pool, for callers that need raw access (tests, benchmarks, migration tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Begin a transaction on `pool`, in a task of its own. sqlx 0.8's PostgreSQL `BEGIN`
/// is not safe to cancel: a request dropped while its `BEGIN` is in flight (a client
/// that went away, a browser that aborted a fetch) hands the connection back to the
/// pool inside a transaction nobody ends, and whoever takes that connection next runs
/// in it. A spawned task always runs to the end; when its caller is gone the finished
/// transaction is dropped there, which rolls it back.
pub(crate) async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let pool = pool.clone();
    Ok(tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))??)
}

/// Run `op` (one transaction) again when PostgreSQL aborted it to break a deadlock.
/// Deleting manifests queues their blobs for review, one row per digest shared by
/// every repository; two nodes deleting manifests that share layers may queue them
/// in opposite orders, and PostgreSQL then aborts one of the two transactions.
pub(crate) async fn retry_deadlocks<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    const ATTEMPTS: u32 = 8;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Err(MetaError::Db(sqlx::Error::Database(e)))
                if attempt < ATTEMPTS
                    && matches!(e.code().as_deref(), Some("40P01") | Some("40001")) =>
            {
                tracing::debug!(attempt, "transaction aborted by PostgreSQL ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
            }
            outcome => return outcome,
        }
    }
}

/// Lock a repository's row for the rest of the transaction (see the module comment).
pub(crate) async fn lock_repo(conn: &mut PgConnection, id: i64) -> Result<bool> {
    let hit: Option<i64> =
        sqlx::query_scalar("SELECT id FROM repositories WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(hit.is_some())
}

/// The repository's id, locked for the transaction, creating it (attached to the
/// project that owns its path, by GitLab's longest-prefix rule) when this is its first
/// content.
async fn ensure_repo(conn: &mut PgConnection, path: &str, now: i64) -> Result<i64> {
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
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(PATHS_LOCK)
        .execute(&mut *conn)
        .await?;
    let mut project_id = None;
    for candidate in berth_core::paths::project_candidates(path) {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM projects WHERE lower(full_path) = $1")
                .bind(&candidate)
                .fetch_optional(&mut *conn)
                .await?;
        if found.is_some() {
            project_id = found;
            break;
        }
    }
    let created: Option<i64> = sqlx::query_scalar(
        "INSERT INTO repositories (path, project_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (path) DO NOTHING RETURNING id",
    )
    .bind(path)
    .bind(project_id)
    .bind(now)
    .bind(now)
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

/// The id of an existing repository, locked for the transaction.
async fn locked_repo_id(conn: &mut PgConnection, path: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM repositories WHERE path = $1 FOR UPDATE")
            .bind(path)
            .fetch_optional(conn)
            .await?,
    )
}

/// End the live row of a tag, if any.
async fn end_tag(conn: &mut PgConnection, repo: i64, tag: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE tags SET deleted_at = $1 WHERE repository_id = $2 AND name = $3 AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(repo)
    .bind(tag)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[async_trait]
impl RegistryMeta for PgMeta {
    async fn repository(&self, path: &str) -> Result<Option<Repository>> {
        let row = sqlx::query(
            "SELECT id, path, project_id, created_at FROM repositories WHERE path = $1",
        )
        .bind(path)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Repository {
            id: r.get(0),
            path: r.get(1),
            project_id: r.get(2),
            created_at: r.get(3),
        }))
    }

    async fn catalog(&self, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT path FROM repositories WHERE path > $1 ORDER BY path LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await?)
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
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn link_blob(&self, repository: &str, d: &Digest, size: u64, now: i64) -> Result<()> {
        let mut tx = self.tx().await?;
        let repo = ensure_repo(&mut tx, repository, now).await?;
        // Wait out a GC review that is removing this blob, so it is recorded anew
        // below instead of the link failing its foreign key.
        sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 FOR KEY SHARE")
            .bind(d.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(d.as_str())
        .bind(size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES ($1, $2, $3) \
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
            "UPDATE gc_blob_review_queue SET queued_at = $1 WHERE digest = $2 AND queued_at < $3",
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
             WHERE r.path = $1 AND rb.digest = $2",
        )
        .bind(repository)
        .bind(d.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn blob(&self, d: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(d.as_str())
            .fetch_optional(&self.pool)
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
        .execute(&self.pool)
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
        let mut tx = self.tx().await?;
        let repo = ensure_repo(&mut tx, repository, now).await?;
        // Check reachability inside the transaction, and lock the blobs (GC reviews
        // lock them for update), so a concurrent delete cannot slip between the
        // check and the insert. Only the blob rows: a review deletes the links after
        // locking the blob, so a lock on a link here could close a deadlock cycle.
        for b in &m.blobs {
            let ok: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
                 WHERE rb.repository_id = $1 AND rb.digest = $2 FOR SHARE OF b",
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
            if current.as_deref() != Some(m.digest.as_str()) {
                end_tag(&mut tx, repo, tag, now).await?;
                sqlx::query(
                    "INSERT INTO tags (repository_id, name, manifest_digest, created_at) \
                     VALUES ($1, $2, $3, $4)",
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
                     WHERE r.path = $1 AND m.digest = $2",
                )
                .bind(repository)
                .bind(d.as_str())
                .fetch_optional(&self.pool)
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
                .fetch_optional(&self.pool)
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
        retry_deadlocks(move || async move {
            let mut tx = self.tx().await?;
            let Some(repo) = locked_repo_id(&mut tx, repository).await? else {
                return Ok(false);
            };
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
                "UPDATE tags SET deleted_at = $1 \
                 WHERE repository_id = $2 AND manifest_digest = $3 AND deleted_at IS NULL",
            )
            .bind(now)
            .bind(repo)
            .bind(d.as_str())
            .execute(&mut *tx)
            .await?;
            let done =
                sqlx::query("DELETE FROM manifests WHERE repository_id = $1 AND digest = $2")
                    .bind(repo)
                    .bind(d.as_str())
                    .execute(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn delete_tag(&self, repository: &str, tag: &str, now: i64) -> Result<bool> {
        let mut tx = self.tx().await?;
        let Some(repo) = locked_repo_id(&mut tx, repository).await? else {
            return Ok(false);
        };
        let ended = end_tag(&mut tx, repo, tag, now).await?;
        tx.commit().await?;
        Ok(ended)
    }

    async fn tags(&self, repository: &str, last: Option<&str>, n: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id \
             WHERE r.path = $1 AND t.deleted_at IS NULL AND t.name > $2 \
             ORDER BY t.name LIMIT $3",
        )
        .bind(repository)
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await?)
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
        .fetch_all(&self.pool)
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
            "INSERT INTO uploads (id, repository_path, created_at, updated_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&u.id)
        .bind(&u.repository_path)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>> {
        let row = sqlx::query(
            "SELECT id, repository_path, created_at, updated_at FROM uploads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| Upload {
            id: r.get(0),
            repository_path: r.get(1),
            created_at: r.get(2),
            updated_at: r.get(3),
        }))
    }

    async fn touch_upload(&self, id: &str, now: i64) -> Result<()> {
        sqlx::query("UPDATE uploads SET updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn stale_uploads(&self, before: i64) -> Result<Vec<Upload>> {
        let rows = sqlx::query(
            "SELECT id, repository_path, created_at, updated_at FROM uploads WHERE updated_at < $1",
        )
        .bind(before)
        .fetch_all(&self.pool)
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
    crate::suite::meta_suite!(crate::suite::open_postgres);

    /// Several nodes: each `PgMeta` here is one node's pool on the same database.
    mod nodes {
        use std::collections::BTreeSet;

        use berth_oci::Digest;

        use crate::testing::TestDatabase;
        use crate::{CleanupMeta, GcMeta, InstanceMeta, NewManifest, PgMeta, RegistryMeta};

        async fn nodes(test: &str, n: usize) -> Option<(TestDatabase, Vec<PgMeta>)> {
            let db = TestDatabase::create(test).await?;
            let mut metas = Vec::new();
            for _ in 0..n {
                metas.push(PgMeta::connect(db.url(), 4).await.unwrap());
            }
            Some((db, metas))
        }

        fn manifest(payload: &str, blobs: Vec<Digest>) -> NewManifest {
            NewManifest {
                digest: Digest::sha256_of(payload.as_bytes()),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                payload: payload.as_bytes().to_vec(),
                blobs,
                children: vec![],
                subject: None,
                config: None,
                artifact_type: None,
                image_created_at: None,
                total_size: 0,
                annotations: None,
            }
        }

        /// A request dropped at any point while it begins a transaction, as hyper
        /// drops the handler of a client that went away, leaves its connection out
        /// of any transaction. (sqlx's own `begin` does not when the cut falls while
        /// `BEGIN` is in flight: the connection goes back to the pool inside a
        /// transaction, and its next user's statements run, and stay, in it.)
        #[tokio::test]
        async fn a_cancelled_begin_leaves_no_connection_in_a_transaction() {
            let Some(db) = TestDatabase::create("cancelled begin").await else {
                return;
            };
            // One connection, handed out without a test query, so the first poll of
            // a `begin` already sends `BEGIN`.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect(db.url())
                .await
                .unwrap();
            let observer = sqlx::PgPool::connect(db.url()).await.unwrap();
            for steps in 1..6 {
                {
                    let mut request = std::pin::pin!(super::super::begin(&pool));
                    for _ in 0..steps {
                        if futures::poll!(request.as_mut()).is_ready() {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                }
                // The connection is back in the pool once it can be taken again.
                drop(pool.acquire().await.unwrap());
                let stuck: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND state = 'idle in transaction'",
                )
                .fetch_one(&observer)
                .await
                .unwrap();
                assert_eq!(
                    stuck, 0,
                    "cut after {steps} steps: left inside a transaction"
                );
            }
        }

        #[tokio::test]
        async fn an_upload_is_claimed_by_one_node_at_a_time() {
            let Some((_db, metas)) = nodes("upload claims", 2).await else {
                return;
            };
            let (a, b) = (&metas[0], &metas[1]);
            let held = a.claim_upload("u1").await.unwrap().expect("a free upload");
            assert!(
                b.claim_upload("u1").await.unwrap().is_none(),
                "held by the other node"
            );
            let other = b.claim_upload("u2").await.unwrap();
            assert!(other.is_some(), "another upload is free");
            drop(held);
            // Released by a task of its own, at once.
            let mut again = None;
            for _ in 0..500 {
                again = b.claim_upload("u1").await.unwrap();
                if again.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(again.is_some(), "a dropped claim is released");
            assert!(a.claim_upload("u1").await.unwrap().is_none());
            assert!(a.claim_upload("u2").await.unwrap().is_none());
        }

        /// A blob queued again (a manifest that referenced it deleted, in another
        /// transaction) while its review runs is either deleted by that review or
        /// left queued for the next one: never unreferenced and forgotten.
        #[tokio::test]
        async fn a_blob_queued_again_during_its_review_is_not_forgotten() {
            let Some((_db, metas)) = nodes("requeued during review", 1).await else {
                return;
            };
            let m = &metas[0];
            let layer = Digest::sha256_of(b"requeued layer");
            m.link_blob("g/p/app", &layer, 5, 1).await.unwrap();
            m.put_manifest("g/p/app", &manifest("m", vec![layer.clone()]), Some("t"), 1)
                .await
                .unwrap();
            // The manifest's reference goes, in a transaction still open.
            let mut deleting = m.pool.begin().await.unwrap();
            sqlx::query("DELETE FROM manifest_blobs WHERE digest = $1")
                .bind(layer.as_str())
                .execute(&mut *deleting)
                .await
                .unwrap();
            let review = tokio::spawn({
                let (m, d) = (m.clone(), layer.clone());
                async move { m.review_blob(&d).await.unwrap() }
            });
            // The review waits for the deletion's locks …
            let mut waited = false;
            for _ in 0..1000 {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                .fetch_one(&m.pool)
                .await
                .unwrap();
                if waiting > 0 {
                    waited = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(waited, "the review never waited for the deletion");
            // … which then commits.
            deleting.commit().await.unwrap();
            let removed = review.await.unwrap();
            let queued: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM gc_blob_review_queue WHERE digest = $1")
                    .bind(layer.as_str())
                    .fetch_one(&m.pool)
                    .await
                    .unwrap();
            assert!(
                removed.is_some() || queued == 1,
                "the blob was neither deleted ({removed:?}) nor left queued ({queued})"
            );
        }

        #[tokio::test]
        async fn concurrent_pushes_of_one_tag_and_blob_all_succeed() {
            let Some((_db, metas)) = nodes("concurrent pushes", 3).await else {
                return;
            };
            let layer = Digest::sha256_of(b"shared layer");
            let mut tasks = Vec::new();
            for (i, m) in metas.into_iter().enumerate() {
                let layer = layer.clone();
                tasks.push(tokio::spawn(async move {
                    for round in 0..20 {
                        // The same new repository, blob and tag from every node at once.
                        m.link_blob("g/p/app", &layer, 5, round).await.unwrap();
                        let man = manifest(&format!("{i}-{round}"), vec![layer.clone()]);
                        m.put_manifest("g/p/app", &man, Some("latest"), round)
                            .await
                            .unwrap();
                    }
                    m
                }));
            }
            let mut metas = Vec::new();
            for t in tasks {
                metas.push(t.await.unwrap());
            }
            // One live row for the tag, whatever the interleaving.
            assert_eq!(
                metas[0].tags("g/p/app", None, 10).await.unwrap(),
                ["latest"]
            );
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM tags WHERE name = 'latest' AND deleted_at IS NULL",
            )
            .fetch_one(&metas[1].pool)
            .await
            .unwrap();
            assert_eq!(live, 1);
            assert_eq!(metas[2].catalog(None, 10).await.unwrap(), ["g/p/app"]);
        }

        #[tokio::test]
        async fn each_review_and_cleanup_claim_goes_to_one_node() {
            let Some((_db, metas)) = nodes("review claims", 2).await else {
                return;
            };
            // 60 untagged manifests and 60 unreferenced blobs waiting for review.
            for i in 0..60 {
                let d = Digest::sha256_of(format!("blob {i}").as_bytes());
                metas[0].link_blob("g/p/app", &d, 1, 1).await.unwrap();
                let man = manifest(&format!("m{i}"), vec![]);
                metas[0]
                    .put_manifest("g/p/app", &man, None, 1)
                    .await
                    .unwrap();
            }
            let (a, b) = (&metas[0], &metas[1]);
            let far = i64::MAX;
            let (mut ma, mut mb) = (Vec::new(), Vec::new());
            // Both nodes list in small batches at the same time, as their workers do.
            loop {
                let (x, y) = tokio::join!(
                    a.due_manifest_reviews(far, 7),
                    b.due_manifest_reviews(far, 7)
                );
                let (x, y) = (x.unwrap(), y.unwrap());
                if x.is_empty() && y.is_empty() {
                    break;
                }
                ma.extend(x);
                mb.extend(y);
            }
            let sa: BTreeSet<_> = ma.iter().collect();
            let sb: BTreeSet<_> = mb.iter().collect();
            assert!(sa.is_disjoint(&sb), "a manifest was claimed twice");
            assert_eq!(sa.len() + sb.len(), 60);
            assert_eq!(sa.len(), ma.len());
            assert!(!ma.is_empty() && !mb.is_empty(), "one node got everything");
            // Each node reviews what it claimed: every manifest is deleted once.
            let mut deleted = 0;
            for (node, ids) in [(a, &ma), (b, &mb)] {
                for id in ids {
                    if node.review_manifest(*id, true).await.unwrap()
                        == crate::ManifestReview::Deleted
                    {
                        deleted += 1;
                    }
                }
            }
            assert_eq!(deleted, 60);

            let (x, y) = tokio::join!(a.due_blob_reviews(far, 100), b.due_blob_reviews(far, 100));
            let (x, y) = (x.unwrap(), y.unwrap());
            let sx: BTreeSet<_> = x.iter().collect();
            assert!(
                y.iter().all(|d| !sx.contains(d)),
                "a blob was claimed twice"
            );
            assert_eq!(x.len() + y.len(), 60);
            let (mut freed_a, mut freed_b) = (0, 0);
            for d in &x {
                freed_a += a.review_blob(d).await.unwrap().is_some() as usize;
            }
            for d in &y {
                freed_b += b.review_blob(d).await.unwrap().is_some() as usize;
            }
            assert_eq!(freed_a + freed_b, 60);
            assert_eq!(a.review_queue_lengths().await.unwrap(), (0, 0));

            // A queued cleanup run is claimed by exactly one of two racing nodes, even
            // with room for two workers; and with room for one, two nodes racing over
            // two queued repositories get one claim between them.
            let mut repos = Vec::new();
            for path in ["g/p/app", "g/p/web"] {
                let d = Digest::sha256_of(path.as_bytes());
                a.link_blob(path, &d, 1, 1).await.unwrap();
                repos.push(a.repository(path).await.unwrap().unwrap().id);
            }
            for round in 0..20 {
                let (queued, capacity) = if round % 2 == 0 {
                    (&repos[..1], 2)
                } else {
                    (&repos[..], 1)
                };
                sqlx::query(
                    "UPDATE repositories SET cleanup_status = CASE WHEN id = ANY($1) \
                       THEN 'cleanup_scheduled' ELSE 'cleanup_unscheduled' END, \
                     cleanup_lease_until = NULL",
                )
                .bind(queued)
                .execute(&a.pool)
                .await
                .unwrap();
                let (x, y) = tokio::join!(
                    a.claim_next_cleanup(5, 100, capacity),
                    b.claim_next_cleanup(5, 100, capacity)
                );
                let (x, y) = (x.unwrap(), y.unwrap());
                assert!(
                    x.is_some() ^ y.is_some(),
                    "round {round}: {x:?} and {y:?} with capacity {capacity}"
                );
            }
        }
    }
}
