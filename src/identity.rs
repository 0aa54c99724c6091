//! The signed-in user as the bridge records it: the upstream subject and the mapped claims.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub groups: Vec<String>,
}

/// The user's session at the identity provider a grant came from, as its ID token named it: what
/// a back-channel logout names to end it (OIDC Back-Channel Logout 1.0 §2.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSession {
    /// The configured provider's name (`oauth.upstreams[].name`; `upstream` for the single
    /// `oauth.upstream`, and for every session recorded before providers had names).
    #[serde(default = "single_provider_name")]
    pub provider: String,
    /// The provider's own `sub`, which the claim mapping may not have made the subject.
    pub subject: String,
    /// The ID token's `sid`, when the provider sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// The name the single `oauth.upstream` goes by, in the metrics, the audit trail and the grants.
pub const SINGLE_PROVIDER: &str = "upstream";

fn single_provider_name() -> String {
    SINGLE_PROVIDER.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_recorded_before_providers_had_names_is_the_single_providers() {
        let session: UpstreamSession =
            serde_json::from_str(r#"{"subject":"u-1","session_id":"s-1"}"#).unwrap();
        assert_eq!(session.provider, SINGLE_PROVIDER);
    }
}
