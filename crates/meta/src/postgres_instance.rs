//! PostgreSQL implementation of [`crate::InstanceMeta`]. The blob lock is a
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

use crate::instance::{InstanceMeta, MetaGuard, ReleaseClaim, UploadClaim};
use crate::{PgMeta, Result};

/// Advisory lock key of the blob lock ("berthblb").
const BLOB_LOCK: i64 = 0x6265_7274_6862_6c62;

#[async_trait]
impl InstanceMeta for PgMeta {
    async fn instance_secret(&self, name: &str, candidate: &str, now: i64) -> Result<String> {
        sqlx::query(
            "INSERT INTO instance_secrets (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM instance_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn blob_lock(&self, exclusive: bool) -> Result<Option<MetaGuard>> {
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
        Ok(Some(Box::new(taken)))
    }

    async fn claim_upload(&self, id: &str) -> Result<Option<UploadClaim>> {
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

    async fn record_login_failure(
        &self,
        keys: &[String],
        at: i64,
        forget_before: i64,
    ) -> Result<()> {
        let mut tx = crate::postgres::begin(&self.pool).await?;
        sqlx::query("DELETE FROM login_failures WHERE at < $1")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO login_failures (key, at) SELECT k, $2 FROM unnest($1::text[]) AS k",
        )
        .bind(keys)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn login_failures(&self, key: &str, since: i64) -> Result<Vec<i64>> {
        Ok(
            sqlx::query_scalar("SELECT at FROM login_failures WHERE key = $1 AND at > $2")
                .bind(key)
                .bind(since)
                .fetch_all(&self.pool)
                .await?,
        )
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
            *slot = Some(self.opts.connect().await?);
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
