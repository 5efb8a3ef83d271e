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

/// The static label of the usual methods.
fn method_label(m: &axum::http::Method) -> Option<&'static str> {
    use axum::http::Method;
    [
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
    .find_map(|(k, s)| (k == *m).then_some(s))
}

/// The static label of the usual statuses.
fn status_label(s: axum::http::StatusCode) -> Option<&'static str> {
    const KNOWN: [&str; 16] = [
        "200", "201", "202", "204", "206", "302", "304", "307", "400", "401", "403", "404", "405",
        "409", "416", "500",
    ];
    let text = s.as_str();
    KNOWN.iter().find(|k| **k == text).copied()
}

/// A request's count and duration.
fn request_handles(
    route: &'static str,
    method: metrics::SharedString,
    status: metrics::SharedString,
) -> (metrics::Counter, metrics::Histogram) {
    (
        metrics::counter!("berth_http_requests_total", "route" => route, "method" => method, "status" => status),
        metrics::histogram!("berth_http_request_duration_seconds", "route" => route),
    )
}

type Labels = (&'static str, &'static str, &'static str);

thread_local! {
    /// This thread's handles of the per-request metrics, by route, method and status
    /// (all static, so there are a few dozen at most). Asking the recorder for a
    /// handle hashes the name and labels and allocates the handle each time: 4 of a
    /// manifest GET's 46 allocations. The recorder is installed before the server
    /// takes requests, so no handle here predates it.
    static REQUESTS: std::cell::RefCell<std::collections::HashMap<Labels, (metrics::Counter, metrics::Histogram)>> =
        Default::default();
    static BYTES: (metrics::Counter, metrics::Counter) = (
        metrics::counter!("berth_http_received_bytes_total"),
        metrics::counter!("berth_http_sent_bytes_total"),
    );
}

pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let received = length(req.headers());
    let resp = next.run(req).await;
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map_or("other", |r| r.0);
    let status = resp.status();
    let seconds = start.elapsed().as_secs_f64();
    let record = |(count, duration): &(metrics::Counter, metrics::Histogram)| {
        count.increment(1);
        duration.record(seconds);
    };
    match (method_label(&method), status_label(status)) {
        (Some(m), Some(s)) => REQUESTS.with_borrow_mut(|handles| {
            record(handles.entry((route, m, s)).or_insert_with(|| {
                request_handles(
                    route,
                    metrics::SharedString::const_str(m),
                    metrics::SharedString::const_str(s),
                )
            }))
        }),
        (m, s) => record(&request_handles(
            route,
            m.map_or_else(|| method.as_str().to_string().into(), Into::into),
            s.map_or_else(|| status.as_str().to_string().into(), Into::into),
        )),
    }
    BYTES.with(|(received_bytes, sent_bytes)| {
        received_bytes.increment(received);
        sent_bytes.increment(length(resp.headers()));
    });
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
