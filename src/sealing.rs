//! Encryption at rest for the few secrets the bridge must keep readable (its shared signing and
//! cookie keys), with AES-256-GCM under `storage.encryption_key`. The key is derived from the
//! configured string with SHA-256, so any long random string will do; each value gets a fresh
//! nonce, and its name is bound in as associated data, so a sealed value moved to another row
//! does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::secret::SecretString;

const NONCE_BYTES: usize = 12;

/// Why a value could not be sealed or opened; each names the value, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("cannot encrypt {name}")]
    Encrypt { name: String },
    #[error("{name}: the stored value is too short to be sealed")]
    TooShort { name: String },
    #[error(
        "{name}: cannot decrypt it; storage.encryption_key differs from the one it was stored with"
    )]
    WrongKey { name: String },
    #[error("{name}: the stored value is not base64")]
    NotBase64 { name: String },
    #[error("{name}: the stored value is not text")]
    NotText { name: String },
    #[error("{name}: the stored value opens, but not to what was sealed there")]
    Malformed { name: String },
}

pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key redacted>)")
    }
}

impl Sealer {
    pub(crate) fn new(key: &SecretString) -> Self {
        let digest = Sha256::digest(
            [
                b"mcp-oauth-bridge sealing key:".as_slice(),
                key.expose().as_bytes(),
            ]
            .concat(),
        );
        Sealer {
            cipher: Aes256Gcm::new(&digest),
        }
    }

    /// `nonce || ciphertext+tag`.
    pub(crate) fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SealError::Encrypt {
                name: name.to_owned(),
            })?;
        Ok([nonce.as_slice(), &ciphertext].concat())
    }

    pub(crate) fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() <= NONCE_BYTES {
            return Err(SealError::TooShort {
                name: name.to_owned(),
            });
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SealError::WrongKey {
                name: name.to_owned(),
            })
    }
}

/// A secret sealed for storage in a JSON record: base64 of `nonce || ciphertext+tag`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedSecret(String);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedSecret(..)")
    }
}

impl SealedSecret {
    /// The stored text (base64 of the sealed bytes; nothing readable).
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Back from the text `as_str` gave, as a store that keeps its own form hands it back.
    pub(crate) fn from_stored(text: &str) -> Self {
        SealedSecret(text.to_owned())
    }
}

impl Sealer {
    pub(crate) fn seal_secret(
        &self,
        name: &str,
        secret: &SecretString,
    ) -> Result<SealedSecret, SealError> {
        self.seal(name, secret.expose().as_bytes())
            .map(|sealed| SealedSecret(STANDARD.encode(sealed)))
    }

    pub(crate) fn open_secret(
        &self,
        name: &str,
        sealed: &SealedSecret,
    ) -> Result<SecretString, SealError> {
        let bytes = STANDARD
            .decode(&sealed.0)
            .map_err(|_| SealError::NotBase64 {
                name: name.to_owned(),
            })?;
        let plain = self.open(name, &bytes)?;
        String::from_utf8(plain)
            .map(SecretString::new)
            .map_err(|_| SealError::NotText {
                name: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_the_same_key_and_name_only() {
        let sealer = Sealer::new(&SecretString::new(
            "a long random string of at least 32 chars",
        ));
        let sealed = sealer.seal("cookie-key", b"secret bytes").unwrap();
        assert!(!sealed.windows(12).any(|w| w == b"secret bytes"));
        assert_eq!(sealer.open("cookie-key", &sealed).unwrap(), b"secret bytes");
        assert_ne!(
            sealed,
            sealer.seal("cookie-key", b"secret bytes").unwrap(),
            "fresh nonce"
        );
        assert!(
            sealer.open("signing-key", &sealed).is_err(),
            "bound to its name"
        );
        let other = Sealer::new(&SecretString::new("another long random string, 32+ chars"));
        assert!(
            other
                .open("cookie-key", &sealed)
                .unwrap_err()
                .to_string()
                .contains("encryption_key differs")
        );
        assert!(sealer.open("cookie-key", &sealed[..5]).is_err());
    }

    #[test]
    fn sealed_secrets_round_trip_as_text_and_never_show_their_content() {
        let sealer = Sealer::new(&SecretString::new(
            "a long random string of at least 32 chars",
        ));
        let sealed = sealer
            .seal_secret("upstream/f1", &SecretString::new("upstream-refresh"))
            .unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains("upstream-refresh"));
        assert_eq!(format!("{sealed:?}"), "SealedSecret(..)");
        let back: SealedSecret = serde_json::from_str(&json).unwrap();
        assert_eq!(
            sealer.open_secret("upstream/f1", &back).unwrap().expose(),
            "upstream-refresh"
        );
        assert!(sealer.open_secret("upstream/f2", &back).is_err());
    }
}
