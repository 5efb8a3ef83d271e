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

use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use state::{AppState, Settings, Shared};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: Shared) -> Router {
    let trusted = state.settings.trusted_proxies.clone();
    let v2 = Router::new()
        .route("/v2", any(registry::dispatch))
        .route("/v2/", any(registry::dispatch))
        .route("/v2/{*rest}", any(registry::dispatch))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ));
    Router::new()
        .merge(v2)
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
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
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
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
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
