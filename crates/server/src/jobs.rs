//! Background work inside `berth serve`: expiring abandoned uploads and removing
//! repositories whose deletion was requested. Each job runs in a loop that sleeps
//! until its next turn or until woken (a request that queued work wakes it).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::state::{now_ms, AppState};

/// Wakes background jobs when a request queued work for them.
#[derive(Default)]
pub struct Jobs {
    notify: Notify,
}

impl Jobs {
    pub fn wake(&self) {
        self.notify.notify_waiters();
    }
}

/// How often queued repository deletions are looked for when nobody wakes the job.
const DELETE_POLL: Duration = Duration::from_secs(30);

/// Start every background job; the returned handles are aborted on shutdown.
pub fn start(state: Arc<AppState>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(expire_uploads(state.clone())),
        tokio::spawn(delete_repositories(state)),
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

async fn expire_uploads_once(state: &AppState) -> Result<(), Box<dyn std::error::Error>> {
    let cutoff = now_ms() - state.settings.upload_expiry.as_millis() as i64;
    for upload in state.meta.stale_uploads(cutoff).await? {
        state.uploads.forget(&upload.id);
        state.store.upload_delete(&upload.id).await?;
        state.meta.delete_upload(&upload.id).await?;
        tracing::info!(id = %upload.id, repository = %upload.repository_path, "expired stale upload");
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
        let _ = tokio::time::timeout(DELETE_POLL, state.jobs.notify.notified()).await;
    }
}
