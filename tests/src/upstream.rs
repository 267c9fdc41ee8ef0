//! Upstreams for proxy tests: an echo server that reports what it received, and a
//! raw TCP server that answers garbage. Both count the requests they get.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::Json;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream running in the test process.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests (or connections, for the garbage server) received.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Starts the echo server.
    ///
    /// Every request gets `200` and a JSON body `{method, uri, version, headers, body}`
    /// (header names lower-case, repeated headers joined with `, `; the request body
    /// as text). `/slow/<ms>`
    /// waits that long first; `/status/<code>` (or `?status=<code>`) answers with that
    /// status; a query
    /// argument `h_<name>=<value>` sets that response header.
    pub async fn echo() -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .fallback(echo_handler)
            .with_state(hits.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream {
            addr,
            hits,
            connections,
            task,
        }
    }

    /// Starts a server that reads a request and answers with bytes that are not HTTP.
    pub async fn garbage() -> Upstream {
        Upstream::canned(b"this is not http\r\n\r\n").await
    }

    /// Starts a server that reads a request, writes `response` verbatim and closes.
    pub async fn canned(response: &'static [u8]) -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind canned upstream");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let conns = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock.write_all(response).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Upstream {
            addr,
            hits,
            connections,
            task,
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo_handler(State(hits): State<Arc<AtomicUsize>>, req: Request) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    if let Some(ms) = path
        .strip_prefix("/slow/")
        .and_then(|s| s.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status_arg = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix("status="))
            .map(str::to_string)
    });
    let status = path
        .strip_prefix("/status/")
        .map(str::to_string)
        .or(status_arg)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|c| http::StatusCode::from_u16(c).ok())
        .unwrap_or(http::StatusCode::OK);
    let mut headers = serde_json::Map::new();
    for name in req.headers().keys() {
        let joined = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_string(), json!(joined));
    }
    let method = req.method().as_str().to_string();
    let uri = req.uri().to_string();
    let version = format!("{:?}", req.version());
    let received = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let body = json!({
        "method": method,
        "uri": uri,
        "version": version,
        "headers": headers,
        "body": String::from_utf8_lossy(&received),
    });
    let mut resp = (status, Json(body)).into_response();
    // `h_<name>=<value>` query arguments become response headers.
    for pair in uri.split_once('?').map_or("", |(_, q)| q).split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let Some(name) = k.strip_prefix("h_") else {
            continue;
        };
        let v = v
            .replace("%20", " ")
            .replace("%3B", ";")
            .replace("%2C", ",")
            .replace("%3D", "=");
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(n, v);
        }
    }
    resp
}
