//! The upstream OpenID Connect provider the user logs in with; a trait so tests can swap it.

pub mod claims;
pub mod kept;
pub mod logout;
pub mod oidc;
mod provider_http;
pub mod providers;
pub(crate) mod settings;

use async_trait::async_trait;
use url::Url;

use crate::clock::UnixTime;
use crate::secret::SecretString;

pub use oidc::OidcUpstream;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Discovery has not succeeded yet (the provider may still be starting).
    #[error("the identity provider is not discovered yet")]
    NotReady,
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(String),
    /// The provider answered the code exchange with an error or something unusable.
    #[error("the identity provider refused the code exchange: {0}")]
    Rejected(String),
    #[error("the ID token failed validation: {0}")]
    InvalidIdToken(String),
    /// The UserInfo response is about another subject than the ID token.
    #[error("the userinfo response failed validation: {0}")]
    InvalidUserInfo(String),
    /// The provider refused to refresh: the user was disabled or the session ended.
    #[error("the identity provider refused the refresh: {0}")]
    RefreshRefused(String),
}

/// A completed upstream login.
#[derive(Debug)]
pub struct UpstreamLogin {
    /// The validated ID token's claims, completed from UserInfo where needed.
    pub claims: serde_json::Value,
    /// Kept (sealed) only when sessions are re-validated on refresh or tokens are kept.
    pub(crate) refresh_token: Option<SecretString>,
    /// Kept (sealed) only with `keep_tokens`; none when it is not a bearer token.
    pub(crate) access_token: Option<ProviderAccessToken>,
}

/// The provider's access token for the user, as it answered it.
#[derive(Debug, Clone)]
pub struct ProviderAccessToken {
    pub(crate) token: SecretString,
    pub(crate) expires_at: UnixTime,
    /// What the provider said the token's scope is, if it said.
    pub(crate) scope: Option<String>,
}

/// How long a provider's access token is taken to live when its answer did not say
/// (`expires_in` is only RECOMMENDED, RFC 6749 §5.1): short, so that an unknown lifetime costs a
/// refresh at the provider rather than an API call with a dead token.
pub(crate) const ASSUMED_ACCESS_TOKEN_LIFETIME_SECS: u64 = 300;

/// The provider's answer to a refresh: the session is still alive.
#[derive(Debug)]
pub struct UpstreamRefresh {
    /// The replacement, when the provider rotates its refresh tokens.
    pub refresh_token: Option<SecretString>,
    /// The claims of a new ID token, when the provider sent one (validated, nonce aside).
    pub(crate) claims: Option<serde_json::Value>,
    /// The new access token; none when it is not a bearer token.
    pub(crate) access_token: Option<ProviderAccessToken>,
}

/// What the bridge sends along with the user: its own state, nonce and PKCE challenge.
#[derive(Debug, Clone)]
pub struct UpstreamRequest<'a> {
    pub state: &'a str,
    pub(crate) nonce: &'a str,
    /// The verifier stays with us; the implementation sends its S256 challenge.
    pub(crate) pkce_verifier: &'a str,
    /// The client's `login_hint`, passed on so the provider can fill in who signs in.
    pub(crate) login_hint: Option<&'a str>,
}

#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Whether discovery has succeeded, so logins can start (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// The provider's issuer identifier, as configured.
    fn issuer(&self) -> &str;

    /// Our client id at the provider.
    fn client_id(&self) -> &str;

    fn authorization_url(&self, request: &UpstreamRequest<'_>) -> Result<Url, UpstreamError>;

    /// Exchanges the upstream code and returns the ID token's claims once fully validated
    /// (signature, `iss`, `aud`, `exp`, `nonce`).
    async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        now: UnixTime,
    ) -> Result<UpstreamLogin, UpstreamError>;

    /// Uses the provider's refresh token, to learn whether the user's session still stands.
    async fn refresh(
        &self,
        refresh_token: &SecretString,
        now: UnixTime,
    ) -> Result<UpstreamRefresh, UpstreamError>;

    /// Checks a back-channel logout token the provider sent (OpenID Connect Back-Channel Logout
    /// 1.0 §2.6): signed by the provider's keys, then `logout::check_claims`.
    async fn verify_logout_token(
        &self,
        _token: &str,
        _now: UnixTime,
    ) -> Result<logout::LogoutRequest, LogoutError> {
        Err(LogoutError::Refused(logout::LogoutRefused(
            "this provider's logout tokens are not accepted",
        )))
    }
}

/// Why a logout token was not acted on.
#[derive(Debug, thiserror::Error)]
pub enum LogoutError {
    #[error(transparent)]
    Refused(#[from] logout::LogoutRefused),
    /// The provider's keys are not at hand (not discovered yet, or unreachable).
    #[error(transparent)]
    Unavailable(UpstreamError),
}

/// Whether each provider's discovery succeeded, as a gauge of the metrics (`upstream_discovered`,
/// by provider): until it has, no sign-in can start there.
pub(crate) struct Discovery(pub(crate) std::sync::Arc<providers::Providers>);

impl crate::metrics::Gauges for Discovery {
    fn read(&self) -> Vec<crate::metrics::GaugeReading> {
        self.0
            .all()
            .iter()
            .map(|provider| crate::metrics::GaugeReading {
                name: "upstream_discovered",
                help: "1 once the identity provider's discovery document was read and sign-ins can start there, by provider",
                label: Some(("provider", provider.name)),
                value: i64::from(provider.upstream.is_ready()),
            })
            .collect()
    }
}
