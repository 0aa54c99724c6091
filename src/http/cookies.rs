//! Cookies: the per-flow binding of a sign-in to its browser, and signed cookies for consent.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::clock::UnixTime;
use crate::secret::constant_time_eq;

/// Over https the `__Host-` prefix pins the cookie to this exact host (no `Domain`, `Path=/`,
/// `Secure`), so a sibling subdomain cannot plant one of its own.
pub(crate) fn host_only_name(state: &AppState, name: &str) -> String {
    if state.secure_cookies {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

/// A short, stable tag of a value for a cookie name (not a secret).
pub(crate) fn tag(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn set(
    response: &mut Response,
    state: &AppState,
    name: &str,
    value: &str,
    max_age: Duration,
) {
    append(
        response,
        state,
        &format!("{name}={value}; Max-Age={}", max_age.as_secs()),
    );
}

pub(crate) fn clear(response: &mut Response, state: &AppState, name: &str) {
    append(response, state, &format!("{name}=; Max-Age=0"));
}

fn append(response: &mut Response, state: &AppState, cookie: &str) {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    // Lax: the cookie must come along on the top-level redirect back from the provider.
    let full = format!("{cookie}; Path=/; HttpOnly; SameSite=Lax{secure}");
    if let Ok(value) = HeaderValue::from_str(&full) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub(crate) fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// What a signed cookie asserts: for `purpose`, about `client_id`, the `value`, until `expires`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Signed {
    purpose: String,
    client_id: String,
    value: String,
    expires: i64,
}

/// The stored cookie key has another length than 32 bytes (a damaged row, or not ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cookie key is {0} bytes, not 32")]
pub(crate) struct CookieKeyLength(pub usize);

/// HMAC-SHA256 signatures for cookies, under a key that lives as long as the process.
pub(crate) struct CookieSigner {
    key: [u8; 32],
}

impl CookieSigner {
    #[cfg(test)]
    pub(crate) fn generate() -> Self {
        CookieSigner {
            key: Self::fresh_key(),
        }
    }

    pub(crate) fn fresh_key() -> [u8; 32] {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        key
    }

    /// A signer on a key shared by every instance (kept in storage).
    pub(crate) fn from_key(key: &[u8]) -> Result<Self, CookieKeyLength> {
        let key: [u8; 32] = key.try_into().map_err(|_| CookieKeyLength(key.len()))?;
        Ok(CookieSigner { key })
    }

    /// None only if the MAC cannot be keyed, which makes every cookie invalid (fails closed).
    fn mac(&self, payload: &str) -> Option<Vec<u8>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        mac.update(payload.as_bytes());
        Some(mac.finalize().into_bytes().to_vec())
    }

    pub(crate) fn sign(
        &self,
        purpose: &str,
        client_id: &str,
        value: &str,
        expires: UnixTime,
    ) -> String {
        let signed = Signed {
            purpose: purpose.to_owned(),
            client_id: client_id.to_owned(),
            value: value.to_owned(),
            expires: expires.seconds(),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&signed).unwrap_or_default());
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&payload).unwrap_or_default());
        format!("{payload}.{mac}")
    }

    /// The value of a cookie signed by us, for this purpose and client, not yet expired.
    pub(crate) fn verify(
        &self,
        cookie: &str,
        purpose: &str,
        client_id: &str,
        now: UnixTime,
    ) -> Option<String> {
        let (payload, mac) = cookie.split_once('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        if !constant_time_eq(&mac, &self.mac(payload)?) {
            return None;
        }
        let signed: Signed = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (signed.purpose == purpose
            && signed.client_id == client_id
            && signed.expires > now.seconds())
        .then_some(signed.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_cookies_verify_only_for_their_purpose_client_and_lifetime() {
        let signer = CookieSigner::generate();
        let cookie = signer.sign("remember", "client-a", "user-1", UnixTime(200));
        assert_eq!(
            signer
                .verify(&cookie, "remember", "client-a", UnixTime(100))
                .as_deref(),
            Some("user-1")
        );
        assert_eq!(
            signer.verify(&cookie, "consent", "client-a", UnixTime(100)),
            None
        );
        assert_eq!(
            signer.verify(&cookie, "remember", "client-b", UnixTime(100)),
            None
        );
        assert_eq!(
            signer.verify(&cookie, "remember", "client-a", UnixTime(200)),
            None
        );
        assert_eq!(
            CookieSigner::generate().verify(&cookie, "remember", "client-a", UnixTime(100)),
            None
        );
        let (payload, mac) = cookie.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Signed {
                purpose: "remember".into(),
                client_id: "client-a".into(),
                value: "admin".into(),
                expires: 999,
            })
            .unwrap(),
        );
        assert_ne!(payload, forged);
        assert_eq!(
            signer.verify(
                &format!("{forged}.{mac}"),
                "remember",
                "client-a",
                UnixTime(100)
            ),
            None
        );
    }

    mod properties {
        use super::*;
        use axum::http::HeaderValue;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_cookie_header_is_read_or_ignored(raw in "[ -~]{0,200}", name in "[a-z_]{1,12}") {
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_str(&raw) {
                    headers.insert(header::COOKIE, value);
                }
                let _ = read(&headers, &name);
            }

            #[test]
            fn only_what_we_signed_verifies(
                forged in "[ -~]{0,120}", value in "\\PC{0,40}", client in "[a-z-]{1,12}"
            ) {
                let signer = CookieSigner::generate();
                let now = UnixTime(1_000);
                prop_assert_eq!(signer.verify(&forged, "remember", &client, now), None);
                let signed = signer.sign("remember", &client, &value, UnixTime(2_000));
                prop_assert_eq!(signer.verify(&signed, "remember", &client, now), Some(value));
                let mut tampered = signed.into_bytes();
                let last = tampered.len() - 1;
                tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
                let tampered = String::from_utf8(tampered).unwrap();
                prop_assert_eq!(signer.verify(&tampered, "remember", &client, now), None);
            }
        }
    }
}
