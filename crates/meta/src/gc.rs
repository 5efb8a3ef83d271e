//! Garbage collection over metadata: reviewing queued manifests and blobs (online GC),
//! a full mark of what is reachable (offline GC), and storage accounting.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use berth_oci::Digest;

use crate::Result;

/// What reviewing one queued manifest decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestReview {
    /// Still referenced (tagged, an index child, a live subject's referrer) or kept
    /// because untagged manifests are kept; dropped from the queue.
    Kept,
    /// Deleted; its blobs and children were queued in turn.
    Deleted,
    /// Already gone.
    Gone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    pub digest: Digest,
    pub size: i64,
}

/// What garbage collection freed: manifests and blobs deleted, bytes of those blobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcFreed {
    pub manifests: i64,
    pub blobs: i64,
    pub bytes: i64,
}

/// The hour (Unix ms) `at` falls in, as [`GcMeta::record_gc_freed`] counts.
pub fn gc_hour(at: i64) -> i64 {
    at - at.rem_euclid(3_600_000)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub manifests_deleted: u64,
    pub blobs_deleted: Vec<BlobRecord>,
}

#[async_trait]
pub trait GcMeta: Send + Sync {
    /// Queued manifests whose review is due (queued at or before `before`).
    async fn due_manifest_reviews(&self, before: i64, limit: i64) -> Result<Vec<i64>>;
    /// Review these manifests, a few dozen per transaction (outcomes in this order;
    /// a batch is decided on the state it finds, so a manifest that another of the
    /// batch needed until it was deleted is kept and queued again): each is deleted
    /// when nothing references it (no live tag, no index lists it, not a referrer of
    /// a present subject) and untagged manifests may go, and dropped from the queue
    /// either way. A manifest that a tag left after `keep_since` (now less the review
    /// delay) is kept for a restore and queued again for when that window ends. A
    /// transaction locks its manifests' repositories first, in id order: one lock
    /// hand-over and one commit for its batch, however busy a repository is with
    /// pushes.
    async fn review_manifests(
        &self,
        manifest_ids: &[i64],
        delete_untagged: bool,
        keep_since: i64,
    ) -> Result<Vec<ManifestReview>>;
    /// [`GcMeta::review_manifests`] for one manifest.
    async fn review_manifest(
        &self,
        manifest_id: i64,
        delete_untagged: bool,
        keep_since: i64,
    ) -> Result<ManifestReview> {
        let reviews = self
            .review_manifests(&[manifest_id], delete_untagged, keep_since)
            .await?;
        Ok(reviews.into_iter().next().unwrap_or(ManifestReview::Gone))
    }
    /// Blobs whose metadata is gone and whose bytes still await deletion (a crash may
    /// have interrupted it).
    async fn pending_blob_deletions(&self, limit: i64) -> Result<Vec<BlobRecord>>;
    /// The bytes of a pending deletion are gone (or the blob is live again).
    async fn clear_blob_deletion(&self, digest: &Digest) -> Result<()>;
    /// Whether a deletion of `digest`'s bytes is still pending: with several nodes,
    /// another one may have finished it since it was listed.
    async fn blob_deletion_pending(&self, digest: &Digest) -> Result<bool>;
    /// [`GcMeta::blob_deletion_pending`] for many blobs at once: those of `digests`
    /// whose deletion is still pending.
    async fn blob_deletions_pending(&self, digests: &[Digest]) -> Result<HashSet<Digest>>;
    /// Those of `digests` that metadata knows as blobs.
    async fn blobs_known(&self, digests: &[Digest]) -> Result<HashSet<Digest>>;
    /// [`GcMeta::clear_blob_deletion`] for many blobs, in one statement.
    async fn clear_blob_deletions(&self, digests: &[Digest]) -> Result<()>;
    /// Queued blobs whose review is due.
    async fn due_blob_reviews(&self, before: i64, limit: i64) -> Result<Vec<Digest>>;
    /// Review these blobs, a batch per transaction: each that nothing references (no
    /// manifest, no dependency proxy cache) is removed from every repository and from
    /// metadata and returned (its bytes are for the caller to delete, and a pending
    /// deletion is recorded for them); each reviewed is dropped from the queue either
    /// way. With several writers (PostgreSQL), a blob another transaction holds
    /// locked (a push referencing it, another node's review) is skipped and stays
    /// queued: whoever holds it queues it again or reviews it.
    async fn review_blobs(&self, digests: &[Digest]) -> Result<Vec<BlobRecord>>;
    /// [`GcMeta::review_blobs`] for one blob.
    async fn review_blob(&self, digest: &Digest) -> Result<Option<BlobRecord>> {
        let removed = self.review_blobs(std::slice::from_ref(digest)).await?;
        Ok(removed.into_iter().next())
    }
    /// A blob was just read or mounted: push its review back (a push that checked
    /// the blob exists is about to reference it).
    async fn postpone_blob_review(&self, digest: &Digest, now: i64) -> Result<()>;
    /// Items waiting in the review queues (manifests, blobs).
    async fn review_queue_lengths(&self) -> Result<(i64, i64)>;
    /// Add what one round of garbage collection freed at `now`, so every node's
    /// admin page shows the installation's figures (counted by the hour).
    async fn record_gc_freed(&self, freed: &GcFreed, now: i64) -> Result<()>;
    /// What garbage collection freed since `since` (the start of its hour).
    async fn gc_freed_since(&self, since: i64) -> Result<GcFreed>;

    /// Offline GC: delete every manifest nothing reachable needs (with
    /// `delete_untagged`, untagged manifests too, except index children and referrers
    /// of kept manifests, and manifests a tag left after `tags_left_since`: the
    /// undo window), then every blob no remaining manifest references and that
    /// was created before `older_than` (so in-flight pushes keep theirs; manifests
    /// younger than that are kept too, with what they reference). One transaction;
    /// removed blobs are recorded as pending deletions; `dry_run` rolls it back.
    async fn sweep(
        &self,
        delete_untagged: bool,
        older_than: i64,
        tags_left_since: i64,
        dry_run: bool,
    ) -> Result<SweepReport>;
    /// Every blob the metadata knows, with its size.
    async fn all_blobs(&self) -> Result<Vec<BlobRecord>>;

    /// Deduplicated bytes of each project's registry, GitLab's way: the unique layers
    /// of manifests reachable from live tags in any of its repositories. Every id
    /// given is in the map (0 for a project without layers).
    async fn project_registry_sizes(&self, project_ids: &[i64]) -> Result<HashMap<i64, i64>>;

    /// [`GcMeta::project_registry_sizes`] of one project.
    async fn project_registry_size(&self, project_id: i64) -> Result<i64> {
        Ok(self
            .project_registry_sizes(&[project_id])
            .await?
            .get(&project_id)
            .copied()
            .unwrap_or(0))
    }
}
