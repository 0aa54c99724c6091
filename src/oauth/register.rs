//! Dynamic Client Registration (RFC 7591): validate the client's metadata, generate its
//! credentials, store it. Registered clients are public or confidential by
//! `token_endpoint_auth_method`, and always need the user's consent at /oauth/authorize.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client_assertion::PRIVATE_KEY_JWT;
use super::redirect_policy::{PolicyError, RedirectPolicy};
use super::registration::{RegistrationRequest, validate_registration};
use super::{Bridge, OAuthError, scope};
use crate::audit;
use crate::clock::UnixTime;
use crate::duration::{ConfigDuration, whole_seconds};
use crate::rate_limit::RateLimitConfig;
use crate::secret::SecretString;
use crate::storage::RegisteredClient;
use crate::tokens::opaque::{generate_token, random_string};

/// `oauth.dcr`: Dynamic Client Registration (RFC 7591). Its redirect patterns and profiles
/// also bound the clients that metadata documents describe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DcrConfig {
    pub enabled: bool,
    /// Regular expressions a registered redirect URI must match whole.
    pub allowed_redirect_patterns: Vec<String>,
    /// Built-in pattern lists by name: claude, cursor, vscode, chatgpt, inspector, loopback.
    pub allowed_redirect_profiles: Vec<String>,
    /// Registered clients at most; registration is refused beyond it.
    pub max_clients: usize,
    /// A registered client unused for this long is deleted.
    pub unused_client_ttl: ConfigDuration,
    pub rate_limit: RateLimitConfig,
}

impl Default for DcrConfig {
    fn default() -> Self {
        DcrConfig {
            enabled: false,
            allowed_redirect_patterns: Vec::new(),
            allowed_redirect_profiles: Vec::new(),
            max_clients: 1000,
            unused_client_ttl: ConfigDuration(Duration::from_secs(30 * 86400)),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

impl DcrConfig {
    /// The one redirect policy for clients that arrive unannounced, registered or described by
    /// a metadata document.
    pub(crate) fn redirect_policy(&self) -> Result<RedirectPolicy, PolicyError> {
        RedirectPolicy::compile(
            &self.allowed_redirect_patterns,
            &self.allowed_redirect_profiles,
        )
    }

    /// Problems of `oauth.dcr`, with their field paths; `policy_needed` when registration or
    /// metadata documents will use the redirect policy.
    pub(crate) fn validate(&self, policy_needed: bool, problems: &mut Vec<String>) {
        problems.extend(whole_seconds(
            "oauth.dcr.unused_client_ttl",
            self.unused_client_ttl,
            1,
        ));
        if !policy_needed {
            return;
        }
        match self.redirect_policy() {
            Ok(policy) if policy.is_empty() => problems.push(
                "oauth.dcr: enabled, but allowed_redirect_patterns and allowed_redirect_profiles are both empty, so nothing could register".to_owned(),
            ),
            Ok(_) => {}
            Err(problem) => problems.push(format!("oauth.dcr.{problem}")),
        }
        self.rate_limit.validate("oauth.dcr.rate_limit", problems);
    }
}

/// Registration settings derived from `oauth.dcr`.
#[derive(Debug, Clone)]
pub(crate) struct RegistrationPolicy {
    pub(crate) redirects: RedirectPolicy,
    pub(crate) max_clients: usize,
    pub(crate) secret_cost: u32,
}

/// RFC 7591 §3.2.1.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct RegistrationResponse {
    pub(crate) client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_secret: Option<String>,
    pub(crate) client_id_issued_at: i64,
    /// 0: the secret does not expire. Absent for public clients, which have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_secret_expires_at: Option<i64>,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) token_endpoint_auth_method: String,
    pub(crate) grant_types: Vec<String>,
    pub(crate) response_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) client_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) application_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id_token_signed_response_alg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwks: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) jwks_uri: Option<String>,
    /// RFC 7592 §3: where this registration is read and deleted, with the token below.
    pub(crate) registration_client_uri: String,
    pub(crate) registration_access_token: String,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RegistrationError {
    Rejected(OAuthError),
    /// `max_clients` are registered already.
    Full {
        max_clients: usize,
    },
}

impl From<OAuthError> for RegistrationError {
    fn from(error: OAuthError) -> Self {
        RegistrationError::Rejected(error)
    }
}

fn registry_full(policy: &RegistrationPolicy) -> RegistrationError {
    RegistrationError::Full {
        max_clients: policy.max_clients,
    }
}

/// RFC 7592 §3: the registration's own URL, below the registration endpoint.
pub(crate) fn registration_client_uri(settings: &super::Settings, client_id: &str) -> String {
    format!(
        "{}/{client_id}",
        settings.endpoint(super::endpoints::REGISTER)
    )
}

pub(crate) async fn register(
    bridge: &Bridge,
    policy: &RegistrationPolicy,
    request: RegistrationRequest,
    now: UnixTime,
) -> Result<RegistrationResponse, RegistrationError> {
    let valid = validate_registration(
        request,
        &policy.redirects,
        &bridge.settings.scopes_supported,
        &bridge.keys.current().id_token_algorithms(),
    )?;
    let method = valid.token_endpoint_auth_method.unwrap_or_default();
    let client_id = format!("dcr_{}", random_string(16));
    // Refused before any bcrypt: a full registry must not cost CPU per request.
    if bridge
        .storage
        .count_clients()
        .await
        .map_err(OAuthError::from)?
        >= policy.max_clients
    {
        return Err(registry_full(policy));
    }
    // Public clients and private_key_jwt clients (which prove themselves with their keys) get
    // no secret.
    let (secret, secret_hash) = if method == "none" || method == PRIVATE_KEY_JWT {
        (None, None)
    } else {
        let secret = SecretString::new(random_string(32));
        let hash = bridge
            .clients
            .hash_new_secret(secret.clone(), policy.secret_cost)
            .await
            .map_err(OAuthError::internal)?;
        (Some(secret), Some(hash))
    };
    let scope = valid.scope.as_deref().map(scope::parse).transpose()?;
    let (registration_access_token, registration_token_hash): (String, _) = generate_token();
    let record = RegisteredClient {
        client_id: client_id.clone(),
        secret_hash,
        token_endpoint_auth_method: method.clone(),
        client_name: valid.client_name.clone(),
        redirect_uris: valid.redirect_uris.clone().unwrap_or_default(),
        grant_types: valid.grant_types.clone().unwrap_or_default(),
        response_types: valid.response_types.clone().unwrap_or_default(),
        application_type: valid.application_type.clone(),
        scope,
        issued_at: now,
        last_used_at: None,
        registration_token_hash: Some(registration_token_hash),
        id_token_signed_response_alg: valid.id_token_signed_response_alg.clone(),
        jwks: valid.jwks.clone(),
        jwks_uri: valid.jwks_uri.clone(),
    };
    if !bridge
        .storage
        .register_client(record, policy.max_clients)
        .await
        .map_err(OAuthError::from)?
    {
        return Err(registry_full(policy));
    }
    tracing::info!(client_id, public = secret.is_none(), "client registered");
    audit::record(&audit::Event::ClientRegistered {
        client_id: &client_id,
        client_name: valid.client_name.as_deref(),
        redirect_uris: valid.redirect_uris.as_deref().unwrap_or_default(),
        grant_types: valid.grant_types.as_deref().unwrap_or_default(),
        token_endpoint_auth_method: &method,
    });
    Ok(RegistrationResponse {
        registration_client_uri: registration_client_uri(&bridge.settings, &client_id),
        registration_access_token,
        client_id,
        client_secret_expires_at: secret.as_ref().map(|_| 0),
        client_secret: secret.map(|s| s.expose().to_owned()),
        client_id_issued_at: now.seconds(),
        redirect_uris: valid.redirect_uris.unwrap_or_default(),
        token_endpoint_auth_method: method,
        grant_types: valid.grant_types.unwrap_or_default(),
        response_types: valid.response_types.unwrap_or_default(),
        client_name: valid.client_name,
        scope: valid.scope,
        application_type: valid.application_type,
        id_token_signed_response_alg: valid.id_token_signed_response_alg,
        jwks: valid.jwks,
        jwks_uri: valid.jwks_uri,
    })
}
