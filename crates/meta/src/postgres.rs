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

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use crate::{MetaError, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Advisory lock held while a user, group or project path is created or moved: path
/// uniqueness spans two tables, which no unique index can see.
pub(crate) const PATHS_LOCK: i64 = 0x6265_7274_6870_6174; // "berthpat"

/// Connections per node when the configuration does not say.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

#[derive(Clone)]
pub struct PgMeta {
    pub(crate) pool: PgPool,
    /// Connections that hold the cross-node blob lock (see `postgres_locks`): a pool
    /// of their own, so lock holders never wait on the pool their work needs.
    pub(crate) locks: PgPool,
    /// The connection that holds this node's upload claims (see `postgres_locks`).
    pub(crate) claims: std::sync::Arc<crate::postgres_locks::UploadClaims>,
}

impl PgMeta {
    /// A write transaction (READ COMMITTED; the locks of the module comment make it
    /// act alone where it must).
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        begin(&self.pool).await
    }

    /// The pool single reading statements run on.
    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// The pool single writing statements run on.
    fn writer(&self) -> &PgPool {
        &self.pool
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
        let claims = crate::postgres_locks::UploadClaims::new(opts);
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

// What the operations in `ops/` (written once, compiled here for PostgreSQL) need to
// know of this backend. See the crate's documentation.

type Db = PgMeta;
type Conn = PgConnection;
type DbRow = sqlx::postgres::PgRow;

/// `pick!(sqlite: a, postgres: b)` is `b` in this backend's copy of `ops/`: the few
/// places where the databases really differ.
macro_rules! pick {
    (sqlite: $s:expr, postgres: $p:expr $(,)?) => {
        $p
    };
}

/// Serialise path changes across nodes until the transaction ends (see
/// [`PATHS_LOCK`]); checking a path and then taking it is safe under it.
async fn lock_paths(conn: &mut Conn) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PATHS_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// The shared side of [`lock_paths`]: no path changes while it is held.
async fn lock_paths_shared(conn: &mut Conn) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(PATHS_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// The advisory lock under which cleanup claims are taken ("berthcln"), so that the
/// worker capacity holds across nodes.
async fn lock_cleanup_claims(conn: &mut Conn) -> Result<()> {
    const CLAIMS_LOCK: i64 = 0x6265_7274_6863_6c6e;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CLAIMS_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Transactions run concurrently, so they lock what they decide about.
const CONCURRENT_WRITERS: bool = true;

// The GC review queues' claims: several nodes list them at once.

/// How long a node owns the review items it listed at most. They are reviewed at
/// once, and a node that dies frees them sooner (its connection goes); this bounds
/// the wait when a connection's pid is reused.
pub(super) const CLAIM_MS: i64 = 5 * 60 * 1000;

/// A queue row no live node has claimed. The pids are read once per statement.
/// Reviews re-check everything under locks, so a claim only saves duplicate work;
/// taking over a live node's item early would be harmless, just wasteful.
const UNCLAIMED: &str = "(claimed_by IS NULL OR claimed_until < berth_now_ms() \
     OR claimed_by <> ALL (ARRAY(SELECT pid FROM pg_stat_activity)))";

/// Claim up to `$2` items of `queue` (keyed by `key`) due at `$1` for `$3` ms and
/// return their keys (PostgreSQL: several nodes list the queues at once).
pub(super) fn claim_sql(queue: &str, key: &str) -> String {
    format!(
        "UPDATE {queue} \
         SET claimed_until = berth_now_ms() + $3, claimed_by = pg_backend_pid() \
         WHERE {key} IN ( \
             SELECT {key} FROM {queue} \
             WHERE queued_at <= $1 AND {UNCLAIMED} \
             ORDER BY queued_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING {key}"
    )
}
#[path = "ops/cleanup.rs"]
mod cleanup;
#[path = "ops/gc.rs"]
mod gc;
#[path = "ops/instance.rs"]
mod instance;
#[path = "ops/org.rs"]
mod org;
#[path = "ops/registry.rs"]
mod registry;
#[path = "ops/repositories.rs"]
mod repositories;
#[path = "ops/sessions.rs"]
mod sessions;

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
