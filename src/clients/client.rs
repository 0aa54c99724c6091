//! One client as the bridge knows it, however it came to be known: configured, registered, or
//! described by a metadata document.

use crate::oauth::grant_type::GrantType;
use crate::oauth::redirect_uri;
use crate::oauth::registration::RegistrationRequest;
use crate::storage::RegisteredClient;
use crate::tokens::keys::SigningAlgorithm;

use super::client_keys::ClientKeys;
use crate::oauth::client_assertion::PRIVATE_KEY_JWT;

#[derive(Debug)]
pub struct Client {
    pub id: String,
    pub(crate) name: Option<String>,
    pub(crate) redirect_uris: Vec<String>,
    pub(super) secret_hash: Option<String>,
    /// The operator's limit (`oauth.clients[].scopes`); None: every scope the server supports.
    /// A client that describes itself (DCR, metadata document) sets no limit with its `scope`:
    /// RFC 7591 §2 makes it the scopes the client may use, it could register again with more,
    /// and MCP's step-up asks for scopes beyond it. The user's consent is what limits such a client.
    pub(crate) scopes: Option<Vec<String>>,
    /// What a self-described client registered as its `scope`: what it gets when an
    /// authorization request names none (RFC 6749 §3.3's predefined default), not a limit.
    pub(crate) default_scope: Option<Vec<String>>,
    pub(crate) grant_types: Vec<GrantType>,
    pub(crate) skip_consent: bool,
    /// Registered through DCR: kept in storage, expires when unused.
    pub(crate) registered: bool,
    /// `id_token_signed_response_alg`; None: RS256, OIDC's default.
    pub(crate) id_token_algorithm: Option<SigningAlgorithm>,
    /// The keys of a `private_key_jwt` client, which authenticates with signed assertions.
    pub(crate) keys: Option<ClientKeys>,
}

impl Client {
    /// A client described by its metadata document (public; always asks for consent).
    pub(crate) fn from_metadata_document(client_id: &str, valid: RegistrationRequest) -> Self {
        Client {
            id: client_id.to_owned(),
            name: valid.client_name,
            redirect_uris: valid.redirect_uris.unwrap_or_default(),
            secret_hash: None,
            scopes: None,
            default_scope: valid.scope.as_deref().map(|s| {
                s.split(' ')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            }),
            grant_types: user_grants(&valid.grant_types.unwrap_or_default()),
            skip_consent: false,
            registered: false,
            id_token_algorithm: valid
                .id_token_signed_response_alg
                .as_deref()
                .and_then(SigningAlgorithm::parse),
            keys: keys_of(
                valid.token_endpoint_auth_method.as_deref(),
                valid.jwks.as_ref(),
                valid.jwks_uri.as_deref(),
            ),
        }
    }

    /// A client registered through DCR; such clients always need the user's consent.
    pub(crate) fn from_registration(record: RegisteredClient) -> Self {
        Client {
            id: record.client_id,
            name: record.client_name,
            redirect_uris: record.redirect_uris,
            secret_hash: record.secret_hash,
            scopes: None,
            default_scope: record.scope,
            grant_types: user_grants(&record.grant_types),
            skip_consent: false,
            registered: true,
            id_token_algorithm: record
                .id_token_signed_response_alg
                .as_deref()
                .and_then(SigningAlgorithm::parse),
            keys: keys_of(
                Some(&record.token_endpoint_auth_method),
                record.jwks.as_ref(),
                record.jwks_uri.as_deref(),
            ),
        }
    }

    pub(crate) fn is_public(&self) -> bool {
        self.secret_hash.is_none() && self.keys.is_none()
    }

    pub(crate) fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// The registered URI the requested one matches (exact, or loopback with another port).
    pub(crate) fn matching_redirect_uri(&self, requested: &str) -> bool {
        self.redirect_uris
            .iter()
            .any(|registered| redirect_uri::matches(registered, requested))
    }

    /// The redirect URI to use when the request names none: only when exactly one is registered
    /// and it needs no port chosen at run time (RFC 6749 §3.1.2.3).
    pub(crate) fn default_redirect_uri(&self) -> Option<&str> {
        match self.redirect_uris.as_slice() {
            [only] if !only.starts_with("http://") => Some(only),
            _ => None,
        }
    }

    /// How this client's ID tokens are signed.
    pub(crate) fn id_token_algorithm(&self) -> SigningAlgorithm {
        self.id_token_algorithm.unwrap_or(SigningAlgorithm::RS256)
    }

    pub(crate) fn allowed_scopes(&self, supported: &[String]) -> Vec<String> {
        self.scopes.clone().unwrap_or_else(|| supported.to_vec())
    }

    /// The scope of an authorization request that names none: the registered one (what still
    /// is allowed of it), else everything allowed; `None` when the registered one has nothing left.
    pub(crate) fn default_scope(&self, allowed: &[String]) -> Option<Vec<String>> {
        match &self.default_scope {
            Some(registered) => {
                let still: Vec<String> = registered
                    .iter()
                    .filter(|scope| allowed.contains(scope))
                    .cloned()
                    .collect();
                (!still.is_empty()).then_some(still)
            }
            None => Some(allowed.to_vec()),
        }
    }
}

/// The grants a client that introduced itself may use: never `client_credentials`, which acts
/// without a user and is only for clients the operator configured.
fn user_grants(names: &[String]) -> Vec<GrantType> {
    names
        .iter()
        .filter_map(|name| GrantType::parse(name))
        .filter(|grant| !grant.is_for_configured_clients_only())
        .collect()
}

/// The keys of a client whose metadata says `private_key_jwt`; metadata was validated when it
/// arrived, so keys that do not parse now make a client that cannot authenticate, not a public
/// one.
fn keys_of(
    method: Option<&str>,
    jwks: Option<&serde_json::Value>,
    jwks_uri: Option<&str>,
) -> Option<ClientKeys> {
    if method != Some(PRIVATE_KEY_JWT) {
        return None;
    }
    Some(
        ClientKeys::from_metadata(jwks, jwks_uri)
            .ok()
            .flatten()
            .unwrap_or_else(|| ClientKeys::Inline(std::sync::Arc::new(Default::default()))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(scope: Option<&str>) -> Client {
        Client::from_registration(RegisteredClient {
            scope: scope.map(|s| s.split(' ').map(str::to_owned).collect()),
            ..RegisteredClient::example("dcr_x")
        })
    }

    #[test]
    fn a_registered_scope_is_the_default_never_the_limit() {
        let supported = ["openid", "email", "mcp:tools"].map(String::from);
        let client = registered(Some("openid retired"));
        assert_eq!(client.allowed_scopes(&supported), supported);
        assert_eq!(
            client.default_scope(&supported),
            Some(vec!["openid".to_owned()])
        );
        assert_eq!(registered(Some("retired")).default_scope(&supported), None);
        assert_eq!(
            registered(None).default_scope(&supported),
            Some(supported.to_vec())
        );
    }
}
