//! The reverse proxy in front of the MCP server (README, "The bridge as the proxy"). The token is checked for this
//! resource; the request then goes on without the client's `Authorization` and with the caller's
//! identity in headers the client cannot forge. Bodies stream both ways, never held in memory,
//! so SSE and streamable HTTP reach the client event by event; a client that goes away drops
//! the upstream request with it.

mod headers;
pub(crate) mod settings;
mod target;
mod tool_policy;
mod upstream_client;

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use url::Url;

use super::AppState;
use super::bearer::challenge;
use super::client_address::ClientAddress;
use super::failures::Failure;
use crate::clock::UnixTime;
use crate::oauth::bearer::BearerError;
use crate::oauth::protected_resource::{ProtectedResource, authorize_request, require_scopes};
use crate::oauth::tool_scopes::ToolScopeRule;
use crate::oauth::{Bridge, Cause, OAuthError};
use crate::tokens::AccessTokenClaims;
use crate::tokens::jwt::{IdentityClaims, sign_identity_token};
pub(crate) use headers::HeaderPolicy;
use headers::{add_forwarding, answered_headers, forwarded_headers};
use target::{Unroutable, upstream_url};
pub(crate) use upstream_client::{UpstreamClient, upstream_client};

pub(crate) struct Proxy {
    pub(crate) resource: ProtectedResource,
    /// The MCP server. Without a path of its own, requests keep theirs (`/mcp/x` goes to
    /// `<upstream>/mcp/x`); with one, it replaces `path` (as nginx's `proxy_pass` does).
    pub(crate) upstream: Url,
    /// `proxy.path`, below the issuer.
    pub(crate) path: String,
    /// The path the proxy is served at, base path of the issuer included.
    pub(crate) mount: String,
    pub(crate) resource_metadata_url: String,
    pub(crate) public_origin: PublicOrigin,
    pub(crate) timeout: Duration,
    pub(crate) identity: IdentityHeaders,
    pub(crate) identity_jwt: Option<IdentityJwt>,
    /// Which of the client's headers never reach the MCP server.
    pub(crate) headers: HeaderPolicy,
    /// Added to every answer (`proxy.content_security_policy`); `None` when turned off.
    pub(crate) content_security_policy: Option<HeaderValue>,
    pub(crate) client: UpstreamClient,
    /// `proxy.tool_scopes`: when empty, no body is read and only the resource's scopes count.
    pub(crate) tool_scopes: Vec<ToolScopeRule>,
    pub(crate) max_message_bytes: usize,
    /// `proxy.forward_access_token`: the caller's verified token goes on to the MCP server.
    pub(crate) forward_access_token: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OriginError {
    #[error("{0} has no host")]
    NoHost(String),
    #[error("{0:?} is not a header value")]
    NotAHeaderValue(String),
}

/// How clients reach the bridge (from `public_url`), as told to the MCP server.
pub(crate) struct PublicOrigin {
    pub(crate) proto: HeaderValue,
    /// Host, with the port when `public_url` names one.
    pub(crate) host: HeaderValue,
}

impl PublicOrigin {
    pub(crate) fn of(public_url: &Url) -> Result<Self, OriginError> {
        let host = match (public_url.host_str(), public_url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(OriginError::NoHost(public_url.to_string())),
        };
        let value = |text: &str| {
            HeaderValue::from_str(text).map_err(|_| OriginError::NotAHeaderValue(text.to_owned()))
        };
        Ok(PublicOrigin {
            proto: value(public_url.scheme())?,
            host: value(&host)?,
        })
    }
}

pub(crate) struct IdentityHeaders {
    pub(crate) user: HeaderName,
    pub(crate) email: HeaderName,
    pub(crate) groups: HeaderName,
}

pub(crate) struct IdentityJwt {
    pub(crate) header: HeaderName,
    pub(crate) ttl: Duration,
}

pub(crate) async fn proxy_handler(State(state): State<AppState>, request: Request) -> Response {
    let Some(proxy) = state.proxy.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let started = std::time::Instant::now();
    let answer = proxied(&state, proxy, request).await;
    state
        .bridge
        .metrics
        .proxied(answer.status().as_u16(), started.elapsed());
    answer
}

async fn proxied(state: &AppState, proxy: &Proxy, request: Request) -> Response {
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
    let refuse = |error: BearerError| {
        if let BearerError::InvalidToken(reason) = &error {
            tracing::info!(reason, "proxy request refused");
        }
        challenge(&error, metadata_url, scope_hint.as_deref())
    };
    if proxy.tool_scopes.is_empty() {
        let claims = match authorize_request(&state.bridge, &proxy.resource, token, now).await {
            Ok(claims) => claims,
            Err(error) => return refuse(error),
        };
        let peer = ClientAddress::of(request.extensions()).ip;
        return forward(state, proxy, request, &claims, peer, now).await;
    }
    // Nor is the body of a caller without a token, or without the resource's own scopes, read.
    let claims = match authorize_request(&state.bridge, &proxy.resource, token, now).await {
        Ok(claims) => claims,
        Err(error) => return refuse(error),
    };
    let (needed, request) = match tool_policy::needed_scopes_of(proxy, request).await {
        Ok(decided) => decided,
        Err(answer) => return answer,
    };
    if let Err(error) = require_scopes(&claims, &needed) {
        return refuse(error);
    }
    let peer = ClientAddress::of(request.extensions()).ip;
    forward(state, proxy, request, &claims, peer, now).await
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
            tracing::warn!("proxy request with an ambiguous path segment refused");
            return gateway_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the path may not contain . or .. segments (also with ;parameters), encoded slashes, control characters or double encoding",
            );
        }
    };
    let mut headers = forwarded_headers(&parts.headers, proxy);
    if proxy.forward_access_token
        && let Some(authorization) = parts.headers.get(header::AUTHORIZATION)
    {
        // The header the token was read from and verified for this resource, as it came.
        headers.insert(header::AUTHORIZATION, authorization.clone());
    }
    add_forwarding(&mut headers, proxy, peer, parts.headers.get("x-request-id"));
    // The length of what is sent is the length of the body we hold, not what the client's
    // header claimed: a mismatch would make the MCP server read the framing differently.
    headers.remove(header::CONTENT_LENGTH);
    if let Some(length) = http_body::Body::size_hint(&body).exact()
        && (length > 0 || parts.headers.contains_key(header::CONTENT_LENGTH))
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Err(error) = add_identity(&state.bridge, proxy, claims, now, &mut headers) {
        return error.into_response();
    }
    let Ok(uri) = axum::http::Uri::try_from(url.as_str()) else {
        return OAuthError::internal(Cause::because(
            "the MCP server's URL for this request is not a valid URI",
        ))
        .into_response();
    };
    let mut upstream_request = axum::http::Request::new(body);
    *upstream_request.method_mut() = parts.method;
    *upstream_request.uri_mut() = uri;
    *upstream_request.headers_mut() = headers;
    let response =
        match tokio::time::timeout(proxy.timeout, proxy.client.request(upstream_request)).await {
            Ok(Ok(response)) => response,
            // The client's body, streamed on as it came, stopped coming.
            Ok(Err(error)) if super::server::is_body_timeout(&error) => {
                return OAuthError::RequestTimeout.into_response();
            }
            Ok(Err(error)) if error.is_connect() && is_timeout(&error) => return gateway_timeout(),
            Ok(Err(error)) => {
                let mut answer = gateway_error(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the MCP server behind this proxy cannot be reached",
                );
                // hyper's errors name no URL, so the client's query string is not in the log.
                Failure {
                    code: "bad_gateway",
                    cause: error.into(),
                }
                .attach_to(&mut answer);
                return answer;
            }
            Err(_) => return gateway_timeout(),
        };
    let status = response.status();
    let headers = answered_headers(response.headers(), proxy.content_security_policy.as_ref());
    let mut answer = Response::new(Body::new(response.into_body()));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    if status.is_server_error() {
        Failure {
            code: "mcp_server_error",
            cause: Cause::because("the MCP server answered with a server error"),
        }
        .attach_to(&mut answer);
    }
    answer
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
        OAuthError::internal(Cause::because(
            "the subject is not a valid header value; request refused",
        ))
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
    if let Some(groups) = groups_header(&claims.groups) {
        set(&proxy.identity.groups, &groups);
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
    let token =
        sign_identity_token(&bridge.keys.current(), &identity).map_err(OAuthError::internal)?;
    let value = HeaderValue::from_str(&token).map_err(OAuthError::internal)?;
    headers.insert(jwt.header.clone(), value);
    Ok(())
}

/// Whether `error`, or anything that caused it, is a timeout (the connect timeout of the
/// connector, which hyper reports as an I/O error).
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

fn gateway_timeout() -> Response {
    let mut answer = gateway_error(
        StatusCode::GATEWAY_TIMEOUT,
        "gateway_timeout",
        "the MCP server behind this proxy did not answer in time",
    );
    Failure {
        code: "gateway_timeout",
        cause: Cause::because("the MCP server did not answer in time"),
    }
    .attach_to(&mut answer);
    answer
}

/// The groups header's value: the names joined with commas, so a name holding one would reach
/// the MCP server as two groups, one of them of the name's choosing (a group a user may name
/// at the provider, `eng,admins`, would make them `admins` downstream). Such a name is left
/// out; the signed identity token, an array, carries it as it is.
fn groups_header(groups: &[String]) -> Option<String> {
    let (plain, split): (Vec<&String>, Vec<&String>) =
        groups.iter().partition(|group| !group.contains(','));
    if !split.is_empty() {
        tracing::warn!(
            left_out = split.len(),
            "group names holding a comma are left out of the groups header"
        );
    }
    let plain: Vec<&str> = plain.into_iter().map(String::as_str).collect();
    (!plain.is_empty()).then(|| plain.join(","))
}

fn gateway_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn a_group_name_holding_a_comma_is_left_out_of_the_groups_header() {
        let groups = |names: &[&str]| {
            groups_header(
                &names
                    .iter()
                    .map(|name| name.to_string())
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(groups(&["eng", "ops"]).as_deref(), Some("eng,ops"));
        assert_eq!(groups(&["eng,admins", "ops"]).as_deref(), Some("ops"));
        assert_eq!(groups(&[",admins"]), None);
        assert_eq!(groups(&[]), None);
    }

    pub(crate) fn proxy(upstream: &str) -> Proxy {
        Proxy {
            resource: ProtectedResource {
                url: "https://bridge.example.com/auth/mcp".into(),
                required_scopes: vec![],
                call_scopes: vec![],
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
            headers: HeaderPolicy::new(
                [
                    &HeaderName::from_static("x-forwarded-user"),
                    &HeaderName::from_static("x-forwarded-email"),
                    &HeaderName::from_static("x-forwarded-groups"),
                ],
                false,
            ),
            content_security_policy: Some(HeaderValue::from_static("sandbox")),
            client: upstream_client(Duration::from_secs(1)),
            tool_scopes: Vec::new(),
            max_message_bytes: 1 << 20,
            forward_access_token: false,
        }
    }
}
