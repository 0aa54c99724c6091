//! Protected resources (RFC 9728): the MCP server behind the proxy, and resources served
//! elsewhere that trust our tokens. What a request to one needs: a live access token of ours,
//! issued for exactly this resource (RFC 8707), with the scopes the resource requires.

use serde_json::{Value, json};

use super::Bridge;
use super::Settings;
use super::bearer::{BearerError, Inactive, check_access_token};
use crate::clock::UnixTime;
use crate::tokens::AccessTokenClaims;

pub(crate) const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

#[derive(Debug, Clone)]
pub(crate) struct ProtectedResource {
    /// The resource identifier: the `aud` its tokens carry.
    pub(crate) url: String,
    pub(crate) required_scopes: Vec<String>,
    /// Scopes some of its calls need beyond those (the proxy's `tool_scopes`).
    pub(crate) call_scopes: Vec<String>,
}

/// RFC 9728 §3.1: the metadata lives at the resource's host, the well-known path inserted before
/// the resource's own path; the bridge serves that path for every resource it knows.
pub(crate) fn metadata_path(resource: &str) -> Option<String> {
    let url = url::Url::parse(resource).ok()?;
    Some(format!(
        "{METADATA_PATH}{}",
        url.path().trim_end_matches('/')
    ))
}

/// Asks the authorization server for a refresh token: a resource has no use for it, so MCP
/// 2026-07-28 keeps it out of resource metadata (a client asks for it by the AS's metadata).
pub(crate) const OFFLINE_ACCESS: &str = "offline_access";

/// RFC 9728 §2. The scopes are those the resource requires when it names any (what a client
/// should ask for first), then those some of its calls need, else every scope the authorization
/// server knows; never `offline_access`.
pub(crate) fn metadata(settings: &Settings, resource: &ProtectedResource) -> Value {
    let mut scopes: Vec<&String> = Vec::new();
    let candidates = if resource.required_scopes.is_empty() {
        settings.scopes_supported.iter().chain(&[])
    } else {
        resource.required_scopes.iter().chain(&resource.call_scopes)
    };
    for scope in candidates {
        if scope != OFFLINE_ACCESS && !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    json!({
        "resource": resource.url,
        "authorization_servers": [settings.issuer],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
    })
}

/// The claims of the token, if it may be used for `resource`.
pub(crate) async fn authorize_request(
    bridge: &Bridge,
    resource: &ProtectedResource,
    token: Option<&str>,
    now: UnixTime,
) -> Result<AccessTokenClaims, BearerError> {
    let claims = authenticate_for(bridge, resource, token, now).await?;
    require_scopes(&claims, &resource.required_scopes)?;
    Ok(claims)
}

/// The claims of a live access token issued for `resource`, whatever its scopes.
pub(crate) async fn authenticate_for(
    bridge: &Bridge,
    resource: &ProtectedResource,
    token: Option<&str>,
    now: UnixTime,
) -> Result<AccessTokenClaims, BearerError> {
    let token = token.ok_or(BearerError::Missing)?;
    let claims = check_access_token(bridge, token, now)
        .await?
        .map_err(|Inactive(reason)| BearerError::InvalidToken(reason))?;
    // Never passed on to another resource: that would make us a confused deputy.
    if claims.aud != resource.url {
        return Err(BearerError::InvalidToken(
            "the access token was issued for another resource",
        ));
    }
    Ok(claims)
}

/// Every scope in `needed` is granted, or the challenge names them all (RFC 6750 §3.1: the
/// scopes this request needs, not only the missing ones).
pub(crate) fn require_scopes(
    claims: &AccessTokenClaims,
    needed: &[String],
) -> Result<(), BearerError> {
    let granted: Vec<&str> = claims.scope.split(' ').collect();
    if needed
        .iter()
        .any(|scope| !granted.contains(&scope.as_str()))
    {
        return Err(BearerError::InsufficientScope(needed.join(" ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::test_support::settings;

    #[test]
    fn the_metadata_never_lists_offline_access() {
        // Every scope the authorization server knows, offline_access among them.
        let open = ProtectedResource {
            url: "https://mcp.example.com/mcp".into(),
            required_scopes: vec![],
            call_scopes: vec![],
        };
        assert_eq!(
            metadata(&settings(), &open)["scopes_supported"],
            json!(["openid", "profile", "email"])
        );
        let guarded = ProtectedResource {
            required_scopes: vec!["email".into(), "offline_access".into()],
            ..open
        };
        assert_eq!(
            metadata(&settings(), &guarded)["scopes_supported"],
            json!(["email"])
        );
        // Scopes of guarded tools come after those every request needs, each once.
        let per_tool = ProtectedResource {
            call_scopes: vec!["profile".into(), "email".into()],
            ..guarded
        };
        assert_eq!(
            metadata(&settings(), &per_tool)["scopes_supported"],
            json!(["email", "profile"])
        );
    }

    #[test]
    fn metadata_is_found_below_the_well_known_path_of_the_resource() {
        assert_eq!(
            metadata_path("https://mcp.example.com/mcp").as_deref(),
            Some("/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            metadata_path("https://mcp.example.com/").as_deref(),
            Some("/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            metadata_path("https://example.com/tools/mcp/").as_deref(),
            Some("/.well-known/oauth-protected-resource/tools/mcp")
        );
    }
}
