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
    /// The provider's own `sub`, which the claim mapping may not have made the subject.
    pub subject: String,
    /// The ID token's `sid`, when the provider sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}
