//! The grant types of RFC 6749 the token endpoint serves.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantType {
    AuthorizationCode,
    RefreshToken,
    /// RFC 6749 §4.4: a confidential client acting for itself, no user involved.
    ClientCredentials,
    /// RFC 7523 §2.1 with an Identity Assertion JWT Authorization Grant (ID-JAG) from a
    /// trusted enterprise identity provider: MCP's Enterprise-Managed Authorization.
    JwtBearer,
    /// RFC 8693: a configured client trades a user's access token for one to another resource.
    TokenExchange,
}

/// `grant_type` of a JWT authorization grant (RFC 7523 §2.1).
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// `grant_type` of a token exchange (RFC 8693 §2.1).
pub(crate) const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

impl GrantType {
    /// Grants a client may only use when the operator configured it: they need no user at the
    /// authorization endpoint, so a client that introduced itself must not get them.
    pub(crate) fn is_for_configured_clients_only(self) -> bool {
        matches!(
            self,
            GrantType::ClientCredentials | GrantType::JwtBearer | GrantType::TokenExchange
        )
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "authorization_code" => Some(GrantType::AuthorizationCode),
            "refresh_token" => Some(GrantType::RefreshToken),
            "client_credentials" => Some(GrantType::ClientCredentials),
            JWT_BEARER => Some(GrantType::JwtBearer),
            TOKEN_EXCHANGE => Some(GrantType::TokenExchange),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::JwtBearer => JWT_BEARER,
            GrantType::TokenExchange => TOKEN_EXCHANGE,
        }
    }
}
