//! `oauth.upstream`, or each of `oauth.upstreams`: an OpenID Connect provider users sign in at,
//! and what is accepted from it.

use std::time::Duration;

use serde::Deserialize;

use super::claims::{AccessPolicy, ClaimsConfig};
use crate::oauth::redirect_uri::validate_base_url;
use crate::secret::SecretString;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// In `oauth.upstreams`: the provider's name in URLs, grants, the metrics and the audit trail.
    #[serde(default)]
    pub name: Option<String>,
    /// In `oauth.upstreams`: what the chooser page calls it (the name when unset).
    #[serde(default)]
    pub display_name: Option<String>,
    /// In `oauth.upstreams`: the email domains whose users it signs in (`login_hint` routing).
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// In `oauth.upstreams`: put before each subject it names, so two providers' subjects never
    /// collide. `<name>|` when unset.
    #[serde(default)]
    pub subject_prefix: Option<String>,
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
    /// Keep the provider's access and refresh tokens (sealed), so that an MCP server with a
    /// token-exchange rule naming `upstream` can get the provider's token for its user.
    #[serde(default)]
    pub keep_tokens: bool,
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

    /// Every problem of this provider's section, named by `path` (`oauth.upstream` or
    /// `oauth.upstreams[i]`); what only a list's members may set is checked by the caller.
    pub(crate) fn validate(&self, path: &str, problems: &mut Vec<String>) {
        if let Err(problem) = validate_base_url(&self.issuer) {
            problems.push(format!("{path}.issuer: {problem}"));
        }
        if self.client_id.trim().is_empty() {
            problems.push(format!("{path}.client_id: must not be empty"));
        }
        if self.client_secret.is_empty() {
            problems.push(format!("{path}.client_secret: must not be empty"));
        }
        if let Some(uri) = &self.redirect_uri
            && let Err(problem) = validate_base_url(uri)
        {
            problems.push(format!("{path}.redirect_uri: {problem}"));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            problems.push(format!("{path}.scopes: must include \"openid\""));
        }
        if self.timeout.is_zero() {
            problems.push(format!("{path}.timeout: must be longer than zero"));
        }
        for (name, claim) in [
            ("subject", &self.claims.subject),
            ("email", &self.claims.email),
            ("name", &self.claims.name),
            ("groups", &self.claims.groups),
        ] {
            if claim.is_empty() || claim.split('.').any(str::is_empty) {
                problems.push(format!(
                    "{path}.claims.{name}: {claim:?} is not a claim name or dotted path"
                ));
            }
        }
        for (i, domain) in self.allowed_email_domains.iter().enumerate() {
            if domain.is_empty() || domain.contains('@') {
                problems.push(format!(
                    "{path}.allowed_email_domains[{i}]: {domain:?} is not a domain"
                ));
            }
        }
    }

    /// The single `oauth.upstream` has one name and keeps its subjects as the provider sends
    /// them; what distinguishes the members of a list has no place there.
    pub(crate) fn validate_single(&self, problems: &mut Vec<String>) {
        self.validate("oauth.upstream", problems);
        for (field, set) in [
            ("name", self.name.is_some()),
            ("display_name", self.display_name.is_some()),
            ("email_domains", !self.email_domains.is_empty()),
            ("subject_prefix", self.subject_prefix.is_some()),
        ] {
            if set {
                problems.push(format!(
                    "oauth.upstream.{field}: only for the providers of oauth.upstreams"
                ));
            }
        }
    }

    /// The subject prefix in force: as configured, else `<name>|`.
    pub(crate) fn effective_subject_prefix(&self) -> String {
        match (&self.subject_prefix, &self.name) {
            (Some(prefix), _) => prefix.clone(),
            (None, Some(name)) => format!("{name}|"),
            (None, None) => String::new(),
        }
    }
}

/// The longest provider name: it appears in URLs, metric labels and every grant.
const MAX_NAME_LEN: usize = 32;

/// Every problem of `oauth.upstreams`: each provider's own, and those between them (names, email
/// domains and subject prefixes that two providers would share).
pub(crate) fn validate_list(providers: &[UpstreamConfig], problems: &mut Vec<String>) {
    if providers.is_empty() {
        problems.push("oauth.upstreams: name at least one provider".to_owned());
    }
    let mut names: Vec<&str> = Vec::new();
    let mut domains: Vec<(String, &str)> = Vec::new();
    let mut clients: Vec<(&str, &str)> = Vec::new();
    for (i, provider) in providers.iter().enumerate() {
        let path = format!("oauth.upstreams[{i}]");
        provider.validate(&path, problems);
        let Some(name) = provider.name.as_deref() else {
            problems.push(format!(
                "{path}.name: required, a short name such as \"corp\""
            ));
            continue;
        };
        if !valid_name(name) {
            problems.push(format!(
                "{path}.name: {name:?} must be 1 to {MAX_NAME_LEN} lowercase letters, digits, '-' or '_', starting with a letter or digit"
            ));
        } else if name == "local" {
            problems.push(format!(
                "{path}.name: \"local\" is the local login form's name in the metrics and the audit trail"
            ));
        }
        if names.contains(&name) {
            problems.push(format!("{path}.name: {name:?} names another provider too"));
        }
        names.push(name);
        if providers.len() > 1
            && provider
                .display_name
                .as_deref()
                .is_some_and(|d| d.trim().is_empty())
        {
            problems.push(format!("{path}.display_name: must not be empty"));
        }
        for (j, domain) in provider.email_domains.iter().enumerate() {
            let normalised = domain.to_ascii_lowercase();
            if !valid_domain(&normalised) {
                problems.push(format!(
                    "{path}.email_domains[{j}]: {domain:?} is not a domain (write \"example.com\", no '@')"
                ));
            } else if let Some((_, other)) = domains.iter().find(|(d, _)| *d == normalised) {
                problems.push(format!(
                    "{path}.email_domains[{j}]: {domain:?} is served by {other:?} already; a domain picks one provider"
                ));
            }
            domains.push((normalised, name));
        }
        if clients.contains(&(provider.issuer.as_str(), provider.client_id.as_str())) {
            // Its logout tokens and callbacks could not be told apart from the other's.
            problems.push(format!(
                "{path}: the same issuer and client_id as another provider; name each provider once"
            ));
        }
        clients.push((provider.issuer.as_str(), provider.client_id.as_str()));
    }
    let prefixes: Vec<(usize, String)> = providers
        .iter()
        .enumerate()
        .filter(|(_, provider)| provider.name.is_some())
        .map(|(i, provider)| (i, provider.effective_subject_prefix()))
        .collect();
    if prefixes.len() > 1 {
        for (i, prefix) in &prefixes {
            if prefix.is_empty() {
                problems.push(format!(
                    "oauth.upstreams[{i}].subject_prefix: must not be empty when several providers are configured: their subjects could collide"
                ));
            } else if let Some((j, _)) = prefixes.iter().find(|(j, other)| {
                j != i && !other.is_empty() && other.starts_with(prefix.as_str())
            }) {
                problems.push(format!(
                    "oauth.upstreams[{i}].subject_prefix: {prefix:?} begins oauth.upstreams[{j}]'s; two providers' subjects could collide"
                ));
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A DNS name as an email address's domain part: labels of letters, digits and hyphens.
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}
