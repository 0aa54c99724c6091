//! Bootstrap: state from configuration, the background tasks, bind, serve, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clients::client_keys::RemoteKeySets;
use crate::clients::metadata_documents::{CimdSettings, MetadataDocuments};
use crate::clients::{Assertions, ClientRegistry};
use crate::clock::{SharedClock, SystemClock, UnixTime};
use crate::config::Config;
use crate::http::client_address::TrustedProxies;
use crate::http::cookies::CookieSigner;
use crate::http::proxy::settings::ProxyConfig;
use crate::http::proxy::{HeaderPolicy, IdentityHeaders, IdentityJwt, Proxy, PublicOrigin};
use crate::http::server::ServerConfig;
use crate::http::{AppState, Registration, router};
use crate::identity::SINGLE_PROVIDER;
use crate::key_rotation::{
    KeyWindow, RotationSchedule, spawn_rotation, stored_key, stored_key_keeping,
};
use crate::local_users::LocalUsers;
use crate::metrics::Metrics;
use crate::oauth::admin::AdminTokens;
use crate::oauth::identity_assertion::IdentityAssertions;
use crate::oauth::login::LocalLogin;
use crate::oauth::login_throttle::LoginThrottle;
use crate::oauth::pending_cap::PendingCap;
use crate::oauth::protected_resource::{ProtectedResource, metadata_path};
use crate::oauth::redirect_policy::RedirectPolicy;
use crate::oauth::register::RegistrationPolicy;
use crate::oauth::{Bridge, Settings, SignIn};
use crate::rate_limit::RateLimiter;
use crate::sealing::Sealer;
use crate::secret::SecretString;
use crate::storage::metered::MeteredStorage;
use crate::storage::settings::StorageBackend;
use crate::storage::{MemoryStorage, PostgresStorage, Storage};
use crate::tokens::keys::{KeyRing, SigningAlgorithm};
use crate::tokens::opaque::random_string;
use crate::tokens::{KeySet, TokenHash};
use crate::upstream::oidc::OidcSettings;
use crate::upstream::providers::{Provider, Providers};
use crate::upstream::settings::UpstreamConfig;
use crate::upstream::{OidcUpstream, Upstream};
use axum::http::{HeaderName, HeaderValue};

/// The running service's parts, before it is bound to a socket.
pub struct Service {
    pub router: axum::Router,
    pub bridge: Arc<Bridge>,
    pub server: ServerConfig,
    /// `metrics.address`: where `/metrics` is served on a listener of its own.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// `admin.address`, and the administration API served there.
    pub admin: Option<(std::net::SocketAddr, axum::Router)>,
}

pub async fn build(config: &Config, clock: SharedClock) -> anyhow::Result<Service> {
    let public_url = config.public_url()?;
    let issuer = config.issuer()?;
    let base_path = public_url.path().trim_end_matches('/').to_owned();

    let metrics = Arc::new(Metrics::new());
    let storage = open_storage(config).await?;
    // Timing every storage operation costs a little on every request: only when it is scraped.
    let storage: Arc<dyn Storage> = match config.metrics.enabled {
        true => Arc::new(MeteredStorage::new(storage, Arc::clone(&metrics))),
        false => storage,
    };
    let (keys, rotation) = load_signing_keys(config, storage.as_ref(), &clock).await?;
    // Consent pages, login forms and remembered consents verify on every instance.
    let cookie_key = storage
        .shared_secret(COOKIE_KEY, CookieSigner::fresh_key().to_vec().into())
        .await
        .context("cannot load the cookie key")?;
    let cookie_signer = CookieSigner::from_key(cookie_key.expose())?;
    let id_token_algorithms = keys.id_token_algorithms();
    check_id_token_algorithms(config, &id_token_algorithms)?;
    // RFC 7523 §3: a client assertion is addressed to the token endpoint or to the issuer.
    let assertion_audiences = vec![
        format!(
            "{}{}",
            issuer.trim_end_matches('/'),
            crate::oauth::endpoints::TOKEN
        ),
        issuer.clone(),
    ];
    let (clients, registration) = client_registry(
        config,
        &storage,
        id_token_algorithms,
        assertion_audiences,
        &metrics,
    )
    .await?;
    let sign_in = sign_in(config, &metrics).await?;
    if let SignIn::Upstream(providers) = &sign_in {
        metrics.watch(Arc::new(crate::upstream::Discovery(Arc::clone(providers))));
    }

    let dcr = &config.oauth.dcr;
    spawn_sweeper(
        Arc::clone(&storage),
        clock.clone(),
        config.storage.sweep_interval,
        dcr.enabled.then_some(dcr.unused_client_ttl.0),
    );

    // The proxied MCP server is a resource like those configured: tokens are asked for it by name.
    let proxy_resource = config.proxy.as_ref().map(|proxy| ProtectedResource {
        url: format!("{}{}", issuer.trim_end_matches('/'), proxy.path),
        required_scopes: proxy.required_scopes.clone(),
        call_scopes: proxy
            .tool_scopes
            .iter()
            .flat_map(|rule| rule.scopes.iter().cloned())
            .collect(),
    });
    let protected_resources: Vec<ProtectedResource> = proxy_resource
        .iter()
        .cloned()
        .chain(config.oauth.resources.iter().map(|url| ProtectedResource {
            url: url.clone(),
            required_scopes: Vec::new(),
            call_scopes: Vec::new(),
        }))
        .collect();
    let proxy = match (&config.proxy, proxy_resource) {
        (Some(proxy_config), Some(resource)) => Some(Arc::new(build_proxy(
            proxy_config,
            resource,
            &public_url,
            &base_path,
        )?)),
        _ => None,
    };
    let settings = protocol_settings(config, issuer, &protected_resources);
    let keys = Arc::new(KeyRing::new(keys));
    if !keys.signs_id_tokens() {
        generate_id_token_key(Arc::clone(&storage), Arc::clone(&keys));
    }
    let sealer = config
        .upstream_providers()
        .iter()
        .any(|upstream| upstream.revalidate_on_refresh || upstream.keep_tokens)
        .then(|| match &config.storage.encryption_key {
            Some(key) => Sealer::new(key),
            // Only the memory backend gets here (validation requires the key with PostgreSQL),
            // and what it seals dies with the process anyway.
            None => Sealer::new(&SecretString::new(random_string(43))),
        });
    if let Some((schedule, window)) = rotation {
        if config.storage.backend == StorageBackend::Memory {
            tracing::warn!(
                "signing keys rotate in memory: they, and the tokens they signed, do not survive a restart"
            );
        }
        spawn_rotation(
            schedule,
            Arc::clone(&storage),
            Arc::clone(&keys),
            clock.clone(),
            window,
        );
    }
    let identity_assertions = identity_assertions(config)?;
    let pending = Arc::new(PendingCap::new(config.oauth.max_pending_authorizations));
    metrics.watch(Arc::clone(&pending) as _);
    if let Some(gauges) = storage.gauges() {
        metrics.watch(gauges);
    }
    let bridge = Arc::new(Bridge {
        settings,
        clients,
        storage,
        sign_in,
        keys,
        sealer,
        renewals: Default::default(),
        pending,
        metrics,
        identity_assertions,
        token_exchange: crate::oauth::token_exchange::TokenExchange::configured(
            &config.oauth.token_exchange,
            config.proxy_resource().as_deref(),
        ),
    });
    let cimd = &config.oauth.cimd;
    let admin_tokens = AdminTokens::configured(&config.admin)
        .map_err(|problem| anyhow::anyhow!("admin.tokens: {problem}"))?;
    let admin_tokens =
        (!admin_tokens.is_empty()).then(|| crate::http::AdminAccess::new(admin_tokens));
    let ui = crate::ui::Ui::configured(
        &config.ui,
        &format!("{base_path}{}", crate::oauth::endpoints::UI_LOGO),
    )
    .map_err(|problem| anyhow::anyhow!("ui: {problem}"))?;
    let state = AppState {
        bridge: Arc::clone(&bridge),
        clock,
        base_path: Arc::from(base_path),
        secure_cookies: public_url.scheme() == "https",
        cookie_signer: Arc::new(cookie_signer),
        registration,
        protected_resources: Arc::from(protected_resources),
        proxy,
        trusted_proxies: Arc::new(TrustedProxies {
            networks: config.server.trusted_proxies.clone(),
            header: config.server.client_address_header,
        }),
        authorizations: Arc::new(RateLimiter::configured(&config.oauth.authorize_rate_limit)),
        document_fetches: cimd
            .enabled
            .then(|| Arc::new(RateLimiter::configured(&cimd.fetch_rate_limit))),
        serve_metrics: config.metrics.enabled && config.metrics.address.is_none(),
        admin: admin_tokens.clone(),
        serve_admin: admin_tokens.is_some() && config.admin.address.is_none(),
        ui: Arc::new(ui),
    };
    let admin = match (config.admin.address, &admin_tokens) {
        (Some(address), Some(_)) => Some((address, crate::http::admin_router(state.clone()))),
        _ => None,
    };
    Ok(Service {
        router: router(state),
        bridge,
        server: config.server.clone(),
        metrics_address: config.metrics.address.filter(|_| config.metrics.enabled),
        admin,
    })
}

/// The keys tokens are signed with now, and with automatic rotation its schedule and the window
/// of keys loaded (which the rotation task carries on from).
async fn load_signing_keys(
    config: &Config,
    storage: &dyn Storage,
    clock: &SharedClock,
) -> anyhow::Result<(KeySet, Option<(RotationSchedule, KeyWindow)>)> {
    let schedule = config
        .oauth
        .signing
        .as_ref()
        .and_then(|signing| signing.rotation_period.as_ref())
        .map(|period| RotationSchedule {
            period: period.0,
            access_token_ttl: config.oauth.access_token_ttl.0,
        });
    match schedule {
        Some(schedule) => {
            let (keys, window) = schedule
                .load(storage, clock.now())
                .await
                .context("cannot load the rotated signing keys")?;
            Ok((keys, Some((schedule, window))))
        }
        None => Ok((signing_keys(config, storage).await?, None)),
    }
}

/// The clients the file lists (plain secrets hashed now, off the runtime), with the registered
/// ones and those described by metadata documents when those are on; and registration's endpoint.
async fn client_registry(
    config: &Config,
    storage: &Arc<dyn Storage>,
    id_token_algorithms: Vec<SigningAlgorithm>,
    assertion_audiences: Vec<String>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(ClientRegistry, Option<Arc<Registration>>)> {
    let client_configs = config.oauth.clients.clone();
    let secret_cost = config.oauth.secret_hash_cost;
    let mut clients = tokio::task::spawn_blocking(move || {
        ClientRegistry::from_config(&client_configs, secret_cost)
    })
    .await
    .context("client loading was interrupted")??;
    let dcr = &config.oauth.dcr;
    // One policy for both ways a client can arrive unannounced.
    let redirects = dcr.redirect_policy()?;
    let registration = if dcr.enabled {
        clients = clients.with_registrations(Arc::clone(storage));
        Some(Arc::new(Registration {
            policy: RegistrationPolicy {
                redirects: redirects.clone(),
                max_clients: dcr.max_clients,
                secret_cost,
            },
            limiter: RateLimiter::configured(&dcr.rate_limit),
        }))
    } else {
        None
    };
    let cimd = &config.oauth.cimd;
    let fetch = CimdSettings::configured(
        cimd,
        redirects,
        config.oauth.scopes_supported.clone(),
        id_token_algorithms,
    )?;
    // A jwks_uri the operator wrote for a configured client may be on an internal host; any
    // other goes through the same guards as a metadata document.
    let configured_jwks_uris = config
        .oauth
        .clients
        .iter()
        .filter_map(|client| client.jwks_uri.clone())
        .collect();
    clients = clients.with_assertions(Assertions {
        audiences: assertion_audiences,
        remote_keys: RemoteKeySets::new(fetch.clone(), configured_jwks_uris),
        storage: Arc::clone(storage),
    });
    if cimd.enabled {
        clients = clients.with_metadata_documents(Arc::new(
            MetadataDocuments::new(fetch).observed(Arc::clone(metrics)),
        ));
    }
    Ok((clients, registration))
}

/// The trusted issuers of ID-JAGs; their `jwks_uri`s, which the operator wrote, may be on
/// internal hosts and are fetched with the metadata documents' other settings.
fn identity_assertions(config: &Config) -> anyhow::Result<Option<IdentityAssertions>> {
    let trusted = &config.oauth.identity_assertion;
    if trusted.trusted_issuers.is_empty() {
        return Ok(None);
    }
    let fetch = CimdSettings::configured(
        &config.oauth.cimd,
        RedirectPolicy::compile(&[], &[])?,
        Vec::new(),
        Vec::new(),
    )?;
    for issuer in &trusted.trusted_issuers {
        if issuer.allowed_groups.is_empty() && issuer.allowed_email_domains.is_empty() {
            tracing::warn!(
                issuer = %issuer.issuer,
                "a trusted issuer of ID-JAGs has no allowed_groups or allowed_email_domains: every user it vouches for gets tokens"
            );
        }
    }
    let uris = trusted
        .trusted_issuers
        .iter()
        .filter_map(|issuer| issuer.jwks_uri.clone())
        .collect();
    IdentityAssertions::configured(trusted, Arc::new(RemoteKeySets::new(fetch, uris)))
        .map_err(|problem| anyhow::anyhow!("oauth.identity_assertion: {problem}"))
}

/// A configured client's `id_token_signed_response_alg` must be one the keys can sign in: ES256
/// needs an ES256 access-token key.
fn check_id_token_algorithms(
    config: &Config,
    supported: &[SigningAlgorithm],
) -> anyhow::Result<()> {
    for (i, client) in config.oauth.clients.iter().enumerate() {
        if let Some(algorithm) = client.id_token_signed_response_alg
            && !supported.contains(&algorithm)
        {
            let supported: Vec<&str> = supported.iter().map(|a| a.as_str()).collect();
            anyhow::bail!(
                "oauth.clients[{i}].id_token_signed_response_alg: {} is not one the signing keys can sign ID tokens in ({})",
                algorithm.as_str(),
                supported.join(", ")
            );
        }
    }
    Ok(())
}

/// How users prove who they are: at the upstream providers (each discovered now, or in the
/// background while it starts), or at the local login form.
async fn sign_in(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<SignIn> {
    let upstreams = config.upstream_providers();
    if !upstreams.is_empty() {
        // Discovered side by side: start waits for the slowest, not for their sum.
        let providers = futures_util::future::try_join_all(
            upstreams
                .into_iter()
                .map(|upstream_config| provider(config, upstream_config, metrics)),
        )
        .await?;
        return Ok(SignIn::Upstream(Arc::new(Providers::new(providers))));
    }
    let users = config.oauth.local_users.clone();
    let users = tokio::task::spawn_blocking(move || LocalUsers::from_config(&users))
        .await
        .context("loading the local users was interrupted")??;
    tracing::info!(
        users = config.oauth.local_users.len(),
        "users sign in with the local login form"
    );
    Ok(SignIn::Local(Arc::new(LocalLogin {
        users,
        throttle: LoginThrottle::new(config.oauth.login_throttle.clone()),
    })))
}

/// The protocol's settings: the `oauth` section with the issuer and the resources tokens may be
/// asked for.
fn protocol_settings(
    config: &Config,
    issuer: String,
    protected_resources: &[ProtectedResource],
) -> Settings {
    let oauth = &config.oauth;
    Settings {
        // The issuer as written, trailing slash and all: a client that names no resource gets it.
        default_audience: oauth.audience.clone().unwrap_or_else(|| issuer.clone()),
        issuer,
        allowed_resources: protected_resources.iter().map(|r| r.url.clone()).collect(),
        scopes_supported: oauth.scopes_supported.clone(),
        access_token_ttl: oauth.access_token_ttl.0,
        refresh_token_ttl: oauth.refresh_token_ttl.0,
        refresh_token_max_lifetime: oauth.refresh_token_max_lifetime.0,
        refresh_token_retry_window: oauth.refresh_token_retry_window.0,
        registration_enabled: oauth.dcr.enabled,
        metadata_documents_enabled: oauth.cimd.enabled,
        introspection_tokens: oauth
            .introspection_tokens
            .iter()
            .map(|token| TokenHash::of(token.expose()))
            .collect(),
        access_token_claims: oauth.access_token_claims.clone(),
        jwt_bearer_grant: !oauth.identity_assertion.trusted_issuers.is_empty(),
        token_exchange_grant: !oauth.token_exchange.rules.is_empty(),
    }
}

fn build_proxy(
    config: &ProxyConfig,
    resource: ProtectedResource,
    public_url: &url::Url,
    base_path: &str,
) -> anyhow::Result<Proxy> {
    let header = |name: &str| {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| anyhow::anyhow!("{name:?} is not a header name"))
    };
    let metadata_path = metadata_path(&resource.url)
        .ok_or_else(|| anyhow::anyhow!("the proxy's resource {:?} is not a URL", resource.url))?;
    let timeout = config.timeout;
    tracing::info!(path = %config.path, upstream = %config.upstream_url, "proxying to the MCP server");
    for rule in crate::oauth::tool_scopes::unknown_methods(&config.tool_scopes) {
        tracing::warn!(%rule, "no MCP client sends this method: the rule matches nothing (a typo?)");
    }
    let identity = IdentityHeaders {
        user: header(&config.identity_headers.user)?,
        email: header(&config.identity_headers.email)?,
        groups: header(&config.identity_headers.groups)?,
    };
    let identity_jwt = config
        .identity_jwt
        .as_ref()
        .map(|jwt| {
            Ok::<_, anyhow::Error>(IdentityJwt {
                header: header(&jwt.header)?,
                ttl: jwt.ttl,
            })
        })
        .transpose()?;
    let set_by_proxy = [&identity.user, &identity.email, &identity.groups]
        .into_iter()
        .chain(identity_jwt.as_ref().map(|jwt| &jwt.header));
    let headers = HeaderPolicy::new(set_by_proxy, config.allow_underscore_headers);
    let content_security_policy = match config.content_security_policy.as_str() {
        "" => None,
        policy => Some(HeaderValue::from_str(policy).context("proxy.content_security_policy")?),
    };
    Ok(Proxy {
        resource,
        upstream: url::Url::parse(&config.upstream_url).context("proxy.upstream_url")?,
        path: config.path.clone(),
        mount: format!("{base_path}{}", config.path),
        resource_metadata_url: format!(
            "{}{metadata_path}",
            public_url.origin().ascii_serialization()
        ),
        public_origin: PublicOrigin::of(public_url)?,
        timeout,
        identity,
        identity_jwt,
        headers,
        content_security_policy,
        client: crate::http::proxy::upstream_client(timeout),
        tool_scopes: config.tool_scopes.clone(),
        max_message_bytes: config.max_message_bytes,
        forward_access_token: config.forward_access_token,
    })
}

const COOKIE_KEY: &str = "cookie-key";
const SIGNING_KEY: &str = "signing-key";
const ID_TOKEN_KEY: &str = "id-token-key";

/// The configured keys; without any, the ES256 key kept in storage, generated by whichever
/// instance comes first (per process with the memory backend). Unless the access-token key is
/// RS256, ID tokens get an RSA key kept the same way; when none is stored yet the set comes
/// without it, to be generated in the background (`generate_id_token_key`).
async fn signing_keys(config: &Config, storage: &dyn Storage) -> anyhow::Result<KeySet> {
    let configured = KeySet::configured(
        config.oauth.signing_key.as_ref(),
        config.oauth.signing.as_ref(),
    )?;
    let keys = match configured {
        Some(keys) => keys,
        None => {
            let key = stored_key(storage, SIGNING_KEY, SigningAlgorithm::ES256)
                .await
                .context("cannot load the signing key")?;
            match config.storage.backend {
                StorageBackend::Memory => tracing::warn!(
                    "no signing key configured: generated an ES256 key for this process; tokens will not survive a restart"
                ),
                StorageBackend::Postgres => {
                    tracing::info!(kid = %key.kid, "signing with the ES256 key kept in the database");
                }
            }
            KeySet::new(key)
        }
    };
    let stored = keys.needs_id_token_key()
        && storage
            .existing_shared_secret(ID_TOKEN_KEY)
            .await
            .context("cannot load the ID token signing key")?
            .is_some();
    if !stored {
        return Ok(keys);
    }
    let id_token_key = stored_key(storage, ID_TOKEN_KEY, SigningAlgorithm::RS256)
        .await
        .context("cannot load the ID token signing key")?;
    Ok(keys.with_id_token_keys(vec![id_token_key]))
}

/// Generates (or loads, should another instance have stored one meanwhile) the ID tokens' RSA
/// key off the start-up path, and adds it to the ring; retried every second while storage fails.
/// Until it is in, a code exchange that needs an ID token waits for it.
fn generate_id_token_key(storage: Arc<dyn Storage>, ring: Arc<KeyRing>) {
    tokio::spawn(async move {
        let mut failing = false;
        let mut fresh = None;
        loop {
            let key = stored_key_keeping(
                storage.as_ref(),
                ID_TOKEN_KEY,
                SigningAlgorithm::RS256,
                &mut fresh,
            );
            match key.await {
                Ok(key) => {
                    tracing::info!(kid = %key.kid, "ID token signing key (RS256) ready");
                    ring.install_id_token_key(key);
                    return;
                }
                Err(error) if !failing => {
                    let error = crate::error_chain(&error);
                    tracing::warn!(%error, "cannot create the ID token signing key; retrying every second");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

/// The configured storage; PostgreSQL is migrated first (under an advisory lock, so instances
/// starting together do not race).
pub(crate) async fn open_storage(config: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    match config.storage.backend {
        StorageBackend::Memory => Ok(Arc::new(MemoryStorage::new())),
        StorageBackend::Postgres => {
            if config.storage.encryption_key.is_none() {
                tracing::warn!(
                    "storage.encryption_key is not set: the shared signing and cookie keys are stored unencrypted in the database"
                );
            }
            let storage = postgres_storage(config)?;
            let applied = storage
                .migrate()
                .await
                .map_err(|e| anyhow::anyhow!("cannot prepare the database: {e}"))?;
            tracing::info!(?applied, "PostgreSQL storage ready");
            Ok(Arc::new(storage))
        }
    }
}

/// The PostgreSQL storage of the configuration (for `serve` and `migrate`).
pub fn postgres_storage(config: &Config) -> anyhow::Result<PostgresStorage> {
    let postgres = config
        .storage
        .postgres
        .as_ref()
        .context("storage.postgres is required with backend: postgres")?;
    Ok(PostgresStorage::new(
        postgres,
        config.storage.encryption_key.as_ref(),
    )?)
}

/// A configured provider, its client discovered now when it answers, else in the background.
async fn provider(
    config: &Config,
    upstream_config: &UpstreamConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Provider> {
    // A metric label lives as long as the process; there are as many names as providers, made
    // once at start.
    let name: &'static str = match &upstream_config.name {
        Some(name) => Box::leak(name.clone().into_boxed_str()),
        None => SINGLE_PROVIDER,
    };
    metrics.prepare_provider(name);
    let upstream = connect_upstream(config, name, upstream_config, metrics).await?;
    Ok(Provider {
        name,
        display_name: upstream_config
            .display_name
            .clone()
            .unwrap_or_else(|| name.to_owned()),
        callback: upstream_config.name.clone(),
        email_domains: upstream_config
            .email_domains
            .iter()
            .map(|domain| domain.to_ascii_lowercase())
            .collect(),
        // Filled in by `Providers::new`, which knows them all.
        foreign_domains: Vec::new(),
        subject_prefix: upstream_config.effective_subject_prefix(),
        claims: upstream_config.claims.clone(),
        access_policy: upstream_config.access_policy(),
        revalidate_on_refresh: upstream_config.revalidate_on_refresh,
        keep_tokens: upstream_config.keep_tokens,
        upstream,
    })
}

/// The provider's client, discovered now when it answers, else in the background.
async fn connect_upstream(
    config: &Config,
    name: &'static str,
    upstream_config: &UpstreamConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Arc<dyn Upstream>> {
    let upstream = Arc::new(OidcUpstream::new(
        OidcSettings {
            name,
            issuer: upstream_config.issuer.clone(),
            client_id: upstream_config.client_id.clone(),
            client_secret: upstream_config.client_secret.clone(),
            redirect_uri: config
                .callback_url_of(upstream_config)
                .context("server.public_url is not a URL")?,
            scopes: upstream_config.scopes.clone(),
            wanted_claims: wanted_claims(upstream_config),
        },
        upstream_config.timeout,
        Arc::clone(metrics),
    )?);
    // The provider may still be starting: serve anyway and keep trying in the background.
    match upstream.discover().await {
        Ok(()) => {
            tracing::info!(provider = name, issuer = %upstream_config.issuer, "upstream provider discovered");
        }
        Err(error) => {
            let error = crate::error_chain(&error);
            tracing::warn!(provider = name, issuer = %upstream_config.issuer, %error, "upstream discovery failed; retrying in the background");
            upstream.discover_in_background();
        }
    }
    Ok(upstream)
}

/// The claims the bridge maps; when the ID token lacks one, UserInfo is asked. The standard
/// `email` brings `email_verified` along: a domain policy trusts verified addresses only.
fn wanted_claims(upstream: &UpstreamConfig) -> Vec<String> {
    let mut wanted = vec![
        upstream.claims.email.clone(),
        upstream.claims.name.clone(),
        upstream.claims.groups.clone(),
    ];
    if upstream.claims.email == "email" && !upstream.allowed_email_domains.is_empty() {
        wanted.push("email_verified".to_owned());
    }
    wanted
}

/// How long a registered client that never reached the token endpoint is kept.
const NEVER_USED_CLIENT_TTL: Duration = Duration::from_secs(3600);

/// What `delete_unused_clients` is given: clients last used before the first time, or never used
/// and registered before the second, are deleted.
fn unused_client_bounds(now: UnixTime, ttl: Duration) -> (UnixTime, UnixTime) {
    // A last use is recorded to `LAST_USE_PRECISION`: the real one may be up to that much later,
    // and a client is never deleted within the TTL of it.
    let used_before = now.minus(ttl + crate::storage::LAST_USE_PRECISION);
    // A client that never came back after registering is not kept for the whole TTL: otherwise
    // a burst of registrations could fill the cap for weeks.
    let never_used = now.minus(NEVER_USED_CLIENT_TTL.min(ttl));
    (used_before, never_used)
}

/// Deletes expired entries, and registered clients unused for `unused_client_ttl`.
fn spawn_sweeper(
    storage: Arc<dyn Storage>,
    clock: SharedClock,
    every: Duration,
    unused_client_ttl: Option<Duration>,
) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every.max(Duration::from_secs(1)));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let now = clock.now();
            match storage.sweep_expired(now).await {
                Ok(0) => {}
                Ok(removed) => tracing::debug!(removed, "expired entries swept"),
                Err(error) => tracing::warn!(%error, "sweep of expired entries failed"),
            }
            if let Some(ttl) = unused_client_ttl {
                let (used_before, never_used) = unused_client_bounds(now, ttl);
                match storage.delete_unused_clients(used_before, never_used).await {
                    Ok(0) => {}
                    Ok(removed) => {
                        tracing::info!(removed, "unused registered clients deleted");
                        crate::audit::record(&crate::audit::Event::ClientsExpired {
                            count: removed,
                        });
                    }
                    Err(error) => tracing::warn!(%error, "deleting unused clients failed"),
                }
            }
        }
    });
}

/// Serves `service` on `listener` until `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    crate::http::server::serve(listener, service.router, service.server, shutdown)
        .await
        .context("server failed")
}

/// `mcp-oauth-bridge serve`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let service = build(&config, Arc::new(SystemClock)).await?;
    let listener = TcpListener::bind(&config.server.address)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.address))?;
    tracing::info!(address = %config.server.address, issuer = %service.bridge.settings.issuer, "mcp-oauth-bridge listening");
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let mut side_listeners = Vec::new();
    if let Some(address) = service.metrics_address {
        let router = crate::http::metrics_router(Arc::clone(&service.bridge.metrics));
        side_listeners.push(("metrics", address, router));
    }
    if let Some((address, router)) = &service.admin {
        side_listeners.push(("admin", *address, router.clone()));
    }
    for (name, address, router) in side_listeners {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} ({name}.address)"))?;
        // The same connection limits and timeouts as the service's own listener.
        let limits = service.server.clone();
        let shutdown = until_stopped(stopped.clone());
        tracing::info!(%address, "{name} listening");
        tokio::spawn(async move {
            if let Err(error) = crate::http::server::serve(listener, router, limits, shutdown).await
            {
                tracing::error!(%error, "the {name} listener failed");
            }
        });
    }
    serve(listener, service, until_stopped(stopped)).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod unused_client_tests {
    use super::*;
    use crate::storage::LAST_USE_PRECISION;

    #[test]
    fn a_client_used_within_the_ttl_is_kept_whatever_its_recorded_use_missed() {
        let now = UnixTime(1_700_000_000);
        let ttl = Duration::from_secs(600);
        let (used_before, _) = unused_client_bounds(now, ttl);
        // Recorded at `r`, the client may have been used until just before r + precision
        // without a write; deleted only when even that was more than the TTL ago.
        let recorded_last_kept = now.minus(ttl + LAST_USE_PRECISION);
        assert!(
            recorded_last_kept >= used_before,
            "kept: not before the bound"
        );
        let recorded_too_old = now.minus(ttl + LAST_USE_PRECISION + Duration::from_secs(1));
        assert!(recorded_too_old < used_before, "deleted");
    }

    #[test]
    fn a_never_used_client_goes_after_an_hour_or_the_ttl_if_shorter() {
        let now = UnixTime(1_700_000_000);
        let (_, never_used) = unused_client_bounds(now, Duration::from_secs(30 * 86400));
        assert_eq!(never_used, now.minus(NEVER_USED_CLIENT_TTL));
        let (_, never_used) = unused_client_bounds(now, Duration::from_secs(60));
        assert_eq!(never_used, now.minus(Duration::from_secs(60)));
    }
}
