//! A streaming MCP-like server for the proxy tests: it echoes what reached it, streams server-sent
//! events on cue, counts uploads as they arrive, and notices when a client goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const EVENTS: usize = 1000;

#[derive(Default)]
pub struct UpstreamState {
    pub requests: AtomicUsize,
    pub last_headers: std::sync::Mutex<Option<HeaderMap>>,
    /// The event stream waits for this after its first event.
    pub release_events: Notify,
    pub uploaded: AtomicU64,
    pub stream_cancelled: AtomicBool,
    /// The address each request came from: one per connection the proxy opened.
    pub peers: std::sync::Mutex<std::collections::HashSet<std::net::SocketAddr>>,
}

pub struct McpUpstream {
    pub url: String,
    pub state: Arc<UpstreamState>,
}

impl McpUpstream {
    pub async fn start() -> McpUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(UpstreamState::default());
        let app = Router::new()
            .route("/mcp", any(echo))
            .route("/mcp/cgi", any(cgi_environment))
            .route("/mcp/{*rest}", any(echo))
            .route("/mcp/events", get(events))
            .route("/mcp/upload", post(upload))
            .route("/mcp/slow", get(slow))
            .route("/mcp/endless", get(endless))
            .route("/mcp/firehose", get(firehose))
            .route("/mcp/pause", get(pause))
            .with_state(Arc::clone(&state));
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        McpUpstream { url, state }
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.state.last_headers.lock().unwrap().clone().unwrap()
    }
}

fn seen(state: &UpstreamState, headers: &HeaderMap) {
    state.requests.fetch_add(1, Ordering::SeqCst);
    *state.last_headers.lock().unwrap() = Some(headers.clone());
}

async fn echo(State(state): State<Arc<UpstreamState>>, request: Request) -> Response {
    seen(&state, request.headers());
    if let Some(axum::extract::ConnectInfo(peer)) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        state.peers.lock().unwrap().insert(*peer);
    }
    let (parts, body) = request.into_parts();
    let received = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let body = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "body": String::from_utf8_lossy(&received),
    });
    (
        [("mcp-session-id", "session-from-server")],
        Json::<Value>(body),
    )
        .into_response()
}

/// What a CGI or WSGI application would see: each header as `HTTP_<NAME>` with `-` read as
/// `_`, and headers that become the same variable merged with commas (as Python's wsgiref,
/// PHP and CGI gateways do). Also the query string as it arrived.
async fn cgi_environment(State(state): State<Arc<UpstreamState>>, request: Request) -> Json<Value> {
    seen(&state, request.headers());
    let mut environ = serde_json::Map::new();
    for (name, value) in request.headers() {
        let key = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let merged = match environ.get(&key).and_then(Value::as_str) {
            Some(before) => format!("{before},{value}"),
            None => value,
        };
        environ.insert(key, Value::String(merged));
    }
    environ.insert(
        "QUERY_STRING".to_owned(),
        Value::String(request.uri().query().unwrap_or_default().to_owned()),
    );
    Json(Value::Object(environ))
}

async fn events(State(state): State<Arc<UpstreamState>>, headers: HeaderMap) -> Response {
    seen(&state, &headers);
    let stream = async_stream(state);
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Event 0 at once; the other 999 only once the test has seen event 0 through the proxy.
fn async_stream(
    state: Arc<UpstreamState>,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    futures_util::stream::unfold(0usize, move |n| {
        let state = Arc::clone(&state);
        async move {
            if n == EVENTS {
                return None;
            }
            if n == 1 {
                state.release_events.notified().await;
            }
            Some((Ok(format!("id: {n}\ndata: {{\"n\":{n}}}\n\n")), n + 1))
        }
    })
}

async fn upload(State(state): State<Arc<UpstreamState>>, request: Request) -> Json<Value> {
    seen(&state, request.headers());
    let mut body = request.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        state
            .uploaded
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    Json(json!({"bytes": state.uploaded.load(Ordering::SeqCst)}))
}

async fn slow(State(state): State<Arc<UpstreamState>>, headers: HeaderMap) -> &'static str {
    seen(&state, &headers);
    tokio::time::sleep(Duration::from_secs(10)).await;
    "too late"
}

/// Notes when the stream is dropped, which is how a server learns its client went away.
struct CancelGuard(Arc<UpstreamState>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.stream_cancelled.store(true, Ordering::SeqCst);
    }
}

async fn endless(State(state): State<Arc<UpstreamState>>, headers: HeaderMap) -> Response {
    seen(&state, &headers);
    let guard = CancelGuard(Arc::clone(&state));
    let stream = futures_util::stream::unfold(guard, |guard| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((Ok::<_, std::io::Error>("data: tick\n\n".to_owned()), guard))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// As fast as the client takes it, forever: a client that stops reading fills every buffer.
async fn firehose(State(state): State<Arc<UpstreamState>>, headers: HeaderMap) -> Response {
    seen(&state, &headers);
    let guard = CancelGuard(Arc::clone(&state));
    let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures_util::stream::unfold(guard, move |guard| {
        let chunk = chunk.clone();
        async move { Some((Ok::<_, std::io::Error>(chunk), guard)) }
    });
    Body::from_stream(stream).into_response()
}

/// Half a second, then an answer: a request still in flight when the bridge shuts down.
async fn pause(State(state): State<Arc<UpstreamState>>, headers: HeaderMap) -> &'static str {
    seen(&state, &headers);
    tokio::time::sleep(Duration::from_millis(500)).await;
    "done"
}
