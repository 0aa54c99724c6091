//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OIDC Core §9): the client signs
//! a short-lived JWT with a key whose public half it registered, and the bridge checks it. What is
//! checked here needs nothing but the assertion, the client's keys and the clock; single use of
//! `jti` is the storage's (so that it holds across instances). Also the rules for the keys and
//! the `jwks_uri` a client registers.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::clock::UnixTime;

/// `token_endpoint_auth_method` of a client that signs assertions (RFC 7523 §2.2).
pub(crate) const PRIVATE_KEY_JWT: &str = "private_key_jwt";

/// `client_assertion_type` of a JWT assertion (RFC 7523 §2.2).
pub(crate) const JWT_BEARER_ASSERTION: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Asymmetric algorithms only: an HMAC assertion would need a secret the bridge keeps in clear
/// (`client_secret_jwt`), and `none` proves nothing. Advertised as
/// `token_endpoint_auth_signing_alg_values_supported`.
pub(crate) const SIGNING_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// How far ahead an assertion may expire: it is a one-time proof, made just before it is sent
/// (the MCP SDKs make theirs valid for 300 s), and its `jti` is remembered until then.
const MAX_LIFETIME_SECONDS: i64 = 300;
/// Clocks of clients (and of other instances) run a little ahead or behind.
pub(crate) const LEEWAY_SECONDS: i64 = 60;
/// An assertion longer than this is not one a client made (a few keys' worth of header and
/// claims): refused before any parsing.
pub(crate) const MAX_ASSERTION_BYTES: usize = 8 * 1024;
const MAX_JTI_BYTES: usize = 256;
/// Keys a client may register: enough for a rotation, not a store to search.
pub(crate) const MAX_CLIENT_KEYS: usize = 10;
/// Keys of a set published at a URL, most of which may be for something else.
const MAX_PUBLISHED_KEYS: usize = 50;

/// Why an assertion is refused: for the log; the client hears only `invalid_client` (a client
/// assertion) or `invalid_grant` (an ID-JAG).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct AssertionRefused(pub(crate) &'static str);

const NO_MATCHING_KEY: &str = "no registered key of the client matches the assertion's kid and alg";
const BAD_SIGNATURE: &str =
    "the client assertion's signature does not verify with the client's keys";

impl AssertionRefused {
    /// Whether keys fetched again might verify it: the client may have rotated its keys.
    pub(crate) fn is_about_keys(&self) -> bool {
        self.0 == NO_MATCHING_KEY || self.0 == BAD_SIGNATURE
    }
}

/// What a verified assertion leaves to check: that its `jti` was never used before `exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedAssertion {
    pub(crate) jti: String,
    pub(crate) expires_at: UnixTime,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    #[serde(default)]
    aud: Audience,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
}

/// `aud`: one name or several (RFC 7519 §4.1.3).
#[derive(Deserialize, Default)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audience {
    /// Whether it names one of `names`, among others or alone.
    fn names_any(&self, names: &[String]) -> bool {
        match self {
            Audience::One(aud) => names.contains(aud),
            Audience::Many(auds) => auds.iter().any(|aud| names.contains(aud)),
            Audience::None => false,
        }
    }

    /// Whether it names `name` and nothing else.
    pub(crate) fn is_only(&self, name: &str) -> bool {
        match self {
            Audience::One(aud) => aud == name,
            Audience::Many(auds) => matches!(auds.as_slice(), [only] if only == name),
            Audience::None => false,
        }
    }
}

/// The storage key that makes an assertion single use: `kind`, then a hash of who issued the
/// assertion and its `jti` (bounded in size, and a `jti` may hold anything, NUL included).
pub(crate) fn single_use_key(kind: &str, issuer: &str, jti: &str) -> String {
    let digest = crate::tokens::TokenHash::of(&format!("{issuer}\0{jti}"));
    format!("{kind}:{}", digest.to_base64())
}

/// Until when a `jti` is remembered: a minute past `exp`, for instances whose clocks run behind
/// the one that sweeps.
pub(crate) fn remembered_until(expires_at: UnixTime) -> UnixTime {
    expires_at.plus(std::time::Duration::from_secs(
        LEEWAY_SECONDS.unsigned_abs(),
    ))
}

/// The client an assertion says it is from (`sub`, unverified): for a request that sends no
/// `client_id` (RFC 7523 §3 makes it optional). Verification checks it again.
pub(crate) fn claimed_client_id(assertion: &str) -> Option<String> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return None;
    }
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode(assertion)
        .ok()?
        .claims;
    claims.sub.filter(|sub| !sub.is_empty())
}

/// Checks `assertion` for `client_id`: signature by one of `keys` in an asymmetric algorithm,
/// `iss` = `sub` = the client, `aud` naming one of `audiences` (the token endpoint or the
/// issuer), `exp` present and at most five minutes ahead, `nbf`/`iat` not in the future, and a
/// `jti`.
pub(crate) fn verify(
    assertion: &str,
    client_id: &str,
    keys: &JwkSet,
    audiences: &[String],
    now: UnixTime,
) -> Result<VerifiedAssertion, AssertionRefused> {
    let (_, claims) = signed_claims::<Claims>(assertion, keys)?;
    let jti = check_claims(&claims, client_id, audiences, now)?;
    Ok(VerifiedAssertion {
        jti,
        expires_at: UnixTime(claims.exp.unwrap_or_default()),
    })
}

/// The header and claims of a JWT signed, in one of `SIGNING_ALGORITHMS`, by one of `keys`
/// (by `kid` when it names one; a key's own `alg` and `use` must allow it). Nothing of the
/// claims is checked here: times and names are each caller's.
pub(crate) fn signed_claims<T: serde::de::DeserializeOwned>(
    token: &str,
    keys: &JwkSet,
) -> Result<(jsonwebtoken::Header, T), AssertionRefused> {
    if token.len() > MAX_ASSERTION_BYTES {
        return Err(AssertionRefused("the assertion is too long"));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| AssertionRefused("the client assertion is not a JWT"))?;
    if !SIGNING_ALGORITHMS.contains(&header.alg) {
        return Err(AssertionRefused(
            "the client assertion is not signed with an asymmetric algorithm",
        ));
    }
    let candidates: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|key| usable_for(key, header.alg))
        .filter(|key| match (&header.kid, &key.common.key_id) {
            (Some(kid), Some(key_id)) => kid == key_id,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(AssertionRefused(NO_MATCHING_KEY));
    }
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = candidates
        .iter()
        .find_map(|key| {
            let key = DecodingKey::from_jwk(key).ok()?;
            jsonwebtoken::decode::<T>(token, &key, &validation).ok()
        })
        .ok_or(AssertionRefused(BAD_SIGNATURE))?
        .claims;
    Ok((header, claims))
}

/// The checks that need no key, made before any key is fetched: an assertion that cannot pass
/// them must not make the bridge fetch anything.
pub(crate) fn precheck(
    assertion: &str,
    client_id: &str,
    audiences: &[String],
    now: UnixTime,
) -> Result<(), AssertionRefused> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(AssertionRefused("the assertion is too long"));
    }
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| AssertionRefused("the client assertion is not a JWT"))?;
    if !SIGNING_ALGORITHMS.contains(&header.alg) {
        return Err(AssertionRefused(
            "the client assertion is not signed with an asymmetric algorithm",
        ));
    }
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode(assertion)
        .map_err(|_| AssertionRefused("the client assertion's claims cannot be read"))?
        .claims;
    check_claims(&claims, client_id, audiences, now).map(|_| ())
}

/// `iss`, `sub`, `aud`, the times and `jti`; the `jti` when all hold.
fn check_claims(
    claims: &Claims,
    client_id: &str,
    audiences: &[String],
    now: UnixTime,
) -> Result<String, AssertionRefused> {
    if claims.iss.as_deref() != Some(client_id) || claims.sub.as_deref() != Some(client_id) {
        return Err(AssertionRefused(
            "the client assertion's iss and sub must both be the client id",
        ));
    }
    if !claims.aud.names_any(audiences) {
        return Err(AssertionRefused(
            "the client assertion's aud names neither the token endpoint nor the issuer",
        ));
    }
    check_lifetime(
        claims.exp,
        claims.nbf,
        claims.iat,
        claims.jti.as_deref(),
        now,
    )
}

/// The checks every one-time assertion gets, client assertion or ID-JAG: `exp` present, in the
/// future and at most five minutes ahead (with a minute of leeway), `nbf` and `iat` not in the
/// future, a `jti` of at most 256 bytes; the `jti`.
pub(crate) fn check_lifetime(
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    jti: Option<&str>,
    now: UnixTime,
) -> Result<String, AssertionRefused> {
    let exp = exp.ok_or(AssertionRefused("the assertion has no exp"))?;
    if exp <= now.seconds() {
        return Err(AssertionRefused("the assertion has expired"));
    }
    if exp
        > now
            .seconds()
            .saturating_add(MAX_LIFETIME_SECONDS + LEEWAY_SECONDS)
    {
        return Err(AssertionRefused(
            "the assertion expires more than five minutes ahead",
        ));
    }
    let ahead = now.seconds().saturating_add(LEEWAY_SECONDS);
    if nbf.is_some_and(|nbf| nbf > ahead) || iat.is_some_and(|iat| iat > ahead) {
        return Err(AssertionRefused(
            "the assertion is not valid yet (nbf or iat in the future)",
        ));
    }
    jti.filter(|jti| !jti.is_empty() && jti.len() <= MAX_JTI_BYTES)
        .map(str::to_owned)
        .ok_or(AssertionRefused(
            "the assertion needs a jti of at most 256 bytes",
        ))
}

/// Whether `key` may verify a signature in `algorithm`: the right kind of key, for signing, and
/// its own `alg`, when it names one, is this one.
fn usable_for(key: &Jwk, algorithm: Algorithm) -> bool {
    if key
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return false;
    }
    if let Some(named) = key.common.key_algorithm
        && KeyAlgorithm::from(algorithm) != named
    {
        return false;
    }
    match (&key.algorithm, algorithm) {
        (
            AlgorithmParameters::RSA(_),
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => {
            okp.curve == EllipticCurve::Ed25519
        }
        _ => false,
    }
}

/// Whether the key's material has the size its kind needs: RSA of 2048 to 4096 bits with a small
/// public exponent (weaker keys are refused; longer ones cost every verification dearly), EC
/// coordinates and Ed25519 points of their curve's length. A short Ed25519 key would make the
/// verifier panic; others would only never verify.
fn well_formed(key: &Jwk) -> bool {
    let length = |value: &str| URL_SAFE_NO_PAD.decode(value).map(|bytes| bytes.len());
    match &key.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let modulus = URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .map(|n| n.iter().skip_while(|byte| **byte == 0).count());
            matches!(modulus, Ok(256..=512))
                && matches!(URL_SAFE_NO_PAD.decode(&rsa.e), Ok(e) if (1..=4).contains(&e.len()))
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let size = match ec.curve {
                EllipticCurve::P256 => 32,
                EllipticCurve::P384 => 48,
                _ => return false,
            };
            length(&ec.x) == Ok(size) && length(&ec.y) == Ok(size)
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            okp.curve == EllipticCurve::Ed25519 && length(&okp.x) == Ok(32)
        }
        _ => false,
    }
}

/// The keys a client registers (`jwks`), checked as a set of public signing keys: no private or
/// symmetric key (a client that sends its private key has leaked it, and a shared secret is not
/// what this method is), at most `MAX_CLIENT_KEYS`, each usable and well formed, named by `kid`
/// when there are several, and no control character anywhere (PostgreSQL's `jsonb` holds no NUL).
pub(crate) fn client_key_set(value: &serde_json::Value) -> Result<JwkSet, &'static str> {
    key_set(value, false)
}

/// A set published at a `jwks_uri`: the same, except that keys for something else (encryption,
/// an algorithm we do not verify) are left out rather than refused, as an OpenID provider's
/// set often holds them.
pub(crate) fn published_key_set(value: &serde_json::Value) -> Result<JwkSet, &'static str> {
    key_set(value, true)
}

fn key_set(value: &serde_json::Value, skip_unusable: bool) -> Result<JwkSet, &'static str> {
    let keys = value
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("jwks must be a JWK Set: an object with a keys array")?;
    // A provider's published set may hold a few keys per algorithm and use.
    let most = if skip_unusable {
        MAX_PUBLISHED_KEYS
    } else {
        MAX_CLIENT_KEYS
    };
    if keys.is_empty() || keys.len() > most {
        return Err("jwks must hold between 1 and 10 keys (50 when published)");
    }
    if has_control_character(value) {
        return Err("jwks holds a control character");
    }
    const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
    if keys.iter().any(|key| {
        PRIVATE_MEMBERS
            .iter()
            .any(|member| key.get(member).is_some())
    }) {
        return Err("jwks must hold public keys only (no private or symmetric key material)");
    }
    let mut usable = Vec::new();
    for key in keys {
        let parsed = serde_json::from_value::<Jwk>(key.clone())
            .ok()
            .filter(|key| {
                SIGNING_ALGORITHMS.iter().any(|alg| usable_for(key, *alg))
                    && well_formed(key)
                    && DecodingKey::from_jwk(key).is_ok()
            });
        match parsed {
            Some(key) => usable.push(key),
            None if skip_unusable => {}
            None => {
                return Err(
                    "jwks holds a key that is not a usable signing key (RSA of 2048 to 4096 bits, P-256, P-384 or Ed25519)",
                );
            }
        }
    }
    if usable.is_empty() {
        return Err("jwks holds no usable signing key");
    }
    if usable.len() > 1 && usable.iter().any(|key| key.common.key_id.is_none()) {
        return Err("jwks with several keys must name each by kid");
    }
    Ok(JwkSet { keys: usable })
}

fn has_control_character(value: &serde_json::Value) -> bool {
    let control = |text: &str| text.chars().any(char::is_control);
    match value {
        serde_json::Value::String(text) => control(text),
        serde_json::Value::Array(items) => items.iter().any(has_control_character),
        serde_json::Value::Object(members) => members
            .iter()
            .any(|(name, item)| control(name) || has_control_character(item)),
        _ => false,
    }
}

/// A `jwks_uri` a client may register: https, with a path, without credentials, fragment or
/// control characters, at most 2048 bytes; what it answers is checked when it is fetched.
pub(crate) fn check_jwks_uri(uri: &str) -> Result<(), &'static str> {
    let valid = !uri.chars().any(char::is_control)
        && uri.len() <= 2048
        && url::Url::parse(uri).is_ok_and(|url| {
            url.scheme() == "https"
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none()
                && url.host().is_some()
                && url.path() != "/"
        });
    if valid {
        Ok(())
    } else {
        Err(
            "jwks_uri must be an https URL with a path (at most 2048 bytes), without credentials or fragment",
        )
    }
}

/// The keys of a `private_key_jwt` client's metadata: `jwks` or `jwks_uri`, one of them, valid;
/// whether there are any.
pub(crate) fn check_client_keys(
    jwks: Option<&serde_json::Value>,
    jwks_uri: Option<&str>,
) -> Result<bool, &'static str> {
    match (jwks, jwks_uri) {
        (Some(_), Some(_)) => Err("give jwks or jwks_uri, not both"),
        (Some(jwks), None) => client_key_set(jwks).map(|_| true),
        (None, Some(uri)) => check_jwks_uri(uri).map(|_| true),
        (None, None) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const CLIENT: &str = "svc";
    const TOKEN_ENDPOINT: &str = "https://bridge.example.com/oauth/token";
    const NOW: UnixTime = UnixTime(1_800_000_000);
    const RSA_PEM: &str = include_str!("../../tests/fixtures/other_rsa.pem");
    const OTHER_RSA_PEM: &str = include_str!("../../tests/fixtures/upstream_rsa.pem");

    fn public_jwk(pem: &str, kid: &str) -> serde_json::Value {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(kid.into());
        serde_json::to_value(jwk).unwrap()
    }

    fn keys() -> JwkSet {
        client_key_set(&json!({"keys": [public_jwk(RSA_PEM, "k1")]})).unwrap()
    }

    fn audiences() -> Vec<String> {
        vec![TOKEN_ENDPOINT.into(), "https://bridge.example.com".into()]
    }

    fn claims() -> serde_json::Value {
        json!({"iss": CLIENT, "sub": CLIENT, "aud": TOKEN_ENDPOINT, "exp": NOW.seconds() + 120,
               "iat": NOW.seconds(), "jti": "a-unique-id"})
    }

    fn signed_with(
        pem: &str,
        alg: Algorithm,
        kid: Option<&str>,
        claims: &serde_json::Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn signed(claims: &serde_json::Value) -> String {
        signed_with(RSA_PEM, Algorithm::RS256, Some("k1"), claims)
    }

    fn refused(assertion: &str) -> &'static str {
        verify(assertion, CLIENT, &keys(), &audiences(), NOW)
            .unwrap_err()
            .0
    }

    fn with(change: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
        let mut claims = claims();
        change(&mut claims);
        claims
    }

    #[test]
    fn a_well_made_assertion_verifies_and_leaves_its_jti_to_remember() {
        let verified = verify(&signed(&claims()), CLIENT, &keys(), &audiences(), NOW).unwrap();
        assert_eq!(verified.jti, "a-unique-id");
        assert_eq!(verified.expires_at, UnixTime(NOW.seconds() + 120));
        // The issuer as audience, in an array, and a key named by no kid: all fine.
        let issuer = with(|c| c["aud"] = json!(["https://other", "https://bridge.example.com"]));
        let without_kid = signed_with(RSA_PEM, Algorithm::RS256, None, &issuer);
        assert!(verify(&without_kid, CLIENT, &keys(), &audiences(), NOW).is_ok());
        assert_eq!(
            claimed_client_id(&signed(&claims())).as_deref(),
            Some(CLIENT)
        );
    }

    #[test]
    fn every_claim_that_is_wrong_or_missing_is_refused() {
        let cases: Vec<serde_json::Value> = vec![
            with(|c| c["iss"] = json!("other")),
            with(|c| c["sub"] = json!("other")),
            with(|c| {
                c.as_object_mut()
                    .unwrap()
                    .remove("iss")
                    .map(|_| ())
                    .unwrap()
            }),
            with(|c| c["aud"] = json!("https://bridge.example.com/oauth/introspect")),
            with(|c| c["aud"] = json!([])),
            with(|c| {
                c.as_object_mut()
                    .unwrap()
                    .remove("aud")
                    .map(|_| ())
                    .unwrap()
            }),
            with(|c| {
                c.as_object_mut()
                    .unwrap()
                    .remove("exp")
                    .map(|_| ())
                    .unwrap()
            }),
            with(|c| c["exp"] = json!(NOW.seconds())),
            with(|c| c["exp"] = json!(NOW.seconds() + 3600)),
            with(|c| c["nbf"] = json!(NOW.seconds() + 600)),
            with(|c| c["iat"] = json!(NOW.seconds() + 600)),
            with(|c| {
                c.as_object_mut()
                    .unwrap()
                    .remove("jti")
                    .map(|_| ())
                    .unwrap()
            }),
            with(|c| c["jti"] = json!("")),
            with(|c| c["jti"] = json!("x".repeat(257))),
            with(|c| c["exp"] = json!("soon")),
        ];
        for claims in cases {
            let refusal = verify(&signed(&claims), CLIENT, &keys(), &audiences(), NOW);
            assert!(refusal.is_err(), "{claims}");
        }
    }

    #[test]
    fn a_signature_by_another_key_in_another_or_a_symmetric_algorithm_is_refused() {
        assert_eq!(
            refused(&signed_with(
                OTHER_RSA_PEM,
                Algorithm::RS256,
                Some("k1"),
                &claims()
            )),
            "the client assertion's signature does not verify with the client's keys"
        );
        assert_eq!(
            refused(&signed_with(
                RSA_PEM,
                Algorithm::RS256,
                Some("k2"),
                &claims()
            )),
            "no registered key of the client matches the assertion's kid and alg"
        );
        // The RSA key's modulus as an HMAC secret: the classic confusion, refused by name.
        let hs256 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"anything"),
        )
        .unwrap();
        assert_eq!(
            refused(&hs256),
            "the client assertion is not signed with an asymmetric algorithm"
        );
        // `{"alg":"none"}` over the same claims, unsigned.
        let signed = signed(&claims());
        let payload = signed.split('.').nth(1).unwrap();
        let none = format!("eyJhbGciOiJub25lIn0.{payload}");
        assert_eq!(
            refused(&format!("{none}.")),
            "the client assertion is not a JWT"
        );
        assert_eq!(refused("not a jwt"), "the client assertion is not a JWT");
        assert_eq!(refused(&"a".repeat(9000)), "the assertion is too long");
    }

    #[test]
    fn a_key_set_with_private_symmetric_or_too_many_keys_is_not_registrable() {
        let public = public_jwk(RSA_PEM, "k1");
        assert!(client_key_set(&json!({"keys": [public.clone()]})).is_ok());
        let mut private = public.clone();
        private["d"] = json!("AQAB");
        let mut no_kid = public_jwk(OTHER_RSA_PEM, "k2");
        no_kid.as_object_mut().unwrap().remove("kid");
        for bad in [
            json!({"keys": [private]}),
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
            json!({"keys": []}),
            json!({"keys": vec![public.clone(); 11]}),
            json!([public.clone()]),
            json!({"keys": [{"kty": "RSA", "n": "AQAB"}]}),
            json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "alg": "RS256"}]}),
            // A short Ed25519 key would make the verifier panic; a P-256 point of the wrong size.
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AA"}]}),
            json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}),
            json!({"keys": [{"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}]}),
            // 512 bits: weaker than any client should use.
            json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xc5u8; 64]), "e": "AQAB"}]}),
            json!({"keys": [public.clone(), {"kid": "k\u{0}", "kty": "RSA", "n": "AQAB", "e": "AQAB"}]}),
            json!({"keys": [public.clone(), no_kid.clone()]}),
        ] {
            assert!(client_key_set(&bad).is_err(), "{bad}");
        }
        let mut encryption = public.clone();
        encryption["use"] = json!("enc");
        let set = client_key_set(&json!({"keys": [encryption.clone()]}));
        assert!(set.is_err(), "an encryption key signs nothing");
        // A published set keeps its signing keys and leaves the others out.
        let published = published_key_set(&json!({"keys": [encryption.clone(), public]})).unwrap();
        assert_eq!(published.keys.len(), 1);
        assert!(published_key_set(&json!({"keys": [encryption]})).is_err());
    }

    #[test]
    fn an_assertion_that_cannot_pass_is_refused_before_any_key_is_fetched() {
        assert!(precheck(&signed(&claims()), CLIENT, &audiences(), NOW).is_ok());
        let wrong_audience = with(|c| c["aud"] = json!("https://elsewhere"));
        for assertion in [
            signed(&wrong_audience),
            signed(&with(|c| c["exp"] = json!(NOW.seconds() - 1))),
            signed(&with(|c| c["sub"] = json!("other"))),
            "garbage".to_owned(),
        ] {
            assert!(precheck(&assertion, CLIENT, &audiences(), NOW).is_err());
        }
    }

    #[test]
    fn jwks_uri_must_be_https_with_a_path() {
        assert!(check_jwks_uri("https://client.example.com/jwks.json").is_ok());
        for bad in [
            "http://client.example.com/jwks.json",
            "https://user:pw@client.example.com/jwks",
            "https://client.example.com/jwks#k",
            "https://client.example.com/",
            "https://client.example.com/jwks\u{0}",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(check_jwks_uri(bad).is_err(), "{bad}");
        }
        let long = format!("https://c.example.com/{}", "a".repeat(2100));
        assert!(check_jwks_uri(&long).is_err());
        let jwks = json!({"keys": []});
        assert!(check_client_keys(Some(&jwks), Some("https://c.example.com/k")).is_err());
        assert_eq!(check_client_keys(None, None), Ok(false));
    }
}
