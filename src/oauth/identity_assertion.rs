//! Enterprise-Managed Authorization (MCP's ext-auth, SEP-990; draft-ietf-oauth-identity-
//! assertion-authz-grant): the client brings an Identity Assertion JWT Authorization Grant
//! (ID-JAG) that the company's identity provider issued for this server, and the bridge checks
//! it as a token from a provider it trusts (`oauth.identity_assertion.trusted_issuers`):
//! `typ`, signature by the issuer's keys, `aud` = our issuer, `client_id` = the authenticated
//! client, times, `jti`; then the same claim mapping and access policy as an upstream login.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::client_assertion::{
    AssertionRefused, Audience, MAX_ASSERTION_BYTES, check_client_keys, check_lifetime,
    signed_claims,
};
use crate::clients::client_keys::{ClientKeys, RemoteKeySets};
use crate::clock::UnixTime;
use crate::identity::Identity;
use crate::upstream::claims::{AccessPolicy, ClaimsConfig, check_access, map_identity};

/// The JWT `typ` of an ID-JAG; JOSE lets `application/` be left out (RFC 7515 §4.1.9).
const ID_JAG_TYPE: &str = "oauth-id-jag+jwt";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityAssertionConfig {
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
}

/// An enterprise identity provider whose ID-JAGs are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    pub issuer: String,
    /// Where the provider publishes its signing keys (https); or the keys themselves, `jwks`.
    pub jwks_uri: Option<String>,
    pub jwks: Option<Value>,
    /// Where the user's attributes are in the ID-JAG, as for `oauth.upstream.claims`.
    #[serde(default)]
    pub claims: ClaimsConfig,
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default)]
    pub allowed_email_domains: Vec<String>,
    #[serde(default = "default_true")]
    pub require_verified_email: bool,
    /// Whether the grant also brings a refresh token (for clients allowed `refresh_token`).
    #[serde(default)]
    pub refresh_tokens: bool,
}

fn default_true() -> bool {
    true
}

impl IdentityAssertionConfig {
    /// Every problem of `oauth.identity_assertion`, with its field path.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        let mut seen = std::collections::HashSet::new();
        for (i, trusted) in self.trusted_issuers.iter().enumerate() {
            let field = format!("oauth.identity_assertion.trusted_issuers[{i}]");
            if url::Url::parse(&trusted.issuer).is_err() {
                problems.push(format!("{field}.issuer: must be a URL"));
            }
            if !seen.insert(trusted.issuer.as_str()) {
                problems.push(format!("{field}.issuer: listed twice"));
            }
            match check_client_keys(trusted.jwks.as_ref(), trusted.jwks_uri.as_deref()) {
                Ok(true) => {}
                Ok(false) => problems.push(format!("{field}: set jwks_uri (or jwks)")),
                Err(problem) => problems.push(format!("{field}.jwks: {problem}")),
            }
        }
    }
}

/// One trusted issuer, ready to check what it signs.
struct TrustedIssuer {
    issuer: String,
    keys: ClientKeys,
    claims: ClaimsConfig,
    policy: AccessPolicy,
    refresh_tokens: bool,
}

/// The trusted issuers and how to reach their keys.
pub struct IdentityAssertions {
    issuers: Vec<TrustedIssuer>,
    remote_keys: Arc<RemoteKeySets>,
}

/// An ID-JAG that passed every check: whom it speaks for and what it asks.
#[derive(Debug)]
pub(crate) struct VerifiedGrant {
    pub(crate) identity: Identity,
    pub(crate) issuer: String,
    pub(crate) jti: String,
    pub(crate) expires_at: UnixTime,
    /// The `scope` claim, when the provider limited the grant.
    pub(crate) scope: Option<String>,
    /// The `resource` claim: the resource servers the token may be for.
    pub(crate) resources: Vec<String>,
    pub(crate) refresh_tokens: bool,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    #[serde(default)]
    aud: Audience,
    client_id: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    resource: Resources,
    /// Rich authorization requests the bridge does not implement: refused, not ignored.
    authorization_details: Option<Value>,
}

/// The draft allows one resource or several.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Resources {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl IdentityAssertions {
    /// None without trusted issuers: the grant is then not offered.
    pub(crate) fn configured(
        config: &IdentityAssertionConfig,
        remote_keys: Arc<RemoteKeySets>,
    ) -> Result<Option<Self>, &'static str> {
        if config.trusted_issuers.is_empty() {
            return Ok(None);
        }
        let mut issuers = Vec::new();
        for trusted in &config.trusted_issuers {
            let keys =
                ClientKeys::from_metadata(trusted.jwks.as_ref(), trusted.jwks_uri.as_deref())?
                    .ok_or("a trusted issuer needs jwks_uri or jwks")?;
            issuers.push(TrustedIssuer {
                issuer: trusted.issuer.clone(),
                keys,
                claims: trusted.claims.clone(),
                policy: AccessPolicy {
                    allowed_groups: trusted.allowed_groups.clone(),
                    allowed_email_domains: trusted.allowed_email_domains.clone(),
                    require_verified_email: trusted.require_verified_email,
                },
                refresh_tokens: trusted.refresh_tokens,
            });
        }
        Ok(Some(IdentityAssertions {
            issuers,
            remote_keys,
        }))
    }

    /// Checks `assertion` for `client_id` at the authorization server `our_issuer`.
    pub(crate) async fn verify(
        &self,
        assertion: &str,
        client_id: &str,
        our_issuer: &str,
        now: UnixTime,
    ) -> Result<VerifiedGrant, AssertionRefused> {
        // Nothing is parsed of an assertion no provider would make.
        if assertion.len() > MAX_ASSERTION_BYTES {
            return Err(AssertionRefused("the assertion is too long"));
        }
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| AssertionRefused("the assertion is not a JWT"))?;
        let typ = header
            .typ
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if typ.strip_prefix("application/").unwrap_or(&typ) != ID_JAG_TYPE {
            return Err(AssertionRefused(
                "the assertion is not an ID-JAG (typ oauth-id-jag+jwt)",
            ));
        }
        // Which keys to check it with: the issuer it names, which the signature then confirms.
        let named: Claims = jsonwebtoken::dangerous::insecure_decode(assertion)
            .map_err(|_| AssertionRefused("the assertion's claims cannot be read"))?
            .claims;
        let trusted = self
            .issuers
            .iter()
            .find(|trusted| named.iss.as_deref() == Some(trusted.issuer.as_str()))
            .ok_or(AssertionRefused("the assertion's issuer is not trusted"))?;
        // Nothing is fetched for an assertion that would fail anyway.
        check_claims(&named, trusted, client_id, our_issuer, now)?;
        let (_, claims): (_, Value) = trusted
            .keys
            .check_with(&self.remote_keys, now, |keys| {
                signed_claims(assertion, keys)
            })
            .await
            .map_err(|_| AssertionRefused("the issuer's keys cannot be fetched"))??;
        let signed: Claims = serde_json::from_value(claims.clone())
            .map_err(|_| AssertionRefused("the assertion's claims cannot be read"))?;
        let jti = check_claims(&signed, trusted, client_id, our_issuer, now)?;
        let identity = map_identity(&claims, &trusted.claims)
            .map_err(|_| AssertionRefused("the assertion has no subject"))?;
        check_access(&identity, &trusted.policy)
            .map_err(|_| AssertionRefused("the user may not use this server (access policy)"))?;
        Ok(VerifiedGrant {
            identity,
            issuer: trusted.issuer.clone(),
            jti,
            expires_at: UnixTime(signed.exp.unwrap_or_default()),
            scope: signed.scope,
            resources: match signed.resource {
                Resources::One(resource) => vec![resource],
                Resources::Many(resources) => resources,
                Resources::None => Vec::new(),
            },
            refresh_tokens: trusted.refresh_tokens,
        })
    }
}

/// The claims that need no key; the `jti` when all hold.
fn check_claims(
    claims: &Claims,
    trusted: &TrustedIssuer,
    client_id: &str,
    our_issuer: &str,
    now: UnixTime,
) -> Result<String, AssertionRefused> {
    if claims.iss.as_deref() != Some(trusted.issuer.as_str()) {
        return Err(AssertionRefused("the assertion's issuer is not trusted"));
    }
    // One audience only: an ID-JAG good at several servers could be redeemed at each.
    if !claims.aud.is_only(our_issuer) {
        return Err(AssertionRefused(
            "the assertion's aud is not this authorization server",
        ));
    }
    if claims.client_id.as_deref() != Some(client_id) {
        return Err(AssertionRefused(
            "the assertion was issued to another client (client_id)",
        ));
    }
    if claims.iat.is_none() {
        return Err(AssertionRefused("the assertion has no iat"));
    }
    if claims.authorization_details.is_some() {
        return Err(AssertionRefused(
            "the assertion carries authorization_details, which this server does not implement",
        ));
    }
    check_lifetime(
        claims.exp,
        claims.nbf,
        claims.iat,
        claims.jti.as_deref(),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::metadata_documents::CimdSettings;
    use crate::oauth::redirect_policy::RedirectPolicy;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const PEM: &str = include_str!("../../tests/fixtures/other_rsa.pem");
    const IDP: &str = "https://idp.corp.example";
    const US: &str = "https://bridge.example.com";
    const NOW: UnixTime = UnixTime(1_800_000_000);

    fn config(keys: &str) -> IdentityAssertionConfig {
        serde_yaml::from_str(&format!(
            "trusted_issuers:\n  - issuer: {IDP}\n    {keys}\n    allowed_email_domains: [corp.example]\n"
        ))
        .unwrap()
    }

    fn assertions() -> IdentityAssertions {
        let key = EncodingKey::from_rsa_pem(PEM.as_bytes()).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
        jwk.common.key_id = Some("k".into());
        let jwks = json!({"keys": [jwk]});
        let settings = CimdSettings {
            allowed_hosts: vec![],
            timeout: std::time::Duration::from_secs(1),
            max_bytes: 1024,
            min_cache: std::time::Duration::from_secs(60),
            max_cache: std::time::Duration::from_secs(60),
            root_certificates: vec![],
            redirects: RedirectPolicy::compile(&[], &[]).unwrap(),
            scopes_supported: vec![],
            id_token_algorithms: vec![],
        };
        IdentityAssertions::configured(
            &config(&format!("jwks: {jwks}")),
            Arc::new(RemoteKeySets::new(settings, vec![])),
        )
        .unwrap()
        .unwrap()
    }

    fn id_jag(typ: &str, change: impl FnOnce(&mut Value)) -> String {
        let mut claims = json!({"iss": IDP, "sub": "u1", "aud": US, "client_id": "agent",
            "iat": NOW.seconds(), "exp": NOW.seconds() + 60, "jti": "j1", "email": "u1@corp.example",
            "email_verified": true});
        change(&mut claims);
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some(typ.into());
        header.kid = Some("k".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_rsa_pem(PEM.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn the_media_type_form_of_typ_is_accepted_and_the_policy_applies() {
        let assertions = assertions();
        for typ in [
            "oauth-id-jag+jwt",
            "application/oauth-id-jag+jwt",
            "OAuth-ID-JAG+JWT",
        ] {
            let grant = assertions
                .verify(&id_jag(typ, |_| {}), "agent", US, NOW)
                .await;
            let grant = grant.unwrap();
            assert_eq!(grant.identity.subject, "u1");
            assert_eq!(grant.jti, "j1");
            assert!(!grant.refresh_tokens);
        }
        // The domain policy of the trusted issuer, as for upstream logins.
        let outsider = id_jag("oauth-id-jag+jwt", |c| c["email"] = json!("x@gmail.com"));
        let refusal = assertions
            .verify(&outsider, "agent", US, NOW)
            .await
            .unwrap_err();
        assert_eq!(
            refusal.0,
            "the user may not use this server (access policy)"
        );
        let unverified = id_jag("oauth-id-jag+jwt", |c| c["email_verified"] = json!(false));
        assert!(
            assertions
                .verify(&unverified, "agent", US, NOW)
                .await
                .is_err()
        );
        let other_typ = id_jag("at+jwt", |_| {});
        assert!(
            assertions
                .verify(&other_typ, "agent", US, NOW)
                .await
                .is_err()
        );
    }

    #[test]
    fn each_trusted_issuer_needs_a_url_keys_and_a_name_of_its_own() {
        let mut problems = Vec::new();
        config("jwks_uri: \"https://idp.corp.example/jwks\"").validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let yaml = "trusted_issuers:\n  - issuer: not a url\n  - issuer: https://a.example\n    jwks_uri: http://a.example/jwks\n  - issuer: https://b.example\n    jwks_uri: https://b.example/jwks\n  - issuer: https://b.example\n    jwks_uri: https://b.example/jwks\n";
        let config: IdentityAssertionConfig = serde_yaml::from_str(yaml).unwrap();
        config.validate(&mut problems);
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
