//! An HTTP/1.1 reverse proxy in front of one upstream registry that a test can make
//! misbehave, for the dependency proxy's tests: answer registry requests with an
//! error of the test's choosing (a rate limit, a failing server), or hold every
//! answer's body once it has passed a number of bytes (an upstream that stops half
//! way through a large blob) until the test lets it go on, or change a byte of the
//! answers to some requests (an upstream sending the wrong content).
//!
//! Requests are forwarded as they came, `Host` included; the token service a
//! registry names in its challenges is its own address, so only `/v2/` requests
//! pass through here (and only they are ever failed).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

type Body = BoxBody<Bytes, hyper::Error>;

/// The `Retry-After` of every 429 and 503 the front makes up.
pub const RETRY_AFTER: &str = "17";

/// An error every matching request is answered with instead of being forwarded.
#[derive(Clone, Debug)]
struct Fault {
    status: u16,
    /// Only requests with this method (any when `None`).
    method: Option<Method>,
    /// Only requests whose path contains this.
    path_contains: String,
    /// The OCI error's message (code `TOOMANYREQUESTS` for 429, `UNAVAILABLE` else).
    message: String,
}

#[derive(Default)]
struct Shared {
    fault: Mutex<Option<Fault>>,
    /// Every `/v2/` request: method, path, and the status it was answered with.
    seen: Mutex<Vec<(String, String, u16)>>,
    /// Answers whose body stopped at the hold limit.
    stalls: AtomicU64,
    /// `GET`s whose path contains this get their body's first byte changed.
    corrupt: Mutex<Option<String>>,
}

pub struct Faulty {
    /// `http://127.0.0.1:PORT`, to give as the upstream's URL.
    pub url: String,
    shared: Arc<Shared>,
    /// `Some(limit)`: bodies stop after `limit` bytes until set to `None`.
    hold: watch::Sender<Option<u64>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Faulty {
    /// Forward to `target` (`127.0.0.1:PORT`).
    pub fn start(target: &str) -> Faulty {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the front");
        let url = format!("http://{}", listener.local_addr().expect("front address"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-faulty-upstream")
            .enable_all()
            .build()
            .expect("front runtime");
        let shared = Arc::new(Shared::default());
        let (hold, _) = watch::channel(None);
        let target: std::net::SocketAddr = target.parse().expect("upstream address");
        let (s, h) = (shared.clone(), hold.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("front listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, h) = (s.clone(), h.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (s, h) = (s.clone(), h.clone());
                        async move { Ok::<_, Infallible>(forward(target, s, h, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Faulty {
            url,
            shared,
            hold,
            runtime: Some(runtime),
        }
    }

    /// Answer `/v2/` requests whose path contains `path_contains` (and whose method is
    /// `method`, when given) with `status` and an OCI error saying `message`.
    pub fn fail(&self, status: u16, method: Option<&str>, path_contains: &str, message: &str) {
        *self.shared.fault.lock().unwrap() = Some(Fault {
            status,
            method: method.map(|m| m.parse().expect("a method")),
            path_contains: path_contains.to_string(),
            message: message.to_string(),
        });
    }

    /// Change the first byte of the answer to every `GET` whose path contains
    /// `path_contains` (its length stays right).
    pub fn corrupt(&self, path_contains: &str) {
        *self.shared.corrupt.lock().unwrap() = Some(path_contains.to_string());
    }

    /// Forward everything again, unchanged.
    pub fn heal(&self) {
        *self.shared.fault.lock().unwrap() = None;
        *self.shared.corrupt.lock().unwrap() = None;
    }

    /// Stop every answer's body after `limit` bytes (each answer counted on its own)
    /// until [`Faulty::release`].
    pub fn hold_after(&self, limit: u64) {
        self.hold.send_replace(Some(limit));
    }

    pub fn release(&self) {
        self.hold.send_replace(None);
    }

    /// How many answers have stopped at the hold limit so far.
    pub fn stalls(&self) -> u64 {
        self.shared.stalls.load(Ordering::SeqCst)
    }

    /// `(method, path, status)` of every `/v2/` request so far.
    pub fn seen(&self) -> Vec<(String, String, u16)> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn answer(status: StatusCode, body: String, json: bool) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    if json {
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
    }
    resp
}

async fn forward(
    target: std::net::SocketAddr,
    shared: Arc<Shared>,
    hold: watch::Sender<Option<u64>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let registry = path.starts_with("/v2/");
    let record = |status: u16| {
        if registry {
            shared
                .seen
                .lock()
                .unwrap()
                .push((method.to_string(), path.clone(), status));
        }
    };
    let fault = shared.fault.lock().unwrap().clone().filter(|f| {
        registry
            && f.method.as_ref().is_none_or(|m| *m == method)
            && path.contains(&f.path_contains)
    });
    if let Some(f) = fault {
        record(f.status);
        let code = if f.status == 429 {
            "TOOMANYREQUESTS"
        } else {
            "UNAVAILABLE"
        };
        let body = serde_json::json!({"errors": [{"code": code, "message": f.message}]});
        let status = StatusCode::from_u16(f.status).expect("a status");
        let mut resp = answer(status, body.to_string(), true);
        if f.status == 429 || f.status == 503 {
            resp.headers_mut()
                .insert("retry-after", RETRY_AFTER.parse().unwrap());
        }
        return resp;
    }
    let stream = match tokio::net::TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            record(502);
            return answer(StatusCode::BAD_GATEWAY, format!("test front: {e}"), false);
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            record(502);
            return answer(StatusCode::BAD_GATEWAY, format!("test front: {e}"), false);
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let corrupt = method == Method::GET
        && shared
            .corrupt
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|p| path.contains(p.as_str()));
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, body.boxed());
    match sender.send_request(req).await {
        Ok(resp) => {
            record(resp.status().as_u16());
            let (parts, body) = resp.into_parts();
            Response::from_parts(parts, held(body, hold.subscribe(), shared, corrupt))
        }
        Err(e) => {
            record(502);
            answer(StatusCode::BAD_GATEWAY, format!("test front: {e}"), false)
        }
    }
}

/// `body`, stopping before the frame that would go past the hold limit while a
/// hold is on; with `corrupt`, its first byte changed.
fn held(
    body: Incoming,
    hold: watch::Receiver<Option<u64>>,
    shared: Arc<Shared>,
    corrupt: bool,
) -> Body {
    let frames = futures::stream::unfold(
        (BodyStream::new(body), hold, shared, 0u64),
        move |(mut body, mut hold, shared, sent)| async move {
            let mut frame: Frame<Bytes> = match body.next().await? {
                Ok(f) => f,
                Err(e) => return Some((Err(e), (body, hold, shared, sent))),
            };
            if corrupt && sent == 0 {
                if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                    let mut changed = data.to_vec();
                    changed[0] ^= 0xff;
                    frame = Frame::data(Bytes::from(changed));
                }
            }
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            let over = |h: &Option<u64>| h.is_some_and(|limit| sent + len > limit);
            if over(&hold.borrow_and_update()) {
                shared.stalls.fetch_add(1, Ordering::SeqCst);
                // Released, or the test (and with it the sender) is gone.
                let _ = hold.wait_for(|h| !over(h)).await;
            }
            Some((Ok(frame), (body, hold, shared, sent + len)))
        },
    );
    BodyExt::boxed(StreamBody::new(frames))
}
