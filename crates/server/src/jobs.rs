//! Background work inside `berth serve`: expiring abandoned uploads, removing
//! repositories whose deletion was requested, and running cleanup policies. Each job runs in a loop that sleeps
//! until its next turn or until woken (a request that queued work wakes it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::state::{now_ms, AppState};

/// Wakes background jobs when a request queued work for them. Each job has its own
/// signal, and a wake-up that arrives while the job is busy is kept for its next wait.
#[derive(Default)]
pub struct Jobs {
    repositories: Notify,
    cleanup: Notify,
}

impl Jobs {
    pub fn wake(&self) {
        self.repositories.notify_one();
        self.cleanup.notify_one();
    }
}

/// How often queued repository deletions are looked for when nobody wakes the job.
const DELETE_POLL: Duration = Duration::from_secs(30);

/// Start every background job; the returned handles are aborted on shutdown.
pub fn start(state: Arc<AppState>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(expire_uploads(state.clone())),
        tokio::spawn(delete_repositories(state.clone())),
        tokio::spawn(run_cleanup_policies(state.clone())),
        tokio::spawn(crate::proxy::cache::run_ttl_policies(state.clone())),
        tokio::spawn(collect_garbage(state)),
    ]
}

/// Remove upload sessions (and their bytes) untouched for longer than the expiry.
async fn expire_uploads(state: Arc<AppState>) {
    let expiry = state.settings.upload_expiry;
    let every = (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = expire_uploads_once(&state).await {
            tracing::warn!(error = %e, "expiring stale uploads failed; will retry");
        }
    }
}

/// How stale an upload's recorded activity may be: a chunk within this of the last
/// recorded one is not recorded again (see `UploadTracker::should_touch`).
pub(crate) fn touch_interval(state: &AppState) -> Duration {
    (state.settings.upload_expiry / 10).min(Duration::from_secs(60))
}

async fn expire_uploads_once(state: &AppState) -> Result<(), Box<dyn std::error::Error>> {
    // Recorded activity lags by up to the touch interval, so the cutoff allows for it:
    // an upload is never expired sooner than `upload_expiry` after its last chunk.
    let cutoff =
        now_ms() - (state.settings.upload_expiry + touch_interval(state)).as_millis() as i64;
    for upload in state.meta.stale_uploads(cutoff).await? {
        state.uploads.forget(&upload.id);
        state.store.upload_delete(&upload.id).await?;
        state.meta.delete_upload(&upload.id).await?;
        tracing::info!(id = %upload.id, repository = %upload.repository_path, "expired stale upload");
    }
    // Upload data without a session row: what a failed or interrupted removal left.
    // A session's row is written before its data and removed after it, so data with no
    // row is never an upload in progress.
    for id in state.store.upload_list().await? {
        if state.meta.upload(&id).await?.is_none() {
            state.uploads.forget(&id);
            state.store.upload_delete(&id).await?;
            tracing::info!(%id, "removed upload data that had no upload session");
        }
    }
    Ok(())
}

/// Remove repositories queued for deletion (`DELETE …/registry/repositories/:id`).
/// Their blobs stay until garbage collection finds them unreferenced.
async fn delete_repositories(state: Arc<AppState>) {
    loop {
        match state.meta.scheduled_repository_deletes().await {
            Ok(ids) => {
                for id in ids {
                    match state.meta.delete_repository(id, now_ms()).await {
                        Ok(()) => tracing::info!(repository_id = id, "repository deleted"),
                        Err(e) => {
                            tracing::error!(repository_id = id, error = %e, "deleting a repository failed; will retry")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "listing repositories to delete failed; will retry")
            }
        }
        let _ = tokio::time::timeout(DELETE_POLL, state.jobs.repositories.notified()).await;
    }
}

/// How often due policies are looked for when nothing else wakes the scheduler.
const POLICY_POLL: Duration = Duration::from_secs(30);
/// How soon an unfinished run is resumed, and how often claims held elsewhere are
/// looked at again.
const RESUME_AFTER: Duration = Duration::from_secs(2);
/// How long a worker's claim on a repository holds without renewal. The worker
/// renews it every `CLAIM_LEASE / 3` while its turn runs; a claim left by a node that
/// died lapses after this and the turn is taken up again, by any node.
const CLAIM_LEASE: Duration = Duration::from_secs(15);

/// The cleanup-policy scheduler: start runs of due policies (their repositories are
/// queued and `next_run_at` advances by the cadence), then let up to
/// `worker_capacity` workers (of the whole instance, all nodes together) take queued
/// repositories, one turn each. A turn that hits a limit leaves its repository
/// `cleanup_unfinished`, resumed shortly after; so does a turn whose worker stopped
/// (its claim lapsed).
async fn run_cleanup_policies(state: Arc<AppState>) {
    loop {
        let pending = match cleanup_round(&state).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "cleanup round failed; will retry");
                false
            }
        };
        let wait = if pending { RESUME_AFTER } else { POLICY_POLL };
        let _ = tokio::time::timeout(wait, state.jobs.cleanup.notified()).await;
    }
}

fn lease_from_now() -> i64 {
    now_ms() + CLAIM_LEASE.as_millis() as i64
}

/// One scheduler round. Returns whether work remains queued.
async fn cleanup_round(state: &Arc<AppState>) -> Result<bool, berth_meta::MetaError> {
    let now = now_ms();
    let (reset, held) = state.meta.reset_lapsed_cleanups(now).await?;
    if reset > 0 {
        tracing::info!(
            repositories = reset,
            "resuming cleanup turns whose worker stopped (a restart, a node gone)"
        );
    }
    for (project_id, policy) in state.meta.due_policies(now).await? {
        let Some(due_at) = policy.next_run_at else {
            continue;
        };
        let next = berth_core::cleanup::next_run_at(&policy.cadence, now);
        let Some(queued) = state
            .meta
            .start_policy_run(project_id, due_at, next)
            .await?
        else {
            continue; // another node started this run
        };
        tracing::info!(
            project_id,
            repositories = queued,
            "cleanup policy run started"
        );
    }
    let limits =
        crate::instance::cleanup_limits(state.meta.as_ref(), state.settings.cleanup).await?;
    let capacity = limits.worker_capacity.max(1);
    let mut workers = tokio::task::JoinSet::new();
    // Take queued repositories while this instance has a free worker (counting the
    // workers of every node); what is left waits for a later round.
    while workers.len() < capacity {
        let Some(claim) = state
            .meta
            .claim_next_cleanup(now_ms(), lease_from_now(), capacity as i64)
            .await?
        else {
            break;
        };
        let state = state.clone();
        workers.spawn(async move {
            if let Err(e) = cleanup_repository(&state, &claim, limits).await {
                tracing::error!(repository = %claim.repository.path, error = %e, "cleanup turn failed");
                // Leave it for another turn rather than stuck as ongoing.
                let _ = state
                    .meta
                    .finish_cleanup(&claim, "cleanup_unfinished")
                    .await;
            }
        });
    }
    let worked = !workers.is_empty();
    while workers.join_next().await.is_some() {}
    // Claims held elsewhere are looked at again soon too: their node may have died.
    Ok(!state.meta.cleanup_queue(1).await?.is_empty() || (!worked && held > 0))
}

/// One worker's turn on a repository it has claimed. The turn stops if the claim is
/// lost (its lease lapsed, say while the database was out of reach, and the turn was
/// handed to another worker), so no two workers work one repository.
async fn cleanup_repository(
    state: &AppState,
    claim: &berth_meta::CleanupClaim,
    limits: crate::cleanup::Limits,
) -> Result<(), berth_meta::MetaError> {
    let repo = &claim.repository;
    let policy = match repo.project_id {
        Some(pid) => state.meta.expiration_policy(pid).await?,
        None => None,
    };
    let rules = match policy
        .as_ref()
        .filter(|p| p.enabled)
        .map(crate::cleanup::rules_of)
    {
        Some(Ok(rules)) => rules,
        Some(Err(e)) => {
            tracing::warn!(repository = %repo.path, error = %e, "cleanup policy is invalid; skipping");
            state
                .meta
                .finish_cleanup(claim, "cleanup_unscheduled")
                .await?;
            return Ok(());
        }
        // Disabled (or removed) since the run was queued: nothing to do.
        None => {
            state
                .meta
                .finish_cleanup(claim, "cleanup_unscheduled")
                .await?;
            return Ok(());
        }
    };
    let policy_actor = berth_meta::Actor::system("cleanup_policy");
    let turn = crate::cleanup::run_turn(
        state.meta.as_ref(),
        repo.id,
        &rules,
        limits,
        crate::cleanup::RunBy {
            reason: "policy",
            run: None,
            actor: &policy_actor,
            who: berth_core::protection::Standing::NOBODY,
        },
        |_, _| {},
    );
    let renew = async {
        loop {
            tokio::time::sleep(CLAIM_LEASE / 3).await;
            match state.meta.renew_cleanup(claim, lease_from_now()).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(repository = %repo.path, error = %e, "renewing a cleanup claim failed")
                }
            }
        }
    };
    let outcome = tokio::select! {
        outcome = turn => outcome?,
        () = renew => {
            tracing::warn!(
                repository = %repo.path,
                "this turn's claim lapsed and was handed on; the turn stops here"
            );
            return Ok(());
        }
    };
    let status = if outcome.finished {
        "cleanup_unscheduled"
    } else {
        "cleanup_unfinished"
    };
    if !state.meta.finish_cleanup(claim, status).await? {
        tracing::warn!(
            repository = %repo.path,
            deleted = outcome.deleted,
            "this turn's claim lapsed and was handed on as it ended; its end is the new worker's"
        );
        return Ok(());
    }
    tracing::info!(
        repository = %repo.path,
        deleted = outcome.deleted,
        remaining = (outcome.doomed as u64).saturating_sub(outcome.deleted),
        status,
        "cleanup turn done"
    );
    Ok(())
}

/// Online garbage collection: review queued items once their delay has passed.
async fn collect_garbage(state: Arc<AppState>) {
    let delay = state.settings.gc_review_delay;
    // Look often enough that a short delay (tests, small instances) is honoured.
    let every = (delay / 2).clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        let due_before = now_ms() - delay.as_millis() as i64;
        match crate::gc::review_due(
            state.meta.as_ref(),
            state.store.as_ref(),
            due_before,
            state.settings.gc_delete_untagged,
        )
        .await
        {
            Ok(s) => {
                metrics::counter!("berth_gc_manifests_deleted_total")
                    .increment(s.manifests_deleted);
                metrics::counter!("berth_gc_blobs_deleted_total").increment(s.blobs_deleted);
                metrics::counter!("berth_gc_bytes_freed_total").increment(s.bytes_freed);
                // The metrics are this process's; the database has the installation's.
                let freed = berth_meta::GcFreed {
                    manifests: s.manifests_deleted as i64,
                    blobs: s.blobs_deleted as i64,
                    bytes: s.bytes_freed as i64,
                };
                if let Err(e) = state.meta.record_gc_freed(&freed, now_ms()).await {
                    tracing::warn!(error = %e, "recording what garbage collection freed");
                }
                if s != crate::gc::GcStats::default() {
                    tracing::info!(
                        manifests = s.manifests_deleted,
                        blobs = s.blobs_deleted,
                        bytes = s.bytes_freed,
                        "garbage collected"
                    )
                }
            }
            Err(e) => tracing::warn!(error = %e, "garbage collection round failed; will retry"),
        }
        match state.meta.review_queue_lengths().await {
            Ok((manifests, blobs)) => {
                metrics::gauge!("berth_gc_review_queue_depth", "queue" => "manifests")
                    .set(manifests as f64);
                metrics::gauge!("berth_gc_review_queue_depth", "queue" => "blobs")
                    .set(blobs as f64);
            }
            Err(e) => tracing::debug!(error = %e, "reading the review queues' lengths failed"),
        }
        // Tag history past its retention goes; never within the undo window, which
        // garbage collection reads from the same rows.
        let keep = state.settings.tag_history_retention.max(delay);
        match state
            .meta
            .prune_tag_history(now_ms() - keep.as_millis() as i64)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "tag history pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning tag history failed; will retry"),
        }
        tokio::time::sleep(every).await;
    }
}
