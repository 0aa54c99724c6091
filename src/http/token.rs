//! POST /oauth/token: client credentials from HTTP Basic or the body (RFC 6749 §2.3.1).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::AppState;
use super::client_address::ClientAddress;
use super::params::read_form;
use crate::oauth::token::{ClientCredentials, exchange};
use crate::oauth::{OAuthError, Params};
use crate::secret::SecretString;

pub(crate) async fn token_post(
    State(state): State<AppState>,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let params = read_form(&headers, body).await?;
        let credentials = client_credentials(&headers, &params)?;
        state.admit_document_fetch(Some(&credentials.client_id), address)?;
        exchange(&state.bridge, &credentials, &params, state.clock.now()).await
    }
    .await;
    match result {
        Ok(tokens) => no_store(Json(tokens).into_response()),
        Err(error) => error.into_response(),
    }
}

/// Answers that carry tokens or say something about them must not be cached (RFC 6749 §5.1).
pub(super) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Exactly one way of identifying the client: Basic, body secret, or (public) body id only.
pub(super) fn client_credentials(
    headers: &HeaderMap,
    params: &Params,
) -> Result<ClientCredentials, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(value) => Some(parse_basic(value)?),
        None => None,
    };
    match basic {
        Some(credentials) => {
            if params.get("client_secret").is_some() {
                return Err(OAuthError::invalid_request(
                    "use only one client authentication method",
                ));
            }
            if params
                .get("client_id")
                .is_some_and(|id| id != credentials.client_id)
            {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the authenticated client",
                ));
            }
            Ok(credentials)
        }
        None => {
            let client_id = params
                .get("client_id")
                .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
            Ok(ClientCredentials {
                client_id: client_id.to_owned(),
                secret: params.get("client_secret").map(SecretString::new),
            })
        }
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn parse_basic(value: &HeaderValue) -> Result<ClientCredentials, OAuthError> {
    let malformed = || OAuthError::invalid_client("malformed Basic authorization header");
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, encoded) = text.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "only Basic client authentication is supported here",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    // Form-urlencoding: `+` is a space, then percent-decoding.
    let unescape = |part: &str| -> Result<String, OAuthError> {
        percent_encoding::percent_decode_str(&part.replace('+', " "))
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| malformed())
    };
    let client_id = unescape(id)?;
    if client_id.is_empty() {
        return Err(malformed());
    }
    Ok(ClientCredentials {
        client_id,
        secret: Some(SecretString::new(unescape(secret)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "Basic {}",
            STANDARD.encode(format!("{id}:{secret}"))
        ))
        .unwrap()
    }

    #[test]
    fn basic_credentials_are_url_decoded() {
        let credentials = parse_basic(&basic("my%20client", "p%3Ass+w%26rd")).unwrap();
        assert_eq!(credentials.client_id, "my client");
        assert_eq!(credentials.secret.unwrap().expose(), "p:ss w&rd");
    }

    #[test]
    fn malformed_basic_header_is_invalid_client() {
        for bad in [
            "Basic !!!",
            "Basic",
            "Bearer abc",
            &format!("Basic {}", STANDARD.encode("no-colon")),
        ] {
            let err = parse_basic(&HeaderValue::from_str(bad).unwrap()).unwrap_err();
            assert_eq!(err.code(), "invalid_client", "{bad}");
        }
    }

    #[test]
    fn two_authentication_methods_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, basic("a", "b"));
        let params = Params::from([("client_secret", "b")]);
        assert_eq!(
            client_credentials(&headers, &params).unwrap_err().code(),
            "invalid_request"
        );
        let params = Params::from([("client_id", "other")]);
        assert_eq!(
            client_credentials(&headers, &params).unwrap_err().code(),
            "invalid_request"
        );
    }

    #[test]
    fn no_client_identification_is_invalid_client() {
        let err = client_credentials(&HeaderMap::new(), &Params::default()).unwrap_err();
        assert_eq!(err.code(), "invalid_client");
    }
}
