//! Configuration: YAML with `${VAR}` / `${VAR:-default}` from the environment, human durations,
//! unknown fields refused, and validation errors that name the field and the problem (README, "Configuration reference").

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

// The sections of the file, each defined by the module whose settings it holds; named here too
// so that code (the tests) can write a configuration as values.
pub use crate::audit::{AuditConfig, AuditOutput};
pub use crate::clients::ClientConfig;
pub use crate::clients::metadata_documents::CimdConfig;
pub use crate::duration::ConfigDuration;
use crate::duration::whole_seconds;
pub use crate::http::client_address::ClientAddressHeader;
pub use crate::http::proxy::settings::{IdentityJwtConfig, ProxyConfig};
pub use crate::http::server::ServerConfig;
pub use crate::local_users::LocalUserConfig;
pub use crate::metrics::MetricsConfig;
pub use crate::oauth::admin::AdminConfig;
pub use crate::oauth::disclosure::IdentityClaim;
pub use crate::oauth::login_throttle::ThrottleSettings;
pub use crate::oauth::register::DcrConfig;
use crate::oauth::resource::validate_resource_uri;
pub use crate::oauth::tool_scopes::ToolScopeRule;
pub use crate::rate_limit::RateLimitConfig;
use crate::secret::SecretString;
pub use crate::storage::settings::{PostgresConfig, StorageBackend, StorageConfig};
pub use crate::tokens::keys::{SigningAlgorithm, SigningConfig};
pub use crate::upstream::settings::UpstreamConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error(
        "{field}: environment variable {variable} is not set (use ${{{variable}:-default}} for a fallback)"
    )]
    MissingEnv { field: String, variable: String },
    #[error("{field}: {problem}")]
    BadSubstitution { field: String, problem: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub oauth: OAuthConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    /// Guard an MCP server: the bridge serves it at `proxy.path` to holders of valid tokens.
    pub proxy: Option<ProxyConfig>,
    /// Prometheus metrics at `GET /metrics`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The audit trail's destination.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The administration API under `/admin/`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The pages' brand, scope descriptions and languages.
    #[serde(default)]
    pub ui: crate::ui::UiConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// HS256 shared secret, for single-secret setups; exclusive with `signing`.
    pub signing_key: Option<SecretString>,
    pub signing: Option<SigningConfig>,
    pub access_token_ttl: ConfigDuration,
    pub(crate) refresh_token_ttl: ConfigDuration,
    /// Absolute lifetime of a refresh-token family, however often it is used.
    pub(crate) refresh_token_max_lifetime: ConfigDuration,
    /// How long after rotation the previous refresh token may be retried (lost response).
    pub(crate) refresh_token_retry_window: ConfigDuration,
    /// `aud` of tokens whose request named no `resource`; defaults to `server.public_url`.
    pub(crate) audience: Option<String>,
    /// When non-empty, the only `resource` values (RFC 8707) clients may ask for.
    pub resources: Vec<String>,
    pub(crate) scopes_supported: Vec<String>,
    pub clients: Vec<ClientConfig>,
    pub dcr: DcrConfig,
    pub cimd: CimdConfig,
    pub upstream: Option<UpstreamConfig>,
    /// Several providers, each named, instead of `upstream`.
    pub upstreams: Vec<UpstreamConfig>,
    /// Enterprise identity providers whose ID-JAGs the jwt-bearer grant accepts.
    pub identity_assertion: crate::oauth::identity_assertion::IdentityAssertionConfig,
    /// RFC 8693: which configured clients may exchange a user's token, for what.
    pub token_exchange: crate::oauth::token_exchange::TokenExchangeConfig,
    /// The built-in user directory, instead of `upstream`.
    pub local_users: Vec<LocalUserConfig>,
    pub login_throttle: ThrottleSettings,
    /// Bearer tokens that let resource servers call `/oauth/introspect` without being a client.
    pub introspection_tokens: Vec<SecretString>,
    /// Identity claims (`email`, `name`, `groups`) every access token carries; the others only
    /// when their scope (`email`, `profile`, `groups`) was granted.
    pub access_token_claims: Vec<crate::oauth::disclosure::IdentityClaim>,
    /// bcrypt cost for the client secrets the bridge hashes: plain ones from this file, and those
    /// it generates at registration. Unknown clients are checked against a hash of this cost.
    pub(crate) secret_hash_cost: u32,
    /// Authorizations started per client address and window (`/oauth/authorize` requests).
    pub authorize_rate_limit: RateLimitConfig,
    /// Authorizations in flight at most (consent pages shown and sign-ins under way, ten
    /// minutes each at most); beyond, new ones get `503`.
    pub max_pending_authorizations: usize,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            signing_key: None,
            signing: None,
            access_token_ttl: ConfigDuration(Duration::from_secs(3600)),
            refresh_token_ttl: ConfigDuration(Duration::from_secs(30 * 86400)),
            refresh_token_max_lifetime: ConfigDuration(Duration::from_secs(90 * 86400)),
            refresh_token_retry_window: ConfigDuration(Duration::from_secs(300)),
            audience: None,
            resources: Vec::new(),
            scopes_supported: ["openid", "profile", "email", "offline_access"]
                .map(String::from)
                .to_vec(),
            clients: Vec::new(),
            dcr: DcrConfig::default(),
            cimd: CimdConfig::default(),
            upstream: None,
            upstreams: Vec::new(),
            identity_assertion: Default::default(),
            token_exchange: Default::default(),
            local_users: Vec::new(),
            login_throttle: ThrottleSettings::default(),
            introspection_tokens: Vec::new(),
            access_token_claims: vec![crate::oauth::disclosure::IdentityClaim::Groups],
            secret_hash_cost: bcrypt::DEFAULT_COST,
            authorize_rate_limit: RateLimitConfig {
                requests: 60,
                window: ConfigDuration(Duration::from_secs(60)),
            },
            max_pending_authorizations: 20_000,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text, &|name| std::env::var(name).ok())
    }

    /// Parses, substitutes the environment, deserializes and validates.
    pub fn from_yaml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| ConfigError::Syntax(format!("YAML syntax: {e}")))?;
        // Substituting after parsing means a variable's value can never change the YAML structure.
        substitute_env(&mut value, "", env)?;
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Syntax(format!(
                "{}: {}",
                if path == "." { "(top level)" } else { &path },
                e.inner()
            ))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// `<public_url>/oauth/callback` exactly as the running service builds it (normalised URL).
    pub fn callback_url(&self) -> Option<String> {
        let url = Url::parse(&self.server.public_url).ok()?;
        Some(format!(
            "{}{}",
            url.as_str().trim_end_matches('/'),
            crate::oauth::endpoints::CALLBACK
        ))
    }

    /// Where `provider` sends the user back: `/oauth/callback` for the single `oauth.upstream`,
    /// `/oauth/callback/<name>` for each of `oauth.upstreams`, so that a provider's answer can
    /// only complete a sign-in started with it (RFC 9700 §4.4.2, mix-up attacks).
    pub fn callback_url_of(&self, provider: &UpstreamConfig) -> Option<String> {
        let single = self.callback_url()?;
        Some(match &provider.name {
            Some(name) => format!("{single}/{name}"),
            None => single,
        })
    }

    /// The proxied MCP server's resource, `<issuer><proxy.path>`, when the proxy is configured.
    pub(crate) fn proxy_resource(&self) -> Option<String> {
        let issuer = self.issuer().ok()?;
        let proxy = self.proxy.as_ref()?;
        Some(format!("{}{}", issuer.trim_end_matches('/'), proxy.path))
    }

    fn validate_token_exchange(&self, problems: &mut Vec<String>) {
        let exchange = &self.oauth.token_exchange;
        if exchange.rules.is_empty() {
            return;
        }
        let grant = crate::oauth::grant_type::TOKEN_EXCHANGE;
        let proxy_resource = self.proxy_resource();
        let known = crate::oauth::token_exchange::Known {
            exchanging_clients: self
                .oauth
                .clients
                .iter()
                .filter(|client| client.grant_types.iter().flatten().any(|g| g == grant))
                .map(|client| {
                    let authenticates = client.secret.is_some()
                        || client.jwks.is_some()
                        || client.jwks_uri.is_some();
                    (client.id.as_str(), authenticates)
                })
                .collect(),
            resources: self
                .oauth
                .resources
                .iter()
                .cloned()
                .chain(proxy_resource.clone())
                .collect(),
            proxy_resource,
            scopes_supported: &self.oauth.scopes_supported,
            provider_tokens_kept: self
                .upstream_providers()
                .iter()
                .any(|provider| provider.keep_tokens),
        };
        exchange.validate(&known, problems);
    }

    /// The providers users sign in at: the single `oauth.upstream`, or `oauth.upstreams`.
    pub fn upstream_providers(&self) -> Vec<&UpstreamConfig> {
        self.oauth
            .upstream
            .iter()
            .chain(self.oauth.upstreams.iter())
            .collect()
    }

    /// The issuer identifier: `public_url` normalised, keeping or leaving its trailing slash as
    /// written. Clients compare issuers as strings (RFC 8414 §3.3, RFC 9207), and an MCP server's
    /// own metadata may name us either way (the Python SDK 1.x always writes `https://host/`),
    /// so the operator decides; endpoints are built from the form without the slash.
    pub(crate) fn issuer(&self) -> Result<String, ConfigError> {
        let base = self.public_url()?.as_str().trim_end_matches('/').to_owned();
        Ok(if self.server.public_url.ends_with('/') {
            format!("{base}/")
        } else {
            base
        })
    }

    pub(crate) fn public_url(&self) -> Result<Url, ConfigError> {
        Url::parse(self.server.public_url.trim_end_matches('/'))
            .map_err(|e| ConfigError::Invalid(vec![format!("server.public_url: {e}")]))
    }

    /// Every problem of the configuration, with its field path, as loading reports them; for a
    /// configuration changed after loading.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.storage.validate(&mut problems);
        self.server.validate(&mut problems);
        self.oauth.validate(&mut problems);
        self.metrics.validate(&self.server.address, &mut problems);
        self.audit.validate(&mut problems);
        self.ui.validate(&mut problems);
        self.admin.validate(&self.server.address, &mut problems);
        if let (Some(admin), Some(metrics)) = (self.admin.address, self.metrics.address)
            && admin == metrics
        {
            problems.push(format!(
                "admin.address: {admin} is metrics.address; each needs a listener of its own"
            ));
        }
        if let Some(proxy) = &self.proxy {
            proxy.validate(&self.oauth.scopes_supported, &mut problems);
            let admin_here = !self.admin.tokens.is_empty() && self.admin.address.is_none();
            if admin_here && (proxy.path == "/admin" || proxy.path.starts_with("/admin/")) {
                problems.push(format!(
                    "proxy.path: {:?} is where the admin API is served (admin.tokens); move one of them, or the admin API to admin.address",
                    proxy.path
                ));
            }
        }
        self.validate_token_exchange(&mut problems);
        let single = self.oauth.upstream.is_some();
        for (i, provider) in self.upstream_providers().into_iter().enumerate() {
            let path = match single {
                true => "oauth.upstream".to_owned(),
                false => format!("oauth.upstreams[{i}]"),
            };
            if provider.revalidate_on_refresh
                && self.storage.backend == StorageBackend::Postgres
                && self.storage.encryption_key.is_none()
            {
                problems.push(format!(
                    "{path}.revalidate_on_refresh: the provider's refresh tokens are kept in the database, so storage.encryption_key is required"
                ));
            }
            if provider.keep_tokens
                && self.storage.backend == StorageBackend::Postgres
                && self.storage.encryption_key.is_none()
            {
                problems.push(format!(
                    "{path}.keep_tokens: the provider's tokens are kept in the database, so storage.encryption_key is required"
                ));
            }
            if let (Some(uri), Some(callback)) = (
                provider.redirect_uri.as_ref(),
                self.callback_url_of(provider),
            ) && Url::parse(uri).map(String::from).ok() != Some(callback.clone())
            {
                // The sign-in cookie is scoped to this host: a callback elsewhere would never
                // see it.
                problems.push(format!(
                    "{path}.redirect_uri: must be {callback:?}, the bridge's own callback"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

impl OAuthConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        match (&self.signing_key, &self.signing) {
            (Some(_), Some(_)) => {
                problems.push("oauth.signing_key: set either signing_key (HS256) or signing, not both".to_owned())
            }
            (Some(key), None) if key.expose().len() < 32 => problems.push(
                "oauth.signing_key: must be at least 32 bytes (generate one with: openssl rand -base64 32)".to_owned(),
            ),
            (None, Some(signing)) => signing.validate(&self.access_token_ttl, problems),
            _ => {}
        }
        for (i, token) in self.introspection_tokens.iter().enumerate() {
            if token.expose().len() < 32 {
                problems.push(format!(
                    "oauth.introspection_tokens[{i}]: must be at least 32 characters (generate one with: openssl rand -base64 32)"
                ));
            }
        }
        let ttl = |name: &str, value: &ConfigDuration, problems: &mut Vec<String>| {
            problems.extend(whole_seconds(&format!("oauth.{name}"), value, 1));
        };
        ttl("access_token_ttl", &self.access_token_ttl, problems);
        ttl("refresh_token_ttl", &self.refresh_token_ttl, problems);
        ttl(
            "refresh_token_max_lifetime",
            &self.refresh_token_max_lifetime,
            problems,
        );
        // Zero turns retries off.
        problems.extend(whole_seconds(
            "oauth.refresh_token_retry_window",
            self.refresh_token_retry_window,
            0,
        ));
        if self.refresh_token_max_lifetime.0 < self.refresh_token_ttl.0 {
            problems.push(
                "oauth.refresh_token_max_lifetime: must not be shorter than refresh_token_ttl"
                    .to_owned(),
            );
        }
        if let Some(audience) = &self.audience
            && let Err(problem) = validate_resource_uri(audience)
        {
            problems.push(format!("oauth.audience: {problem}"));
        }
        for (i, resource) in self.resources.iter().enumerate() {
            if let Err(problem) = validate_resource_uri(resource) {
                problems.push(format!("oauth.resources[{i}]: {problem}"));
            }
        }
        for (i, scope) in self.scopes_supported.iter().enumerate() {
            if !crate::oauth::scope::is_valid_scope_token(scope) {
                problems.push(format!(
                    "oauth.scopes_supported[{i}]: {scope:?} is not a valid scope token"
                ));
            }
        }
        self.identity_assertion.validate(problems);
        if self.identity_assertion.trusted_issuers.is_empty() {
            for (i, client) in self.clients.iter().enumerate() {
                if client
                    .grant_types
                    .iter()
                    .flatten()
                    .any(|g| g == crate::oauth::grant_type::JWT_BEARER)
                {
                    problems.push(format!(
                        "oauth.clients[{i}].grant_types: the jwt-bearer grant needs oauth.identity_assertion.trusted_issuers"
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            client.validate(
                &format!("oauth.clients[{i}]"),
                &self.scopes_supported,
                problems,
            );
            if !seen.insert(client.id.as_str()) {
                problems.push(format!(
                    "oauth.clients[{i}].id: {:?} is listed twice",
                    client.id
                ));
            }
        }
        // Metadata documents obey registration's redirect policy: it must allow something.
        if self.cimd.enabled
            && self.dcr.allowed_redirect_patterns.is_empty()
            && self.dcr.allowed_redirect_profiles.is_empty()
        {
            problems.push(
                "oauth.cimd: enabled, but oauth.dcr.allowed_redirect_patterns and allowed_redirect_profiles (which metadata documents obey too) are both empty".to_owned(),
            );
        }
        self.cimd.validate(problems);
        self.dcr
            .validate(self.dcr.enabled || self.cimd.enabled, problems);
        self.authorize_rate_limit
            .validate("oauth.authorize_rate_limit", problems);
        if !crate::password_hash::COSTS.contains(&self.secret_hash_cost) {
            problems.push(format!(
                "oauth.secret_hash_cost: {} is outside 4 to 16",
                self.secret_hash_cost
            ));
        }
        if self.max_pending_authorizations == 0 {
            problems.push("oauth.max_pending_authorizations: must be at least 1".to_owned());
        }
        let ways = [
            self.upstream.is_some(),
            !self.upstreams.is_empty(),
            !self.local_users.is_empty(),
        ];
        match ways.iter().filter(|set| **set).count() {
            0 => problems.push(
                "oauth: configure exactly one way for users to sign in: oauth.upstream (an OpenID Connect provider), oauth.upstreams (several) or oauth.local_users (a built-in list); none is set"
                    .to_owned(),
            ),
            1 => {}
            _ => problems.push(
                "oauth: configure exactly one way for users to sign in: oauth.upstream, oauth.upstreams or oauth.local_users, not more"
                    .to_owned(),
            ),
        }
        if let Some(upstream) = &self.upstream {
            upstream.validate_single(problems);
        }
        if !self.upstreams.is_empty() {
            crate::upstream::settings::validate_list(&self.upstreams, problems);
        }
        if self.upstream.is_none() && self.upstreams.is_empty() && !self.local_users.is_empty() {
            crate::local_users::validate_configs(&self.local_users, problems);
            self.login_throttle.validate(problems);
        }
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string scalar; `$${` stays a literal `${`.
fn substitute_env(
    value: &mut serde_yaml::Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        serde_yaml::Value::String(text) if text.contains('$') => *text = expand(text, path, env)?,
        serde_yaml::Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), env)?;
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{key:?}"));
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                substitute_env(item, &child, env)?;
            }
        }
        serde_yaml::Value::Tagged(tagged) => substitute_env(&mut tagged.value, path, env)?,
        _ => {}
    }
    Ok(())
}

fn expand(
    text: &str,
    field: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
            continue;
        }
        let Some(body_start) = after.strip_prefix("${") else {
            out.push('$');
            rest = &after[1..];
            continue;
        };
        let Some(end) = body_start.find('}') else {
            return Err(ConfigError::BadSubstitution {
                field: field.to_owned(),
                problem: "an opening ${ has no closing }".to_owned(),
            });
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::BadSubstitution {
                field: field.to_owned(),
                problem: format!("${{{body}}} is not a valid variable reference"),
            });
        }
        // As in the shell, `:-` also applies when the variable is set but empty.
        match (
            env(name).filter(|v| !v.is_empty() || default.is_none()),
            default,
        ) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(ConfigError::MissingEnv {
                    field: field.to_owned(),
                    variable: name.to_owned(),
                });
            }
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
server:
  public_url: "https://mcp.example.com"
oauth:
  upstream:
    issuer: "https://idp.example.com/realms/mcp"
    client_id: bridge
    client_secret: "${UPSTREAM_SECRET}"
"#;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn error_text(yaml: &str, vars: &'static [(&'static str, &'static str)]) -> String {
        match Config::from_yaml(yaml, &env(vars)) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn issuer_keeps_a_trailing_slash_only_when_written() {
        let issuer = |public_url: &str| {
            let mut config =
                Config::from_yaml(MINIMAL, &env(&[("UPSTREAM_SECRET", "s3cret")])).unwrap();
            config.server.public_url = public_url.to_owned();
            config.issuer().unwrap()
        };
        assert_eq!(
            issuer("https://Auth.Example.com"),
            "https://auth.example.com"
        );
        assert_eq!(
            issuer("https://auth.example.com/"),
            "https://auth.example.com/"
        );
        assert_eq!(
            issuer("https://auth.example.com/mcp"),
            "https://auth.example.com/mcp"
        );
        assert_eq!(
            issuer("https://auth.example.com/mcp/"),
            "https://auth.example.com/mcp/"
        );
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = Config::from_yaml(MINIMAL, &env(&[("UPSTREAM_SECRET", "s3cret")])).unwrap();
        assert_eq!(config.server.address, "0.0.0.0:8080");
        assert_eq!(config.oauth.access_token_ttl.0, Duration::from_secs(3600));
        assert_eq!(
            config.oauth.refresh_token_ttl.0,
            Duration::from_secs(30 * 86400)
        );
        let upstream = config.oauth.upstream.unwrap();
        assert_eq!(upstream.client_secret.expose(), "s3cret");
        assert_eq!(upstream.claims.subject, "sub");
        assert_eq!(upstream.scopes, vec!["openid", "email", "profile"]);
    }

    #[test]
    fn missing_environment_variable_names_field_and_variable() {
        let text = error_text(MINIMAL, &[]);
        assert!(text.contains("oauth.upstream.client_secret"), "{text}");
        assert!(text.contains("UPSTREAM_SECRET"), "{text}");
    }

    #[test]
    fn default_applies_when_unset_or_empty() {
        let yaml = MINIMAL.replace("${UPSTREAM_SECRET}", "${UPSTREAM_SECRET:-fallback}");
        let unset = Config::from_yaml(&yaml, &env(&[])).unwrap();
        assert_eq!(
            unset.oauth.upstream.unwrap().client_secret.expose(),
            "fallback"
        );
        let empty = Config::from_yaml(&yaml, &env(&[("UPSTREAM_SECRET", "")])).unwrap();
        assert_eq!(
            empty.oauth.upstream.unwrap().client_secret.expose(),
            "fallback"
        );
    }

    #[test]
    fn variable_values_cannot_inject_yaml_structure() {
        let config =
            Config::from_yaml(MINIMAL, &env(&[("UPSTREAM_SECRET", "x\nserver: {}\n")])).unwrap();
        assert_eq!(
            config.oauth.upstream.unwrap().client_secret.expose(),
            "x\nserver: {}\n"
        );
    }

    #[test]
    fn double_dollar_escapes_a_literal_reference() {
        assert_eq!(expand("a$${B}c", "f", &env(&[])).unwrap(), "a${B}c");
        assert_eq!(expand("cost $5", "f", &env(&[])).unwrap(), "cost $5");
        assert!(matches!(
            expand("${UNCLOSED", "f", &env(&[])),
            Err(ConfigError::BadSubstitution { .. })
        ));
    }

    #[test]
    fn durations_accept_units_and_combinations() {
        assert_eq!(
            ConfigDuration::parse("10m").unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            ConfigDuration::parse("1h").unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            ConfigDuration::parse("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(
            ConfigDuration::parse("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            ConfigDuration::parse("600").unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(
            ConfigDuration::parse("1s500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            ConfigDuration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert!(ConfigDuration::parse("ms").is_err());
        assert!(ConfigDuration::parse("10m5").is_err());
        assert!(ConfigDuration::parse("10w").is_err());
        assert!(ConfigDuration::parse("h").is_err());
        assert!(ConfigDuration::parse("99999999999999999999d").is_err());
    }

    #[test]
    fn client_credentials_needs_a_secret_but_no_redirect_uri() {
        let service = format!(
            "{MINIMAL}  clients:\n    - id: svc\n      secret: service-secret\n      grant_types: [client_credentials]\n"
        );
        Config::from_yaml(&service, &env(&[("UPSTREAM_SECRET", "s")])).unwrap();
        let public = service.replace("      secret: service-secret\n", "");
        let text = error_text(&public, &[("UPSTREAM_SECRET", "s")]);
        assert!(
            text.contains("oauth.clients[0].grant_types: client_credentials needs a secret"),
            "{text}"
        );
        let browser = service.replace("[client_credentials]", "[authorization_code]");
        let text = error_text(&browser, &[("UPSTREAM_SECRET", "s")]);
        assert!(text.contains("oauth.clients[0].redirect_uris"), "{text}");
    }

    #[test]
    fn signing_names_one_way_to_get_keys_and_one_key_that_signs() {
        let key = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/signing_es256.pem"
        );
        let signing = |block: &str| format!("{MINIMAL}  signing:\n{block}");
        let vars = &[("UPSTREAM_SECRET", "s")];
        let cases = [
            (
                format!("    key_file: {key}\n    rotation_period: 30d\n"),
                "set exactly one of key_file (with algorithm), keys, or rotation_period",
            ),
            (
                format!("    key_file: {key}\n"),
                "oauth.signing.algorithm: required with key_file",
            ),
            (
                format!(
                    "    keys:\n      - {{algorithm: ES256, key_file: {key}}}\n      - {{algorithm: ES256, key_file: {key}}}\n"
                ),
                "oauth.signing.keys: exactly one key must sign",
            ),
            (
                "    keys:\n      - {algorithm: ES256, key_file: /nonexistent.pem, verify_only: true}\n".to_owned(),
                "oauth.signing.keys[0].key_file: /nonexistent.pem is not a readable file",
            ),
            (
                "    rotation_period: 10m\n".to_owned(),
                "oauth.signing.rotation_period: must be at least oauth.access_token_ttl",
            ),
        ];
        for (block, expected) in cases {
            let text = error_text(&signing(&block), vars);
            assert!(text.contains(expected), "{expected} not in {text}");
        }
        for block in [
            format!("    algorithm: RS256\n    key_file: {key}\n"),
            format!(
                "    keys:\n      - {{algorithm: ES256, key_file: {key}}}\n      - {{algorithm: ES256, key_file: {key}, verify_only: true}}\n"
            ),
            "    rotation_period: 30d\n".to_owned(),
        ] {
            Config::from_yaml(&signing(&block), &env(vars)).unwrap();
        }
        let text = error_text(&format!("{MINIMAL}  introspection_tokens: [short]\n"), vars);
        assert!(
            text.contains("oauth.introspection_tokens[0]: must be at least 32"),
            "{text}"
        );
    }

    #[test]
    fn a_proxy_path_is_a_plain_path_outside_the_bridges_own() {
        let proxy = |path: &str| {
            format!("{MINIMAL}proxy:\n  upstream_url: \"http://mcp:3000\"\n  path: \"{path}\"\n")
        };
        let vars = &[("UPSTREAM_SECRET", "s")];
        for bad in [
            "/oauth",
            "/oauth/x",
            "/.well-known/x",
            "mcp",
            "/mcp/",
            "/a/../oauth",
            "/m%63p",
            "/a b",
        ] {
            let text = error_text(&proxy(bad), vars);
            assert!(text.contains("proxy.path"), "{bad}: {text}");
        }
        for good in ["/mcp", "/tools/mcp", "/oauthx"] {
            Config::from_yaml(&proxy(good), &env(vars)).unwrap();
        }
    }

    #[test]
    fn provider_tokens_kept_on_postgres_need_the_encryption_key() {
        for (setting, kept) in [
            ("revalidate_on_refresh", "the provider's refresh tokens"),
            ("keep_tokens", "the provider's tokens"),
        ] {
            let yaml = format!(
                "{MINIMAL}    {setting}: true\nstorage:\n  backend: postgres\n  postgres: {{ url: \"postgres://db/bridge\" }}\n"
            );
            let text = error_text(&yaml, &[("UPSTREAM_SECRET", "s")]);
            assert!(
                text.contains(&format!("oauth.upstream.{setting}: {kept} are kept in the database, so storage.encryption_key is required")),
                "{text}"
            );
            let sealed = format!(
                "{yaml}  encryption_key: \"an encryption key of at least 32 characters\"\n"
            );
            Config::from_yaml(&sealed, &env(&[("UPSTREAM_SECRET", "s")])).unwrap();
        }
    }

    #[test]
    fn bad_duration_names_the_field() {
        let yaml = format!("{MINIMAL}  access_token_ttl: 1x\n");
        let text = error_text(&yaml, &[("UPSTREAM_SECRET", "s")]);
        assert!(text.contains("oauth.access_token_ttl"), "{text}");
        assert!(text.contains("unknown unit"), "{text}");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let yaml = MINIMAL.replace(
            "client_id: bridge",
            "client_id: bridge\n    clientsecret: typo",
        );
        let text = error_text(&yaml, &[("UPSTREAM_SECRET", "s")]);
        assert!(text.contains("oauth.upstream"), "{text}");
        assert!(text.contains("unknown field `clientsecret`"), "{text}");
    }

    #[test]
    fn validation_lists_every_problem_by_field() {
        let yaml = r#"
server:
  address: "nonsense"
  public_url: "http://mcp.example.com"
oauth:
  signing_key: short
  refresh_token_ttl: 10d
  refresh_token_max_lifetime: 1d
  clients:
    - id: a
      redirect_uris: ["http://evil.example.com/cb", "https://ok.example.com/cb#frag"]
      grant_types: [password]
      scopes: [admin]
    - id: a
      redirect_uris: ["https://ok.example.com/cb"]
  upstream:
    issuer: "not a url"
    client_id: ""
    client_secret: "x"
    scopes: [email]
"#;
        let text = error_text(yaml, &[]);
        for expected in [
            "server.address",
            "server.public_url",
            "oauth.signing_key",
            "oauth.refresh_token_max_lifetime",
            "oauth.clients[0].redirect_uris[0]",
            "oauth.clients[0].redirect_uris[1]",
            "oauth.clients[0].grant_types[0]",
            "oauth.clients[0].scopes[0]",
            "oauth.clients[1].id",
            "oauth.upstream.issuer",
            "oauth.upstream.client_id",
            "oauth.upstream.scopes",
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
    }

    #[test]
    fn connection_limits_and_trusted_proxies_have_safe_defaults_and_are_checked() {
        let config = Config::from_yaml(MINIMAL, &env(&[("UPSTREAM_SECRET", "s")])).unwrap();
        assert!(
            config.server.trusted_proxies.is_empty(),
            "nobody is trusted by default"
        );
        assert_eq!(config.server.header_timeout.0, Duration::from_secs(10));
        assert_eq!(config.server.body_timeout.0, Duration::from_secs(30));
        assert_eq!(config.server.idle_timeout.0, Duration::from_secs(60));
        assert_eq!(config.server.max_connections, 10_000);
        let yaml = MINIMAL.replace(
            "  public_url: \"https://mcp.example.com\"",
            "  public_url: \"https://mcp.example.com\"\n  trusted_proxies: [\"10.0.0.0/8\", \"::1/128\"]\n  client_address_header: forwarded",
        );
        let config = Config::from_yaml(&yaml, &env(&[("UPSTREAM_SECRET", "s")])).unwrap();
        assert_eq!(config.server.trusted_proxies.len(), 2);
        let yaml = MINIMAL.replace(
            "  public_url: \"https://mcp.example.com\"",
            "  public_url: \"https://mcp.example.com\"\n  trusted_proxies: [\"10.0.0.0/33\"]",
        );
        assert!(
            error_text(&yaml, &[("UPSTREAM_SECRET", "s")]).contains("server.trusted_proxies[0]")
        );
        let yaml = MINIMAL.replace(
            "  public_url: \"https://mcp.example.com\"",
            "  public_url: \"https://mcp.example.com\"\n  header_timeout: 0s\n  max_connections: 0",
        );
        let text = error_text(&yaml, &[("UPSTREAM_SECRET", "s")]);
        assert!(text.contains("server.header_timeout"), "{text}");
        assert!(text.contains("server.max_connections"), "{text}");
    }

    #[test]
    fn upstream_redirect_uri_must_be_the_bridges_callback() {
        let yaml = MINIMAL.replace(
            "client_id: bridge",
            "client_id: bridge\n    redirect_uri: https://elsewhere.example.com/cb",
        );
        let text = error_text(&yaml, &[("UPSTREAM_SECRET", "s")]);
        assert!(text.contains("oauth.upstream.redirect_uri"), "{text}");
        let yaml = MINIMAL.replace(
            "client_id: bridge",
            "client_id: bridge\n    redirect_uri: https://mcp.example.com/oauth/callback",
        );
        assert!(Config::from_yaml(&yaml, &env(&[("UPSTREAM_SECRET", "s")])).is_ok());
    }

    #[test]
    fn dcr_patterns_and_profiles_are_checked_when_enabled() {
        let yaml = format!(
            "{MINIMAL}  dcr:\n    enabled: true\n    allowed_redirect_patterns: [\"(\"]\n    allowed_redirect_profiles: [claud]\n"
        );
        let text = error_text(&yaml, &[("UPSTREAM_SECRET", "s")]);
        assert!(
            text.contains("oauth.dcr.allowed_redirect_patterns[0]"),
            "{text}"
        );
        let yaml = format!("{MINIMAL}  dcr:\n    enabled: true\n");
        let text = error_text(&yaml, &[("UPSTREAM_SECRET", "s")]);
        assert!(text.contains("nothing could register"), "{text}");
        let yaml = format!(
            "{MINIMAL}  dcr:\n    enabled: true\n    allowed_redirect_profiles: [claude, loopback]\n"
        );
        let config = Config::from_yaml(&yaml, &env(&[("UPSTREAM_SECRET", "s")])).unwrap();
        assert_eq!(config.oauth.dcr.max_clients, 1000);
    }

    #[test]
    fn postgres_storage_needs_its_url_and_a_long_encryption_key() {
        let yaml = |storage: &str| format!("{MINIMAL}storage:\n{storage}");
        let text = error_text(&yaml("  backend: postgres\n"), &[("UPSTREAM_SECRET", "s")]);
        assert!(
            text.contains("storage.postgres: required with backend: postgres"),
            "{text}"
        );
        let text = error_text(
            &yaml(
                "  backend: postgres\n  postgres: { url: \"postgres://u:hunter2@h:notaport/db\", pool_size: 0 }\n",
            ),
            &[("UPSTREAM_SECRET", "s")],
        );
        assert!(
            text.contains("storage.postgres.url: not a PostgreSQL connection string"),
            "{text}"
        );
        assert!(text.contains("storage.postgres.pool_size"), "{text}");
        assert!(
            !text.contains("hunter2"),
            "the URL's password is never echoed: {text}"
        );
        let text = error_text(
            &yaml("  postgres: { url: \"postgres://h/db\" }\n"),
            &[("UPSTREAM_SECRET", "s")],
        );
        assert!(text.contains("set, but backend is memory"), "{text}");
        let text = error_text(
            &yaml("  encryption_key: short\n"),
            &[("UPSTREAM_SECRET", "s")],
        );
        assert!(
            text.contains("storage.encryption_key: must be at least 32 characters"),
            "{text}"
        );
    }

    #[test]
    fn exactly_one_way_to_sign_in_is_required() {
        let text = error_text("server:\n  public_url: https://mcp.example.com\n", &[]);
        assert!(text.contains("none is set"), "{text}");
        let both = format!("{MINIMAL}{LOCAL_USERS}");
        let text = error_text(&both, &[("UPSTREAM_SECRET", "s3cret")]);
        assert!(
            text.contains("oauth.upstream, oauth.upstreams or oauth.local_users, not more"),
            "{text}"
        );
        let single_and_list = format!("{MINIMAL}{TWO_PROVIDERS}");
        let text = error_text(&single_and_list, &[("UPSTREAM_SECRET", "s3cret")]);
        assert!(text.contains("not more"), "{text}");
    }

    /// Two providers under `oauth.upstreams`, to follow a `server` and an `oauth` line.
    const TWO_PROVIDERS: &str = r#"  upstreams:
    - name: corp
      issuer: https://sso.corp.example/realms/staff
      client_id: bridge
      client_secret: one
      email_domains: [corp.example, Corp-Labs.example]
    - name: partner
      display_name: Partner Inc.
      issuer: https://login.partner.example
      client_id: bridge
      client_secret: two
      email_domains: [partner.example]
"#;

    fn with_providers(providers: &str) -> String {
        format!("server:\n  public_url: https://mcp.example.com\noauth:\n{providers}")
    }

    #[test]
    fn several_providers_each_have_a_name_a_callback_and_subjects_of_their_own() {
        let config = Config::from_yaml(&with_providers(TWO_PROVIDERS), &|_| None).unwrap();
        config.validate().unwrap();
        let providers = config.upstream_providers();
        assert_eq!(providers.len(), 2);
        assert_eq!(
            config.callback_url_of(providers[1]).unwrap(),
            "https://mcp.example.com/oauth/callback/partner"
        );
        assert_eq!(providers[0].effective_subject_prefix(), "corp|");
    }

    #[test]
    fn providers_that_could_be_mistaken_for_one_another_are_refused() {
        let problems =
            |providers: &str| match Config::from_yaml(&with_providers(providers), &|_| None) {
                Ok(_) => String::new(),
                Err(error) => error.to_string(),
            };
        let changed = |from: &str, to: &str| problems(&TWO_PROVIDERS.replacen(from, to, 1));
        let text = changed("name: partner", "name: corp");
        assert!(
            text.contains("oauth.upstreams[1].name: \"corp\" names another provider too"),
            "{text}"
        );
        assert!(
            text.contains("subject_prefix"),
            "equal prefixes collide: {text}"
        );
        let text = changed("name: partner", "name: Partner!");
        assert!(
            text.contains("oauth.upstreams[1].name: \"Partner!\" must be"),
            "{text}"
        );
        let text = changed("name: partner", "name: local");
        assert!(text.contains("the local login form's name"), "{text}");
        let text = changed(
            "    - name: partner\n      display_name",
            "    - display_name",
        );
        assert!(text.contains("oauth.upstreams[1].name: required"), "{text}");
        let text = changed("[partner.example]", "[corp.example]");
        assert!(
            text.contains("oauth.upstreams[1].email_domains[0]: \"corp.example\" is served by \"corp\" already"),
            "{text}"
        );
        let text = changed("[partner.example]", "[CORP-labs.EXAMPLE]");
        assert!(
            text.contains("is served by \"corp\" already"),
            "domains compare case-blind: {text}"
        );
        let text = changed("[partner.example]", "[\"@partner.example\"]");
        assert!(text.contains("is not a domain"), "{text}");
        let text = changed(
            "https://login.partner.example",
            "https://sso.corp.example/realms/staff",
        );
        assert!(
            text.contains("oauth.upstreams[1]: the same issuer and client_id"),
            "{text}"
        );
        let text = changed(
            "      email_domains: [partner.example]\n",
            "      email_domains: [partner.example]\n      subject_prefix: \"\"\n",
        );
        assert!(
            text.contains("oauth.upstreams[1].subject_prefix: must not be empty"),
            "{text}"
        );
        let text = changed(
            "      email_domains: [partner.example]\n",
            "      email_domains: [partner.example]\n      subject_prefix: co\n",
        );
        assert!(
            text.contains("oauth.upstreams[1].subject_prefix: \"co\" begins oauth.upstreams[0]'s"),
            "{text}"
        );
        let text = changed(
            "      client_secret: two\n",
            "      client_secret: two\n      redirect_uri: https://mcp.example.com/oauth/callback\n",
        );
        assert!(
            text.contains("oauth.upstreams[1].redirect_uri: must be \"https://mcp.example.com/oauth/callback/partner\""),
            "{text}"
        );
        let text = changed("      client_secret: one\n", "      client_secret: \"\"\n");
        assert!(
            text.contains("oauth.upstreams[0].client_secret: must not be empty"),
            "{text}"
        );
        assert!(problems("  upstreams: []\n").contains("none is set"));
        // One provider in a list may keep the provider's subjects as they are.
        let alone = TWO_PROVIDERS
            .split("    - name: partner")
            .next()
            .unwrap()
            .to_owned()
            + "      subject_prefix: \"\"\n";
        assert_eq!(problems(&alone), "");
    }

    #[test]
    fn the_single_upstream_has_no_name_domains_or_prefix() {
        let text = error_text(
            &MINIMAL.replace(
                "  upstream:\n",
                "  upstream:\n    name: corp\n    email_domains: [corp.example]\n",
            ),
            &[("UPSTREAM_SECRET", "s3cret")],
        );
        assert!(
            text.contains("oauth.upstream.name: only for the providers of oauth.upstreams"),
            "{text}"
        );
        assert!(
            text.contains("oauth.upstream.email_domains: only"),
            "{text}"
        );
    }

    const LOCAL_USERS: &str = r#"  local_users:
    - username: demo
      password_hash: "$2b$04$j3e0A7bViU8DhZq0OYtN8.qYjvxtLrxOwmgYp1SqeDd0rEgMjUfgS"
      email: demo@example.com
      groups: [mcp-users]
"#;

    #[test]
    fn local_users_replace_the_upstream_with_a_safe_default_throttle() {
        let yaml = format!("server:\n  public_url: https://mcp.example.com\noauth:\n{LOCAL_USERS}");
        let config = Config::from_yaml(&yaml, &env(&[])).unwrap();
        assert!(config.oauth.upstream.is_none());
        assert_eq!(config.oauth.local_users[0].username, "demo");
        assert_eq!(config.oauth.login_throttle.max_failures_per_user, 5);
        assert_eq!(config.oauth.login_throttle.max_failures_per_address, 20);
        assert_eq!(config.oauth.login_throttle.window, Duration::from_secs(900));
        assert_eq!(config.oauth.login_throttle.slowdown, Duration::from_secs(1));
    }

    #[test]
    fn local_users_need_unique_names_and_real_bcrypt_hashes() {
        let yaml = r#"
server:
  public_url: https://mcp.example.com
oauth:
  local_users:
    - { username: demo, password_hash: "$2b$04$j3e0A7bViU8DhZq0OYtN8.qYjvxtLrxOwmgYp1SqeDd0rEgMjUfgS" }
    - { username: DEMO, password_hash: "hunter2" }
    - { username: " x", password_hash: "$2b$04$j3e0A7bViU8DhZq0OYtN8.qYjvxtLrxOwmgYp1SqeDd0rEgMjUfgS" }
    - { username: y, subject: demo, password_hash: "$2b$05$j3e0A7bViU8DhZq0OYtN8.qYjvxtLrxOwmgYp1SqeDd0rEgMjUfgS" }
    - { username: z, password_hash: "$2b$31$j3e0A7bViU8DhZq0OYtN8.qYjvxtLrxOwmgYp1SqeDd0rEgMjUfgS" }
  login_throttle: { max_failures_per_user: 0, window: 500ms }
"#;
        let text = error_text(yaml, &[]);
        for expected in [
            "oauth.local_users[1].username: \"DEMO\" is listed twice",
            "oauth.local_users[1].password_hash: must be a bcrypt hash",
            "oauth.local_users[2].username: must be non-empty",
            "oauth.login_throttle: max_failures_per_user",
            "oauth.login_throttle.window: must be whole seconds (500ms given)",
            "oauth.local_users[3].subject: \"demo\" is already another user's subject",
            "oauth.local_users[4].password_hash: bcrypt cost 31 is outside 4 to 16",
            "every password_hash must have the same bcrypt cost",
        ] {
            assert!(text.contains(expected), "{expected} missing in {text}");
        }
        assert!(
            !text.contains("hunter2"),
            "the configured value is not echoed: {text}"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_text_is_a_configuration_or_an_error_never_a_panic(text in "\\PC{0,300}") {
                let _ = Config::from_yaml(&text, &|_| None);
            }

            #[test]
            fn any_edit_of_a_valid_configuration_is_checked_never_a_panic(
                at in 0usize..200, replacement in "[ -~\n]{0,12}", variable in ".{0,20}"
            ) {
                // MINIMAL is ASCII: every index is a character boundary.
                let mut text = MINIMAL.to_owned();
                let at = at.min(text.len());
                text.insert_str(at, &replacement);
                let _ = Config::from_yaml(&text, &|_| Some(variable.clone()));
            }

            #[test]
            fn any_duration_text_parses_or_is_refused(text in ".{0,24}") {
                let _ = ConfigDuration::parse(&text);
            }
        }
    }
}
