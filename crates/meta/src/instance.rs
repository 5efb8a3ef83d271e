//! What every node of one installation shares beyond registry content: secrets that
//! must be the same on all nodes (the token signing key), the lock that keeps
//! garbage collection from deleting the bytes of a blob a push is publishing, and the
//! claim that keeps two nodes from writing to one upload at once.

use async_trait::async_trait;

use crate::Result;

/// A held cross-node lock; released when dropped.
pub type MetaGuard = Box<dyn Send + Sync>;

/// Name of the instance secret that holds the token signing key (PKCS#8 PEM).
pub const TOKEN_SIGNING_KEY: &str = "token_signing_key";

/// A held claim on an upload (see [`InstanceMeta::claim_upload`]).
pub struct UploadClaim(Option<Box<dyn ReleaseClaim>>);

/// How a backend lets go of an upload claim.
#[async_trait]
pub trait ReleaseClaim: Send + Sync {
    /// Release the claim; once this returns, any node can claim the upload. Dropping
    /// the claim instead releases it a moment later.
    async fn release(self: Box<Self>);
}

impl UploadClaim {
    /// A claim with nothing to release beyond the node's own (one machine only).
    pub fn local() -> UploadClaim {
        UploadClaim(None)
    }

    pub fn new(held: Box<dyn ReleaseClaim>) -> UploadClaim {
        UploadClaim(Some(held))
    }

    /// Release the claim before answering: the client's next request for the upload
    /// may reach another node at once.
    pub async fn release(mut self) {
        if let Some(held) = self.0.take() {
            held.release().await;
        }
    }
}

#[async_trait]
pub trait InstanceMeta: Send + Sync {
    /// The secret stored under `name`, storing `candidate` first when there is none.
    /// Every node that starts with its own candidate gets the first one stored.
    async fn instance_secret(&self, name: &str, candidate: &str, now: i64) -> Result<String>;

    /// The database's side of the blob lock: shared while a blob is published and
    /// linked, exclusive while garbage collection deletes blob bytes. PostgreSQL's
    /// spans every node; SQLite's the processes of its machine (a lock file).
    async fn blob_lock(&self, exclusive: bool) -> Result<MetaGuard>;

    /// Claim upload `id` for one request across nodes: `None` while another node's
    /// request holds it. Requests of one node exclude each other in the node itself;
    /// a backend that serves one machine only (SQLite) always grants the claim.
    async fn claim_upload(&self, id: &str) -> Result<Option<UploadClaim>>;

    /// Record a failed sign-in at `at` (Unix seconds) under each of `keys`, and
    /// forget every failure from before `forget_before`.
    async fn record_login_failure(
        &self,
        keys: &[String],
        at: i64,
        forget_before: i64,
    ) -> Result<()>;
    /// The times of the failed sign-ins under `key` since `since` (Unix seconds).
    async fn login_failures(&self, key: &str, since: i64) -> Result<Vec<i64>>;
}
