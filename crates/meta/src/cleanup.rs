//! Bookkeeping of cleanup-policy runs: which policies are due, which repositories
//! wait for a run (or for the rest of an unfinished one), claiming a repository for a
//! worker, and the log of tags removed.

use async_trait::async_trait;

use crate::repositories::{ExpirationPolicy, RepositoryInfo};
use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupLogEntry {
    pub project_id: i64,
    pub repository_id: i64,
    pub repository_path: String,
    pub tag: String,
    pub digest: String,
    /// `policy`, `bulk_delete` or `command`.
    pub reason: String,
    pub deleted_at: i64,
    /// The cleanup run (policy run, bulk deletion, command) that deleted it.
    pub run_id: Option<i64>,
    /// Set when the run did not delete the tag: the protection rule that kept it
    /// (`deleted_at` is then when the run kept it).
    pub kept_by_rule: Option<i64>,
}

/// A tag a cleanup run selected but a protection rule kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptTag {
    pub tag: String,
    pub digest: String,
    pub rule_id: i64,
}

/// One worker's hold on a repository's cleanup turn. `number` counts the repository's
/// claims, so a worker whose lease lapsed cannot renew or end a later worker's claim.
#[derive(Debug, Clone)]
pub struct CleanupClaim {
    pub repository: RepositoryInfo,
    pub number: i64,
}

#[async_trait]
pub trait CleanupMeta: Send + Sync {
    /// Enabled policies whose `next_run_at` has come, with their projects.
    async fn due_policies(&self, now: i64) -> Result<Vec<(i64, ExpirationPolicy)>>;
    /// Start a policy's run that was due at `due_at` (its `next_run_at` as
    /// [`CleanupMeta::due_policies`] gave it): in one transaction, move its next run
    /// to `next_run_at` and mark the project's idle repositories `cleanup_scheduled`.
    /// Returns how many were marked, or `None` when the policy's next run is no longer
    /// `due_at`: another node (or a change of the policy) came first, and starting
    /// the run again would run it twice.
    async fn start_policy_run(
        &self,
        project_id: i64,
        due_at: i64,
        next_run_at: i64,
    ) -> Result<Option<u64>>;
    /// Repositories waiting for a cleanup worker (scheduled or unfinished), oldest first.
    async fn cleanup_queue(&self, limit: i64) -> Result<Vec<RepositoryInfo>>;
    /// Claim the repository at the head of the queue for one worker
    /// (`cleanup_ongoing`) until `lease_until`. None when nothing waits, or when
    /// `capacity` claims are already held: the worker capacity is the instance's, all
    /// nodes together, and claims whose lease lapsed before `now` do not count. Claims
    /// are taken in queue order, one at a time, so a run queued later never overtakes
    /// one queued earlier. A fresh run records `now` as its start.
    async fn claim_next_cleanup(
        &self,
        now: i64,
        lease_until: i64,
        capacity: i64,
    ) -> Result<Option<CleanupClaim>>;
    /// Extend a claim until `lease_until`; false if it is no longer held (it lapsed,
    /// and may have been handed to another worker).
    async fn renew_cleanup(&self, claim: &CleanupClaim, lease_until: i64) -> Result<bool>;
    /// End a worker's turn: `cleanup_unscheduled` (done) or `cleanup_unfinished`.
    /// False, and nothing changed, if the claim is no longer held: the turn is then
    /// another worker's, and so is its end.
    async fn finish_cleanup(&self, claim: &CleanupClaim, status: &str) -> Result<bool>;
    /// Turns whose lease lapsed before `now` (their worker stopped: a crash, a killed
    /// node) become unfinished, to be taken up again. Returns how many were reset and
    /// how many claims are still held.
    async fn reset_lapsed_cleanups(&self, now: i64) -> Result<(u64, u64)>;
    /// End these tags and log each one removed, in one transaction; returns how many ended.
    /// They belong to cleanup run `run`, or (`None`) to the policy run the repository
    /// was scheduled by; `actor` is who runs it.
    async fn delete_tags_logged(
        &self,
        repository_id: i64,
        names: &[String],
        reason: &str,
        run: Option<i64>,
        actor: &crate::Actor,
        now: i64,
    ) -> Result<u64>;
    /// Log tags of repository `repository_id` that run `run` (`None`: the policy run
    /// the repository was scheduled by) kept because a protection rule forbids
    /// deleting them. A tag already logged as kept by the same run is not logged again
    /// (an unfinished run plans anew on each turn). Returns how many rows were added.
    async fn log_kept_tags(
        &self,
        repository_id: i64,
        kept: &[KeptTag],
        reason: &str,
        run: Option<i64>,
        now: i64,
    ) -> Result<u64>;
    /// The project's most recent cleanup deletions (and tags kept by protection
    /// rules), newest first.
    async fn cleanup_log(&self, project_id: i64, limit: i64) -> Result<Vec<CleanupLogEntry>>;
    /// The instance's most recent cleanup runs (every project), newest first, with
    /// how many tags each deleted and whether repositories still wait for it.
    async fn recent_cleanup_runs(&self, limit: i64) -> Result<Vec<CleanupRunSummary>>;
}

/// One cleanup run as the admin area lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupRunSummary {
    pub id: i64,
    pub project_path: String,
    /// `policy`, `bulk_delete` or `command`.
    pub reason: String,
    pub started_at: i64,
    pub tags_deleted: i64,
    /// Repositories whose turn in this run is still to come (or under way).
    pub repositories_waiting: i64,
    /// Repositories working on it right now.
    pub repositories_running: i64,
}
