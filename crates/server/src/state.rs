//! What every handler shares: the metadata and blob stores, settings, and the running
//! hashes of uploads in progress.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use berth_meta::Meta;
use berth_store::{BlobStore, PendingHash};
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Base of absolute URLs in `Location` and `Link` headers. When unset, they are
    /// built from the request's `Host` (as distribution does).
    pub external_url: Option<String>,
    /// Upload sessions untouched for this long are removed with their data.
    pub upload_expiry: Duration,
    /// Lifetime of registry bearer tokens (GitLab's default: 5 minutes).
    pub token_ttl: Duration,
    /// `iss` of registry tokens.
    pub token_issuer: String,
    /// One bulk tag deletion per repository per this interval (GitLab: an hour); zero
    /// turns the limit off.
    pub bulk_delete_interval: Duration,
    /// Refuse project and group path changes while their registries hold tags, with
    /// GitLab's messages, instead of moving the repositories along.
    pub refuse_moves_with_tags: bool,
    /// Starting values of the cleanup limits (an administrator may change them).
    pub cleanup: crate::cleanup::Limits,
    /// How long an item that lost its last reference waits before garbage collection
    /// reviews it.
    pub gc_review_delay: Duration,
    /// Whether garbage collection also deletes untagged manifests (GitLab's online GC
    /// does; the default).
    pub gc_delete_untagged: bool,
    /// How long tag history is kept (at least `gc_review_delay`, the undo window).
    pub tag_history_retention: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (none by default).
    pub trusted_proxies: crate::client_addr::TrustedProxies,
}

pub struct AppState {
    pub meta: Arc<dyn Meta>,
    pub store: Arc<dyn BlobStore>,
    pub settings: Settings,
    pub uploads: UploadTracker,
    pub signer: crate::auth::jwt::Signer,
    pub login: crate::auth::LoginGuard,
    pub jobs: crate::jobs::Jobs,
    pub metrics: Option<PrometheusHandle>,
    /// The dependency proxy: its settings, upstream client and fetches in progress.
    pub proxy: crate::proxy::Proxy,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.settings.external_url {
            return url.trim_end_matches('/').to_string();
        }
        let host = headers
            .get("x-forwarded-host")
            .or_else(|| headers.get("host"))
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let proto = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("http");
        format!("{proto}://{host}")
    }
}

/// Milliseconds since the Unix epoch; the one place the server reads the clock for metadata.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Per-node state of uploads in progress: the running hash of each (with the offset
/// it covers, which it may still be at work on after the request that wrote them was
/// answered) and which uploads a request is writing right now. Lost on restart or
/// absent on another node; an upload is then re-hashed from storage.
#[derive(Default)]
pub struct UploadTracker {
    hashes: Mutex<HashMap<String, (u64, PendingHash)>>,
    busy: Mutex<HashSet<String>>,
    /// When this node last recorded activity of each upload in metadata (Unix ms).
    touched: Mutex<HashMap<String, i64>>,
}

/// While held, no other request of this node writes to the upload.
pub struct UploadGuard<'a> {
    tracker: &'a UploadTracker,
    id: String,
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.tracker.busy.lock() {
            b.remove(&self.id);
        }
    }
}

impl UploadTracker {
    /// Claim an upload for one request; `None` when another request holds it.
    pub fn claim(&self, id: &str) -> Option<UploadGuard<'_>> {
        let mut busy = self.busy.lock().ok()?;
        if !busy.insert(id.to_string()) {
            return None;
        }
        Some(UploadGuard {
            tracker: self,
            id: id.to_string(),
        })
    }

    pub fn take_hash(&self, id: &str) -> Option<(u64, PendingHash)> {
        self.hashes.lock().ok()?.remove(id)
    }

    pub fn put_hash(&self, id: &str, offset: u64, hasher: PendingHash) {
        if let Ok(mut m) = self.hashes.lock() {
            m.insert(id.to_string(), (offset, hasher));
        }
    }

    pub fn forget(&self, id: &str) {
        if let Ok(mut m) = self.hashes.lock() {
            m.remove(id);
        }
        if let Ok(mut m) = self.touched.lock() {
            m.remove(id);
        }
    }

    /// The upload's row was written at `at` (it was just created), which records its
    /// activity as a touch would: the first chunk soon after is not recorded again.
    pub fn recorded(&self, id: &str, at: i64) {
        if let Ok(mut m) = self.touched.lock() {
            m.insert(id.to_string(), at);
        }
    }

    /// Whether the upload's activity at `now` must be recorded in metadata: not when
    /// this node recorded it less than `every` ms ago. Each chunk of a chunked upload
    /// would otherwise cost a committed metadata write (and, being a write, empty the
    /// manifest cache) only to move the expiry clock by milliseconds.
    pub fn should_touch(&self, id: &str, now: i64, every: i64) -> bool {
        let Ok(mut m) = self.touched.lock() else {
            return true;
        };
        match m.get(id) {
            Some(at) if now - at < every => false,
            _ => {
                m.insert(id.to_string(), now);
                true
            }
        }
    }
}
