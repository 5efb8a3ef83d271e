//! The client side of the dependency proxy: which upstream registry an image comes
//! from, and requests to it with the registry token handshake docker does (a 401
//! with a `Bearer` challenge is answered by fetching a token from the challenge's
//! realm for the image's pull scope, then retrying; tokens are kept until shortly
//! before they expire). Every wait is bounded by the client's timeouts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode};

use super::config::ProxyConfig;

/// One upstream registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `scheme://host[:port]`, no trailing slash.
    pub base: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// An image as the upstream knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub upstream: Upstream,
    /// The repository name upstream (`library/alpine` for Docker Hub's `alpine`).
    pub image: String,
}

/// Pick the upstream for `image` (what follows `containers/`): an allowed extra
/// upstream when its first segment names one, else the default upstream, where a
/// one-segment name is an official image (`library/<name>`) as on Docker Hub.
pub fn target(cfg: &ProxyConfig, image: &str) -> Target {
    if let Some((first, rest)) = image.split_once('/') {
        if let Some(base) = cfg.extra_upstream(first) {
            return Target {
                upstream: Upstream {
                    base,
                    username: None,
                    password: None,
                },
                image: rest.to_string(),
            };
        }
    }
    let image = if image.contains('/') {
        image.to_string()
    } else {
        format!("library/{image}")
    };
    Target {
        upstream: Upstream {
            base: cfg.upstream_url.trim_end_matches('/').to_string(),
            username: cfg.upstream_username.clone(),
            password: cfg.upstream_password.clone(),
        },
        image,
    }
}

/// What went wrong upstream, with the upstream's own words where it gave some.
#[derive(Debug, Clone)]
pub enum UpstreamError {
    /// No answer: refused, reset, timed out, or the token service failed.
    Unreachable(String),
    /// An answer other than success: its status, and the first OCI error's code and
    /// message when the body carried one.
    Status {
        status: StatusCode,
        code: Option<String>,
        message: String,
        /// The upstream's `Retry-After` (with a 429 or 503), passed on to the client.
        retry_after: Option<String>,
    },
}

impl UpstreamError {
    /// Whether a cached copy should be served instead: the upstream is down, failing
    /// or rate-limiting, as opposed to saying no.
    pub fn is_outage(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_) => true,
            UpstreamError::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Unreachable(e) => write!(f, "upstream registry unreachable: {e}"),
            UpstreamError::Status {
                status,
                code,
                message,
                ..
            } => {
                write!(f, "upstream registry answered {}", status.as_u16())?;
                if let Some(c) = code {
                    write!(f, " {c}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
        }
    }
}

/// Requests to upstreams, with their tokens.
pub struct Client {
    http: reqwest::Client,
    /// Bearer tokens by (upstream, scope), with when to stop using them.
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

fn unreachable(e: reqwest::Error) -> UpstreamError {
    // The source chain says what really failed (refused, timed out, TLS).
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    UpstreamError::Unreachable(text)
}

impl Client {
    pub fn new(timeout: Duration) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            // Between any two reads of an answer, not for the whole of a large blob.
            .read_timeout(timeout)
            .user_agent(concat!(
                "berth-dependency-proxy/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            http,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// `method` on `<base>/v2/<image>/<suffix>`, following the upstream's auth
    /// challenge once. Success is any 2xx; anything else is an [`UpstreamError`].
    pub async fn send(
        &self,
        target: &Target,
        method: Method,
        suffix: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{}/v2/{}/{suffix}", target.upstream.base, target.image);
        let scope = format!("repository:{}:pull", target.image);
        let key = (target.upstream.base.clone(), scope.clone());
        let cached = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| {
                t.get(&key)
                    .filter(|(_, until)| *until > Instant::now())
                    .cloned()
            })
            .map(|(t, _)| t);
        let request = |auth: Option<String>| {
            let mut r = self.http.request(method.clone(), &url);
            if let Some(a) = accept {
                r = r.header("Accept", a);
            }
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r
        };
        let first = request(cached.map(|t| format!("Bearer {t}")))
            .send()
            .await
            .map_err(unreachable)?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return checked(first).await;
        }
        let challenge = first
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let auth = match parse_challenge(&challenge) {
            Some(Challenge::Bearer { realm, service }) => {
                let token = self
                    .token(&target.upstream, &realm, service.as_deref(), &scope)
                    .await?;
                let until = Instant::now() + token.1;
                if let Ok(mut t) = self.tokens.lock() {
                    t.retain(|_, (_, u)| *u > Instant::now());
                    t.insert(key, (token.0.clone(), until));
                }
                format!("Bearer {}", token.0)
            }
            Some(Challenge::Basic) => match basic(&target.upstream) {
                Some(b) => b,
                None => return checked(first).await,
            },
            None => return checked(first).await,
        };
        let second = request(Some(auth)).send().await.map_err(unreachable)?;
        checked(second).await
    }

    /// A token from the upstream's token service, and how long to use it.
    async fn token(
        &self,
        upstream: &Upstream,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), UpstreamError> {
        let mut query = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut r = self.http.get(realm).query(&query);
        if let Some(b) = basic(upstream) {
            r = r.header("Authorization", b);
        }
        let resp = checked(r.send().await.map_err(unreachable)?).await?;
        let body: serde_json::Value = resp.json().await.map_err(unreachable)?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| {
                UpstreamError::Unreachable("the upstream token service sent no token".into())
            })?;
        // The spec's default lifetime is 60 s; stop a little early.
        let secs = body
            .get("expires_in")
            .and_then(|e| e.as_u64())
            .unwrap_or(60)
            .max(10);
        Ok((token.to_string(), Duration::from_secs(secs - 5)))
    }
}

fn basic(upstream: &Upstream) -> Option<String> {
    use base64::Engine;
    let user = upstream.username.as_deref()?;
    let pass = upstream.password.as_deref().unwrap_or("");
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    ))
}

/// A success passes; anything else becomes an error with the upstream's reason.
async fn checked(resp: reqwest::Response) -> Result<reqwest::Response, UpstreamError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = header(resp.headers(), "retry-after")
        .filter(|v| v.len() <= 64)
        .map(str::to_string);
    // An error body is small; a misbehaving upstream's is cut short.
    let text = match tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned(),
        _ => String::new(),
    };
    let parsed: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let first = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(|e| e.get(0))
        .cloned();
    let code = first
        .as_ref()
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .map(str::to_string);
    let message = first
        .as_ref()
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_string()
        });
    Err(UpstreamError::Status {
        status,
        code,
        message,
        retry_after,
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
    },
    Basic,
}

/// `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    for (k, v) in challenge_params(params) {
        match k.to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v),
            "service" => service = Some(v),
            _ => {}
        }
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

/// `k="v",k2="v, with comma",k3=bare` pairs.
fn challenge_params(mut s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        let Some((k, rest)) = s.split_once('=') else {
            break;
        };
        let (v, rest) = match rest.strip_prefix('"') {
            Some(r) => match r.find('"') {
                Some(end) => (&r[..end], &r[end + 1..]),
                None => (r, ""),
            },
            None => rest.split_once(',').unwrap_or((rest, "")),
        };
        out.push((k.trim().to_string(), v.to_string()));
        s = rest;
    }
    out
}

/// Response headers worth passing to the client from an upstream answer.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn targets() {
        let cfg = ProxyConfig {
            extra_upstreams: vec!["ghcr.io".into(), "mirror.test=http://127.0.0.1:9".into()],
            ..Default::default()
        };
        let t = target(&cfg, "alpine");
        assert_eq!(t.image, "library/alpine");
        assert_eq!(t.upstream.base, "https://registry-1.docker.io");
        assert_eq!(target(&cfg, "bitnami/redis").image, "bitnami/redis");
        let t = target(&cfg, "ghcr.io/org/img");
        assert_eq!(
            (t.upstream.base.as_str(), t.image.as_str()),
            ("https://ghcr.io", "org/img")
        );
        let t = target(&cfg, "mirror.test/img");
        assert_eq!(
            (t.upstream.base.as_str(), t.image.as_str()),
            ("http://127.0.0.1:9", "img")
        );
        // Not allowed: an ordinary Docker Hub namespace.
        assert_eq!(target(&cfg, "quay.io/x").image, "quay.io/x");
    }
}
