//! Opaque credentials (codes, refresh tokens, state): 256 bits from the OS RNG, kept only as SHA-256.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// SHA-256 of an opaque credential: what storage keys on, so a storage leak yields nothing usable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub(crate) fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// base64url, for keys that must be text.
    pub(crate) fn to_base64(self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A short prefix is enough to tell hashes apart in a test failure.
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A fresh random credential (base64url of 32 random bytes) and its hash.
pub fn generate_token<T: From<String>>() -> (T, TokenHash) {
    let token = random_string(32);
    let hash = TokenHash::of(&token);
    (T::from(token), hash)
}

/// base64url of `bytes` random bytes; for identifiers that are not secrets too (jti, family ids).
pub fn random_string(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buffer);
    URL_SAFE_NO_PAD.encode(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_256_bits_and_are_distinct() {
        let (a, hash_a): (String, _) = generate_token();
        let (b, _): (String, _) = generate_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_ne!(a, b);
        assert_eq!(TokenHash::of(&a), hash_a);
        assert!(!format!("{hash_a:?}").contains(&a));
    }
}
