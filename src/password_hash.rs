//! bcrypt, the one way the bridge stores and checks a secret: client secrets (configured or
//! issued at registration) and local users' passwords alike.
//!
//! bcrypt reads only the first 72 bytes of what it hashes, so two longer secrets sharing a
//! prefix would be one. A longer secret is therefore refused when hashed and never matches when
//! checked; the check still spends a bcrypt's time so that the length does not show.

use std::ops::RangeInclusive;

use crate::secret::SecretString;

pub(crate) const MAX_SECRET_BYTES: usize = 72;
/// Costs a configured hash may have: below 4 bcrypt refuses, above 16 one check takes seconds.
pub(crate) const COSTS: RangeInclusive<u32> = 4..=16;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("secrets longer than {MAX_SECRET_BYTES} bytes cannot be bcrypt-hashed safely")]
    TooLong,
    #[error("cannot hash the secret")]
    Bcrypt(#[source] bcrypt::BcryptError),
}

/// A new hash of `secret`. Slow by design: call it off the async runtime.
pub fn hash(secret: &SecretString, cost: u32) -> Result<String, HashError> {
    if secret.expose().len() > MAX_SECRET_BYTES {
        return Err(HashError::TooLong);
    }
    // Not `non_truncating_hash`: it counts bcrypt's terminating NUL and so refuses a secret of
    // exactly 72 bytes, which bcrypt does read whole; the length was checked above.
    bcrypt::hash(secret.expose(), cost).map_err(HashError::Bcrypt)
}

/// Whether `secret` is the one `hash` was made from; false for a malformed hash. Slow by design:
/// call it off the async runtime.
pub(crate) fn verify(secret: &SecretString, hash: &str) -> bool {
    if secret.expose().len() > MAX_SECRET_BYTES {
        // Spend the time all the same, then fail: such a secret can never have been stored.
        let _ = bcrypt::verify("x", hash);
        return false;
    }
    bcrypt::verify(secret.expose(), hash).unwrap_or(false)
}

/// `$2a$`, `$2b$` or `$2y$`, a two-digit cost, then 53 characters of salt and hash.
pub(crate) fn is_bcrypt_hash(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 60
        && matches!(&bytes[..4], b"$2a$" | b"$2b$" | b"$2y$")
        && bytes[4].is_ascii_digit()
        && bytes[5].is_ascii_digit()
        && bytes[6] == b'$'
        && bytes[7..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'/')
}

/// The cost of a hash `is_bcrypt_hash` accepted.
pub(crate) fn cost_of(hash: &str) -> u32 {
    let bytes = hash.as_bytes();
    match (bytes.get(4), bytes.get(5)) {
        (Some(tens), Some(units)) if tens.is_ascii_digit() && units.is_ascii_digit() => {
            u32::from(tens - b'0') * 10 + u32::from(units - b'0')
        }
        _ => 0,
    }
}

/// What an unknown client id or username is checked against, so that it costs the same bcrypt as
/// a real one and the answer's timing tells nothing. One hash per cost, of random secrets nobody
/// kept: a constant, not computed at start (a cost-12 hash alone took ≈ 235 ms of start-up), and
/// no answer ever depends on whether it matches.
const DUMMY_HASHES: [&str; 13] = [
    "$2b$04$YeMfcsiO8GAZm/uuUHdfsOOzG1TUFM.b1fzN2bFEIN.ZCf2rKCobi",
    "$2b$05$bMqvogeS5J89paziMMSCJ.fUGKs27JxJtJ0oovNZCW65uFBGLI1tG",
    "$2b$06$B500WsL2jtqfnIbZsDa0/uXAZl1z2clBmvVaEMuiNJ1MWMEsK5TKO",
    "$2b$07$mZcN8LGdm25N.9vnYzlbQ.hGeGbTcFygPtE51pG8YtVelgU9NgVBi",
    "$2b$08$huQWniqjnSlTzXKRBBV5.eGFObrawI/udT1wzcii0qW5XS0eHaurq",
    "$2b$09$9vFs65YrHCoymShw6d8MxexSJ/aReyYMvKvRypkNcukoU349Uw0Am",
    "$2b$10$rcwCKJSLG9fMX1C4qTDf0ub.rwzrmEAXgzdgs8pzq.D3lCXCSadUm",
    "$2b$11$97k/3tIAgSFdUR9xQVH1Q.wfiPqRGKUgLs/xewZ34WvQ8PJHcuGFO",
    "$2b$12$7g8THdQ39NqiFhrxUeyGnuVY6HK30GNypShXOErvi.BncHOLA0hqC",
    "$2b$13$WH1IrLJYxFo0/XjELOfOf.4Ol01C0Nod4V.9Z8Qu7vPWa8gsVH.fC",
    "$2b$14$lm6Hg0VRfG75BNMiKoNHsuEFu/PdFIbMu8OO6YRs6vTmI6kipWDGW",
    "$2b$15$uB8EFshpSymlAGLXe4Xok.WmCbWtNAJivzu3K7n8X/v8ewAdXGGPO",
    "$2b$16$j/AFXteNYBsFXzh0yd8R0OXBJqXDWh8BASTbrp8Ys5yM2AuqaYEzi",
];

/// The dummy hash of `cost` (clamped to `COSTS`).
pub(crate) fn dummy_hash(cost: u32) -> &'static str {
    let cost = cost.clamp(*COSTS.start(), *COSTS.end());
    let index = usize::try_from(cost - COSTS.start()).unwrap_or(0);
    DUMMY_HASHES.get(index).copied().unwrap_or(DUMMY_HASHES[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_is_a_dummy_hash_of_every_cost_and_it_is_a_bcrypt_hash() {
        for cost in COSTS {
            let hash = dummy_hash(cost);
            assert!(is_bcrypt_hash(hash), "{hash}");
            assert_eq!(cost_of(hash), cost);
        }
        assert_eq!(cost_of(dummy_hash(99)), 16);
        // Checking it costs what a real check costs: the secret is simply not the one it holds.
        assert!(!verify(&SecretString::new("guess"), dummy_hash(4)));
    }

    const COST: u32 = 4;

    fn secret(text: &str) -> SecretString {
        SecretString::new(text)
    }

    #[test]
    fn a_secret_matches_its_own_hash_only() {
        let stored = hash(&secret("correct horse"), COST).unwrap();
        assert!(is_bcrypt_hash(&stored));
        assert_eq!(cost_of(&stored), COST);
        assert!(verify(&secret("correct horse"), &stored));
        assert!(!verify(&secret("correct horse "), &stored));
        assert!(!verify(&secret("correct horse"), "not a hash"));
    }

    #[test]
    fn a_secret_of_72_bytes_is_read_whole_and_a_longer_one_never_hashed_nor_matched() {
        let prefix = "p".repeat(MAX_SECRET_BYTES);
        let longer = format!("{prefix}-and-whatever-follows");
        assert!(matches!(
            hash(&secret(&longer), COST),
            Err(HashError::TooLong)
        ));
        // bcrypt itself would call these equal: it reads 72 bytes.
        let stored = hash(&secret(&prefix), COST).unwrap();
        assert!(bcrypt::verify(&longer, &stored).unwrap());
        assert!(verify(&secret(&prefix), &stored));
        assert!(!verify(&secret(&prefix[1..]), &stored));
        assert!(!verify(&secret(&longer), &stored));
    }
}
