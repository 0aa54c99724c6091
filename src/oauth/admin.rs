//! Administration: who may act (`admin.tokens`, kept as SHA-256 hashes) and what they may do:
//! list and delete registered clients, list a user's or a client's grants, revoke them all. Each
//! action goes to the audit trail with the fingerprint of the token that did it.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::revoke::record_ended;
use super::{Bridge, OAuthError};
use crate::audit;
use crate::clock::UnixTime;
use crate::secret::SecretString;
use crate::storage::{GrantOwner, RegisteredClient};
use crate::tokens::TokenHash;
use crate::tokens::refresh::RefreshFamily;

/// A plain admin token must be at least this long: it is the only thing between the internet
/// and every user's grants, and it is compared by a fast hash.
const MIN_TOKEN_LENGTH: usize = 32;
const HASH_PREFIX: &str = "sha256:";

/// The longest subject or client id an administrator can ask about.
const MAX_OWNER_LENGTH: usize = 1024;

/// `admin`: the administration API, off unless `tokens` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer tokens of administrators: `sha256:<64 hex digits>` (`mcp-oauth-bridge admin
    /// hash-token`), or a plain value (typically `${ADMIN_TOKEN}`) hashed at load.
    #[serde(default)]
    pub tokens: Vec<SecretString>,
    /// A listener of its own for `/admin/` (e.g. `127.0.0.1:9091`), not on `server.address`.
    #[serde(default)]
    pub address: Option<std::net::SocketAddr>,
}

impl AdminConfig {
    /// Every problem of `admin`, with its field path.
    pub(crate) fn validate(&self, server_address: &str, problems: &mut Vec<String>) {
        for (index, token) in self.tokens.iter().enumerate() {
            if let Err(problem) = token_hash(token) {
                problems.push(format!("admin.tokens[{index}]: {problem}"));
            }
        }
        match self.address {
            Some(_) if self.tokens.is_empty() => problems.push(
                "admin.address: set while admin.tokens is empty; the admin API is off without tokens"
                    .to_owned(),
            ),
            Some(address) if address.to_string() == server_address => problems.push(format!(
                "admin.address: {address} is server.address; leave it out to serve /admin/ there"
            )),
            _ => {}
        }
    }
}

/// The hash a configured token stands for: given as `sha256:…`, or of the plain value.
fn token_hash(token: &SecretString) -> Result<TokenHash, String> {
    let text = token.expose();
    if let Some(hex) = text.strip_prefix(HASH_PREFIX) {
        return parse_hex(hex).map(TokenHash).ok_or_else(|| {
            "a hashed token is sha256: followed by 64 lowercase hex digits".to_owned()
        });
    }
    if text.chars().count() < MIN_TOKEN_LENGTH {
        return Err(format!(
            "a plain token must be at least {MIN_TOKEN_LENGTH} characters (or give its sha256: hash)"
        ));
    }
    Ok(TokenHash::of(text))
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `admin hash-token` prints for `token`: the form `admin.tokens` keeps.
pub fn hashed_token(token: &str) -> String {
    format!("{HASH_PREFIX}{}", hex(&TokenHash::of(token).0))
}

/// The administrators' token hashes.
#[derive(Debug, Clone, Default)]
pub(crate) struct AdminTokens(Vec<TokenHash>);

/// Who acted: the first eight hex digits of their token's hash, for the audit trail.
#[derive(Debug, Clone)]
pub(crate) struct Admin(String);

impl AdminTokens {
    pub(crate) fn configured(config: &AdminConfig) -> Result<AdminTokens, String> {
        config
            .tokens
            .iter()
            .map(token_hash)
            .collect::<Result<_, _>>()
            .map(AdminTokens)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The administrator `presented` is the token of, comparing with every hash in constant
    /// time.
    pub(crate) fn admin(&self, presented: &str) -> Option<Admin> {
        let presented = TokenHash::of(presented);
        let mut found = None;
        for hash in &self.0 {
            if bool::from(hash.0.ct_eq(&presented.0)) {
                found = Some(Admin(hex(&hash.0[..4])));
            }
        }
        found
    }
}

/// A registered client as the API lists it: what it registered, never its secret's hash.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct ClientView {
    client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_name: Option<String>,
    redirect_uris: Vec<String>,
    grant_types: Vec<String>,
    token_endpoint_auth_method: String,
    issued_at: i64,
    last_used_at: Option<i64>,
}

impl From<RegisteredClient> for ClientView {
    fn from(client: RegisteredClient) -> Self {
        ClientView {
            client_id: client.client_id,
            client_name: client.client_name,
            redirect_uris: client.redirect_uris,
            grant_types: client.grant_types,
            token_endpoint_auth_method: client.token_endpoint_auth_method,
            issued_at: client.issued_at.seconds(),
            last_used_at: client.last_used_at.map(UnixTime::seconds),
        }
    }
}

/// A grant as the API lists it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct GrantView {
    family_id: String,
    client_id: String,
    subject: String,
    scope: Vec<String>,
    audience: String,
    /// Unix seconds; absent for grants made before the bridge recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<i64>,
    last_used_at: Option<i64>,
    /// Whether its refresh token still works (else it lives as long as its access tokens).
    refreshable: bool,
    /// When it ends unless refreshed: its refresh token's expiry, else its last access token's.
    expires_at: i64,
}

impl GrantView {
    fn of(family: RefreshFamily, now: UnixTime) -> Self {
        let refresh_ends = family.current_expires_at.min(family.absolute_expires_at);
        // Live through its refresh token, or only through access tokens not expired yet.
        let refreshable = family.current.is_some() && now < refresh_ends;
        let expires_at = match refreshable {
            true => refresh_ends,
            false => family
                .access_tokens
                .iter()
                .map(|token| token.expires_at)
                .max()
                .unwrap_or(refresh_ends),
        };
        GrantView {
            refreshable,
            created_at: Some(family.created_at.seconds()).filter(|&at| at > 0),
            last_used_at: family.last_used_at.map(UnixTime::seconds),
            family_id: family.id,
            client_id: family.client_id,
            subject: family.identity.subject,
            scope: family.scope,
            audience: family.audience,
            expires_at: expires_at.seconds(),
        }
    }
}

/// Whose grants a request names: exactly one of a subject and a client id.
pub(crate) fn grant_owner<'a>(
    subject: Option<&'a str>,
    client_id: Option<&'a str>,
) -> Result<GrantOwner<'a>, OAuthError> {
    let (owner, value) = match (subject, client_id) {
        (Some(subject), None) => (GrantOwner::Subject(subject), subject),
        (None, Some(client_id)) => (GrantOwner::Client(client_id), client_id),
        _ => {
            return Err(OAuthError::invalid_request(
                "name exactly one of subject and client_id",
            ));
        }
    };
    if value.len() > MAX_OWNER_LENGTH || value.chars().any(char::is_control) {
        return Err(OAuthError::invalid_request(
            "subject and client_id are at most 1024 bytes, without control characters",
        ));
    }
    Ok(owner)
}

fn record(admin: &Admin, action: &str, owner: Option<GrantOwner<'_>>, count: Option<usize>) {
    let (subject, client_id) = match owner {
        Some(GrantOwner::Subject(subject)) => (Some(subject), None),
        Some(GrantOwner::Client(client_id)) => (None, Some(client_id)),
        Some(GrantOwner::ProviderSession { .. }) | None => (None, None),
    };
    audit::record(&audit::Event::AdminAction {
        admin: &admin.0,
        action,
        subject,
        client_id,
        count,
    });
}

pub(crate) async fn list_clients(
    bridge: &Bridge,
    admin: &Admin,
) -> Result<Vec<ClientView>, OAuthError> {
    let clients = bridge.storage.list_clients().await?;
    record(admin, "clients.list", None, Some(clients.len()));
    Ok(clients.into_iter().map(ClientView::from).collect())
}

/// Deletes a registered client and revokes its grants; `false` when no such client is
/// registered (a configured client is the configuration's to remove).
pub(crate) async fn delete_client(
    bridge: &Bridge,
    admin: &Admin,
    client_id: &str,
    now: UnixTime,
) -> Result<bool, OAuthError> {
    let owner = grant_owner(None, Some(client_id))?;
    let ended = bridge.storage.delete_client(client_id, now).await?;
    record(
        admin,
        "clients.delete",
        Some(owner),
        Some(usize::from(ended.is_some())),
    );
    let Some(ended) = ended else {
        return Ok(false);
    };
    audit::record(&audit::Event::ClientDeleted {
        client_id,
        reason: audit::DeletionReason::Admin,
    });
    record_ended(&ended, audit::RevocationReason::ClientDeleted, None);
    Ok(true)
}

pub(crate) async fn list_grants(
    bridge: &Bridge,
    admin: &Admin,
    owner: GrantOwner<'_>,
    now: UnixTime,
) -> Result<Vec<GrantView>, OAuthError> {
    let grants = bridge.storage.live_grants(owner, now).await?;
    record(admin, "grants.list", Some(owner), Some(grants.len()));
    Ok(grants
        .into_iter()
        .map(|grant| GrantView::of(grant, now))
        .collect())
}

/// Revokes every grant of `owner`; how many were live.
pub(crate) async fn revoke_grants(
    bridge: &Bridge,
    admin: &Admin,
    owner: GrantOwner<'_>,
    now: UnixTime,
) -> Result<usize, OAuthError> {
    let ended = bridge.storage.revoke_grants(owner, now).await?;
    let live = record_ended(&ended, audit::RevocationReason::Admin, None);
    record(admin, "grants.revoke", Some(owner), Some(live));
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tokens: &[&str]) -> AdminConfig {
        AdminConfig {
            tokens: tokens.iter().map(|t| SecretString::new(*t)).collect(),
            address: None,
        }
    }

    #[test]
    fn a_token_is_known_by_its_hash_whichever_way_it_was_configured() {
        let plain = "an-admin-token-of-at-least-32-characters";
        let other = "another-admin-token-of-32-characters-or-more";
        let tokens = AdminTokens::configured(&config(&[plain, &hashed_token(other)])).unwrap();
        let first = tokens.admin(plain).unwrap();
        let second = tokens.admin(other).unwrap();
        assert_ne!(first.0, second.0, "each is told apart in the audit trail");
        assert_eq!(first.0.len(), 8);
        assert!(hashed_token(plain).contains(&first.0));
        assert!(
            tokens.admin(&hashed_token(plain)).is_none(),
            "the hash is no token"
        );
        assert!(tokens.admin("").is_none());
        assert!(tokens.admin(&plain[..31]).is_none());
    }

    #[test]
    fn short_plain_tokens_and_malformed_hashes_are_refused_by_field() {
        let mut problems = Vec::new();
        config(&[
            "short",
            "sha256:abc",
            &format!("sha256:{}", "A".repeat(64)),
            &hashed_token("fine"),
        ])
        .validate("0.0.0.0:8080", &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("admin.tokens[0]: a plain token must be at least 32"));
        assert!(problems[1].starts_with("admin.tokens[1]: a hashed token"));
        assert!(problems[2].starts_with("admin.tokens[2]: a hashed token"));
        let mut problems = Vec::new();
        AdminConfig {
            address: Some("127.0.0.1:9091".parse().unwrap()),
            ..config(&[])
        }
        .validate("0.0.0.0:8080", &mut problems);
        assert!(problems[0].starts_with("admin.address: set while admin.tokens is empty"));
    }

    #[test]
    fn a_request_names_exactly_one_owner_within_bounds() {
        assert_eq!(
            grant_owner(Some("ada"), None).unwrap(),
            GrantOwner::Subject("ada")
        );
        assert_eq!(
            grant_owner(None, Some("cli")).unwrap(),
            GrantOwner::Client("cli")
        );
        assert!(grant_owner(None, None).is_err());
        assert!(grant_owner(Some("ada"), Some("cli")).is_err());
        assert!(grant_owner(Some("a\u{0}b"), None).is_err());
        assert!(grant_owner(Some(&"x".repeat(1025)), None).is_err());
    }
}
