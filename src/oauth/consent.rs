//! The consent step. The bridge reaches the upstream provider with one static client, so before
//! it sends a user upstream for a client they have not approved, it asks them (MCP security best
//! practices, "confused deputy"). Approvals are remembered per user, client, redirect URI and scope.

use url::{Host, Url};

use super::authorize::{AuthorizeError, ClientRedirect, UpstreamRedirect, continue_upstream};
use super::disclosure::{IdentityClaim, released};
use super::{Bridge, OAuthError};
use crate::audit;
use crate::clock::UnixTime;
use crate::storage::Consent;
use crate::tokens::TokenHash;

/// What the consent page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsentPage {
    pub(crate) client_id: String,
    pub(crate) client_name: Option<String>,
    /// Where the result goes, as the user should read it.
    pub(crate) destination: Destination,
    /// The host (or, for an app's own scheme, the scheme) the user is sent back to: what a
    /// phishing client cannot hide, so the page shows it large.
    pub(crate) destination_host: String,
    /// For a client identified by its metadata document's URL: that URL's host, which stands
    /// behind the document (the client's name is only what the document says).
    pub(crate) publisher: Option<String>,
    /// What the request adds to what the user approved before: all the page asks for.
    pub(crate) scope: Vec<String>,
    /// Approved for this client before, by the user this browser remembers; kept in the grant.
    pub(crate) already_approved: Vec<String>,
    /// What the client's tokens will say about the user, beyond who they are.
    pub(crate) claims: Vec<IdentityClaim>,
    /// The resource (MCP server) the access is for.
    pub(crate) resource: String,
}

fn expired() -> OAuthError {
    OAuthError::invalid_request(
        "this consent request has expired or was already answered; start again",
    )
}

/// Where the result of a sign-in goes, as a person deciding whether to trust it reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// A secure web address: its host.
    Web(String),
    /// A loopback address: a native application on this computer.
    ThisComputer,
    /// An application's own scheme (`cursor:`), which anything installed may claim: the page
    /// warns.
    AppScheme(String),
    /// Not an address at all: the page warns.
    Invalid(String),
}

/// Describes a redirect URI for a person deciding whether to trust it.
fn describe_destination(redirect_uri: &str) -> Destination {
    let Ok(url) = Url::parse(redirect_uri) else {
        return Destination::Invalid(redirect_uri.to_owned());
    };
    match (url.scheme(), url.host()) {
        ("https", Some(host)) => Destination::Web(host.to_string()),
        ("http", Some(Host::Domain(_) | Host::Ipv4(_) | Host::Ipv6(_)))
            if super::redirect_uri::is_loopback_host(&url) =>
        {
            Destination::ThisComputer
        }
        (scheme, _) => Destination::AppScheme(format!("{scheme}:")),
    }
}

/// The host behind a client identified by an https URL (a Client ID Metadata Document).
fn publisher_of(client_id: &str) -> Option<String> {
    let url = Url::parse(client_id).ok()?;
    (url.scheme() == "https").then(|| url.host_str().map(str::to_owned))?
}

/// The authority of a redirect URI as a person can check it: `claude.ai`, `127.0.0.1:53682`,
/// `cursor://anysphere.cursor-mcp`, or `com.example.app:` for a scheme without one.
fn destination_host(redirect_uri: &str) -> String {
    let Ok(url) = Url::parse(redirect_uri) else {
        return redirect_uri.to_owned();
    };
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => String::new(),
    };
    match url.scheme() {
        "https" | "http" => host,
        scheme if host.is_empty() => format!("{scheme}:"),
        scheme => format!("{scheme}://{host}"),
    }
}

/// The page for a consent request, without using it up.
pub(crate) async fn consent_page(
    bridge: &Bridge,
    token: &str,
    now: UnixTime,
) -> Result<ConsentPage, OAuthError> {
    let pending = bridge
        .storage
        .get_consent_request(&TokenHash::of(token), now)
        .await?
        .ok_or_else(expired)?;
    let request = pending.request;
    let client = bridge
        .clients
        .find(&request.client_id, now)
        .await
        .ok()
        .flatten()
        .ok_or_else(expired)?;
    let destination = describe_destination(&request.redirect_uri);
    let new_scope: Vec<String> = request
        .scope
        .iter()
        .filter(|scope| !pending.already_approved.contains(scope))
        .cloned()
        .collect();
    let whole_grant: Vec<String> = pending
        .already_approved
        .iter()
        .chain(&new_scope)
        .cloned()
        .collect();
    Ok(ConsentPage {
        publisher: publisher_of(&client.id),
        client_id: client.id.clone(),
        client_name: client.name.clone(),
        destination,
        destination_host: destination_host(&request.redirect_uri),
        claims: released(&whole_grant, &bridge.settings.access_token_claims),
        scope: new_scope,
        already_approved: pending.already_approved,
        resource: request.audience,
    })
}

/// Applies the user's decision: Allow continues to the upstream login, Deny answers the client
/// with `access_denied`. Each consent request is decided once.
pub(crate) async fn decide(
    bridge: &Bridge,
    token: &str,
    approve: bool,
    now: UnixTime,
) -> Result<UpstreamRedirect, AuthorizeError> {
    let pending = bridge
        .storage
        .take_consent_request(&TokenHash::of(token), now)
        .await
        .map_err(|e| AuthorizeError::Page(e.into()))?
        .ok_or_else(|| AuthorizeError::Page(expired()))?;
    bridge
        .metrics
        .consent(if approve { "allow" } else { "deny" });
    let request = pending.request;
    if !approve {
        tracing::info!(client_id = %request.client_id, "the user denied consent");
        audit::record(&audit::Event::ConsentDenied {
            client_id: &request.client_id,
            redirect_uri: &request.redirect_uri,
            scope: &request.scope,
            audience: &request.audience,
        });
        return Err(ClientRedirect::error(
            &request,
            OAuthError::AccessDenied("the user denied access".into()),
        ));
    }
    // What the page listed as approved before is all the code may carry on from it.
    let consent = if pending.already_approved.is_empty() {
        Consent::GivenNow
    } else {
        Consent::GivenOnTopOf {
            earlier: pending.already_approved,
        }
    };
    continue_upstream(bridge, request, consent, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_read_as_a_person_would_read_them() {
        assert_eq!(
            describe_destination("https://claude.ai/api/mcp/auth_callback"),
            Destination::Web("claude.ai".to_owned())
        );
        assert_eq!(
            describe_destination("http://127.0.0.1:4000/callback"),
            Destination::ThisComputer
        );
        assert_eq!(
            describe_destination("cursor://anysphere.cursor-mcp/oauth/callback"),
            Destination::AppScheme("cursor:".to_owned())
        );
        assert_eq!(
            describe_destination("not a uri"),
            Destination::Invalid("not a uri".to_owned())
        );
    }

    #[test]
    fn a_metadata_document_clients_publisher_is_its_host() {
        assert_eq!(
            publisher_of("https://app.example.com/client.json").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(publisher_of("dcr_0123456789"), None);
        assert_eq!(publisher_of("http://app.example.com/client.json"), None);
    }

    #[test]
    fn the_destination_host_is_what_a_person_can_check() {
        for (uri, host) in [
            ("https://claude.ai/api/mcp/auth_callback", "claude.ai"),
            ("https://app.example.com:8443/cb", "app.example.com:8443"),
            ("http://127.0.0.1:53682/callback", "127.0.0.1:53682"),
            ("http://[::1]:4000/cb", "[::1]:4000"),
            (
                "cursor://anysphere.cursor-mcp/oauth/callback",
                "cursor://anysphere.cursor-mcp",
            ),
            ("com.example.app:/oauth2redirect", "com.example.app:"),
        ] {
            assert_eq!(destination_host(uri), host, "{uri}");
        }
    }
}

#[cfg(test)]
mod flow_tests {
    use super::*;
    use crate::oauth::authorize::{AuthorizationStep, start_authorization};
    use crate::oauth::test_support::*;

    async fn consent_token(harness: &Harness, remembered: Option<&str>) -> AuthorizationStep {
        let params = harness.authorization_params(CONSENTING_CLIENT, "openid email");
        start_authorization(&harness.bridge, &params, remembered, harness.now())
            .await
            .unwrap()
    }

    fn token_of(step: AuthorizationStep) -> String {
        match step {
            AuthorizationStep::Consent { token, client_id } => {
                assert_eq!(client_id, CONSENTING_CLIENT);
                token
            }
            AuthorizationStep::Upstream(_) => panic!("expected the consent step"),
        }
    }

    #[tokio::test]
    async fn a_client_without_skip_consent_asks_first_and_the_page_names_it() {
        let harness = Harness::new();
        let token = token_of(consent_token(&harness, None).await);
        let page = consent_page(&harness.bridge, &token, harness.now())
            .await
            .unwrap();
        assert_eq!(page.client_name.as_deref(), Some("Consenting app"));
        assert_eq!(page.scope, vec!["openid", "email"]);
        assert_eq!(page.destination, Destination::ThisComputer);
        assert!(harness.upstream.last_exchange().is_none());
    }

    #[tokio::test]
    async fn approval_is_single_use_continues_upstream_and_is_remembered_after_sign_in() {
        let harness = Harness::new();
        let token = token_of(consent_token(&harness, None).await);
        let started = decide(&harness.bridge, &token, true, harness.now())
            .await
            .unwrap();
        assert!(matches!(
            decide(&harness.bridge, &token, true, harness.now()).await,
            Err(AuthorizeError::Page(_))
        ));
        let signed_in = harness
            .sign_in(&Harness::login_from(started), &[("code", "c")])
            .await
            .unwrap();
        assert_eq!(signed_in.remember_consent_of.as_deref(), Some("user-1"));
        // Next time the remembered approval skips the page, for the same user.
        match consent_token(&harness, Some("user-1")).await {
            AuthorizationStep::Upstream(started) => {
                let again = harness
                    .sign_in(&Harness::login_from(started), &[("code", "c")])
                    .await
                    .unwrap();
                assert_eq!(again.remember_consent_of, None);
            }
            AuthorizationStep::Consent { .. } => panic!("a remembered consent must skip the page"),
        }
        // A subject with no approval on record is asked.
        token_of(consent_token(&harness, Some("someone-else")).await);
    }

    #[tokio::test]
    async fn denial_reaches_the_client_as_access_denied_with_state() {
        let harness = Harness::new();
        let token = token_of(consent_token(&harness, None).await);
        match decide(&harness.bridge, &token, false, harness.now()).await {
            Err(AuthorizeError::Redirect(redirect)) => {
                assert_eq!(redirect.error.code(), "access_denied");
                assert_eq!(redirect.state.as_deref(), Some("client-state"));
            }
            other => panic!("expected a redirect to the client, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_remembered_consent_of_another_user_does_not_cover_who_actually_signs_in() {
        let harness = Harness::new();
        let token = token_of(consent_token(&harness, None).await);
        let started = decide(&harness.bridge, &token, true, harness.now())
            .await
            .unwrap();
        harness
            .sign_in(&Harness::login_from(started), &[("code", "c")])
            .await
            .unwrap();
        // The browser remembers user-1, but user-2 signs in upstream.
        let AuthorizationStep::Upstream(started) = consent_token(&harness, Some("user-1")).await
        else {
            panic!("remembered consent skips the page");
        };
        harness
            .upstream
            .set_claims(serde_json::json!({"sub": "user-2"}));
        match harness
            .sign_in(&Harness::login_from(started), &[("code", "c")])
            .await
        {
            Err(AuthorizeError::Redirect(redirect)) => {
                assert_eq!(redirect.error.code(), "access_denied")
            }
            other => panic!("expected access_denied, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn expired_consent_request_is_an_error_page() {
        let harness = Harness::new();
        let token = token_of(consent_token(&harness, None).await);
        harness
            .clock
            .advance(crate::oauth::PENDING_AUTHORIZATION_TTL);
        assert!(
            consent_page(&harness.bridge, &token, harness.now())
                .await
                .is_err()
        );
        assert!(matches!(
            decide(&harness.bridge, &token, true, harness.now()).await,
            Err(AuthorizeError::Page(_))
        ));
    }
}
