//! The token request read once from its form: which grant, with that grant's parameters, the
//! credentials among them typed so they cannot be printed or passed in the wrong place.

use crate::oauth::{GrantType, OAuthError, Params, for_log};
use crate::secret::{AuthorizationCode, CodeVerifier, RefreshToken, SecretString};

/// `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5, RFC 8707 §2.2).
#[derive(Debug)]
pub(super) struct CodeGrant<'a> {
    pub(crate) code: AuthorizationCode,
    pub(crate) redirect_uri: Option<&'a str>,
    pub(crate) code_verifier: Option<CodeVerifier>,
    pub(crate) resource: Option<&'a str>,
}

/// `grant_type=refresh_token` (RFC 6749 §6).
#[derive(Debug)]
pub(super) struct RefreshGrant<'a> {
    pub(crate) refresh_token: RefreshToken,
    pub(crate) scope: Option<&'a str>,
    pub(crate) resource: Option<&'a str>,
}

/// `grant_type=client_credentials` (RFC 6749 §4.4).
#[derive(Debug)]
pub(super) struct ClientCredentialsGrant<'a> {
    pub(crate) scope: Option<&'a str>,
    pub(crate) resource: Option<&'a str>,
}

/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1): an ID-JAG.
#[derive(Debug)]
pub(super) struct JwtBearerGrant {
    pub(crate) assertion: SecretString,
    pub(crate) scope: Option<String>,
    pub(crate) resource: Option<String>,
}

/// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693 §2.1).
#[derive(Debug)]
pub(super) struct TokenExchangeGrant<'a> {
    pub(crate) subject_token: SecretString,
    pub(crate) subject_token_type: &'a str,
    pub(crate) requested_token_type: Option<&'a str>,
    pub(crate) audience: Option<&'a str>,
    pub(crate) resource: Option<&'a str>,
    pub(crate) scope: Option<&'a str>,
}

#[derive(Debug)]
pub(super) enum TokenRequest<'a> {
    AuthorizationCode(CodeGrant<'a>),
    RefreshToken(RefreshGrant<'a>),
    ClientCredentials(ClientCredentialsGrant<'a>),
    JwtBearer(JwtBearerGrant),
    TokenExchange(TokenExchangeGrant<'a>),
}

/// The grant a request names; an unknown one is `unsupported_grant_type` (RFC 6749 §5.2).
pub(super) fn grant_type(params: &Params) -> Result<GrantType, OAuthError> {
    let name = params.require("grant_type")?;
    GrantType::parse(name).ok_or_else(|| {
        OAuthError::UnsupportedGrantType(
            format!("grant_type {:?} is not supported", for_log(name)).into(),
        )
    })
}

impl<'a> TokenRequest<'a> {
    /// The parameters of `grant`, once the client is known to be allowed it; a missing
    /// credential is `invalid_request`.
    pub(super) fn read(grant: GrantType, params: &'a Params) -> Result<Self, OAuthError> {
        let resource = params.get("resource");
        let scope = params.get("scope");
        Ok(match grant {
            GrantType::AuthorizationCode => TokenRequest::AuthorizationCode(CodeGrant {
                code: params.require("code")?.into(),
                redirect_uri: params.get("redirect_uri"),
                code_verifier: params.get("code_verifier").map(CodeVerifier::from),
                resource,
            }),
            GrantType::RefreshToken => TokenRequest::RefreshToken(RefreshGrant {
                refresh_token: params.require("refresh_token")?.into(),
                scope,
                resource,
            }),
            GrantType::ClientCredentials => {
                TokenRequest::ClientCredentials(ClientCredentialsGrant { scope, resource })
            }
            GrantType::JwtBearer => TokenRequest::JwtBearer(JwtBearerGrant {
                assertion: SecretString::new(params.require("assertion")?),
                scope: scope.map(str::to_owned),
                resource: resource.map(str::to_owned),
            }),
            GrantType::TokenExchange => {
                // Delegation with an actor token is not offered: the client itself is the actor.
                if params.get("actor_token").is_some() || params.get("actor_token_type").is_some() {
                    return Err(OAuthError::invalid_request(
                        "actor_token is not supported: the authenticated client is the actor",
                    ));
                }
                TokenRequest::TokenExchange(TokenExchangeGrant {
                    subject_token: SecretString::new(params.require("subject_token")?),
                    subject_token_type: params.require("subject_token_type")?,
                    requested_token_type: params.get("requested_token_type"),
                    audience: params.get("audience"),
                    resource,
                    scope,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut params = Params::default();
        for (name, value) in pairs {
            params.insert(*name, *value);
        }
        params
    }

    #[test]
    fn each_grant_gets_its_own_parameters_and_nothing_prints_a_credential() {
        let form = params(&[
            ("grant_type", "authorization_code"),
            ("code", "code-0123456789"),
            ("code_verifier", "verifier-0123456789"),
            ("redirect_uri", "http://127.0.0.1/cb"),
        ]);
        let request = TokenRequest::read(grant_type(&form).unwrap(), &form).unwrap();
        let TokenRequest::AuthorizationCode(grant) = &request else {
            panic!("{request:?}");
        };
        assert_eq!(grant.code.expose(), "code-0123456789");
        assert_eq!(grant.redirect_uri, Some("http://127.0.0.1/cb"));
        assert!(!format!("{request:?}").contains("0123456789"));

        let form = params(&[("grant_type", "refresh_token"), ("scope", "openid")]);
        let missing = TokenRequest::read(GrantType::RefreshToken, &form).unwrap_err();
        assert_eq!(
            missing,
            OAuthError::invalid_request("refresh_token is required")
        );
    }

    #[test]
    fn an_unknown_grant_type_is_unsupported_and_not_echoed_raw() {
        let form = params(&[("grant_type", "password\u{7}")]);
        let error = grant_type(&form).unwrap_err();
        assert_eq!(error.code(), "unsupported_grant_type");
        assert!(!error.description().contains('\u{7}'));
        let none = params(&[]);
        assert_eq!(grant_type(&none).unwrap_err().code(), "invalid_request");
    }
}
