//! SQLite implementation of [`crate::InstanceMeta`].

use async_trait::async_trait;

use crate::instance::{InstanceMeta, MetaGuard, UploadClaim};
use crate::{Result, SqliteMeta};

#[async_trait]
impl InstanceMeta for SqliteMeta {
    async fn instance_secret(&self, name: &str, candidate: &str, now: i64) -> Result<String> {
        sqlx::query(
            "INSERT INTO instance_secrets (name, value, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM instance_secrets WHERE name = ?")
                .bind(name)
                .fetch_one(&self.write)
                .await?,
        )
    }

    async fn blob_lock(&self, _exclusive: bool) -> Result<Option<MetaGuard>> {
        // One machine: the file store's lock file already spans its processes.
        Ok(None)
    }

    async fn claim_upload(&self, _id: &str) -> Result<Option<UploadClaim>> {
        // One node: its own claim on the upload is the only one there is.
        Ok(Some(UploadClaim::local()))
    }

    async fn record_login_failure(
        &self,
        keys: &[String],
        at: i64,
        forget_before: i64,
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM login_failures WHERE at < ?")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        for k in keys {
            sqlx::query("INSERT INTO login_failures (key, at) VALUES (?, ?)")
                .bind(k)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn login_failures(&self, key: &str, since: i64) -> Result<Vec<i64>> {
        Ok(
            sqlx::query_scalar("SELECT at FROM login_failures WHERE key = ? AND at > ?")
                .bind(key)
                .bind(since)
                .fetch_all(&self.read)
                .await?,
        )
    }
}
