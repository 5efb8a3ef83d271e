//! The dependency proxy's metadata: per group, its settings, the manifests and blobs
//! it cached from upstream registries, and when each was last pulled.

use async_trait::async_trait;
use berth_oci::Digest;

use crate::gc::BlobRecord;
use crate::Result;

/// A group's dependency proxy settings (GitLab's defaults: on, TTL policy off, 90 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxySettings {
    pub enabled: bool,
    pub ttl_policy_enabled: bool,
    pub ttl_days: i64,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            enabled: true,
            ttl_policy_enabled: false,
            ttl_days: 90,
        }
    }
}

/// A cached manifest, under the reference it was pulled by (a tag or a digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyManifest {
    pub digest: Digest,
    pub media_type: String,
    pub payload: Vec<u8>,
    /// When the upstream last confirmed this reference (Unix ms).
    pub checked_at: i64,
}

/// What a group's cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyUsage {
    pub manifests: i64,
    pub blobs: i64,
    /// Bytes of the cached blobs (manifests are in the database, and small).
    pub blob_bytes: i64,
}

/// What a purge removed: the counts, and the blobs no longer referenced by anything,
/// whose metadata is gone and whose bytes are pending deletion (for the caller).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyPurge {
    pub removed: ProxyUsage,
    pub freed: Vec<BlobRecord>,
}

#[async_trait]
pub trait ProxyMeta: Send + Sync {
    /// The group's settings (the defaults when never set).
    async fn proxy_settings(&self, namespace_id: i64) -> Result<ProxySettings>;
    async fn set_proxy_settings(&self, namespace_id: i64, settings: &ProxySettings) -> Result<()>;
    /// Groups whose TTL policy is on, with their TTL in days.
    async fn proxy_ttl_groups(&self) -> Result<Vec<(i64, i64)>>;

    /// The cached manifest of `image` under `reference` (a tag, or a digest: then any
    /// cached manifest of the image with that digest), marked as pulled at `now`.
    async fn proxy_manifest(
        &self,
        namespace_id: i64,
        image: &str,
        reference: &str,
        now: i64,
    ) -> Result<Option<ProxyManifest>>;
    /// Cache (or replace) the manifest of `image` under `reference`, checked and
    /// pulled at `now`.
    async fn put_proxy_manifest(
        &self,
        namespace_id: i64,
        image: &str,
        reference: &str,
        manifest: &ProxyManifest,
        now: i64,
    ) -> Result<()>;
    /// The upstream confirmed the cached manifest under `reference` at `now`.
    async fn proxy_manifest_checked(
        &self,
        namespace_id: i64,
        image: &str,
        reference: &str,
        now: i64,
    ) -> Result<()>;

    /// Size of a blob the group's cache holds, marked as pulled at `now`.
    async fn proxy_blob(&self, namespace_id: i64, digest: &Digest, now: i64)
        -> Result<Option<u64>>;
    /// Record a verified, published blob (in `blobs` when new) in the group's cache.
    async fn link_proxy_blob(
        &self,
        namespace_id: i64,
        digest: &Digest,
        size: u64,
        now: i64,
    ) -> Result<()>;

    async fn proxy_usage(&self, namespace_id: i64) -> Result<ProxyUsage>;
    /// Cached bytes of the group and every group below it.
    async fn proxy_usage_below(&self, namespace_id: i64) -> Result<i64>;
    /// Remove the group's cached items (only those last pulled before `read_before`,
    /// when given), in one transaction; blobs nothing else references leave metadata
    /// too and are returned for their bytes to be deleted.
    async fn purge_proxy_cache(
        &self,
        namespace_id: i64,
        read_before: Option<i64>,
    ) -> Result<ProxyPurge>;
}
