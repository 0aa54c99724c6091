//! Signing keys for access tokens: ES256 (generated or from PEM), RS256 from PEM, HS256 from a
//! shared secret; the RS256 keys of ID tokens; the JWKS that publishes the public halves.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::jwt::{AccessTokenClaims, JwtError};
use super::verified::VerifiedTokens;
use crate::clock::UnixTime;
use crate::duration::ConfigDuration;
use crate::secret::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Clone)]
pub struct SigningKey {
    pub(crate) kid: String,
    pub(crate) algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// None for HS256: a shared secret is never published.
    public_jwk: Option<Jwk>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl SigningKey {
    pub fn generate_es256() -> Result<Self, KeyError> {
        Self::from_es256_pem(Self::generate_es256_pem()?.as_bytes())
    }

    /// A new ES256 private key as PKCS#8 PEM, for storing where other instances find it.
    pub(crate) fn generate_es256_pem() -> Result<String, KeyError> {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        secret
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Invalid(format!("cannot encode generated key: {e}")))
    }

    pub(crate) fn from_es256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        Self::from_asymmetric(EncodingKey::from_ec_pem(pem), Algorithm::ES256)
    }

    /// A new 2048-bit RSA key for ID tokens; as slow as `generate_rs256_pem`.
    pub fn generate_rs256() -> Result<Self, KeyError> {
        Self::from_rs256_pem(Self::generate_rs256_pem()?.as_bytes())
    }

    /// A new 2048-bit RSA private key as PKCS#8 PEM. Finding the primes costs tens to hundreds
    /// of milliseconds: call it off the async runtime.
    pub(crate) fn generate_rs256_pem() -> Result<String, KeyError> {
        use rsa::pkcs8::EncodePrivateKey as _;
        let secret = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_KEY_BITS)
            .map_err(|e| KeyError::Invalid(format!("cannot generate an RSA key: {e}")))?;
        secret
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Invalid(format!("cannot encode generated key: {e}")))
    }

    pub(crate) fn from_rs256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        Self::from_asymmetric(EncodingKey::from_rsa_pem(pem), Algorithm::RS256)
    }

    pub(crate) fn from_pem_file(
        path: &Path,
        algorithm: SigningAlgorithm,
    ) -> Result<Self, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        match algorithm {
            SigningAlgorithm::ES256 => {
                Self::from_asymmetric(EncodingKey::from_ec_pem(&pem), Algorithm::ES256)
            }
            SigningAlgorithm::RS256 => {
                Self::from_asymmetric(EncodingKey::from_rsa_pem(&pem), Algorithm::RS256)
            }
        }
        .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))
    }

    pub(crate) fn from_shared_secret(secret: &[u8]) -> Self {
        super::crypto::install();
        // The kid identifies the key without revealing it: a truncated hash of a >= 256-bit secret.
        let digest = Sha256::digest([b"mcp-oauth-bridge kid:".as_slice(), secret].concat());
        let kid = format!("hs256-{}", hex_prefix(&digest, 8));
        SigningKey {
            kid,
            algorithm: Algorithm::HS256,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            public_jwk: None,
        }
    }

    fn from_asymmetric(
        encoding: Result<EncodingKey, jsonwebtoken::errors::Error>,
        algorithm: Algorithm,
    ) -> Result<Self, KeyError> {
        super::crypto::install();
        let encoding = encoding.map_err(|e| {
            KeyError::Invalid(format!("not a valid {algorithm:?} private key: {e}"))
        })?;
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm)
            .map_err(|e| KeyError::Invalid(format!("cannot derive the public key: {e}")))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| KeyError::Invalid(format!("cannot compute the key thumbprint: {e}")))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(match algorithm {
            Algorithm::RS256 => KeyAlgorithm::RS256,
            _ => KeyAlgorithm::ES256,
        });
        let decoding = DecodingKey::from_jwk(&jwk)
            .map_err(|e| KeyError::Invalid(format!("unusable public key: {e}")))?;
        Ok(SigningKey {
            kid,
            algorithm,
            encoding,
            decoding,
            public_jwk: Some(jwk),
        })
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// Modulus size of generated RSA keys: what OIDC providers publish by default (oidc-provider,
/// Keycloak), and what every client library accepts.
const RSA_KEY_BITS: usize = 2048;

/// The key that signs new tokens plus every key that still verifies live ones.
#[derive(Debug, Clone)]
pub struct KeySet {
    active: SigningKey,
    /// Keys on their way in (published before they sign) or out (until their tokens expire).
    verify_only: Vec<SigningKey>,
    /// RS256 keys for ID tokens, the first signing and the others published (rotating in or
    /// out): OIDC makes RS256 the default a client expects when it registered no
    /// `id_token_signed_response_alg` (Core §15.1, Registration §2). Never used for access
    /// tokens. Empty when the access-token key is RS256 itself, which then signs both.
    id_token_rsa: Vec<SigningKey>,
}

impl KeySet {
    pub fn new(active: SigningKey) -> Self {
        KeySet {
            active,
            verify_only: Vec::new(),
            id_token_rsa: Vec::new(),
        }
    }

    pub(crate) fn with_verify_only(mut self, keys: Vec<SigningKey>) -> Self {
        self.verify_only = keys;
        self
    }

    /// `keys[0]` signs ID tokens; the rest are published for ID tokens they signed or will.
    pub fn with_id_token_keys(mut self, keys: Vec<SigningKey>) -> Self {
        self.id_token_rsa = keys;
        self
    }

    /// Whether ID tokens need an RSA key of their own: the access-token key is not RS256.
    pub(crate) fn needs_id_token_key(&self) -> bool {
        self.active.algorithm != Algorithm::RS256
    }

    /// The key that signs an ID token in `algorithm`, if this set has one: RS256 by the ID-token
    /// key (or an RS256 access-token key), ES256 by an ES256 access-token key. Never HS256,
    /// which a client could verify only with a secret of ours.
    pub(crate) fn id_token_key(&self, algorithm: Algorithm) -> Option<&SigningKey> {
        match algorithm {
            Algorithm::RS256 => self
                .id_token_rsa
                .first()
                .or(Some(&self.active).filter(|key| key.algorithm == Algorithm::RS256)),
            Algorithm::ES256 => Some(&self.active).filter(|key| key.algorithm == Algorithm::ES256),
            _ => None,
        }
    }

    /// What `id_token_signing_alg_values_supported` says: RS256 first, as the default, and
    /// always (an RSA key is loaded or generated for every key set that is not RS256 itself,
    /// though a generated one may still be on its way: `KeyRing::id_token_key_ready`); ES256
    /// under an ES256 access-token key.
    pub(crate) fn id_token_algorithms(&self) -> Vec<SigningAlgorithm> {
        let mut algorithms = vec![SigningAlgorithm::RS256];
        if self.active.algorithm == Algorithm::ES256 {
            algorithms.push(SigningAlgorithm::ES256);
        }
        algorithms
    }

    /// Whether ID tokens can be signed in every algorithm `id_token_algorithms` names.
    fn has_id_token_keys(&self) -> bool {
        !self.needs_id_token_key() || !self.id_token_rsa.is_empty()
    }

    /// The keys the configuration names, if it names any (automatic rotation names none).
    pub fn configured(
        signing_key: Option<&SecretString>,
        signing: Option<&SigningConfig>,
    ) -> Result<Option<Self>, KeyError> {
        if let Some(secret) = signing_key {
            return Ok(Some(KeySet::new(SigningKey::from_shared_secret(
                secret.expose().as_bytes(),
            ))));
        }
        let Some(signing) = signing else {
            return Ok(None);
        };
        if let Some(path) = &signing.key_file {
            let algorithm = signing.algorithm.unwrap_or(SigningAlgorithm::ES256);
            return Ok(Some(KeySet::new(SigningKey::from_pem_file(
                path, algorithm,
            )?)));
        }
        let mut active = None;
        let mut verify_only = Vec::new();
        for entry in &signing.keys {
            let key = SigningKey::from_pem_file(&entry.key_file, entry.algorithm)?;
            if entry.verify_only {
                verify_only.push(key);
            } else if active.replace(key).is_some() {
                return Err(KeyError::Invalid(
                    "oauth.signing.keys: exactly one key must sign".to_owned(),
                ));
            }
        }
        match active {
            Some(active) => Ok(Some(KeySet::new(active).with_verify_only(verify_only))),
            None if signing.keys.is_empty() => Ok(None),
            None => Err(KeyError::Invalid(
                "oauth.signing.keys: exactly one key must sign".to_owned(),
            )),
        }
    }

    pub(crate) fn active(&self) -> &SigningKey {
        &self.active
    }

    pub(crate) fn find(&self, kid: &str) -> Option<&SigningKey> {
        std::iter::once(&self.active)
            .chain(&self.verify_only)
            .find(|key| key.kid == kid)
    }

    pub(crate) fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: std::iter::once(&self.active)
                .chain(&self.verify_only)
                .chain(&self.id_token_rsa)
                .filter_map(|key| key.public_jwk.clone())
                .collect(),
        }
    }
}

/// The key set in use, replaced whole when keys rotate; readers keep the set they took.
#[derive(Debug)]
pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
    verified: VerifiedTokens,
    /// True once the ID tokens' RSA key is in the set: one generated at start-up (a quarter of
    /// a second of prime search) arrives after the server is already serving.
    id_token_key_ready: tokio::sync::watch::Sender<bool>,
}

impl KeyRing {
    pub fn new(keys: KeySet) -> Self {
        let ready = keys.has_id_token_keys();
        KeyRing {
            current: RwLock::new(Arc::new(keys)),
            verified: VerifiedTokens::default(),
            id_token_key_ready: tokio::sync::watch::Sender::new(ready),
        }
    }

    /// Adds the RSA key that signs ID tokens to a set loaded without it.
    pub(crate) fn install_id_token_key(&self, key: SigningKey) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *current = Arc::new((**current).clone().with_id_token_keys(vec![key]));
        drop(current);
        self.verified.clear();
        self.id_token_key_ready.send_replace(true);
    }

    /// Whether ID tokens can be signed now.
    pub(crate) fn signs_id_tokens(&self) -> bool {
        *self.id_token_key_ready.borrow()
    }

    /// Waits, at most `limit`, until ID tokens can be signed; whether they can.
    pub(crate) async fn id_token_key_ready(&self, limit: std::time::Duration) -> bool {
        let mut ready = self.id_token_key_ready.subscribe();
        tokio::time::timeout(limit, ready.wait_for(|ready| *ready))
            .await
            .is_ok_and(|ready| ready.is_ok())
    }

    /// One of our access tokens, for any audience, checked against the current keys (RFC 9068
    /// §4 but the audience); a token verified before under the same keys is not verified again.
    pub(crate) fn verify_own_access_token(
        &self,
        token: &str,
        issuer: &str,
        now: UnixTime,
    ) -> Result<AccessTokenClaims, JwtError> {
        self.verified
            .verify_own(&self.current(), token, issuer, now)
    }

    pub fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn replace(&self, keys: KeySet) {
        let complete = keys.has_id_token_keys();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        self.verified.clear();
        if complete {
            self.id_token_key_ready.send_replace(true);
        }
    }
}

fn hex_prefix(bytes: &[u8], len: usize) -> String {
    bytes.iter().take(len).map(|b| format!("{b:02x}")).collect()
}

/// Asymmetric signing keys: one key file, a list (one signing, the others verify-only, for
/// rotation by hand), or keys generated and rotated automatically every `rotation_period`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    pub algorithm: Option<SigningAlgorithm>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub keys: Vec<SigningKeyConfig>,
    pub rotation_period: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    pub algorithm: SigningAlgorithm,
    pub(crate) key_file: PathBuf,
    /// Published and accepted, but signs nothing: a key on its way in or out.
    #[serde(default)]
    pub(crate) verify_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    ES256,
    RS256,
}

impl SigningAlgorithm {
    /// The JWS `alg` name (RFC 7518 §3.1), as clients write it in their metadata.
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(SigningAlgorithm::ES256),
            "RS256" => Some(SigningAlgorithm::RS256),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::RS256 => "RS256",
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::ES256 => Algorithm::ES256,
            SigningAlgorithm::RS256 => Algorithm::RS256,
        }
    }
}

impl SigningConfig {
    /// Every problem of `oauth.signing`, with its field path.
    pub(crate) fn validate(&self, access_token_ttl: &ConfigDuration, problems: &mut Vec<String>) {
        let readable = |field: String, path: &PathBuf, problems: &mut Vec<String>| {
            if !path.is_file() {
                problems.push(format!(
                    "{field}: {} is not a readable file",
                    path.display()
                ));
            }
        };
        let ways = [
            self.key_file.is_some(),
            !self.keys.is_empty(),
            self.rotation_period.is_some(),
        ];
        if ways.iter().filter(|&&set| set).count() != 1 {
            problems.push(
                "oauth.signing: set exactly one of key_file (with algorithm), keys, or rotation_period"
                    .to_owned(),
            );
            return;
        }
        if let Some(path) = &self.key_file {
            if self.algorithm.is_none() {
                problems.push(
                    "oauth.signing.algorithm: required with key_file (ES256 or RS256)".to_owned(),
                );
            }
            readable("oauth.signing.key_file".to_owned(), path, problems);
        } else if self.algorithm.is_some() {
            problems.push("oauth.signing.algorithm: only goes with key_file; each of keys names its own, and rotated keys are ES256".to_owned());
        }
        for (i, key) in self.keys.iter().enumerate() {
            readable(
                format!("oauth.signing.keys[{i}].key_file"),
                &key.key_file,
                problems,
            );
        }
        if !self.keys.is_empty() && self.keys.iter().filter(|k| !k.verify_only).count() != 1 {
            problems.push(
                "oauth.signing.keys: exactly one key must sign (the others have verify_only: true)"
                    .to_owned(),
            );
        }
        if let Some(period) = &self.rotation_period {
            problems.extend(crate::duration::whole_seconds(
                "oauth.signing.rotation_period",
                period,
                1,
            ));
            // Shorter would keep ever more keys published for the tokens still alive.
            if period.0 < access_token_ttl.0 {
                problems.push(
                    "oauth.signing.rotation_period: must be at least oauth.access_token_ttl"
                        .to_owned(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_es256_key_publishes_a_p256_jwk_with_its_thumbprint_as_kid() {
        let key = SigningKey::generate_es256().unwrap();
        let jwks = serde_json::to_value(KeySet::new(key).jwks()).unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["alg"], "ES256");
        assert_eq!(jwk["use"], "sig");
        assert!(
            jwk.get("d").is_none(),
            "private part must never be published"
        );
        assert_eq!(jwk["kid"].as_str().unwrap().len(), 43);
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn es256_and_rs256_keys_load_from_pem_files_and_sign_verifiable_tokens() {
        for (file, algorithm, kty) in [
            ("signing_es256.pem", SigningAlgorithm::ES256, "EC"),
            ("upstream_rsa.pem", SigningAlgorithm::RS256, "RSA"),
        ] {
            let key = SigningKey::from_pem_file(&fixture(file), algorithm).unwrap();
            let keys = KeySet::new(key);
            let jwk = serde_json::to_value(&keys.jwks().keys[0]).unwrap();
            assert_eq!(jwk["kty"], kty);
            assert!(jwk.get("d").is_none());
            let claims = crate::tokens::jwt::AccessTokenClaims {
                iss: "https://i".into(),
                sub: "s".into(),
                aud: "https://a".into(),
                client_id: "c".into(),
                scope: String::new(),
                exp: 2000,
                iat: 1000,
                nbf: 1000,
                jti: "j".into(),
                email: None,
                name: None,
                groups: vec![],
                sid: None,
                act: None,
            };
            let token = crate::tokens::jwt::sign_access_token(&keys, &claims).unwrap();
            let verified = crate::tokens::jwt::verify_access_token(
                &keys,
                &token,
                "https://i",
                "https://a",
                crate::clock::UnixTime(1500),
            );
            assert_eq!(verified.unwrap(), claims, "{file}");
        }
    }

    #[test]
    fn a_key_file_of_the_wrong_kind_or_missing_is_refused_clearly() {
        let err = SigningKey::from_pem_file(&fixture("upstream_rsa.pem"), SigningAlgorithm::ES256)
            .unwrap_err();
        assert!(err.to_string().contains("upstream_rsa.pem"), "{err}");
        let err = SigningKey::from_pem_file(&fixture("missing.pem"), SigningAlgorithm::RS256)
            .unwrap_err();
        assert!(matches!(err, KeyError::Read { .. }));
    }

    #[test]
    fn a_configured_key_list_signs_with_one_key_and_publishes_and_verifies_all() {
        let yaml = format!(
            "keys:\n  - {{algorithm: RS256, key_file: {}, verify_only: true}}\n  - {{algorithm: ES256, key_file: {}}}\n",
            fixture("upstream_rsa.pem").display(),
            fixture("signing_es256.pem").display()
        );
        let signing: SigningConfig = serde_yaml::from_str(&yaml).unwrap();
        let keys = KeySet::configured(None, Some(&signing)).unwrap().unwrap();
        assert_eq!(keys.active().algorithm, Algorithm::ES256);
        let published = keys.jwks().keys;
        assert_eq!(published.len(), 2);
        let retiring =
            SigningKey::from_pem_file(&fixture("upstream_rsa.pem"), SigningAlgorithm::RS256)
                .unwrap();
        let old_token = crate::tokens::jwt::sign_access_token(
            &KeySet::new(retiring),
            &crate::tokens::jwt::AccessTokenClaims {
                iss: "https://i".into(),
                sub: "s".into(),
                aud: "https://a".into(),
                client_id: "c".into(),
                scope: String::new(),
                exp: 2000,
                iat: 1000,
                nbf: 1000,
                jti: "j".into(),
                email: None,
                name: None,
                groups: vec![],
                sid: None,
                act: None,
            },
        )
        .unwrap();
        let verified = crate::tokens::jwt::verify_access_token(
            &keys,
            &old_token,
            "https://i",
            "https://a",
            crate::clock::UnixTime(1500),
        );
        assert!(verified.is_ok(), "{verified:?}");
    }

    #[tokio::test]
    async fn a_ring_without_its_id_token_key_waits_for_it_then_publishes_and_signs_with_it() {
        let ring = std::sync::Arc::new(KeyRing::new(KeySet::new(
            SigningKey::generate_es256().unwrap(),
        )));
        assert!(!ring.signs_id_tokens());
        assert!(
            !ring
                .id_token_key_ready(std::time::Duration::from_millis(20))
                .await
        );
        // What the ring promises meanwhile does not change: RS256, then ES256.
        assert_eq!(
            ring.current().id_token_algorithms(),
            [SigningAlgorithm::RS256, SigningAlgorithm::ES256]
        );
        assert!(ring.current().id_token_key(Algorithm::RS256).is_none());
        let waiting = {
            let ring = std::sync::Arc::clone(&ring);
            tokio::spawn(async move {
                ring.id_token_key_ready(std::time::Duration::from_secs(5))
                    .await
            })
        };
        let rsa =
            SigningKey::from_pem_file(&fixture("other_rsa.pem"), SigningAlgorithm::RS256).unwrap();
        let kid = rsa.kid.clone();
        ring.install_id_token_key(rsa);
        assert!(waiting.await.unwrap());
        assert!(ring.signs_id_tokens());
        let keys = ring.current();
        assert_eq!(keys.id_token_key(Algorithm::RS256).unwrap().kid, kid);
        assert_eq!(keys.jwks().keys.len(), 2);
        // Never an access-token key.
        assert!(keys.find(&kid).is_none());
    }

    #[test]
    fn an_rs256_access_token_key_needs_no_other_and_hs256_signs_no_id_token() {
        let rsa = SigningKey::from_pem_file(&fixture("upstream_rsa.pem"), SigningAlgorithm::RS256)
            .unwrap();
        let keys = KeySet::new(rsa);
        assert!(!keys.needs_id_token_key());
        assert_eq!(keys.id_token_algorithms(), [SigningAlgorithm::RS256]);
        assert!(keys.id_token_key(Algorithm::ES256).is_none());
        assert!(KeyRing::new(keys).signs_id_tokens());
        let shared = KeySet::new(SigningKey::from_shared_secret(
            b"0123456789abcdef0123456789abcdef",
        ));
        assert!(shared.id_token_key(Algorithm::HS256).is_none());
        assert!(shared.id_token_key(Algorithm::RS256).is_none());
        assert_eq!(shared.id_token_algorithms(), [SigningAlgorithm::RS256]);
    }

    #[test]
    fn shared_secret_is_never_published() {
        let keys = KeySet::new(SigningKey::from_shared_secret(
            b"0123456789abcdef0123456789abcdef",
        ));
        assert!(keys.jwks().keys.is_empty());
        assert!(keys.active().kid.starts_with("hs256-"));
    }
}
