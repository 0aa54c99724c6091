//! PKCE (RFC 7636) with S256 only: `plain` and a missing method are refused (OAuth 2.1 §4.1.1).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::error::OAuthError;
use crate::secret::constant_time_eq;

/// Length of base64url(SHA-256(..)) without padding: the only shape an S256 challenge can have.
const S256_CHALLENGE_LEN: usize = 43;

/// Checks the challenge sent to /authorize (RFC 7636 §4.3).
pub(crate) fn validate_challenge(
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<String, OAuthError> {
    let challenge = challenge
        .ok_or_else(|| OAuthError::invalid_request("code_challenge is required (PKCE)"))?;
    match method {
        Some("S256") => {}
        Some("plain") => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method plain is not allowed; use S256",
            ));
        }
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method must be S256",
            ));
        }
        // RFC 7636 defaults a missing method to `plain`, which we do not accept.
        None => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method is required and must be S256",
            ));
        }
    }
    if challenge.len() != S256_CHALLENGE_LEN || !challenge.bytes().all(is_base64url_byte) {
        return Err(OAuthError::invalid_request(
            "code_challenge is not a base64url SHA-256 value",
        ));
    }
    Ok(challenge.to_owned())
}

/// Checks the verifier sent to /token against the stored challenge (RFC 7636 §4.6).
pub(crate) fn verify(verifier: Option<&str>, challenge: &str) -> Result<(), OAuthError> {
    let verifier =
        verifier.ok_or_else(|| OAuthError::invalid_request("code_verifier is required"))?;
    if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(is_unreserved_byte) {
        return Err(OAuthError::invalid_request(
            "code_verifier must be 43-128 unreserved characters",
        ));
    }
    if constant_time_eq(s256(verifier).as_bytes(), challenge.as_bytes()) {
        Ok(())
    } else {
        Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ))
    }
}

pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn is_base64url_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_unreserved_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_example_verifies() {
        assert_eq!(s256(VERIFIER), CHALLENGE);
        verify(Some(VERIFIER), CHALLENGE).unwrap();
    }

    #[test]
    fn wrong_verifier_is_invalid_grant() {
        let other = "aBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            verify(Some(other), CHALLENGE).unwrap_err().code(),
            "invalid_grant"
        );
    }

    #[test]
    fn missing_or_malformed_verifier_is_invalid_request() {
        assert_eq!(
            verify(None, CHALLENGE).unwrap_err().code(),
            "invalid_request"
        );
        assert_eq!(
            verify(Some("short"), CHALLENGE).unwrap_err().code(),
            "invalid_request"
        );
        let bad_chars = format!("{}!", &VERIFIER[..43]);
        assert_eq!(
            verify(Some(&bad_chars), CHALLENGE).unwrap_err().code(),
            "invalid_request"
        );
        let too_long = "a".repeat(129);
        assert_eq!(
            verify(Some(&too_long), CHALLENGE).unwrap_err().code(),
            "invalid_request"
        );
    }

    #[test]
    fn plain_method_is_refused() {
        let err = validate_challenge(Some(CHALLENGE), Some("plain")).unwrap_err();
        assert_eq!(
            err,
            OAuthError::invalid_request("code_challenge_method plain is not allowed; use S256")
        );
    }

    #[test]
    fn missing_method_or_challenge_is_refused() {
        assert_eq!(
            validate_challenge(Some(CHALLENGE), None)
                .unwrap_err()
                .code(),
            "invalid_request"
        );
        assert_eq!(
            validate_challenge(None, Some("S256")).unwrap_err().code(),
            "invalid_request"
        );
        assert_eq!(
            validate_challenge(Some(CHALLENGE), Some("s256"))
                .unwrap_err()
                .code(),
            "invalid_request"
        );
    }

    #[test]
    fn malformed_challenge_is_refused() {
        assert!(validate_challenge(Some("abc"), Some("S256")).is_err());
        let bad = format!("{}=", &CHALLENGE[..42]);
        assert!(validate_challenge(Some(&bad), Some("S256")).is_err());
        assert_eq!(
            validate_challenge(Some(CHALLENGE), Some("S256")).unwrap(),
            CHALLENGE
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn only_the_verifier_of_the_challenge_passes(
                challenge in ".{0,60}", method in ".{0,8}", verifier in "[A-Za-z0-9._~-]{43,128}"
            ) {
                let _ = validate_challenge(Some(&challenge), Some(&method));
                prop_assert!(verify(Some(&verifier), &s256(&verifier)).is_ok());
                let other = format!("{verifier}x");
                prop_assert!(verify(Some(&other), &s256(&verifier)).is_err());
                let _ = verify(Some(&challenge), &challenge);
            }
        }
    }
}
