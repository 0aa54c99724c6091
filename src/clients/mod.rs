//! The client registry: pre-registered clients from YAML and their authentication (RFC 6749 §2.3).
//!
//! Secrets are bcrypt hashes only. bcrypt runs off the async runtime; an unknown client is checked
//! against a dummy hash of the same cost so timing does not reveal which client ids exist; a
//! successful check is remembered under an HMAC of the secret so repeated calls skip bcrypt.

pub mod client;
pub(crate) mod client_keys;
pub mod metadata_documents;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::OwnedSemaphorePermit;

use crate::clock::UnixTime;
use crate::oauth::client_assertion;
use crate::oauth::error::OAuthError;
use crate::oauth::grant_type::GrantType;
use crate::oauth::text::for_log;
use crate::password_hash;
use crate::secret::SecretString;
use crate::storage::{Storage, StorageError};
use crate::tokens::keys::SigningAlgorithm;
pub(crate) use client::Client;
use client_keys::{ClientKeys, RemoteKeySets};
use metadata_documents::{DocumentError, MetadataDocuments, is_metadata_url};

const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(600);
const VERIFIED_CACHE_CAPACITY: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ClientLoadError {
    field: String,
    problem: String,
}

pub struct ClientRegistry {
    clients: HashMap<String, Arc<Client>>,
    dummy_hash: Arc<str>,
    verified: VerifiedSecrets,
    /// One bcrypt per core at a time: a flood of bad secrets queues instead of spawning a
    /// blocking thread each.
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
    /// Where registered (DCR) clients live; None when registration is off.
    registrations: Option<Arc<dyn Storage>>,
    /// Clients identified by an https URL; None when metadata documents are off.
    documents: Option<Arc<MetadataDocuments>>,
    /// How `private_key_jwt` assertions are checked; None: that method is refused.
    assertions: Option<Assertions>,
}

/// The client as it identified itself: by HTTP Basic, by body parameters, by a signed
/// assertion, or (public) by id only.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<SecretString>,
    /// A `private_key_jwt` assertion (RFC 7523 §2.2): a credential, kept out of logs.
    pub assertion: Option<SecretString>,
}

/// What checking a client assertion needs beyond the assertion: the names it may be addressed
/// to, the clients' published keys, and storage to remember each `jti` in.
pub(crate) struct Assertions {
    /// The token endpoint's URL and the issuer (RFC 7523 §3; OIDC Core §9 names the first).
    pub(crate) audiences: Vec<String>,
    pub(crate) remote_keys: RemoteKeySets,
    pub(crate) storage: Arc<dyn Storage>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientLookupError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metadata(DocumentError),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum NewSecretError {
    #[error("the bcrypt pool is closed")]
    PoolClosed,
    #[error("the hashing task failed")]
    TaskFailed,
    #[error(transparent)]
    Hash(password_hash::HashError),
}

impl ClientRegistry {
    /// Builds the registry, bcrypt-hashing plain secrets (all cores at once); slow by design, so
    /// call it off the runtime.
    pub fn from_config(configs: &[ClientConfig], cost: u32) -> Result<Self, ClientLoadError> {
        let mut clients = HashMap::new();
        let mut max_cost = cost;
        let mut plain_hashes = hash_plain_secrets(configs, cost).into_iter();
        for (i, config) in configs.iter().enumerate() {
            let secret_hash = match &config.secret {
                None => None,
                Some(secret) => match bcrypt::HashParts::from_str(secret.expose()) {
                    Ok(parts) => {
                        max_cost = max_cost.max(parts.get_cost());
                        Some(secret.expose().to_owned())
                    }
                    Err(_) => Some(plain_hashes.next().ok_or_else(|| ClientLoadError {
                        field: "oauth.clients".into(),
                        problem: "a plain secret was not hashed".into(),
                    })??),
                },
            };
            let grant_types = match &config.grant_types {
                Some(names) => names
                    .iter()
                    .filter_map(|name| GrantType::parse(name))
                    .collect(),
                None => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            };
            let client = Client {
                id: config.id.clone(),
                name: config.name.clone(),
                redirect_uris: config.redirect_uris.clone(),
                secret_hash,
                scopes: config.scopes.clone(),
                default_scope: None,
                grant_types,
                skip_consent: config.skip_consent,
                registered: false,
                id_token_algorithm: config.id_token_signed_response_alg,
                keys: ClientKeys::from_metadata(config.jwks.as_ref(), config.jwks_uri.as_deref())
                    .map_err(|problem| ClientLoadError {
                    field: format!("oauth.clients[{i}].jwks"),
                    problem: problem.to_owned(),
                })?,
            };
            clients.insert(client.id.clone(), Arc::new(client));
        }
        let dummy_hash = password_hash::dummy_hash(max_cost);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(ClientRegistry {
            clients,
            dummy_hash: dummy_hash.into(),
            verified: VerifiedSecrets::new(),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
            registrations: None,
            documents: None,
            assertions: None,
        })
    }

    /// Also looks registered (DCR) clients up in `storage`.
    pub(crate) fn with_registrations(mut self, storage: Arc<dyn Storage>) -> Self {
        self.registrations = Some(storage);
        self
    }

    /// Also authenticates `private_key_jwt` clients.
    pub(crate) fn with_assertions(mut self, assertions: Assertions) -> Self {
        self.assertions = Some(assertions);
        self
    }

    /// Also accepts https `client_id`s described by metadata documents.
    pub(crate) fn with_metadata_documents(mut self, documents: Arc<MetadataDocuments>) -> Self {
        self.documents = Some(documents);
        self
    }

    /// Whether looking `client_id` up would fetch a metadata document now: what a per-address
    /// limit on fetches counts.
    pub(crate) fn needs_document_fetch(&self, client_id: &str, now: UnixTime) -> bool {
        !self.clients.contains_key(client_id)
            && is_metadata_url(client_id)
            && self
                .documents
                .as_ref()
                .is_some_and(|documents| documents.needs_fetch(client_id, now))
    }

    /// A configured client, else a registered one, else one described by its metadata document.
    pub(crate) async fn find(
        &self,
        client_id: &str,
        now: UnixTime,
    ) -> Result<Option<Arc<Client>>, ClientLookupError> {
        if let Some(client) = self.clients.get(client_id) {
            return Ok(Some(Arc::clone(client)));
        }
        if let Some(documents) = &self.documents
            && is_metadata_url(client_id)
        {
            return documents
                .client(client_id, now)
                .await
                .map(Some)
                .map_err(ClientLookupError::Metadata);
        }
        let Some(storage) = &self.registrations else {
            return Ok(None);
        };
        Ok(storage
            .get_client(client_id)
            .await?
            .map(|record| Arc::new(Client::from_registration(record))))
    }

    /// Authenticates the client of a token, revocation or introspection request by whatever it
    /// presented: a signed assertion, a secret, or (public) nothing.
    pub async fn authenticate_client(
        &self,
        credentials: &ClientCredentials,
        now: UnixTime,
    ) -> Result<Arc<Client>, OAuthError> {
        match &credentials.assertion {
            Some(assertion) => {
                let client = self
                    .verify_assertion(&credentials.client_id, assertion.expose(), now)
                    .await?;
                self.touch(&client, now).await?;
                Ok(client)
            }
            None => {
                self.authenticate(&credentials.client_id, credentials.secret.as_ref(), now)
                    .await
            }
        }
    }

    async fn verify_assertion(
        &self,
        client_id: &str,
        assertion: &str,
        now: UnixTime,
    ) -> Result<Arc<Client>, OAuthError> {
        let refused = |reason: &str| {
            tracing::info!(
                client_id = for_log(client_id),
                reason,
                "client assertion refused"
            );
            OAuthError::invalid_client("client authentication failed")
        };
        let client = match self.find(client_id, now).await {
            Ok(Some(client)) => client,
            Ok(None) => return Err(refused("unknown client")),
            Err(ClientLookupError::Storage(error)) => return Err(error.into()),
            Err(ClientLookupError::Metadata(error)) => return Err(refused(error.detail())),
        };
        let (Some(keys), Some(assertions)) = (&client.keys, &self.assertions) else {
            return Err(refused(
                "the client does not authenticate with private_key_jwt",
            ));
        };
        let audiences = &assertions.audiences;
        if let ClientKeys::Remote(_) = keys {
            // Nothing is fetched for an assertion that would fail anyway.
            client_assertion::precheck(assertion, client_id, audiences, now)
                .map_err(|refusal| refused(refusal.0))?;
        }
        let verified = keys
            .check_with(&assertions.remote_keys, now, |set| {
                client_assertion::verify(assertion, client_id, set, audiences, now)
            })
            .await
            .map_err(|error| refused(error.detail()))?
            .map_err(|refusal| refused(refusal.0))?;
        let key = client_assertion::single_use_key("client-assertion", client_id, &verified.jti);
        if !assertions
            .storage
            .use_once(
                &key,
                client_assertion::remembered_until(verified.expires_at),
                now,
            )
            .await?
        {
            return Err(refused("the client assertion's jti was used before"));
        }
        Ok(client)
    }

    /// Successful use keeps a registered client alive; the sweeper deletes unused ones.
    async fn touch(&self, client: &Client, now: UnixTime) -> Result<(), OAuthError> {
        if let Some(storage) = &self.registrations
            && client.registered
        {
            storage.touch_client(&client.id, now).await?;
        }
        Ok(())
    }

    /// Authenticates a client at the token endpoint: a confidential client by its secret, a public
    /// client by presenting no secret. Every failure is `invalid_client`.
    pub async fn authenticate(
        &self,
        client_id: &str,
        secret: Option<&SecretString>,
        now: UnixTime,
    ) -> Result<Arc<Client>, OAuthError> {
        let client = self.verify_credentials(client_id, secret, now).await?;
        self.touch(&client, now).await?;
        Ok(client)
    }

    async fn verify_credentials(
        &self,
        client_id: &str,
        secret: Option<&SecretString>,
        now: UnixTime,
    ) -> Result<Arc<Client>, OAuthError> {
        let client = match self.find(client_id, now).await {
            Ok(client) => client,
            Err(ClientLookupError::Storage(error)) => return Err(error.into()),
            Err(ClientLookupError::Metadata(error)) => {
                tracing::info!(
                    client_id = for_log(client_id),
                    reason = error.detail(),
                    "client metadata document unusable"
                );
                return Err(OAuthError::invalid_client(
                    "the client's metadata document cannot be used",
                ));
            }
        };
        let Some(secret) = secret else {
            return match client {
                Some(client) if client.is_public() => Ok(client),
                Some(_) => {
                    tracing::info!(client_id, "confidential client presented no secret");
                    Err(OAuthError::invalid_client(
                        "client authentication is required",
                    ))
                }
                None => {
                    tracing::info!(client_id = for_log(client_id), "unknown client");
                    Err(OAuthError::invalid_client("unknown client"))
                }
            };
        };
        let stored_hash = client.as_ref().and_then(|c| c.secret_hash.clone());
        let cache_key = self.verified.key(client_id, secret);
        if stored_hash.is_some() && self.verified.contains(&cache_key, now) {
            return client.ok_or_else(|| {
                OAuthError::internal(crate::oauth::error::Cause::because(
                    "a verified secret is cached for a client that is gone",
                ))
            });
        }
        // Unknown and public clients pay the same bcrypt as a real check, so timing says nothing.
        let hash = stored_hash
            .clone()
            .map(Arc::from)
            .unwrap_or_else(|| Arc::clone(&self.dummy_hash));
        let matches = match Arc::clone(&self.bcrypt_slots).acquire_owned().await {
            Ok(slot) => verify_secret(secret.clone(), hash, slot).await,
            Err(_) => false,
        };
        match (client, stored_hash, matches) {
            (Some(client), Some(_), true) => {
                self.verified.insert(cache_key, now);
                Ok(client)
            }
            (Some(client), None, _) if client.keys.is_some() => {
                tracing::info!(client_id, "private_key_jwt client presented a secret");
                Err(OAuthError::invalid_client(
                    "this client authenticates with private_key_jwt",
                ))
            }
            (Some(_), None, _) => {
                tracing::info!(client_id, "public client presented a secret");
                Err(OAuthError::invalid_client(
                    "client is public and must not send a secret",
                ))
            }
            (Some(_), Some(_), false) => {
                tracing::info!(client_id, "wrong client secret");
                Err(OAuthError::invalid_client("client authentication failed"))
            }
            (None, _, _) => {
                tracing::info!(client_id = for_log(client_id), "unknown client");
                Err(OAuthError::invalid_client("client authentication failed"))
            }
        }
    }

    /// bcrypt-hashes a newly issued secret under the same one-per-core bound as the checks.
    pub(crate) async fn hash_new_secret(
        &self,
        secret: SecretString,
        cost: u32,
    ) -> Result<String, NewSecretError> {
        let slot = Arc::clone(&self.bcrypt_slots)
            .acquire_owned()
            .await
            .map_err(|_| NewSecretError::PoolClosed)?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            password_hash::hash(&secret, cost)
        })
        .await
        .map_err(|_| NewSecretError::TaskFailed)?
        .map_err(NewSecretError::Hash)
    }
}

/// The bcrypt hashes of the clients' plain secrets, in the clients' order, hashed on every core at
/// once rather than one after another on the start-up path.
fn hash_plain_secrets(configs: &[ClientConfig], cost: u32) -> Vec<Result<String, ClientLoadError>> {
    let plain: Vec<(usize, &SecretString)> = configs
        .iter()
        .enumerate()
        .filter_map(|(i, config)| config.secret.as_ref().map(|secret| (i, secret)))
        .filter(|(_, secret)| bcrypt::HashParts::from_str(secret.expose()).is_err())
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = plain.len().div_ceil(cores).max(1);
    let hash = |(i, secret): &(usize, &SecretString)| {
        password_hash::hash(secret, cost).map_err(|error| ClientLoadError {
            field: format!("oauth.clients[{i}].secret"),
            problem: crate::error_chain(&error),
        })
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = plain
            .chunks(per_thread)
            .map(|chunk| {
                let worker = scope.spawn(move || chunk.iter().map(hash).collect::<Vec<_>>());
                (chunk.len(), worker)
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|(len, worker)| {
                // One answer per secret whatever happens, so that each stays with its client.
                worker.join().unwrap_or_else(|_| {
                    (0..len)
                        .map(|_| {
                            Err(ClientLoadError {
                                field: "oauth.clients".into(),
                                problem: "hashing a secret panicked".into(),
                            })
                        })
                        .collect()
                })
            })
            .collect()
    })
}

/// The slot travels into the blocking task: it is released when bcrypt ends, not when a
/// client that hung up drops its request.
async fn verify_secret(secret: SecretString, hash: Arc<str>, slot: OwnedSemaphorePermit) -> bool {
    let check = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        password_hash::verify(&secret, &hash)
    });
    check.await.unwrap_or(false)
}

/// Successful secret checks, keyed by HMAC(process key, client id, secret): the secret itself is
/// never kept, and the key dies with the process.
struct VerifiedSecrets {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], UnixTime>>,
}

impl VerifiedSecrets {
    fn new() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        VerifiedSecrets {
            key,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, client_id: &str, secret: &SecretString) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return [0u8; 32];
        };
        mac.update(client_id.as_bytes());
        mac.update(&[0]);
        mac.update(secret.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn contains(&self, key: &[u8; 32], now: UnixTime) -> bool {
        self.entries
            .lock()
            .map(|entries| entries.get(key).is_some_and(|until| *until > now))
            .unwrap_or(false)
    }

    fn insert(&self, key: [u8; 32], now: UnixTime) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= VERIFIED_CACHE_CAPACITY {
                entries.retain(|_, until| *until > now);
                if entries.len() >= VERIFIED_CACHE_CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(key, now.plus(VERIFIED_CACHE_TTL));
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub id: String,
    /// A bcrypt hash (`$2b$…`) or a plain value that is hashed at load. None: a public client.
    pub secret: Option<SecretString>,
    /// May be empty for a client that only uses `client_credentials`.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub skip_consent: bool,
    /// How this client's ID tokens are signed; unset, RS256 (OIDC's default).
    pub id_token_signed_response_alg: Option<SigningAlgorithm>,
    /// `private_key_jwt`: the client's public keys as a JWK Set (instead of a secret).
    pub jwks: Option<serde_json::Value>,
    /// `private_key_jwt`: where the client publishes its keys (https; instead of a secret).
    pub jwks_uri: Option<String>,
}

impl ClientConfig {
    /// Every problem of one `oauth.clients` entry (`field` is its path), with its field path.
    pub(crate) fn validate(
        &self,
        field: &str,
        scopes_supported: &[String],
        problems: &mut Vec<String>,
    ) {
        if self.id.trim().is_empty() || self.id.chars().any(|c| c.is_control()) {
            problems.push(format!("{field}.id: must be a non-empty printable string"));
        }
        if let Some(secret) = &self.secret
            && secret.is_empty()
        {
            problems.push(format!(
                "{field}.secret: is empty (an unset environment variable?); remove it for a public client"
            ));
        }
        let grants = |name: &str| {
            self.grant_types
                .as_ref()
                .is_none_or(|names| names.iter().any(|g| g == name))
        };
        if self.redirect_uris.is_empty() && grants("authorization_code") {
            problems.push(format!(
                "{field}.redirect_uris: at least one redirect URI is required"
            ));
        }
        let has_keys = self.jwks.is_some() || self.jwks_uri.is_some();
        let without_user =
            self.grant_types.iter().flatten().find(|g| {
                GrantType::parse(g).is_some_and(GrantType::is_for_configured_clients_only)
            });
        if let Some(grant) = without_user
            && self.secret.is_none()
            && !has_keys
        {
            problems.push(format!(
                "{field}.grant_types: {grant} needs a secret or keys (a public client cannot prove who it is)"
            ));
        }
        if has_keys && self.secret.is_some() {
            problems.push(format!(
                "{field}: a client authenticates with a secret or with keys (jwks, jwks_uri), not both"
            ));
        }
        if let Err(problem) =
            client_keys::ClientKeys::from_metadata(self.jwks.as_ref(), self.jwks_uri.as_deref())
        {
            problems.push(format!("{field}.jwks: {problem}"));
        }
        for (j, uri) in self.redirect_uris.iter().enumerate() {
            if let Err(problem) = crate::oauth::redirect_uri::validate_registered(uri) {
                problems.push(format!("{field}.redirect_uris[{j}]: {problem}"));
            }
        }
        for (j, scope) in self.scopes.iter().flatten().enumerate() {
            if !scopes_supported.contains(scope) {
                problems.push(format!(
                    "{field}.scopes[{j}]: {scope:?} is not in oauth.scopes_supported"
                ));
            }
        }
        for (j, grant) in self.grant_types.iter().flatten().enumerate() {
            if GrantType::parse(grant).is_none() {
                problems.push(format!(
                    "{field}.grant_types[{j}]: {grant:?} is not supported (use authorization_code, refresh_token, client_credentials, urn:ietf:params:oauth:grant-type:jwt-bearer, urn:ietf:params:oauth:grant-type:token-exchange)"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::RegisteredClient;

    const NOW: UnixTime = UnixTime(1_700_000_000);
    const TEST_COST: u32 = 4;

    fn config(id: &str, secret: Option<&str>) -> ClientConfig {
        ClientConfig {
            id: id.into(),
            secret: secret.map(SecretString::new),
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            name: None,
            scopes: None,
            grant_types: None,
            skip_consent: false,
            id_token_signed_response_alg: None,
            jwks: None,
            jwks_uri: None,
        }
    }

    fn registry() -> ClientRegistry {
        let prehashed = bcrypt::hash("hashed-secret", TEST_COST).unwrap();
        ClientRegistry::from_config(
            &[
                config("public", None),
                config("plain", Some("plain-secret")),
                config("hashed", Some(&prehashed)),
            ],
            TEST_COST,
        )
        .unwrap()
    }

    fn secret(s: &str) -> SecretString {
        SecretString::new(s)
    }

    #[tokio::test]
    async fn confidential_clients_authenticate_with_plain_or_prehashed_secrets() {
        let registry = registry();
        assert_eq!(
            registry
                .authenticate("plain", Some(&secret("plain-secret")), NOW)
                .await
                .unwrap()
                .id,
            "plain"
        );
        assert_eq!(
            registry
                .authenticate("hashed", Some(&secret("hashed-secret")), NOW)
                .await
                .unwrap()
                .id,
            "hashed"
        );
    }

    #[tokio::test]
    async fn plain_secrets_hashed_at_once_each_stay_with_their_client() {
        let prehashed = password_hash::hash(&secret("prehashed-secret"), 4).unwrap();
        let mut configs: Vec<ClientConfig> = (0..7)
            .map(|i| config(&format!("plain-{i}"), Some(&format!("secret-{i}"))))
            .collect();
        configs.insert(3, config("prehashed", Some(&prehashed)));
        configs.insert(5, config("public", None));
        let registry = ClientRegistry::from_config(&configs, 4).unwrap();
        for i in 0..7 {
            let id = format!("plain-{i}");
            let own = secret(&format!("secret-{i}"));
            let found = registry.authenticate(&id, Some(&own), NOW).await;
            assert_eq!(found.unwrap().id, id);
            let other = format!("secret-{}", (i + 1) % 7);
            assert!(
                registry
                    .authenticate(&id, Some(&secret(&other)), NOW)
                    .await
                    .is_err()
            );
        }
        let right = secret("prehashed-secret");
        let found = registry.authenticate("prehashed", Some(&right), NOW).await;
        assert_eq!(found.unwrap().id, "prehashed");
    }

    #[tokio::test]
    async fn plain_secrets_are_not_kept_in_plain() {
        let registry = registry();
        let hash = registry
            .find("plain", NOW)
            .await
            .unwrap()
            .unwrap()
            .secret_hash
            .clone()
            .unwrap();
        assert!(hash.starts_with("$2b$"));
        assert!(!hash.contains("plain-secret"));
    }

    #[tokio::test]
    async fn every_authentication_failure_is_invalid_client() {
        let registry = registry();
        let cases = [
            ("plain", Some(secret("wrong"))),
            ("plain", None),
            ("public", Some(secret("anything"))),
            ("nobody", Some(secret("anything"))),
            ("nobody", None),
            ("plain", Some(secret(&"x".repeat(100)))),
        ];
        for (client_id, presented) in cases {
            let err = registry
                .authenticate(client_id, presented.as_ref(), NOW)
                .await
                .unwrap_err();
            assert_eq!(err.code(), "invalid_client", "{client_id}");
        }
    }

    #[tokio::test]
    async fn public_client_authenticates_without_secret() {
        assert!(
            registry()
                .authenticate("public", None, NOW)
                .await
                .unwrap()
                .is_public()
        );
    }

    #[tokio::test]
    async fn a_verified_secret_is_remembered_but_a_wrong_one_never_is() {
        let registry = registry();
        registry
            .authenticate("plain", Some(&secret("plain-secret")), NOW)
            .await
            .unwrap();
        let key = registry.verified.key("plain", &secret("plain-secret"));
        assert!(registry.verified.contains(&key, NOW));
        assert!(
            !registry
                .verified
                .contains(&key, NOW.plus(VERIFIED_CACHE_TTL))
        );
        let _ = registry
            .authenticate("plain", Some(&secret("wrong")), NOW)
            .await;
        assert!(
            !registry
                .verified
                .contains(&registry.verified.key("plain", &secret("wrong")), NOW)
        );
        // The remembered key is bound to the client id: another client cannot ride on it.
        assert!(!registry.verified.contains(
            &registry.verified.key("hashed", &secret("plain-secret")),
            NOW
        ));
    }

    #[tokio::test]
    async fn registered_clients_are_found_kept_alive_by_use_and_gone_once_deleted() {
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::MemoryStorage::new());
        let registry = registry().with_registrations(Arc::clone(&storage));
        let record = RegisteredClient {
            client_id: "dcr_1".into(),
            secret_hash: Some(bcrypt::hash("dcr-secret", TEST_COST).unwrap()),
            token_endpoint_auth_method: "client_secret_basic".into(),
            client_name: Some("Registered".into()),
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            response_types: vec!["code".into()],
            application_type: None,
            scope: None,
            issued_at: NOW,
            last_used_at: None,
            registration_token_hash: None,
            id_token_signed_response_alg: None,
            jwks: None,
            jwks_uri: None,
        };
        storage.register_client(record, 10).await.unwrap();
        let later = NOW.plus(Duration::from_secs(86400));
        let client = registry
            .authenticate("dcr_1", Some(&secret("dcr-secret")), later)
            .await
            .unwrap();
        assert!(client.registered && !client.skip_consent);
        assert_eq!(
            storage
                .get_client("dcr_1")
                .await
                .unwrap()
                .unwrap()
                .last_used_at,
            Some(later)
        );
        storage
            .delete_unused_clients(later.plus(Duration::from_secs(1)), later)
            .await
            .unwrap();
        let err = registry
            .authenticate("dcr_1", Some(&secret("dcr-secret")), later)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_client");
    }

    #[tokio::test]
    async fn unknown_client_costs_a_bcrypt_like_a_known_one() {
        let registry =
            ClientRegistry::from_config(&[config("plain", Some("plain-secret"))], 10).unwrap();
        let started = std::time::Instant::now();
        let _ = registry
            .authenticate("plain", Some(&secret("wrong")), NOW)
            .await;
        let known = started.elapsed();
        let started = std::time::Instant::now();
        let _ = registry
            .authenticate("nobody", Some(&secret("wrong")), NOW)
            .await;
        let unknown = started.elapsed();
        // Both pay one cost-10 bcrypt; a skipped check would be orders of magnitude faster.
        assert!(
            unknown * 4 > known,
            "unknown {unknown:?} vs known {known:?}"
        );
    }
}
