//! The connection loop: accept, bound every wait, hand requests to the router.
//!
//! axum's own server waits forever: for a client that connects and sends nothing,
//! for headers that stop halfway, on an idle keep-alive connection, for an upload
//! that stalls. Each holds a socket and a task, so a few thousand of them deny
//! service to everyone. Here every connection has a watchdog:
//!
//! - no complete request head within `header_read` of the first byte of it (or of
//!   the connection's start): closed;
//! - nothing sent or received for `idle` between requests (or while a response
//!   waits on a client that does not read it): closed;
//! - a request body that delivers nothing for `body_inactivity`, or less than
//!   `body_min_rate` bytes a second over a whole such span (a byte-a-second
//!   trickle): the handler gets a read error, as if the client had disconnected
//!   (an upload keeps the bytes it received and can be resumed from its `Range`),
//!   and the connection is closed;
//! - beyond `max_connections` open connections, a new one is answered 503 at once
//!   and closed.
//!
//! A request whose handler is busy (no client I/O expected) is never cut by the
//! watchdog; the stores and database bound their own waits.
//!
//! An HTTP/1 answer sent before its request's body was read whole (an upload refused
//! part-way) says `Connection: close`: the rest of the body is still coming, so the
//! connection is closed after the answer, and a client that reused it for its next
//! request would see that request fail.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::CONNECTION;
use axum::http::HeaderValue;
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// The receive buffer each accepted connection asks for (see where it is set).
const RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// How long each kind of wait may last, and how many connections may be open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub idle: Duration,
    pub body_inactivity: Duration,
    /// Bytes a second a request body must average over each `body_inactivity` span
    /// (0: no minimum).
    pub body_min_rate: u64,
    pub max_connections: usize,
}

impl Default for Limits {
    /// 30 s for a request head (a real client sends it in one packet; this is
    /// nginx's and hyper's default), 90 s idle (longer than the keep-alive of
    /// docker's and containerd's HTTP clients, so they close first), 60 s without
    /// a byte of body (a client that stalls that long has lost its network;
    /// it resumes the upload), at least 1 KiB a second over each such minute (a
    /// dial-up modem does seven; a trickle slower than that only holds a socket),
    /// 4096 connections (far beyond what a registry sees
    /// from real clients, well below a default `ulimit -n` of 65536 or the
    /// memory of a small machine).
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(90),
            body_inactivity: Duration::from_secs(60),
            body_min_rate: 1024,
            max_connections: 4096,
        }
    }
}

/// Milliseconds since `start`, for atomics.
fn ms_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// What the watchdog knows about one connection.
struct Activity {
    start: Instant,
    /// Last byte read or written (ms since `start`).
    last_io: AtomicU64,
    /// When the first byte after the last request head arrived (ms since `start`,
    /// plus one; 0: none yet). The next request's head is being read since then.
    head_since: AtomicU64,
    /// Requests whose handlers have not answered yet.
    in_flight: AtomicUsize,
    /// Set when a request body stalled: the connection is done.
    stalled: AtomicU64,
    /// HTTP/1: the current request's body is not read whole yet (requests on the
    /// connection are answered one at a time, so one flag is enough).
    body_unread: AtomicBool,
    /// Whether any request head arrived yet.
    requests: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            stalled: AtomicU64::new(0),
            body_unread: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        })
    }

    fn read(&self) {
        let now = ms_since(self.start);
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes read while a request is answered are its body (or pipelined
        // requests, timed once it is answered), not a head coming in slowly.
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return;
        }
        let _ = self
            .head_since
            .compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn wrote(&self) {
        self.last_io.store(ms_since(self.start), Ordering::Relaxed);
    }

    /// A request head was parsed: the head timer stops until the next byte.
    fn request_started(&self) {
        self.head_since.store(0, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.wrote();
    }

    fn request_answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.wrote();
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        // Once the handler has answered (the answer says to resume the upload).
        if self.stalled.load(Ordering::Relaxed) != 0 {
            return Some("request body stalled");
        }
        let now = ms_since(self.start);
        let head = self.head_since.load(Ordering::Relaxed);
        if head != 0 && now.saturating_sub(head - 1) > limits.header_read.as_millis() as u64 {
            return Some("request head not received in time");
        }
        let idle_since = self.last_io.load(Ordering::Relaxed);
        // Before the first request, waiting for it counts as reading its head.
        let (limit, why) = if self.requests.load(Ordering::Relaxed) == 0 {
            (limits.header_read, "no request received in time")
        } else {
            (limits.idle, "idle")
        };
        (head == 0 && now.saturating_sub(idle_since) > limit.as_millis() as u64).then_some(why)
    }
}

/// The socket, reporting every byte it moves to the watchdog.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A request body that fails when the client sends nothing for a while, or too
/// little over a while.
struct StallGuard {
    inner: Incoming,
    limit: Duration,
    min_rate: u64,
    /// Where the current span of `limit` began (at the handler's first read: the
    /// time before it is not the client's), and the bytes received in it.
    span: Option<(Instant, u64)>,
    /// Running while the handler waits on the client (not while it is busy
    /// elsewhere and not polling).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    activity: Arc<Activity>,
}

#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body for {0:?}")]
struct BodyStalled(Duration);

#[derive(Debug, thiserror::Error)]
#[error("the client sent {0} bytes of request body in {1:?}, under the minimum rate")]
struct BodyTooSlow(u64, Duration);

impl StallGuard {
    /// Count `n` bytes received; an error when a whole span went by below the rate.
    fn count(&mut self, n: u64) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        let (started, received) = self.span.get_or_insert_with(|| (Instant::now(), 0));
        *received += n;
        let elapsed = started.elapsed();
        if elapsed < self.limit {
            return None;
        }
        let (received, minimum) = (*received, self.min_rate * elapsed.as_secs());
        self.span = Some((Instant::now(), 0));
        if received >= minimum {
            return None;
        }
        self.activity.stalled.store(1, Ordering::Relaxed);
        tracing::info!(
            received,
            ?elapsed,
            "request body too slow: the connection is closed"
        );
        Some(Box::new(BodyTooSlow(received, elapsed)))
    }
}

impl http_body::Body for StallGuard {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.span.is_none() {
            self.span = Some((Instant::now(), 0));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                self.timer = None;
                if r.is_none() || self.inner.is_end_stream() {
                    self.activity.body_unread.store(false, Ordering::Relaxed);
                }
                if let Some(Ok(frame)) = &r {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    if let Some(e) = self.count(n) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    self.activity.stalled.store(1, Ordering::Relaxed);
                    tracing::info!(timeout = ?limit, "request body stalled: the connection is closed");
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Answer a connection over the cap: 503, then close. The request is drained for a
/// moment first, so the client reads the answer instead of a reset.
async fn refuse(mut tcp: TcpStream) {
    const BODY: &str = r#"{"errors":[{"code":"UNAVAILABLE","message":"too many open connections; try again shortly","detail":null}]}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let done = async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut sink).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop accepting,
/// let open requests finish (each still bounded by the limits) and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Answering 503 takes a task and a socket for up to two seconds; in a flood,
    // connections beyond these few are dropped without an answer.
    let refusals = Arc::new(Semaphore::new(256));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new());
    // Pipelined requests are answered in order; hyper reads ahead by itself.
    builder.http1().keep_alive(true);
    let builder = Arc::new(builder);
    let last_refusal_log = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Without TCP_NODELAY, small writes wait on delayed ACKs: a client sending
        // many PATCHes lost ~40 ms on each.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
        // A new connection's receive buffer starts small (128 KiB on Linux) and grows
        // only as the kernel sees it fill, so a client that sends each chunk of an
        // upload on a connection of its own sends most of every chunk in small
        // windows, waking the server for each. Starting at 4 MiB (the kernel doubles
        // it, within `net.core.rmem_max`), a chunked upload with a process and a
        // connection per 8 MiB PATCH took 10-12 % less of the server's CPU per byte
        // (`bench/chunk_probe.py --client patch-client`, medians of 5-7 runs, three
        // times; its rate between 1 % lower and 10 % higher). The memory is the
        // kernel's, taken only by bytes that arrive faster than the server reads them.
        if let Err(e) = socket2::SockRef::from(&tcp).set_recv_buffer_size(RECEIVE_BUFFER) {
            tracing::debug!(error = %e, "could not set SO_RCVBUF");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // At most one line a second, however hard the flood.
            let now = ms_since(started) / 1000 + 1;
            if last_refusal_log.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    client = %peer.ip(),
                    "connection refused with 503: too many open connections"
                );
            }
            if let Ok(refusing) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(tcp).await;
                    drop(refusing);
                });
            }
            continue;
        };
        let activity = Activity::new();
        let io = TokioIo::new(Watched {
            tcp,
            activity: activity.clone(),
        });
        let service = {
            let activity = activity.clone();
            let router = router.clone();
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let activity = activity.clone();
                let router = router.clone();
                async move {
                    activity.request_started();
                    let http1 = req.version() < hyper::Version::HTTP_2;
                    activity.body_unread.store(
                        !http_body::Body::is_end_stream(req.body()),
                        Ordering::Relaxed,
                    );
                    let mut req = req.map(|inner| {
                        Body::new(StallGuard {
                            inner,
                            limit: limits.body_inactivity,
                            min_rate: limits.body_min_rate,
                            span: None,
                            timer: None,
                            activity: activity.clone(),
                        })
                    });
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let mut resp = router.oneshot(req).await;
                    activity.request_answered();
                    // An answer before the whole body was read (a refused upload):
                    // the rest of the body is still on its way, so the connection
                    // cannot carry another request. Saying so keeps the client from
                    // sending its next request on a connection about to close.
                    // (HTTP/2 has no such header: a stream ends on its own.)
                    if http1 && activity.body_unread.load(Ordering::Relaxed) {
                        if let Ok(r) = &mut resp {
                            r.headers_mut()
                                .insert(CONNECTION, HeaderValue::from_static("close"));
                        }
                    }
                    resp
                }
            })
        };
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = builder.serve_connection_with_upgrades(io, service);
            tokio::pin!(conn);
            let mut stopping = false;
            loop {
                // The watchdog looks often enough for the limits to hold within a
                // fraction of themselves, and rarely enough to cost nothing.
                let tick = (limits.header_read.min(limits.idle) / 4)
                    .clamp(Duration::from_millis(50), Duration::from_secs(1));
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(client = %peer.ip(), error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = tokio::time::sleep(tick) => {
                        if let Some(why) = activity.expired(&limits) {
                            tracing::debug!(client = %peer.ip(), why, "closing the connection");
                            break;
                        }
                    }
                    _ = stop.changed(), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Open connections finish their requests (bounded by the limits above).
    let _ = slots
        .acquire_many(limits.max_connections.max(1) as u32)
        .await;
    Ok(())
}
