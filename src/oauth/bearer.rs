//! Access tokens presented to the bridge itself (userinfo, introspection, revocation, the
//! proxy): checked against every key we publish, and refused once revoked (RFC 6750 §3.1).

use super::{Bridge, Cause};
use crate::clock::UnixTime;
use crate::storage::StorageError;
use crate::tokens::AccessTokenClaims;
use crate::tokens::jwt::JwtError;

/// Why a presented access token does not count; safe to tell the presenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inactive(pub &'static str);

/// What a request with a bearer token is answered when the token is missing or not good enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BearerError {
    /// No token at all: a bare challenge, no error code (RFC 6750 §3.1).
    Missing,
    InvalidToken(&'static str),
    /// The request itself is malformed (an unreadable Authorization header): 400.
    InvalidRequest(&'static str),
    /// The token is good but lacks these scopes (space-separated, as in `scope=`).
    InsufficientScope(String),
    Unavailable(Cause),
}

impl From<StorageError> for BearerError {
    fn from(error: StorageError) -> Self {
        BearerError::Unavailable(error.into())
    }
}

/// The claims of a live access token we issued, for any audience.
pub(crate) async fn check_access_token(
    bridge: &Bridge,
    token: &str,
    now: UnixTime,
) -> Result<Result<AccessTokenClaims, Inactive>, StorageError> {
    let claims = match bridge
        .keys
        .verify_own_access_token(token, &bridge.settings.issuer, now)
    {
        Ok(claims) => claims,
        Err(JwtError::Expired) => return Ok(Err(Inactive("the access token has expired"))),
        Err(JwtError::UnknownKey) => {
            return Ok(Err(Inactive(
                "the access token is signed by an unknown key",
            )));
        }
        Err(_) => return Ok(Err(Inactive("the access token is malformed or invalid"))),
    };
    if bridge
        .storage
        .is_access_token_revoked(&claims.jti, now)
        .await?
    {
        return Ok(Err(Inactive("the access token has been revoked")));
    }
    // An exchanged token (RFC 8693 `act`) stands only while the grant it was exchanged from
    // does: its family does not track it, so that exchanges never crowd out the user's own.
    // Nor past the rule of the client that exchanged it: removing a rule stops its tokens.
    if let Some(actor) = &claims.act {
        let allowed = bridge
            .token_exchange
            .as_ref()
            .is_some_and(|rules| rules.has_rule(&actor.sub));
        let live = match &claims.sid {
            Some(family_id) if allowed => bridge.storage.grant_is_live(family_id).await?,
            _ => false,
        };
        if !live {
            return Ok(Err(Inactive("the access token has been revoked")));
        }
    }
    Ok(Ok(claims))
}

/// As `check_access_token`, answered the RFC 6750 way.
pub(crate) async fn require_access_token(
    bridge: &Bridge,
    token: Option<&str>,
    now: UnixTime,
) -> Result<AccessTokenClaims, BearerError> {
    let token = token.ok_or(BearerError::Missing)?;
    check_access_token(bridge, token, now)
        .await?
        .map_err(|Inactive(reason)| BearerError::InvalidToken(reason))
}
