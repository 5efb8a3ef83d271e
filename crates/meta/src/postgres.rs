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

use crate::cache::{ContentCache, Scope, WriteTx, Writer};
use crate::{MetaError, Result};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

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
    /// Manifest lookups, invalidated by this node's writes and by `NOTIFY
    /// berth_content` from everyone's (see `cache`).
    pub(crate) cache: std::sync::Arc<ContentCache>,
}

impl PgMeta {
    /// A write transaction (READ COMMITTED; the locks of the module comment make it
    /// act alone where it must).
    pub(crate) async fn write_tx(&self) -> Result<WriteTx<sqlx::Postgres>> {
        self.write_tx_scoped(Scope::Anything).await
    }

    /// A write transaction that changes only `scope` of what the manifest cache
    /// holds (see `cache::Scope`; `suite::postgres_nodes` checks each such
    /// declaration against the notifications the triggers send).
    pub(crate) async fn write_tx_scoped(&self, scope: Scope) -> Result<WriteTx<sqlx::Postgres>> {
        Ok(WriteTx::new(
            crate::common::begin(&self.pool).await?,
            self.cache.clone(),
            scope,
        ))
    }

    /// The pool single reading statements run on.
    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// The pool single writing statements run on; each statement invalidates the
    /// manifest cache when it has run.
    pub(crate) fn writer(&self) -> Writer<'_, sqlx::Postgres> {
        self.writer_scoped(Scope::Anything)
    }

    /// The pool, for single statements that change only `scope` of what the
    /// manifest cache holds.
    pub(crate) fn writer_scoped(&self, scope: Scope) -> Writer<'_, sqlx::Postgres> {
        Writer {
            pool: &self.pool,
            cache: &self.cache,
            scope,
        }
    }

    /// The cache's stamp, starting this node's listener on first use: the cache is
    /// only used while the listener is connected.
    pub(crate) fn cache_stamp(&self, repository: &str) -> Option<crate::cache::Stamp> {
        if self.cache.needs_listener() {
            let cache = self.cache.clone();
            let pool = self.pool.clone();
            tokio::spawn(listen_for_changes(pool, cache));
        }
        self.cache.stamp(repository)
    }

    /// A read-only transaction whose statements all see one snapshot (a page and
    /// its total, say); READ COMMITTED would give each statement its own.
    pub(crate) async fn read_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = crate::common::begin(&self.pool).await?;
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
            .after_connect(|conn, _| Box::pin(crate::postgres_locks::keep_alive(conn)))
            .connect_lazy_with(opts.clone());
        let claims = crate::postgres_locks::UploadClaims::new(opts);
        Ok(PgMeta {
            pool,
            locks,
            claims,
            cache: ContentCache::postgres(),
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
type DbKind = sqlx::Postgres;
type DbRow = sqlx::postgres::PgRow;

/// `pick!(sqlite: a, postgres: b)` is `b` in this backend's copy of `ops/`: the few
/// places where the databases really differ.
macro_rules! pick {
    (sqlite: $s:expr, postgres: $p:expr $(,)?) => {
        $p
    };
}

/// Take advisory lock `key` with `lock` (a `pg_advisory_xact_lock…` function) until
/// the transaction ends.
async fn xact_lock(conn: &mut Conn, lock: &str, key: i64) -> Result<()> {
    sqlx::query(lock).bind(key).execute(conn).await?;
    Ok(())
}

/// Serialise path changes across nodes until the transaction ends (see
/// [`PATHS_LOCK`]); checking a path and then taking it is safe under it.
async fn lock_paths(conn: &mut Conn) -> Result<()> {
    xact_lock(conn, "SELECT pg_advisory_xact_lock($1)", PATHS_LOCK).await
}

/// The shared side of [`lock_paths`]: no path changes while it is held.
async fn lock_paths_shared(conn: &mut Conn) -> Result<()> {
    xact_lock(conn, "SELECT pg_advisory_xact_lock_shared($1)", PATHS_LOCK).await
}

/// The advisory lock under which cleanup claims are taken ("berthcln"), so that the
/// worker capacity holds across nodes.
async fn lock_cleanup_claims(conn: &mut Conn) -> Result<()> {
    const CLAIMS_LOCK: i64 = 0x6265_7274_6863_6c6e;
    xact_lock(conn, "SELECT pg_advisory_xact_lock($1)", CLAIMS_LOCK).await
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

ops_modules!();

/// Follow `NOTIFY berth_content` (sent by triggers on repositories, manifests and
/// tags when a transaction that changed them commits, whoever ran it) for as long as
/// the process lives, bumping the cache's generation on each; reconnect after a
/// second when the connection is lost (the cache is off meanwhile).
async fn listen_for_changes(pool: PgPool, cache: std::sync::Arc<ContentCache>) {
    loop {
        match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen("berth_content").await {
                    tracing::warn!("manifest cache off: LISTEN berth_content failed: {e}");
                } else {
                    cache.listening(true);
                    loop {
                        // `try_recv` reports a lost connection as `None` instead of
                        // reconnecting silently (a silent reconnect could miss changes).
                        match listener.try_recv().await {
                            Ok(Some(n)) => cache.changed_elsewhere(n.payload()),
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!("manifest cache off: change listener: {e}");
                                break;
                            }
                        }
                    }
                    cache.listening(false);
                }
            }
            Err(e) => tracing::warn!("manifest cache off: cannot listen for changes: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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
}
