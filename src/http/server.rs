//! The HTTP/1.1 server: accepts connections up to a cap and keeps each one honest. A new
//! connection has `header_timeout` to deliver its first request's headers; each request has
//! `body_timeout` for its body (then `408`); from the end of one exchange to the end of the next
//! request's headers a kept-alive connection has `idle_timeout` (hyper's header timer, which
//! starts once the previous exchange is done and which no trickle of bytes resets); and a
//! connection whose client stopped reading what it is sent is closed after `idle_timeout` too.
//! A streamed answer that keeps moving (server-sent events, a long MCP response) is never cut.
//! Shutdown stops accepting and lets every request in flight finish.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use serde::Deserialize;

use super::client_address::ClientAddressHeader;
use crate::duration::ConfigDuration;
use crate::oauth::redirect_uri::validate_base_url;
use crate::rate_limit::bucket_of;

/// `server`: where the bridge listens, what it is called, and how long each part of a
/// connection's life may take and how many there may be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_address")]
    pub address: String,
    /// The issuer identifier; every endpoint lives under it.
    pub(crate) public_url: String,
    /// Proxies (CIDR networks) whose `X-Forwarded-For`/`Forwarded` name the client's address;
    /// none by default, so the TCP peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Which header the trusted proxies append to: `x-forwarded-for` or `forwarded`.
    #[serde(default)]
    pub client_address_header: ClientAddressHeader,
    /// From the first byte of a request to the end of its headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: ConfigDuration,
    /// From the end of the headers to the end of the body; later is `408`.
    #[serde(default = "default_body_timeout")]
    pub body_timeout: ConfigDuration,
    /// A kept-alive connection with no request, or one whose client stopped reading the
    /// answer, is closed after this long without a byte moving.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: ConfigDuration,
    /// Open connections at most; beyond it new ones are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections from one address (IPv6 by /64) at most; trusted proxies are not counted.
    #[serde(default = "default_max_connections_per_address")]
    pub max_connections_per_address: usize,
    /// How long shutdown waits for the requests in flight before it closes what is still open.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: ConfigDuration,
}

fn default_max_connections_per_address() -> usize {
    1_000
}
fn default_shutdown_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn default_header_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}
fn default_body_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}
fn default_idle_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}
fn default_max_connections() -> usize {
    10_000
}

fn default_address() -> String {
    "0.0.0.0:8080".to_owned()
}

impl ServerConfig {
    /// Problems of `server`, with their field paths.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if self.address.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.address: {:?} is not an address like 0.0.0.0:8080",
                self.address
            ));
        }
        if let Err(problem) = validate_base_url(&self.public_url) {
            problems.push(format!("server.public_url: {problem}"));
        }
        for (field, value) in [
            ("server.header_timeout", &self.header_timeout),
            ("server.body_timeout", &self.body_timeout),
            ("server.idle_timeout", &self.idle_timeout),
        ] {
            if value.0 < Duration::from_millis(100) {
                problems.push(format!("{field}: must be at least 100ms"));
            }
        }
        // A semaphore holds the connection slots; far beyond any file-descriptor limit anyway.
        const MOST: usize = 1_000_000;
        if self.max_connections == 0 || self.max_connections > MOST {
            problems.push(format!("server.max_connections: must be from 1 to {MOST}"));
        }
        if self.max_connections_per_address == 0 {
            problems.push("server.max_connections_per_address: must be at least 1".to_owned());
        }
    }
}

/// Request headers (all of them, with the request line) larger than this are answered `431`.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// After a slow or idle connection is asked to close, how long it has to do so cleanly.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A refused connection is logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// The error a request body gives when it did not arrive within `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(crate) struct BodyTimedOut;

/// Whether `error`, or anything that caused it, is a body that did not arrive in time.
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Open connections per address (IPv6 by /64).
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Held by a connection for its address's count.
struct AddressSlot {
    counts: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, address: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(address).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: Arc::clone(self),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.counts.open.lock()
            && let Some(count) = open.get_mut(&self.address)
        {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for the requests in
/// flight, `shutdown_timeout` at most.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Told when shutdown has waited long enough: what is still open is dropped.
    let (abort_tx, abort_rx) = watch::channel(false);
    // Every connection task holds a receiver; when all are dropped, the connections are done.
    let (done_tx, done_rx) = watch::channel(());
    let mut last_refusal_logged: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: wait, retry.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let address = bucket_of(peer.ip());
        let trusted = limits
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&address));
        let address_slot = if trusted {
            None
        } else {
            match per_address.take(address, limits.max_connections_per_address) {
                Some(slot) => Some(slot),
                None => {
                    drop(stream);
                    if last_refusal_logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
                        last_refusal_logged = Some(Instant::now());
                        tracing::warn!(
                            ?address,
                            max = limits.max_connections_per_address,
                            "connections refused: server.max_connections_per_address are open from one address"
                        );
                    }
                    continue;
                }
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closed at once: the client learns now, instead of waiting in a queue.
            drop(stream);
            if last_refusal_logged.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
                last_refusal_logged = Some(Instant::now());
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connections refused: server.max_connections are open"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            router.clone(),
            Arc::clone(&limits),
            (slot, address_slot),
            Signals {
                stop: stop_rx.clone(),
                abort: abort_rx.clone(),
                _done: done_rx.clone(),
            },
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    if tokio::time::timeout(limits.shutdown_timeout.0, done_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = done_tx.receiver_count(),
            "shutdown: connections still busy after server.shutdown_timeout are closed"
        );
        let _ = abort_tx.send(true);
        let _ = tokio::time::timeout(CLOSE_GRACE, done_tx.closed()).await;
    }
    Ok(())
}

/// What a connection task listens to: shutdown (finish, then close), its end (close now), and a
/// receiver whose drop tells `serve` the connection is done.
struct Signals {
    stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Arc<ServerConfig>,
    _slots: (OwnedSemaphorePermit, Option<AddressSlot>),
    mut signals: Signals,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service_activity = Arc::clone(&activity);
    let body_timeout = limits.body_timeout.0;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let router = router.clone();
        let guard = service_activity.request_started();
        request.extensions_mut().insert(ConnectInfo(peer));
        async move {
            let response = match with_body_in_hand(request, body_timeout).await {
                Ok(request) => router.oneshot(request).await?,
                Err(refusal) => refusal,
            };
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(TrackedBody {
                    inner: body,
                    _guard: guard,
                })
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout.0);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    // Set when the connection was told to close for a timeout; it is dropped if it lingers.
    let mut closing_since: Option<Instant> = None;
    loop {
        let check_at = match closing_since {
            Some(since) => since + CLOSE_GRACE,
            None => activity.next_check(&limits),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result
                    && !error.is_incomplete_message()
                {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = signals.stop.changed(), if !draining => {
                // The request in flight finishes (under the same timeouts), then it closes.
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = signals.abort.changed() => return,
            () = tokio::time::sleep_until(check_at) => {
                if closing_since.is_some() {
                    return;
                }
                if let Some(reason) = activity.overdue(&limits) {
                    tracing::debug!(reason, "closing a connection");
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
        }
    }
}

/// A small body is read whole before any handler sees the request, within `body_timeout`: a
/// handler that answers without reading it (a refusal) would otherwise leave hyper either
/// draining what has arrived or, when the rest is still on its way, closing the connection
/// after the answer, which a client reusing it meets as a connection closed without one.
/// Larger bodies and bodies of unknown length (uploads through the proxy) stream, under the
/// same deadline.
async fn with_body_in_hand(
    request: hyper::Request<Incoming>,
    timeout: Duration,
) -> Result<hyper::Request<Body>, axum::response::Response> {
    use axum::response::IntoResponse;
    let small = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .is_some_and(|length| length <= BUFFERED_BODY_BYTES);
    let (parts, body) = request.into_parts();
    if !small || body.is_end_stream() {
        let body = Body::new(TimedBody::new(body, timeout));
        return Ok(hyper::Request::from_parts(parts, body));
    }
    match tokio::time::timeout(timeout, http_body_util::BodyExt::collect(body)).await {
        Ok(Ok(collected)) => Ok(hyper::Request::from_parts(
            parts,
            Body::from(collected.to_bytes()),
        )),
        Ok(Err(_)) => Err(crate::oauth::OAuthError::invalid_request(
            "the request body could not be read",
        )
        .into_response()),
        Err(_) => Err(crate::oauth::OAuthError::RequestTimeout.into_response()),
    }
}

/// Bodies announced at most this large are read before the request is handled.
const BUFFERED_BODY_BYTES: u64 = 64 * 1024;

/// What a connection has been doing, as its socket and its requests report it.
struct Activity {
    started: Instant,
    /// Milliseconds since `started` when the last byte was read or written.
    last_moved: AtomicU64,
    /// The first request has arrived (until then `header_timeout` runs from `started`).
    first_request_seen: AtomicBool,
    in_flight: AtomicUsize,
    /// The last write could not proceed: the client is not reading.
    write_blocked: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_moved: AtomicU64::new(0),
            first_request_seen: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    fn read(&self) {
        self.last_moved.store(self.now_ms(), Ordering::Relaxed);
    }

    fn wrote(&self, blocked: bool) {
        if !blocked {
            self.last_moved.store(self.now_ms(), Ordering::Relaxed);
        }
        self.write_blocked.store(blocked, Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.first_request_seen.store(true, Ordering::Release);
        RequestGuard(Arc::clone(self))
    }

    /// When a deadline could next have passed (never sooner than a moment from now, so that a
    /// check that finds nothing overdue does not spin).
    fn next_check(&self, limits: &ServerConfig) -> Instant {
        let now = Instant::now();
        let next = if !self.first_request_seen.load(Ordering::Acquire) {
            self.started + limits.header_timeout.0
        } else if self.in_flight.load(Ordering::Acquire) > 0
            && self.write_blocked.load(Ordering::Relaxed)
        {
            self.at(self.last_moved.load(Ordering::Relaxed)) + limits.idle_timeout.0
        } else {
            // Only a write that blocks can become overdue now; it is looked at again later.
            now + limits.idle_timeout.0
        };
        next.max(now + Duration::from_millis(10))
    }

    /// Why the connection should close now, if it should.
    fn overdue(&self, limits: &ServerConfig) -> Option<&'static str> {
        if !self.first_request_seen.load(Ordering::Acquire) {
            return (self.started.elapsed() >= limits.header_timeout.0)
                .then_some("the first request's headers were too slow");
        }
        let silent_for = Instant::now()
            .saturating_duration_since(self.at(self.last_moved.load(Ordering::Relaxed)));
        // An answer in progress may take its time, as long as the client takes what it sends.
        (self.in_flight.load(Ordering::Acquire) > 0
            && self.write_blocked.load(Ordering::Relaxed)
            && silent_for >= limits.idle_timeout.0)
            .then_some("the client stopped reading")
    }
}

/// Held by a request until its answer has been sent (or dropped).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.last_moved.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket, reporting every byte that moves.
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        self.activity.wrote(result.is_pending());
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.wrote(result.is_pending());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails with `BodyTimedOut` once its deadline passes. The timer is made
/// only when the body first makes someone wait (most requests have none).
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        TimedBody {
            inner,
            deadline: Instant::now() + timeout,
            timer: None,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|result| result.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that marks its request done when it is finished or dropped.
struct TrackedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_timeout_is_found_among_the_causes() {
        let wrapped = axum::Error::new(BodyTimedOut);
        assert!(is_body_timeout(&wrapped));
        let other = std::io::Error::other("reset");
        assert!(!is_body_timeout(&other));
    }
}
