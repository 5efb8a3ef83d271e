//! The dependency proxy's settings (`dependency_proxy.*` in berth.toml).

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The instance switch; groups have their own.
    pub enabled: bool,
    /// The default upstream (Docker Hub).
    pub upstream_url: String,
    pub upstream_username: Option<String>,
    pub upstream_password: Option<String>,
    /// Registry hosts an image may name as its first segment (`ghcr.io`), each
    /// reached at `https://<host>`, or `host=url` to reach it elsewhere (a mirror).
    pub extra_upstreams: Vec<String>,
    /// Whether `http://` upstreams are allowed at all.
    pub allow_insecure_upstreams: bool,
    /// A manifest pulled by tag is checked upstream at most this often.
    pub manifest_revalidate: Duration,
    /// Connecting to an upstream, and any pause in its answer, are cut after this.
    pub timeout: Duration,
    /// Where blobs being fetched are spooled for the clients that wait on them.
    pub spool_dir: PathBuf,
    /// How often the TTL policies run.
    pub ttl_interval: Duration,
    /// The length of a TTL "day" (a day; shorter only in tests).
    pub ttl_unit: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            enabled: true,
            upstream_url: "https://registry-1.docker.io".into(),
            upstream_username: None,
            upstream_password: None,
            extra_upstreams: Vec::new(),
            allow_insecure_upstreams: false,
            manifest_revalidate: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            spool_dir: std::env::temp_dir().join("berth-proxy-spool"),
            ttl_interval: Duration::from_secs(3600),
            ttl_unit: Duration::from_secs(24 * 3600),
        }
    }
}

impl ProxyConfig {
    /// The base URL of the extra upstream `host`, if it is allowed.
    pub fn extra_upstream(&self, host: &str) -> Option<String> {
        self.extra_upstreams.iter().find_map(|entry| {
            let (name, url) = match entry.split_once('=') {
                Some((n, u)) => (n.trim(), u.trim().trim_end_matches('/').to_string()),
                None => (entry.trim(), format!("https://{}", entry.trim())),
            };
            name.eq_ignore_ascii_case(host).then_some(url)
        })
    }

    /// Every upstream URL is http(s), and plain http only when allowed.
    pub fn validate(&self) -> Result<(), String> {
        let mut urls = vec![(
            "dependency_proxy.upstream_url".to_string(),
            self.upstream_url.clone(),
        )];
        for e in &self.extra_upstreams {
            let host = e.split('=').next().unwrap_or(e).trim();
            if let Some(url) = self.extra_upstream(host) {
                urls.push((format!("dependency_proxy.extra_upstreams ({host})"), url));
            }
        }
        for (what, url) in urls {
            if url.starts_with("http://") {
                if !self.allow_insecure_upstreams {
                    return Err(format!(
                        "{what} is {url}: plain http:// upstreams need dependency_proxy.allow_insecure_upstreams = true"
                    ));
                }
            } else if !url.starts_with("https://") {
                return Err(format!(
                    "{what} must start with https:// (or http://), got {url:?}"
                ));
            }
        }
        Ok(())
    }
}
