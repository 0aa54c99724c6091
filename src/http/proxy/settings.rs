//! `proxy`: the MCP server the bridge guards, and what it is told about the caller.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::duration::whole_seconds;
use crate::oauth::tool_scopes::ToolScopeRule;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where the MCP server listens, e.g. `http://mcp-server:3000`; the request path below
    /// `path` is appended.
    pub upstream_url: String,
    /// Below `server.public_url`; `<public_url><path>` is the resource clients ask tokens for.
    #[serde(default = "default_proxy_path")]
    pub(crate) path: String,
    /// Scopes every request needs; missing ones are answered `403 insufficient_scope`.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Scopes per JSON-RPC method and tool, prompt or resource (`oauth::tool_scopes`); with
    /// any, the proxy reads each request's body to decide, up to `max_message_bytes`.
    #[serde(default)]
    pub tool_scopes: Vec<ToolScopeRule>,
    /// The largest request body the proxy reads to apply `tool_scopes` (larger: `413`).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How long the MCP server may take to start answering (then `504`); streams may last longer.
    #[serde(
        default = "default_proxy_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub timeout: Duration,
    #[serde(default)]
    pub(crate) identity_headers: IdentityHeadersConfig,
    /// Also pass the identity as a short-lived JWT signed with the bridge's key.
    pub identity_jwt: Option<IdentityJwtConfig>,
    /// Forward client headers whose names contain `_` (dropped by default, as nginx does: CGI
    /// servers read `_` and `-` alike). Spellings of the proxy's own headers are dropped anyway.
    #[serde(default)]
    pub allow_underscore_headers: bool,
    /// Pass the caller's access token on to the MCP server (its audience is that server): for a
    /// server that exchanges it (RFC 8693) to call other APIs as the user. Off: MCP servers
    /// behind the proxy need no token, and one they never hold cannot leak.
    #[serde(default)]
    pub forward_access_token: bool,
    /// Added to every proxied answer: the MCP server's pages share the bridge's origin.
    /// An empty string adds none.
    #[serde(default = "default_proxy_csp")]
    pub content_security_policy: String,
}

fn default_max_message_bytes() -> usize {
    1 << 20
}

fn default_proxy_csp() -> String {
    "sandbox".to_owned()
}

/// Headers that tell the MCP server who is calling; whatever the client sent in them is removed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentityHeadersConfig {
    #[serde(default = "default_user_header")]
    pub(crate) user: String,
    #[serde(default = "default_email_header")]
    pub(crate) email: String,
    #[serde(default = "default_groups_header")]
    pub(crate) groups: String,
}

impl Default for IdentityHeadersConfig {
    fn default() -> Self {
        IdentityHeadersConfig {
            user: default_user_header(),
            email: default_email_header(),
            groups: default_groups_header(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityJwtConfig {
    #[serde(default = "default_identity_jwt_header")]
    pub header: String,
    #[serde(
        default = "default_identity_jwt_ttl",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub ttl: Duration,
}

fn default_proxy_path() -> String {
    "/mcp".to_owned()
}
fn default_proxy_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_user_header() -> String {
    "X-Forwarded-User".to_owned()
}
fn default_email_header() -> String {
    "X-Forwarded-Email".to_owned()
}
fn default_groups_header() -> String {
    "X-Forwarded-Groups".to_owned()
}
fn default_identity_jwt_header() -> String {
    "X-Forwarded-Identity".to_owned()
}
fn default_identity_jwt_ttl() -> Duration {
    Duration::from_secs(60)
}

impl ProxyConfig {
    /// Guarding the MCP server at `upstream_url`, everything else as a file that names only it.
    pub fn forwarding_to(upstream_url: impl Into<String>) -> ProxyConfig {
        ProxyConfig {
            upstream_url: upstream_url.into(),
            path: default_proxy_path(),
            required_scopes: Vec::new(),
            tool_scopes: Vec::new(),
            max_message_bytes: default_max_message_bytes(),
            timeout: default_proxy_timeout(),
            identity_headers: IdentityHeadersConfig::default(),
            identity_jwt: None,
            allow_underscore_headers: false,
            forward_access_token: false,
            content_security_policy: default_proxy_csp(),
        }
    }

    /// Every problem of `proxy`, with its field path.
    pub(crate) fn validate(&self, scopes_supported: &[String], problems: &mut Vec<String>) {
        match Url::parse(&self.upstream_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                // It is logged and named in the identity JWT: no credentials in it.
                if !url.username().is_empty() || url.password().is_some() {
                    problems
                        .push("proxy.upstream_url: must not carry a user or password".to_owned());
                }
                if url.query().is_some() || url.fragment().is_some() {
                    problems
                        .push("proxy.upstream_url: must not have a query or fragment".to_owned());
                }
            }
            _ => problems.push(format!(
                "proxy.upstream_url: {:?} is not an http(s) URL",
                self.upstream_url
            )),
        }
        let reserved = ["/oauth", "/.well-known", "/healthz", "/readyz", "/metrics"];
        if !self.path.starts_with('/')
            || self.path.len() < 2
            || self.path.ends_with('/')
            // Percent-escapes and dot segments would be resolved differently by clients,
            // by our router and by the MCP server.
            || self.path.contains(['?', '#', '{', '}', '*', '%', ' ', '\\'])
            || self.path.split('/').any(|segment| segment == "." || segment == "..")
            || self.path.contains("//")
            || reserved
                .iter()
                .any(|r| self.path == *r || self.path.starts_with(&format!("{r}/")))
        {
            problems.push(format!(
                "proxy.path: {:?} must be a path like /mcp: starting with /, not ending with /, and not under the bridge's own /oauth, /.well-known, /healthz, /readyz or /metrics",
                self.path
            ));
        }
        for (i, scope) in self.required_scopes.iter().enumerate() {
            if scope == crate::oauth::protected_resource::OFFLINE_ACCESS {
                problems.push(format!(
                    "proxy.required_scopes[{i}]: {scope:?} asks for refresh tokens, which never reach the MCP server; a resource cannot require it"
                ));
            } else if !scopes_supported.contains(scope) {
                problems.push(format!(
                    "proxy.required_scopes[{i}]: {scope:?} is not in oauth.scopes_supported"
                ));
            }
        }
        crate::oauth::tool_scopes::validate(&self.tool_scopes, scopes_supported, problems);
        // Each request with a body holds this much until it is judged.
        if self.max_message_bytes < 1024 || self.max_message_bytes > 16 << 20 {
            problems.push(format!(
                "proxy.max_message_bytes: {} must be between 1024 and 16777216 (16 MiB)",
                self.max_message_bytes
            ));
        }
        problems.extend(whole_seconds("proxy.timeout", self.timeout, 1));
        let mut headers = vec![
            ("proxy.identity_headers.user", &self.identity_headers.user),
            ("proxy.identity_headers.email", &self.identity_headers.email),
            (
                "proxy.identity_headers.groups",
                &self.identity_headers.groups,
            ),
        ];
        if let Some(jwt) = &self.identity_jwt {
            headers.push(("proxy.identity_jwt.header", &jwt.header));
            problems.extend(whole_seconds("proxy.identity_jwt.ttl", jwt.ttl, 1));
        }
        let reserved = [
            "authorization",
            "host",
            "cookie",
            "content-length",
            "content-type",
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "expect",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-request-id",
        ];
        if axum::http::HeaderValue::from_str(&self.content_security_policy).is_err() {
            problems.push(
                "proxy.content_security_policy: must be a valid header value (one line)".to_owned(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for (field, name) in headers {
            let lower = name.to_ascii_lowercase();
            // An underscore would make the header one that CGI servers merge with a dash spelling.
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reserved.contains(&lower.as_str())
                || name.contains('_')
            {
                problems.push(format!("{field}: {name:?} is not a usable header name"));
            } else if !seen.insert(lower) {
                problems.push(format!(
                    "{field}: {name:?} already carries another part of the identity"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(required_scopes: &[&str]) -> Vec<String> {
        let mut proxy = ProxyConfig::forwarding_to("http://127.0.0.1:8000");
        proxy.required_scopes = required_scopes.iter().map(|s| s.to_string()).collect();
        let supported = ["openid", "email", "offline_access", "mcp:tools"].map(String::from);
        let mut problems = Vec::new();
        proxy.validate(&supported, &mut problems);
        problems
    }

    #[test]
    fn tool_scopes_come_from_yaml_and_the_body_bound_is_bounded() {
        let proxy: ProxyConfig = serde_yaml::from_str(
            "upstream_url: http://127.0.0.1:8000\n\
             tool_scopes:\n  - { method: tools/call, name: delete_repo, scopes: [mcp:tools] }\n\
             max_message_bytes: 100000000\n",
        )
        .unwrap();
        assert_eq!(proxy.tool_scopes[0].name.as_deref(), Some("delete_repo"));
        let mut problems = Vec::new();
        proxy.validate(&["mcp:tools".to_owned()], &mut problems);
        assert_eq!(
            problems,
            ["proxy.max_message_bytes: 100000000 must be between 1024 and 16777216 (16 MiB)"]
        );
        let unknown = serde_yaml::from_str::<ProxyConfig>(
            "upstream_url: http://x\ntool_scopes: [{ method: tools/call, scope: [a] }]\n",
        );
        assert!(
            unknown.is_err(),
            "a misspelt field is an error, not a rule without scopes"
        );
    }

    #[test]
    fn a_resource_may_require_known_scopes_but_never_offline_access() {
        assert_eq!(problems_of(&["email", "mcp:tools"]), Vec::<String>::new());
        assert_eq!(
            problems_of(&["mcp:tools", "offline_access"]),
            [
                "proxy.required_scopes[1]: \"offline_access\" asks for refresh tokens, which never reach the MCP server; a resource cannot require it"
            ]
        );
        assert_eq!(
            problems_of(&["admin"]),
            ["proxy.required_scopes[0]: \"admin\" is not in oauth.scopes_supported"]
        );
    }
}
