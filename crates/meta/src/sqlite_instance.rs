//! SQLite implementation of [`crate::InstanceMeta`].

use async_trait::async_trait;

use crate::instance::{InstanceMeta, MetaGuard};
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
}
