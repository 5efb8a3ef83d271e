//! Blob storage behind one trait. Blobs are content-addressed and immutable; an upload
//! is written to a private temporary object, hashed while it is written, and published
//! under its digest only once complete and durable.
//!
//! The store knows nothing of repositories or tags: which repository may reach which
//! blob is metadata (`berth-meta`).
// Unsafe only where the standard library has no call for a system call
// (`append::writeback`).
#![deny(unsafe_code)]

mod append;
mod fs;
mod s3;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::pin::Pin;

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use futures::Stream;

pub use fs::FsStore;
pub use s3::{endpoint_needs_path_style, S3Config, S3Store, DEFAULT_PART_SIZE, MIN_PART_SIZE};

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + 'static>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob not found")]
    NotFound,
    #[error("upload not found")]
    UploadNotFound,
    #[error("upload is at offset {actual}, not {expected}")]
    OffsetMismatch { expected: u64, actual: u64 },
    #[error("reading the request body failed: {0}")]
    Body(std::io::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The storage service (S3) failed or did not answer, after the client's own
    /// retries: a condition on the storage's side that passes, unlike a bad request.
    #[error("blob storage unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The running hash of an upload: at hand, or still at work on bytes an append has
/// already written. An append is answered once its bytes are the kernel's; hashing
/// them may go on meanwhile, overlapping the client's next request, which takes the
/// hash over where it ends.
#[derive(Debug)]
pub struct PendingHash {
    algorithm: Algorithm,
    state: Pending,
}

#[derive(Debug)]
enum Pending {
    Ready(Box<Hasher>),
    /// Sent when hashing ends; dropped without a send if it stopped (a panic).
    Working(tokio::sync::oneshot::Receiver<Hasher>),
}

impl From<Hasher> for PendingHash {
    fn from(hasher: Hasher) -> Self {
        PendingHash {
            algorithm: hasher.algorithm(),
            state: Pending::Ready(Box::new(hasher)),
        }
    }
}

impl PendingHash {
    /// A hash that `done` will deliver.
    pub(crate) fn working(
        algorithm: Algorithm,
        done: tokio::sync::oneshot::Receiver<Hasher>,
    ) -> Self {
        PendingHash {
            algorithm,
            state: Pending::Working(done),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hasher once it has taken every byte written; `None` when hashing stopped
    /// before the end, so the upload must be hashed again from storage.
    pub async fn wait(self) -> Option<Hasher> {
        match self.state {
            Pending::Ready(h) => Some(*h),
            Pending::Working(done) => done.await.ok(),
        }
    }

    /// [`PendingHash::wait`] on a thread that may block (not an async task).
    pub(crate) fn wait_blocking(self) -> Option<Hasher> {
        match self.state {
            Pending::Ready(h) => Some(*h),
            Pending::Working(done) => done.blocking_recv().ok(),
        }
    }
}

/// A byte range, both ends inclusive, as HTTP ranges are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

pub struct BlobRead {
    /// Total size of the blob (not of the range).
    pub size: u64,
    pub body: ByteStream,
}

/// A held store lock; released when dropped.
pub type StoreGuard = Box<dyn Send + Sync>;

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Held (shared) while a blob is published and linked in metadata, and while a
    /// mount checks and links one. Garbage collection's byte deletion takes the lock
    /// exclusively and re-checks metadata inside it, so it never removes bytes that a
    /// concurrent push has just made live again. Works across processes.
    async fn publish_guard(&self) -> Result<StoreGuard>;
    /// The exclusive side of [`BlobStore::publish_guard`], for deleting blob bytes.
    async fn sweep_guard(&self) -> Result<StoreGuard>;
    /// Size of a published blob, or `None` when it is not there.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Stream a published blob, or a range of it (the range must lie within the blob).
    async fn open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead>;
    /// Remove a published blob's bytes. Removing a missing blob is not an error.
    async fn delete(&self, digest: &Digest) -> Result<()>;
    /// Remove several published blobs' bytes, as few requests as the store allows
    /// (S3: one `DeleteObjects` per 1,000). Missing blobs are not an error; on an
    /// error some of them may be gone and others not.
    async fn delete_many(&self, digests: &[Digest]) -> Result<()> {
        for d in digests {
            self.delete(d).await?;
        }
        Ok(())
    }
    /// Every published blob, for offline garbage collection and audits.
    async fn list(&self) -> Result<Vec<Digest>>;
    /// When a published blob was last written (Unix ms), or `None` when absent.
    async fn modified_at(&self, digest: &Digest) -> Result<Option<i64>>;

    /// A URL where the client may fetch the blob directly, valid for a short while,
    /// when the store is configured to hand those out (S3 pre-signed URLs).
    async fn presigned_get(&self, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }

    /// Check at start-up that the store can be written, read back and deleted from, so
    /// a misconfigured store stops the server with a message instead of failing the
    /// first push. The error text names what to fix.
    async fn check_access(&self) -> Result<()> {
        Ok(())
    }

    async fn upload_create(&self, id: &str) -> Result<()>;
    /// Bytes received so far, or `None` for an unknown upload.
    async fn upload_size(&self, id: &str) -> Result<Option<u64>>;
    /// Append `body` at `offset` (which must be the current size), feeding every byte
    /// to `hasher` as it is written. Returns once the bytes are written, with the new
    /// size and the hash, which may still be at work on them (`hasher` itself may be
    /// pending: the append takes it over when it is done). On a body error, the bytes
    /// received before it stay written, so the client can resume.
    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
        body: ByteStream,
        hasher: PendingHash,
    ) -> Result<(u64, PendingHash)>;
    /// Hash what an upload holds so far (when no running hash is at hand). A store
    /// that cannot read an unfinished upload back (S3) returns the running hash it
    /// saved with the upload instead, in the algorithm the upload was hashed with,
    /// which may differ from `hasher`'s.
    async fn upload_rehash(&self, id: &str, hasher: Hasher) -> Result<(u64, Hasher)>;
    /// Make the upload's bytes durable and publish them as `digest`. The caller has
    /// verified the digest. The upload is gone afterwards.
    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<()>;
    async fn upload_delete(&self, id: &str) -> Result<()>;
    /// Uploads present in storage, for expiry of abandoned ones.
    async fn upload_list(&self) -> Result<Vec<String>>;
}
