//! [`crate::ProxyMeta`], written once for both backends (see the crate doc).

use async_trait::async_trait;
use berth_oci::Digest;
use sqlx::Row;

use super::gc::delete_blob;
use super::registry::record_blob;
use super::{Db, CONCURRENT_WRITERS};
use crate::common::digest;
use crate::gc::BlobRecord;
use crate::proxy::{ProxyManifest, ProxyMeta, ProxyPurge, ProxySettings, ProxyUsage};
use crate::Result;

#[async_trait]
impl ProxyMeta for Db {
    async fn proxy_settings(&self, ns: i64) -> Result<ProxySettings> {
        let row = sqlx::query(
            "SELECT enabled, ttl_policy_enabled, ttl_days FROM dependency_proxy_settings \
             WHERE namespace_id = $1",
        )
        .bind(ns)
        .fetch_optional(self.reader())
        .await?;
        Ok(match row {
            Some(r) => ProxySettings {
                enabled: r.get(0),
                ttl_policy_enabled: r.get(1),
                ttl_days: r.get(2),
            },
            None => ProxySettings::default(),
        })
    }

    async fn set_proxy_settings(&self, ns: i64, s: &ProxySettings) -> Result<()> {
        sqlx::query(
            "INSERT INTO dependency_proxy_settings \
             (namespace_id, enabled, ttl_policy_enabled, ttl_days) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (namespace_id) DO UPDATE SET enabled = excluded.enabled, \
             ttl_policy_enabled = excluded.ttl_policy_enabled, ttl_days = excluded.ttl_days",
        )
        .bind(ns)
        .bind(s.enabled)
        .bind(s.ttl_policy_enabled)
        .bind(s.ttl_days)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn proxy_ttl_groups(&self) -> Result<Vec<(i64, i64)>> {
        let rows = sqlx::query(
            "SELECT namespace_id, ttl_days FROM dependency_proxy_settings \
             WHERE ttl_policy_enabled ORDER BY namespace_id",
        )
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn proxy_manifest(
        &self,
        ns: i64,
        image: &str,
        reference: &str,
        now: i64,
    ) -> Result<Option<ProxyManifest>> {
        // By digest, any reference of the image that resolved to it will do.
        let row = sqlx::query(
            "SELECT reference, digest, media_type, payload, checked_at \
             FROM dependency_proxy_manifests \
             WHERE namespace_id = $1 AND image = $2 AND (reference = $3 OR digest = $3) \
             ORDER BY reference = $3 DESC LIMIT 1",
        )
        .bind(ns)
        .bind(image)
        .bind(reference)
        .fetch_optional(self.reader())
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let found: String = r.get(0);
        sqlx::query(
            "UPDATE dependency_proxy_manifests SET read_at = $1 \
             WHERE namespace_id = $2 AND image = $3 AND reference = $4",
        )
        .bind(now)
        .bind(ns)
        .bind(image)
        .bind(&found)
        .execute(self.writer())
        .await?;
        Ok(Some(ProxyManifest {
            digest: digest(r.get(1))?,
            media_type: r.get(2),
            payload: r.get(3),
            checked_at: r.get(4),
        }))
    }

    async fn put_proxy_manifest(
        &self,
        ns: i64,
        image: &str,
        reference: &str,
        m: &ProxyManifest,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO dependency_proxy_manifests (namespace_id, image, reference, digest, \
             media_type, payload, created_at, checked_at, read_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7) \
             ON CONFLICT (namespace_id, image, reference) DO UPDATE SET \
             digest = excluded.digest, media_type = excluded.media_type, \
             payload = excluded.payload, checked_at = excluded.checked_at, \
             read_at = excluded.read_at",
        )
        .bind(ns)
        .bind(image)
        .bind(reference)
        .bind(m.digest.as_str())
        .bind(&m.media_type)
        .bind(&m.payload)
        .bind(now)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn proxy_manifest_checked(
        &self,
        ns: i64,
        image: &str,
        reference: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE dependency_proxy_manifests SET checked_at = $1, read_at = $1 \
             WHERE namespace_id = $2 AND image = $3 AND reference = $4",
        )
        .bind(now)
        .bind(ns)
        .bind(image)
        .bind(reference)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn proxy_blob(&self, ns: i64, d: &Digest, now: i64) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "UPDATE dependency_proxy_blobs SET read_at = $1 \
             WHERE namespace_id = $2 AND digest = $3 RETURNING size",
        )
        .bind(now)
        .bind(ns)
        .bind(d.as_str())
        .fetch_optional(self.writer())
        .await?;
        Ok(size.map(|s| s as u64))
    }

    async fn link_proxy_blob(&self, ns: i64, d: &Digest, size: u64, now: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        record_blob(&mut tx, d, size, now).await?;
        sqlx::query(
            "INSERT INTO dependency_proxy_blobs (namespace_id, digest, size, created_at, read_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (namespace_id, digest) DO UPDATE SET read_at = excluded.read_at",
        )
        .bind(ns)
        .bind(d.as_str())
        .bind(size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn proxy_usage(&self, ns: i64) -> Result<ProxyUsage> {
        let manifests: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dependency_proxy_manifests WHERE namespace_id = $1",
        )
        .bind(ns)
        .fetch_one(self.reader())
        .await?;
        let r = sqlx::query(
            "SELECT count(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) \
             FROM dependency_proxy_blobs WHERE namespace_id = $1",
        )
        .bind(ns)
        .fetch_one(self.reader())
        .await?;
        Ok(ProxyUsage {
            manifests,
            blobs: r.get(0),
            blob_bytes: r.get(1),
        })
    }

    async fn proxy_usage_below(&self, ns: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "WITH RECURSIVE below(id) AS ( \
                 SELECT CAST($1 AS BIGINT) \
                 UNION SELECT c.id FROM namespaces c JOIN below b ON c.parent_id = b.id) \
             SELECT CAST(COALESCE(SUM(p.size), 0) AS BIGINT) FROM dependency_proxy_blobs p \
             JOIN below b ON b.id = p.namespace_id",
        )
        .bind(ns)
        .fetch_one(self.reader())
        .await?)
    }

    async fn purge_proxy_cache(&self, ns: i64, read_before: Option<i64>) -> Result<ProxyPurge> {
        let before = read_before.unwrap_or(i64::MAX);
        let mut tx = self.write_tx().await?;
        let manifests = sqlx::query(
            "DELETE FROM dependency_proxy_manifests WHERE namespace_id = $1 AND read_at < $2",
        )
        .bind(ns)
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
        let rows = sqlx::query(
            "DELETE FROM dependency_proxy_blobs WHERE namespace_id = $1 AND read_at < $2 \
             RETURNING digest, size",
        )
        .bind(ns)
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        let mut purge = ProxyPurge {
            removed: ProxyUsage {
                manifests,
                blobs: rows.len() as i64,
                blob_bytes: 0,
            },
            freed: Vec::new(),
        };
        for r in rows {
            let d: String = r.get(0);
            let size: i64 = r.get(1);
            purge.removed.blob_bytes += size;
            if CONCURRENT_WRITERS {
                // Decide under the blob's lock, as a GC review does: a push or another
                // group's cache linking it meanwhile either came first or waits.
                sqlx::query("SELECT 1 FROM blobs WHERE digest = $1 FOR UPDATE")
                    .bind(&d)
                    .execute(&mut *tx)
                    .await?;
            }
            // Blobs a repository may reach are left to garbage collection's review
            // (queued by the trigger): a push may be about to reference them.
            let needed: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM manifest_blobs WHERE digest = $1) \
                     OR EXISTS (SELECT 1 FROM repository_blobs WHERE digest = $1) \
                     OR EXISTS (SELECT 1 FROM dependency_proxy_blobs WHERE digest = $1)",
            )
            .bind(&d)
            .fetch_one(&mut *tx)
            .await?;
            if !needed {
                delete_blob(&mut tx, &d, size).await?;
                sqlx::query("DELETE FROM gc_blob_review_queue WHERE digest = $1")
                    .bind(&d)
                    .execute(&mut *tx)
                    .await?;
                purge.freed.push(BlobRecord {
                    digest: digest(d)?,
                    size,
                });
            }
        }
        tx.commit().await?;
        Ok(purge)
    }
}
