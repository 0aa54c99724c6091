//! The identity providers users sign in at (`oauth.upstream`, or each of `oauth.upstreams`):
//! which one a sign-in goes to, whose subjects are whose, and which provider a callback, a
//! refresh or a logout token belongs to.

use std::sync::Arc;

use super::Upstream;
use super::claims::{AccessPolicy, ClaimsConfig, NoSubject, map_identity};
use crate::identity::{Identity, SINGLE_PROVIDER, UpstreamSession};

/// One configured provider and what the bridge accepts from it.
pub struct Provider {
    /// Its name in grants, URLs, the metrics and the audit trail. A label value of the metrics
    /// must live as long as the process; there are as many as configured providers.
    pub name: &'static str,
    /// What the chooser page shows.
    pub display_name: String,
    /// Its callback's last path segment (`/oauth/callback/<name>`); `None` for the single
    /// `oauth.upstream`, which returns to `/oauth/callback`.
    pub callback: Option<String>,
    /// The email domains it signs in (lowercase), for `login_hint` routing.
    pub email_domains: Vec<String>,
    /// The domains other providers sign in (lowercase): an address there is not this provider's
    /// to vouch for, so it never reaches a token as the user's email.
    pub foreign_domains: Vec<String>,
    /// Put before every subject it names, so no two providers' users share one.
    pub subject_prefix: String,
    pub claims: ClaimsConfig,
    pub access_policy: AccessPolicy,
    /// Whether its grants are checked with it at each refresh (`revalidate_on_refresh`).
    pub revalidate_on_refresh: bool,
    /// Whether its tokens are kept for token exchanges (`keep_tokens`).
    pub keep_tokens: bool,
    pub upstream: Arc<dyn Upstream>,
}

impl Provider {
    /// The user its claims describe, the subject made ours by the provider's prefix, and an
    /// email address at another provider's domain dropped: a partner's provider must not pass
    /// its user off as `ceo@corp.example` to the MCP servers that trust our tokens' `email`.
    pub(crate) fn identity_of(&self, claims: &serde_json::Value) -> Result<Identity, NoSubject> {
        let mut identity = map_identity(claims, &self.claims)?;
        identity.subject.insert_str(0, &self.subject_prefix);
        let foreign = identity
            .email
            .as_deref()
            .and_then(|email| email.rsplit_once('@'))
            .is_some_and(|(_, domain)| self.foreign_domains.contains(&domain.to_ascii_lowercase()));
        if foreign {
            tracing::warn!(
                provider = self.name,
                subject = %identity.subject,
                "the provider named an email address at another provider's domain; it is not released"
            );
            identity.email = None;
            identity.email_verified = None;
        }
        Ok(identity)
    }

    /// What a grant records of the provider session that started it.
    pub(crate) fn session(&self, subject: String, session_id: Option<String>) -> UpstreamSession {
        UpstreamSession {
            provider: self.name.to_owned(),
            subject,
            session_id,
        }
    }
}

/// Every configured provider, in configuration order.
pub struct Providers(Vec<Provider>);

impl Providers {
    /// `providers` is not empty: configuration validation requires one at least. Each learns
    /// the domains the others sign in.
    pub fn new(mut providers: Vec<Provider>) -> Self {
        let claimed: Vec<(&'static str, String)> = providers
            .iter()
            .flat_map(|provider| {
                provider
                    .email_domains
                    .iter()
                    .map(|domain| (provider.name, domain.to_ascii_lowercase()))
            })
            .collect();
        for provider in &mut providers {
            provider.foreign_domains = claimed
                .iter()
                .filter(|(owner, _)| *owner != provider.name)
                .map(|(_, domain)| domain.clone())
                .collect();
        }
        Providers(providers)
    }

    pub fn all(&self) -> &[Provider] {
        &self.0
    }

    /// For tests that change what the (first) provider accepts.
    #[cfg(test)]
    pub(crate) fn first_mut(&mut self) -> Option<&mut Provider> {
        self.0.first_mut()
    }

    pub(crate) fn named(&self, name: &str) -> Option<&Provider> {
        self.0.iter().find(|provider| provider.name == name)
    }

    /// Where a sign-in goes without asking the user: the provider `login_hint`'s email domain
    /// names, or the only one there is.
    pub(crate) fn chosen_for(&self, login_hint: Option<&str>) -> Option<&Provider> {
        if let [only] = self.0.as_slice() {
            return Some(only);
        }
        let domain = login_hint?.rsplit_once('@')?.1.to_ascii_lowercase();
        self.0
            .iter()
            .find(|provider| provider.email_domains.contains(&domain))
    }

    /// The provider whose callback `callback` (the route's last segment, `None` for
    /// `/oauth/callback`) is, if it is the one the sign-in was sent to (`sent_to`, `None` for
    /// sign-ins started with the single provider, or before providers had names).
    pub(crate) fn returning_to(
        &self,
        callback: Option<&str>,
        sent_to: Option<&str>,
    ) -> Option<&Provider> {
        let provider = match sent_to {
            Some(name) => self.named(name)?,
            None => self.single()?,
        };
        (provider.callback.as_deref() == callback).then_some(provider)
    }

    /// The provider whose session started a grant (`None`: recorded before providers had
    /// names, which only the single provider's grants were).
    pub(crate) fn of_session(&self, session: Option<&UpstreamSession>) -> Option<&Provider> {
        match session {
            Some(session) => self.named(&session.provider),
            None => self.single(),
        }
    }

    /// The provider a logout token says it comes from: its issuer, and our client id at it
    /// (read before anything is verified, only to know whose keys verify the rest).
    pub(crate) fn addressed_by(&self, issuer: &str, audiences: &[&str]) -> Option<&Provider> {
        self.0.iter().find(|provider| {
            provider.upstream.issuer() == issuer
                && audiences.contains(&provider.upstream.client_id())
        })
    }

    /// Whether sign-ins can start at one provider at least: an outage at one of several must
    /// not take every instance out of the load balancer.
    pub(crate) fn any_ready(&self) -> bool {
        self.0.iter().any(|provider| provider.upstream.is_ready())
    }

    /// The single `oauth.upstream` (named `upstream`), when that is how sign-in is configured.
    fn single(&self) -> Option<&Provider> {
        match self.0.as_slice() {
            [only] if only.callback.is_none() => Some(only),
            _ => None,
        }
        .filter(|provider| provider.name == SINGLE_PROVIDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::test_support::{
        Harness, PARTNER_ISSUER, ScriptedUpstream, UPSTREAM_ISSUER, provider,
    };

    fn two() -> (Providers, Arc<ScriptedUpstream>) {
        let (harness, partner) = Harness::with_two_providers();
        let mut corp = provider("corp", Some("corp"), harness.upstream.clone());
        corp.email_domains = vec!["corp.example".into(), "labs.corp.example".into()];
        corp.subject_prefix = "corp|".into();
        let mut other = provider("partner", Some("partner"), partner.clone());
        other.subject_prefix = "partner|".into();
        (Providers::new(vec![corp, other]), partner)
    }

    fn names(provider: Option<&Provider>) -> Option<&'static str> {
        provider.map(|provider| provider.name)
    }

    #[test]
    fn login_hint_picks_the_provider_of_its_email_domain_and_nothing_else_does() {
        let (providers, _) = two();
        let chosen = |hint: Option<&str>| names(providers.chosen_for(hint));
        assert_eq!(chosen(Some("ada@corp.example")), Some("corp"));
        assert_eq!(chosen(Some("Ada@LABS.Corp.Example")), Some("corp"));
        // The domain is what follows the last '@'.
        assert_eq!(
            chosen(Some("\"a@partner.example\"@corp.example")),
            Some("corp")
        );
        for hint in [
            None,
            Some("ada"),
            Some("ada@"),
            Some("ada@partner.example"),
            Some("ada@corp.example.evil.example"),
            Some("ada@evil-corp.example"),
            Some("corp.example"),
        ] {
            assert_eq!(chosen(hint), None, "{hint:?}");
        }
        let single = Providers::new(vec![provider(
            "upstream",
            None,
            Arc::new(ScriptedUpstream::new(UPSTREAM_ISSUER)),
        )]);
        assert_eq!(names(single.chosen_for(None)), Some("upstream"));
        assert_eq!(
            names(single.chosen_for(Some("a@anywhere.example"))),
            Some("upstream")
        );
    }

    #[test]
    fn a_callback_completes_only_a_sign_in_sent_to_its_provider() {
        let (providers, _) = two();
        let back = |callback, sent_to| names(providers.returning_to(callback, sent_to));
        assert_eq!(back(Some("partner"), Some("partner")), Some("partner"));
        assert_eq!(back(Some("corp"), Some("partner")), None, "mix-up");
        assert_eq!(back(None, Some("partner")), None);
        assert_eq!(back(Some("partner"), None), None, "still to be chosen");
        assert_eq!(back(Some("gone"), Some("gone")), None);
        let single = Providers::new(vec![provider(
            "upstream",
            None,
            Arc::new(ScriptedUpstream::new(UPSTREAM_ISSUER)),
        )]);
        assert_eq!(
            names(single.returning_to(None, Some("upstream"))),
            Some("upstream")
        );
        // Parked before providers had names.
        assert_eq!(names(single.returning_to(None, None)), Some("upstream"));
        assert_eq!(names(single.returning_to(Some("upstream"), None)), None);
    }

    #[test]
    fn subjects_carry_their_providers_prefix_and_sessions_their_name() {
        let (providers, _) = two();
        let claims = serde_json::json!({"sub": "42", "email": "ada@corp.example"});
        let corp = providers.named("corp").unwrap();
        let partner = providers.named("partner").unwrap();
        assert_eq!(corp.identity_of(&claims).unwrap().subject, "corp|42");
        assert_eq!(partner.identity_of(&claims).unwrap().subject, "partner|42");
        let session = partner.session("42".into(), None);
        assert_eq!(session.provider, "partner");
        assert_eq!(names(providers.of_session(Some(&session))), Some("partner"));
        let mut gone = session;
        gone.provider = "removed".into();
        assert_eq!(names(providers.of_session(Some(&gone))), None);
        assert_eq!(names(providers.of_session(None)), None);
    }

    #[test]
    fn a_provider_cannot_vouch_for_an_address_at_another_providers_domain() {
        let (providers, _) = two();
        let email_of = |name: &str, email: &str| {
            providers
                .named(name)
                .unwrap()
                .identity_of(
                    &serde_json::json!({"sub": "7", "email": email, "email_verified": true}),
                )
                .unwrap()
        };
        let impostor = email_of("partner", "CEO@Labs.Corp.Example");
        assert_eq!((impostor.email, impostor.email_verified), (None, None));
        assert_eq!(
            impostor.subject, "partner|7",
            "the user still signs in, as themselves"
        );
        let own = email_of("corp", "ceo@corp.example");
        assert_eq!(own.email.as_deref(), Some("ceo@corp.example"));
        assert_eq!(own.email_verified, Some(true));
        // An address nobody claims is the provider's to state.
        let elsewhere = email_of("partner", "bob@gmail.example");
        assert_eq!(elsewhere.email.as_deref(), Some("bob@gmail.example"));
    }

    #[test]
    fn a_logout_token_is_routed_by_its_issuer_and_our_client_id_there() {
        let (providers, partner) = two();
        let to = |issuer, audiences: &[&str]| names(providers.addressed_by(issuer, audiences));
        assert_eq!(to(PARTNER_ISSUER, &["bridge"]), Some("partner"));
        assert_eq!(to(UPSTREAM_ISSUER, &["other", "bridge"]), Some("corp"));
        assert_eq!(to(PARTNER_ISSUER, &["someone-else"]), None);
        assert_eq!(to("https://evil.example", &["bridge"]), None);
        assert!(providers.any_ready());
        partner.set_ready(false);
        assert!(providers.any_ready(), "one provider down is not all down");
    }
}
