//! RFC 7591 client metadata and the rules it must meet, for every way a client comes to be
//! known: Dynamic Client Registration and Client ID Metadata Documents alike.

use serde::Deserialize;

use super::client_assertion::{PRIVATE_KEY_JWT, check_client_keys};
use super::error::OAuthError;
use super::grant_type::GrantType;
use super::redirect_policy::RedirectPolicy;
use super::text::{self, for_log};
use super::{redirect_uri, scope};
use crate::tokens::keys::SigningAlgorithm;

const MAX_REDIRECT_URIS: usize = 20;
/// As at the authorization endpoint, which compares against them.
const MAX_REDIRECT_URI_LEN: usize = 2048;
const MAX_CLIENT_NAME: usize = 200;

/// RFC 7591 §2 client metadata we act on; other fields are ignored.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RegistrationRequest {
    pub(crate) redirect_uris: Option<Vec<String>>,
    pub(crate) token_endpoint_auth_method: Option<String>,
    pub(crate) grant_types: Option<Vec<String>>,
    pub(crate) response_types: Option<Vec<String>>,
    pub(crate) client_name: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) application_type: Option<String>,
    pub(crate) id_token_signed_response_alg: Option<String>,
    /// `private_key_jwt` only: the client's public keys, or where it publishes them.
    pub(crate) jwks: Option<serde_json::Value>,
    pub(crate) jwks_uri: Option<String>,
}

fn metadata_error(description: String) -> OAuthError {
    OAuthError::InvalidClientMetadata(description.into())
}

/// Checks the metadata against RFC 7591 and our policy; returns the normalised metadata.
pub(crate) fn validate_registration(
    request: RegistrationRequest,
    policy: &RedirectPolicy,
    scopes_supported: &[String],
    id_token_algorithms: &[SigningAlgorithm],
) -> Result<RegistrationRequest, OAuthError> {
    let redirect_uris = request
        .redirect_uris
        .filter(|uris| !uris.is_empty())
        .ok_or_else(|| OAuthError::InvalidRedirectUri("redirect_uris is required".into()))?;
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(OAuthError::InvalidRedirectUri(
            format!("at most {MAX_REDIRECT_URIS} redirect_uris").into(),
        ));
    }
    let application_type = request.application_type;
    for uri in &redirect_uris {
        if uri.len() > MAX_REDIRECT_URI_LEN {
            return Err(OAuthError::InvalidRedirectUri(
                format!("a redirect URI may be at most {MAX_REDIRECT_URI_LEN} bytes").into(),
            ));
        }
        let allowed = policy.allows(uri);
        // Plain http off loopback only when a pattern explicitly allows it (README, "Registration,
        // profiles and consent"; RFC 8252 §7.3 allows it for loopback only).
        redirect_uri::validate_registrable(uri, allowed)
            .map_err(|problem| OAuthError::InvalidRedirectUri(problem.to_string().into()))?;
        if !allowed {
            return Err(OAuthError::InvalidRedirectUri(
                format!(
                    "{:?} is not allowed by this server's redirect URI policy",
                    for_log(uri)
                )
                .into(),
            ));
        }
        let is_https = uri.starts_with("https://");
        match application_type.as_deref() {
            Some("web") if !is_https => {
                return Err(OAuthError::InvalidRedirectUri(
                    "a web application must use https redirect URIs".into(),
                ));
            }
            Some("native") if is_https => {
                return Err(OAuthError::InvalidRedirectUri(
                    "a native application must use a loopback or private-use scheme redirect URI"
                        .into(),
                ));
            }
            None | Some("web") | Some("native") => {}
            Some(_) => {
                return Err(metadata_error(
                    "application_type must be web or native".to_owned(),
                ));
            }
        }
    }
    let method = request
        .token_endpoint_auth_method
        .unwrap_or_else(|| "client_secret_basic".to_owned());
    if ![
        "none",
        "client_secret_basic",
        "client_secret_post",
        PRIVATE_KEY_JWT,
    ]
    .contains(&method.as_str())
    {
        return Err(metadata_error(format!(
            "token_endpoint_auth_method must be none, client_secret_basic, client_secret_post or private_key_jwt, not {:?}",
            for_log(&method)
        )));
    }
    // Keys are what a private_key_jwt client authenticates with, and only that: kept for no
    // other method, where they would make a public client look confidential.
    let (jwks, jwks_uri) = if method == PRIVATE_KEY_JWT {
        match check_client_keys(request.jwks.as_ref(), request.jwks_uri.as_deref()) {
            Ok(true) => (request.jwks, request.jwks_uri),
            Ok(false) => {
                return Err(metadata_error(
                    "private_key_jwt needs the client's keys: jwks or jwks_uri".to_owned(),
                ));
            }
            Err(problem) => return Err(metadata_error(problem.to_owned())),
        }
    } else {
        (None, None)
    };
    let grant_types = request
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    // A client that registered itself gets no tokens without a user at our authorization
    // endpoint: client_credentials and the jwt-bearer grant are for clients the operator
    // configured.
    if let Some(unknown) = grant_types
        .iter()
        .find(|g| GrantType::parse(g).is_none_or(GrantType::is_for_configured_clients_only))
    {
        return Err(metadata_error(format!(
            "grant type {:?} is not supported",
            for_log(unknown)
        )));
    }
    let response_types = request
        .response_types
        .unwrap_or_else(|| vec!["code".to_owned()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(metadata_error(
            "only the response type \"code\" is supported".to_owned(),
        ));
    }
    // RFC 7591 §2.1: authorization_code goes with code, and without it the client could do nothing here.
    let has_code_grant = grant_types.iter().any(|g| g == "authorization_code");
    if !has_code_grant || response_types.is_empty() {
        return Err(metadata_error(
            "grant_types must include authorization_code, with response_types [\"code\"]"
                .to_owned(),
        ));
    }
    // An empty scope is no scope: the client then may ask for any supported one.
    let requested_scope = request.scope.filter(|s| !s.trim().is_empty());
    if let Some(requested) = &requested_scope {
        scope::resolve(Some(requested), scopes_supported).map_err(|_| {
            metadata_error("scope names a scope this server does not support".to_owned())
        })?;
    }
    if let Some(name) = &request.client_name
        && (name.chars().count() > MAX_CLIENT_NAME
            || name.trim().is_empty()
            || name.chars().any(text::is_invisible))
    {
        return Err(metadata_error(format!(
            "client_name must be at most {MAX_CLIENT_NAME} visible characters, without control, bidirectional or zero-width characters"
        )));
    }
    // OIDC Registration §2: a client that names an algorithm we cannot sign in must hear so now,
    // not reject every ID token later; `none` is never one of ours.
    if let Some(algorithm) = &request.id_token_signed_response_alg
        && !SigningAlgorithm::parse(algorithm).is_some_and(|a| id_token_algorithms.contains(&a))
    {
        let supported: Vec<&str> = id_token_algorithms.iter().map(|a| a.as_str()).collect();
        return Err(metadata_error(format!(
            "id_token_signed_response_alg {:?} is not supported; this server signs ID tokens with {}",
            for_log(algorithm),
            supported.join(" or ")
        )));
    }
    Ok(RegistrationRequest {
        redirect_uris: Some(redirect_uris),
        token_endpoint_auth_method: Some(method),
        grant_types: Some(grant_types),
        response_types: Some(response_types),
        client_name: request.client_name,
        scope: requested_scope,
        application_type,
        id_token_signed_response_alg: request.id_token_signed_response_alg,
        jwks,
        jwks_uri,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RedirectPolicy {
        RedirectPolicy::compile(
            &[r"https://app\.example\.com/cb".into()],
            &["loopback".into(), "cursor".into()],
        )
        .unwrap()
    }

    fn supported() -> Vec<String> {
        vec!["openid".into(), "email".into()]
    }

    /// Under keys that sign ID tokens in RS256 and ES256.
    fn validate_registration(
        request: RegistrationRequest,
        policy: &RedirectPolicy,
        scopes_supported: &[String],
    ) -> Result<RegistrationRequest, OAuthError> {
        super::validate_registration(
            request,
            policy,
            scopes_supported,
            &[SigningAlgorithm::RS256, SigningAlgorithm::ES256],
        )
    }

    fn request(uris: &[&str]) -> RegistrationRequest {
        RegistrationRequest {
            redirect_uris: Some(uris.iter().map(|u| u.to_string()).collect()),
            ..RegistrationRequest::default()
        }
    }

    fn code_of(result: Result<RegistrationRequest, OAuthError>) -> &'static str {
        result.map(|_| ()).unwrap_err().code()
    }

    #[test]
    fn defaults_follow_rfc7591() {
        let valid = validate_registration(
            request(&["https://app.example.com/cb"]),
            &policy(),
            &supported(),
        )
        .unwrap();
        assert_eq!(
            valid.token_endpoint_auth_method.as_deref(),
            Some("client_secret_basic")
        );
        assert_eq!(valid.grant_types.unwrap(), vec!["authorization_code"]);
        assert_eq!(valid.response_types.unwrap(), vec!["code"]);
    }

    #[test]
    fn redirect_uris_are_required_and_must_match_the_policy() {
        assert_eq!(
            code_of(validate_registration(
                RegistrationRequest::default(),
                &policy(),
                &supported()
            )),
            "invalid_redirect_uri"
        );
        assert_eq!(
            code_of(validate_registration(request(&[]), &policy(), &supported())),
            "invalid_redirect_uri"
        );
        assert_eq!(
            code_of(validate_registration(
                request(&["https://evil.example.com/cb"]),
                &policy(),
                &supported()
            )),
            "invalid_redirect_uri"
        );
        assert_eq!(
            code_of(validate_registration(
                request(&["https://app.example.com/cb#f"]),
                &policy(),
                &supported()
            )),
            "invalid_redirect_uri"
        );
    }

    #[test]
    fn plain_http_off_loopback_needs_a_pattern_that_names_it() {
        let explicit =
            RedirectPolicy::compile(&[r"http://intranet\.example\.com/cb".into()], &[]).unwrap();
        assert!(
            validate_registration(
                request(&["http://intranet.example.com/cb"]),
                &explicit,
                &supported()
            )
            .is_ok()
        );
        let broad =
            RedirectPolicy::compile(&[r"https?://intranet\.example\.com/.*".into()], &[]).unwrap();
        assert!(
            validate_registration(
                request(&["http://intranet.example.com/x#frag"]),
                &broad,
                &supported()
            )
            .is_err()
        );
    }

    #[test]
    fn an_empty_scope_is_no_scope() {
        let empty = RegistrationRequest {
            scope: Some(" ".into()),
            ..request(&["https://app.example.com/cb"])
        };
        assert_eq!(
            validate_registration(empty, &policy(), &supported())
                .unwrap()
                .scope,
            None
        );
    }

    #[test]
    fn application_type_is_respected() {
        let web = RegistrationRequest {
            application_type: Some("web".into()),
            ..request(&["http://127.0.0.1:3000/cb"])
        };
        assert_eq!(
            code_of(validate_registration(web, &policy(), &supported())),
            "invalid_redirect_uri"
        );
        let native = RegistrationRequest {
            application_type: Some("native".into()),
            ..request(&["https://app.example.com/cb"])
        };
        assert_eq!(
            code_of(validate_registration(native, &policy(), &supported())),
            "invalid_redirect_uri"
        );
        let native = RegistrationRequest {
            application_type: Some("native".into()),
            ..request(&[
                "cursor://anysphere.cursor-mcp/oauth/x/callback",
                "http://127.0.0.1:9/cb",
            ])
        };
        assert!(validate_registration(native, &policy(), &supported()).is_ok());
        let other = RegistrationRequest {
            application_type: Some("tv".into()),
            ..request(&["https://app.example.com/cb"])
        };
        assert_eq!(
            code_of(validate_registration(other, &policy(), &supported())),
            "invalid_client_metadata"
        );
    }

    #[test]
    fn grant_and_response_types_must_be_consistent_and_supported() {
        let cases = [
            RegistrationRequest {
                grant_types: Some(vec!["client_credentials".into()]),
                ..request(&["https://app.example.com/cb"])
            },
            RegistrationRequest {
                grant_types: Some(vec!["refresh_token".into()]),
                ..request(&["https://app.example.com/cb"])
            },
            RegistrationRequest {
                response_types: Some(vec!["token".into()]),
                ..request(&["https://app.example.com/cb"])
            },
            RegistrationRequest {
                token_endpoint_auth_method: Some("private_key_jwt".into()),
                ..request(&["https://app.example.com/cb"])
            },
            RegistrationRequest {
                scope: Some("openid admin".into()),
                ..request(&["https://app.example.com/cb"])
            },
            RegistrationRequest {
                client_name: Some("x\u{7}".into()),
                ..request(&["https://app.example.com/cb"])
            },
            RegistrationRequest {
                // Shown as "Claude" followed by reversed text: a name made to look like another.
                client_name: Some("Claude \u{202E}tneilc lanoicifo".into()),
                ..request(&["https://app.example.com/cb"])
            },
            RegistrationRequest {
                client_name: Some("Cla\u{200B}ude".into()),
                ..request(&["https://app.example.com/cb"])
            },
            RegistrationRequest {
                client_name: Some("\u{2066}Cursor\u{2069}".into()),
                ..request(&["https://app.example.com/cb"])
            },
            RegistrationRequest {
                client_name: Some("   ".into()),
                ..request(&["https://app.example.com/cb"])
            },
        ];
        for case in cases {
            assert_eq!(
                code_of(validate_registration(case, &policy(), &supported())),
                "invalid_client_metadata"
            );
        }
    }
}
