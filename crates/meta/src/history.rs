//! Tag history and restore. Tags are history rows (a push or a restore starts a row,
//! a move or a delete ends it), and each row says who started and ended it and why;
//! so a tag's history is read from its rows, a deleted tag is put back by starting a
//! row on its old digest, and a cleanup run is undone by restarting the rows it ended.
//!
//! The undo window is the GC review delay: garbage collection keeps a manifest that a
//! tag left within it (the condition is in its review query, see `ops/gc.rs`), so a
//! restore within the window always finds its manifest.

use async_trait::async_trait;

use crate::org::Window;
use crate::Result;

/// Who changed a tag: a user or token (`kind` is the token kind: `user`,
/// `personal_access_token`, `deploy_token`, `build`), or Berth itself
/// (`cleanup_policy`, `command`). `Actor::default()` is an unknown actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub kind: String,
    pub id: Option<i64>,
    pub username: Option<String>,
}

impl Actor {
    pub fn new(kind: &str, id: Option<i64>, username: Option<&str>) -> Actor {
        Actor {
            kind: kind.to_string(),
            id,
            username: username.map(str::to_string),
        }
    }

    /// Berth acting on its own (a cleanup policy, an administrator's command).
    pub fn system(kind: &str) -> Actor {
        Actor::new(kind, None, None)
    }

    /// The stored columns' values (kind NULL for an unknown actor).
    pub(crate) fn kind_column(&self) -> Option<&str> {
        Some(self.kind.as_str()).filter(|k| !k.is_empty())
    }

    /// From stored columns; `None` when nobody was recorded.
    pub(crate) fn from_columns(
        kind: Option<String>,
        id: Option<i64>,
        username: Option<String>,
    ) -> Option<Actor> {
        kind.map(|kind| Actor { kind, id, username })
    }
}

/// One change of a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEvent {
    /// `pushed` (new, or moved from `previous_digest`), `deleted` or `restored`.
    pub action: String,
    pub digest: String,
    pub previous_digest: Option<String>,
    pub at: i64,
    pub actor: Option<Actor>,
    /// The cleanup run that deleted it, when one did.
    pub cleanup_run_id: Option<i64>,
}

/// A tag deleted and not pushed again, whose manifest is still there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedTag {
    pub name: String,
    pub digest: String,
    pub deleted_at: i64,
    pub deleted_by: Option<Actor>,
    pub cleanup_run_id: Option<i64>,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// The tag points at `digest` again.
    Restored(String),
    /// It already pointed there; nothing changed.
    Unchanged(String),
    /// The tag lives on another digest (`current`) and `force` was not given.
    Conflict { current: String },
    /// The manifest is gone (garbage collected, or deleted by digest).
    Gone(String),
    /// The tag never had that digest, or has no history at all.
    Unknown,
}

/// What undoing a cleanup run did, tag by tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRestore {
    pub restored: u64,
    /// Their manifests are gone.
    pub gone: u64,
    /// Pushed again (or restored) since the run deleted them.
    pub skipped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupRun {
    pub id: i64,
    pub project_id: i64,
    /// `policy`, `bulk_delete` or `command`.
    pub reason: String,
    pub started_at: i64,
    pub actor: Option<Actor>,
}

#[async_trait]
pub trait HistoryMeta: Send + Sync {
    /// The changes of tag `name` of repository `repository_id`, newest first, at most
    /// `limit` (as long as the rows are kept: `tag_history.retention`).
    async fn tag_history(
        &self,
        repository_id: i64,
        name: &str,
        limit: i64,
    ) -> Result<Vec<TagEvent>>;
    /// Tags whose last change was a deletion and whose manifest is still there, by
    /// name, paged, with the total.
    async fn deleted_tags(
        &self,
        repository_id: i64,
        window: Window,
    ) -> Result<(Vec<DeletedTag>, i64)>;
    /// Put tag `name` back on `digest` (default: the digest its latest ended row had),
    /// in one transaction that checks the manifest is there; with `force`, moving it
    /// from another digest.
    async fn restore_tag(
        &self,
        repository_id: i64,
        name: &str,
        digest: Option<&str>,
        force: bool,
        actor: &Actor,
        now: i64,
    ) -> Result<Restore>;
    /// Record a cleanup run's start; returns its id.
    async fn start_cleanup_run(
        &self,
        project_id: i64,
        reason: &str,
        actor: &Actor,
        now: i64,
    ) -> Result<i64>;
    async fn cleanup_run(&self, id: i64) -> Result<Option<CleanupRun>>;
    /// Put back every tag run `id` deleted that was not pushed again since and whose
    /// manifest is still there. One transaction.
    async fn restore_cleanup_run(&self, id: i64, actor: &Actor, now: i64) -> Result<RunRestore>;
    /// Forget ended tag rows that ended before `before`; returns how many.
    async fn prune_tag_history(&self, before: i64) -> Result<u64>;
}
