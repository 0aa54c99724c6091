//! Discovery documents: RFC 8414 authorization server metadata and OpenID Connect Discovery.
//! They advertise exactly what is implemented.

use super::client_assertion::SIGNING_ALGORITHMS;
use crate::tokens::keys::SigningAlgorithm;
use serde_json::{Value, json};

use super::{Settings, endpoints};

pub(crate) fn authorization_server_metadata(settings: &Settings) -> Value {
    // Serialised as their JWS names (RFC 7518 §3.1).
    let assertion_algorithms = json!(SIGNING_ALGORITHMS);
    let mut grant_types = vec!["authorization_code", "refresh_token", "client_credentials"];
    if settings.jwt_bearer_grant {
        grant_types.push(super::grant_type::JWT_BEARER);
    }
    if settings.token_exchange_grant {
        grant_types.push(super::grant_type::TOKEN_EXCHANGE);
    }
    let mut document = json!({
        "issuer": settings.issuer,
        "authorization_endpoint": settings.endpoint(endpoints::AUTHORIZE),
        "token_endpoint": settings.endpoint(endpoints::TOKEN),
        "jwks_uri": settings.endpoint(endpoints::JWKS),
        "scopes_supported": settings.scopes_supported,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": assertion_algorithms,
        "revocation_endpoint": settings.endpoint(endpoints::REVOKE),
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algorithms,
        "introspection_endpoint": settings.endpoint(endpoints::INTROSPECT),
        // Besides these, resource servers may present one of `oauth.introspection_tokens` as a
        // bearer token; RFC 8414 has no registered name for that.
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algorithms,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    });
    // draft-ietf-oauth-identity-assertion-authz-grant: the ID-JAG profile of the jwt-bearer grant.
    if settings.jwt_bearer_grant
        && let Value::Object(fields) = &mut document
    {
        fields.insert(
            "authorization_grant_profiles_supported".into(),
            json!(["urn:ietf:params:oauth:grant-profile:id-jag"]),
        );
    }
    if settings.metadata_documents_enabled
        && let Value::Object(fields) = &mut document
    {
        fields.insert("client_id_metadata_document_supported".into(), json!(true));
    }
    if settings.registration_enabled
        && let Value::Object(fields) = &mut document
    {
        fields.insert(
            "registration_endpoint".into(),
            json!(settings.endpoint(endpoints::REGISTER)),
        );
    }
    document
}

/// The same metadata plus the OpenID Connect Discovery fields (§3), with the algorithms the keys
/// sign ID tokens in: RS256 always (§3 requires it), ES256 too under an ES256 access-token key.
pub(crate) fn openid_configuration(
    settings: &Settings,
    id_token_algorithms: &[SigningAlgorithm],
) -> Value {
    let mut document = authorization_server_metadata(settings);
    if let Value::Object(fields) = &mut document {
        fields.insert("subject_types_supported".into(), json!(["public"]));
        fields.insert(
            "userinfo_endpoint".into(),
            json!(settings.endpoint(endpoints::USERINFO)),
        );
        let algorithms: Vec<&str> = id_token_algorithms.iter().map(|a| a.as_str()).collect();
        fields.insert(
            "id_token_signing_alg_values_supported".into(),
            json!(algorithms),
        );
        fields.insert(
            "claims_supported".into(),
            json!([
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "nonce",
                "email",
                "email_verified",
                "name",
                "groups"
            ]),
        );
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::test_support::settings;

    #[test]
    fn metadata_advertises_s256_only_and_iss_in_responses() {
        let doc = authorization_server_metadata(&settings());
        assert_eq!(doc["issuer"], "https://bridge.example.com");
        assert_eq!(
            doc["authorization_endpoint"],
            "https://bridge.example.com/oauth/authorize"
        );
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
        assert_eq!(doc["response_types_supported"], json!(["code"]));
        assert!(doc.get("registration_endpoint").is_none());
        assert!(
            doc.get("userinfo_endpoint").is_none(),
            "an OpenID Connect field"
        );
        assert_eq!(
            doc["revocation_endpoint"],
            "https://bridge.example.com/oauth/revoke"
        );
        assert_eq!(
            doc["introspection_endpoint"],
            "https://bridge.example.com/oauth/introspect"
        );
        assert_eq!(
            doc["grant_types_supported"],
            json!(["authorization_code", "refresh_token", "client_credentials"])
        );
        assert_eq!(
            doc["introspection_endpoint_auth_methods_supported"],
            json!([
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt"
            ])
        );
        let algorithms = json!([
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"
        ]);
        for endpoint in ["token", "revocation", "introspection"] {
            assert_eq!(
                doc[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")],
                algorithms
            );
        }
    }

    #[test]
    fn registration_endpoint_is_advertised_only_when_enabled() {
        let mut settings = settings();
        assert!(
            authorization_server_metadata(&settings)
                .get("registration_endpoint")
                .is_none()
        );
        settings.registration_enabled = true;
        assert_eq!(
            authorization_server_metadata(&settings)["registration_endpoint"],
            "https://bridge.example.com/oauth/register"
        );
    }

    #[test]
    fn openid_configuration_adds_the_oidc_fields() {
        let doc = openid_configuration(
            &settings(),
            &[SigningAlgorithm::RS256, SigningAlgorithm::ES256],
        );
        assert_eq!(doc["subject_types_supported"], json!(["public"]));
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["RS256", "ES256"])
        );
        assert_eq!(
            doc["userinfo_endpoint"],
            "https://bridge.example.com/oauth/userinfo"
        );
        let rsa_only = openid_configuration(&settings(), &[SigningAlgorithm::RS256]);
        assert_eq!(
            rsa_only["id_token_signing_alg_values_supported"],
            json!(["RS256"])
        );
    }
}
