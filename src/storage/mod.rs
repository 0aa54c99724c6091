//! Persistence behind one trait: in memory for one instance, PostgreSQL for many. Every single-use operation
//! (state, code, refresh rotation) is one atomic call, so it stays single-use across instances.

pub(crate) mod memory;
pub(crate) mod metered;
pub(crate) mod postgres;
pub mod settings;

#[cfg(test)]
pub(crate) mod contract_tests;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::identity::{Identity, UpstreamSession};
use crate::sealing::SealedSecret;
use crate::secret::{FlowSecret, SecretBytes};
use crate::tokens::TokenHash;
use crate::tokens::refresh::{Presentation, RefreshFamily, RefreshRequest, Replacement};

pub use memory::MemoryStorage;
pub use postgres::PostgresStorage;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database refused or could not be reached. Only the server's code and message are
    /// kept, not the driver's error: its DETAIL can quote the values of a row.
    #[error("storage unavailable: postgresql: {0}")]
    Database(String),
    /// A thread panicked while it held the in-memory store.
    #[error("storage unavailable: memory storage lock poisoned")]
    Poisoned,
    /// A value kept encrypted could not be sealed or opened.
    #[error("storage unavailable: {0}")]
    Sealing(#[from] crate::sealing::SealError),
    #[error("storage unavailable: {name} is stored encrypted: set storage.encryption_key")]
    EncryptionKeyMissing { name: String },
    /// A record the memory storage packed does not read back: a bug, reported, never guessed at.
    #[error("storage unavailable: memory storage holds a record it cannot read")]
    Corrupt,
}

/// A client registered through RFC 7591 Dynamic Client Registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredClient {
    pub client_id: String,
    /// bcrypt hash; None for a public client (`token_endpoint_auth_method: none`).
    pub(crate) secret_hash: Option<String>,
    pub(crate) token_endpoint_auth_method: String,
    pub(crate) client_name: Option<String>,
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) grant_types: Vec<String>,
    pub(crate) response_types: Vec<String>,
    pub(crate) application_type: Option<String>,
    pub(crate) scope: Option<Vec<String>>,
    pub(crate) issued_at: UnixTime,
    /// None until the client first uses the token endpoint.
    pub(crate) last_used_at: Option<UnixTime>,
    /// RFC 7592: the hash of the token that reads or deletes this registration; None for
    /// clients registered before the bridge issued them, which cannot be managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) registration_token_hash: Option<crate::tokens::TokenHash>,
    /// OIDC Registration §2; None: RS256. Absent from registrations made before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id_token_signed_response_alg: Option<String>,
    /// `private_key_jwt`: the client's public keys, or where it publishes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) jwks: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) jwks_uri: Option<String>,
}

#[cfg(test)]
impl RegisteredClient {
    /// A public loopback client, for tests to change what they look at.
    pub(crate) fn example(client_id: &str) -> Self {
        RegisteredClient {
            client_id: client_id.into(),
            secret_hash: None,
            token_endpoint_auth_method: "none".into(),
            client_name: None,
            redirect_uris: vec!["http://127.0.0.1/cb".into()],
            grant_types: vec!["authorization_code".into()],
            response_types: vec!["code".into()],
            application_type: None,
            scope: None,
            issued_at: UnixTime(1_700_000_000),
            last_used_at: None,
            registration_token_hash: None,
            id_token_signed_response_alg: None,
            jwks: None,
            jwks_uri: None,
        }
    }
}

/// An authorization request once every rule of /oauth/authorize has passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether the client sent `redirect_uri`; if so the token request must repeat it (RFC 6749 §4.1.3).
    pub(crate) redirect_uri_given: bool,
    pub(crate) client_state: Option<String>,
    /// The client's OpenID Connect `nonce`, echoed in the ID token we issue.
    pub(crate) client_nonce: Option<String>,
    pub(crate) code_challenge: String,
    pub(crate) scope: Vec<String>,
    pub(crate) audience: String,
    /// OpenID Connect's `login_hint`: who the client thinks will sign in. Its email domain picks
    /// the identity provider, which is told it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) login_hint: Option<String>,
}

/// How the user's consent to this client was established before the upstream login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consent {
    /// A trusted first-party client (`skip_consent`).
    NotNeeded,
    /// The user approved on the consent page during this sign-in.
    GivenNow,
    /// The user approved a page that asked only for what is new and listed `earlier`, what the
    /// user this browser remembers had approved before: what the code may carry on.
    GivenOnTopOf { earlier: Vec<String> },
    /// A consent remembered for this subject; the upstream login must turn out to be them.
    Remembered { subject: String },
}

/// An authorization request waiting for the user to come back from the upstream login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub request: AuthorizationRequest,
    pub consent: Consent,
    pub(crate) upstream_nonce: FlowSecret,
    pub(crate) upstream_pkce_verifier: FlowSecret,
    /// The provider the user was sent to (`oauth.upstreams[].name`): its callback alone may
    /// complete the sign-in. `None` while the user has still to choose one, or with one
    /// provider configured as `oauth.upstream`, or with the local form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) provider: Option<String>,
    /// Hash of the cookie value that ties the flow to the browser that started it.
    pub(crate) browser_binding: TokenHash,
    pub(crate) expires_at: UnixTime,
}

/// An authorization request shown on the consent page, waiting for Allow or Deny.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsentRequest {
    pub request: AuthorizationRequest,
    /// What the user this browser remembers approved before: the page asks only for the rest.
    #[serde(default)]
    pub already_approved: Vec<String>,
    pub expires_at: UnixTime,
}

/// A user's remembered approval of a client for a redirect URI and a set of scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentGrant {
    pub subject: String,
    pub client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: Vec<String>,
    /// The resource (audience) the approval was for.
    pub(crate) audience: String,
    pub(crate) expires_at: UnixTime,
}

/// Our authorization code, bound to everything the token request must prove.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationCodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_given: bool,
    pub code_challenge: String,
    pub scope: Vec<String>,
    pub audience: String,
    pub identity: Identity,
    /// When the user authenticated upstream (OIDC `auth_time`).
    pub auth_time: UnixTime,
    pub client_nonce: Option<String>,
    /// Chosen when the code is minted, so a replay can revoke the family even mid-issue.
    pub family_id: String,
    pub expires_at: UnixTime,
    /// The provider's refresh token, sealed, when sessions are re-validated on refresh or the
    /// provider's tokens are kept.
    #[serde(default)]
    pub upstream_refresh: Option<SealedSecret>,
    /// The provider's access token and its lifetime, sealed, when its tokens are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_access: Option<SealedSecret>,
    /// The provider session the user signed in with (none for local users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_session: Option<UpstreamSession>,
}

#[derive(Debug, Clone)]
pub enum PendingTake {
    Taken(Box<PendingAuthorization>),
    /// The state exists, but the request did not come from the browser that started it.
    OtherBrowser,
    /// Unknown, already used, or expired.
    Missing,
}

#[derive(Debug, Clone)]
pub enum CodeRedemption {
    Redeemed(Box<AuthorizationCodeRecord>),
    /// Already redeemed once; the family it produced must be revoked.
    Replayed {
        family_id: String,
        client_id: String,
    },
    Expired,
    Unknown,
    /// The code belongs to another client: it was left exactly as it was, so someone who saw
    /// it cannot spend it or set off the revocation of the rightful client's grant.
    OtherClient,
}

/// A grant a revocation ended: a family, or the one a code not yet redeemed would start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedGrant {
    pub family_id: String,
    pub client_id: String,
    pub subject: String,
    /// Whether it gave access until then (`RefreshFamily::is_live`; false for a code's grant).
    pub was_live: bool,
}

impl EndedGrant {
    pub(crate) fn of_family(family: &RefreshFamily, now: UnixTime) -> Self {
        EndedGrant {
            family_id: family.id.clone(),
            client_id: family.client_id.clone(),
            subject: family.identity.subject.clone(),
            was_live: family.is_live(now),
        }
    }

    pub(crate) fn of_code(record: &AuthorizationCodeRecord) -> Self {
        EndedGrant {
            family_id: record.family_id.clone(),
            client_id: record.client_id.clone(),
            subject: record.identity.subject.clone(),
            was_live: false,
        }
    }
}

/// How precisely a registered client's last use is kept: enough for deleting clients unused for
/// days (`oauth.dcr.unused_client_ttl`), without a write per token request.
pub(crate) const LAST_USE_PRECISION: std::time::Duration = std::time::Duration::from_secs(60);

/// Whose grants an administrator looks at or revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantOwner<'a> {
    /// A user, by the `sub` of their tokens.
    Subject(&'a str),
    /// A client, configured or registered.
    Client(&'a str),
    /// A session at the identity provider, as a back-channel logout names it: by the provider's
    /// `sub`, its `sid`, or both (at least one). With both, the user's grants recorded without a
    /// `sid` go too.
    ProviderSession {
        /// The configured provider's name: two providers' `sub` and `sid` values are unrelated.
        provider: &'a str,
        subject: Option<&'a str>,
        session_id: Option<&'a str>,
    },
}

impl GrantOwner<'_> {
    pub(crate) fn owns(
        &self,
        client_id: &str,
        subject_of_grant: &str,
        session: Option<SessionRef<'_>>,
    ) -> bool {
        match self {
            GrantOwner::Subject(subject) => subject_of_grant == *subject,
            GrantOwner::Client(client) => client_id == *client,
            GrantOwner::ProviderSession {
                provider,
                subject,
                session_id,
            } => session.is_some_and(|session| {
                session.provider == *provider && session_matches(session, *subject, *session_id)
            }),
        }
    }

    /// Whose remembered consents go with the grants: a user's or a client's; a session's
    /// ending is no withdrawal of the user's approvals.
    pub(crate) fn owns_consent(&self, subject: &str, client_id: &str) -> bool {
        match self {
            GrantOwner::Subject(owner) => subject == *owner,
            GrantOwner::Client(owner) => client_id == *owner,
            GrantOwner::ProviderSession { .. } => false,
        }
    }
}

/// Whether a logout naming `subject` and/or `session_id` ends `session`: the session itself, and,
/// of the user's, grants whose ID token named no session (the provider's logout tokens may carry
/// a `sid` its ID tokens did not).
fn session_matches(
    session: SessionRef<'_>,
    subject: Option<&str>,
    session_id: Option<&str>,
) -> bool {
    match (subject, session_id) {
        (Some(subject), Some(id)) => {
            session.subject == subject && session.session_id.is_none_or(|own| own == id)
        }
        (Some(subject), None) => session.subject == subject,
        (None, Some(id)) => session.session_id == Some(id),
        (None, None) => false,
    }
}

/// A grant's session at its provider, borrowed from wherever the grant is kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionRef<'a> {
    pub(crate) provider: &'a str,
    pub(crate) subject: &'a str,
    pub(crate) session_id: Option<&'a str>,
}

impl<'a> SessionRef<'a> {
    pub(crate) fn of(session: &'a UpstreamSession) -> Self {
        SessionRef {
            provider: &session.provider,
            subject: &session.subject,
            session_id: session.session_id.as_deref(),
        }
    }
}

/// Checks a token request against the code it presents and builds the grant it turns into;
/// `None` when the request fails a check (the code is used up all the same).
pub(crate) type IssueGrant<'a> =
    dyn FnMut(&AuthorizationCodeRecord) -> Option<RefreshFamily> + Send + 'a;

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    async fn put_pending(
        &self,
        state: TokenHash,
        pending: PendingAuthorization,
    ) -> Result<(), StorageError>;
    /// Removes and returns the pending authorization if `binding` is the one it was stored
    /// with; with another binding it is left in place, so a stranger who learnt the state
    /// cannot cancel the user's sign-in.
    async fn take_pending(
        &self,
        state: &TokenHash,
        binding: Option<&TokenHash>,
        now: UnixTime,
    ) -> Result<PendingTake, StorageError>;
    /// As `take_pending`, but leaves the pending authorization in place (`Taken` then means
    /// found): the local login form checks the sign-in is alive before it checks a password.
    async fn peek_pending(
        &self,
        state: &TokenHash,
        binding: Option<&TokenHash>,
        now: UnixTime,
    ) -> Result<PendingTake, StorageError>;

    /// Live (unexpired) pending authorizations and consent requests together: the state that
    /// anyone can make the bridge hold.
    async fn count_pending(&self, now: UnixTime) -> Result<usize, StorageError>;

    async fn put_code(
        &self,
        code: TokenHash,
        record: AuthorizationCodeRecord,
    ) -> Result<(), StorageError>;
    /// Marks the code used and stores the family `issue` builds from it, in one atomic step: a
    /// concurrent redemption of the same code waits, then finds the code used and the family in
    /// place for it to revoke. A used code is kept until it expires so replays are seen. A code
    /// of another client than `client_id` is `OtherClient`, used or not, and nothing changes.
    async fn redeem_code(
        &self,
        code: &TokenHash,
        client_id: &str,
        now: UnixTime,
        issue: &mut IssueGrant<'_>,
    ) -> Result<CodeRedemption, StorageError>;

    /// Stores a new family; `false` when a family of that id was revoked before (a tombstone).
    async fn create_family(&self, family: RefreshFamily) -> Result<bool, StorageError>;
    /// Looks up the family of `presented` and applies the rotation rule to it atomically.
    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        request: &RefreshRequest<'_>,
        replacement: Replacement,
        now: UnixTime,
    ) -> Result<Option<(Presentation, RefreshFamily)>, StorageError>;
    /// Revokes the family's refresh tokens and every access token it issued (a family not
    /// created yet is created revoked); false when the family was revoked already.
    async fn revoke_family(&self, family_id: &str, now: UnixTime) -> Result<bool, StorageError>;
    async fn is_access_token_revoked(&self, jti: &str, now: UnixTime)
    -> Result<bool, StorageError>;
    /// Whether the grant (family) still stands: stored, and not revoked. What a token exchanged
    /// for one of its access tokens is checked against, so that revoking the grant reaches it.
    async fn grant_is_live(&self, family_id: &str) -> Result<bool, StorageError>;
    /// Remembers a revoked access token until it would have expired anyway.
    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: UnixTime,
    ) -> Result<(), StorageError>;
    /// Replaces the provider's tokens kept for the family, if its sealed refresh token still is
    /// `previous`: the refresh token with `refresh`, and the access token with `access` when
    /// given. `false` when another refresh replaced them first.
    async fn replace_upstream_tokens(
        &self,
        family_id: &str,
        previous: &SealedSecret,
        refresh: SealedSecret,
        access: Option<SealedSecret>,
    ) -> Result<bool, StorageError>;
    /// The family (grant) of that id, revoked or not.
    async fn refresh_family(&self, family_id: &str) -> Result<Option<RefreshFamily>, StorageError>;
    /// The family a refresh token belongs to, whether it is the current token or a retired one;
    /// nothing changes (revocation and introspection decide from the family's state).
    async fn refresh_family_of(
        &self,
        token: &TokenHash,
    ) -> Result<Option<RefreshFamily>, StorageError>;

    async fn put_consent_request(
        &self,
        token: TokenHash,
        request: ConsentRequest,
    ) -> Result<(), StorageError>;
    /// Reads a consent request without using it up (to render the page).
    async fn get_consent_request(
        &self,
        token: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<ConsentRequest>, StorageError>;
    /// Removes and returns a consent request: each page's decision counts once.
    async fn take_consent_request(
        &self,
        token: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<ConsentRequest>, StorageError>;
    /// Records an approval: added to a live earlier one of the same subject, client, redirect URI
    /// and resource, or replacing an expired one (whose scopes count no more).
    async fn put_consent_grant(
        &self,
        grant: ConsentGrant,
        now: UnixTime,
    ) -> Result<(), StorageError>;
    /// Gauges of the backend read at each scrape of the metrics (PostgreSQL's pool).
    fn gauges(&self) -> Option<std::sync::Arc<dyn crate::metrics::Gauges>> {
        None
    }

    /// What the subject approved for this client, redirect URI and resource (the request's),
    /// when a live approval exists.
    async fn consented_scopes(
        &self,
        subject: &str,
        request: &AuthorizationRequest,
        now: UnixTime,
    ) -> Result<Option<Vec<String>>, StorageError>;
    /// Whether the subject approved this client, for this redirect URI, for at least `scope`.
    async fn has_consent(
        &self,
        subject: &str,
        request: &AuthorizationRequest,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        let consented = self.consented_scopes(subject, request, now).await?;
        Ok(consented.is_some_and(|scopes| request.scope.iter().all(|s| scopes.contains(s))))
    }

    /// Stores a registered client unless `max_clients` are registered already (then `false`).
    async fn register_client(
        &self,
        client: RegisteredClient,
        max_clients: usize,
    ) -> Result<bool, StorageError>;
    async fn get_client(&self, client_id: &str) -> Result<Option<RegisteredClient>, StorageError>;
    /// Records that a registered client was used at `now`, unless its recorded use is later or
    /// less than `LAST_USE_PRECISION` earlier: every token request of a registered client
    /// touches it, and on PostgreSQL each write would be a commit of its own.
    async fn touch_client(&self, client_id: &str, now: UnixTime) -> Result<(), StorageError>;
    /// Deletes a registered client and revokes every grant it holds (its refresh families and
    /// their access tokens, and the grants its codes not yet redeemed would start); the grants
    /// this ended, `None` when there was no such client. The registration goes first, so that
    /// the client starts no grant while the others are revoked.
    async fn delete_client(
        &self,
        client_id: &str,
        now: UnixTime,
    ) -> Result<Option<Vec<EndedGrant>>, StorageError>;
    /// Deletes registered clients last used before `used_before`, and those never used that were
    /// registered before `never_used_before`; returns how many.
    async fn delete_unused_clients(
        &self,
        used_before: UnixTime,
        never_used_before: UnixTime,
    ) -> Result<usize, StorageError>;
    async fn count_clients(&self) -> Result<usize, StorageError>;
    /// Every registered client, oldest first.
    async fn list_clients(&self) -> Result<Vec<RegisteredClient>, StorageError>;

    /// The grants of `owner` that still give access (`RefreshFamily::is_live`), oldest first.
    async fn live_grants(
        &self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<RefreshFamily>, StorageError>;
    /// Revokes every grant of `owner` with its access tokens, the grants its codes not yet
    /// redeemed would start (they start revoked), and its remembered consents; the grants this
    /// ended (not those revoked before).
    async fn revoke_grants(
        &self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<EndedGrant>, StorageError>;

    /// Deletes what has expired; returns how many entries went.
    async fn sweep_expired(&self, now: UnixTime) -> Result<usize, StorageError>;

    /// The secret stored under `name` (the cookie key, a generated signing key), storing
    /// `fresh` first when there is none: every instance sharing the storage gets the same one.
    async fn shared_secret(
        &self,
        name: &str,
        fresh: SecretBytes,
    ) -> Result<SecretBytes, StorageError>;

    /// Records `key` as used until `expires_at`: true the first time, false while it is
    /// remembered at `now` (a replayed client assertion's `jti`). Kept in storage so that a
    /// replay to another instance is seen too; the sweep forgets a key once it has expired.
    async fn use_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError>;

    /// The secret stored under `name`, if any: for secrets too costly to generate on the
    /// chance that none is stored yet (an RSA key).
    async fn existing_shared_secret(&self, name: &str)
    -> Result<Option<SecretBytes>, StorageError>;

    /// Names of the shared secrets that start with `prefix`.
    async fn shared_secret_names(&self, prefix: &str) -> Result<Vec<String>, StorageError>;
    async fn delete_shared_secret(&self, name: &str) -> Result<(), StorageError>;

    /// Whether the storage answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StorageError>;
}
