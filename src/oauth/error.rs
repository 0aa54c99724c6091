//! The one protocol error: RFC 6749 error codes (plus RFC 8707's `invalid_target`) with a
//! description that is safe to show to the client. A failure of ours (`server_error`,
//! `temporarily_unavailable`) carries its cause, which the HTTP layer logs once with the request
//! id; conversions never log.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub(crate) type Description = Cow<'static, str>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// RFC 6749 §4.1.2.1, §5.2: missing, repeated or malformed parameter.
    #[error("invalid_request: {0}")]
    InvalidRequest(Description),
    /// RFC 6749 §5.2: client authentication failed (unknown client, bad secret, wrong method).
    #[error("invalid_client: {0}")]
    InvalidClient(Description),
    /// RFC 6749 §5.2: the code or refresh token is invalid, expired, revoked, or bound elsewhere.
    #[error("invalid_grant: {0}")]
    InvalidGrant(Description),
    /// RFC 6749 §4.1.2.1, §5.2: the client may not use this grant or response type.
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(Description),
    /// RFC 6749 §5.2.
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(Description),
    /// RFC 6749 §4.1.2.1.
    #[error("unsupported_response_type: {0}")]
    UnsupportedResponseType(Description),
    /// RFC 6749 §3.3, §4.1.2.1, §5.2.
    #[error("invalid_scope: {0}")]
    InvalidScope(Description),
    /// RFC 6749 §4.1.2.1: the user or the policy refused.
    #[error("access_denied: {0}")]
    AccessDenied(Description),
    /// RFC 8707 §2: the requested resource is not acceptable.
    #[error("invalid_target: {0}")]
    InvalidTarget(Description),
    /// RFC 7591 §3.2.2: a redirect URI that may not be registered.
    #[error("invalid_redirect_uri: {0}")]
    InvalidRedirectUri(Description),
    /// RFC 7591 §3.2.2: other client metadata that is invalid or inconsistent.
    #[error("invalid_client_metadata: {0}")]
    InvalidClientMetadata(Description),
    /// RFC 6749 §4.1.2.1: an unexpected condition; the cause goes to the log, not to the client.
    #[error("server_error")]
    ServerError(Cause),
    /// RFC 6749 §4.1.2.1: storage or the upstream provider is unreachable for now.
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable(Cause),
    /// A limit on how often or how much this caller may ask (RFC 6585 §4: `429`), answered as
    /// `temporarily_unavailable` with `Retry-After`.
    #[error("temporarily_unavailable: {description}")]
    TooManyRequests {
        description: Description,
        retry_after: u64,
    },
    /// The request body did not arrive in time (RFC 9110 §15.5.9: `408`).
    #[error("invalid_request: request body timeout")]
    RequestTimeout,
    /// The request announced or sent a larger body than is accepted (RFC 9110 §15.5.14: `413`).
    #[error("invalid_request: request body too large")]
    RequestTooLarge,
}

impl OAuthError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient(_) => "invalid_client",
            OAuthError::InvalidGrant(_) => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::UnsupportedResponseType(_) => "unsupported_response_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::AccessDenied(_) => "access_denied",
            OAuthError::InvalidTarget(_) => "invalid_target",
            OAuthError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            OAuthError::InvalidClientMetadata(_) => "invalid_client_metadata",
            OAuthError::ServerError(_) => "server_error",
            OAuthError::TemporarilyUnavailable(_) | OAuthError::TooManyRequests { .. } => {
                "temporarily_unavailable"
            }
            OAuthError::RequestTimeout | OAuthError::RequestTooLarge => "invalid_request",
        }
    }

    pub(crate) fn description(&self) -> &str {
        match self {
            OAuthError::InvalidRequest(d)
            | OAuthError::InvalidClient(d)
            | OAuthError::InvalidGrant(d)
            | OAuthError::UnauthorizedClient(d)
            | OAuthError::UnsupportedGrantType(d)
            | OAuthError::UnsupportedResponseType(d)
            | OAuthError::InvalidScope(d)
            | OAuthError::AccessDenied(d)
            | OAuthError::InvalidTarget(d)
            | OAuthError::InvalidRedirectUri(d)
            | OAuthError::InvalidClientMetadata(d)
            | OAuthError::TooManyRequests { description: d, .. } => d,
            OAuthError::ServerError(_) => "the server could not complete the request",
            OAuthError::TemporarilyUnavailable(_) => {
                "the service is temporarily unavailable; try again shortly"
            }
            OAuthError::RequestTimeout => "the request body did not arrive in time",
            OAuthError::RequestTooLarge => "the request body is too large",
        }
    }

    pub(crate) fn invalid_request(description: impl Into<Description>) -> Self {
        OAuthError::InvalidRequest(description.into())
    }

    pub(crate) fn invalid_grant(description: impl Into<Description>) -> Self {
        OAuthError::InvalidGrant(description.into())
    }

    pub(crate) fn invalid_client(description: impl Into<Description>) -> Self {
        OAuthError::InvalidClient(description.into())
    }

    /// `server_error` because of `cause`.
    pub(crate) fn internal(cause: impl Into<Cause>) -> Self {
        OAuthError::ServerError(cause.into())
    }

    /// `temporarily_unavailable` because of `cause`.
    pub(crate) fn unavailable(cause: impl Into<Cause>) -> Self {
        OAuthError::TemporarilyUnavailable(cause.into())
    }

    /// What failed below this answer, for the log; `None` for the client's own mistakes.
    pub(crate) fn cause(&self) -> Option<&Cause> {
        match self {
            OAuthError::ServerError(cause) | OAuthError::TemporarilyUnavailable(cause) => {
                Some(cause)
            }
            _ => None,
        }
    }
}

impl From<crate::storage::StorageError> for OAuthError {
    fn from(error: crate::storage::StorageError) -> Self {
        OAuthError::unavailable(error)
    }
}

/// What failed below a `server_error` or `temporarily_unavailable` answer: never shown to the
/// client, logged once by the HTTP layer with its whole chain.
#[derive(Clone, Default)]
pub struct Cause(Option<Arc<dyn std::error::Error + Send + Sync>>);

impl Cause {
    /// A reason that is no error value of its own (a state that should not happen).
    pub(crate) fn because(reason: &'static str) -> Self {
        Cause(Some(Arc::new(Reason(reason))))
    }

    pub(crate) fn error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.0.as_deref()
    }

    /// `a: b: c`, or a fixed text when nothing was recorded.
    pub(crate) fn chain(&self) -> String {
        match self.error() {
            Some(error) => crate::error_chain(error),
            None => "no cause recorded".to_owned(),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Cause {
    fn from(error: E) -> Self {
        Cause(Some(Arc::new(error)))
    }
}

/// Two answers are equal when the client sees the same answer: the cause is only for the log.
impl PartialEq for Cause {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Cause {}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.chain())
    }
}

#[derive(Debug)]
struct Reason(&'static str);

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Reason {}
