//! The reverse proxy in front of the MCP server (SPEC §7). The token is checked for this
//! resource; the request then goes on without the client's `Authorization` and with the caller's
//! identity in headers the client cannot forge. Bodies stream both ways, never held in memory,
//! so SSE and streamable HTTP reach the client event by event; a client that goes away drops
//! the upstream request with it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use url::Url;

use super::AppState;
use super::bearer::challenge;
use crate::clock::UnixTime;
use crate::error_chain;
use crate::oauth::bearer::BearerError;
use crate::oauth::protected_resource::{ProtectedResource, authorize_request};
use crate::oauth::{Bridge, OAuthError};
use crate::tokens::AccessTokenClaims;
use crate::tokens::jwt::{IdentityClaims, sign_identity_token};

/// RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub struct Proxy {
    pub resource: ProtectedResource,
    /// The MCP server. Without a path of its own, requests keep theirs (`/mcp/x` goes to
    /// `<upstream>/mcp/x`); with one, it replaces `path` (as nginx's `proxy_pass` does).
    pub upstream: Url,
    /// `proxy.path`, below the issuer.
    pub path: String,
    /// The path the proxy is served at, base path of the issuer included.
    pub mount: String,
    pub resource_metadata_url: String,
    pub public_origin: PublicOrigin,
    pub timeout: Duration,
    pub identity: IdentityHeaders,
    pub identity_jwt: Option<IdentityJwt>,
    pub client: reqwest::Client,
}

/// How clients reach the bridge (from `public_url`), as told to the MCP server.
pub struct PublicOrigin {
    pub proto: HeaderValue,
    /// Host, with the port when `public_url` names one.
    pub host: HeaderValue,
}

impl PublicOrigin {
    pub fn of(public_url: &Url) -> Result<Self, String> {
        let host = match (public_url.host_str(), public_url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(format!("{public_url} has no host")),
        };
        let value = |text: &str| {
            HeaderValue::from_str(text).map_err(|_| format!("{text:?} is not a header value"))
        };
        Ok(PublicOrigin {
            proto: value(public_url.scheme())?,
            host: value(&host)?,
        })
    }
}

pub struct IdentityHeaders {
    pub user: HeaderName,
    pub email: HeaderName,
    pub groups: HeaderName,
}

pub struct IdentityJwt {
    pub header: HeaderName,
    pub ttl: Duration,
}

impl Proxy {
    /// The HTTP client for the MCP server: no redirects followed (they are the client's to
    /// follow), no proxy from the environment, and a connect timeout; the response timeout is
    /// per request, up to the headers only, so long streams are not cut.
    pub fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the proxy's HTTP client: {e}"))
    }
}

pub async fn proxy_handler(State(state): State<AppState>, request: Request) -> Response {
    let Some(proxy) = state.proxy.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let now = state.clock.now();
    let metadata_url = Some(proxy.resource_metadata_url.as_str());
    let scope_hint = (!proxy.resource.required_scopes.is_empty())
        .then(|| proxy.resource.required_scopes.join(" "));
    let token = match super::bearer_token(request.headers()) {
        Ok(token) => token,
        Err(_) => {
            let error = BearerError::InvalidRequest("the Authorization header is malformed");
            return challenge(&error, metadata_url, scope_hint.as_deref());
        }
    };
    let claims = match authorize_request(&state.bridge, &proxy.resource, token, now).await {
        Ok(claims) => claims,
        Err(error) => {
            if let BearerError::InvalidToken(reason) = &error {
                tracing::info!(reason, "proxy request refused");
            }
            return challenge(&error, metadata_url, scope_hint.as_deref());
        }
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    forward(&state, proxy, request, &claims, peer, now).await
}

async fn forward(
    state: &AppState,
    proxy: &Proxy,
    request: Request,
    claims: &AccessTokenClaims,
    peer: Option<IpAddr>,
    now: UnixTime,
) -> Response {
    let (parts, body) = request.into_parts();
    let url = match upstream_url(proxy, parts.uri.path(), parts.uri.query()) {
        Ok(url) => url,
        Err(Unroutable::OutsideTheMount) => return StatusCode::NOT_FOUND.into_response(),
        Err(Unroutable::Traversal) => {
            tracing::warn!("proxy request with a dot segment or an encoded slash refused");
            return gateway_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the path may not contain . or .. segments or encoded slashes",
            );
        }
    };
    let mut headers = forwarded_headers(&parts.headers, proxy);
    add_forwarding(&mut headers, proxy, peer);
    if let Err(error) = add_identity(&state.bridge, proxy, claims, now, &mut headers) {
        return error.into_response();
    }
    let upstream_request = proxy
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    let response = match tokio::time::timeout(proxy.timeout, upstream_request.send()).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) if error.is_timeout() => return gateway_timeout(),
        Ok(Err(error)) => {
            // Without the URL: its query string is the client's.
            tracing::warn!(error = %error_chain(&error.without_url()), "the MCP server cannot be reached");
            return gateway_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the MCP server behind this proxy cannot be reached",
            );
        }
        Err(_) => return gateway_timeout(),
    };
    let status = response.status();
    let headers = answered_headers(response.headers());
    let mut answer = Response::new(Body::from_stream(response.bytes_stream()));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
}

#[derive(Debug, PartialEq, Eq)]
enum Unroutable {
    /// Shares only a prefix with the mount (`/mcpx` under `/mcp`).
    OutsideTheMount,
    /// `.`/`..` segments (also percent-encoded) would climb out of the mount at the MCP server's
    /// host, which resolves them; encoded slashes would make its path differ from ours.
    Traversal,
}

/// Where a request goes, query included (less any `access_token`, which never travels on).
fn upstream_url(proxy: &Proxy, path: &str, query: Option<&str>) -> Result<Url, Unroutable> {
    let rest = path
        .strip_prefix(&proxy.mount)
        .ok_or(Unroutable::OutsideTheMount)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return Err(Unroutable::OutsideTheMount);
    }
    let lowered = rest.to_ascii_lowercase();
    let climbs = lowered
        .split('/')
        .map(|segment| segment.replace("%2e", "."))
        .any(|segment| segment == "." || segment == "..");
    if climbs || lowered.contains("%2f") || lowered.contains("%5c") || rest.contains('\\') {
        return Err(Unroutable::Traversal);
    }
    let mut url = proxy.upstream.clone();
    let prefix = match url.path() {
        "" | "/" => proxy.path.as_str(),
        own => own.trim_end_matches('/'),
    };
    let joined = format!("{prefix}{rest}");
    url.set_path(if joined.is_empty() { "/" } else { &joined });
    let kept: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("access_token="))
        .collect();
    url.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());
    Ok(url)
}

/// The client's headers minus hop-by-hop ones, its credentials, the bridge's own cookies, the
/// identity headers we are about to set and every forwarding header: the MCP server trusts what
/// this proxy says about the caller and the connection, so the client may say none of it.
fn forwarded_headers(incoming: &HeaderMap, proxy: &Proxy) -> HeaderMap {
    let mut headers = HeaderMap::new();
    copy_end_to_end(incoming, &mut headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::HOST);
    headers.remove(header::FORWARDED);
    headers.remove("x-real-ip");
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-forwarded-"))
        .cloned()
        .collect();
    for name in claimed {
        headers.remove(name);
    }
    headers.remove(&proxy.identity.user);
    headers.remove(&proxy.identity.email);
    headers.remove(&proxy.identity.groups);
    if let Some(jwt) = &proxy.identity_jwt {
        headers.remove(&jwt.header);
    }
    if let Some(cookies) = without_bridge_cookies(incoming) {
        headers.insert(header::COOKIE, cookies);
    } else {
        headers.remove(header::COOKIE);
    }
    headers
}

/// Who connected and how the client reached us (RFC 7239's de-facto `X-Forwarded-*` forms).
fn add_forwarding(headers: &mut HeaderMap, proxy: &Proxy, peer: Option<IpAddr>) {
    if let Some(peer) = peer
        && let Ok(value) = HeaderValue::from_str(&peer.to_string())
    {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", proxy.public_origin.proto.clone());
    headers.insert("x-forwarded-host", proxy.public_origin.host.clone());
}

/// The MCP server's headers minus hop-by-hop ones and any cookie of the bridge's (it answers
/// from the bridge's origin, so it could otherwise overwrite the sign-in cookies).
fn answered_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    copy_end_to_end(from, &mut headers);
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|value| {
            value.to_str().map_or(true, |text| {
                let name = text.trim_start();
                !name.starts_with("mob_") && !name.starts_with("__Host-mob_")
            })
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
}

/// The Cookie header without the bridge's sign-in and consent cookies, which are not the MCP
/// server's business.
fn without_bridge_cookies(incoming: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = incoming
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !pair.starts_with("mob_") && !pair.starts_with("__Host-mob_"))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let listed_in_connection: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in from {
        let name_text = name.as_str();
        if HOP_BY_HOP.contains(&name_text)
            || listed_in_connection
                .iter()
                .any(|listed| listed == name_text)
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

fn add_identity(
    bridge: &Bridge,
    proxy: &Proxy,
    claims: &AccessTokenClaims,
    now: UnixTime,
    headers: &mut HeaderMap,
) -> Result<(), OAuthError> {
    // The user must arrive: without that header the MCP server would see an anonymous caller.
    let user = HeaderValue::from_str(&claims.sub).map_err(|_| {
        tracing::error!("the subject is not a valid header value; request refused");
        OAuthError::ServerError
    })?;
    headers.insert(proxy.identity.user.clone(), user);
    let mut set = |name: &HeaderName, value: &str| match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name.clone(), value);
        }
        // A value that cannot be a header (a newline in a name) is left out, not mangled.
        Err(_) => {
            tracing::warn!(header = %name, "identity value is not a valid header value; left out")
        }
    };
    if let Some(email) = &claims.email {
        set(&proxy.identity.email, email);
    }
    if !claims.groups.is_empty() {
        set(&proxy.identity.groups, &claims.groups.join(","));
    }
    let Some(jwt) = &proxy.identity_jwt else {
        return Ok(());
    };
    let identity = IdentityClaims {
        iss: bridge.settings.issuer.clone(),
        sub: claims.sub.clone(),
        aud: proxy.upstream.as_str().to_owned(),
        exp: now.plus(jwt.ttl).seconds(),
        iat: now.seconds(),
        client_id: claims.client_id.clone(),
        scope: claims.scope.clone(),
        resource: claims.aud.clone(),
        access_token_jti: claims.jti.clone(),
        access_token_exp: claims.exp,
        email: claims.email.clone(),
        name: claims.name.clone(),
        groups: claims.groups.clone(),
    };
    let token = sign_identity_token(&bridge.keys.current(), &identity).map_err(|error| {
        tracing::error!(%error, "cannot sign the identity token");
        OAuthError::ServerError
    })?;
    let value = HeaderValue::from_str(&token).map_err(|_| OAuthError::ServerError)?;
    headers.insert(jwt.header.clone(), value);
    Ok(())
}

fn gateway_timeout() -> Response {
    gateway_error(
        StatusCode::GATEWAY_TIMEOUT,
        "gateway_timeout",
        "the MCP server behind this proxy did not answer in time",
    )
}

fn gateway_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(upstream: &str) -> Proxy {
        Proxy {
            resource: ProtectedResource {
                url: "https://bridge.example.com/auth/mcp".into(),
                required_scopes: vec![],
            },
            upstream: Url::parse(upstream).unwrap(),
            path: "/mcp".into(),
            mount: "/auth/mcp".into(),
            resource_metadata_url: String::new(),
            public_origin: PublicOrigin::of(&Url::parse("https://bridge.example.com").unwrap())
                .unwrap(),
            timeout: Duration::from_secs(1),
            identity: IdentityHeaders {
                user: HeaderName::from_static("x-forwarded-user"),
                email: HeaderName::from_static("x-forwarded-email"),
                groups: HeaderName::from_static("x-forwarded-groups"),
            },
            identity_jwt: None,
            client: reqwest::Client::new(),
        }
    }

    #[test]
    fn paths_map_like_nginx_proxy_pass() {
        let bare = proxy("http://mcp:3000");
        let url =
            |p: &Proxy, path: &str, query| upstream_url(p, path, query).ok().map(String::from);
        assert_eq!(
            url(&bare, "/auth/mcp", None).as_deref(),
            Some("http://mcp:3000/mcp")
        );
        assert_eq!(
            url(&bare, "/auth/mcp/sse", Some("a=1")).as_deref(),
            Some("http://mcp:3000/mcp/sse?a=1")
        );
        assert_eq!(url(&bare, "/auth/mcpx", None), None);
        let pathed = proxy("http://mcp:3000/v1/");
        assert_eq!(
            url(&pathed, "/auth/mcp", None).as_deref(),
            Some("http://mcp:3000/v1")
        );
        assert_eq!(
            url(&pathed, "/auth/mcp/x", None).as_deref(),
            Some("http://mcp:3000/v1/x")
        );
        assert_eq!(
            url(&bare, "/auth/mcp", Some("access_token=t&page=2")).as_deref(),
            Some("http://mcp:3000/mcp?page=2")
        );
    }

    #[test]
    fn dot_segments_and_encoded_slashes_cannot_leave_the_mount() {
        let pathed = proxy("http://gateway/team-a/");
        for path in [
            "/auth/mcp/../team-b/x",
            "/auth/mcp/%2e%2e/team-b",
            "/auth/mcp/.%2E/x",
            "/auth/mcp/%2E./x",
            "/auth/mcp/./x",
            "/auth/mcp/a%2Fb",
            "/auth/mcp/a%5cb",
            "/auth/mcp/..",
        ] {
            assert_eq!(
                upstream_url(&pathed, path, None),
                Err(Unroutable::Traversal),
                "{path}"
            );
        }
        assert!(upstream_url(&pathed, "/auth/mcp/..well/x", None).is_ok());
    }

    #[test]
    fn the_servers_answer_cannot_set_the_bridges_cookies() {
        let mut answer = HeaderMap::new();
        answer.append(
            header::SET_COOKIE,
            HeaderValue::from_static("__Host-mob_login_x=; Max-Age=0"),
        );
        answer.append(
            header::SET_COOKIE,
            HeaderValue::from_static("session=1; HttpOnly"),
        );
        answer.append(header::SET_COOKIE, HeaderValue::from_static("theme=dark"));
        let out = answered_headers(&answer);
        let cookies: Vec<_> = out.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["session=1; HttpOnly", "theme=dark"]);
        assert_eq!(out[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        incoming.insert("x-private", HeaderValue::from_static("1"));
        incoming.insert(header::TE, HeaderValue::from_static("trailers"));
        incoming.insert("mcp-session-id", HeaderValue::from_static("s1"));
        incoming.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        incoming.insert("x-forwarded-user", HeaderValue::from_static("admin"));
        incoming.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        incoming.insert("x-forwarded-admin", HeaderValue::from_static("yes"));
        incoming.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        incoming.insert("x-real-ip", HeaderValue::from_static("10.0.0.1"));
        incoming.insert(
            header::COOKIE,
            HeaderValue::from_static("mob_login_x=1; theme=dark; __Host-mob_consent=2"),
        );
        let out = forwarded_headers(&incoming, &proxy("http://mcp:3000"));
        assert_eq!(out["mcp-session-id"], "s1");
        assert_eq!(out[header::COOKIE], "theme=dark");
        for gone in [
            "connection",
            "x-private",
            "te",
            "authorization",
            "x-forwarded-user",
            "x-forwarded-for",
            "x-forwarded-admin",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
    }
}
