//! `proxy.tool_scopes` over HTTP: reads the request's `Mcp-Method`/`Mcp-Name` headers and its
//! JSON-RPC body (one message, bounded by `proxy.max_message_bytes`), decides which scopes the
//! request needs (`oauth::tool_scopes`) and hands the body on as it came. Answers stream back
//! untouched; only what the client sends is held, and only when per-tool scopes are configured.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::Proxy;
use crate::oauth::OAuthError;
use crate::oauth::tool_scopes::{
    Claimed, Refused, calls_from_body, calls_from_headers, decode_header_value, needed_scopes,
};

static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// The scopes `request` needs and the request itself, its body now in hand; or the answer that
/// refuses it (400 with a JSON-RPC error, 413, 408).
pub(super) async fn needed_scopes_of(
    proxy: &Proxy,
    request: Request,
) -> Result<(Vec<String>, Request), Response> {
    let claimed = claimed(request.headers()).map_err(refusal)?;
    let plain_json = plain_json(request.headers());
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, proxy.max_message_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            return Err(with_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                &Refused::too_large(),
            ));
        }
        Err(error) if crate::http::server::is_body_timeout(error.as_ref()) => {
            return Err(OAuthError::RequestTimeout.into_response());
        }
        // The client went away or broke the framing: nobody is left to answer.
        Err(_) => return Err(StatusCode::BAD_REQUEST.into_response()),
    };
    let calls = if body.is_empty() {
        calls_from_headers(&claimed)
    } else {
        // The body is read as UTF-8 JSON; a server told another charset (body-parser decodes
        // UTF-7) or an encoding would read other bytes than the proxy did.
        plain_json.map_err(|refused| with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, &refused))?;
        calls_from_body(&claimed, &body)
    }
    .map_err(refusal)?;
    let needed = needed_scopes(&proxy.resource.required_scopes, &proxy.tool_scopes, &calls);
    Ok((needed, Request::from_parts(parts, Body::from(body))))
}

/// `Content-Type: application/json`, with no parameter but `charset=utf-8`, and no
/// `Content-Encoding` but `identity`.
fn plain_json(headers: &HeaderMap) -> Result<(), Refused> {
    let unsupported = || Refused::unsupported_media_type();
    let encodings = headers.get_all(header::CONTENT_ENCODING);
    if encodings
        .iter()
        .any(|value| !value.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        return Err(unsupported());
    }
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(content_type), None) = (types.next(), types.next()) else {
        return Err(unsupported());
    };
    let content_type = content_type.to_str().map_err(|_| unsupported())?;
    let mut parts = content_type.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(unsupported());
    }
    for parameter in parts {
        let (name, value) = parameter.split_once('=').ok_or_else(unsupported)?;
        let value = value.trim().trim_matches('"');
        if !name.trim().eq_ignore_ascii_case("charset") || !value.eq_ignore_ascii_case("utf-8") {
            return Err(unsupported());
        }
    }
    Ok(())
}

fn claimed(headers: &HeaderMap) -> Result<Claimed, Refused> {
    // CGI, WSGI and PHP servers read `Mcp_Name` as `Mcp-Name`: a second spelling the proxy
    // would not have judged (`proxy.allow_underscore_headers` forwards it).
    if headers.contains_key("mcp_method") || headers.contains_key("mcp_name") {
        return Err(Refused::malformed_header());
    }
    let one = |name: &HeaderName| -> Result<Option<String>, Refused> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(value), None) => decode_header_value(value.as_bytes()).map(Some),
            // Two values could be read as either; a client sends one.
            (Some(_), Some(_)) => Err(Refused::malformed_header()),
        }
    };
    Ok(Claimed {
        method: one(&MCP_METHOD)?,
        name: one(&MCP_NAME)?,
    })
}

fn refusal(refused: Refused) -> Response {
    tracing::info!(
        code = refused.code,
        reason = refused.message,
        "proxy request refused before the MCP server"
    );
    with_status(StatusCode::BAD_REQUEST, &refused)
}

fn with_status(status: StatusCode, refused: &Refused) -> Response {
    (status, axum::Json(refused.to_json())).into_response()
}
