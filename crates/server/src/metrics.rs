//! Prometheus metrics: requests by route, method and status; bytes in and out;
//! request and upload durations. Rendered at `/metrics`.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::state::Shared;

/// Set by handlers on their response so metrics group by endpoint, not by path.
/// Static, like the other labels of a request's metrics: recording them allocates
/// nothing (this runs on every request).
#[derive(Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// Install the process-wide recorder. Call once; later calls return `None`.
pub fn install() -> Option<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder().ok()?;
    metrics::describe_counter!(
        "berth_http_requests_total",
        "HTTP requests by route, method and status"
    );
    metrics::describe_counter!(
        "berth_http_received_bytes_total",
        "request body bytes received"
    );
    metrics::describe_counter!(
        "berth_http_sent_bytes_total",
        "response body bytes sent (declared lengths)"
    );
    metrics::describe_histogram!(
        "berth_http_request_duration_seconds",
        "time to produce the response head"
    );
    metrics::describe_histogram!(
        "berth_upload_duration_seconds",
        "from upload start to published blob"
    );
    metrics::describe_counter!(
        "berth_gc_manifests_deleted_total",
        "manifests deleted by online garbage collection"
    );
    metrics::describe_counter!(
        "berth_gc_blobs_deleted_total",
        "blobs deleted by online garbage collection"
    );
    metrics::describe_counter!(
        "berth_gc_bytes_freed_total",
        "blob bytes freed by online garbage collection"
    );
    metrics::describe_gauge!(
        "berth_gc_review_queue_depth",
        "items waiting in the garbage collection review queues"
    );
    Some(handle)
}

fn length(h: &axum::http::HeaderMap) -> u64 {
    h.get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A label value for a method or status: static for the usual ones.
fn label(known: Option<&'static str>, other: impl FnOnce() -> String) -> metrics::SharedString {
    match known {
        Some(s) => metrics::SharedString::const_str(s),
        None => other().into(),
    }
}

fn method_label(m: &axum::http::Method) -> metrics::SharedString {
    use axum::http::Method;
    let known = [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .into_iter()
    .zip(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"])
    .find_map(|(k, s)| (k == *m).then_some(s));
    label(known, || m.as_str().to_string())
}

fn status_label(s: axum::http::StatusCode) -> metrics::SharedString {
    const KNOWN: [&str; 16] = [
        "200", "201", "202", "204", "206", "302", "304", "307", "400", "401", "403", "404", "405",
        "409", "416", "500",
    ];
    let text = s.as_str();
    label(KNOWN.iter().find(|k| **k == text).copied(), || {
        text.to_string()
    })
}

pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let received = length(req.headers());
    let resp = next.run(req).await;
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map_or("other", |r| r.0);
    let status = status_label(resp.status());
    metrics::counter!("berth_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("berth_http_request_duration_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("berth_http_received_bytes_total").increment(received);
    metrics::counter!("berth_http_sent_bytes_total").increment(length(resp.headers()));
    resp
}

pub async fn render(State(state): State<Shared>) -> Response {
    let body = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([("Content-Type", "text/plain; version=0.0.4")], body).into_response()
}
