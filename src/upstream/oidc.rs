//! The OpenID Connect client for the upstream provider, built on `openidconnect`: discovery with
//! retry, authorization URL with our state/nonce/PKCE, code exchange, full ID token validation.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreErrorResponseType, CoreIdToken,
    CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, RequestTokenError, Scope, TokenResponse,
};
use url::Url;

use super::logout::{self, LogoutRefused, LogoutRequest};
use super::provider_http::ProviderHttp;
use super::{
    LogoutError, ProviderAccessToken, Upstream, UpstreamError, UpstreamLogin, UpstreamRefresh,
    UpstreamRequest,
};
use crate::bounded_read::{BodyError, read_at_most};
use crate::clock::UnixTime;
use crate::error_chain;
use crate::secret::SecretString;

/// A signature failure re-fetches the provider's keys at most this often, whatever an attacker sends.
const MIN_REDISCOVERY_INTERVAL: Duration = Duration::from_secs(60);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Asymmetric algorithms only: an HMAC-signed ID token would be forgeable by anyone holding our
/// upstream client secret, which is a weaker guarantee than the provider's key.
const ALLOWED_ID_TOKEN_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

#[derive(Debug, Clone)]
pub(crate) struct OidcSettings {
    /// The provider's name, for the metrics.
    pub(crate) name: &'static str,
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretString,
    pub(crate) redirect_uri: String,
    pub(crate) scopes: Vec<String>,
    /// Claim paths the bridge maps (email, name, groups): when the ID token lacks one, the
    /// provider's UserInfo endpoint is asked.
    pub(crate) wanted_claims: Vec<String>,
}

/// The client as `from_provider_metadata` builds it: authorization endpoint known, token and
/// user-info endpoints as the provider's metadata says.
type DiscoveredClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// What discovery produced, built once and shared by every login until the next discovery.
struct Discovered {
    client: DiscoveredClient,
    jwks: CoreJsonWebKeySet,
    /// The same keys for the JWTs that are not ID tokens (logout tokens); `None` when the set
    /// holds no key `jsonwebtoken` can use.
    logout_keys: Option<jsonwebtoken::jwk::JwkSet>,
}

/// Why the provider client could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OidcSetupError {
    #[error("upstream issuer")]
    Issuer(#[source] url::ParseError),
    #[error("upstream redirect_uri")]
    RedirectUri(#[source] url::ParseError),
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
}

/// Why discovery failed; the provider may only be starting, so the caller may retry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiscoveryError {
    #[error(transparent)]
    Fetch(Box<dyn std::error::Error + Send + Sync>),
    #[error("the provider's discovery document has no token_endpoint")]
    NoTokenEndpoint,
}

pub struct OidcUpstream {
    settings: OidcSettings,
    issuer: IssuerUrl,
    redirect_uri: RedirectUrl,
    http: ProviderHttp,
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// When an ID token's signature last forced a re-discovery.
    last_forced_refresh: Mutex<Option<Instant>>,
    /// When a logout token naming an unknown key last forced one: kept apart, so that anyone
    /// posting logout tokens cannot spend the ID tokens' allowance.
    last_logout_refresh: Mutex<Option<Instant>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl OidcUpstream {
    pub(crate) fn new(
        settings: OidcSettings,
        timeout: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, OidcSetupError> {
        let issuer = IssuerUrl::new(settings.issuer.clone()).map_err(OidcSetupError::Issuer)?;
        let redirect_uri =
            RedirectUrl::new(settings.redirect_uri.clone()).map_err(OidcSetupError::RedirectUri)?;
        // Redirects off: a provider's endpoints must not bounce us to other hosts.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(OidcSetupError::HttpClient)?;
        let http = ProviderHttp::new(http);
        Ok(OidcUpstream {
            settings,
            issuer,
            redirect_uri,
            http,
            discovered: RwLock::new(None),
            last_forced_refresh: Mutex::new(None),
            last_logout_refresh: Mutex::new(None),
            metrics,
        })
    }

    /// Fetches the discovery document and JWKS (the library checks the issuer matches) and
    /// builds the client every login then shares.
    pub(crate) async fn discover(&self) -> Result<(), DiscoveryError> {
        let started = Instant::now();
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http).await;
        self.metrics.upstream_call(
            self.settings.name,
            "discovery",
            started.elapsed(),
            metadata.is_ok(),
        );
        let metadata = metadata.map_err(|e| DiscoveryError::Fetch(Box::new(e)))?;
        if metadata.token_endpoint().is_none() {
            return Err(DiscoveryError::NoTokenEndpoint);
        }
        let auth_type = match metadata.token_endpoint_auth_methods_supported() {
            Some(methods)
                if !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                    && methods.contains(&CoreClientAuthMethod::ClientSecretPost) =>
            {
                AuthType::RequestBody
            }
            _ => AuthType::BasicAuth,
        };
        let jwks = metadata.jwks().clone();
        let logout_keys = match serde_json::to_value(&jwks)
            .map_err(|_| "the key set cannot be read")
            .and_then(|set| crate::oauth::client_assertion::published_key_set(&set))
        {
            Ok(keys) => Some(keys),
            Err(reason) => {
                tracing::warn!(
                    reason,
                    "the provider's keys cannot verify back-channel logout tokens (RS*, PS*, ES256, ES384 or EdDSA keys, named by kid when there are several); logout tokens will be refused"
                );
                None
            }
        };
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(
                self.settings.client_secret.expose().to_owned(),
            )),
        )
        .set_redirect_uri(self.redirect_uri.clone())
        .set_auth_type(auth_type);
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(Arc::new(Discovered {
                client,
                jwks,
                logout_keys,
            }));
        }
        Ok(())
    }

    /// Keeps trying discovery in the background until it succeeds, so the bridge can start before
    /// its provider does.
    pub(crate) fn discover_in_background(self: &Arc<Self>) {
        let upstream = Arc::clone(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_secs(1);
            loop {
                match upstream.discover().await {
                    Ok(()) => {
                        tracing::info!(issuer = %upstream.settings.issuer, "upstream provider discovered");
                        return;
                    }
                    Err(error) => {
                        let error = error_chain(&error);
                        tracing::warn!(issuer = %upstream.settings.issuer, %error, retry_in = ?delay, "upstream discovery failed");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        });
    }

    fn current(&self) -> Result<Arc<Discovered>, UpstreamError> {
        self.discovered
            .read()
            .ok()
            .and_then(|slot| slot.clone())
            .ok_or(UpstreamError::NotReady)
    }

    /// Claims the right to re-discover because of a failed signature; at most once a minute.
    fn claim_forced_refresh(&self) -> bool {
        Self::claim_refresh(&self.last_forced_refresh)
    }

    fn claim_refresh(slot: &Mutex<Option<Instant>>) -> bool {
        let Ok(mut last) = slot.lock() else {
            return false;
        };
        if last.is_some_and(|at| at.elapsed() < MIN_REDISCOVERY_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Verifies an ID token; when its signature fails, the provider may have rotated its keys
    /// since discovery: they are fetched again once (rate-limited) and the check repeated.
    async fn verify_with_key_refresh(
        &self,
        id_token: &CoreIdToken,
        nonce: Option<&str>,
        now: UnixTime,
    ) -> Result<serde_json::Value, UpstreamError> {
        match self.verify(id_token, nonce, now) {
            Err(UpstreamError::InvalidIdToken(reason))
                if reason.starts_with(SIGNATURE_PREFIX) && self.claim_forced_refresh() =>
            {
                tracing::info!("ID token signature did not verify; refreshing the provider's keys");
                self.discover()
                    .await
                    .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
                self.verify(id_token, nonce, now)
            }
            other => other,
        }
    }

    fn verify(
        &self,
        id_token: &CoreIdToken,
        nonce: Option<&str>,
        now: UnixTime,
    ) -> Result<serde_json::Value, UpstreamError> {
        let discovered = self.current()?;
        verify_id_token(
            id_token,
            &discovered.jwks,
            &self.settings,
            &self.issuer,
            nonce,
            now,
        )
    }
}

impl OidcUpstream {
    /// A logout token's claims if the provider's current keys sign it; `Ok(None)` when it names
    /// a key (`kid`) they do not hold, which the provider may have rotated in since discovery.
    fn logout_claims(
        &self,
        token: &str,
        kid: Option<&str>,
    ) -> Result<Option<serde_json::Value>, LogoutError> {
        let discovered = self.current().map_err(LogoutError::Unavailable)?;
        let Some(keys) = discovered.logout_keys.as_ref() else {
            return Ok(None);
        };
        if kid.is_some_and(|kid| keys.find(kid).is_none()) {
            return Ok(None);
        }
        crate::oauth::client_assertion::signed_claims::<serde_json::Value>(token, keys)
            .map(|(_, claims)| Some(claims))
            .map_err(|_| {
                LogoutError::Refused(LogoutRefused(
                    "the token is not signed by the provider's keys",
                ))
            })
    }
}

#[async_trait]
impl Upstream for OidcUpstream {
    fn is_ready(&self) -> bool {
        self.current().is_ok()
    }

    fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    fn client_id(&self) -> &str {
        &self.settings.client_id
    }

    fn authorization_url(&self, request: &UpstreamRequest<'_>) -> Result<Url, UpstreamError> {
        let discovered = self.current()?;
        let state = request.state.to_owned();
        let nonce = request.nonce.to_owned();
        let mut authorize = discovered.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || Nonce::new(nonce),
        );
        // openidconnect adds `openid` itself.
        for scope in self
            .settings
            .scopes
            .iter()
            .filter(|s| s.as_str() != "openid")
        {
            authorize = authorize.add_scope(Scope::new(scope.clone()));
        }
        let verifier = openidconnect::PkceCodeVerifier::new(request.pkce_verifier.to_owned());
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        if let Some(hint) = request.login_hint {
            authorize = authorize.set_login_hint(openidconnect::LoginHint::new(hint.to_owned()));
        }
        let (url, _, _) = authorize.set_pkce_challenge(challenge).url();
        Ok(url)
    }

    async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        now: UnixTime,
    ) -> Result<UpstreamLogin, UpstreamError> {
        let discovered = self.current()?;
        let request = discovered
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| {
                UpstreamError::Rejected(format!("the provider has no token endpoint: {e}"))
            })?
            .set_pkce_verifier(openidconnect::PkceCodeVerifier::new(
                pkce_verifier.to_owned(),
            ));
        let started = Instant::now();
        let response = request.request_async(&self.http).await;
        self.metrics.upstream_call(
            self.settings.name,
            "token",
            started.elapsed(),
            answered(&response),
        );
        let response = response.map_err(token_request_error)?;
        let refresh_token = response
            .refresh_token()
            .map(|token| SecretString::new(token.secret()));
        let access_token = provider_access_token(&response, now);
        let id_token = response.id_token().ok_or_else(|| {
            UpstreamError::Rejected("the token response has no id_token".to_owned())
        })?;
        let claims = self
            .verify_with_key_refresh(id_token, Some(nonce), now)
            .await?;
        // OIDC Core §5.4: after a code flow the provider may release the claims of `email`,
        // `profile` and custom scopes at the UserInfo endpoint only (panva's certified
        // oidc-provider does), so the ID token alone can lack the very claims we map. Asked only
        // then: some providers' access tokens are not for their UserInfo endpoint at all (Entra
        // ID with an API scope), and the ID token is enough for them.
        let missing = self
            .settings
            .wanted_claims
            .iter()
            .any(|path| super::claims::lookup(&claims, path).is_none());
        let Some(url) = discovered.client.user_info_url().filter(|_| missing) else {
            return Ok(UpstreamLogin {
                claims,
                refresh_token,
                access_token,
            });
        };
        let claims = match self
            .fetch_userinfo(url.url(), response.access_token().secret())
            .await
        {
            Ok(userinfo) => merge_userinfo(claims, userinfo)?,
            Err(error) => {
                // The ID token is valid; what it lacks stays missing (a group policy may refuse).
                tracing::warn!(%error, "userinfo unavailable; using the ID token's claims alone");
                claims
            }
        };
        Ok(UpstreamLogin {
            claims,
            refresh_token,
            access_token,
        })
    }

    async fn verify_logout_token(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<LogoutRequest, LogoutError> {
        // Nothing is verified, nor any key fetched, for what no provider would send.
        if token.len() > crate::oauth::client_assertion::MAX_ASSERTION_BYTES {
            return Err(LogoutRefused("the token is too long").into());
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| LogoutRefused("the logout token is not a signed JWT"))?;
        if !crate::oauth::client_assertion::SIGNING_ALGORITHMS.contains(&header.alg) {
            return Err(LogoutRefused(
                "the logout token is not signed with an asymmetric algorithm the bridge verifies",
            )
            .into());
        }
        logout::check_type(header.typ.as_deref())?;
        let unverified: serde_json::Value = jsonwebtoken::dangerous::insecure_decode(token)
            .map_err(|_| LogoutRefused("the logout token's claims cannot be read"))?
            .claims;
        let (issuer, client_id) = (self.issuer.as_str(), self.settings.client_id.as_str());
        logout::check_claims(&unverified, issuer, client_id, now)?;
        let kid = header.kid.as_deref();
        let claims = match self.logout_claims(token, kid)? {
            Some(claims) => claims,
            // A key the bridge has not seen: fetched once, at most once a minute whoever asks.
            None if Self::claim_refresh(&self.last_logout_refresh) => {
                tracing::info!(
                    "a logout token names a key not yet known; refreshing the provider's keys"
                );
                self.discover().await.map_err(|error| {
                    LogoutError::Unavailable(UpstreamError::Unreachable(error_chain(&error)))
                })?;
                self.logout_claims(token, kid)?.ok_or(LogoutRefused(
                    "the token names a key the provider does not publish",
                ))?
            }
            // Asked again too soon: the provider may retry once the keys can be fetched again.
            None => {
                return Err(LogoutError::Unavailable(UpstreamError::Unreachable(
                    "the provider's keys were refreshed less than a minute ago".to_owned(),
                )));
            }
        };
        Ok(logout::check_claims(&claims, issuer, client_id, now)?)
    }

    async fn refresh(
        &self,
        refresh_token: &SecretString,
        now: UnixTime,
    ) -> Result<UpstreamRefresh, UpstreamError> {
        let discovered = self.current()?;
        let token = openidconnect::RefreshToken::new(refresh_token.expose().to_owned());
        let request = discovered
            .client
            .exchange_refresh_token(&token)
            .map_err(|e| {
                UpstreamError::Rejected(format!("the provider has no token endpoint: {e}"))
            })?;
        let started = Instant::now();
        let response = request.request_async(&self.http).await;
        self.metrics.upstream_call(
            self.settings.name,
            "refresh",
            started.elapsed(),
            answered(&response),
        );
        let response = response.map_err(|error| match error {
            // RFC 6749 §5.2: the refresh token is no longer valid — the session is over.
            RequestTokenError::ServerResponse(body)
                if *body.error() == CoreErrorResponseType::InvalidGrant =>
            {
                UpstreamError::RefreshRefused("error invalid_grant".to_owned())
            }
            // A 5xx page or an empty body is the provider in trouble, not a verdict.
            RequestTokenError::Parse(..) | RequestTokenError::Other(_) => {
                UpstreamError::Unreachable(
                    "the provider's token endpoint answered no token response".to_owned(),
                )
            }
            other => token_request_error(other),
        })?;
        // OIDC Core §12.2: a new ID token carries no nonce, but must be valid otherwise.
        let claims = match response.id_token() {
            Some(id_token) => Some(self.verify_with_key_refresh(id_token, None, now).await?),
            None => None,
        };
        Ok(UpstreamRefresh {
            refresh_token: response
                .refresh_token()
                .map(|token| SecretString::new(token.secret())),
            claims,
            access_token: provider_access_token(&response, now),
        })
    }
}

/// The access token of a token response, as the bridge can hand it on: a bearer token (one
/// bound to our key by DPoP or mTLS is of no use to anyone else).
fn provider_access_token(
    response: &openidconnect::core::CoreTokenResponse,
    now: UnixTime,
) -> Option<ProviderAccessToken> {
    if *response.token_type() != openidconnect::core::CoreTokenType::Bearer {
        return None;
    }
    let lifetime = response
        .expires_in()
        .map_or(super::ASSUMED_ACCESS_TOKEN_LIFETIME_SECS, |lifetime| {
            lifetime.as_secs()
        });
    let scope = response.scopes().map(|scopes| {
        scopes
            .iter()
            .map(|scope| scope.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    });
    Some(ProviderAccessToken {
        token: SecretString::new(response.access_token().secret()),
        expires_at: now.plus(std::time::Duration::from_secs(lifetime)),
        scope,
    })
}

fn token_request_error<E: std::error::Error + 'static>(
    error: RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> UpstreamError {
    match error {
        RequestTokenError::ServerResponse(body) => {
            UpstreamError::Rejected(format!("error {}", body.error()))
        }
        RequestTokenError::Request(e) => UpstreamError::Unreachable(error_chain(&e)),
        // The path only: the parser's message may quote values from the response.
        RequestTokenError::Parse(e, _) => {
            UpstreamError::Rejected(format!("unparseable token response at {}", e.path()))
        }
        RequestTokenError::Other(e) => UpstreamError::Rejected(e),
    }
}

impl OidcUpstream {
    async fn fetch_userinfo(
        &self,
        url: &Url,
        access_token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, UpstreamError> {
        let started = Instant::now();
        let answer = self.read_userinfo(url, access_token).await;
        self.metrics.upstream_call(
            self.settings.name,
            "userinfo",
            started.elapsed(),
            answer.is_ok(),
        );
        answer
    }

    async fn read_userinfo(
        &self,
        url: &Url,
        access_token: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, UpstreamError> {
        let mut response = self
            .http
            .client()
            .get(url.clone())
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("userinfo: {}", error_chain(&e))))?;
        if !response.status().is_success() {
            return Err(UpstreamError::Rejected(format!(
                "the userinfo endpoint answered {}",
                response.status()
            )));
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media_type != "application/json" {
            // `application/jwt` is a signed or encrypted response, which we never ask for.
            return Err(UpstreamError::Rejected(format!(
                "the userinfo endpoint answered {media_type:?}, not application/json"
            )));
        }
        let body = match read_at_most(&mut response, MAX_USERINFO_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Err(UpstreamError::Rejected(format!(
                    "the userinfo response is larger than {MAX_USERINFO_BYTES} bytes"
                )));
            }
            Err(BodyError::Read(e)) => {
                return Err(UpstreamError::Unreachable(format!(
                    "userinfo: {}",
                    error_chain(&e)
                )));
            }
        };
        match serde_json::from_slice(&body) {
            Ok(serde_json::Value::Object(claims)) => Ok(claims),
            _ => Err(UpstreamError::Rejected(
                "the userinfo response is not a JSON object".to_owned(),
            )),
        }
    }
}

const MAX_USERINFO_BYTES: usize = 64 * 1024;

/// Claims about the sign-in itself, which only the validated ID token may speak for.
const PROTOCOL_CLAIMS: [&str; 15] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "auth_time",
    "acr",
    "amr",
    "azp",
    "sid",
    "at_hash",
    "c_hash",
    "jti",
];

/// Adds the UserInfo claims the ID token lacks. The ID token's own values win (they are
/// signed), protocol claims come from it alone, and `email` travels with its `email_verified`:
/// both from the ID token when it has an address, else both from UserInfo. A UserInfo response
/// about another subject is refused (OIDC Core §5.3.2: token substitution).
pub(crate) fn merge_userinfo(
    mut id_token_claims: serde_json::Value,
    mut userinfo: serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, UpstreamError> {
    let subject = id_token_claims
        .get("sub")
        .and_then(serde_json::Value::as_str);
    let userinfo_subject = userinfo.get("sub").and_then(serde_json::Value::as_str);
    if subject.is_none() || subject != userinfo_subject {
        return Err(UpstreamError::InvalidUserInfo(
            "it is about another subject than the ID token".to_owned(),
        ));
    }
    let Some(claims) = id_token_claims.as_object_mut() else {
        return Ok(id_token_claims);
    };
    if claims.contains_key("email") {
        // UserInfo's flag counts only when it speaks of the same address.
        if claims.get("email") != userinfo.get("email") {
            userinfo.remove("email_verified");
        }
        userinfo.remove("email");
    } else if userinfo.contains_key("email") {
        claims.remove("email_verified");
    }
    for (name, value) in userinfo {
        if !PROTOCOL_CLAIMS.contains(&name.as_str()) {
            claims.entry(name).or_insert(value);
        }
    }
    Ok(id_token_claims)
}

const SIGNATURE_PREFIX: &str = "signature:";

/// Validates an ID token (signature against `jwks`, `iss`, `aud`, `exp`, `nonce`) at time `now`
/// and returns its claims as JSON for mapping.
pub(crate) fn verify_id_token(
    id_token: &CoreIdToken,
    jwks: &CoreJsonWebKeySet,
    settings: &OidcSettings,
    issuer: &IssuerUrl,
    nonce: Option<&str>,
    now: UnixTime,
) -> Result<serde_json::Value, UpstreamError> {
    let at = chrono::DateTime::from_timestamp(now.seconds(), 0).unwrap_or_default();
    let verifier = CoreIdTokenVerifier::new_confidential_client(
        ClientId::new(settings.client_id.clone()),
        ClientSecret::new(settings.client_secret.expose().to_owned()),
        issuer.clone(),
        jwks.clone(),
    )
    .set_allowed_algs(ALLOWED_ID_TOKEN_ALGS)
    .set_time_fn(move || at);
    let verified = match nonce {
        Some(nonce) => id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map(|_| ()),
        // Refreshed ID tokens carry no nonce (OIDC Core §12.2).
        None => id_token
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .map(|_| ()),
    };
    verified.map_err(|e| {
        UpstreamError::InvalidIdToken(match e {
            ClaimsVerificationError::SignatureVerification(e) => {
                format!("{SIGNATURE_PREFIX} {e}")
            }
            other => other.to_string(),
        })
    })?;
    // The signature is verified; read the payload as plain JSON so any claim path can be mapped.
    let compact = id_token.to_string();
    let payload = compact
        .split('.')
        .nth(1)
        .and_then(|part| URL_SAFE_NO_PAD.decode(part).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| UpstreamError::InvalidIdToken("unreadable payload".to_owned()))?;
    Ok(payload)
}

/// Whether the provider answered: an OAuth error (a bad code, a session that ended) is its
/// verdict, not its failure; no answer, or one that is not OAuth, is.
fn answered<T, E: std::error::Error + 'static>(
    response: &Result<
        T,
        RequestTokenError<E, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
    >,
) -> bool {
    matches!(response, Ok(_) | Err(RequestTokenError::ServerResponse(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;
    use std::str::FromStr;

    const ISSUER: &str = "https://idp.example.com/realms/test";

    fn parse_id_token(compact: &str) -> Result<CoreIdToken, UpstreamError> {
        CoreIdToken::from_str(compact).map_err(|e| UpstreamError::InvalidIdToken(e.to_string()))
    }
    const NOW: i64 = 1_700_000_000;
    const UPSTREAM_KEY: &str = include_str!("../../tests/fixtures/upstream_rsa.pem");
    const OTHER_KEY: &str = include_str!("../../tests/fixtures/other_rsa.pem");

    fn settings() -> OidcSettings {
        OidcSettings {
            name: "upstream",
            issuer: ISSUER.into(),
            client_id: "bridge".into(),
            client_secret: SecretString::new("upstream-secret"),
            redirect_uri: "https://bridge.example.com/oauth/callback".into(),
            scopes: vec!["openid".into()],
            wanted_claims: vec!["email".into()],
        }
    }

    fn jwks() -> CoreJsonWebKeySet {
        let key = EncodingKey::from_rsa_pem(UPSTREAM_KEY.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some("k1".into());
        serde_json::from_value(serde_json::to_value(JwkSet { keys: vec![jwk] }).unwrap()).unwrap()
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": ISSUER, "sub": "user-1", "aud": "bridge", "iat": NOW, "exp": NOW + 300,
            "nonce": "n-123", "email": "a@corp.com", "realm_access": {"roles": ["dev"]}
        })
    }

    fn sign(claims: &serde_json::Value, pem: &str) -> CoreIdToken {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        let token = jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap();
        parse_id_token(&token).unwrap()
    }

    fn verify(
        token: &CoreIdToken,
        nonce: &str,
        now: i64,
    ) -> Result<serde_json::Value, UpstreamError> {
        verify_id_token(
            token,
            &jwks(),
            &settings(),
            &IssuerUrl::new(ISSUER.into()).unwrap(),
            Some(nonce),
            UnixTime(now),
        )
    }

    fn rejection(result: Result<serde_json::Value, UpstreamError>) -> String {
        match result {
            Err(UpstreamError::InvalidIdToken(reason)) => reason,
            other => panic!("expected an invalid ID token, got {other:?}"),
        }
    }

    #[test]
    fn userinfo_fills_in_what_the_id_token_lacks_but_never_overrides_it() {
        let id_token =
            json!({"iss": ISSUER, "sub": "user-1", "aud": "bridge", "email": "signed@corp.com"});
        let userinfo = json!({
            "sub": "user-1", "email": "unsigned@corp.com", "name": "Ada", "groups": ["dev"],
            "aud": "someone-else"
        });
        let merged = merge_userinfo(id_token, userinfo.as_object().unwrap().clone()).unwrap();
        assert_eq!(merged["email"], "signed@corp.com");
        assert_eq!(merged["aud"], "bridge");
        assert_eq!(merged["name"], "Ada");
        assert_eq!(merged["groups"], json!(["dev"]));
    }

    #[test]
    fn userinfo_about_another_subject_is_refused() {
        for userinfo in [
            json!({"sub": "user-2", "name": "Eve"}),
            json!({"name": "Eve"}),
        ] {
            let result = merge_userinfo(
                json!({"sub": "user-1"}),
                userinfo.as_object().unwrap().clone(),
            );
            assert!(
                matches!(&result, Err(UpstreamError::InvalidUserInfo(reason)) if reason.contains("another subject")),
                "{result:?}"
            );
        }
    }

    #[test]
    fn valid_id_token_yields_all_claims() {
        let payload = verify(&sign(&claims(), UPSTREAM_KEY), "n-123", NOW).unwrap();
        assert_eq!(payload["realm_access"]["roles"][0], "dev");
        assert_eq!(payload["sub"], "user-1");
    }

    #[test]
    fn wrong_nonce_is_refused() {
        let reason = rejection(verify(&sign(&claims(), UPSTREAM_KEY), "other-nonce", NOW));
        assert!(reason.contains("nonce"), "{reason}");
    }

    #[test]
    fn expired_id_token_is_refused() {
        let reason = rejection(verify(&sign(&claims(), UPSTREAM_KEY), "n-123", NOW + 301));
        assert!(reason.starts_with("Expired"), "{reason}");
    }

    #[test]
    fn wrong_audience_is_refused() {
        let mut claims = claims();
        claims["aud"] = json!("someone-else");
        let reason = rejection(verify(&sign(&claims, UPSTREAM_KEY), "n-123", NOW));
        assert!(reason.contains("audiences"), "{reason}");
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let mut claims = claims();
        claims["iss"] = json!("https://evil.example.com");
        let reason = rejection(verify(&sign(&claims, UPSTREAM_KEY), "n-123", NOW));
        assert!(reason.contains("issuer"), "{reason}");
    }

    #[test]
    fn foreign_signature_is_refused() {
        let reason = rejection(verify(&sign(&claims(), OTHER_KEY), "n-123", NOW));
        assert!(reason.starts_with(SIGNATURE_PREFIX), "{reason}");
    }

    #[test]
    fn tampered_payload_is_refused() {
        let genuine = sign(&claims(), UPSTREAM_KEY).to_string();
        let mut forged_claims = claims();
        forged_claims["sub"] = json!("admin");
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        let parts: Vec<&str> = genuine.split('.').collect();
        let tampered =
            parse_id_token(&format!("{}.{}.{}", parts[0], forged_payload, parts[2])).unwrap();
        let reason = rejection(verify(&tampered, "n-123", NOW));
        assert!(reason.starts_with(SIGNATURE_PREFIX), "{reason}");
    }

    #[test]
    fn unsigned_id_token_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        let result =
            parse_id_token(&format!("{header}.{payload}.")).and_then(|t| verify(&t, "n-123", NOW));
        assert!(matches!(result, Err(UpstreamError::InvalidIdToken(_))));
    }
}
