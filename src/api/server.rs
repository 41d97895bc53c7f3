//! The HTTP accept loop, segflow's own rather than `axum::serve`: that one sets neither a
//! header size limit nor a header-read or idle timeout, nor a cap on open connections, so idle
//! clients could hold every file descriptor.
//!
//! HTTP/1.1 only, as before (axum's `http2` feature is off), and without upgrades (no route
//! uses them). hyper's own `header_read_timeout` is not used: its timer also runs while a
//! kept-alive connection waits, so idle and header-read timeouts could not differ.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// What one connection may take.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// To send a request's head: from the connection's start, or from the first byte of a
    /// later request on it.
    pub header_read_timeout: Duration,
    /// A kept-alive connection waiting for its next request.
    pub idle_timeout: Duration,
    /// A request body sending nothing while its handler waits for it.
    pub body_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Request line and headers; hyper answers 431 above it.
    pub max_header_bytes: usize,
}

impl ConnectionLimits {
    pub fn from_config(config: &crate::config::Config) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs),
            body_read_timeout: Duration::from_secs(config.body_read_timeout_secs),
            max_connections: below_file_limit(config.max_connections),
            max_header_bytes: config.max_header_bytes,
        }
    }
}

/// `max_connections`, lowered to 3/4 of the open file limit: the rest is for the log, the
/// stores and the files being served.
fn below_file_limit(max_connections: usize) -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let Some(files) = limit.map(|n| usize::try_from(n / 4 * 3).unwrap_or(usize::MAX)) else {
        return max_connections;
    };
    if max_connections > files {
        tracing::warn!(max_connections, files, "max_connections lowered below the open file limit");
    }
    max_connections.min(files).max(1)
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting and waits for
/// the open connections to finish their requests (idle ones close at once).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(None).max_header_size(limits.max_header_bytes);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    let mut full = false;
    let body_timeouts = metrics.http_timeouts_total.with_label_values(&["body"]);
    loop {
        if permits.available_permits() == 0 && !full {
            tracing::warn!(limits.max_connections, "connection limit reached: new connections wait");
        }
        full = permits.available_permits() == 0;
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e, &mut shutdown).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched { stream: Some(stream), activity: activity.clone() });
        let (router, busy, body_timeouts) = (router.clone(), activity.clone(), body_timeouts.clone());
        // Each request marks the connection busy until its response has been written.
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = Busy::start(busy.clone());
            let router = router.clone();
            let (timeout, timeouts) = (limits.body_read_timeout, body_timeouts.clone());
            let request = request.map(|body| Paced { body, timeout, timeouts, waiting: false, stalled: None });
            async move {
                let Ok(response) = router.oneshot(request).await;
                Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }))
            }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(timeout) = watch_timeouts(connection, &activity, limits).await {
                metrics.http_timeouts_total.with_label_values(&[timeout]).inc();
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// After a failed accept: connection errors are the client's; others (out of file
/// descriptors, say) are waited out for a second, as `axum::serve` does.
async fn accept_failed(e: std::io::Error, shutdown: &mut Pin<&mut impl Future<Output = ()>>) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
        () = shutdown.as_mut() => {}
    }
}

/// Drives a connection until it ends, or until it has waited too long for a request head: then
/// it is dropped, which closes it, and the timeout is returned (`header` or `idle`).
async fn watch_timeouts<E: std::fmt::Display>(
    connection: impl Future<Output = Result<(), E>>,
    activity: &Activity,
    limits: ConnectionLimits,
) -> Option<&'static str> {
    let mut connection = pin!(connection);
    loop {
        let deadline = activity.deadline(limits).map(|(at, _)| at);
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return None;
            }
            () = activity.changed.notified() => {}
            () = expired => {
                if let Some((at, timeout)) = activity.deadline(limits)
                    && at <= Instant::now()
                {
                    tracing::debug!("closing a connection that sent no complete request in time");
                    return Some(timeout);
                }
            }
        }
    }
}

/// Where a connection is between requests, which sets its deadline.
struct Activity {
    phase: Mutex<Phase>,
    /// Woken when the phase changes, so that the deadline is computed again.
    changed: Notify,
}

#[derive(Clone, Copy)]
struct Phase {
    /// Requests whose response is not written yet.
    in_flight: usize,
    /// When the connection started waiting for a request: accepted, or its last response done.
    waiting_since: Instant,
    /// No request served yet: the first head is due `header_read_timeout` after the accept.
    fresh: bool,
    /// When the first byte of the awaited head came.
    head_started: Option<Instant>,
}

impl Activity {
    fn new() -> Activity {
        let phase = Phase { in_flight: 0, waiting_since: Instant::now(), fresh: true, head_started: None };
        Activity { phase: Mutex::new(phase), changed: Notify::new() }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When the connection is closed unless a request head comes, and which timeout that is
    /// (`header`, or `idle` for a kept-alive connection awaiting a request); `None` while busy.
    fn deadline(&self, limits: ConnectionLimits) -> Option<(Instant, &'static str)> {
        let phase = *self.phase();
        if phase.in_flight > 0 {
            return None;
        }
        Some(match (phase.fresh, phase.head_started) {
            (true, _) => (phase.waiting_since + limits.header_read_timeout, "header"),
            (false, Some(started)) => (started + limits.header_read_timeout, "header"),
            (false, None) => (phase.waiting_since + limits.idle_timeout, "idle"),
        })
    }

    fn bytes_read(&self) {
        let mut phase = self.phase();
        if phase.in_flight == 0 && phase.head_started.is_none() {
            phase.head_started = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }
}

/// Held from a request's start until its response has been written (or abandoned).
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.phase().in_flight += 1;
        activity.changed.notify_one();
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        phase.in_flight -= 1;
        if phase.in_flight == 0 {
            *phase = Phase { in_flight: 0, waiting_since: Instant::now(), fresh: false, head_started: None };
        }
        drop(phase);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its connection busy until hyper drops it, written.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails once its client has sent nothing for `timeout` while the handler
/// waits for it: a body trickled or stalled midway holds neither its handler nor its
/// connection. The clock runs only while the handler waits, so a handler that reads late
/// (after `100 Continue`, say) or slowly is not cut off.
struct Paced {
    body: Incoming,
    timeout: Duration,
    /// Counts the bodies cut off.
    timeouts: IntCounter,
    /// Whether the last poll found nothing: the clock is running since then.
    waiting: bool,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error of a [`Paced`] body whose client stopped sending; answered 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {} s", .0.as_secs())]
pub struct BodyStalled(Duration);

impl BodyStalled {
    /// Whether `error` is, or wraps, a stalled body's.
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<BodyStalled>() {
                return true;
            }
            // An io::Error's `source` skips the error it wraps; `get_ref` is that error.
            next = match e.downcast_ref::<std::io::Error>() {
                Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
                None => e.source(),
            };
        }
        false
    }
}

impl hyper::body::Body for Paced {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.timeout;
                let stalled = this.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    stalled.as_mut().reset(deadline);
                    this.waiting = true;
                }
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timeouts.inc();
                        Poll::Ready(Some(Err(BodyStalled(this.timeout).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, telling [`Activity`] when a request's first bytes arrive; closed
/// by lingering ([`linger`]) when dropped. `None` only once dropped.
struct Watched {
    stream: Option<TcpStream>,
    activity: Arc<Activity>,
}

impl Watched {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(self.stream.as_mut().expect("a live connection's socket"))
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let (Some(stream), Ok(runtime)) = (self.stream.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(linger(stream));
        }
    }
}

/// How long, and how many bytes, a closed connection still reads from its client.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 20;

/// A lingering close, as nginx does: the response is sent and the write side shut, then what
/// the client is still sending is read and dropped for a while. Closed at once instead, with
/// unread bytes, the kernel answers a reset that can destroy the response before the client
/// reads it, such as an early 413 to a client still sending its body.
async fn linger(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let (mut sink, mut left) = (vec![0u8; 16 * 1024], LINGER_BYTES);
    while left > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(read)) if read > 0 => left = left.saturating_sub(read),
            _ => return,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = this.stream().poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(TcpStream::is_write_vectored)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().stream().poll_shutdown(cx)
    }
}
