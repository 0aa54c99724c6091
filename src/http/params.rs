//! Request parameters from a query string or a form body, with repeated parameters refused
//! (RFC 6749 §3.1, §3.2) and empty values treated as absent.

use axum::body::Body;
use axum::http::{HeaderMap, header};

use crate::oauth::{OAuthError, Params};

/// Form bodies at the token endpoint are small; anything larger is not a real client.
pub(crate) const MAX_FORM_BYTES: usize = 16 * 1024;

/// Query strings of the browser-facing endpoints; real requests are far below this.
pub(crate) const MAX_QUERY_BYTES: usize = 8 * 1024;

pub(crate) fn parse_query(query: Option<&str>) -> Result<Params, OAuthError> {
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY_BYTES {
        return Err(OAuthError::invalid_request("the request is too large"));
    }
    parse_unique(query)
}

pub(crate) fn parse_unique(encoded: &str) -> Result<Params, OAuthError> {
    let mut params = Params::default();
    let mut seen = std::collections::HashSet::new();
    for (name, value) in url::form_urlencoded::parse(encoded.as_bytes()) {
        if !seen.insert(name.clone().into_owned()) {
            return Err(OAuthError::invalid_request(format!(
                "parameter {name} is repeated"
            )));
        }
        if !value.is_empty() {
            params.insert(name, value);
        }
    }
    Ok(params)
}

/// A whole body of at most `limit` bytes: a larger announced `Content-Length` is refused before
/// anything is read (`413`), one that does not arrive in time is `408`.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, OAuthError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(OAuthError::RequestTooLarge);
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        if super::server::is_body_timeout(&error) {
            OAuthError::RequestTimeout
        } else if is_length_limit(&error) {
            OAuthError::RequestTooLarge
        } else {
            OAuthError::invalid_request("the request body is unreadable")
        }
    })
}

fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Reads an `application/x-www-form-urlencoded` body within the size limit.
pub(crate) async fn read_form(headers: &HeaderMap, body: Body) -> Result<Params, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let bytes = read_body(headers, body, MAX_FORM_BYTES).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| OAuthError::invalid_request("the body is not UTF-8"))?;
    parse_unique(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        let err = parse_unique("a=1&b=2&a=3").unwrap_err();
        assert_eq!(err, OAuthError::invalid_request("parameter a is repeated"));
    }

    #[test]
    fn oversized_query_is_refused() {
        let err = parse_query(Some(&"a".repeat(MAX_QUERY_BYTES + 1))).unwrap_err();
        assert_eq!(err, OAuthError::invalid_request("the request is too large"));
        assert!(parse_query(None).unwrap().is_empty());
    }

    #[test]
    fn empty_values_count_as_absent_and_encoding_is_decoded() {
        let params = parse_unique("a=&b=x%20y&c=1+2").unwrap();
        assert_eq!(params.get("a"), None);
        assert_eq!(params.get("b"), Some("x y"));
        assert_eq!(params.get("c"), Some("1 2"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_query_or_form_is_parsed_or_refused_never_a_panic(raw in ".{0,400}") {
                let _ = parse_query(Some(&raw));
                let _ = parse_unique(&raw);
            }

            #[test]
            fn distinct_parameters_survive_encoding(
                pairs in proptest::collection::hash_map("[a-z_]{1,12}", "\\PC{1,24}", 0..8)
            ) {
                let encoded = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(pairs.iter())
                    .finish();
                let params = parse_unique(&encoded).unwrap();
                for (name, value) in &pairs {
                    prop_assert_eq!(params.get(name), Some(value.as_str()));
                }
            }

            #[test]
            fn a_repeated_name_is_refused_however_it_is_encoded(
                name in "[a-z]{1,10}", first in ".{0,10}", second in ".{0,10}",
                encode_second in any::<bool>()
            ) {
                let again = if encode_second {
                    name.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
                } else {
                    name.clone()
                };
                let raw = format!(
                    "{name}={}&{again}={}",
                    url::form_urlencoded::byte_serialize(first.as_bytes()).collect::<String>(),
                    url::form_urlencoded::byte_serialize(second.as_bytes()).collect::<String>(),
                );
                prop_assert!(parse_unique(&raw).is_err());
            }
        }
    }
}
