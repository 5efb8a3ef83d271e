//! What every handler shares: the metadata and blob stores, settings, and the running
//! hashes of uploads in progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use berth_meta::Meta;
use berth_oci::Hasher;
use berth_store::BlobStore;
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Base of absolute URLs in `Location` and `Link` headers. When unset, they are
    /// built from the request's `Host` (as distribution does).
    pub external_url: Option<String>,
    /// Upload sessions untouched for this long are removed with their data.
    pub upload_expiry: Duration,
}

pub struct AppState {
    pub meta: Arc<dyn Meta>,
    pub store: Arc<dyn BlobStore>,
    pub settings: Settings,
    pub hashes: HashCache,
    pub metrics: Option<PrometheusHandle>,
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

/// Running hash states of uploads, keyed by upload id, with the offset they cover.
/// Lost on restart or on another node; the upload is then re-hashed from storage.
#[derive(Default)]
pub struct HashCache(Mutex<HashMap<String, (u64, Hasher)>>);

impl HashCache {
    pub fn take(&self, id: &str) -> Option<(u64, Hasher)> {
        self.0.lock().ok()?.remove(id)
    }

    pub fn put(&self, id: &str, offset: u64, hasher: Hasher) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(id.to_string(), (offset, hasher));
        }
    }

    pub fn forget(&self, id: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(id);
        }
    }
}
