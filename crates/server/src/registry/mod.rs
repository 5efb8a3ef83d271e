//! The OCI Distribution API under `/v2`. Repository names contain slashes, so paths
//! are parsed here by their fixed suffixes rather than by the router; each resource
//! has its own module.

pub(crate) mod blobs;
#[cfg(test)]
pub(crate) mod fuzz;
mod listing;
mod manifests;
mod referrers;
mod uploads;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName};

use crate::error::{Code, RegistryError, RegistryResult};
use crate::state::Shared;

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    UploadStart(&'a str),
    Upload(&'a str, &'a str),
    Referrers(&'a str, &'a str),
}

impl Route<'_> {
    /// A stable label for metrics and logs (static: it is made on every request).
    pub fn label(&self, method: &Method) -> &'static str {
        macro_rules! by_method {
            ($kind:literal) => {
                match *method {
                    Method::GET => concat!($kind, "_get"),
                    Method::HEAD => concat!($kind, "_head"),
                    Method::PUT => concat!($kind, "_put"),
                    Method::POST => concat!($kind, "_post"),
                    Method::PATCH => concat!($kind, "_patch"),
                    Method::DELETE => concat!($kind, "_delete"),
                    _ => concat!($kind, "_other"),
                }
            };
        }
        match self {
            Route::Base => by_method!("base"),
            Route::Catalog => by_method!("catalog"),
            Route::Tags(_) => by_method!("tags"),
            Route::Manifest(..) => by_method!("manifest"),
            Route::Blob(..) => by_method!("blob"),
            Route::UploadStart(_) | Route::Upload(..) => by_method!("upload"),
            Route::Referrers(..) => by_method!("referrers"),
        }
    }
}

fn parse_route(rest: &str) -> Option<Route<'_>> {
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    let trimmed = rest.strip_suffix('/').unwrap_or(rest);
    if let Some(name) = trimmed.strip_suffix("/blobs/uploads") {
        return Some(Route::UploadStart(name));
    }
    let (head, last) = rest.rsplit_once('/')?;
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return Some(Route::Upload(name, last));
    }
    let (name, kind) = head.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest(name, last)),
        "blobs" => Some(Route::Blob(name, last)),
        "referrers" => Some(Route::Referrers(name, last)),
        _ => None,
    }
}

pub(crate) fn repo_name(name: &str) -> RegistryResult<RepoName> {
    RepoName::parse(name).map_err(|e| {
        RegistryError::new(Code::NameInvalid, e.to_string())
            .detail(serde_json::json!({ "name": name }))
    })
}

pub(crate) fn parse_digest(text: &str) -> RegistryResult<Digest> {
    Digest::parse(text).map_err(|e| {
        RegistryError::new(Code::DigestInvalid, e.to_string())
            .detail(serde_json::json!({ "digest": text }))
    })
}

/// A decimal number of digits only, as HTTP writes byte positions: `u64::from_str`
/// would also take a leading `+`.
pub(crate) fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `Range` header value for an upload holding `size` bytes (`0-0` when empty).
pub(crate) fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn unsupported(method: &Method) -> RegistryError {
    RegistryError::new(
        Code::Unsupported,
        format!("{method} is not supported on this endpoint"),
    )
}

/// The `/v2` API as one service, the entry point of every `/v2/...` request: cloning it (the router does for each request)
/// copies a pointer, where a handler with layers around it cloned a box for each
/// layer and HTTP method, a few dozen allocations per request.
#[derive(Clone)]
pub struct Service(pub Shared);

impl tower::Service<Request> for Service {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let mut resp = dispatch(state, req).await;
            resp.headers_mut().insert(
                HeaderName::from_static("docker-distribution-api-version"),
                HeaderValue::from_static("registry/2.0"),
            );
            Ok(resp)
        })
    }
}

async fn dispatch(state: Shared, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let rest = path
        .strip_prefix("/v2/")
        .or(if path == "/v2" { Some("") } else { None });
    if let Some(route) = rest.and_then(crate::proxy::parse_route) {
        let method = req.method().clone();
        let label = match method {
            Method::HEAD => "dependency_proxy_head",
            Method::GET => "dependency_proxy_get",
            _ => "dependency_proxy_other",
        };
        let headers = req.headers().clone();
        let mut resp = crate::proxy::dispatch(&state, route, &method, &headers)
            .await
            .unwrap_or_else(IntoResponse::into_response);
        resp.extensions_mut()
            .insert(crate::metrics::RouteLabel(label));
        return resp;
    }
    let Some(route) = rest.and_then(parse_route) else {
        return RegistryError::new(Code::NameUnknown, "no such registry endpoint")
            .status(StatusCode::NOT_FOUND)
            .into_response();
    };
    let method = req.method().clone();
    let label = route.label(&method);
    let mut resp = match handle(&state, route, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    resp.extensions_mut()
        .insert(crate::metrics::RouteLabel(label));
    resp
}

async fn handle(state: &Shared, route: Route<'_>, req: Request) -> RegistryResult<Response> {
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_string();
    let (parts, body) = req.into_parts();
    let headers: HeaderMap = parts.headers;
    match route {
        Route::Base => match method {
            Method::GET | Method::HEAD => {
                crate::access::authenticated(state, &headers)?;
                Ok((StatusCode::OK, axum::Json(serde_json::json!({}))).into_response())
            }
            _ => Err(unsupported(&method)),
        },
        Route::Catalog => match method {
            Method::GET => listing::catalog(state, &headers, &query).await,
            _ => Err(unsupported(&method)),
        },
        Route::Tags(name) => {
            let name = repo_name(name)?;
            match method {
                Method::GET => listing::tags(state, &headers, &name, &query).await,
                _ => Err(unsupported(&method)),
            }
        }
        Route::Manifest(name, reference) => {
            let name = repo_name(name)?;
            match method {
                Method::GET => manifests::get(state, &headers, &name, reference, true).await,
                Method::HEAD => manifests::get(state, &headers, &name, reference, false).await,
                Method::PUT => manifests::put(state, &headers, &name, reference, body).await,
                Method::DELETE => manifests::delete(state, &headers, &name, reference).await,
                _ => Err(unsupported(&method)),
            }
        }
        Route::Blob(name, digest) => {
            let name = repo_name(name)?;
            let digest = parse_digest(digest)?;
            match method {
                Method::GET => blobs::get(state, &headers, &name, &digest, true).await,
                Method::HEAD => blobs::get(state, &headers, &name, &digest, false).await,
                Method::DELETE => blobs::delete(state, &headers, &name, &digest).await,
                _ => Err(unsupported(&method)),
            }
        }
        Route::UploadStart(name) => {
            let name = repo_name(name)?;
            match method {
                Method::POST => uploads::start(state, &headers, &name, &query, body).await,
                _ => Err(unsupported(&method)),
            }
        }
        Route::Upload(name, id) => {
            let name = repo_name(name)?;
            match method {
                Method::GET => uploads::status(state, &headers, &name, id).await,
                Method::PATCH => uploads::patch(state, &headers, &name, id, body).await,
                Method::PUT => {
                    uploads::finish_upload(state, &headers, &name, id, &query, body).await
                }
                Method::DELETE => uploads::cancel(state, &headers, &name, id).await,
                _ => Err(unsupported(&method)),
            }
        }
        Route::Referrers(name, digest) => {
            let name = repo_name(name)?;
            let digest = parse_digest(digest)?;
            match method {
                Method::GET => referrers::list(state, &headers, &name, &digest, &query).await,
                _ => Err(unsupported(&method)),
            }
        }
    }
}

/// Query-string pairs, percent-decoded, in order (keys may repeat).
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn query_get(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

pub(crate) fn empty(status: StatusCode) -> axum::http::response::Builder {
    Response::builder()
        .status(status)
        .header("Content-Length", "0")
}

pub(crate) fn finish(builder: axum::http::response::Builder) -> RegistryResult<Response> {
    builder.body(Body::empty()).map_err(RegistryError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse_route(""), Some(Route::Base));
        assert_eq!(parse_route("_catalog"), Some(Route::Catalog));
        assert_eq!(parse_route("a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(
            parse_route("a/manifests/x/manifests/v1"),
            Some(Route::Manifest("a/manifests/x", "v1"))
        );
        assert_eq!(
            parse_route("a/b/blobs/sha256:00"),
            Some(Route::Blob("a/b", "sha256:00"))
        );
        assert_eq!(
            parse_route("a/b/blobs/uploads/"),
            Some(Route::UploadStart("a/b"))
        );
        assert_eq!(
            parse_route("a/b/blobs/uploads"),
            Some(Route::UploadStart("a/b"))
        );
        assert_eq!(
            parse_route("a/b/blobs/uploads/123"),
            Some(Route::Upload("a/b", "123"))
        );
        assert_eq!(
            parse_route("a/referrers/sha256:1"),
            Some(Route::Referrers("a", "sha256:1"))
        );
        assert_eq!(parse_route("a/b/other/x"), None);
        assert_eq!(parse_route("nothing"), None);
    }

    #[test]
    fn decodes_queries() {
        let p = query_pairs("mount=sha256%3Aab&from=a%2Fb&x&n=");
        assert_eq!(query_get(&p, "mount").as_deref(), Some("sha256:ab"));
        assert_eq!(query_get(&p, "from").as_deref(), Some("a/b"));
        assert_eq!(query_get(&p, "x").as_deref(), Some(""));
    }
}
