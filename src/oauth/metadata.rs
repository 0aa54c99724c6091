//! Discovery documents: RFC 8414 authorization server metadata and OpenID Connect Discovery.
//! They advertise exactly what is implemented.

use serde_json::{Value, json};

use super::{Settings, endpoints};

pub fn authorization_server_metadata(settings: &Settings) -> Value {
    json!({
        "issuer": settings.issuer,
        "authorization_endpoint": settings.endpoint(endpoints::AUTHORIZE),
        "token_endpoint": settings.endpoint(endpoints::TOKEN),
        "jwks_uri": settings.endpoint(endpoints::JWKS),
        "scopes_supported": settings.scopes_supported,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
    })
}

/// The same metadata for clients that only try OpenID discovery. The bridge issues no ID tokens,
/// so ID-token fields are left out rather than advertised falsely.
pub fn openid_configuration(settings: &Settings) -> Value {
    let mut document = authorization_server_metadata(settings);
    if let Value::Object(fields) = &mut document {
        fields.insert("subject_types_supported".into(), json!(["public"]));
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
        for absent in [
            "registration_endpoint",
            "revocation_endpoint",
            "introspection_endpoint",
            "userinfo_endpoint",
        ] {
            assert!(
                doc.get(absent).is_none(),
                "{absent} is not implemented and must not be advertised"
            );
        }
    }

    #[test]
    fn openid_configuration_adds_only_what_holds() {
        let doc = openid_configuration(&settings());
        assert_eq!(doc["subject_types_supported"], json!(["public"]));
        assert!(doc.get("id_token_signing_alg_values_supported").is_none());
    }
}
