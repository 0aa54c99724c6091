//! Secrets as newtypes: redacted `Debug`, no `Display`, constant-time comparison.

use serde::{Deserialize, Deserializer, Serialize};
use subtle::ConstantTimeEq;

/// A secret string (client secret, upstream credential, signing key) that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}

/// A credential that travels as text: (de)serialised as the plain string it is (records and
/// responses keep their shape), shown by `expose` only, never by `Debug`, and of its own type so
/// that one kind cannot be passed where another is expected.
macro_rules! credential {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub(crate) fn new(value: impl Into<String>) -> Self {
                $name(value.into())
            }

            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                $name(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                $name::new(value)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

credential!(
    /// A one-time value the bridge keeps only to finish a flow it started (the PKCE verifier and
    /// the nonce of a sign-in at the provider): stored with the flow, never printed.
    FlowSecret
);

credential!(
    /// An authorization code we issued (RFC 6749 §4.1.2): travels once to the client, is stored
    /// only as its hash.
    AuthorizationCode
);

credential!(
    /// A refresh token we issued (RFC 6749 §1.5): handed to the client, stored only as its hash.
    RefreshToken
);

credential!(
    /// The PKCE `code_verifier` a client presents at the token endpoint (RFC 7636 §4.5).
    CodeVerifier
);

/// Secret bytes shared through storage (the cookie key, a generated signing key): never printed,
/// read only through `expose`, compared in constant time.
#[derive(Clone)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(value: Vec<u8>) -> Self {
        SecretBytes(value)
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for SecretBytes {}

impl<const N: usize> PartialEq<&[u8; N]> for SecretBytes {
    fn eq(&self, other: &&[u8; N]) -> bool {
        constant_time_eq(&self.0, other.as_slice())
    }
}

/// Compares two byte strings without leaking, through timing, where they first differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_secret_is_stored_as_plain_text_but_never_printed() {
        let verifier = FlowSecret::new("verifier-0123456789");
        assert!(!format!("{verifier:?}").contains("0123456789"));
        // Stored as the string it was before it had a type: records written earlier still read.
        let stored = serde_json::to_string(&verifier).unwrap();
        assert_eq!(stored, "\"verifier-0123456789\"");
        let read: FlowSecret = serde_json::from_str(&stored).unwrap();
        assert_eq!(read.expose(), "verifier-0123456789");
    }

    #[test]
    fn no_credential_prints_itself() {
        let code = AuthorizationCode::new("code-0123456789");
        let refresh = RefreshToken::new("refresh-0123456789");
        let verifier = CodeVerifier::new("verifier-0123456789");
        for printed in [
            format!("{code:?}"),
            format!("{refresh:?}"),
            format!("{verifier:?}"),
        ] {
            assert!(!printed.contains("0123456789"), "{printed}");
            assert!(printed.ends_with("(<redacted>)"), "{printed}");
        }
        assert_eq!(format!("{refresh:?}"), "RefreshToken(<redacted>)");
        // A response or record holds the plain string, as before the types existed.
        assert_eq!(
            serde_json::to_string(&Some(refresh)).unwrap(),
            "\"refresh-0123456789\""
        );
    }

    #[test]
    fn secret_bytes_never_print_and_compare_by_content() {
        let key = SecretBytes::from(b"cookie-key-0123456789".to_vec());
        assert_eq!(format!("{key:?}"), "SecretBytes(<redacted>)");
        assert_eq!(key, b"cookie-key-0123456789");
        assert_ne!(key, SecretBytes::from(b"cookie-key-0123456788".to_vec()));
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let secret = SecretString::new("hunter2-very-secret");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
