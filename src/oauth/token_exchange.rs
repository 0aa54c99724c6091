//! RFC 8693 token exchange, the rules: which configured clients (MCP servers behind the bridge)
//! may trade the access token a user's client sent them for one of ours to another resource,
//! with which scopes, and what the new token says (`act`, RFC 8693 §4.1). No HTTP, no storage:
//! the grant (`token::token_exchange`) checks the subject token and applies `decide`.

use serde::Deserialize;

use super::OAuthError;
use crate::tokens::jwt::{AccessTokenClaims, Actor};

/// `subject_token_type` and `issued_token_type` of an access token (RFC 8693 §3).
pub(crate) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The audience naming the identity provider's own access token for the user.
pub(crate) const UPSTREAM_AUDIENCE: &str = "upstream";

/// `oauth.token_exchange`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenExchangeConfig {
    pub rules: Vec<ExchangeRuleConfig>,
    /// How many actors a chain of exchanges may name (`act` within `act`).
    pub max_depth: usize,
    /// An exchanged token lives this long at most (and never past the token it was exchanged
    /// for): an API that checks our tokens itself sees no revocation before they expire.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_ttl: std::time::Duration,
}

impl Default for TokenExchangeConfig {
    fn default() -> Self {
        TokenExchangeConfig {
            rules: Vec::new(),
            max_depth: 2,
            max_ttl: std::time::Duration::from_secs(300),
        }
    }
}

/// One client's rule: the audiences and scopes it may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRuleConfig {
    pub client: String,
    pub audiences: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The audiences of the tokens it may exchange: those sent to it. The proxied MCP server's
    /// resource when unset.
    #[serde(default)]
    pub subject_audiences: Vec<String>,
}

/// What validation needs to know of the rest of the configuration.
pub(crate) struct Known<'a> {
    /// Configured clients allowed the grant, and whether each can authenticate (confidential).
    pub(crate) exchanging_clients: Vec<(&'a str, bool)>,
    /// The resources tokens may be asked for (`oauth.resources` and the proxy's).
    pub(crate) resources: Vec<String>,
    pub(crate) proxy_resource: Option<String>,
    pub(crate) scopes_supported: &'a [String],
    /// Whether any provider keeps its tokens (`keep_tokens`), so that `upstream` can be asked for.
    pub(crate) provider_tokens_kept: bool,
}

impl TokenExchangeConfig {
    /// Every problem of `oauth.token_exchange`, with its field path.
    pub(crate) fn validate(&self, known: &Known<'_>, problems: &mut Vec<String>) {
        if !self.rules.is_empty() && !(1..=8).contains(&self.max_depth) {
            problems.push("oauth.token_exchange.max_depth: must be 1 to 8".to_owned());
        }
        if !self.rules.is_empty() && self.max_ttl.as_secs() == 0 {
            problems.push("oauth.token_exchange.max_ttl: must be a second at least".to_owned());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let path = format!("oauth.token_exchange.rules[{i}]");
            match known
                .exchanging_clients
                .iter()
                .find(|(id, _)| *id == rule.client)
            {
                None => problems.push(format!(
                    "{path}.client: {:?} is no configured client with grant_types [{}]",
                    rule.client,
                    super::grant_type::TOKEN_EXCHANGE
                )),
                Some((_, false)) => problems.push(format!(
                    "{path}.client: {:?} must authenticate (a secret or keys)",
                    rule.client
                )),
                Some(_) => {}
            }
            if self.rules[..i]
                .iter()
                .any(|other| other.client == rule.client)
            {
                problems.push(format!(
                    "{path}.client: {:?} has a rule already",
                    rule.client
                ));
            }
            if rule.audiences.is_empty() {
                problems.push(format!("{path}.audiences: name one at least"));
            }
            for (j, audience) in rule.audiences.iter().enumerate() {
                if audience == UPSTREAM_AUDIENCE {
                    if !known.provider_tokens_kept {
                        problems.push(format!(
                            "{path}.audiences[{j}]: the provider's tokens are handed on only when they are kept; set keep_tokens: true on the provider"
                        ));
                    }
                } else if !known.resources.contains(audience) {
                    problems.push(format!(
                        "{path}.audiences[{j}]: {audience:?} is not a configured resource (oauth.resources or the proxy's)"
                    ));
                }
            }
            // The provider's token goes as the provider issued it: our scopes are for ours.
            let issues_ours =
                rule.audiences.is_empty() || rule.audiences.iter().any(|a| a != UPSTREAM_AUDIENCE);
            if rule.scopes.is_empty() && issues_ours {
                problems.push(format!("{path}.scopes: name one at least"));
            }
            for (j, scope) in rule.scopes.iter().enumerate() {
                if !known.scopes_supported.contains(scope) {
                    problems.push(format!(
                        "{path}.scopes[{j}]: {scope:?} is not in oauth.scopes_supported"
                    ));
                } else if scope == super::protected_resource::OFFLINE_ACCESS {
                    problems.push(format!(
                        "{path}.scopes[{j}]: offline_access asks for refresh tokens, which an exchange never issues"
                    ));
                }
            }
            // A token sent to one server is that server's to exchange, no other's.
            let effective = |rule: &ExchangeRuleConfig| -> Vec<String> {
                match rule.subject_audiences.is_empty() {
                    true => known.proxy_resource.iter().cloned().collect(),
                    false => rule.subject_audiences.clone(),
                }
            };
            let own = effective(rule);
            if let Some(other) = self.rules[..i].iter().find(|other| {
                effective(other)
                    .iter()
                    .any(|audience| own.contains(audience))
            }) {
                problems.push(format!(
                    "{path}.subject_audiences: {:?} exchanges tokens of the same resource; each resource's tokens are one client's to exchange",
                    other.client
                ));
            }
            if rule.subject_audiences.is_empty() && known.proxy_resource.is_none() {
                problems.push(format!(
                    "{path}.subject_audiences: name the resource whose tokens this client receives (no proxy is configured to default to)"
                ));
            }
            for (j, audience) in rule.subject_audiences.iter().enumerate() {
                if !known.resources.contains(audience) {
                    problems.push(format!(
                        "{path}.subject_audiences[{j}]: {audience:?} is not a configured resource"
                    ));
                }
            }
        }
    }
}

/// The rules in force.
#[derive(Debug, Clone)]
pub struct TokenExchange {
    rules: Vec<ExchangeRuleConfig>,
    max_depth: usize,
    max_ttl: std::time::Duration,
}

/// What an allowed exchange hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// An access token of ours, for another resource.
    Ours(Exchange),
    /// The identity provider's access token for the user's session, as the provider issued it.
    ProviderToken,
}

/// An access token of ours an exchange issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exchange {
    pub(crate) audience: String,
    pub(crate) scope: Vec<String>,
    pub(crate) actor: Actor,
}

impl TokenExchange {
    /// The configured rules, a rule without `subject_audiences` receiving the proxy's resource;
    /// `None` when there are none (the grant is then not offered).
    pub(crate) fn configured(
        config: &TokenExchangeConfig,
        proxy_resource: Option<&str>,
    ) -> Option<Self> {
        if config.rules.is_empty() {
            return None;
        }
        let rules = config
            .rules
            .iter()
            .cloned()
            .map(|mut rule| {
                if rule.subject_audiences.is_empty() {
                    rule.subject_audiences
                        .extend(proxy_resource.map(str::to_owned));
                }
                rule
            })
            .collect();
        Some(TokenExchange {
            rules,
            max_depth: config.max_depth,
            max_ttl: config.max_ttl,
        })
    }

    /// Whether `client` has a rule: asked before anything of the subject token is looked at,
    /// so that a client without one learns nothing of tokens.
    pub(crate) fn has_rule(&self, client: &str) -> bool {
        self.rules.iter().any(|rule| rule.client == client)
    }

    /// The longest an exchanged token lives.
    pub(crate) fn max_ttl(&self) -> std::time::Duration {
        self.max_ttl
    }

    /// Whether `client` may exchange tokens, and what for. The subject token has been checked
    /// (signature, issuer, expiry, revocation) before; `target` is the `audience` or
    /// `resource` asked for (`upstream` for the provider's token, whichever provider was named),
    /// `scope` the scope asked for.
    pub(crate) fn decide(
        &self,
        client: &str,
        subject: &AccessTokenClaims,
        target: Option<&str>,
        scope: Option<&[String]>,
    ) -> Result<Decision, OAuthError> {
        let rule = self
            .rules
            .iter()
            .find(|rule| rule.client == client)
            .ok_or_else(|| {
                OAuthError::UnauthorizedClient(
                    "no oauth.token_exchange rule names this client".into(),
                )
            })?;
        // Only tokens sent to this client: one it was never meant to hold is not laundered.
        if !rule.subject_audiences.contains(&subject.aud) {
            return Err(OAuthError::invalid_request(
                "the subject token was not issued for this client's resource",
            ));
        }
        let target = target.ok_or_else(|| {
            OAuthError::invalid_request("name the token's target with audience or resource")
        })?;
        if !rule.audiences.iter().any(|allowed| allowed == target) {
            return Err(OAuthError::InvalidTarget(
                "this client may not ask for tokens for that audience".into(),
            ));
        }
        // The provider's token names no actor, but a chain stays bounded whatever it ends in.
        let depth = subject.act.as_ref().map_or(0, Actor::depth) + 1;
        if depth > self.max_depth {
            return Err(OAuthError::invalid_request(format!(
                "the subject token was exchanged too often already (at most {} actors)",
                self.max_depth
            )));
        }
        if target == UPSTREAM_AUDIENCE {
            if scope.is_some() {
                return Err(OAuthError::InvalidScope(
                    "the provider's token is handed on with the scope the provider gave it; ask for it without scope".into(),
                ));
            }
            return Ok(Decision::ProviderToken);
        }
        // Never more than the user granted, nor than the rule allows.
        let grantable: Vec<String> = super::scope::parse(&subject.scope)
            .unwrap_or_default()
            .into_iter()
            .filter(|granted| rule.scopes.contains(granted))
            .collect();
        let scope = match scope {
            None => grantable,
            Some(asked) => {
                if let Some(wider) = asked.iter().find(|s| !grantable.contains(s)) {
                    return Err(OAuthError::InvalidScope(
                        format!(
                            "{:?} is not granted to the subject token or not allowed to this client",
                            super::for_log(wider)
                        )
                        .into(),
                    ));
                }
                let mut asked = asked.to_vec();
                asked.dedup();
                asked
            }
        };
        Ok(Decision::Ours(Exchange {
            audience: target.to_owned(),
            scope,
            actor: Actor {
                sub: client.to_owned(),
                act: subject.act.clone().map(Box::new),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = "https://api.example.com";
    const MCP: &str = "https://bridge.example.com/mcp";

    fn rules() -> TokenExchange {
        let config = TokenExchangeConfig {
            rules: vec![ExchangeRuleConfig {
                client: "reports-mcp".into(),
                audiences: vec![API.into()],
                scopes: vec!["openid".into(), "email".into()],
                subject_audiences: vec![],
            }],
            max_depth: 2,
            max_ttl: std::time::Duration::from_secs(300),
        };
        TokenExchange::configured(&config, Some(MCP)).unwrap()
    }

    fn subject() -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://bridge.example.com".into(),
            sub: "user-1".into(),
            aud: MCP.into(),
            client_id: "claude".into(),
            scope: "openid email profile".into(),
            exp: 2_000,
            iat: 1_000,
            nbf: 1_000,
            jti: "j".into(),
            email: None,
            name: None,
            groups: vec![],
            sid: Some("family-1".into()),
            act: None,
        }
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn ours(decision: Decision) -> Exchange {
        match decision {
            Decision::Ours(exchange) => exchange,
            Decision::ProviderToken => panic!("the provider's token, not ours"),
        }
    }

    #[test]
    fn an_allowed_exchange_gets_the_target_the_granted_scopes_the_rule_allows_and_an_actor() {
        let exchange = ours(
            rules()
                .decide("reports-mcp", &subject(), Some(API), None)
                .unwrap(),
        );
        assert_eq!(exchange.audience, API);
        assert_eq!(
            exchange.scope,
            ["openid", "email"],
            "profile is not the rule's"
        );
        assert_eq!(
            exchange.actor,
            Actor {
                sub: "reports-mcp".into(),
                act: None
            }
        );
        let narrower = ours(
            rules()
                .decide(
                    "reports-mcp",
                    &subject(),
                    Some(API),
                    Some(&strings(&["email"])),
                )
                .unwrap(),
        );
        assert_eq!(narrower.scope, ["email"]);
        // Exchanged again, the chain names both actors, the latest outermost.
        let mut exchanged = subject();
        exchanged.act = Some(exchange.actor);
        let again = ours(
            rules()
                .decide("reports-mcp", &exchanged, Some(API), None)
                .unwrap(),
        );
        assert_eq!(again.actor.depth(), 2);
        assert_eq!(again.actor.act.unwrap().sub, "reports-mcp");
    }

    #[test]
    fn every_rule_refuses_what_it_does_not_allow() {
        let refused =
            |client: &str, change: &dyn Fn(&mut AccessTokenClaims), target, scope: &[&str]| {
                let mut claims = subject();
                change(&mut claims);
                let scope = (!scope.is_empty()).then(|| strings(scope));
                rules()
                    .decide(client, &claims, target, scope.as_deref())
                    .unwrap_err()
            };
        let unchanged = |_: &mut AccessTokenClaims| {};
        assert_eq!(
            refused("other-client", &unchanged, Some(API), &[]).code(),
            "unauthorized_client"
        );
        let error = refused(
            "reports-mcp",
            &|c| c.aud = "https://elsewhere.example.com/mcp".into(),
            Some(API),
            &[],
        );
        assert_eq!(error.code(), "invalid_request");
        assert!(error.description().contains("not issued for this client"));
        assert_eq!(
            refused(
                "reports-mcp",
                &unchanged,
                Some("https://unknown.example.com"),
                &[]
            )
            .code(),
            "invalid_target"
        );
        assert_eq!(
            refused("reports-mcp", &unchanged, Some(UPSTREAM_AUDIENCE), &[]).code(),
            "invalid_target"
        );
        assert_eq!(
            refused("reports-mcp", &unchanged, None, &[]).code(),
            "invalid_request"
        );
        // Wider than the rule, and wider than the grant.
        for scope in [["profile"], ["offline_access"]] {
            assert_eq!(
                refused("reports-mcp", &unchanged, Some(API), &scope).code(),
                "invalid_scope",
                "{scope:?}"
            );
        }
        let error = refused(
            "reports-mcp",
            &|c| c.scope = "openid".into(),
            Some(API),
            &["email"],
        );
        assert_eq!(error.code(), "invalid_scope", "email was never granted");
        let deep = |c: &mut AccessTokenClaims| {
            c.act = Some(Actor {
                sub: "a".into(),
                act: Some(Box::new(Actor {
                    sub: "b".into(),
                    act: None,
                })),
            })
        };
        let error = refused("reports-mcp", &deep, Some(API), &[]);
        assert_eq!(error.code(), "invalid_request");
        assert!(error.description().contains("exchanged too often"));
    }

    #[test]
    fn rules_name_clients_that_can_use_the_grant_and_resources_that_exist() {
        let config: TokenExchangeConfig = serde_yaml::from_str(
            "rules:\n  - { client: reports-mcp, audiences: [\"https://api.example.com\", upstream, \"https://nowhere.example\"], scopes: [openid, telepathy, offline_access], subject_audiences: [\"https://x.example\", \"https://api.example.com\"] }\n  - { client: reports-mcp, audiences: [] }\n  - { client: public-one, audiences: [\"https://api.example.com\"], scopes: [openid], subject_audiences: [\"https://api.example.com\"] }\n  - { client: stranger, audiences: [\"https://api.example.com\"] }\nmax_ttl: 0s\n",
        )
        .unwrap();
        let scopes = strings(&["openid", "email", "offline_access"]);
        let known = Known {
            exchanging_clients: vec![("reports-mcp", true), ("public-one", false)],
            resources: strings(&[API]),
            proxy_resource: None,
            scopes_supported: &scopes,
            provider_tokens_kept: false,
        };
        let mut problems = Vec::new();
        config.validate(&known, &mut problems);
        let text = problems.join("\n");
        for expected in [
            "rules[0].audiences[1]: the provider's tokens are handed on only when they are kept; set keep_tokens: true",
            "rules[0].audiences[2]: \"https://nowhere.example\" is not a configured resource",
            "rules[0].scopes[1]: \"telepathy\" is not in oauth.scopes_supported",
            "rules[0].subject_audiences[0]: \"https://x.example\" is not a configured resource",
            "rules[1].client: \"reports-mcp\" has a rule already",
            "rules[1].audiences: name one at least",
            "rules[1].subject_audiences: name the resource",
            "rules[1].scopes: name one at least",
            "rules[0].scopes[2]: offline_access asks for refresh tokens",
            "rules[2].subject_audiences: \"reports-mcp\" exchanges tokens of the same resource",
            "max_ttl: must be a second at least",
            "rules[2].client: \"public-one\" must authenticate",
            "rules[3].client: \"stranger\" is no configured client",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
    }

    #[test]
    fn the_providers_token_is_for_rules_that_name_upstream_and_comes_as_issued() {
        let config: TokenExchangeConfig = serde_yaml::from_str(
            "rules:\n  - { client: reports-mcp, audiences: [upstream] }\n  - { client: other-mcp, audiences: [upstream, \"https://api.example.com\"], subject_audiences: [\"https://api.example.com\"] }\n",
        )
        .unwrap();
        let scopes = strings(&["openid"]);
        let known = Known {
            exchanging_clients: vec![("reports-mcp", true), ("other-mcp", true)],
            resources: strings(&[API, MCP]),
            proxy_resource: Some(MCP.into()),
            scopes_supported: &scopes,
            provider_tokens_kept: true,
        };
        let mut problems = Vec::new();
        config.validate(&known, &mut problems);
        assert_eq!(
            problems,
            ["oauth.token_exchange.rules[1].scopes: name one at least"],
            "scopes are for our tokens only"
        );

        let rules = TokenExchange::configured(&config, Some(MCP)).unwrap();
        let decision = rules
            .decide("reports-mcp", &subject(), Some(UPSTREAM_AUDIENCE), None)
            .unwrap();
        assert_eq!(decision, Decision::ProviderToken);
        let mut deep = subject();
        deep.act = Some(Actor {
            sub: "a".into(),
            act: Some(Box::new(Actor {
                sub: "b".into(),
                act: None,
            })),
        });
        let error = rules
            .decide("reports-mcp", &deep, Some(UPSTREAM_AUDIENCE), None)
            .unwrap_err();
        assert!(error.description().contains("exchanged too often"));
        let error = rules
            .decide(
                "reports-mcp",
                &subject(),
                Some(UPSTREAM_AUDIENCE),
                Some(&strings(&["openid"])),
            )
            .unwrap_err();
        assert_eq!(error.code(), "invalid_scope");
        // A rule without it does not get it, nor a token sent to another server.
        let mut elsewhere = subject();
        elsewhere.aud = "https://elsewhere.example.com/mcp".into();
        let error = rules
            .decide("reports-mcp", &elsewhere, Some(UPSTREAM_AUDIENCE), None)
            .unwrap_err();
        assert_eq!(error.code(), "invalid_request");
        assert_eq!(
            rules
                .decide("reports-mcp", &subject(), Some(API), None)
                .unwrap_err()
                .code(),
            "invalid_target"
        );
    }
}
