//! From verified ID token claims to our `Identity`, and the access policy on it.

use serde::Deserialize;
use serde_json::Value;

use crate::identity::Identity;

/// Follows a dotted path (`realm_access.roles`) through nested objects.
pub(crate) fn lookup<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    // A claim whose own name contains dots (`https://example.com/groups`) wins over traversal.
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    path.split('.')
        .try_fold(claims, |value, segment| value.get(segment))
}

/// A claim's value as text; `None` for one no provider would make and no store of ours can
/// hold: PostgreSQL refuses a NUL in text and JSON, so a grant naming one could never be
/// written, and the user would meet a `503` instead of a refusal. A subject with one is no usable
/// subject; a name, email or group with one is left out (at a re-validation, where an absent
/// claim keeps what the grant had, such a value clears it: it fails closed either way).
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() && !s.contains('\0') => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) fn map_identity(claims: &Value, mapping: &ClaimsConfig) -> Result<Identity, NoSubject> {
    let subject = lookup(claims, &mapping.subject)
        .and_then(as_text)
        .ok_or_else(|| NoSubject {
            claim: mapping.subject.clone(),
        })?;
    let groups = match lookup(claims, &mapping.groups) {
        Some(Value::Array(items)) => items.iter().filter_map(as_text).collect(),
        Some(value) => as_text(value).into_iter().collect(),
        None => Vec::new(),
    };
    Ok(Identity {
        subject,
        email: lookup(claims, &mapping.email).and_then(as_text),
        // `email_verified` speaks of the standard `email` claim only; a mapped substitute
        // (`upn`, `preferred_username`) was verified by nobody we know of.
        email_verified: (mapping.email == "email")
            .then(|| claims.get("email_verified").and_then(Value::as_bool))
            .flatten(),
        name: lookup(claims, &mapping.name).and_then(as_text),
        groups,
    })
}

/// The ID token does not name the user where the mapping says it does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the ID token has no usable subject claim {claim:?}")]
pub(crate) struct NoSubject {
    pub(crate) claim: String,
}

/// Why the access policy refuses a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("the user is in none of the allowed groups")]
    NoAllowedGroup,
    #[error("the user has no email address")]
    NoEmail,
    #[error("the user's email address is not verified")]
    EmailNotVerified,
    #[error("the user's email domain is not allowed")]
    EmailDomain,
}

/// Who may sign in: the upstream policy of the configuration.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    pub(crate) allowed_groups: Vec<String>,
    pub(crate) allowed_email_domains: Vec<String>,
    pub(crate) require_verified_email: bool,
}

impl Default for AccessPolicy {
    /// Anyone may sign in; a domain list, once set, trusts verified addresses only.
    fn default() -> Self {
        AccessPolicy {
            allowed_groups: Vec::new(),
            allowed_email_domains: Vec::new(),
            require_verified_email: true,
        }
    }
}

/// `allowed_groups` and `allowed_email_domains`: each, when set, must be satisfied.
pub(crate) fn check_access(identity: &Identity, policy: &AccessPolicy) -> Result<(), Refusal> {
    if !policy.allowed_groups.is_empty()
        && !identity
            .groups
            .iter()
            .any(|g| policy.allowed_groups.contains(g))
    {
        return Err(Refusal::NoAllowedGroup);
    }
    if !policy.allowed_email_domains.is_empty() {
        let email = identity.email.as_deref().ok_or(Refusal::NoEmail)?;
        // An address nobody verified proves nothing about its domain (the "nOAuth" attack).
        let verified = match identity.email_verified {
            Some(verified) => verified,
            None => !policy.require_verified_email,
        };
        if !verified {
            return Err(Refusal::EmailNotVerified);
        }
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if !policy
            .allowed_email_domains
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(domain))
        {
            return Err(Refusal::EmailDomain);
        }
    }
    Ok(())
}

/// Where each identity attribute is found in the ID token; dotted paths reach nested objects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsConfig {
    #[serde(default = "claim_sub")]
    pub subject: String,
    #[serde(default = "claim_email")]
    pub(crate) email: String,
    #[serde(default = "claim_name")]
    pub(crate) name: String,
    #[serde(default = "claim_groups")]
    pub groups: String,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        ClaimsConfig {
            subject: claim_sub(),
            email: claim_email(),
            name: claim_name(),
            groups: claim_groups(),
        }
    }
}

fn claim_sub() -> String {
    "sub".to_owned()
}
fn claim_email() -> String {
    "email".to_owned()
}
fn claim_name() -> String {
    "name".to_owned()
}
fn claim_groups() -> String {
    "groups".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keycloak_mapping() -> ClaimsConfig {
        ClaimsConfig {
            groups: "realm_access.roles".into(),
            ..ClaimsConfig::default()
        }
    }

    #[test]
    fn dotted_paths_reach_nested_claims() {
        let claims = json!({"sub": "u1", "email": "a@corp.com", "realm_access": {"roles": ["admin", "dev"]}});
        let identity = map_identity(&claims, &keycloak_mapping()).unwrap();
        assert_eq!(identity.subject, "u1");
        assert_eq!(identity.groups, vec!["admin", "dev"]);
        assert_eq!(identity.email.as_deref(), Some("a@corp.com"));
    }

    #[test]
    fn a_claim_holding_a_nul_is_no_value() {
        let mapping = ClaimsConfig::default();
        let claims = json!({"sub": "u1\u{0}admin"});
        assert_eq!(
            map_identity(&claims, &mapping).unwrap_err(),
            NoSubject {
                claim: "sub".into()
            }
        );
        let claims = json!({
            "sub": "u1",
            "email": "a@corp.com\u{0}",
            "name": "\u{0}",
            "groups": ["ops", "admin\u{0}"]
        });
        let identity = map_identity(&claims, &mapping).unwrap();
        assert_eq!(identity.subject, "u1");
        assert_eq!(identity.email, None);
        assert_eq!(identity.name, None);
        assert_eq!(identity.groups, vec!["ops"]);
    }

    #[test]
    fn claim_names_with_dots_are_found_directly() {
        let mapping = ClaimsConfig {
            groups: "https://corp.com/groups".into(),
            ..ClaimsConfig::default()
        };
        let claims = json!({"sub": "u1", "https://corp.com/groups": "ops"});
        assert_eq!(map_identity(&claims, &mapping).unwrap().groups, vec!["ops"]);
    }

    #[test]
    fn email_verified_applies_only_to_the_standard_email_claim() {
        let claims = json!({"sub": "u1", "email": "a@corp.com", "upn": "b@corp.com", "email_verified": true});
        assert_eq!(
            map_identity(&claims, &ClaimsConfig::default())
                .unwrap()
                .email_verified,
            Some(true)
        );
        let upn = ClaimsConfig {
            email: "upn".into(),
            ..ClaimsConfig::default()
        };
        let identity = map_identity(&claims, &upn).unwrap();
        assert_eq!(identity.email.as_deref(), Some("b@corp.com"));
        assert_eq!(identity.email_verified, None);
    }

    #[test]
    fn missing_subject_is_an_error() {
        assert!(map_identity(&json!({"email": "a@b.c"}), &ClaimsConfig::default()).is_err());
        assert!(map_identity(&json!({"sub": ""}), &ClaimsConfig::default()).is_err());
    }

    fn identity(email: Option<&str>, verified: Option<bool>, groups: &[&str]) -> Identity {
        Identity {
            subject: "u".into(),
            email: email.map(String::from),
            email_verified: verified,
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn group_and_domain_policies() {
        let groups = AccessPolicy {
            allowed_groups: vec!["mcp-users".to_string()],
            ..AccessPolicy::default()
        };
        let domains = AccessPolicy {
            allowed_email_domains: vec!["corp.com".to_string()],
            ..AccessPolicy::default()
        };
        assert!(check_access(&identity(None, None, &["mcp-users"]), &groups).is_ok());
        assert!(check_access(&identity(None, None, &["other"]), &groups).is_err());
        assert!(check_access(&identity(Some("a@CORP.com"), Some(true), &[]), &domains).is_ok());
        assert!(
            check_access(
                &identity(Some("a@corp.com.evil.io"), Some(true), &[]),
                &domains
            )
            .is_err()
        );
        assert!(check_access(&identity(Some("a@corp.com"), Some(false), &[]), &domains).is_err());
        assert!(check_access(&identity(None, None, &[]), &domains).is_err());
        assert!(check_access(&identity(None, None, &[]), &AccessPolicy::default()).is_ok());
    }

    #[test]
    fn an_email_nobody_verified_passes_the_domain_check_only_when_allowed() {
        let strict = AccessPolicy {
            allowed_email_domains: vec!["corp.com".to_string()],
            ..AccessPolicy::default()
        };
        let unverified = identity(Some("a@corp.com"), None, &[]);
        assert_eq!(
            check_access(&unverified, &strict).map_err(|refusal| refusal.to_string()),
            Err("the user's email address is not verified".to_owned())
        );
        let lenient = AccessPolicy {
            require_verified_email: false,
            ..strict
        };
        assert!(check_access(&unverified, &lenient).is_ok());
        assert!(check_access(&identity(Some("a@corp.com"), Some(false), &[]), &lenient).is_err());
    }
}
