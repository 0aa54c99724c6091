//! The authorization endpoint (RFC 6749 §4.1.1, RFC 7636, RFC 8707): validate the request, ask
//! for the user's consent when the client needs it, park it as a pending authorization, and send
//! the user to the upstream login.

use url::Url;

use super::{
    Bridge, GrantType, OAuthError, PENDING_AUTHORIZATION_TTL, Params, SignIn, endpoints, for_log,
    pkce, resource, scope,
};
use crate::clients::ClientLookupError;
use crate::clock::UnixTime;
use crate::secret::FlowSecret;
use crate::storage::{AuthorizationRequest, Consent, ConsentRequest, PendingAuthorization};
use crate::tokens::opaque::random_string;
use crate::tokens::{TokenHash, generate_token};
use crate::upstream::UpstreamRequest;
use crate::upstream::providers::Provider;

/// How long (in bytes) each parameter that the bridge stores or echoes may be. Beyond, the
/// request is refused with a page before any client is looked up or anything is stored, so no
/// request can make the bridge hold more than these add up to (plus fixed-size fields).
pub(crate) const PARAMETER_LIMITS: [(&str, usize); 8] = [
    ("client_id", 1024),
    ("redirect_uri", 2048),
    ("state", 1024),
    ("nonce", 512),
    ("scope", 1024),
    ("resource", 2048),
    ("code_challenge", 128),
    ("login_hint", 256),
];

/// The first parameter longer than its limit, as an error that names it.
fn check_lengths(params: &Params) -> Result<(), OAuthError> {
    for (name, limit) in PARAMETER_LIMITS {
        if params.get(name).is_some_and(|value| value.len() > limit) {
            return Err(OAuthError::invalid_request(format!(
                "{name} is too long (at most {limit} bytes)"
            )));
        }
    }
    Ok(())
}

/// Where an authorization error goes: before the client and redirect URI are proven, to the user
/// as a page (never an open redirect); after, back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthorizeError {
    Page(OAuthError),
    Redirect(ClientRedirect),
}

/// An authorization response to send the user agent back to the client with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientRedirect {
    pub(crate) redirect_uri: String,
    pub(crate) state: Option<String>,
    pub(crate) error: OAuthError,
    /// The client whose approval this browser remembers for someone else than the user who
    /// signed in: forgotten, so that starting again shows this user the consent page.
    pub(crate) forget_remembered_consent_of: Option<String>,
}

impl ClientRedirect {
    /// An error for the client of an already validated request.
    pub(crate) fn error(request: &AuthorizationRequest, error: OAuthError) -> AuthorizeError {
        AuthorizeError::Redirect(ClientRedirect {
            redirect_uri: request.redirect_uri.clone(),
            state: request.client_state.clone(),
            error,
            forget_remembered_consent_of: None,
        })
    }

    pub(crate) fn url(&self, issuer: &str) -> Result<Url, OAuthError> {
        let mut params = vec![
            ("error", self.error.code()),
            ("error_description", self.error.description()),
        ];
        if let Some(state) = &self.state {
            params.push(("state", state));
        }
        authorization_response(&self.redirect_uri, &params, issuer)
    }
}

/// Appends the response parameters and `iss` (RFC 9207) to the client's redirect URI.
pub(crate) fn authorization_response(
    redirect_uri: &str,
    params: &[(&str, &str)],
    issuer: &str,
) -> Result<Url, OAuthError> {
    // Unreachable for a URI that matched a registered one; refused rather than redirected blindly.
    let mut url = Url::parse(redirect_uri).map_err(OAuthError::internal)?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
        query.append_pair("iss", issuer);
    }
    Ok(url)
}

/// A started upstream login: where to send the user, and the cookie that binds the flow to
/// this browser.
#[derive(Debug)]
pub(crate) struct UpstreamRedirect {
    pub(crate) url: Url,
    pub(crate) binding_cookie: BindingCookie,
}

#[derive(Debug, Clone)]
pub(crate) struct BindingCookie {
    pub(crate) name: String,
    pub(crate) value: String,
}

/// Cookie names are per flow so that two sign-ins in one browser do not overwrite each other.
pub(crate) fn binding_cookie_name(upstream_state: &str) -> String {
    let digest = TokenHash::of(upstream_state).0;
    let id: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("mob_login_{id}")
}

/// What the browser does next after a valid authorization request.
#[derive(Debug)]
pub(crate) enum AuthorizationStep {
    /// The user must approve the client first; the token names the consent request.
    Consent {
        token: String,
        client_id: String,
    },
    Upstream(UpstreamRedirect),
}

/// `remembered_subject`: who this browser's remembered consent for the client says the user is.
pub(crate) async fn start_authorization(
    bridge: &Bridge,
    params: &Params,
    remembered_subject: Option<&str>,
    now: UnixTime,
) -> Result<AuthorizationStep, AuthorizeError> {
    let page = AuthorizeError::Page;
    check_lengths(params).map_err(page)?;
    let client_id = params
        .get("client_id")
        .ok_or_else(|| page(OAuthError::invalid_request("client_id is required")))?;
    let found = bridge
        .clients
        .find(client_id, now)
        .await
        .map_err(|error| match error {
            ClientLookupError::Storage(e) => page(e.into()),
            ClientLookupError::Metadata(error) => {
                tracing::info!(
                    client_id = for_log(client_id),
                    reason = error.detail(),
                    "client metadata document unusable"
                );
                page(OAuthError::InvalidRequest(error.to_string().into()))
            }
        })?;
    let client = found.ok_or_else(|| {
        tracing::info!(
            client_id = for_log(client_id),
            "authorization request from an unknown client"
        );
        page(OAuthError::invalid_request("unknown client_id"))
    })?;
    let (redirect_uri, redirect_uri_given) = match params.get("redirect_uri") {
        Some(requested) if client.matching_redirect_uri(requested) => (requested.to_owned(), true),
        Some(_) => {
            tracing::info!(client_id, "redirect_uri does not match a registered one");
            return Err(page(OAuthError::invalid_request(
                "redirect_uri is not registered for this client",
            )));
        }
        None => match client.default_redirect_uri() {
            Some(only) => (only.to_owned(), false),
            None => {
                return Err(page(OAuthError::invalid_request(
                    "redirect_uri is required",
                )));
            }
        },
    };

    // From here on the client and its redirect URI are proven: errors go back to the client.
    let client_state = params.get("state").map(str::to_owned);
    let redirect = |error: OAuthError| {
        AuthorizeError::Redirect(ClientRedirect {
            redirect_uri: redirect_uri.clone(),
            state: client_state.clone(),
            error,
            forget_remembered_consent_of: None,
        })
    };
    let client_nonce = params.get("nonce").map(str::to_owned);
    match params.get("response_type") {
        Some("code") => {}
        Some(_) => {
            return Err(redirect(OAuthError::UnsupportedResponseType(
                "only response_type=code is supported".into(),
            )));
        }
        None => {
            return Err(redirect(OAuthError::invalid_request(
                "response_type is required",
            )));
        }
    }
    if params
        .get("response_mode")
        .is_some_and(|mode| mode != "query")
    {
        return Err(redirect(OAuthError::invalid_request(
            "only response_mode=query is supported",
        )));
    }
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(redirect(OAuthError::UnauthorizedClient(
            "this client may not use the authorization code grant".into(),
        )));
    }
    let code_challenge = pkce::validate_challenge(
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    )
    .map_err(redirect)?;
    let allowed_scopes = client.allowed_scopes(&bridge.settings.scopes_supported);
    let scope = match params.get("scope") {
        None => client.default_scope(&allowed_scopes).ok_or_else(|| {
            redirect(OAuthError::InvalidScope(
                "no scope was requested and none this client registered is available; name the scope"
                    .into(),
            ))
        })?,
        requested => scope::resolve(requested, &allowed_scopes).map_err(redirect)?,
    };
    let audience =
        resource::resolve_audience(&bridge.settings, params.get("resource")).map_err(redirect)?;

    // Only a request that passed every check costs a record; the room is held until it is stored.
    let _admission = bridge
        .pending
        .admit(bridge.storage.as_ref(), now)
        .await
        .map_err(page)?;
    let request = AuthorizationRequest {
        client_id: client.id.clone(),
        redirect_uri,
        redirect_uri_given,
        client_state,
        client_nonce,
        code_challenge,
        scope,
        audience,
        login_hint: params.get("login_hint").map(str::to_owned),
    };
    let consent = if client.skip_consent {
        Consent::NotNeeded
    } else {
        let remembered = match remembered_subject {
            Some(subject) => bridge
                .storage
                .consented_scopes(subject, &request, now)
                .await
                .map_err(|e| ClientRedirect::error(&request, e.into()))?
                .map(|scopes| (subject, scopes)),
            None => None,
        };
        match remembered {
            Some((subject, approved)) if request.scope.iter().all(|s| approved.contains(s)) => {
                Consent::Remembered {
                    subject: subject.to_owned(),
                }
            }
            remembered => {
                // Incremental consent: what was approved before is not asked again.
                let already_approved = remembered.map(|(_, approved)| approved).unwrap_or_default();
                let (token, token_hash): (String, _) = generate_token();
                let client_id = request.client_id.clone();
                let pending_consent = ConsentRequest {
                    request,
                    already_approved,
                    expires_at: now.plus(PENDING_AUTHORIZATION_TTL),
                };
                if let Err(e) = bridge
                    .storage
                    .put_consent_request(token_hash, pending_consent.clone())
                    .await
                {
                    return Err(ClientRedirect::error(&pending_consent.request, e.into()));
                }
                return Ok(AuthorizationStep::Consent { token, client_id });
            }
        }
    };
    continue_upstream(bridge, request, consent, now)
        .await
        .map(AuthorizationStep::Upstream)
}

/// Where the browser goes to sign in.
pub(crate) enum SignInPage<'a> {
    /// Our login form (`oauth.local_users`).
    LoginForm,
    /// The page that asks which identity provider the user has an account at.
    Chooser,
    Provider(&'a Provider),
}

/// Where a sign-in goes: the login form, the provider `login_hint` names (or the only one), or
/// the chooser.
pub(crate) fn sign_in_page<'a>(
    bridge: &'a Bridge,
    request: &AuthorizationRequest,
) -> SignInPage<'a> {
    match &bridge.sign_in {
        SignIn::Local(_) => SignInPage::LoginForm,
        SignIn::Upstream(providers) => match providers.chosen_for(request.login_hint.as_deref()) {
            Some(provider) => SignInPage::Provider(provider),
            None => SignInPage::Chooser,
        },
    }
}

/// Parks the request and sends the user on to sign in.
pub(crate) async fn continue_upstream(
    bridge: &Bridge,
    request: AuthorizationRequest,
    consent: Consent,
    now: UnixTime,
) -> Result<UpstreamRedirect, AuthorizeError> {
    let page = sign_in_page(bridge, &request);
    park_sign_in(bridge, request, consent, &page, now).await
}

/// Parks the request under a new state and builds the sign-in URL (the provider's, with our own
/// state, nonce and PKCE; our login form's; or the chooser's), bound to this browser by a cookie.
pub(crate) async fn park_sign_in(
    bridge: &Bridge,
    request: AuthorizationRequest,
    consent: Consent,
    page: &SignInPage<'_>,
    now: UnixTime,
) -> Result<UpstreamRedirect, AuthorizeError> {
    let (upstream_state, state_hash): (String, _) = generate_token();
    let nonce = random_string(32);
    let upstream_verifier = random_string(32);
    let url = sign_in_url(
        bridge,
        page,
        &request,
        &UpstreamRequest {
            state: &upstream_state,
            nonce: &nonce,
            pkce_verifier: &upstream_verifier,
            login_hint: passed_hint(bridge, page, &request),
        },
    )
    .map_err(|error| ClientRedirect::error(&request, error))?;
    let (binding, binding_hash): (String, _) = generate_token();
    let pending = PendingAuthorization {
        request,
        consent,
        upstream_nonce: FlowSecret::new(nonce),
        upstream_pkce_verifier: FlowSecret::new(upstream_verifier),
        provider: match page {
            SignInPage::Provider(provider) => Some(provider.name.to_owned()),
            SignInPage::LoginForm | SignInPage::Chooser => None,
        },
        browser_binding: binding_hash,
        expires_at: now.plus(PENDING_AUTHORIZATION_TTL),
    };
    if let Err(e) = bridge
        .storage
        .put_pending(state_hash, pending.clone())
        .await
    {
        return Err(ClientRedirect::error(&pending.request, e.into()));
    }
    Ok(UpstreamRedirect {
        url,
        binding_cookie: BindingCookie {
            name: binding_cookie_name(&upstream_state),
            value: binding,
        },
    })
}

/// The client's `login_hint`, for the provider it picked (or the only one): an address the
/// hint routes elsewhere is not told to a provider the user chose instead.
fn passed_hint<'a>(
    bridge: &Bridge,
    page: &SignInPage<'_>,
    request: &'a AuthorizationRequest,
) -> Option<&'a str> {
    let (SignIn::Upstream(providers), SignInPage::Provider(provider)) = (&bridge.sign_in, page)
    else {
        return None;
    };
    let hint = request.login_hint.as_deref()?;
    providers
        .chosen_for(Some(hint))
        .filter(|chosen| chosen.name == provider.name)
        .map(|_| hint)
}

fn sign_in_url(
    bridge: &Bridge,
    page: &SignInPage<'_>,
    request: &AuthorizationRequest,
    upstream: &UpstreamRequest<'_>,
) -> Result<Url, OAuthError> {
    let client_id = request.client_id.as_str();
    // Our own pages play the provider's part, found by the same state and cookie.
    let own_page = |path: &str| -> Result<Url, OAuthError> {
        let mut url = Url::parse(&bridge.settings.endpoint(path)).map_err(OAuthError::internal)?;
        url.query_pairs_mut().append_pair("state", upstream.state);
        Ok(url)
    };
    match page {
        SignInPage::LoginForm => {
            tracing::info!(
                client_id,
                "authorization started; user sent to the login form"
            );
            own_page(endpoints::LOGIN)
        }
        SignInPage::Chooser => {
            tracing::info!(
                client_id,
                "authorization started; user asked to choose an identity provider"
            );
            own_page(endpoints::CHOOSE)
        }
        SignInPage::Provider(provider) => match provider.upstream.authorization_url(upstream) {
            Ok(url) => {
                tracing::info!(
                    client_id,
                    provider = provider.name,
                    "authorization started; user sent to the upstream provider"
                );
                Ok(url)
            }
            Err(error) => Err(OAuthError::unavailable(error)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::Cause;
    use crate::oauth::test_support::*;

    /// For the harness clients, which skip consent: straight to the upstream redirect.
    async fn start(
        bridge: &Bridge,
        params: &Params,
        now: UnixTime,
    ) -> Result<UpstreamRedirect, AuthorizeError> {
        match start_authorization(bridge, params, None, now).await? {
            AuthorizationStep::Upstream(started) => Ok(started),
            AuthorizationStep::Consent { .. } => panic!("this client skips consent"),
        }
    }

    fn request(overrides: &[(&str, Option<&str>)]) -> Params {
        let mut params = Params::from([
            ("client_id", PUBLIC_CLIENT),
            ("redirect_uri", "http://127.0.0.1:4321/callback"),
            ("response_type", "code"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("state", "client-state"),
            ("scope", "openid email"),
            ("resource", "https://mcp.example.com/mcp"),
        ]);
        for (name, value) in overrides {
            match value {
                Some(v) => params.insert(*name, *v),
                None => params.remove(name),
            };
        }
        params
    }

    fn page_error(result: Result<UpstreamRedirect, AuthorizeError>) -> OAuthError {
        match result {
            Err(AuthorizeError::Page(error)) => error,
            other => panic!("expected an error page, got {other:?}"),
        }
    }

    fn redirect_error(result: Result<UpstreamRedirect, AuthorizeError>) -> ClientRedirect {
        match result {
            Err(AuthorizeError::Redirect(redirect)) => redirect,
            other => panic!("expected an error redirect, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn valid_request_redirects_upstream_and_parks_the_request() {
        let harness = Harness::new();
        let started = start(&harness.bridge, &request(&[]), harness.now())
            .await
            .unwrap();
        let query: std::collections::HashMap<_, _> =
            started.url.query_pairs().into_owned().collect();
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(query["state"].len(), 43);
        assert!(query.contains_key("nonce"));
        let pending = harness
            .take_pending(&query["state"], &started.binding_cookie.value)
            .await
            .expect("pending stored");
        assert_eq!(
            pending.request.client_state.as_deref(),
            Some("client-state")
        );
        assert_eq!(pending.request.audience, "https://mcp.example.com/mcp");
        assert_eq!(pending.request.scope, vec!["openid", "email"]);
        assert_eq!(
            pending.request.redirect_uri,
            "http://127.0.0.1:4321/callback"
        );
        assert_eq!(
            pending.expires_at,
            harness.now().plus(PENDING_AUTHORIZATION_TTL)
        );
        assert_eq!(
            pkce::s256(pending.upstream_pkce_verifier.expose()),
            query["code_challenge"]
        );
        assert_eq!(
            pending.browser_binding,
            TokenHash::of(&started.binding_cookie.value)
        );
    }

    #[tokio::test]
    async fn unknown_client_and_unregistered_redirect_get_a_page_not_a_redirect() {
        let harness = Harness::new();
        let now = harness.now();
        let err = page_error(
            start(
                &harness.bridge,
                &request(&[("client_id", Some("nobody"))]),
                now,
            )
            .await,
        );
        assert_eq!(err, OAuthError::invalid_request("unknown client_id"));
        let err = page_error(start(&harness.bridge, &request(&[("client_id", None)]), now).await);
        assert_eq!(err, OAuthError::invalid_request("client_id is required"));
        let evil = request(&[("redirect_uri", Some("https://evil.example.com/callback"))]);
        let err = page_error(start(&harness.bridge, &evil, now).await);
        assert_eq!(
            err,
            OAuthError::invalid_request("redirect_uri is not registered for this client")
        );
        let other_path = request(&[("redirect_uri", Some("http://127.0.0.1:4321/other"))]);
        assert_eq!(
            page_error(start(&harness.bridge, &other_path, now).await).code(),
            "invalid_request"
        );
        let fragment = request(&[("redirect_uri", Some("http://127.0.0.1:4321/callback#x"))]);
        assert_eq!(
            page_error(start(&harness.bridge, &fragment, now).await).code(),
            "invalid_request"
        );
    }

    #[tokio::test]
    async fn missing_redirect_uri_needs_a_single_non_loopback_registration() {
        let harness = Harness::new();
        let now = harness.now();
        let err =
            page_error(start(&harness.bridge, &request(&[("redirect_uri", None)]), now).await);
        assert_eq!(err, OAuthError::invalid_request("redirect_uri is required"));
        let web = request(&[
            ("client_id", Some(CONFIDENTIAL_CLIENT)),
            ("redirect_uri", None),
            ("scope", Some("openid")),
        ]);
        assert!(start(&harness.bridge, &web, now).await.is_ok());
    }

    #[tokio::test]
    async fn errors_after_the_redirect_is_proven_go_back_to_the_client_with_state() {
        let harness = Harness::new();
        let now = harness.now();
        type Case = (Vec<(&'static str, Option<&'static str>)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                vec![("response_type", Some("token"))],
                "unsupported_response_type",
            ),
            (vec![("response_type", None)], "invalid_request"),
            (vec![("code_challenge", None)], "invalid_request"),
            (
                vec![("code_challenge_method", Some("plain"))],
                "invalid_request",
            ),
            (vec![("code_challenge_method", None)], "invalid_request"),
            (vec![("scope", Some("openid admin"))], "invalid_scope"),
            (vec![("resource", Some("not a uri"))], "invalid_target"),
            (vec![("response_mode", Some("fragment"))], "invalid_request"),
        ];
        for (overrides, expected) in cases {
            let redirect = redirect_error(start(&harness.bridge, &request(&overrides), now).await);
            assert_eq!(redirect.error.code(), expected, "{overrides:?}");
            assert_eq!(redirect.state.as_deref(), Some("client-state"));
            let url = redirect.url(ISSUER).unwrap();
            let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
            assert_eq!(query["iss"], ISSUER);
            assert_eq!(query["state"], "client-state");
            assert_eq!(query["error"], expected);
            assert!(url.as_str().starts_with("http://127.0.0.1:4321/callback?"));
        }
    }

    #[tokio::test]
    async fn scope_outside_the_clients_own_list_is_invalid_scope() {
        let harness = Harness::new();
        let params = request(&[
            ("client_id", Some(CONFIDENTIAL_CLIENT)),
            ("redirect_uri", None),
            ("scope", Some("email")),
        ]);
        let redirect = redirect_error(start(&harness.bridge, &params, harness.now()).await);
        assert_eq!(redirect.error.code(), "invalid_scope");
    }

    #[tokio::test]
    async fn an_oversized_parameter_is_refused_with_a_page_before_anything_is_stored() {
        let harness = Harness::new();
        let now = harness.now();
        for (name, limit) in PARAMETER_LIMITS {
            let long = "a".repeat(limit + 1);
            let err =
                page_error(start(&harness.bridge, &request(&[(name, Some(&long))]), now).await);
            assert_eq!(
                err,
                OAuthError::invalid_request(format!("{name} is too long (at most {limit} bytes)"))
            );
        }
        assert_eq!(harness.bridge.storage.count_pending(now).await.unwrap(), 0);
        // At the limit, the same request goes through.
        let state = "s".repeat(1024);
        let nonce = "n".repeat(512);
        let at_limit = request(&[("state", Some(&state)), ("nonce", Some(&nonce))]);
        assert!(start(&harness.bridge, &at_limit, now).await.is_ok());
    }

    #[tokio::test]
    async fn past_the_cap_of_live_authorizations_new_ones_are_refused_and_none_is_evicted() {
        let mut harness = Harness::new();
        harness.bridge.pending =
            std::sync::Arc::new(crate::oauth::pending_cap::PendingCap::new(100));
        let now = harness.now();
        let state = "s".repeat(1024);
        let nonce = "n".repeat(512);
        let biggest = request(&[("state", Some(&state)), ("nonce", Some(&nonce))]);
        let mut first = None;
        let mut refused = 0;
        for _ in 0..1_000 {
            match start(&harness.bridge, &biggest, now).await {
                Ok(started) => {
                    first.get_or_insert(started);
                }
                Err(AuthorizeError::Page(OAuthError::TemporarilyUnavailable(_))) => refused += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(refused, 900);
        assert_eq!(
            harness.bridge.storage.count_pending(now).await.unwrap(),
            100
        );
        // The memory it takes is bounded by the cap: every record at its largest.
        let first = first.unwrap();
        let query: std::collections::HashMap<_, _> = first.url.query_pairs().into_owned().collect();
        let pending = harness
            .take_pending(&query["state"], &first.binding_cookie.value)
            .await
            .expect("the first sign-in was never evicted");
        let record = serde_json::to_vec(&pending).unwrap().len();
        assert!(record < 4 * 1024, "{record} bytes");
    }

    #[tokio::test]
    async fn upstream_not_ready_is_temporarily_unavailable() {
        let harness = Harness::new();
        harness.upstream.set_ready(false);
        let redirect = redirect_error(start(&harness.bridge, &request(&[]), harness.now()).await);
        assert_eq!(
            redirect.error,
            OAuthError::TemporarilyUnavailable(Cause::default())
        );
    }

    #[test]
    fn response_parameters_are_appended_to_an_existing_query() {
        let url = authorization_response(
            "https://app.example.com/cb?tenant=a",
            &[("code", "c&d")],
            ISSUER,
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "https://app.example.com/cb?tenant=a&code=c%26d&iss=https%3A%2F%2Fbridge.example.com"
        );
    }
}
