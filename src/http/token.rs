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
use crate::oauth::client_assertion::{JWT_BEARER_ASSERTION, claimed_client_id};
use crate::oauth::grant_type::GrantType;
use crate::oauth::token::{ClientCredentials, exchange};
use crate::oauth::{OAuthError, Params};
use crate::secret::SecretString;

pub(crate) async fn token_post(
    State(state): State<AppState>,
    address: ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut grant_type = None;
    let result = async {
        let params = read_form(&headers, body).await?;
        grant_type = params
            .get("grant_type")
            .and_then(GrantType::parse)
            .map(GrantType::as_str);
        let credentials = client_credentials(&headers, &params)?;
        state.admit_document_fetch(Some(&credentials.client_id), address)?;
        exchange(&state.bridge, &credentials, &params, state.clock.now()).await
    }
    .await;
    let metrics = &state.bridge.metrics;
    match result {
        Ok(tokens) => {
            metrics.token_issued(grant_type.unwrap_or("unknown"));
            no_store(Json(tokens).into_response())
        }
        Err(error) => {
            metrics.token_error(error.code());
            error.into_response()
        }
    }
}

/// Answers that carry tokens or say something about them must not be cached (RFC 6749 §5.1).
pub(super) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Exactly one way of identifying the client: Basic, body secret, a signed assertion, or
/// (public) body id only.
pub(super) fn client_credentials(
    headers: &HeaderMap,
    params: &Params,
) -> Result<ClientCredentials, OAuthError> {
    if params.get("client_assertion").is_some() || params.get("client_assertion_type").is_some() {
        return assertion_credentials(headers, params);
    }
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
                assertion: None,
            })
        }
    }
}

/// RFC 7523 §2.2: `client_assertion_type` names a JWT, `client_assertion` is one; `client_id`
/// may be left out (§3), the assertion's `sub` then names the client (checked with the rest).
fn assertion_credentials(
    headers: &HeaderMap,
    params: &Params,
) -> Result<ClientCredentials, OAuthError> {
    if headers.contains_key(header::AUTHORIZATION) || params.get("client_secret").is_some() {
        return Err(OAuthError::invalid_request(
            "use only one client authentication method",
        ));
    }
    let (Some(kind), Some(assertion)) = (
        params.get("client_assertion_type"),
        params.get("client_assertion"),
    ) else {
        return Err(OAuthError::invalid_request(
            "client_assertion and client_assertion_type go together",
        ));
    };
    if kind != JWT_BEARER_ASSERTION {
        return Err(OAuthError::invalid_client(
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ));
    }
    let client_id = match params.get("client_id") {
        Some(client_id) => client_id.to_owned(),
        None => claimed_client_id(assertion).ok_or_else(|| {
            OAuthError::invalid_client("the client assertion names no client (sub)")
        })?,
    };
    Ok(ClientCredentials {
        client_id,
        secret: None,
        assertion: Some(SecretString::new(assertion)),
    })
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
        assertion: None,
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
    fn an_assertion_is_one_method_alone_and_names_its_client() {
        let assertion = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzdmMifQ.c2ln";
        let form = |extra: &[(&str, &str)]| {
            let mut params = Params::from([
                ("client_assertion_type", JWT_BEARER_ASSERTION),
                ("client_assertion", assertion),
            ]);
            for (name, value) in extra {
                params.insert(*name, *value);
            }
            params
        };
        let credentials = client_credentials(&HeaderMap::new(), &form(&[])).unwrap();
        assert_eq!(credentials.client_id, "svc");
        assert!(credentials.secret.is_none());
        assert_eq!(credentials.assertion.unwrap().expose(), assertion);
        let named = client_credentials(&HeaderMap::new(), &form(&[("client_id", "other")]));
        assert_eq!(
            named.unwrap().client_id,
            "other",
            "checked against sub later"
        );
        let code = |headers: &HeaderMap, params: &Params| {
            client_credentials(headers, params).unwrap_err().code()
        };
        assert_eq!(
            code(&HeaderMap::new(), &form(&[("client_secret", "s")])),
            "invalid_request"
        );
        let mut basic_too = HeaderMap::new();
        basic_too.insert(header::AUTHORIZATION, basic("svc", "s"));
        assert_eq!(code(&basic_too, &form(&[])), "invalid_request");
        assert_eq!(
            code(
                &HeaderMap::new(),
                &Params::from([("client_assertion", assertion)])
            ),
            "invalid_request"
        );
        assert_eq!(
            code(
                &HeaderMap::new(),
                &Params::from([
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"
                    ),
                    ("client_assertion", assertion),
                ])
            ),
            "invalid_client"
        );
        // No client_id and no sub to read it from.
        assert_eq!(
            code(
                &HeaderMap::new(),
                &Params::from([
                    ("client_assertion_type", JWT_BEARER_ASSERTION),
                    ("client_assertion", "not-a-jwt"),
                ])
            ),
            "invalid_client"
        );
    }

    #[test]
    fn no_client_identification_is_invalid_client() {
        let err = client_credentials(&HeaderMap::new(), &Params::default()).unwrap_err();
        assert_eq!(err.code(), "invalid_client");
    }
}
