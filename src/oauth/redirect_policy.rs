//! Which redirect URIs a client may register by itself (DCR, metadata documents): anchored
//! regular expressions from the configuration plus built-in profiles of known MCP clients.
//! At /oauth/authorize the redirect URI must still match a registered one exactly.

use regex::Regex;

/// A pattern or profile of `oauth.dcr` that cannot be used; the message names its entry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("allowed_redirect_patterns[{index}]: {reason}")]
    Pattern { index: usize, reason: regex::Error },
    #[error("allowed_redirect_profiles[{index}]: unknown profile {name:?} (known: {known})")]
    UnknownProfile {
        index: usize,
        name: String,
        known: String,
    },
    #[error("profile {name}: {reason}")]
    Profile { name: String, reason: regex::Error },
}

/// Built-in pattern lists, by the name the configuration includes them with.
pub(crate) const PROFILES: &[(&str, &[&str])] = &[
    (
        "claude",
        &[
            r"https://claude\.ai/api/mcp/auth_callback",
            r"https://claude\.com/api/mcp/auth_callback",
        ],
    ),
    (
        "cursor",
        &[r"cursor://anysphere\.cursor-mcp/oauth/(?:[A-Za-z0-9_~-][A-Za-z0-9._~-]*/)?callback"],
    ),
    (
        "vscode",
        &[
            r"http://127\.0\.0\.1:33418/?",
            r"http://localhost:33418/?",
            r"https://vscode\.dev/redirect",
        ],
    ),
    (
        "chatgpt",
        &[r"https://chatgpt\.com/connector_platform_oauth_redirect"],
    ),
    (
        "inspector",
        &[r"http://localhost:6274/oauth/callback(/debug)?"],
    ),
    (
        "loopback",
        &[
            r"http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?(\?[^#]*)?",
        ],
    ),
];

#[derive(Debug, Clone, Default)]
pub struct RedirectPolicy {
    patterns: Vec<Regex>,
}

impl RedirectPolicy {
    /// Compiles each pattern anchored at both ends (`^(?:…)$`): a pattern matches whole URIs only.
    pub fn compile(patterns: &[String], profiles: &[String]) -> Result<Self, PolicyError> {
        let mut compiled = Vec::new();
        for (i, pattern) in patterns.iter().enumerate() {
            // Compiled alone first: a pattern like `x)|(.*` must not close our anchoring group.
            let invalid = |reason| PolicyError::Pattern { index: i, reason };
            Regex::new(pattern).map_err(invalid)?;
            let regex = Regex::new(&format!("^(?:{pattern})$")).map_err(invalid)?;
            compiled.push(regex);
        }
        for (i, name) in profiles.iter().enumerate() {
            let (_, list) = PROFILES
                .iter()
                .find(|(known, _)| known == name)
                .ok_or_else(|| PolicyError::UnknownProfile {
                    index: i,
                    name: name.clone(),
                    known: PROFILES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            for pattern in *list {
                compiled.push(Regex::new(&format!("^(?:{pattern})$")).map_err(|reason| {
                    PolicyError::Profile {
                        name: name.clone(),
                        reason,
                    }
                })?);
            }
        }
        Ok(RedirectPolicy { patterns: compiled })
    }

    pub(crate) fn allows(&self, redirect_uri: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(redirect_uri))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(names: &[&str]) -> RedirectPolicy {
        RedirectPolicy::compile(
            &[],
            &names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn patterns_match_whole_uris_only() {
        let policy =
            RedirectPolicy::compile(&[r"https://app\.example\.com/cb".into()], &[]).unwrap();
        assert!(policy.allows("https://app.example.com/cb"));
        assert!(!policy.allows("https://app.example.com/cb/../../evil"));
        assert!(!policy.allows("https://evil.example.com/?https://app.example.com/cb"));
        assert!(!policy.allows("https://app.example.com/cbx"));
    }

    #[test]
    fn an_unanchored_alternation_is_still_anchored_as_a_whole() {
        let policy = RedirectPolicy::compile(
            &[r"https://a\.example\.com/cb|https://b\.example\.com/cb".into()],
            &[],
        )
        .unwrap();
        assert!(policy.allows("https://b.example.com/cb"));
        assert!(!policy.allows("https://b.example.com/cb.evil.com"));
    }

    #[test]
    fn known_client_profiles_cover_their_callbacks() {
        let all = profile(&[
            "claude",
            "cursor",
            "vscode",
            "chatgpt",
            "inspector",
            "loopback",
        ]);
        for uri in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.com/api/mcp/auth_callback",
            "cursor://anysphere.cursor-mcp/oauth/user-abc123/callback",
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "http://127.0.0.1:33418/",
            "https://vscode.dev/redirect",
            "https://chatgpt.com/connector_platform_oauth_redirect",
            "http://localhost:6274/oauth/callback",
            "http://localhost:6274/oauth/callback/debug",
            "http://127.0.0.1:53682/callback",
            "http://[::1]:8080/cb?x=1",
            "http://localhost/callback",
        ] {
            assert!(all.allows(uri), "{uri}");
        }
        for uri in [
            "https://claude.ai.evil.com/api/mcp/auth_callback",
            "cursor://anysphere.cursor-mcp/oauth/a/b/callback",
            "cursor://anysphere.cursor-mcp/oauth/../callback",
            "cursor://anysphere.cursor-mcp/oauth/a%2Fb/callback",
            "http://127.0.0.1.evil.com/callback",
            "http://localhost@evil.com/callback",
            "http://localhost:6274/oauth/callback#x",
            "https://chatgpt.com/connector_platform_oauth_redirect/extra",
        ] {
            assert!(!all.allows(uri), "{uri}");
        }
        assert!(!profile(&["claude"]).allows("http://127.0.0.1:1234/callback"));
    }

    #[test]
    fn unknown_profile_and_bad_regex_name_their_entry() {
        let err = RedirectPolicy::compile(&[], &["claud".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("allowed_redirect_profiles[0]") && err.contains("claude"),
            "{err}"
        );
        let err = RedirectPolicy::compile(&["(".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed_redirect_patterns[0]"), "{err}");
        let escape = RedirectPolicy::compile(&[r"https://a\.example\.com/cb)|(.*".into()], &[]);
        assert!(escape.is_err(), "a pattern must not escape its anchors");
    }
}
