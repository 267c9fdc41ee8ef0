//! The HTTP server: accepts TCP connections and serves the router on each with
//! hyper (HTTP/1.1, and HTTP/2 with prior knowledge) until a shutdown signal, then
//! lets open connections finish.
//!
//! `axum::serve` has no connection timeouts, so a client could hold a connection
//! (a file descriptor and a task) forever by sending nothing, half a request line,
//! or headers one byte at a time (slowloris). Here a `ConnWatch` follows every
//! connection and closes it when
//!
//! - **the header read timeout** passes: a request's complete headers must arrive
//!   within [`Timeouts::header_read`] of its first byte (for a connection's first
//!   request: of the accept), however slowly the bytes trickle in;
//! - **the idle timeout** passes: between requests, a connection on which nothing
//!   was received or sent for [`Timeouts::idle`] is closed.
//!
//! Neither applies while a request is being handled; a request body that stalls
//! is cut by the body extractor instead ([`crate::routes::JsonBody`], 408 after
//! the same header read timeout). The rules are the same for
//! HTTP/1 and HTTP/2 and for the protocol detection before them. hyper's own
//! HTTP/1 `header_read_timeout` is switched off: its timer starts as soon as a
//! connection waits for a request, so it would also close idle keep-alive
//! connections at the header timeout, and it covers neither protocol detection nor
//! HTTP/2.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest wait for open connections after a shutdown signal; whatever is still
/// open then is dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The connection timeouts (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time allowed for a request's complete headers, from its first byte.
    pub header_read: Duration,
    /// Time a connection may stay silent between requests.
    pub idle: Duration,
}

/// Serves `app` on every connection `listener` accepts until `shutdown` resolves;
/// then stops accepting, lets open connections finish their requests (idle ones
/// close at once) for up to [`SHUTDOWN_GRACE`], and returns.
///
/// Runs once per process (from [`crate::serve`]) or per test.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().header_read_timeout(None);
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let watch = Arc::new(ConnWatch::new(timeouts));
        let io = TokioIo::new(WatchedIo {
            inner: stream,
            watch: Arc::clone(&watch),
        });
        let service = WatchedService {
            inner: TowerToHyperService::new(app.clone()),
            watch: Arc::clone(&watch),
        };
        let conn = graceful.watch(builder.serve_connection(io, service).into_owned());
        tokio::spawn(async move {
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "connection ended with an error: {e}");
                    }
                }
                reason = watch.expired() => {
                    tracing::debug!(%peer, "closing the connection: {reason}");
                }
            }
        });
    }

    drop(listener);
    tracing::info!(
        open_connections = graceful.count(),
        "stopped accepting connections; letting open ones finish"
    );
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; dropping them");
    }
}

/// What to do after `accept` failed: nothing for errors of that one connection;
/// otherwise (e.g. out of file descriptors) log and pause for a second so the loop
/// does not spin.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Where a connection stands, for its timeouts.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's headers since the given instant (the accept, or the
    /// first byte received after an idle spell): the header timeout runs.
    Receiving(Instant),
    /// Between requests, nothing of the next one received yet: the idle timeout runs.
    Idle,
    /// At least one request is being handled: no timeout runs.
    Busy,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    Headers,
    Idle,
}

#[derive(Debug)]
struct WatchState {
    phase: Phase,
    /// Requests being handled (HTTP/2 can have several).
    in_flight: usize,
    /// Last time a byte was received or sent.
    last_activity: Instant,
}

/// The timeout bookkeeping of one connection, shared by its I/O wrapper (which
/// reports traffic), its service wrapper (which reports requests) and its task
/// (which waits for [`ConnWatch::expired`]).
#[derive(Debug)]
struct ConnWatch {
    timeouts: Timeouts,
    state: Mutex<WatchState>,
    /// Signalled when the deadline may have moved earlier or appeared.
    changed: Notify,
}

impl ConnWatch {
    fn new(timeouts: Timeouts) -> Self {
        let now = Instant::now();
        Self {
            timeouts,
            state: Mutex::new(WatchState {
                phase: Phase::Receiving(now),
                in_flight: 0,
                last_activity: now,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, WatchState> {
        // The state stays consistent even if a holder panicked: every update is a
        // plain assignment.
        crate::sync::lock(&self.state)
    }

    /// Bytes arrived: the connection is active, and if it was idle a request has
    /// started arriving, so the header timeout starts.
    fn on_read(&self) {
        let now = Instant::now();
        let mut state = self.state();
        state.last_activity = now;
        if matches!(state.phase, Phase::Idle) {
            state.phase = Phase::Receiving(now);
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Bytes were sent (e.g. the rest of a response body): the connection is active.
    fn on_write(&self) {
        self.state().last_activity = Instant::now();
    }

    /// A request's headers are complete and its handling starts; the returned guard
    /// marks its end when dropped.
    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        state.phase = Phase::Busy;
        InFlight(Arc::clone(self))
    }

    fn request_finished(&self) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.phase = Phase::Idle;
            state.last_activity = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed, and why; `None` while a request is
    /// being handled.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        let state = self.state();
        match state.phase {
            Phase::Busy => None,
            Phase::Receiving(since) => Some((since + self.timeouts.header_read, Expiry::Headers)),
            Phase::Idle => Some((state.last_activity + self.timeouts.idle, Expiry::Idle)),
        }
    }

    /// Resolves when the connection has missed a deadline, with the reason.
    async fn expired(&self) -> String {
        loop {
            // Created before reading the deadline, so a change made in between still
            // wakes the wait below (`notify_one` also keeps a permit for later).
            let changed = self.changed.notified();
            match self.deadline() {
                None => changed.await,
                Some((at, expiry)) => {
                    if at <= Instant::now() {
                        return match expiry {
                            Expiry::Headers => format!(
                                "no complete request headers within {:?}",
                                self.timeouts.header_read
                            ),
                            Expiry::Idle => format!("idle for {:?}", self.timeouts.idle),
                        };
                    }
                    // Traffic may push the deadline back while we sleep; the loop
                    // then checks again.
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// Marks one request as in flight on its connection until dropped (when its
/// response is ready, or the request is abandoned).
#[derive(Debug)]
struct InFlight(Arc<ConnWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The router as a hyper service, reporting each request to the [`ConnWatch`].
#[derive(Debug, Clone)]
struct WatchedService<S> {
    inner: S,
    watch: Arc<ConnWatch>,
}

impl<S, B> hyper::service::Service<Request<B>> for WatchedService<S>
where
    S: hyper::service::Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let in_flight = self.watch.request_started();
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            drop(in_flight);
            result
        })
    }
}

/// The TCP stream, reporting traffic to the [`ConnWatch`].
#[derive(Debug)]
struct WatchedIo {
    inner: TcpStream,
    watch: Arc<ConnWatch>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_read();
        }
        poll
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.on_write();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.watch.on_write();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::time::Duration;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;
    use tokio::time::Instant;

    use super::{serve, Timeouts};

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n";

    /// A server with a fast route `/` and a slow one `/slow` (400 ms).
    async fn start(
        header_ms: u64,
        idle_ms: u64,
    ) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    "slow"
                }),
            );
        let timeouts = Timeouts {
            header_read: Duration::from_millis(header_ms),
            idle: Duration::from_millis(idle_ms),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, timeouts, async {
            let _ = rx.await;
        }));
        (addr, tx, server)
    }

    /// Waits (at most 5 s) until the server closes the connection; returns how long
    /// that took.
    async fn time_to_close(stream: &mut TcpStream) -> Duration {
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Err(_) => panic!("the connection is still open after 5 s"),
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads one response whose body ends with `tail`.
    async fn read_response(stream: &mut TcpStream, tail: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).ends_with(&format!("\r\n\r\n{tail}")) {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .expect("response within 5 s")
                .unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn silent_and_partial_connections_are_closed_at_the_header_timeout() {
        let (addr, _tx, _server) = start(200, 10_000).await;
        for sent in [&b""[..], b"GET /slo", b"PRI * HTTP/2.0\r\n"] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(sent).await.unwrap();
            let took = time_to_close(&mut stream).await;
            assert!(
                took >= Duration::from_millis(150) && took < Duration::from_secs(2),
                "{sent:?}: {took:?}"
            );
        }
    }

    #[tokio::test]
    async fn drip_fed_headers_do_not_extend_the_header_timeout() {
        let (addr, _tx, _server) = start(300, 10_000).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        tokio::spawn(async move {
            let head = b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            for b in head {
                if wr.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    #[tokio::test]
    async fn keep_alive_connections_close_after_the_idle_timeout() {
        let (addr, _tx, _server) = start(200, 1000).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        assert!(read_response(&mut stream, "ok")
            .await
            .starts_with("HTTP/1.1 200"));
        // Idle for longer than the header timeout, less than the idle timeout.
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(REQUEST).await.unwrap();
        assert!(read_response(&mut stream, "ok")
            .await
            .starts_with("HTTP/1.1 200"));
        let took = time_to_close(&mut stream).await;
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(4),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn slow_requests_are_not_cut() {
        let (addr, _tx, _server) = start(100, 100).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut stream, "slow")
            .await
            .starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_returns() {
        let (addr, tx, server) = start(10_000, 10_000).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        read_response(&mut stream, "ok").await;
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("serve returns promptly")
            .unwrap();
        time_to_close(&mut stream).await;
    }
}
