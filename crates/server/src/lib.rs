//! The HTTP server: the OCI distribution API under `/v2`, the REST API under
//! `/api/v4`, the web UI, metrics, and the background jobs that keep storage tidy.
//! Handlers are thin: parse, authorise, call the metadata and blob stores, map errors
//! to the protocol's format.
#![forbid(unsafe_code)]

mod access;
pub mod api;
pub mod auth;
pub mod cleanup;
pub mod client_addr;
pub mod error;
pub mod gc;
pub mod instance;
pub mod jobs;
pub mod metrics;
pub mod org;
pub mod protection;
pub mod proxy;
mod registry;
pub mod serving;
pub mod state;
pub mod web;

use std::future::Future;

use axum::http::{HeaderName, Request};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use state::{AppState, Settings, Shared};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: Shared) -> Router {
    let trusted = std::sync::Arc::new(state.settings.trusted_proxies.clone());
    let v2 = registry::Service(state.clone());
    let rest = Router::new()
        .route(
            "/jwt/auth",
            get(auth::token::issue).post(auth::token::issue_oauth),
        )
        .nest("/api/v4", api::router())
        .route("/metrics", get(metrics::render))
        .merge(web::router())
        // GitLab's page URLs put fixed words after paths of any depth; the web UI
        // parses whatever no route above took.
        .fallback(web::dispatch)
        .with_state(state);
    let app = Split { v2, rest };
    // Around the whole router once, not around each route (as `Router::layer`
    // does), so a request does not clone a boxed copy of every layer.
    let layered = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |req: &Request<_>| {
                    let span = tracing::info_span!(
                        "request",
                        id = tracing::field::Empty,
                        client = tracing::field::Empty,
                        method = %req.method(),
                        path = %req.uri().path(),
                        principal = tracing::field::Empty,
                    );
                    // Filled in only when the span is on: at the usual log levels
                    // (warn and above) no request pays for formatting them.
                    if !span.is_disabled() {
                        let id = req
                            .headers()
                            .get(&REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        // Every line of the request names the client (behind trusted
                        // proxies, the address they forwarded), as sign-in limits see it.
                        let client = req
                            .extensions()
                            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                            .map(|c| trusted.client(c.0.ip(), req.headers()).to_string())
                            .unwrap_or_else(|| "-".into());
                        span.record("id", id);
                        span.record("client", client.as_str());
                    }
                    span
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::middleware::from_fn(metrics::track))
        .service(app);
    Router::new().fallback_service(layered)
}

/// `/v2` to the registry's service, without routing (it parses its own paths);
/// everything else to the router.
#[derive(Clone)]
struct Split {
    v2: registry::Service,
    rest: Router,
}

impl tower::Service<axum::extract::Request> for Split {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        <registry::Service as tower::Service<axum::extract::Request>>::Future,
        <Router as tower::Service<axum::extract::Request>>::Future,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Both are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let path = req.uri().path();
        if path == "/v2" || path.starts_with("/v2/") {
            futures::future::Either::Left(self.v2.call(req))
        } else {
            futures::future::Either::Right(self.rest.call(req))
        }
    }
}

/// Serve until `shutdown` resolves, running background jobs alongside; `limits`
/// bound every wait on a client ([`serving`]).
pub async fn serve(
    listener: TcpListener,
    state: Shared,
    limits: serving::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let jobs = jobs::start(state.clone());
    let result = serving::serve(listener, router(state), limits, shutdown).await;
    for job in jobs {
        job.abort();
    }
    result
}
