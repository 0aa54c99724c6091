//! The proxy's HTTP client for the MCP server: hyper's pooled client with nothing on top. A
//! general-purpose client (reqwest, which the proxy used before) parses the URL again, runs
//! redirect, cookie and retry layers even when they are off, and was a sixth of the proxy's time
//! under load. This one follows no redirect (they are the client's to follow), reads no proxy
//! from the environment, and keeps connections to the server open between requests.

use std::time::Duration;

use axum::body::Body;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How long a pooled connection to the MCP server may sit unused before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// Data sent and not acknowledged for this long ends the connection.
#[cfg(target_os = "linux")]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for `http` and `https` MCP servers (certificates checked against the Web PKI roots,
/// as reqwest did); connecting may take at most `connect_timeout`.
pub(crate) fn upstream_client(connect_timeout: Duration) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    // A stream from a server whose host died, or a pooled connection a network cut, is noticed
    // by the kernel instead of waited on forever (reqwest's defaults, which the proxy had).
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_keepalive_interval(Some(TCP_KEEPALIVE));
    http.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
    #[cfg(target_os = "linux")]
    http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
    let connector = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}
