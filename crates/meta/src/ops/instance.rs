//! [`crate::InstanceMeta`], written once for both backends (see the crate doc). The
//! blob lock and upload claims are each backend's own (`take_blob_lock`,
//! `take_upload_claim`): one machine needs none, several nodes need PostgreSQL's.

use async_trait::async_trait;

use super::Db;
use crate::cache::Scope;
use crate::instance::{InstanceMeta, MetaGuard, UploadClaim};
use crate::Result;

#[async_trait]
impl InstanceMeta for Db {
    async fn instance_secret(&self, name: &str, candidate: &str, now: i64) -> Result<String> {
        sqlx::query(
            "INSERT INTO instance_secrets (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM instance_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(self.writer())
                .await?,
        )
    }

    async fn blob_lock(&self, exclusive: bool) -> Result<MetaGuard> {
        self.take_blob_lock(exclusive).await
    }

    async fn claim_upload(&self, id: &str) -> Result<Option<UploadClaim>> {
        self.take_upload_claim(id).await
    }

    async fn record_login_failure(
        &self,
        keys: &[String],
        at: i64,
        forget_before: i64,
    ) -> Result<()> {
        let mut tx = self.write_tx_scoped(Scope::Nothing).await?;
        sqlx::query("DELETE FROM login_failures WHERE at < $1")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        for k in keys {
            sqlx::query("INSERT INTO login_failures (key, at) VALUES ($1, $2)")
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
            sqlx::query_scalar("SELECT at FROM login_failures WHERE key = $1 AND at > $2")
                .bind(key)
                .bind(since)
                .fetch_all(self.reader())
                .await?,
        )
    }
}
