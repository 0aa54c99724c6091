//! ES256 through `ring` for every JWT the bridge signs or verifies, and RS256 signing (the ID
//! tokens' default algorithm); the other algorithms stay with jsonwebtoken's RustCrypto provider. RustCrypto's portable P-256 arithmetic made one ES256
//! signature cost ≈ 500 µs (measured with `examples/bench.rs`; `perf` put 85 % of the token
//! endpoint's time in `p256::arithmetic::field`), which capped a core at ≈ 2,000 tokens/s; `ring`'s
//! assembly does the same work in a few tens of microseconds. Validation is untouched: only the
//! signature primitive is swapped, behind jsonwebtoken's `CryptoProvider`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Once, OnceLock};

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::pkcs8::DecodePrivateKey;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair, UnparsedPublicKey,
};
use sha2::{Digest, Sha256};

/// Parsed key pairs by the SHA-256 of their PKCS#8 bytes: parsing checks the pair, which costs a
/// scalar multiplication, so it is done once per key, not once per token. A handful of keys are
/// live at once (the active one and those rotating in or out); past this many the cache starts
/// over.
const MAX_CACHED_KEYS: usize = 16;

/// Makes `ring` the ES256 provider of this process, before any token is signed or verified. When
/// something else installed a provider first (a test binary calling jsonwebtoken itself), that
/// one stays: slower, equally correct.
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
        let provider = PROVIDER.get_or_init(|| CryptoProvider {
            signer_factory: signer,
            verifier_factory: verifier,
            key_utils: jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
                .key_utils
                .clone(),
        });
        let _ = provider.install_default();
    });
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    match algorithm {
        Algorithm::ES256 => Ok(Box::new(Es256Signer(key_pair(key.as_bytes())?))),
        // ring takes 2048-, 3072- and 4096-bit moduli with e ≥ 65537 only; a configured key
        // outside that (2560 bits, e = 3) still signs, by RustCrypto.
        Algorithm::RS256 => match rsa_key_pair(key.as_bytes()) {
            Ok(pair) => Ok(Box::new(Rs256Signer(pair))),
            Err(_) => {
                (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.signer_factory)(algorithm, key)
            }
        },
        _ => (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.signer_factory)(algorithm, key),
    }
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    match algorithm {
        Algorithm::ES256 => Ok(Box::new(Es256Verifier(key.try_get_as_bytes()?.to_vec()))),
        _ => (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key),
    }
}

type KeyCache<T> = OnceLock<Mutex<HashMap<[u8; 32], Arc<T>>>>;

fn key_pair(pkcs8: &[u8]) -> Result<Arc<EcdsaKeyPair>, Error> {
    static CACHE: KeyCache<EcdsaKeyPair> = OnceLock::new();
    cached(&CACHE, pkcs8, parse_key_pair)
}

/// jsonwebtoken keeps an RSA `EncodingKey` as PKCS#1 DER, which is what `ring` reads.
fn rsa_key_pair(pkcs1: &[u8]) -> Result<Arc<RsaKeyPair>, Error> {
    static CACHE: KeyCache<RsaKeyPair> = OnceLock::new();
    cached(&CACHE, pkcs1, |der| {
        RsaKeyPair::from_der(der).map_err(|_| ErrorKind::InvalidRsaKey(String::new()).into())
    })
}

fn cached<T>(
    cache: &'static KeyCache<T>,
    der: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<T, Error>,
) -> Result<Arc<T>, Error> {
    let cache = cache.get_or_init(|| Mutex::new(HashMap::new()));
    let id: [u8; 32] = Sha256::digest(der).into();
    if let Some(pair) = cache.lock().ok().and_then(|keys| keys.get(&id).cloned()) {
        return Ok(pair);
    }
    let pair = Arc::new(parse(der)?);
    if let Ok(mut keys) = cache.lock() {
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.insert(id, Arc::clone(&pair));
    }
    Ok(pair)
}

/// `ring` wants the public key inside the PKCS#8 structure; keys written without it (RFC 5915
/// makes it optional) get it computed once here.
fn parse_key_pair(pkcs8: &[u8]) -> Result<EcdsaKeyPair, Error> {
    let rng = SystemRandom::new();
    if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng) {
        return Ok(pair);
    }
    let secret = p256::SecretKey::from_pkcs8_der(pkcs8)
        .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
    let public = secret.public_key().to_sec1_bytes();
    EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &secret.to_bytes(),
        &public,
        &rng,
    )
    .map_err(|_| ErrorKind::InvalidEcdsaKey.into())
}

struct Es256Signer(Arc<EcdsaKeyPair>);

impl Signer<Vec<u8>> for Es256Signer {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
        self.0
            .sign(&SystemRandom::new(), message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| jsonwebtoken::signature::Error::new())
    }
}

impl JwtSigner for Es256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

struct Rs256Signer(Arc<RsaKeyPair>);

impl Signer<Vec<u8>> for Rs256Signer {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
        let mut signature = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| jsonwebtoken::signature::Error::new())?;
        Ok(signature)
    }
}

impl JwtSigner for Rs256Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

/// The public key as an uncompressed SEC1 point, as jsonwebtoken keeps an EC `DecodingKey`.
struct Es256Verifier(Vec<u8>);

impl Verifier<Vec<u8>> for Es256Verifier {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> Result<(), jsonwebtoken::signature::Error> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.0)
            .verify(message, signature)
            .map_err(|_| jsonwebtoken::signature::Error::new())
    }
}

impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::EncodePrivateKey;
    use ring::signature::KeyPair;

    fn public_key_of(pkcs8: &[u8]) -> Vec<u8> {
        key_pair(pkcs8).unwrap().public_key().as_ref().to_vec()
    }

    fn pkcs8() -> Vec<u8> {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        secret.to_pkcs8_der().unwrap().as_bytes().to_vec()
    }

    #[test]
    fn a_ring_signature_verifies_with_rustcrypto_and_the_other_way_round() {
        let der = pkcs8();
        let key = EncodingKey::from_ec_der(&der);
        let message = b"header.payload";
        let signature = signer(&Algorithm::ES256, &key)
            .unwrap()
            .try_sign(message)
            .unwrap();
        assert_eq!(signature.len(), 64, "JWS wants r || s, 32 bytes each");

        let secret = p256::SecretKey::from_pkcs8_der(&der).unwrap();
        let public = p256::ecdsa::VerifyingKey::from(secret.public_key());
        let parsed = p256::ecdsa::Signature::from_slice(&signature).unwrap();
        assert!(public.verify(message, &parsed).is_ok());

        let theirs: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(&secret)
            .sign_recoverable(message)
            .unwrap()
            .0;
        let point = secret.public_key().to_sec1_bytes().to_vec();
        assert_eq!(point, public_key_of(&der));
        let ours = Es256Verifier(point);
        assert!(ours.verify(message, &theirs.to_vec()).is_ok());
        assert!(ours.verify(b"header.payloaD", &theirs.to_vec()).is_err());
    }

    #[test]
    fn an_rsa_key_ring_refuses_still_signs_by_rustcrypto() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let odd = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2560).unwrap();
        let der = odd.to_pkcs1_der().unwrap().as_bytes().to_vec();
        assert!(
            RsaKeyPair::from_der(&der).is_err(),
            "ring takes no 2560-bit key"
        );
        let signature = signer(&Algorithm::RS256, &EncodingKey::from_rsa_der(&der))
            .unwrap()
            .try_sign(b"header.payload")
            .unwrap();
        let public = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(odd.to_public_key());
        let parsed = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).unwrap();
        use rsa::signature::Verifier as _;
        assert!(public.verify(b"header.payload", &parsed).is_ok());
    }

    #[test]
    fn a_tampered_or_malformed_signature_is_refused() {
        let der = pkcs8();
        let signature = signer(&Algorithm::ES256, &EncodingKey::from_ec_der(&der))
            .unwrap()
            .try_sign(b"m")
            .unwrap();
        let verifier = Es256Verifier(public_key_of(&der));
        assert!(verifier.verify(b"m", &signature).is_ok());
        let mut flipped = signature.clone();
        flipped[10] ^= 1;
        assert!(verifier.verify(b"m", &flipped).is_err());
        assert!(verifier.verify(b"m", &signature[..63].to_vec()).is_err());
        assert!(verifier.verify(b"m", &Vec::new()).is_err());
        assert!(verifier.verify(b"m", &vec![0u8; 64]).is_err());
    }

    #[test]
    fn a_key_written_without_its_public_half_still_signs() {
        // RFC 5915 makes the public key optional and some tools leave it out; ring alone refuses
        // such a key. PKCS#8 around an ECPrivateKey with only the version and the private scalar:
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let mut der = vec![
            0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
            0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27,
            0x30, 0x25, 0x02, 0x01, 0x01, 0x04, 0x20,
        ];
        der.extend_from_slice(&secret.to_bytes());
        let rng = SystemRandom::new();
        assert!(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).is_err());
        let pair = parse_key_pair(&der).unwrap();
        assert_eq!(
            pair.public_key().as_ref(),
            secret.public_key().to_sec1_bytes().as_ref()
        );
        assert!(parse_key_pair(b"not a key").is_err());
    }
}
