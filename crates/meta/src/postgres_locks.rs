//! PostgreSQL's blob lock and upload claims (see [`crate::InstanceMeta`]). The blob lock is a
//! session-level advisory lock, held on a connection of its own for as long as the
//! guard lives, so every node's publishing and sweeping exclude each other. Upload
//! claims are session-level advisory locks too, all held on one connection per node
//! (a node may write to many uploads at once, each for as long as a PATCH streams):
//! a node that dies loses its connection, and with it every claim it held.

use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, Postgres};
use tokio::sync::Mutex;

use crate::instance::{MetaGuard, ReleaseClaim, UploadClaim};
use crate::{PgMeta, Result};

/// Advisory lock key of the blob lock ("berthblb").
const BLOB_LOCK: i64 = 0x6265_7274_6862_6c62;

impl PgMeta {
    /// The blob lock: a session-level advisory lock on a connection of its own.
    pub(crate) async fn take_blob_lock(&self, exclusive: bool) -> Result<MetaGuard> {
        let locks = self.locks.clone();
        // Taken in a task of its own: if the request that waits for it goes away, the
        // task still finishes and its guard, dropped there, unlocks. A lock taken on a
        // connection whose waiter was cancelled mid-query would otherwise go back to
        // the pool still held.
        let taken = tokio::spawn(async move {
            let mut conn = locks.acquire().await?;
            let sql = if exclusive {
                "SELECT pg_advisory_lock($1)"
            } else {
                "SELECT pg_advisory_lock_shared($1)"
            };
            sqlx::query(sql).bind(BLOB_LOCK).execute(&mut *conn).await?;
            Ok::<_, sqlx::Error>(PgLock {
                conn: Some(conn),
                exclusive,
            })
        })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))??;
        Ok(Box::new(taken))
    }

    /// An upload claim: a session-level advisory lock on this node's claims connection.
    pub(crate) async fn take_upload_claim(&self, id: &str) -> Result<Option<UploadClaim>> {
        let key = upload_key(id);
        let claims = self.claims.clone();
        // In a task of its own, like the blob lock: a claim taken for a request that
        // went away meanwhile is dropped, and so released, in the task.
        let claimed = tokio::spawn(async move {
            if claims.run(LOCK, key).await? {
                Ok::<_, sqlx::Error>(Some(PgUploadClaim {
                    claims,
                    key,
                    held: true,
                }))
            } else {
                Ok(None)
            }
        })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))??;
        Ok(claimed.map(|c| UploadClaim::new(Box::new(c))))
    }
}

struct PgLock {
    conn: Option<PoolConnection<Postgres>>,
    exclusive: bool,
}

impl Drop for PgLock {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let sql = if self.exclusive {
            "SELECT pg_advisory_unlock($1)"
        } else {
            "SELECT pg_advisory_unlock_shared($1)"
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if sqlx::query(sql)
                        .bind(BLOB_LOCK)
                        .execute(&mut *conn)
                        .await
                        .is_err()
                    {
                        // Closing the session releases whatever it still holds.
                        drop(conn.detach());
                    }
                });
            }
            // No runtime to unlock on: closing the session releases the lock.
            Err(_) => drop(conn.detach()),
        }
    }
}

/// The advisory lock key of upload `id`: 64 bits of a hash, in the key space of the
/// blob lock and path lock, whose fixed keys it meets once in 2^63 uploads.
fn upload_key(id: &str) -> i64 {
    let h = Sha256::digest(format!("berth upload {id}").as_bytes());
    i64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// The connection that holds this node's upload claims, opened when first needed and
/// again after it failed (which released every claim it held).
pub(crate) struct UploadClaims {
    opts: PgConnectOptions,
    conn: Mutex<Option<PgConnection>>,
}

impl UploadClaims {
    pub(crate) fn new(opts: PgConnectOptions) -> Arc<Self> {
        Arc::new(UploadClaims {
            opts,
            conn: Mutex::new(None),
        })
    }

    /// Run a lock function (`sql` with the key as `$1`) and return its answer.
    async fn run(&self, sql: &str, key: i64) -> std::result::Result<bool, sqlx::Error> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            let mut conn = self.opts.connect().await?;
            keep_alive(&mut conn).await?;
            *slot = Some(conn);
        }
        let conn = slot.as_mut().expect("connected above");
        match sqlx::query_scalar(sql).bind(key).fetch_one(conn).await {
            Ok(answer) => Ok(answer),
            Err(e) => {
                // A broken session has released its claims; start afresh.
                *slot = None;
                Err(e)
            }
        }
    }
}

/// Have the server probe this session's connection once it has been idle for 30 s,
/// for the sessions that hold locks and claims. A node that dies cleanly closes its
/// connections and the server releases their locks at once; one that vanishes (power
/// lost, network cut) sends nothing, and without probes the server would hold its
/// locks until the operating system's keepalive gives up, two hours by default. With
/// them, about a minute (30 s idle, then 3 unanswered probes 10 s apart). Set in the
/// session rather than as start-up options, which connection poolers may refuse.
pub(crate) async fn keep_alive(conn: &mut PgConnection) -> std::result::Result<(), sqlx::Error> {
    for sql in [
        "SET tcp_keepalives_idle = 30",
        "SET tcp_keepalives_interval = 10",
        "SET tcp_keepalives_count = 3",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

const LOCK: &str = "SELECT pg_try_advisory_lock($1)";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

struct PgUploadClaim {
    claims: Arc<UploadClaims>,
    key: i64,
    held: bool,
}

impl PgUploadClaim {
    /// Unlock in a task of its own, which a cancelled caller cannot cut short.
    fn unlock(&mut self) -> tokio::task::JoinHandle<()> {
        self.held = false;
        let (claims, key) = (self.claims.clone(), self.key);
        tokio::spawn(async move {
            if let Err(e) = claims.run(UNLOCK, key).await {
                tracing::warn!(error = %e, "releasing an upload claim failed; its session was closed instead");
            }
        })
    }
}

#[async_trait]
impl ReleaseClaim for PgUploadClaim {
    async fn release(mut self: Box<Self>) {
        let _ = self.unlock().await;
    }
}

impl Drop for PgUploadClaim {
    fn drop(&mut self) {
        // Without a runtime the process is ending, and its session with it.
        if self.held && tokio::runtime::Handle::try_current().is_ok() {
            self.unlock();
        }
    }
}
