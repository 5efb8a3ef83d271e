//! Registry metadata behind one trait: repositories, blobs and which repository may
//! reach them, manifests (with their payloads), references, tags and uploads.
//!
//! Every method that changes something is one transaction, so readers never see half
//! a push, a half-moved tag or a half-deleted repository. Times are Unix milliseconds
//! passed in by the caller; this crate never reads a clock.
//!
//! # Two databases, one body of code
//!
//! Every operation is written once, in `ops/` (one file per trait), and compiled twice:
//! `sqlite.rs` and `postgres.rs` each include the same files as modules of their own
//! (`ops_modules!()`, `#[path = "ops/…"] mod …;`), after declaring the names the
//! bodies use — `Db` (the backend struct), `Conn`, `DbRow`, `write_tx` / `read_tx` /
//! `reader` / `writer`, the lock hooks (`lock_paths`, `lock_cleanup_claims`, `retry_deadlocks`,
//! `CONCURRENT_WRITERS`: real on PostgreSQL, no-ops under SQLite's single writer) and
//! `pick!(sqlite: …, postgres: …)`, which keeps one side. Each copy is plain,
//! concrete sqlx code, so it compiles to what a hand-written backend would, and a
//! compiler error points at the one shared line.
//!
//! Why not the alternatives: code generic over `sqlx::Database` needs a thicket of
//! `Executor`/`Encode`/`Decode` bounds on every function; sqlx's `Any` driver loses
//! types both backends have (BLOBs, booleans, arrays) and PostgreSQL's prepared
//! statement types; a `db_run!`-style macro around each body hides it from rustfmt and
//! from readers. Including one file twice keeps ordinary, formatted Rust.
//!
//! The SQL is written once too: placeholders are `$n` (sqlx-sqlite reads `$n` as the
//! n-th argument), casts are `CAST(… AS BIGINT)`. `pick!` marks where the databases
//! really differ — row locks (`FOR UPDATE`, `SKIP LOCKED`), SQLite's `json_group_array`
//! and PostgreSQL's arrays and `LATERAL` (each the fast form on its database), `LIKE`
//! vs `ILIKE` — each with its reason beside it. Migrations stay per backend.
#![forbid(unsafe_code)]
// Each file of `ops/` is deliberately a module of both backends (see above).
#![allow(clippy::duplicate_mod)]

mod cache;

/// The operations of `ops/`, as modules of the backend that invokes this (see above).
macro_rules! ops_modules {
    () => {
        #[path = "ops/cleanup.rs"]
        mod cleanup;
        #[path = "ops/gc.rs"]
        mod gc;
        #[path = "ops/history.rs"]
        mod history;
        #[path = "ops/instance.rs"]
        mod instance;
        #[path = "ops/org.rs"]
        mod org;
        #[path = "ops/protection.rs"]
        mod protection;
        #[path = "ops/proxy.rs"]
        mod proxy;
        #[path = "ops/registry.rs"]
        mod registry;
        #[path = "ops/repositories.rs"]
        pub(crate) mod repositories;
        #[path = "ops/sessions.rs"]
        mod sessions;
    };
}

pub mod cleanup;
mod common;
pub mod gc;
pub mod history;
pub mod instance;
pub mod org;
mod postgres;
mod postgres_locks;
pub mod protection;
pub mod proxy;
pub mod repositories;
pub mod sessions;
mod sqlite;
#[cfg(test)]
mod suite;
#[doc(hidden)]
pub mod testing;
pub mod transfer;

use async_trait::async_trait;
use berth_oci::Digest;

pub use cleanup::*;
pub use gc::*;
pub use history::*;
pub use instance::*;
pub use org::*;
pub use postgres::{PgMeta, DEFAULT_MAX_CONNECTIONS};
pub use protection::*;
pub use proxy::*;
pub use repositories::*;
pub use sessions::*;
pub use sqlite::SqliteMeta;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("blob {0} is not known in this repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is not known in this repository")]
    ManifestUnknown(Digest),
    #[error("manifest is referenced by index {0}; delete the index first")]
    ManifestReferenced(Digest),
    /// A unique name or path is already taken; the text says which, for the user.
    #[error("{0}")]
    Conflict(String),
    /// Something referred to (a parent group, a namespace) does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T> = std::result::Result<T, MetaError>;

pub use cache::MAX_AGE as MANIFEST_CACHE_MAX_AGE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub id: i64,
    pub path: String,
    pub project_id: Option<i64>,
    pub created_at: i64,
}

/// A manifest as pushed, with what it references already extracted.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: Digest,
    pub media_type: String,
    pub payload: Vec<u8>,
    /// Config and layers that live in this registry (foreign layers excluded).
    pub blobs: Vec<Digest>,
    /// Child manifests of an index.
    pub children: Vec<Digest>,
    pub subject: Option<Digest>,
    pub config: Option<Digest>,
    /// `artifactType`, or the config's media type when absent (what referrers report).
    pub artifact_type: Option<String>,
    /// The image's creation time from its config (Unix ms), when it has one.
    pub image_created_at: Option<i64>,
    /// Sum of the layer sizes; for an index, of its children's totals.
    pub total_size: i64,
    /// Manifest annotations as JSON, for the referrers API.
    pub annotations: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    /// Shared, so a cached manifest is served without copying it.
    pub payload: bytes::Bytes,
}

/// What a conditional tag write expects the tag to be (see
/// [`RegistryMeta::put_manifest_if`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagExpect {
    /// No live tag of that name.
    Absent,
    /// The live tag points at this manifest.
    At(Digest),
}

impl TagExpect {
    /// Whether a tag now pointing at `current` (`None`: no live tag) is as expected.
    pub fn holds(&self, current: Option<&str>) -> bool {
        match self {
            TagExpect::Absent => current.is_none(),
            TagExpect::At(d) => current == Some(d.as_str()),
        }
    }
}

/// How a manifest is asked for.
#[derive(Debug, Clone)]
pub enum ManifestRef<'a> {
    Tag(&'a str),
    Digest(&'a Digest),
}

#[derive(Debug, Clone)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: String,
    pub repository_path: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The principal that started it (see the server's upload authorisation).
    pub created_by: Option<String>,
}

/// Everything the server needs from metadata.
pub trait Meta:
    RegistryMeta
    + OrgMeta
    + RepositoryMeta
    + CleanupMeta
    + GcMeta
    + HistoryMeta
    + SessionMeta
    + InstanceMeta
    + ProtectionMeta
    + ProxyMeta
    + 'static
{
}
impl<
        T: RegistryMeta
            + OrgMeta
            + RepositoryMeta
            + CleanupMeta
            + GcMeta
            + HistoryMeta
            + SessionMeta
            + InstanceMeta
            + ProtectionMeta
            + ProxyMeta
            + 'static,
    > Meta for T
{
}

/// Registry content: repositories, blobs, manifests, tags, uploads.
#[async_trait]
pub trait RegistryMeta: Send + Sync {
    async fn repository(&self, path: &str) -> Result<Option<Repository>>;
    /// Repository paths in lexical order, strictly after `last`, at most `n`.
    async fn catalog(&self, last: Option<&str>, n: u32) -> Result<Vec<String>>;
    /// Like `catalog`, with each repository's project.
    async fn catalog_with_projects(
        &self,
        last: Option<&str>,
        n: u32,
    ) -> Result<Vec<(String, Option<i64>)>>;

    /// Record a verified blob and let `repository` reach it (creating the repository).
    async fn link_blob(&self, repository: &str, digest: &Digest, size: u64, now: i64)
        -> Result<()>;
    /// `link_blob` for a blob uploaded through session `id`, ending the session in the
    /// same transaction (one commit, not two, at the end of every upload). Returns when
    /// the session was created; `None` when it was already gone (the blob is linked
    /// all the same).
    async fn publish_upload(
        &self,
        id: &str,
        repository: &str,
        digest: &Digest,
        size: u64,
        now: i64,
    ) -> Result<Option<i64>>;
    /// Size of a blob, if `repository` may reach it.
    async fn repository_blob(&self, repository: &str, digest: &Digest) -> Result<Option<u64>>;
    /// Size of a blob anywhere in the registry.
    async fn blob(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Up to `limit` repositories that may reach a blob, those sharing the first
    /// `prefix.len()` characters of their path with `prefix` (the pushing repository's
    /// project) first: the candidates for a mount without a named source.
    async fn repositories_with_blob(
        &self,
        digest: &Digest,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>>;
    /// Stop `repository` reaching a blob. Returns whether it could.
    async fn unlink_blob(&self, repository: &str, digest: &Digest) -> Result<bool>;

    /// Store a manifest and optionally tag it, atomically. Fails with `BlobUnknown` /
    /// `ManifestUnknown` when it references something the repository cannot reach.
    async fn put_manifest(
        &self,
        repository: &str,
        manifest: &NewManifest,
        tag: Option<&str>,
        now: i64,
    ) -> Result<()> {
        self.put_manifest_by(repository, manifest, tag, now, &Actor::default())
            .await
    }
    /// [`RegistryMeta::put_manifest`], recording `actor` in the tag's history.
    async fn put_manifest_by(
        &self,
        repository: &str,
        manifest: &NewManifest,
        tag: Option<&str>,
        now: i64,
        actor: &Actor,
    ) -> Result<()> {
        self.put_manifest_if(repository, manifest, tag, None, now, actor)
            .await
            .map(|_| ())
    }
    /// [`RegistryMeta::put_manifest_by`] only if `tag` is still as `expect` says,
    /// judged inside the write's transaction: a protection rule decided on what the
    /// tag was when it was checked, and a concurrent push must not change that
    /// between the check and the write. Returns `false`, having written nothing
    /// (not even the manifest), when the tag is no longer so.
    async fn put_manifest_if(
        &self,
        repository: &str,
        manifest: &NewManifest,
        tag: Option<&str>,
        expect: Option<&TagExpect>,
        now: i64,
        actor: &Actor,
    ) -> Result<bool>;
    async fn manifest(
        &self,
        repository: &str,
        reference: ManifestRef<'_>,
    ) -> Result<Option<StoredManifest>>;
    /// Delete a manifest and every tag on it. Returns whether it existed. Refused with
    /// `ManifestReferenced` while an index in the repository lists it.
    async fn delete_manifest(&self, repository: &str, digest: &Digest, now: i64) -> Result<bool> {
        self.delete_manifest_by(repository, digest, now, &Actor::default())
            .await
    }
    /// [`RegistryMeta::delete_manifest`], recording `actor` in its tags' history.
    async fn delete_manifest_by(
        &self,
        repository: &str,
        digest: &Digest,
        now: i64,
        actor: &Actor,
    ) -> Result<bool> {
        Ok(self
            .delete_manifest_if(repository, digest, None, now, actor)
            .await?
            .unwrap_or(false))
    }
    /// [`RegistryMeta::delete_manifest_by`] only if the manifest's live tags are still
    /// exactly `tags` (in any order), judged inside the delete's transaction: the
    /// protection check allowed deleting those, and a tag pushed onto the manifest
    /// since was never checked. `None`, having deleted nothing, when they are not.
    async fn delete_manifest_if(
        &self,
        repository: &str,
        digest: &Digest,
        tags: Option<&[String]>,
        now: i64,
        actor: &Actor,
    ) -> Result<Option<bool>>;
    /// Delete one tag (the manifest stays). Returns whether it existed.
    async fn delete_tag(&self, repository: &str, tag: &str, now: i64) -> Result<bool> {
        self.delete_tag_by(repository, tag, now, &Actor::default())
            .await
    }
    /// [`RegistryMeta::delete_tag`], recording `actor` in the tag's history.
    async fn delete_tag_by(
        &self,
        repository: &str,
        tag: &str,
        now: i64,
        actor: &Actor,
    ) -> Result<bool>;
    /// Live tags in lexical order, strictly after `last`, at most `n`.
    async fn tags(&self, repository: &str, last: Option<&str>, n: u32) -> Result<Vec<String>>;
    /// Manifests of `repository` whose subject is `subject`.
    async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>>;

    async fn create_upload(&self, upload: &Upload) -> Result<()>;
    async fn upload(&self, id: &str) -> Result<Option<Upload>>;
    async fn touch_upload(&self, id: &str, now: i64) -> Result<()>;
    async fn delete_upload(&self, id: &str) -> Result<()>;
    /// Uploads not touched since `before`.
    async fn stale_uploads(&self, before: i64) -> Result<Vec<Upload>>;
}
