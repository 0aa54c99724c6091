//! Scope parsing and resolution (RFC 6749 §3.3).

use super::error::OAuthError;

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`
pub(crate) fn is_valid_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// Splits a scope parameter into distinct tokens, keeping the client's order.
pub(crate) fn parse(scope: &str) -> Result<Vec<String>, OAuthError> {
    let mut tokens: Vec<String> = Vec::new();
    for token in scope.split(' ').filter(|t| !t.is_empty()) {
        if !is_valid_scope_token(token) {
            return Err(OAuthError::InvalidScope(
                "scope contains an invalid character".into(),
            ));
        }
        if !tokens.iter().any(|t| t == token) {
            tokens.push(token.to_owned());
        }
    }
    Ok(tokens)
}

/// The scope a request gets: what it asked for, all within `allowed`; with no request, all of `allowed`.
pub(crate) fn resolve(
    requested: Option<&str>,
    allowed: &[String],
) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(allowed.to_vec());
    };
    let tokens = parse(requested)?;
    if let Some(unknown) = tokens.iter().find(|t| !allowed.contains(t)) {
        return Err(OAuthError::InvalidScope(
            format!(
                "scope {:?} is not allowed for this client",
                super::text::for_log(unknown)
            )
            .into(),
        ));
    }
    Ok(tokens)
}

pub(crate) fn join(scope: &[String]) -> String {
    scope.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["openid".into(), "email".into(), "mcp:tools".into()]
    }

    #[test]
    fn missing_scope_gets_everything_allowed() {
        assert_eq!(resolve(None, &allowed()).unwrap(), allowed());
    }

    #[test]
    fn requested_subset_is_kept_in_order_without_duplicates() {
        assert_eq!(
            resolve(Some("mcp:tools  openid mcp:tools"), &allowed()).unwrap(),
            vec!["mcp:tools", "openid"]
        );
    }

    #[test]
    fn unknown_scope_is_invalid_scope() {
        let err = resolve(Some("openid admin"), &allowed()).unwrap_err();
        assert_eq!(err.code(), "invalid_scope");
        assert!(err.description().contains("admin"));
    }

    #[test]
    fn invalid_characters_are_refused() {
        assert_eq!(
            resolve(Some("open\"id"), &allowed()).unwrap_err().code(),
            "invalid_scope"
        );
        assert!(!is_valid_scope_token("a\\b"));
        assert!(is_valid_scope_token("mcp:tools"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn what_is_granted_is_always_within_what_is_allowed(requested in ".{0,60}") {
                let allowed = allowed();
                if let Ok(granted) = resolve(Some(&requested), &allowed) {
                    prop_assert!(granted.iter().all(|s| allowed.contains(s)));
                    prop_assert!(granted.iter().all(|s| is_valid_scope_token(s)));
                }
            }
        }
    }
}
