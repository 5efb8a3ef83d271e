//! Garbage collection: the online reviewer of the queues that metadata triggers fill,
//! and the byte deletion both online and offline GC share. Metadata is always removed
//! first, bytes second, so a crash at any point leaves at worst unreferenced bytes
//! (which the offline command finds), never a reference to missing bytes.

use berth_meta::{BlobRecord, ManifestReview, Meta, MetaError, MetaGuard};
use berth_oci::Digest;
use berth_store::{BlobStore, StoreError, StoreGuard};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Store(#[from] berth_store::StoreError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    pub manifests_deleted: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
}

/// The lock between publishing a blob and deleting blob bytes, both its sides: the
/// database's, which spans every node (PostgreSQL) or the processes of one machine
/// (SQLite), and the store's (the filesystem's spans the processes of one machine,
/// S3's only its own process). Always taken in that order, so two holders never
/// wait for each other crosswise.
pub struct BlobGuard {
    // Released in the reverse order: fields drop in declaration order.
    _store: StoreGuard,
    _meta: MetaGuard,
}

/// Take the blob lock: shared to publish and link a blob (or mount one), exclusive
/// to delete bytes.
pub async fn blob_guard(
    meta: &dyn Meta,
    store: &dyn BlobStore,
    exclusive: bool,
) -> Result<BlobGuard, GcError> {
    let meta_side = meta.blob_lock(exclusive).await?;
    let store_side: Result<StoreGuard, StoreError> = if exclusive {
        store.sweep_guard().await
    } else {
        store.publish_guard().await
    };
    Ok(BlobGuard {
        _store: store_side?,
        _meta: meta_side,
    })
}

/// Items reviewed per round, so one round never holds the writer for long.
const REVIEW_BATCH: i64 = 200;

/// Delete the bytes of blobs whose metadata is gone. Under the store's exclusive
/// lock, each blob is re-checked: a push that made it live again in the meantime
/// (publishing holds the shared lock) keeps it. Returns (blobs, bytes) deleted.
///
/// With `recorded`, the blobs' deletions were recorded as pending in metadata, and one
/// that is no longer pending was finished by another node since it was listed (every
/// node's GC round lists every pending deletion): it is skipped, so each blob's bytes
/// are deleted, and counted, once. Orphans found in storage are not recorded.
pub async fn delete_bytes(
    meta: &dyn Meta,
    store: &dyn BlobStore,
    blobs: &[BlobRecord],
    recorded: bool,
) -> Result<(u64, u64), GcError> {
    if blobs.is_empty() {
        return Ok((0, 0));
    }
    let _sweeping = blob_guard(meta, store, true).await?;
    let (mut count, mut bytes) = (0, 0);
    // A page of blobs costs three metadata statements, not three per blob. Under the
    // exclusive lock nothing is published or linked meanwhile, so checking a page
    // first and deleting its bytes afterwards decides as checking each one would.
    for page in blobs.chunks(DELETE_PAGE) {
        let digests: Vec<Digest> = page.iter().map(|b| b.digest.clone()).collect();
        let pending = if recorded {
            Some(meta.blob_deletions_pending(&digests).await?)
        } else {
            None
        };
        let live = meta.blobs_known(&digests).await?;
        let mut done = Vec::with_capacity(page.len());
        let mut doomed: Vec<&BlobRecord> = Vec::with_capacity(page.len());
        for b in page {
            if pending.as_ref().is_some_and(|p| !p.contains(&b.digest)) {
                continue;
            }
            if !live.contains(&b.digest) {
                doomed.push(b);
            }
            // Done either way: deleted, or live again and not ours to delete.
            done.push(b.digest.clone());
        }
        // In as few requests as the store allows (S3: one for the page), so the lock
        // that holds every push's publishing is held for one round trip, not one per
        // blob. Should it fail part-way, nothing is cleared and the next round
        // deletes the page again (deleting is idempotent).
        let gone: Vec<Digest> = doomed.iter().map(|b| b.digest.clone()).collect();
        store.delete_many(&gone).await?;
        for b in doomed {
            tracing::debug!(digest = %b.digest, size = b.size, "blob bytes deleted");
            count += 1;
            bytes += b.size.max(0) as u64;
        }
        meta.clear_blob_deletions(&done).await?;
    }
    Ok((count, bytes))
}

/// Blobs checked and cleared together by [`delete_bytes`].
const DELETE_PAGE: usize = 500;

/// One round of online GC: review every manifest and blob whose review delay has
/// passed (`due_before`). Returns what it deleted.
pub async fn review_due(
    meta: &dyn Meta,
    store: &dyn BlobStore,
    due_before: i64,
    delete_untagged: bool,
) -> Result<GcStats, GcError> {
    let mut stats = GcStats::default();
    // Finish byte deletions a crash interrupted.
    loop {
        let pending = meta.pending_blob_deletions(REVIEW_BATCH).await?;
        if pending.is_empty() {
            break;
        }
        let (n, bytes) = delete_bytes(meta, store, &pending, true).await?;
        stats.blobs_deleted += n;
        stats.bytes_freed += bytes;
    }
    // Manifests and blobs a batch each in turn, so a steady stream of manifests to
    // review (pushes under a short review delay) never holds the blob reviews back.
    // A blob reviewed before the manifest that dropped it is kept (still referenced)
    // and queued again when that manifest goes.
    loop {
        let ids = meta.due_manifest_reviews(due_before, REVIEW_BATCH).await?;
        // A tag that left a manifest after `due_before` keeps it: the undo window.
        // (The metadata store splits the batch into short transactions.)
        let reviews = meta
            .review_manifests(&ids, delete_untagged, due_before)
            .await?;
        stats.manifests_deleted += reviews
            .iter()
            .filter(|r| **r == ManifestReview::Deleted)
            .count() as u64;
        let digests: Vec<Digest> = meta.due_blob_reviews(due_before, REVIEW_BATCH).await?;
        let removed = meta.review_blobs(&digests).await?;
        let (n, bytes) = delete_bytes(meta, store, &removed, true).await?;
        stats.blobs_deleted += n;
        stats.bytes_freed += bytes;
        if ids.is_empty() && digests.is_empty() {
            break;
        }
    }
    Ok(stats)
}
