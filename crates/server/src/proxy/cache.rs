//! The cache's lifetime: purging a group's cache (the API) and the TTL policy, which
//! purges what was not pulled within a group's TTL. Metadata goes first, in one
//! transaction; then the bytes of blobs nothing else references, under the blob
//! lock as garbage collection deletes them.

use std::time::Duration;

use berth_meta::ProxyPurge;

use crate::gc::GcError;
use crate::state::{now_ms, AppState};

/// Purge group `namespace_id`'s cache, or only what was last pulled before
/// `read_before`. Returns what went and the bytes freed.
pub async fn purge(
    state: &AppState,
    namespace_id: i64,
    read_before: Option<i64>,
) -> Result<(ProxyPurge, u64), GcError> {
    let purge = state
        .meta
        .purge_proxy_cache(namespace_id, read_before)
        .await?;
    let (_, bytes) =
        crate::gc::delete_bytes(&*state.meta, &*state.store, &purge.freed, true).await?;
    Ok((purge, bytes))
}

/// One round of every group's TTL policy.
pub async fn ttl_round(state: &AppState) -> Result<(), GcError> {
    let day_ms = state.proxy.config.ttl_unit.as_millis() as i64;
    for (ns, days) in state.meta.proxy_ttl_groups().await? {
        let before = now_ms() - days.max(0) * day_ms;
        let (p, bytes) = purge(state, ns, Some(before)).await?;
        if p.removed.manifests + p.removed.blobs > 0 {
            tracing::info!(
                namespace_id = ns,
                ttl_days = days,
                manifests = p.removed.manifests,
                blobs = p.removed.blobs,
                bytes_freed = bytes,
                "dependency proxy TTL policy removed items not pulled within the TTL"
            );
        }
    }
    Ok(())
}

/// The TTL policy job: a round every `ttl_interval`.
pub async fn run_ttl_policies(state: std::sync::Arc<AppState>) {
    let every = state.proxy.config.ttl_interval.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = ttl_round(&state).await {
            tracing::warn!(error = %e, "dependency proxy TTL round failed; will retry");
        }
    }
}
