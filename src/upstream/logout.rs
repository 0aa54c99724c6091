//! The claims of a back-channel logout token (OpenID Connect Back-Channel Logout 1.0 §2.4,
//! §2.6), checked once its signature by the provider is: who it comes from and is for, when, that
//! it is a logout event (and not an ID token passed off as one), and which session it ends.

use serde_json::Value;

use crate::clock::UnixTime;

/// The member of `events` that makes a JWT a logout token (§2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Clocks of the provider and the bridge drift apart a little.
const LEEWAY_SECONDS: i64 = 60;
/// A logout token is sent as soon as it is made: one older than this is a replay, however
/// long the provider let it live.
const MAX_AGE_SECONDS: i64 = 600;
const MAX_JTI_BYTES: usize = 256;
/// OIDC Core caps `sub` at 255 ASCII characters; `sid` has no cap, this is ample.
const MAX_ID_BYTES: usize = 1024;

/// A logout token that passed every check: the provider session it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// The provider's `sub`.
    pub subject: Option<String>,
    /// The provider's `sid`.
    pub session_id: Option<String>,
    pub jti: String,
    /// Until when the `jti` must be remembered.
    pub expires_at: UnixTime,
}

/// Why a logout token is refused: said to the provider (`400 invalid_request`) and in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LogoutRefused(pub &'static str);

/// Who a logout token says it comes from and is for (`iss`, `aud`), read without verifying
/// anything: with several providers, only to know whose keys and rules verify it.
pub(crate) fn addressed(token: &str) -> Option<(String, Vec<String>)> {
    if token.len() > crate::oauth::client_assertion::MAX_ASSERTION_BYTES {
        return None;
    }
    let claims: Value = jsonwebtoken::dangerous::insecure_decode(token).ok()?.claims;
    let issuer = claims.get("iss")?.as_str()?.to_owned();
    let audiences = match claims.get("aud")? {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => return None,
    };
    Some((issuer, audiences))
}

/// Its `typ`, when it has one, must not name another kind of JWT (§4.1, cross-JWT confusion):
/// `logout+jwt` or the generic `JWT`.
pub(crate) fn check_type(typ: Option<&str>) -> Result<(), LogoutRefused> {
    let Some(typ) = typ else {
        return Ok(());
    };
    let typ = typ.to_ascii_lowercase();
    match typ.strip_prefix("application/").unwrap_or(&typ) {
        "logout+jwt" | "jwt" => Ok(()),
        _ => Err(LogoutRefused("the token's typ is not logout+jwt")),
    }
}

/// §2.6 steps 4 to 7 and the `jti`: the claims of a logout token from `issuer` for our
/// `client_id`, at `now`.
pub(crate) fn check_claims(
    claims: &Value,
    issuer: &str,
    client_id: &str,
    now: UnixTime,
) -> Result<LogoutRequest, LogoutRefused> {
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(LogoutRefused("the token's iss is not the provider"));
    }
    // As for an ID token: the bridge alone, not one among other audiences it does not know.
    let for_us = match claims.get("aud") {
        Some(Value::String(aud)) => aud == client_id,
        Some(Value::Array(auds)) => {
            matches!(auds.as_slice(), [only] if only.as_str() == Some(client_id))
        }
        _ => false,
    };
    if !for_us {
        return Err(LogoutRefused(
            "the token's aud is not the bridge's client id",
        ));
    }
    let time = |name: &str| claims.get(name).and_then(Value::as_i64);
    let now = now.seconds();
    let iat = time("iat").ok_or(LogoutRefused("the token has no iat"))?;
    if iat > now + LEEWAY_SECONDS || iat < now - MAX_AGE_SECONDS {
        return Err(LogoutRefused("the token's iat is not recent"));
    }
    let exp = time("exp").ok_or(LogoutRefused("the token has no exp"))?;
    if exp <= now - LEEWAY_SECONDS {
        return Err(LogoutRefused("the token has expired"));
    }
    let is_logout = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|events| events.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !is_logout {
        return Err(LogoutRefused(
            "the token's events claim holds no back-channel logout event",
        ));
    }
    if claims.get("nonce").is_some() {
        return Err(LogoutRefused("a logout token has no nonce"));
    }
    let id = |name: &str| -> Result<Option<String>, LogoutRefused> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::String(value))
                if !value.is_empty()
                    && value.len() <= MAX_ID_BYTES
                    && !value.chars().any(char::is_control) =>
            {
                Ok(Some(value.clone()))
            }
            Some(_) => Err(LogoutRefused("the token's sub or sid is malformed")),
        }
    };
    let (subject, session_id) = (id("sub")?, id("sid")?);
    if subject.is_none() && session_id.is_none() {
        return Err(LogoutRefused("the token names neither sub nor sid"));
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|jti| !jti.is_empty() && jti.len() <= MAX_JTI_BYTES)
        .ok_or(LogoutRefused("the token needs a jti of at most 256 bytes"))?;
    Ok(LogoutRequest {
        subject,
        session_id,
        jti: jti.to_owned(),
        // Remembered until it would be refused anyway: expired, or too old.
        expires_at: UnixTime(exp.min(iat + MAX_AGE_SECONDS) + LEEWAY_SECONDS),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://idp.example.com/realms/corp";
    const NOW: UnixTime = UnixTime(1_700_000_000);

    fn token() -> Value {
        json!({
            "iss": ISSUER, "aud": "bridge", "iat": NOW.0 - 5, "exp": NOW.0 + 115, "jti": "j-1",
            "sub": "user-1", "sid": "session-1",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        })
    }

    fn refusal(change: impl FnOnce(&mut Value)) -> &'static str {
        let mut claims = token();
        change(&mut claims);
        check_claims(&claims, ISSUER, "bridge", NOW).unwrap_err().0
    }

    /// An unsigned JWT of `claims`: `addressed` reads claims and nothing else.
    fn unsigned(claims: &Value) -> String {
        use base64::Engine;
        let encode = |value: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        format!(
            "{}.{}.c2lnbmF0dXJl",
            encode(&json!({"alg": "RS256", "typ": "logout+jwt"})),
            encode(claims)
        )
    }

    #[test]
    fn who_a_logout_token_says_it_is_from_and_for_is_read_without_trusting_it() {
        let (issuer, audiences) = addressed(&unsigned(&token())).unwrap();
        assert_eq!(issuer, ISSUER);
        assert_eq!(audiences, ["bridge"]);
        let mut several = token();
        several["aud"] = json!(["other", "bridge", 7]);
        assert_eq!(
            addressed(&unsigned(&several)).unwrap().1,
            ["other", "bridge"]
        );
        for change in [
            |c: &mut Value| c["aud"] = json!({"bridge": true}),
            |c: &mut Value| c["iss"] = json!(7),
            |c: &mut Value| {
                c.as_object_mut().unwrap().remove("aud");
            },
            |c: &mut Value| {
                c.as_object_mut().unwrap().remove("iss");
            },
        ] {
            let mut claims = token();
            change(&mut claims);
            assert_eq!(addressed(&unsigned(&claims)), None, "{claims}");
        }
        assert_eq!(addressed("not a jwt"), None);
        let oversized = format!("{}{}", unsigned(&token()), "A".repeat(20_000));
        assert_eq!(addressed(&oversized), None);
    }

    #[test]
    fn a_logout_token_names_the_session_it_ends() {
        let request = check_claims(&token(), ISSUER, "bridge", NOW).unwrap();
        assert_eq!(request.subject.as_deref(), Some("user-1"));
        assert_eq!(request.session_id.as_deref(), Some("session-1"));
        assert_eq!(request.jti, "j-1");
        assert_eq!(request.expires_at, UnixTime(NOW.0 + 115 + 60));
        let mut several = token();
        several["aud"] = json!(["bridge"]);
        several.as_object_mut().unwrap().remove("sid");
        let request = check_claims(&several, ISSUER, "bridge", NOW).unwrap();
        assert_eq!(request.session_id, None);
    }

    #[test]
    fn every_rule_of_section_2_6_refuses_a_token_that_breaks_it() {
        assert!(refusal(|c| c["iss"] = json!("https://evil.example")).contains("iss"));
        assert!(refusal(|c| c["aud"] = json!("someone-else")).contains("aud"));
        assert!(refusal(|c| c["aud"] = json!(["a", "b"])).contains("aud"));
        assert!(refusal(|c| c["aud"] = json!(["bridge", "other"])).contains("aud"));
        assert!(refusal(|c| c["iat"] = json!(NOW.0 + 3600)).contains("iat"));
        assert!(refusal(|c| c["iat"] = json!(NOW.0 - 3600)).contains("iat"));
        assert!(refusal(|c| c["iat"] = json!("now")).contains("iat"));
        assert!(refusal(|c| c["exp"] = json!(NOW.0 - 120)).contains("expired"));
        assert!(
            refusal(|c| {
                c.as_object_mut().unwrap().remove("exp");
            })
            .contains("exp")
        );
        // An ID token is no logout token: no event, and a nonce.
        assert!(refusal(|c| c["events"] = json!({})).contains("events"));
        assert!(
            refusal(|c| c["events"] = json!({BACKCHANNEL_LOGOUT_EVENT: true})).contains("events")
        );
        assert!(refusal(|c| c["events"] = json!([BACKCHANNEL_LOGOUT_EVENT])).contains("events"));
        assert!(refusal(|c| c["nonce"] = json!("n")).contains("nonce"));
        assert!(
            refusal(|c| {
                let claims = c.as_object_mut().unwrap();
                claims.remove("sub");
                claims.remove("sid");
            })
            .contains("neither")
        );
        assert!(refusal(|c| c["sid"] = json!(42)).contains("malformed"));
        assert!(refusal(|c| c["sub"] = json!("")).contains("malformed"));
        assert!(refusal(|c| c["sub"] = json!("a\nb")).contains("malformed"));
        assert!(refusal(|c| c["jti"] = json!("")).contains("jti"));
        assert!(refusal(|c| c["jti"] = json!("j".repeat(257))).contains("jti"));
    }

    #[test]
    fn only_a_logout_or_generic_type_is_taken() {
        for typ in [
            None,
            Some("logout+jwt"),
            Some("application/logout+jwt"),
            Some("JWT"),
        ] {
            assert!(check_type(typ).is_ok(), "{typ:?}");
        }
        for typ in ["at+jwt", "oauth-id-jag+jwt", "secevent+jwt", ""] {
            assert!(check_type(Some(typ)).is_err(), "{typ}");
        }
    }
}
