//! PostgreSQL implementation of [`crate::InstanceMeta`]. The blob lock is a
//! session-level advisory lock, held on a connection of its own for as long as the
//! guard lives, so every node's publishing and sweeping exclude each other.

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::Postgres;

use crate::instance::{InstanceMeta, MetaGuard};
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

    async fn record_login_failure(
        &self,
        keys: &[String],
        at: i64,
        forget_before: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
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
