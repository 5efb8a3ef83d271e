//! The one configuration struct, layered: built-in defaults, then `berth.toml`, then
//! `BERTH_*` environment variables, then command-line flags.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Where blobs (and, without `database.url`, the SQLite metadata) live.
    pub data_dir: PathBuf,
    /// Public base URL used in `Location` and `Link` headers.
    pub external_url: Option<String>,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Upload sessions idle for this long are removed (e.g. `24h`, `30m`).
    #[serde(with = "humantime_serde_compat")]
    pub upload_expiry: Duration,
    /// Lifetime of registry bearer tokens (GitLab's default: 5 minutes).
    #[serde(with = "humantime_serde_compat")]
    pub token_expiry: Duration,
    /// `iss` of registry bearer tokens.
    pub token_issuer: String,
    /// One bulk tag deletion per repository per this interval (`0s` turns it off).
    #[serde(with = "humantime_serde_compat")]
    pub bulk_delete_interval: Duration,
    /// Refuse project/group path changes while tags exist, as GitLab does, instead of
    /// moving the repositories along.
    pub refuse_moves_with_tags: bool,
    /// Concurrent cleanup-policy workers (at least 1).
    pub container_registry_expiration_policies_worker_capacity: usize,
    /// Seconds one cleanup turn may spend deleting tags.
    pub container_registry_delete_tags_service_timeout: u64,
    /// Tags one cleanup turn may delete; the rest wait for the next turn.
    pub container_registry_cleanup_tags_service_max_list_size: usize,
    /// Garbage collection (`[gc]` in berth.toml, `BERTH_GC_*` in the environment).
    pub gc: GcConfig,
    /// Tag history (`[tag_history]`, `BERTH_TAG_HISTORY_*`).
    pub tag_history: TagHistoryConfig,
    /// Where blob bytes live (`[storage]`, `BERTH_STORAGE_KIND`, `BERTH_S3_*`).
    pub storage: StorageConfig,
    /// Metadata database (`[database]` in berth.toml, `BERTH_DATABASE_*`).
    pub database: DatabaseConfig,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For` names
    /// the client; empty (the default) believes nobody's. A list in berth.toml,
    /// comma-separated in `BERTH_TRUSTED_PROXIES`.
    #[serde(with = "string_list")]
    pub trusted_proxies: Vec<String>,
    /// A client must send a whole request head within this (and its first one this
    /// soon after connecting); `BERTH_HEADER_READ_TIMEOUT`.
    #[serde(with = "humantime_serde_compat")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with nothing going on is closed after this;
    /// `BERTH_IDLE_TIMEOUT`.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// A request body (an upload) that delivers nothing for this long is cut; the
    /// upload keeps what it received and can be resumed; `BERTH_BODY_TIMEOUT`.
    #[serde(with = "humantime_serde_compat")]
    pub body_timeout: Duration,
    /// A request body must average at least this many bytes a second over each
    /// `body_timeout` span, or it is cut like a stalled one (0: no minimum);
    /// `BERTH_BODY_MIN_RATE`.
    pub body_min_rate: u64,
    /// Open connections beyond this are answered 503; `BERTH_MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// The dependency proxy (`[dependency_proxy]`, `BERTH_DEPENDENCY_PROXY_*`).
    pub dependency_proxy: DependencyProxyConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependencyProxyConfig {
    /// The instance switch (each group has its own too).
    pub enabled: bool,
    /// The default upstream: Docker Hub.
    pub upstream_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_password: Option<String>,
    /// Registry hosts an image may name first (`…/containers/ghcr.io/org/img`), each
    /// reached at `https://<host>`, or `host=url` to reach it elsewhere. A list in
    /// berth.toml, comma-separated in the environment.
    #[serde(with = "string_list")]
    pub extra_upstreams: Vec<String>,
    /// Allow plain `http://` upstreams.
    pub allow_insecure_upstreams: bool,
    /// A manifest pulled by tag is checked upstream at most this often.
    #[serde(with = "humantime_serde_compat")]
    pub manifest_revalidate: Duration,
    /// Connecting to an upstream, and any pause in its answer, are cut after this.
    #[serde(with = "humantime_serde_compat")]
    pub upstream_timeout: Duration,
    /// How often the groups' TTL policies run.
    #[serde(with = "humantime_serde_compat")]
    pub ttl_interval: Duration,
    /// The length of a TTL day (a day; shorter only to test TTL policies).
    #[serde(with = "humantime_serde_compat")]
    pub ttl_unit: Duration,
}

impl Default for DependencyProxyConfig {
    fn default() -> Self {
        let d = berth_server::proxy::ProxyConfig::default();
        DependencyProxyConfig {
            enabled: d.enabled,
            upstream_url: d.upstream_url,
            upstream_username: None,
            upstream_password: None,
            extra_upstreams: Vec::new(),
            allow_insecure_upstreams: false,
            manifest_revalidate: d.manifest_revalidate,
            upstream_timeout: d.timeout,
            ttl_interval: d.ttl_interval,
            ttl_unit: d.ttl_unit,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `filesystem` (under `data_dir`) or `s3`.
    pub kind: StorageKind,
    /// The bucket when `kind = "s3"` (`[storage.s3]`).
    pub s3: S3Settings,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    #[default]
    Filesystem,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// e.g. `http://127.0.0.1:9000` for a self-hosted server; unset for AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub region: String,
    /// Unset: taken from the usual AWS environment or instance metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key` (most self-hosted servers).
    /// Unset: path style for an endpoint that is an IP address or `localhost` (they
    /// have no per-bucket host names), virtual-hosted style otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Keys go under this prefix, so one bucket may hold more than Berth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Answer blob GETs with a redirect to a short-lived pre-signed URL.
    pub redirect_blobs: bool,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            bucket: None,
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            path_style: None,
            prefix: None,
            redirect_blobs: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database` to keep metadata in PostgreSQL
    /// (shared by several nodes); absent: SQLite at `<data_dir>/berth.db`
    /// (`BERTH_DATABASE_URL`, `--database-url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// PostgreSQL connections per node (`BERTH_DATABASE_MAX_CONNECTIONS`).
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            max_connections: berth_meta::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl DatabaseConfig {
    /// The URL with any password replaced, for printing.
    pub fn redacted_url(&self) -> Option<String> {
        let url = self.url.as_deref()?;
        let Some((scheme, rest)) = url.split_once("://") else {
            return Some(url.to_string());
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        Some(match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
                None => url.to_string(),
            },
            None => url.to_string(),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// How long something that lost its last reference waits before it is reviewed
    /// (`BERTH_GC_REVIEW_DELAY`, e.g. `24h` or `2s`).
    #[serde(with = "humantime_serde_compat")]
    pub review_delay: Duration,
    /// Also delete untagged manifests that no index or subject references, as
    /// GitLab's online GC does (the default; `BERTH_GC_DELETE_UNTAGGED=false` keeps
    /// them). A manifest a tag left is kept at least `review_delay`: the undo window.
    pub delete_untagged: bool,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            review_delay: Duration::from_secs(24 * 3600),
            delete_untagged: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagHistoryConfig {
    /// How long tag changes are kept (`BERTH_TAG_HISTORY_RETENTION`, e.g. `14d`);
    /// never less than `gc.review_delay`.
    #[serde(with = "humantime_serde_compat")]
    pub retention: Duration,
}

impl Default for TagHistoryConfig {
    fn default() -> Self {
        TagHistoryConfig {
            retention: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings that `BERTH_<NAME>` sets. Other `BERTH_*` variables (test tooling, say)
/// are not configuration and are left alone.
const ENV_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "external_url",
    "log_level",
    "log_format",
    "upload_expiry",
    "token_expiry",
    "token_issuer",
    "bulk_delete_interval",
    "refuse_moves_with_tags",
    "container_registry_expiration_policies_worker_capacity",
    "container_registry_delete_tags_service_timeout",
    "container_registry_cleanup_tags_service_max_list_size",
    "gc.review_delay",
    "gc.delete_untagged",
    "tag_history.retention",
    "storage.kind",
    "storage.s3.bucket",
    "storage.s3.endpoint",
    "storage.s3.region",
    "storage.s3.access_key_id",
    "storage.s3.secret_access_key",
    "storage.s3.path_style",
    "storage.s3.prefix",
    "storage.s3.redirect_blobs",
    "database.url",
    "database.max_connections",
    "trusted_proxies",
    "header_read_timeout",
    "idle_timeout",
    "body_timeout",
    "body_min_rate",
    "max_connections",
    "dependency_proxy.enabled",
    "dependency_proxy.upstream_url",
    "dependency_proxy.upstream_username",
    "dependency_proxy.upstream_password",
    "dependency_proxy.extra_upstreams",
    "dependency_proxy.allow_insecure_upstreams",
    "dependency_proxy.manifest_revalidate",
    "dependency_proxy.upstream_timeout",
    "dependency_proxy.ttl_interval",
    "dependency_proxy.ttl_unit",
];

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5000".into(),
            data_dir: PathBuf::from("./berth-data"),
            external_url: None,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            upload_expiry: Duration::from_secs(24 * 3600),
            token_expiry: Duration::from_secs(5 * 60),
            token_issuer: "berth".into(),
            bulk_delete_interval: Duration::from_secs(3600),
            refuse_moves_with_tags: false,
            container_registry_expiration_policies_worker_capacity: 4,
            container_registry_delete_tags_service_timeout: 250,
            container_registry_cleanup_tags_service_max_list_size: 200,
            gc: GcConfig::default(),
            tag_history: TagHistoryConfig::default(),
            storage: StorageConfig::default(),
            database: DatabaseConfig::default(),
            trusted_proxies: Vec::new(),
            header_read_timeout: berth_server::serving::Limits::default().header_read,
            idle_timeout: berth_server::serving::Limits::default().idle,
            body_timeout: berth_server::serving::Limits::default().body_inactivity,
            body_min_rate: berth_server::serving::Limits::default().body_min_rate,
            max_connections: berth_server::serving::Limits::default().max_connections,
            dependency_proxy: DependencyProxyConfig::default(),
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_expiry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseOverrides>,
}

#[derive(Debug, Default, Serialize)]
pub struct DatabaseOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Config {
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("berth.db")
    }

    pub fn storage_path(&self) -> PathBuf {
        self.data_dir.join("storage")
    }

    pub fn cleanup_limits(&self) -> berth_server::cleanup::Limits {
        berth_server::cleanup::Limits {
            worker_capacity: self
                .container_registry_expiration_policies_worker_capacity
                .max(1),
            delete_timeout_secs: self.container_registry_delete_tags_service_timeout.max(1),
            max_list_size: self
                .container_registry_cleanup_tags_service_max_list_size
                .max(1),
        }
    }

    /// Open the configured blob store.
    pub fn open_store(&self) -> anyhow::Result<Arc<dyn berth_store::BlobStore>> {
        Ok(match self.storage.kind {
            StorageKind::Filesystem => Arc::new(
                berth_store::FsStore::open(self.storage_path()).context("opening blob storage")?,
            ),
            StorageKind::S3 => {
                let s = &self.storage.s3;
                Arc::new(
                    berth_store::S3Store::open(&berth_store::S3Config {
                        bucket: s.bucket.clone().unwrap_or_default(),
                        endpoint: s.endpoint.clone().filter(|e| !e.is_empty()),
                        region: s.region.clone(),
                        access_key_id: s.access_key_id.clone(),
                        secret_access_key: s.secret_access_key.clone(),
                        path_style: s.path_style.unwrap_or_else(|| {
                            s.endpoint
                                .as_deref()
                                .is_some_and(berth_store::endpoint_needs_path_style)
                        }),
                        prefix: s.prefix.clone(),
                        redirect_blobs: s.redirect_blobs,
                        part_size: None,
                        copy_limit: None,
                    })
                    .context("opening S3 blob storage")?,
                )
            }
        })
    }

    /// The effective configuration for display, with secrets masked.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if c.dependency_proxy.upstream_password.is_some() {
            c.dependency_proxy.upstream_password = Some("********".into());
        }
        if c.storage.s3.secret_access_key.is_some() {
            c.storage.s3.secret_access_key = Some("********".into());
        }
        // The URL may carry a password.
        c.database.url = c.database.redacted_url();
        c
    }

    pub fn serving_limits(&self) -> berth_server::serving::Limits {
        berth_server::serving::Limits {
            header_read: self.header_read_timeout,
            idle: self.idle_timeout,
            body_inactivity: self.body_timeout,
            body_min_rate: self.body_min_rate,
            max_connections: self.max_connections,
        }
    }

    pub fn trusted_proxies(&self) -> anyhow::Result<berth_server::client_addr::TrustedProxies> {
        berth_server::client_addr::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))
    }

    /// Where the token signing key was kept before it moved into the database; a file
    /// found there is adopted by the first start.
    pub fn proxy_config(&self) -> berth_server::proxy::ProxyConfig {
        let p = &self.dependency_proxy;
        berth_server::proxy::ProxyConfig {
            enabled: p.enabled,
            upstream_url: p.upstream_url.clone(),
            upstream_username: p.upstream_username.clone(),
            upstream_password: p.upstream_password.clone(),
            extra_upstreams: p.extra_upstreams.clone(),
            allow_insecure_upstreams: p.allow_insecure_upstreams,
            manifest_revalidate: p.manifest_revalidate,
            timeout: p.upstream_timeout,
            spool_dir: self.data_dir.join("proxy-spool"),
            ttl_interval: p.ttl_interval,
            ttl_unit: p.ttl_unit,
        }
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.data_dir.join("jwt-signing-key.pem")
    }
}

impl Config {
    /// `file` is an explicit config path (it must exist); without one, `./berth.toml`
    /// is read when present.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "config file {} does not exist",
                    path.display()
                );
                fig = fig.merge(Toml::file(path));
            }
            None => fig = fig.merge(Toml::file("berth.toml")),
        }
        fig = fig
            .merge(
                Env::prefixed("BERTH_")
                    .map(|k| {
                        // `BERTH_GC_REVIEW_DELAY` sets `gc.review_delay`, `BERTH_S3_BUCKET`
                        // `storage.s3.bucket`, `BERTH_STORAGE_KIND` `storage.kind`.
                        let k = k.as_str().to_ascii_lowercase();
                        if let Some(rest) = k.strip_prefix("tag_history_") {
                            format!("tag_history.{rest}").into()
                        } else if let Some(rest) = k.strip_prefix("gc_") {
                            format!("gc.{rest}").into()
                        } else if let Some(rest) = k.strip_prefix("s3_") {
                            format!("storage.s3.{rest}").into()
                        } else if let Some(rest) = k.strip_prefix("storage_") {
                            format!("storage.{rest}").into()
                        } else if let Some(rest) = k.strip_prefix("dependency_proxy_") {
                            format!("dependency_proxy.{rest}").into()
                        } else if let Some(rest) = k.strip_prefix("database_") {
                            format!("database.{rest}").into()
                        } else {
                            k.into()
                        }
                    })
                    .only(ENV_KEYS),
            )
            .merge(Serialized::defaults(overrides));
        let cfg: Config = fig.extract().context("invalid configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The settings of one file over the defaults, without the environment or flags
    /// (those configure the instance a command runs on): `berth migrate --to FILE`.
    pub fn load_file(path: &Path) -> anyhow::Result<Config> {
        anyhow::ensure!(
            path.exists(),
            "config file {} does not exist",
            path.display()
        );
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(path))
            .extract()
            .with_context(|| format!("invalid configuration in {}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let cfg = self;
        if cfg.storage.kind == StorageKind::S3 {
            anyhow::ensure!(
                cfg.storage
                    .s3
                    .bucket
                    .as_deref()
                    .is_some_and(|b| !b.is_empty()),
                "storage.kind = \"s3\" needs storage.s3.bucket (BERTH_S3_BUCKET)"
            );
        }
        cfg.trusted_proxies()?;
        cfg.proxy_config()
            .validate()
            .map_err(|e| anyhow::anyhow!(e))?;
        anyhow::ensure!(
            !cfg.dependency_proxy.upstream_timeout.is_zero(),
            "dependency_proxy.upstream_timeout must be longer than zero"
        );
        for (name, d) in [
            ("header_read_timeout", cfg.header_read_timeout),
            ("idle_timeout", cfg.idle_timeout),
            ("body_timeout", cfg.body_timeout),
        ] {
            anyhow::ensure!(!d.is_zero(), "{name} must be longer than zero");
        }
        anyhow::ensure!(
            cfg.max_connections >= 1,
            "max_connections must be at least 1"
        );
        if let Some(url) = &cfg.external_url {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "external_url must start with http:// or https://, got {url:?}"
            );
        }
        Ok(())
    }
}

/// A list written as a list in files, or as one comma-separated string (the only
/// way an environment variable can hold one).
mod string_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match Either::deserialize(d)? {
            Either::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            Either::Many(v) => v,
        })
    }
}

/// Durations are written the human way (`24h`, `90s`) in files and the environment.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's type
    fn layers_in_order() {
        figment::Jail::expect_with(|jail| {
            let d = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(d.listen, "127.0.0.1:5000");
            assert_eq!(d.data_dir, PathBuf::from("./berth-data"));

            jail.create_file(
                "berth.toml",
                "listen = \"127.0.0.1:6000\"\nupload_expiry = \"2h\"\ndata_dir = \"/x\"",
            )?;
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.listen, "127.0.0.1:6000");
            assert_eq!(c.upload_expiry, Duration::from_secs(7200));

            jail.set_env("BERTH_LISTEN", "127.0.0.1:7000");
            jail.set_env("BERTH_DATA_DIR", "/y");
            jail.set_env("BERTH_TEST_SOMETHING_ELSE", "ignored");
            jail.set_env("BERTH_GC_REVIEW_DELAY", "2s");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.listen, "127.0.0.1:7000");
            assert_eq!(c.data_dir, PathBuf::from("/y"));
            assert_eq!(c.gc.review_delay, Duration::from_secs(2));
            assert!(c.gc.delete_untagged, "GitLab's online GC is the default");
            assert_eq!(c.tag_history.retention, Duration::from_secs(14 * 24 * 3600));

            let flags = Overrides {
                listen: Some("127.0.0.1:8000".into()),
                ..Default::default()
            };
            let c = Config::load(None, &flags).unwrap();
            assert_eq!(c.listen, "127.0.0.1:8000");
            assert_eq!(c.data_dir, PathBuf::from("/y"));

            assert_eq!(c.storage.kind, StorageKind::Filesystem);
            jail.set_env("BERTH_STORAGE_KIND", "s3");
            assert!(
                Config::load(None, &Overrides::default()).is_err(),
                "s3 without a bucket"
            );
            jail.set_env("BERTH_S3_BUCKET", "images");
            jail.set_env("BERTH_S3_ENDPOINT", "http://127.0.0.1:9000");
            jail.set_env("BERTH_S3_PATH_STYLE", "true");
            jail.set_env("BERTH_S3_SECRET_ACCESS_KEY", "s3cret");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.storage.kind, StorageKind::S3);
            assert_eq!(c.storage.s3.bucket.as_deref(), Some("images"));
            assert_eq!(
                c.storage.s3.endpoint.as_deref(),
                Some("http://127.0.0.1:9000")
            );
            assert_eq!(c.storage.s3.path_style, Some(true));
            assert_eq!(c.storage.s3.region, "us-east-1");
            assert!(!toml::to_string(&c.redacted()).unwrap().contains("s3cret"));

            assert_eq!(c.database.url, None);
            jail.set_env("BERTH_DATABASE_URL", "postgres://u:secret@db:5432/berth");
            jail.set_env("BERTH_DATABASE_MAX_CONNECTIONS", "3");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(
                c.database.url.as_deref(),
                Some("postgres://u:secret@db:5432/berth")
            );
            assert_eq!(c.database.max_connections, 3);
            assert_eq!(
                c.database.redacted_url().as_deref(),
                Some("postgres://u:***@db:5432/berth")
            );
            let flags = Overrides {
                database: Some(DatabaseOverrides {
                    url: Some("postgres://other/berth".into()),
                }),
                ..Default::default()
            };
            let c = Config::load(None, &flags).unwrap();
            assert_eq!(c.database.url.as_deref(), Some("postgres://other/berth"));
            assert_eq!(c.database.max_connections, 3);

            assert!(c.trusted_proxies.is_empty());
            jail.set_env("BERTH_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1");
            let c = Config::load(None, &Overrides::default()).unwrap();
            assert_eq!(c.trusted_proxies, ["10.0.0.0/8", "192.0.2.1"]);
            jail.set_env("BERTH_TRUSTED_PROXIES", "10.0.0.0/40");
            let e = Config::load(None, &Overrides::default()).unwrap_err();
            assert!(format!("{e:#}").contains("10.0.0.0/40"), "{e:#}");
            jail.set_env("BERTH_TRUSTED_PROXIES", "");

            assert_eq!(c.header_read_timeout, Duration::from_secs(30));
            assert_eq!(c.max_connections, 4096);
            jail.set_env("BERTH_HEADER_READ_TIMEOUT", "2s");
            jail.set_env("BERTH_IDLE_TIMEOUT", "3s");
            jail.set_env("BERTH_BODY_TIMEOUT", "4s");
            jail.set_env("BERTH_BODY_MIN_RATE", "10");
            jail.set_env("BERTH_MAX_CONNECTIONS", "5");
            let l = Config::load(None, &Overrides::default())
                .unwrap()
                .serving_limits();
            assert_eq!(l.header_read, Duration::from_secs(2));
            assert_eq!(l.idle, Duration::from_secs(3));
            assert_eq!(l.body_inactivity, Duration::from_secs(4));
            assert_eq!(l.body_min_rate, 10);
            assert_eq!(l.max_connections, 5);
            jail.set_env("BERTH_IDLE_TIMEOUT", "0s");
            assert!(Config::load(None, &Overrides::default()).is_err());
            jail.set_env("BERTH_IDLE_TIMEOUT", "90s");

            jail.set_env("BERTH_EXTERNAL_URL", "registry.example.com");
            assert!(Config::load(None, &Overrides::default()).is_err());
            Ok(())
        });
    }
}
