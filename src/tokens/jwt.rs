//! JWT access tokens in the RFC 9068 profile: `typ: at+jwt`, `kid`, the required claims, plus
//! the mapped identity. Time checks use our clock, not the library's.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::{KeySet, SigningKey};
use crate::clock::UnixTime;

pub(crate) const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Tolerance for clocks of resource servers that run slightly ahead or behind.
const LEEWAY_SECONDS: i64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The grant (refresh-token family) the token belongs to, as Keycloak's access tokens name
    /// their session: what a token exchange follows, so that revoking the grant reaches the
    /// tokens exchanged for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// RFC 8693 §4.1: who acts for the subject, for a token issued by a token exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
}

/// An actor (RFC 8693 §4.1): the client that exchanged a token, and, nested, the actor of the
/// token it exchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

impl Actor {
    /// How many actors the chain names.
    pub fn depth(&self) -> usize {
        1 + self.act.as_ref().map_or(0, |inner| inner.depth())
    }
}

/// An OpenID Connect ID token (OIDC Core §2), issued when the grant includes `openid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdTokenClaims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    /// The client the ID token is for.
    pub(crate) aud: String,
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
}

/// Who is calling, as the proxy tells the MCP server behind it (`proxy.identity_jwt`). Its own
/// `typ`, so that it can never pass for an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdentityClaims {
    pub(crate) iss: String,
    pub(crate) sub: String,
    /// The MCP server's URL.
    pub(crate) aud: String,
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) scope: String,
    /// The resource the caller's access token was issued for (its `aud`).
    pub(crate) resource: String,
    /// The access token's `jti` and `exp`, for audit trails; the token itself never travels on.
    pub(crate) access_token_jti: String,
    pub(crate) access_token_exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) groups: Vec<String>,
}

pub(crate) const IDENTITY_TOKEN_TYPE: &str = "identity+jwt";

pub(crate) fn sign_identity_token(
    keys: &KeySet,
    claims: &IdentityClaims,
) -> Result<String, JwtError> {
    sign(keys.active(), claims, Some(IDENTITY_TOKEN_TYPE))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("cannot sign the access token: {0}")]
    Signing(String),
    #[error("malformed or wrongly signed token: {0}")]
    Invalid(String),
    #[error("token is not an access token (typ)")]
    WrongType,
    #[error("unknown key id")]
    UnknownKey,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
}

pub fn sign_access_token(keys: &KeySet, claims: &AccessTokenClaims) -> Result<String, JwtError> {
    sign(keys.active(), claims, Some(ACCESS_TOKEN_TYPE))
}

/// Signs an ID token in `algorithm` (the client's `id_token_signed_response_alg`, RS256 unless
/// it registered another); `Ok(None)` when these keys cannot sign in it.
pub(crate) fn sign_id_token(
    keys: &KeySet,
    algorithm: Algorithm,
    claims: &IdTokenClaims,
) -> Result<Option<String>, JwtError> {
    keys.id_token_key(algorithm)
        .map(|key| sign(key, claims, None))
        .transpose()
}

/// Signs with `key`, named by `kid`; `typ` keeps one kind of token from passing for another.
fn sign(key: &SigningKey, claims: &impl Serialize, typ: Option<&str>) -> Result<String, JwtError> {
    super::crypto::install();
    let mut header = Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key.encoding_key())
        .map_err(|e| JwtError::Signing(e.to_string()))
}

/// Verifies signature, `typ`, `iss`, `aud`, `exp` and `nbf` (RFC 9068 §4).
#[cfg(test)]
pub(crate) fn verify_access_token(
    keys: &KeySet,
    token: &str,
    issuer: &str,
    audience: &str,
    now: UnixTime,
) -> Result<AccessTokenClaims, JwtError> {
    verify(keys, token, issuer, Some(audience), LEEWAY_SECONDS, now)
}

/// As `verify_access_token`, for the bridge's own endpoints (introspection, userinfo,
/// revocation), which serve every audience. No leeway: the clock that set `exp` is ours, and
/// a revoked token is remembered exactly until its `exp`.
pub(crate) fn verify_own_access_token(
    keys: &KeySet,
    token: &str,
    issuer: &str,
    now: UnixTime,
) -> Result<AccessTokenClaims, JwtError> {
    verify(keys, token, issuer, None, 0, now)
}

fn verify(
    keys: &KeySet,
    token: &str,
    issuer: &str,
    audience: Option<&str>,
    leeway: i64,
    now: UnixTime,
) -> Result<AccessTokenClaims, JwtError> {
    super::crypto::install();
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
    if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return Err(JwtError::WrongType);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.find(kid))
        .ok_or(JwtError::UnknownKey)?;
    let mut validation = Validation::new(key.algorithm);
    validation.set_issuer(&[issuer]);
    match audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // The library would read the system clock; expiry is checked below against ours.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let data = jsonwebtoken::decode::<AccessTokenClaims>(token, key.decoding_key(), &validation)
        .map_err(|e| JwtError::Invalid(e.to_string()))?;
    let claims = data.claims;
    check_times(&claims, leeway, now)?;
    Ok(claims)
}

/// Expiry with `leeway`, and not-before: the checks that depend on when a token is presented.
pub(crate) fn check_times(
    claims: &AccessTokenClaims,
    leeway: i64,
    now: UnixTime,
) -> Result<(), JwtError> {
    if now.seconds() >= claims.exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    // Another instance whose clock runs ahead may have issued it: `nbf` always gets the leeway.
    if now.seconds().saturating_add(LEEWAY_SECONDS) < claims.nbf {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::keys::SigningKey;

    fn claims(now: i64) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://bridge.example.com".into(),
            sub: "user-1".into(),
            aud: "https://mcp.example.com/mcp".into(),
            client_id: "client".into(),
            scope: "openid".into(),
            exp: now + 3600,
            iat: now,
            nbf: now,
            jti: "jti-1".into(),
            email: Some("a@example.com".into()),
            name: None,
            groups: vec!["admins".into()],
            sid: None,
            act: None,
        }
    }

    fn verify(
        keys: &KeySet,
        token: &str,
        audience: &str,
        now: i64,
    ) -> Result<AccessTokenClaims, JwtError> {
        verify_access_token(
            keys,
            token,
            "https://bridge.example.com",
            audience,
            UnixTime(now),
        )
    }

    #[test]
    fn es256_token_round_trips_with_at_jwt_header() {
        let keys = KeySet::new(SigningKey::generate_es256().unwrap());
        let token = sign_access_token(&keys, &claims(1000)).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(keys.active().kid.as_str()));
        assert_eq!(
            verify(&keys, &token, "https://mcp.example.com/mcp", 1000).unwrap(),
            claims(1000)
        );
    }

    #[test]
    fn hs256_token_round_trips() {
        let keys = KeySet::new(SigningKey::from_shared_secret(
            b"0123456789abcdef0123456789abcdef",
        ));
        let token = sign_access_token(&keys, &claims(1000)).unwrap();
        assert!(verify(&keys, &token, "https://mcp.example.com/mcp", 1000).is_ok());
    }

    #[test]
    fn expiry_wrong_audience_foreign_key_and_tampering_are_refused() {
        let keys = KeySet::new(SigningKey::generate_es256().unwrap());
        let token = sign_access_token(&keys, &claims(1000)).unwrap();
        assert_eq!(
            verify(
                &keys,
                &token,
                "https://mcp.example.com/mcp",
                1000 + 3600 + 30
            ),
            Err(JwtError::Expired)
        );
        assert!(matches!(
            verify(&keys, &token, "https://other.example.com", 1000),
            Err(JwtError::Invalid(_))
        ));
        let other = KeySet::new(SigningKey::generate_es256().unwrap());
        assert_eq!(
            verify(&other, &token, "https://mcp.example.com/mcp", 1000),
            Err(JwtError::UnknownKey)
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = sign_access_token(
            &other,
            &AccessTokenClaims {
                sub: "admin".into(),
                ..claims(1000)
            },
        )
        .unwrap();
        parts[1] = forged.split('.').nth(1).unwrap();
        let tampered = parts.join(".");
        assert!(matches!(
            verify(&keys, &tampered, "https://mcp.example.com/mcp", 1000),
            Err(JwtError::Invalid(_))
        ));
    }

    mod properties {
        use super::*;
        use crate::tokens::keys::SigningKey;
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use proptest::prelude::*;
        use std::sync::OnceLock;

        fn keys() -> &'static KeySet {
            static KEYS: OnceLock<KeySet> = OnceLock::new();
            KEYS.get_or_init(|| KeySet::new(SigningKey::generate_es256().unwrap()))
        }

        fn header() -> impl Strategy<Value = String> {
            let algorithms = prop_oneof![
                Just("none".to_owned()),
                Just("HS256".to_owned()),
                Just("ES256".to_owned()),
                Just("RS256".to_owned()),
                Just("EdDSA".to_owned()),
                "[A-Z0-9]{0,6}"
            ];
            (
                algorithms,
                prop_oneof![
                    Just("at+jwt".to_owned()),
                    Just("JWT".to_owned()),
                    "[a-z+]{0,8}"
                ],
                ".{0,12}",
                any::<bool>(),
            )
                .prop_map(|(alg, typ, kid, real_kid)| {
                    let kid = if real_kid {
                        keys().active().kid.clone()
                    } else {
                        kid
                    };
                    serde_json::json!({"alg": alg, "typ": typ, "kid": kid}).to_string()
                })
        }

        proptest! {
            #[test]
            fn any_string_is_refused_never_a_panic(token in ".{0,200}") {
                prop_assert!(verify_own_access_token(keys(), &token, "https://i", UnixTime(0)).is_err());
            }

            #[test]
            fn any_header_with_any_signature_is_refused(
                header in header(), payload in ".{0,80}", signature in "[A-Za-z0-9_-]{0,90}"
            ) {
                let token = format!(
                    "{}.{}.{signature}",
                    URL_SAFE_NO_PAD.encode(header),
                    URL_SAFE_NO_PAD.encode(payload),
                );
                prop_assert!(verify_access_token(keys(), &token, "https://i", "a", UnixTime(0)).is_err());
            }
        }
    }
}
