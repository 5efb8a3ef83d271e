//! SQLite metadata (the zero-config default), in WAL mode. Writes go through a
//! one-connection pool so they queue in-process instead of failing with SQLITE_BUSY;
//! reads use their own pool and run concurrently with the writer.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};

use crate::cache::{ContentCache, Scope, WriteTx, Writer};
use crate::instance::{MetaGuard, UploadClaim};
use crate::Result;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub struct SqliteMeta {
    pub(crate) read: SqlitePool,
    pub(crate) write: SqlitePool,
    /// Manifest lookups, invalidated by every write (see `cache`).
    pub(crate) cache: std::sync::Arc<ContentCache>,
    /// `<database>-blobs.lock`: the blob lock among this machine's processes.
    blob_lock: std::path::PathBuf,
}

impl SqliteMeta {
    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock up front, so a
    /// transaction that reads before it writes cannot fail to upgrade when another
    /// process (an admin command, say) wrote in between; it waits instead. The one
    /// place where SQLite write transactions begin.
    ///
    /// A transaction that ended badly can leave the one writer connection wedged:
    /// when SQLite itself rolls back (a full disk, SQLITE_FULL; an I/O error) the
    /// failed `COMMIT` and the `ROLLBACK` on drop both fail, and sqlx still counts a
    /// transaction that no longer exists, refusing every later `BEGIN IMMEDIATE`
    /// (InvalidSavePointStatement) until a restart. Such a connection is closed
    /// (closing ends anything SQLite still held) and the pool opens a fresh one.
    ///
    /// It begins in a task of its own, as `common::begin` does and for the same
    /// reason: sqlx 0.8's `BEGIN` is not safe to cancel. A request dropped while its
    /// `BEGIN` waits (a client that hung up) would hand the connection back while
    /// the worker still runs the `BEGIN`, leaving it inside a transaction nobody
    /// ends: later single statements then write into it unseen by readers, and the
    /// writer is lost. A spawned task runs to the end, and drops (rolls back) the
    /// transaction itself when its caller is gone.
    pub(crate) async fn write_tx(&self) -> Result<WriteTx<sqlx::Sqlite>> {
        self.write_tx_scoped(Scope::Anything).await
    }

    /// A write transaction that changes only `scope` of what the manifest cache
    /// holds (see `cache::Scope`; the PostgreSQL suite checks each such declaration
    /// against the notifications its triggers send).
    pub(crate) async fn write_tx_scoped(&self, scope: Scope) -> Result<WriteTx<sqlx::Sqlite>> {
        let pool = self.write.clone();
        let tx: Result<_> = tokio::spawn(async move {
            match pool.begin_with("BEGIN IMMEDIATE").await {
                Err(sqlx::Error::InvalidSavePointStatement) => {
                    use sqlx::Connection as _;
                    let conn = pool.acquire().await?;
                    if conn.is_in_transaction() {
                        tracing::warn!(
                            "closing the SQLite writer left inside a failed transaction"
                        );
                        // An error closing it is beside the point: it is gone either way.
                        let _ = conn.close().await;
                    }
                    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
                }
                begun => Ok(begun?),
            }
        })
        .await
        .map_err(|e| crate::MetaError::Db(sqlx::Error::Io(std::io::Error::other(e))))?;
        Ok(WriteTx::new(tx?, self.cache.clone(), scope))
    }

    /// A read transaction: one snapshot for all its statements (WAL readers get one).
    pub(crate) async fn read_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        crate::common::begin(&self.read).await
    }

    /// The pool single reading statements run on.
    fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// The pool single writing statements run on (the one writer connection); each
    /// statement invalidates the manifest cache when it has run.
    pub(crate) fn writer(&self) -> Writer<'_, sqlx::Sqlite> {
        self.writer_scoped(Scope::Anything)
    }

    /// The writer, for statements that change only `scope` of what the manifest cache
    /// holds.
    pub(crate) fn writer_scoped(&self, scope: Scope) -> Writer<'_, sqlx::Sqlite> {
        Writer {
            pool: &self.write,
            cache: &self.cache,
            scope,
        }
    }

    /// The blob lock among the processes of this machine (the server, `berth gc`):
    /// a shared or exclusive `flock` of a file next to the database, held as long as
    /// the guard (the open file) lives. The filesystem store has a lock file of its
    /// own, but an S3 store's lock is the process's only, so without this one
    /// `berth gc` beside a server on S3 could delete the bytes of a blob that a push
    /// was just linking.
    async fn take_blob_lock(&self, exclusive: bool) -> Result<MetaGuard> {
        let path = self.blob_lock.clone();
        // A blocking wait, on a thread of its own. A caller that goes away leaves the
        // task to finish; its guard is then dropped with the result, unlocking.
        let file = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            if exclusive {
                file.lock()?;
            } else {
                file.lock_shared()?;
            }
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?
        .map_err(sqlx::Error::Io)?;
        Ok(Box::new(file))
    }

    async fn take_upload_claim(&self, _id: &str) -> Result<Option<UploadClaim>> {
        // One node: its own claim on the upload is the only one there is.
        Ok(Some(UploadClaim::local()))
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
        let mut blob_lock = path.as_os_str().to_owned();
        blob_lock.push("-blobs.lock");
        Ok(SqliteMeta {
            read,
            write,
            cache: ContentCache::sqlite(path),
            blob_lock: blob_lock.into(),
        })
    }
}

// What the operations in `ops/` (written once, compiled here for SQLite) need to know
// of this backend. See the crate's documentation.

type Db = SqliteMeta;
type Conn = SqliteConnection;
type DbKind = sqlx::Sqlite;
type DbRow = sqlx::sqlite::SqliteRow;

/// `pick!(sqlite: a, postgres: b)` is `a` in this backend's copy of `ops/`: the few
/// places where the databases really differ.
macro_rules! pick {
    (sqlite: $s:expr, postgres: $p:expr $(,)?) => {
        $s
    };
}

// The locks PostgreSQL takes so that concurrent transactions of several nodes act as
// if they ran alone. SQLite runs one write transaction at a time, which already is
// that, so here they are no-ops.
use no_lock as lock_cleanup_claims;
use no_lock as lock_paths;
use no_lock as lock_paths_shared;

async fn no_lock(_: &mut Conn) -> Result<()> {
    Ok(())
}

/// One writer: no transaction is ever aborted for a deadlock, so `op` runs once.
async fn retry_deadlocks<T, F, Fut>(op: F) -> Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    op().await
}

/// One write transaction at a time: what one decides about cannot change under it.
const CONCURRENT_WRITERS: bool = false;

ops_modules!();

#[cfg(test)]
mod tests {
    crate::suite::meta_suite!(crate::suite::open_sqlite);

    fn manifest(payload: &str) -> crate::NewManifest {
        crate::suite::registry::manifest(payload, vec![], vec![])
    }

    /// Two processes on one database (a `berth` command beside the server): a tag
    /// moved or deleted by one is seen by the other's next lookup, though the other
    /// had it cached. And the cache is really used: a write that bypasses this
    /// crate (raw SQL on the pool) is not seen until something else changes.
    #[tokio::test]
    async fn a_tag_moved_by_another_process_is_seen_at_once() {
        use crate::{ManifestRef, RegistryMeta};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let server = super::SqliteMeta::open(&path).await.unwrap();
        let command = super::SqliteMeta::open(&path).await.unwrap();
        let (one, two) = (manifest("one"), manifest("two"));
        server
            .put_manifest("p/r", &one, Some("t"), 1)
            .await
            .unwrap();
        async fn tag(m: &super::SqliteMeta) -> Option<berth_oci::Digest> {
            m.manifest("p/r", ManifestRef::Tag("t"))
                .await
                .unwrap()
                .map(|x| x.digest)
        }
        assert_eq!(tag(&server).await, Some(one.digest.clone()));

        command
            .put_manifest("p/r", &two, Some("t"), 2)
            .await
            .unwrap();
        assert_eq!(tag(&server).await, Some(two.digest.clone()), "moved");
        assert!(command.delete_tag("p/r", "t", 3).await.unwrap());
        assert_eq!(tag(&server).await, None, "deleted");

        command
            .put_manifest("p/r", &one, Some("t"), 4)
            .await
            .unwrap();
        assert_eq!(tag(&server).await, Some(one.digest.clone()));
        sqlx::query("UPDATE tags SET deleted_at = 5 WHERE deleted_at IS NULL")
            .execute(&command.write)
            .await
            .unwrap();
        assert_eq!(
            tag(&server).await,
            Some(one.digest.clone()),
            "a write past the cache's hooks is not seen: the lookup was cached"
        );
        command
            .put_manifest("p/other", &two, Some("x"), 6)
            .await
            .unwrap();
        assert_eq!(
            tag(&server).await,
            None,
            "any later content write by another process invalidates everything"
        );
    }

    /// The blob lock spans two handles on one database as it spans two processes
    /// (a server and `berth gc`): each takes the lock file through its own open file.
    #[tokio::test]
    async fn the_blob_lock_spans_handles_on_one_database() {
        use crate::InstanceMeta;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let server = super::SqliteMeta::open(&path).await.unwrap();
        let command = super::SqliteMeta::open(&path).await.unwrap();
        let sweeping = command.blob_lock(true).await.unwrap();
        let publishing = server.blob_lock(false);
        tokio::pin!(publishing);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut publishing)
                .await
                .is_err(),
            "publishing went ahead while another handle swept"
        );
        drop(sweeping);
        let published = tokio::time::timeout(Duration::from_secs(10), &mut publishing)
            .await
            .expect("publishing once the sweep is over")
            .unwrap();
        let sweep = command.blob_lock(true);
        tokio::pin!(sweep);
        assert!(tokio::time::timeout(Duration::from_millis(300), &mut sweep)
            .await
            .is_err());
        drop(published);
        tokio::time::timeout(Duration::from_secs(10), &mut sweep)
            .await
            .expect("the sweep once publishing is over")
            .unwrap();
    }

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
