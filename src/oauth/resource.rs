//! Resource indicators (RFC 8707): which audience a token is for.

use url::Url;

use super::{OAuthError, Settings};

/// The audience for a request's `resource`, or the default audience when it names none.
pub(crate) fn resolve_audience(
    settings: &Settings,
    resource: Option<&str>,
) -> Result<String, OAuthError> {
    let Some(resource) = resource else {
        return Ok(settings.default_audience.clone());
    };
    validate_resource_uri(resource).map_err(|_| {
        OAuthError::InvalidTarget("resource must be an absolute URI without a fragment".into())
    })?;
    let allowed = settings.allowed_resources.is_empty()
        || resource == settings.default_audience
        || settings.allowed_resources.iter().any(|r| r == resource);
    if !allowed {
        return Err(OAuthError::InvalidTarget(
            "this resource is not served by this authorization server".into(),
        ));
    }
    Ok(resource.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResourceUriProblem {
    #[error("{0:?} is not an absolute URI")]
    NotAbsolute(String),
    #[error("{0:?} must not contain a fragment")]
    Fragment(String),
}

/// RFC 8707 §2: an absolute URI without a fragment.
pub(crate) fn validate_resource_uri(text: &str) -> Result<(), ResourceUriProblem> {
    let url = Url::parse(text).map_err(|_| ResourceUriProblem::NotAbsolute(text.to_owned()))?;
    if url.fragment().is_some() || text.contains('#') {
        return Err(ResourceUriProblem::Fragment(text.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::test_support::settings;

    #[test]
    fn missing_resource_gets_the_default_audience() {
        let settings = settings();
        assert_eq!(
            resolve_audience(&settings, None).unwrap(),
            settings.default_audience
        );
    }

    #[test]
    fn relative_or_fragment_resources_are_invalid_target() {
        let settings = settings();
        assert_eq!(
            resolve_audience(&settings, Some("/mcp"))
                .unwrap_err()
                .code(),
            "invalid_target"
        );
        assert_eq!(
            resolve_audience(&settings, Some("https://mcp.example.com/#x"))
                .unwrap_err()
                .code(),
            "invalid_target"
        );
    }

    #[test]
    fn allow_list_is_enforced_when_configured() {
        let mut settings = settings();
        settings.allowed_resources = vec!["https://mcp.example.com/mcp".into()];
        assert!(resolve_audience(&settings, Some("https://mcp.example.com/mcp")).is_ok());
        assert_eq!(
            resolve_audience(&settings, Some("https://other.example.com/mcp"))
                .unwrap_err()
                .code(),
            "invalid_target"
        );
    }
}
