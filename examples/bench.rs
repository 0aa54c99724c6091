//! `cargo run --release --example bench`: figures for the hot paths of the token endpoint.
//! In-process (no HTTP), in-memory storage, one thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mcp_oauth_bridge::clients::ClientRegistry;
use mcp_oauth_bridge::clock::{Clock, SystemClock, UnixTime};
use mcp_oauth_bridge::config::{ClaimsConfig, ClientConfig};
use mcp_oauth_bridge::identity::Identity;
use mcp_oauth_bridge::oauth::token::{ClientCredentials, exchange};
use mcp_oauth_bridge::oauth::{Bridge, Params, Settings, SignIn};
use mcp_oauth_bridge::secret::SecretString;
use mcp_oauth_bridge::storage::{MemoryStorage, Storage};
use mcp_oauth_bridge::tokens::jwt::{AccessTokenClaims, sign_access_token};
use mcp_oauth_bridge::tokens::keys::SigningKey;
use mcp_oauth_bridge::tokens::refresh::RefreshFamily;
use mcp_oauth_bridge::tokens::{KeySet, generate_token};
use mcp_oauth_bridge::upstream::claims::AccessPolicy;
use mcp_oauth_bridge::upstream::{Upstream, UpstreamError, UpstreamRequest};

/// The token endpoint never calls the upstream provider.
struct NoUpstream;

#[async_trait]
impl Upstream for NoUpstream {
    fn authorization_url(&self, _: &UpstreamRequest<'_>) -> Result<url::Url, UpstreamError> {
        Err(UpstreamError::NotReady)
    }
    async fn exchange_code(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: UnixTime,
    ) -> Result<serde_json::Value, UpstreamError> {
        Err(UpstreamError::NotReady)
    }
}

fn report(name: &str, count: u32, elapsed: Duration) {
    let per = elapsed / count;
    println!(
        "{name:<48} {count:>7} in {elapsed:>10.2?}  {per:>10.2?}/op  {:>9.0} op/s",
        f64::from(count) / elapsed.as_secs_f64()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let secret = "bench-client-secret";
    let client = |id: &str, secret: Option<&str>| ClientConfig {
        id: id.into(),
        secret: secret.map(SecretString::new),
        redirect_uris: vec!["http://127.0.0.1/callback".into()],
        name: None,
        scopes: None,
        grant_types: None,
        skip_consent: false,
    };
    let clients = ClientRegistry::from_config(
        &[client("public", None), client("confidential", Some(secret))],
        bcrypt::DEFAULT_COST,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let bridge = Bridge {
        settings: Settings {
            issuer: "https://bridge.example.com".into(),
            default_audience: "https://mcp.example.com/mcp".into(),
            allowed_resources: vec![],
            scopes_supported: vec!["openid".into(), "email".into()],
            access_token_ttl: Duration::from_secs(3600),
            refresh_token_ttl: Duration::from_secs(30 * 86400),
            refresh_token_max_lifetime: Duration::from_secs(90 * 86400),
            refresh_token_retry_window: Duration::from_secs(300),
            registration_enabled: false,
            metadata_documents_enabled: false,
            claims: ClaimsConfig::default(),
            access_policy: AccessPolicy::default(),
        },
        clients,
        storage: Arc::clone(&storage),
        sign_in: SignIn::Upstream(Arc::new(NoUpstream)),
        keys: Arc::new(KeySet::new(SigningKey::generate_es256()?)),
    };
    let now = SystemClock.now();

    let wrong = SecretString::new("wrong");
    let rounds = 5;
    let started = Instant::now();
    for _ in 0..rounds {
        let _ = bridge
            .clients
            .authenticate("confidential", Some(&wrong), now)
            .await;
    }
    report(
        "client auth, bcrypt cost 12 (wrong secret)",
        rounds,
        started.elapsed(),
    );
    let right = SecretString::new(secret);
    bridge
        .clients
        .authenticate("confidential", Some(&right), now)
        .await?;
    let rounds = 100_000;
    let started = Instant::now();
    for _ in 0..rounds {
        bridge
            .clients
            .authenticate("confidential", Some(&right), now)
            .await?;
    }
    report("client auth, remembered secret", rounds, started.elapsed());

    let claims = AccessTokenClaims {
        iss: "https://bridge.example.com".into(),
        sub: "u".into(),
        aud: "https://mcp.example.com/mcp".into(),
        client_id: "public".into(),
        scope: "openid".into(),
        exp: now.seconds() + 3600,
        iat: now.seconds(),
        nbf: now.seconds(),
        jti: "j".into(),
        email: None,
        name: None,
        groups: vec![],
    };
    let rounds = 5_000;
    let started = Instant::now();
    for _ in 0..rounds {
        sign_access_token(&bridge.keys, &claims)?;
    }
    report("sign ES256 access token", rounds, started.elapsed());

    let (mut refresh, hash) = generate_token();
    storage
        .create_family(RefreshFamily {
            id: "bench".into(),
            client_id: "public".into(),
            identity: Identity {
                subject: "u".into(),
                email: Some("u@example.com".into()),
                email_verified: Some(true),
                name: None,
                groups: vec!["g".into()],
            },
            scope: vec!["openid".into()],
            audience: "https://mcp.example.com/mcp".into(),
            absolute_expires_at: now.plus(Duration::from_secs(90 * 86400)),
            current: Some(hash),
            current_expires_at: now.plus(Duration::from_secs(30 * 86400)),
            previous: None,
            revoked: false,
            access_tokens: vec![],
        })
        .await?;
    let credentials = ClientCredentials {
        client_id: "public".into(),
        secret: None,
    };
    let rounds = 20_000;
    let started = Instant::now();
    for _ in 0..rounds {
        let params = Params::from([
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ]);
        let response = exchange(&bridge, &credentials, &params, now)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        refresh = response.refresh_token.unwrap_or_default();
    }
    report(
        "refresh grant: rotate + sign ES256 access token",
        rounds,
        started.elapsed(),
    );
    Ok(())
}
