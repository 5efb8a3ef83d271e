//! A round-robin HTTP/1.1 reverse proxy in front of several `berth serve` nodes, for
//! the multi-node end-to-end mode: each request goes to the next node, so one client's
//! consecutive requests (the steps of one push) land on different nodes.
//!
//! Bodies stream both ways (hyper hands the incoming request body to the backend
//! connection as it arrives, and the backend's response body back the same way), and
//! the request is forwarded as it came, `Host` included, so the URLs the nodes write
//! into `Location` and `WWW-Authenticate` point at the proxy. A node marked down, or
//! one that refuses the connection (it was killed), is skipped.
//!
//! Like a real load balancer, the proxy passes on every byte of a request body that
//! reached it, even when the client goes away in the middle: the node then sees the
//! same cut-off body it would have seen without the proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, BodyStream, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

type ProxyBody = BoxBody<Bytes, hyper::Error>;

struct Backends {
    addrs: Vec<SocketAddr>,
    up: Vec<AtomicBool>,
    next: AtomicUsize,
    /// Requests forwarded to each node, for tests that check the spread.
    served: Vec<AtomicU64>,
    /// Requests with a body (PATCH, PUT, POST) each node has not answered yet.
    uploading: Vec<AtomicU64>,
}

pub struct Proxy {
    pub addr: SocketAddr,
    backends: Arc<Backends>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Listen on an ephemeral loopback port; `set_backends` must be called before the
    /// first request (the nodes are started after the proxy so that their external
    /// URL can name it).
    pub fn bind() -> (Proxy, std::net::TcpListener) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = Proxy {
            addr,
            backends: Arc::new(Backends {
                addrs: Vec::new(),
                up: Vec::new(),
                next: AtomicUsize::new(0),
                served: Vec::new(),
                uploading: Vec::new(),
            }),
            runtime: None,
        };
        (proxy, listener)
    }

    /// Start forwarding to `backends` (in round-robin order).
    pub fn start(&mut self, listener: std::net::TcpListener, backends: &[SocketAddr]) {
        self.backends = Arc::new(Backends {
            addrs: backends.to_vec(),
            up: backends.iter().map(|_| AtomicBool::new(true)).collect(),
            next: AtomicUsize::new(0),
            served: backends.iter().map(|_| AtomicU64::new(0)).collect(),
            uploading: backends.iter().map(|_| AtomicU64::new(0)).collect(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("proxy runtime");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let backends = self.backends.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("proxy listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let backends = backends.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let backends = backends.clone();
                        async move { Ok::<_, Infallible>(forward(backends, req).await) }
                    });
                    // A client that goes away mid-request is not our concern.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        self.runtime = Some(runtime);
    }

    /// Stop sending requests to node `i` (it is being killed).
    pub fn mark_down(&self, i: usize) {
        self.backends.up[i].store(false, Ordering::SeqCst);
    }

    /// Requests with a body that each node is receiving or working on right now.
    pub fn uploading(&self) -> Vec<u64> {
        self.backends
            .uploading
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect()
    }

    /// Requests forwarded to each node so far.
    pub fn served(&self) -> Vec<u64> {
        self.backends
            .served
            .iter()
            .map(|n| n.load(Ordering::SeqCst))
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn error(status: StatusCode, text: String) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

/// Headers that describe one hop, not the message.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    // hyper answers `Expect: 100-continue` itself when the body is first read; the
    // backend connection just sends the body.
    "expect",
];

async fn forward(backends: Arc<Backends>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    for h in HOP_BY_HOP {
        req.headers_mut().remove(*h);
    }
    let n = backends.addrs.len();
    // The next node that is up and accepts a connection. The body has not been read
    // yet, so a refused connection (a killed node) just moves on to the next node.
    let start = backends.next.fetch_add(1, Ordering::SeqCst);
    let mut stream = None;
    let mut errors = Vec::new();
    for k in 0..n {
        let i = (start + k) % n;
        if !backends.up[i].load(Ordering::SeqCst) {
            continue;
        }
        match tokio::net::TcpStream::connect(backends.addrs[i]).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                stream = Some((i, s));
                break;
            }
            Err(e) => errors.push(format!("node {}: {e}", i + 1)),
        }
    }
    let Some((i, stream)) = stream else {
        return error(
            StatusCode::BAD_GATEWAY,
            format!("test proxy: no node is up ({})", errors.join("; ")),
        );
    };
    backends.served[i].fetch_add(1, Ordering::SeqCst);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_GATEWAY, format!("test proxy: {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let with_body = matches!(
        *req.method(),
        hyper::Method::PATCH | hyper::Method::PUT | hyper::Method::POST
    );
    if with_body {
        backends.uploading[i].fetch_add(1, Ordering::SeqCst);
    }
    // In a task of its own, so that a client going away (which ends this future) does
    // not cut the request to the node before the body that did arrive is passed on.
    let (parts, body) = req.into_parts();
    let req = Request::from_parts(parts, pass_on_then_fail(body));
    let answer = tokio::spawn(async move {
        let answer = sender.send_request(req).await;
        if with_body {
            backends.uploading[i].fetch_sub(1, Ordering::SeqCst);
        }
        answer
    })
    .await
    .expect("the proxy's request task");
    match answer {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(*h);
            }
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            format!("test proxy: node {} failed: {e}", i + 1),
        ),
    }
}

/// The client's request body, passed on as it arrives. When it breaks off (the client
/// went away), the break is passed on only after a pause, by which time every byte
/// that did arrive has been written to the node: hyper flushes while the body waits.
fn pass_on_then_fail(body: Incoming) -> BoxBody<Bytes, hyper::Error> {
    let frames = futures::stream::unfold(Some(BodyStream::new(body)), |body| async move {
        let mut body = body?;
        match body.next().await? {
            Ok(frame) => Some((Ok(frame), Some(body))),
            Err(e) => {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                Some((Err(e), None))
            }
        }
    });
    BodyExt::boxed(StreamBody::new(frames))
}
