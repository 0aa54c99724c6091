//! A bridge wired to in-memory storage, a fixed clock and a scripted upstream, for protocol tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use url::Url;

use super::authorize::{AuthorizationStep, AuthorizeError, UpstreamRedirect, start_authorization};
use super::callback::complete_authorization;
use super::sign_in::SignedIn;
use super::token::{ClientCredentials, TokenResponse, exchange};
use super::{Bridge, OAuthError, Params, Settings, SignIn};
use crate::clients::ClientConfig;
use crate::clients::ClientRegistry;
use crate::clock::{Clock, FixedClock, UnixTime};
use crate::identity::SINGLE_PROVIDER;
use crate::secret::{RefreshToken, SecretString};
use crate::storage::{MemoryStorage, PendingAuthorization, PendingTake};
use crate::tokens::jwt::{AccessTokenClaims, verify_access_token};
use crate::tokens::keys::{KeyRing, SigningKey};
use crate::tokens::{KeySet, TokenHash};
use crate::upstream::claims::AccessPolicy;
use crate::upstream::claims::ClaimsConfig;
use crate::upstream::providers::{Provider, Providers};
use crate::upstream::{Upstream, UpstreamError, UpstreamLogin, UpstreamRefresh, UpstreamRequest};

pub(crate) const ISSUER: &str = "https://bridge.example.com";
/// The scripted provider's issuer.
pub(crate) const UPSTREAM_ISSUER: &str = "https://idp.example.com";
/// The second provider's, in the harness with two.
pub(crate) const PARTNER_ISSUER: &str = "https://login.partner.example";
pub(crate) const PUBLIC_CLIENT: &str = "public-client";
pub(crate) const PUBLIC_REDIRECT: &str = "http://127.0.0.1:4321/callback";
pub(crate) const CONFIDENTIAL_CLIENT: &str = "web-client";
/// A public client that needs the user's consent.
pub(crate) const CONSENTING_CLIENT: &str = "consenting-client";
/// A public client that may not use refresh tokens.
pub(crate) const NO_REFRESH_CLIENT: &str = "no-refresh-client";
pub(crate) const CONFIDENTIAL_SECRET: &str = "web-client-secret";
/// A confidential client that may exchange tokens (a rule only once a test adds one).
pub(crate) const EXCHANGING_CLIENT: &str = "exchanging-server";
pub(crate) const EXCHANGING_SECRET: &str = "exchanging-server-secret";
// RFC 7636 Appendix B.
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub(crate) const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

pub(crate) fn settings() -> Settings {
    Settings {
        issuer: ISSUER.into(),
        default_audience: ISSUER.into(),
        allowed_resources: vec![],
        scopes_supported: ["openid", "profile", "email", "offline_access"]
            .map(String::from)
            .to_vec(),
        access_token_ttl: Duration::from_secs(3600),
        refresh_token_ttl: Duration::from_secs(30 * 86400),
        refresh_token_max_lifetime: Duration::from_secs(90 * 86400),
        refresh_token_retry_window: Duration::from_secs(300),
        registration_enabled: false,
        metadata_documents_enabled: false,
        introspection_tokens: vec![],
        access_token_claims: vec![crate::oauth::disclosure::IdentityClaim::Groups],
        jwt_bearer_grant: false,
        token_exchange_grant: false,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Exchange {
    pub(crate) code: String,
    pub(crate) verifier: String,
    pub(crate) nonce: String,
}

/// An upstream that logs the configured user in, or fails as told.
pub(crate) struct ScriptedUpstream {
    issuer: &'static str,
    ready: AtomicBool,
    claims: Mutex<serde_json::Value>,
    failure: Mutex<Option<UpstreamError>>,
    exchanges: Mutex<Vec<Exchange>>,
}

impl ScriptedUpstream {
    pub(crate) fn new(issuer: &'static str) -> Self {
        ScriptedUpstream {
            issuer,
            ready: AtomicBool::new(true),
            claims: Mutex::new(
                serde_json::json!({"sub": "user-1", "email": "user@corp.com", "name": "User One"}),
            ),
            failure: Mutex::new(None),
            exchanges: Mutex::new(vec![]),
        }
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub(crate) fn set_claims(&self, claims: serde_json::Value) {
        *self.claims.lock().unwrap() = claims;
    }
    pub(crate) fn fail_with(&self, error: UpstreamError) {
        *self.failure.lock().unwrap() = Some(error);
    }
    pub(crate) fn last_exchange(&self) -> Option<Exchange> {
        self.exchanges.lock().unwrap().last().cloned()
    }
}

#[async_trait]
impl Upstream for ScriptedUpstream {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn issuer(&self) -> &str {
        self.issuer
    }

    fn client_id(&self) -> &str {
        "bridge"
    }

    fn authorization_url(&self, request: &UpstreamRequest<'_>) -> Result<Url, UpstreamError> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err(UpstreamError::NotReady);
        }
        let mut url = Url::parse(&format!("{}/authorize", self.issuer)).unwrap();
        url.query_pairs_mut()
            .append_pair("state", request.state)
            .append_pair("nonce", request.nonce)
            .append_pair("code_challenge", &super::pkce::s256(request.pkce_verifier))
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = request.login_hint {
            url.query_pairs_mut().append_pair("login_hint", hint);
        }
        Ok(url)
    }

    async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
        _now: UnixTime,
    ) -> Result<UpstreamLogin, UpstreamError> {
        self.exchanges.lock().unwrap().push(Exchange {
            code: code.into(),
            verifier: pkce_verifier.into(),
            nonce: nonce.into(),
        });
        if let Some(error) = self.failure.lock().unwrap().take() {
            return Err(error);
        }
        Ok(UpstreamLogin {
            claims: self.claims.lock().unwrap().clone(),
            refresh_token: None,
            access_token: None,
        })
    }

    async fn refresh(
        &self,
        _refresh_token: &SecretString,
        _now: UnixTime,
    ) -> Result<UpstreamRefresh, UpstreamError> {
        Err(UpstreamError::RefreshRefused(
            "the scripted provider keeps no sessions".into(),
        ))
    }
}

/// A provider that maps the standard claims and lets everyone in; `callback` `None` is the
/// single `oauth.upstream`'s.
pub(crate) fn provider(
    name: &'static str,
    callback: Option<&str>,
    upstream: Arc<dyn Upstream>,
) -> Provider {
    Provider {
        name,
        display_name: name.to_owned(),
        callback: callback.map(str::to_owned),
        email_domains: Vec::new(),
        foreign_domains: Vec::new(),
        subject_prefix: String::new(),
        claims: ClaimsConfig::default(),
        access_policy: AccessPolicy::default(),
        revalidate_on_refresh: false,
        keep_tokens: false,
        upstream,
    }
}

/// Our authorization code in a redirect back to the client.
pub(crate) fn code_in(url: &Url) -> String {
    url.query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, code)| code.into_owned())
        .expect("the redirect carries a code")
}

/// A login parked upstream: what the upstream received, and the browser's binding cookie.
pub(crate) struct Login {
    pub(crate) state: String,
    pub(crate) nonce: String,
    pub(crate) upstream_challenge: String,
    pub(crate) binding: String,
}

pub(crate) struct Harness {
    pub(crate) bridge: Bridge,
    pub(crate) clock: Arc<FixedClock>,
    pub(crate) upstream: Arc<ScriptedUpstream>,
}

pub(crate) fn public_credentials() -> ClientCredentials {
    ClientCredentials {
        client_id: PUBLIC_CLIENT.into(),
        secret: None,
        assertion: None,
    }
}

pub(crate) fn confidential_credentials() -> ClientCredentials {
    ClientCredentials {
        client_id: CONFIDENTIAL_CLIENT.into(),
        secret: Some(SecretString::new(CONFIDENTIAL_SECRET)),
        assertion: None,
    }
}

impl Harness {
    pub(crate) fn new() -> Self {
        let clients = ClientRegistry::from_config(
            &[
                ClientConfig {
                    id: PUBLIC_CLIENT.into(),
                    secret: None,
                    redirect_uris: vec!["http://127.0.0.1/callback".into()],
                    name: None,
                    scopes: None,
                    grant_types: None,
                    skip_consent: true,
                    id_token_signed_response_alg: None,
                    jwks: None,
                    jwks_uri: None,
                },
                ClientConfig {
                    id: CONSENTING_CLIENT.into(),
                    secret: None,
                    redirect_uris: vec!["http://127.0.0.1/callback".into()],
                    name: Some("Consenting app".into()),
                    scopes: None,
                    grant_types: None,
                    skip_consent: false,
                    id_token_signed_response_alg: None,
                    jwks: None,
                    jwks_uri: None,
                },
                ClientConfig {
                    id: EXCHANGING_CLIENT.into(),
                    secret: Some(SecretString::new(EXCHANGING_SECRET)),
                    redirect_uris: vec![],
                    name: None,
                    scopes: None,
                    grant_types: Some(vec![super::grant_type::TOKEN_EXCHANGE.into()]),
                    skip_consent: false,
                    id_token_signed_response_alg: None,
                    jwks: None,
                    jwks_uri: None,
                },
                ClientConfig {
                    id: NO_REFRESH_CLIENT.into(),
                    secret: None,
                    redirect_uris: vec!["http://127.0.0.1/callback".into()],
                    name: None,
                    scopes: None,
                    grant_types: Some(vec!["authorization_code".into()]),
                    skip_consent: true,
                    id_token_signed_response_alg: None,
                    jwks: None,
                    jwks_uri: None,
                },
                ClientConfig {
                    id: CONFIDENTIAL_CLIENT.into(),
                    secret: Some(SecretString::new(CONFIDENTIAL_SECRET)),
                    redirect_uris: vec!["https://app.example.com/callback".into()],
                    name: Some("Web app".into()),
                    scopes: Some(vec!["openid".into(), "profile".into()]),
                    grant_types: None,
                    skip_consent: true,
                    id_token_signed_response_alg: None,
                    jwks: None,
                    jwks_uri: None,
                },
            ],
            4,
        )
        .unwrap();
        let upstream = Arc::new(ScriptedUpstream::new(UPSTREAM_ISSUER));
        let bridge = Bridge {
            settings: settings(),
            clients,
            storage: Arc::new(MemoryStorage::new()),
            sign_in: SignIn::Upstream(Arc::new(Providers::new(vec![provider(
                SINGLE_PROVIDER,
                None,
                upstream.clone(),
            )]))),
            sealer: None,
            renewals: Default::default(),
            keys: Arc::new(KeyRing::new(
                KeySet::new(SigningKey::generate_es256().unwrap())
                    .with_id_token_keys(vec![id_token_key()]),
            )),
            pending: Arc::new(super::pending_cap::PendingCap::new(10_000)),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            identity_assertions: None,
            token_exchange: None,
        };
        Harness {
            bridge,
            clock: Arc::new(FixedClock::at(1_700_000_000)),
            upstream,
        }
    }

    pub(crate) fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// Signing in at two providers, `corp` (this harness's `upstream`, for `corp.example`
    /// addresses) and `partner` (returned), each with its own callback and subject prefix.
    pub(crate) fn with_two_providers() -> (Harness, Arc<ScriptedUpstream>) {
        let mut harness = Harness::new();
        let partner = Arc::new(ScriptedUpstream::new(PARTNER_ISSUER));
        let mut corp = provider("corp", Some("corp"), harness.upstream.clone());
        corp.email_domains = vec!["corp.example".into()];
        corp.subject_prefix = "corp|".into();
        let mut other = provider("partner", Some("partner"), partner.clone());
        other.display_name = "Partner Inc.".into();
        other.subject_prefix = "partner|".into();
        harness.bridge.sign_in = SignIn::Upstream(Arc::new(Providers::new(vec![corp, other])));
        (harness, partner)
    }

    /// The (first) provider, to change what it accepts.
    pub(crate) fn provider_mut(&mut self) -> &mut Provider {
        match &mut self.bridge.sign_in {
            SignIn::Upstream(providers) => Arc::get_mut(providers)
                .and_then(Providers::first_mut)
                .expect("the harness has its providers to itself"),
            SignIn::Local(_) => panic!("the harness signs in upstream"),
        }
    }

    pub(crate) async fn take_pending(
        &self,
        state: &str,
        binding: &str,
    ) -> Option<PendingAuthorization> {
        match self
            .bridge
            .storage
            .take_pending(
                &TokenHash::of(state),
                Some(&TokenHash::of(binding)),
                self.now(),
            )
            .await
            .unwrap()
        {
            PendingTake::Taken(pending) => Some(*pending),
            _ => None,
        }
    }

    pub(crate) async fn authorize_public(&self) -> Login {
        self.authorize_as(PUBLIC_CLIENT).await
    }

    /// Starts an authorization for one of the public loopback clients.
    pub(crate) async fn authorize_as(&self, client_id: &str) -> Login {
        self.authorize_with(client_id, "openid email").await
    }

    pub(crate) async fn authorize_with(&self, client_id: &str, scope: &str) -> Login {
        let params = self.authorization_params(client_id, scope);
        Self::login_from(self.start(&params).await)
    }

    /// The authorization request the harness always sends, for `client_id` and `scope`.
    pub(crate) fn authorization_params(&self, client_id: &str, scope: &str) -> Params {
        Params::from([
            ("client_id", client_id),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("response_type", "code"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("state", "client-state"),
            ("nonce", "client-nonce"),
            ("scope", scope),
            ("resource", "https://mcp.example.com/mcp"),
        ])
    }

    /// Straight to the upstream redirect: for the clients that skip consent.
    pub(crate) async fn start(&self, params: &Params) -> UpstreamRedirect {
        match start_authorization(&self.bridge, params, None, self.now())
            .await
            .unwrap()
        {
            AuthorizationStep::Upstream(started) => started,
            AuthorizationStep::Consent { .. } => panic!("this client skips consent"),
        }
    }

    pub(crate) fn login_from(started: UpstreamRedirect) -> Login {
        let query: HashMap<_, _> = started.url.query_pairs().into_owned().collect();
        Login {
            state: query["state"].clone(),
            nonce: query["nonce"].clone(),
            upstream_challenge: query["code_challenge"].clone(),
            binding: started.binding_cookie.value,
        }
    }

    pub(crate) async fn callback(
        &self,
        login: &Login,
        extra: &[(&str, &str)],
    ) -> Result<Url, AuthorizeError> {
        self.sign_in(login, extra)
            .await
            .map(|signed_in| signed_in.url)
    }

    pub(crate) async fn sign_in(
        &self,
        login: &Login,
        extra: &[(&str, &str)],
    ) -> Result<SignedIn, AuthorizeError> {
        self.return_to(None, login, extra).await
    }

    /// The provider's answer arriving at the callback of `provider` (`None`: `/oauth/callback`).
    pub(crate) async fn return_to(
        &self,
        provider: Option<&str>,
        login: &Login,
        extra: &[(&str, &str)],
    ) -> Result<SignedIn, AuthorizeError> {
        let mut params = Params::from([("state", login.state.as_str())]);
        for (k, v) in extra {
            params.insert(*k, *v);
        }
        complete_authorization(
            &self.bridge,
            provider,
            &params,
            Some(&login.binding),
            self.now(),
        )
        .await
    }

    pub(crate) async fn code_for_public_client(&self) -> String {
        self.code_for(PUBLIC_CLIENT).await
    }

    pub(crate) async fn code_for(&self, client_id: &str) -> String {
        let login = self.authorize_as(client_id).await;
        let url = self
            .callback(&login, &[("code", "upstream-code")])
            .await
            .unwrap();
        code_in(&url)
    }

    pub(crate) async fn redeem_with(
        &self,
        code: &str,
        overrides: &[(&str, &str)],
    ) -> Result<TokenResponse, OAuthError> {
        self.redeem_as(PUBLIC_CLIENT, code, overrides).await
    }

    pub(crate) async fn redeem_as(
        &self,
        client_id: &str,
        code: &str,
        overrides: &[(&str, &str)],
    ) -> Result<TokenResponse, OAuthError> {
        let mut params = Params::from([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", VERIFIER),
        ]);
        for (k, v) in overrides {
            params.insert(*k, *v);
        }
        let credentials = ClientCredentials {
            client_id: client_id.into(),
            secret: None,
            assertion: None,
        };
        exchange(&self.bridge, &credentials, &params, self.now()).await
    }

    pub(crate) async fn redeem(&self, code: &str) -> Result<TokenResponse, OAuthError> {
        self.redeem_with(code, &[]).await
    }

    pub(crate) async fn tokens_for_public_client(&self) -> TokenResponse {
        let code = self.code_for_public_client().await;
        self.redeem(&code).await.unwrap()
    }

    pub(crate) async fn refresh_as(
        &self,
        credentials: &ClientCredentials,
        refresh_token: &(impl TokenText + ?Sized),
        extra: &[(&str, &str)],
    ) -> Result<TokenResponse, OAuthError> {
        let refresh_token = refresh_token.text();
        let mut params = Params::from([
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ]);
        for (k, v) in extra {
            params.insert(*k, *v);
        }
        exchange(&self.bridge, credentials, &params, self.now()).await
    }

    pub(crate) async fn refresh(
        &self,
        refresh_token: &(impl TokenText + ?Sized),
    ) -> Result<TokenResponse, OAuthError> {
        self.refresh_as(&public_credentials(), refresh_token, &[])
            .await
    }

    pub(crate) fn verify_access_token(&self, token: &str) -> AccessTokenClaims {
        verify_access_token(
            &self.bridge.keys.current(),
            token,
            ISSUER,
            "https://mcp.example.com/mcp",
            self.now(),
        )
        .unwrap()
    }
}

/// A refresh token as a test holds it: the type the bridge returned, or text the test made up.
pub(crate) trait TokenText {
    fn text(&self) -> &str;
}

impl TokenText for str {
    fn text(&self) -> &str {
        self
    }
}

impl TokenText for String {
    fn text(&self) -> &str {
        self
    }
}

impl TokenText for RefreshToken {
    fn text(&self) -> &str {
        self.expose()
    }
}

/// An RSA key for ID tokens from the fixtures: generating one per test would cost more than the
/// test.
pub(crate) fn id_token_key() -> SigningKey {
    const PEM: &str = include_str!("../../tests/fixtures/other_rsa.pem");
    SigningKey::from_rs256_pem(PEM.as_bytes()).unwrap()
}
