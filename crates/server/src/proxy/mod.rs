//! The dependency proxy: a per-group pull-through cache of upstream registries at
//! GitLab's paths, `/v2/<group>/dependency_proxy/containers/<image>/manifests/<ref>`
//! and `…/blobs/<digest>`. One concern per file: the upstream client and its token
//! handshake (`upstream`), cached manifests and their revalidation (`manifests`),
//! blobs (`blobs`) and their single-flight fetch (`fetch`), who may pull (`access`),
//! and the cache's lifetime: purges and the TTL policy (`cache`).

mod access;
mod blobs;
pub mod cache;
pub mod config;
mod fetch;
mod manifests;
mod upstream;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use berth_meta::{Namespace, NamespaceKind};

pub use access::grant;
pub use config::ProxyConfig;

use crate::access::Action;
use crate::error::{Code, RegistryError, RegistryResult};
use crate::state::Shared;

/// What separates the group's path from the image in a proxy path.
const MARK: &str = "/dependency_proxy/containers/";

/// The dependency proxy's state on this node.
pub struct Proxy {
    pub config: ProxyConfig,
    client: upstream::Client,
    fetches: fetch::Fetches,
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Result<Proxy, String> {
        config.validate()?;
        // Spool files of fetches this node was doing when it last stopped (killed,
        // say): their bytes were never published, and nobody reads them any more.
        let swept = fetch::sweep_spool(&config.spool_dir, 2 * config.timeout);
        if swept > 0 {
            tracing::info!(swept, dir = %config.spool_dir.display(), "removed spool files of unfinished dependency proxy fetches");
        }
        Ok(Proxy {
            client: upstream::Client::new(config.timeout)?,
            config,
            fetches: Default::default(),
        })
    }
}

/// `(group path, image)` of a repository name under a group's dependency proxy.
pub fn split_name(name: &str) -> Option<(&str, &str)> {
    let (group, image) = name.split_once(MARK)?;
    (!group.is_empty() && !image.is_empty()).then_some((group, image))
}

/// A request under a dependency proxy path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
}

/// Parse what follows `/v2/`, when it is a dependency proxy path.
pub(crate) fn parse_route(rest: &str) -> Option<Route<'_>> {
    split_name(rest)?;
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    split_name(name)?;
    match kind {
        "manifests" => Some(Route::Manifest(name, last)),
        "blobs" => Some(Route::Blob(name, last)),
        _ => None,
    }
}

/// The group a proxy request is for, after the caller's token was checked.
pub(crate) struct Group {
    pub namespace: Namespace,
}

/// Answer a dependency proxy request.
pub(crate) async fn dispatch(
    state: &Shared,
    route: Route<'_>,
    method: &Method,
    headers: &HeaderMap,
) -> RegistryResult<Response> {
    let (name, with_body) = match (method, &route) {
        (&Method::GET, Route::Manifest(n, _) | Route::Blob(n, _)) => (*n, true),
        (&Method::HEAD, Route::Manifest(n, _) | Route::Blob(n, _)) => (*n, false),
        _ => {
            return Err(RegistryError::new(
                Code::Unsupported,
                format!("{method} is not supported by the dependency proxy: it only pulls"),
            ))
        }
    };
    if !state.proxy.config.enabled {
        return Err(RegistryError::new(
            Code::NameUnknown,
            "the dependency proxy is turned off on this instance",
        ));
    }
    crate::registry::repo_name(name)?;
    crate::access::authorize(state, headers, name, Action::Pull).await?;
    let Some((group_path, image)) = split_name(name) else {
        return Err(RegistryError::new(
            Code::NameInvalid,
            "not a dependency proxy path",
        ));
    };
    let namespace = state
        .meta
        .namespace_by_path(group_path)
        .await?
        .filter(|n| n.kind == NamespaceKind::Group)
        .ok_or_else(|| {
            // The token was granted, so the group existed a moment ago.
            RegistryError::new(Code::NameUnknown, format!("no group at {group_path}"))
        })?;
    let settings = state.meta.proxy_settings(namespace.id).await?;
    if !settings.enabled {
        return Err(RegistryError::new(
            Code::Denied,
            format!(
                "the dependency proxy is turned off for group {}",
                namespace.full_path
            ),
        ));
    }
    let group = Group { namespace };
    match route {
        Route::Manifest(_, reference) => {
            manifests::get(state, &group, image, reference, with_body).await
        }
        Route::Blob(_, digest) => {
            let digest = crate::registry::parse_digest(digest)?;
            blobs::get(state, headers, &group, image, &digest, with_body).await
        }
    }
}

/// An upstream failure in the OCI error format, with the upstream's reason.
fn upstream_error(e: &upstream::UpstreamError, missing: Code) -> RegistryError {
    use upstream::UpstreamError as U;
    let message = e.to_string();
    match e {
        U::Unreachable(_) => {
            RegistryError::new(Code::Unknown, message).status(StatusCode::BAD_GATEWAY)
        }
        U::Status {
            status,
            retry_after,
            ..
        } => match *status {
            StatusCode::NOT_FOUND => RegistryError::new(missing, message),
            // When to ask again is the upstream's to say; the client waits as long.
            StatusCode::TOO_MANY_REQUESTS => {
                let e = RegistryError::new(Code::TooManyRequests, message);
                match retry_after {
                    Some(r) => e.header("Retry-After", r.clone()),
                    None => e,
                }
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                RegistryError::new(Code::Denied, message)
            }
            s if s.is_server_error() => {
                RegistryError::new(Code::Unknown, message).status(StatusCode::BAD_GATEWAY)
            }
            _ => RegistryError::new(Code::Unknown, message).status(StatusCode::BAD_GATEWAY),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            parse_route("g/dependency_proxy/containers/alpine/manifests/3.20"),
            Some(Route::Manifest(
                "g/dependency_proxy/containers/alpine",
                "3.20"
            ))
        );
        assert_eq!(
            parse_route("g/s/dependency_proxy/containers/ghcr.io/o/i/blobs/sha256:ab"),
            Some(Route::Blob(
                "g/s/dependency_proxy/containers/ghcr.io/o/i",
                "sha256:ab"
            ))
        );
        assert_eq!(
            parse_route("g/dependency_proxy/containers/manifests/x"),
            None
        );
        assert_eq!(parse_route("g/p/img/manifests/x"), None);
        assert_eq!(
            split_name("a/b/dependency_proxy/containers/library/alpine"),
            Some(("a/b", "library/alpine"))
        );
    }
}
