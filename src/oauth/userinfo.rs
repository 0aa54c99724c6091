//! The UserInfo endpoint (OIDC Core §5.3): the claims of the access token's subject, as far
//! as the granted scopes release them (§5.4).

use serde_json::{Map, Value, json};

use super::Bridge;
use super::bearer::{BearerError, require_access_token};
use crate::clock::UnixTime;

pub(crate) async fn userinfo(
    bridge: &Bridge,
    token: Option<&str>,
    now: UnixTime,
) -> Result<Value, BearerError> {
    let claims = require_access_token(bridge, token, now).await?;
    let scopes: Vec<&str> = claims.scope.split(' ').collect();
    // A token without `openid` was not issued for OpenID Connect (client credentials, plain
    // OAuth clients): it has no user to describe.
    if !scopes.contains(&"openid") {
        return Err(BearerError::InsufficientScope("openid".to_owned()));
    }
    let mut body = Map::new();
    body.insert("sub".into(), json!(claims.sub));
    if scopes.contains(&"email")
        && let Some(email) = claims.email
    {
        body.insert("email".into(), json!(email));
    }
    if scopes.contains(&"profile")
        && let Some(name) = claims.name
    {
        body.insert("name".into(), json!(name));
    }
    if !claims.groups.is_empty() {
        body.insert("groups".into(), json!(claims.groups));
    }
    Ok(Value::Object(body))
}
