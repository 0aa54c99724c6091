//! `oauth.upstream`: the OpenID Connect provider users sign in at, and what is accepted from it.

use std::time::Duration;

use serde::Deserialize;

use super::claims::{AccessPolicy, ClaimsConfig};
use crate::oauth::redirect_uri::validate_base_url;
use crate::secret::SecretString;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub issuer: String,
    pub client_id: String,
    pub(crate) client_secret: SecretString,
    /// Defaults to `<public_url>/oauth/callback`.
    pub(crate) redirect_uri: Option<String>,
    #[serde(default = "default_upstream_scopes")]
    pub(crate) scopes: Vec<String>,
    #[serde(default)]
    pub claims: ClaimsConfig,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default)]
    pub(crate) allowed_email_domains: Vec<String>,
    /// With `allowed_email_domains`, accept only addresses the provider marks `email_verified:
    /// true`. Turn off only for providers that never send the claim and verify every address.
    #[serde(default = "enabled")]
    pub(crate) require_verified_email: bool,
    /// Timeout of each call to the provider (discovery, JWKS, token exchange).
    #[serde(
        default = "default_upstream_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub(crate) timeout: Duration,
    /// Keep the provider's refresh token (sealed) and refresh it before each of our refreshes,
    /// so a user disabled or logged out upstream loses access at the next refresh.
    #[serde(default)]
    pub revalidate_on_refresh: bool,
}

fn default_upstream_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

fn enabled() -> bool {
    true
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10)
}

impl UpstreamConfig {
    /// Who may sign in, as this section says.
    pub(crate) fn access_policy(&self) -> AccessPolicy {
        AccessPolicy {
            allowed_groups: self.allowed_groups.clone(),
            allowed_email_domains: self.allowed_email_domains.clone(),
            require_verified_email: self.require_verified_email,
        }
    }

    /// Every problem of `oauth.upstream`, with its field path.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if let Err(problem) = validate_base_url(&self.issuer) {
            problems.push(format!("oauth.upstream.issuer: {problem}"));
        }
        if self.client_id.trim().is_empty() {
            problems.push("oauth.upstream.client_id: must not be empty".to_owned());
        }
        if self.client_secret.is_empty() {
            problems.push("oauth.upstream.client_secret: must not be empty".to_owned());
        }
        if let Some(uri) = &self.redirect_uri
            && let Err(problem) = validate_base_url(uri)
        {
            problems.push(format!("oauth.upstream.redirect_uri: {problem}"));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            problems.push("oauth.upstream.scopes: must include \"openid\"".to_owned());
        }
        if self.timeout.is_zero() {
            problems.push("oauth.upstream.timeout: must be longer than zero".to_owned());
        }
        for (name, path) in [
            ("subject", &self.claims.subject),
            ("email", &self.claims.email),
            ("name", &self.claims.name),
            ("groups", &self.claims.groups),
        ] {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                problems.push(format!(
                    "oauth.upstream.claims.{name}: {path:?} is not a claim name or dotted path"
                ));
            }
        }
        for (i, domain) in self.allowed_email_domains.iter().enumerate() {
            if domain.is_empty() || domain.contains('@') {
                problems.push(format!(
                    "oauth.upstream.allowed_email_domains[{i}]: {domain:?} is not a domain"
                ));
            }
        }
    }
}
