//! The OAuth 2.1 protocol: every rule the bridge enforces, with no HTTP types. Functions take
//! the current time as an argument; `http` parses and renders, this module decides.

pub mod admin;
pub(crate) mod authorize;
pub(crate) mod backchannel_logout;
pub(crate) mod bearer;
pub(crate) mod callback;
pub(crate) mod choose;
pub(crate) mod client_assertion;
pub(crate) mod consent;
pub mod disclosure;
pub(crate) mod error;
pub(crate) mod grant_type;
pub mod identity_assertion;
pub(crate) mod introspect;
pub(crate) mod login;
pub(crate) mod login_throttle;
pub(crate) mod manage_registration;
pub(crate) mod metadata;
pub mod pending_cap;
pub(crate) mod pkce;
pub(crate) mod protected_resource;
pub mod redirect_policy;
pub(crate) mod redirect_uri;
pub(crate) mod register;
pub(crate) mod registration;
pub(crate) mod resource;
pub(crate) mod revoke;
pub(crate) mod scope;
pub(crate) mod sign_in;
pub(crate) mod text;
pub mod token;
pub mod token_exchange;
pub mod tool_scopes;
pub(crate) mod userinfo;

#[cfg(test)]
pub(crate) mod test_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use error::{Cause, OAuthError};
pub(crate) use grant_type::GrantType;
pub(crate) use text::for_log;

use crate::clients::ClientRegistry;
use crate::storage::Storage;
use crate::tokens::keys::KeyRing;
use crate::upstream::providers::Providers;

/// Endpoint paths below the issuer, shared by the router and the discovery documents.
pub(crate) mod endpoints {
    pub(crate) const AUTHORIZE: &str = "/oauth/authorize";
    pub(crate) const CALLBACK: &str = "/oauth/callback";
    pub(crate) const CHOOSE: &str = "/oauth/choose";
    pub(crate) const BACKCHANNEL_LOGOUT: &str = "/oauth/backchannel-logout";
    pub(crate) const CONSENT: &str = "/oauth/consent";
    pub(crate) const LOGIN: &str = "/oauth/login";
    /// The logo file of `ui.logo_file`.
    pub(crate) const UI_LOGO: &str = "/ui/logo";
    pub(crate) const REGISTER: &str = "/oauth/register";
    pub(crate) const TOKEN: &str = "/oauth/token";
    pub(crate) const REVOKE: &str = "/oauth/revoke";
    pub(crate) const INTROSPECT: &str = "/oauth/introspect";
    pub(crate) const USERINFO: &str = "/oauth/userinfo";
    pub(crate) const JWKS: &str = "/oauth/jwks";
    pub(crate) const AS_METADATA: &str = "/.well-known/oauth-authorization-server";
    pub(crate) const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
    pub(crate) const HEALTH: &str = "/healthz";
    pub(crate) const READY: &str = "/readyz";
    pub(crate) const METRICS: &str = "/metrics";
    pub(crate) const ADMIN: &str = "/admin";
}

/// How long an authorization code and a pending upstream login live (RFC 6749 §4.1.2 advises
/// ten minutes at most for a code).
pub(crate) const AUTHORIZATION_CODE_TTL: Duration = Duration::from_secs(600);
pub(crate) const PENDING_AUTHORIZATION_TTL: Duration = Duration::from_secs(600);
/// How long a user's approval of a client is remembered.
pub(crate) const REMEMBERED_CONSENT_TTL: Duration = Duration::from_secs(90 * 86400);

/// Request parameters after the HTTP layer refused repeats; empty values count as absent
/// (RFC 6749 §3.1).
#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Sets `name`; the HTTP layer refuses a repeated parameter before it gets here.
    pub(crate) fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    #[cfg(test)]
    pub(crate) fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(crate) fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Params {
    fn from(pairs: [(&str, &str); N]) -> Self {
        Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }
}

/// The protocol's settings, derived once from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer identifier (RFC 8414 §2): `public_url`, with a trailing slash only when the
    /// operator wrote one.
    pub issuer: String,
    pub default_audience: String,
    pub allowed_resources: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub refresh_token_max_lifetime: Duration,
    /// How long a rotated-out refresh token may still be retried while its successor is unused.
    pub refresh_token_retry_window: Duration,
    /// Whether `POST /oauth/register` is served (and advertised).
    pub registration_enabled: bool,
    /// Whether https `client_id`s name metadata documents (advertised).
    pub metadata_documents_enabled: bool,
    /// Hashes of the bearer tokens that may call the introspection endpoint.
    pub introspection_tokens: Vec<crate::tokens::TokenHash>,
    /// Identity claims every access token carries whatever its scope.
    pub access_token_claims: Vec<disclosure::IdentityClaim>,
    /// Whether the jwt-bearer grant (ID-JAG) is offered, and advertised.
    pub jwt_bearer_grant: bool,
    /// Whether the token-exchange grant is offered, and advertised.
    pub token_exchange_grant: bool,
}

impl Settings {
    pub(crate) fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }
}

/// Everything the protocol needs, with no HTTP in it.
pub struct Bridge {
    pub settings: Settings,
    pub clients: ClientRegistry,
    pub storage: Arc<dyn Storage>,
    pub sign_in: SignIn,
    pub keys: Arc<KeyRing>,
    /// With `revalidate_on_refresh` or `keep_tokens` at any provider: seals the providers'
    /// tokens kept for a grant.
    pub sealer: Option<crate::sealing::Sealer>,
    /// Whose kept refresh token is being used at the provider (one use per grant at a time).
    pub renewals: crate::upstream::kept::Renewals,
    /// How many authorizations may be in flight at once.
    pub pending: Arc<pending_cap::PendingCap>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The enterprise identity providers whose ID-JAGs the jwt-bearer grant accepts.
    pub identity_assertions: Option<identity_assertion::IdentityAssertions>,
    /// The rules of RFC 8693 token exchange, when any is configured.
    pub token_exchange: Option<token_exchange::TokenExchange>,
}

impl Bridge {
    /// Whether the grants of provider session `session` are checked with their provider at
    /// each refresh: its `revalidate_on_refresh`, or, for a provider no longer configured,
    /// yes (no refresh can be vouched for).
    pub(crate) fn revalidates(&self, session: Option<&crate::identity::UpstreamSession>) -> bool {
        if !self.revalidates_any() {
            return false;
        }
        match &self.sign_in {
            SignIn::Upstream(providers) => providers
                .of_session(session)
                .is_none_or(|provider| provider.revalidate_on_refresh),
            SignIn::Local(_) => false,
        }
    }

    /// Whether any provider re-validates its grants at each refresh (and the sealer is there to
    /// keep their refresh tokens).
    pub(crate) fn revalidates_any(&self) -> bool {
        self.sealer.is_some()
            && match &self.sign_in {
                SignIn::Upstream(providers) => providers
                    .all()
                    .iter()
                    .any(|provider| provider.revalidate_on_refresh),
                SignIn::Local(_) => false,
            }
    }
}

/// How users prove who they are.
pub enum SignIn {
    /// At an upstream OpenID Connect provider (the user's, or the one they choose), returning
    /// to its `/oauth/callback`.
    Upstream(Arc<Providers>),
    /// At our own form, `/oauth/login`, against `oauth.local_users`.
    Local(Arc<login::LocalLogin>),
}
