//! What a client's access tokens tell it about the user. A client can read its JWT, so the token
//! carries only what the user was shown on the consent page (RFC 9068 §6, privacy): an identity
//! claim goes in when the scope that releases it was granted (OIDC Core §5.4 names `email` and
//! `profile`; `groups` is ours), or when the operator releases it always
//! (`oauth.access_token_claims`, for resource servers that authorise by it).

use serde::Deserialize;

/// An identity claim a token may carry beyond the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityClaim {
    Email,
    Name,
    Groups,
}

impl IdentityClaim {
    pub(crate) const ALL: [IdentityClaim; 3] = [
        IdentityClaim::Email,
        IdentityClaim::Name,
        IdentityClaim::Groups,
    ];

    /// The scope whose grant releases the claim.
    pub(crate) fn scope(self) -> &'static str {
        match self {
            IdentityClaim::Email => "email",
            IdentityClaim::Name => "profile",
            IdentityClaim::Groups => "groups",
        }
    }
}

/// The identity claims the tokens of a grant with `scope` carry.
pub(crate) fn released(scope: &[String], always: &[IdentityClaim]) -> Vec<IdentityClaim> {
    IdentityClaim::ALL
        .into_iter()
        .filter(|claim| always.contains(claim) || scope.iter().any(|s| s == claim.scope()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn claims_follow_their_scopes() {
        assert_eq!(released(&scope(&["offline_access"]), &[]), []);
        assert_eq!(
            released(&scope(&["openid", "email"]), &[]),
            [IdentityClaim::Email]
        );
        assert_eq!(
            released(&scope(&["profile", "groups"]), &[]),
            [IdentityClaim::Name, IdentityClaim::Groups]
        );
    }

    #[test]
    fn claims_the_operator_releases_always_come_whatever_the_scope() {
        assert_eq!(
            released(&scope(&["offline_access"]), &[IdentityClaim::Groups]),
            [IdentityClaim::Groups]
        );
        assert_eq!(
            released(&scope(&["email"]), &[IdentityClaim::Groups]),
            [IdentityClaim::Email, IdentityClaim::Groups]
        );
    }
}
