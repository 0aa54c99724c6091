//! Redirect URI rules: exact string match, except that a loopback redirect may use any port
//! (RFC 8252 §7.3); fragments never; plain http only on loopback (RFC 9700 §2.1).

use url::{Host, Url};

const FORBIDDEN_SCHEMES: [&str; 5] = ["javascript", "data", "file", "vbscript", "blob"];

/// What is wrong with a URI from a registration, a metadata document or the configuration. The
/// message quotes the URI, so that the one who sent it sees which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UriProblem {
    /// Quoted cut short: it may be long and is not a URI anyway.
    #[error("{0:?} contains white space or control characters")]
    InvisibleCharacters(String),
    #[error("{uri:?} is not an absolute URI ({reason})")]
    NotAbsoluteUri {
        uri: String,
        reason: url::ParseError,
    },
    #[error("{uri:?} is not an absolute URL ({reason})")]
    NotAbsoluteUrl {
        uri: String,
        reason: url::ParseError,
    },
    #[error("{0:?} must not contain a fragment")]
    Fragment(String),
    #[error("{0:?} must not have a query or fragment")]
    QueryOrFragment(String),
    #[error("{0:?} must not carry credentials")]
    Credentials(String),
    #[error("{uri:?} uses the forbidden scheme {scheme:?}")]
    ForbiddenScheme { uri: String, scheme: String },
    #[error("{uri:?} has scheme {scheme:?}; use https")]
    NotHttps { uri: String, scheme: String },
    #[error("{0:?} uses http on a non-loopback host; use https")]
    HttpOffLoopback(String),
    #[error("{0:?} must use https (http is allowed only for localhost)")]
    HttpBaseOffLoopback(String),
}

/// Whether the URL's host is a loopback address or `localhost`.
pub(crate) fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks a redirect URI before it is registered.
pub(crate) fn validate_registered(uri: &str) -> Result<(), UriProblem> {
    validate_registrable(uri, false)
}

/// As `validate_registered`; `http_explicitly_allowed` lets a non-loopback http URI through when an
/// operator's pattern names it (README, "Registration, profiles and consent"). Fragments, credentials and script schemes never pass.
pub(crate) fn validate_registrable(
    uri: &str,
    http_explicitly_allowed: bool,
) -> Result<(), UriProblem> {
    // The URL parser drops tabs and newlines silently, so they are refused before it sees them:
    // what is registered must be exactly what is compared and redirected to.
    if uri
        .chars()
        .any(|c| c.is_whitespace() || super::text::is_invisible(c))
    {
        return Err(UriProblem::InvisibleCharacters(
            super::text::for_log(uri).to_owned(),
        ));
    }
    let url = Url::parse(uri).map_err(|reason| UriProblem::NotAbsoluteUri {
        uri: uri.to_owned(),
        reason,
    })?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(UriProblem::Fragment(uri.to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UriProblem::Credentials(uri.to_owned()));
    }
    let scheme = url.scheme();
    if FORBIDDEN_SCHEMES.contains(&scheme) {
        return Err(UriProblem::ForbiddenScheme {
            uri: uri.to_owned(),
            scheme: scheme.to_owned(),
        });
    }
    if scheme == "http" && !is_loopback_host(&url) && !http_explicitly_allowed {
        return Err(UriProblem::HttpOffLoopback(uri.to_owned()));
    }
    Ok(())
}

/// Whether `requested` (from an authorization request) matches the registered URI.
pub(crate) fn matches(registered: &str, requested: &str) -> bool {
    if requested.contains('#')
        || requested
            .chars()
            .any(|c| c.is_whitespace() || super::text::is_invisible(c))
    {
        return false;
    }
    if registered == requested {
        return true;
    }
    let (Ok(registered), Ok(requested)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    // Only the port may differ, and only for http on loopback: native apps pick a free port at run time.
    registered.scheme() == "http"
        && requested.scheme() == "http"
        && is_loopback_host(&registered)
        && registered.host() == requested.host()
        && registered.path() == requested.path()
        && registered.query() == requested.query()
        && requested.username().is_empty()
        && requested.password().is_none()
}

/// An https URL (http only for loopback hosts) without query or fragment.
pub(crate) fn validate_base_url(text: &str) -> Result<(), UriProblem> {
    let url = Url::parse(text).map_err(|reason| UriProblem::NotAbsoluteUrl {
        uri: text.to_owned(),
        reason,
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&url) => {}
        "http" => return Err(UriProblem::HttpBaseOffLoopback(text.to_owned())),
        other => {
            return Err(UriProblem::NotHttps {
                uri: text.to_owned(),
                scheme: other.to_owned(),
            });
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(UriProblem::QueryOrFragment(text.to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UriProblem::Credentials(text.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_match_is_required_for_https() {
        assert!(matches(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback"
        ));
        assert!(!matches(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback/"
        ));
        assert!(!matches(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai:444/api/mcp/auth_callback"
        ));
        assert!(!matches("https://claude.ai/cb", "https://claude.ai/cb?x=1"));
    }

    #[test]
    fn loopback_accepts_any_port_but_nothing_else_varies() {
        assert!(matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:53682/callback"
        ));
        assert!(matches(
            "http://localhost/callback",
            "http://localhost:1234/callback"
        ));
        assert!(matches("http://[::1]/cb", "http://[::1]:9999/cb"));
        assert!(matches("http://127.0.0.1", "http://127.0.0.1:8080/"));
        assert!(!matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:53682/other"
        ));
        assert!(!matches(
            "http://127.0.0.1/callback",
            "http://localhost:53682/callback"
        ));
        assert!(!matches(
            "http://127.0.0.1/callback",
            "http://user@127.0.0.1:1/callback"
        ));
        assert!(!matches(
            "http://127.0.0.1/callback",
            "https://127.0.0.1:53682/callback"
        ));
    }

    #[test]
    fn fragments_are_refused() {
        assert!(!matches(
            "https://app.example.com/cb",
            "https://app.example.com/cb#x"
        ));
        assert!(validate_registered("https://app.example.com/cb#x").is_err());
    }

    #[test]
    fn registration_rules() {
        assert!(validate_registered("https://app.example.com/cb").is_ok());
        assert!(validate_registered("http://localhost").is_ok());
        assert!(validate_registered("cursor://anysphere.cursor-mcp/oauth/callback").is_ok());
        assert!(validate_registered("http://app.example.com/cb").is_err());
        assert!(validate_registered("javascript:alert(1)").is_err());
        assert!(validate_registered("/relative").is_err());
        assert!(validate_registered("https://user:pw@app.example.com/cb").is_err());
    }

    #[test]
    fn control_and_white_space_characters_are_refused_anywhere() {
        for uri in [
            "http://127.0.0.1:9/cb\n",
            "http://127.0.0.1:9/c\tb",
            "http://127.0.0.1:9/cb\r\nLocation: https://evil.example.com",
            "https://app.example.com/cb\u{0}",
            "https://app.example.com/c b",
            "https://app.example.com/\u{202E}bc",
            "\thttps://app.example.com/cb",
        ] {
            assert!(validate_registered(uri).is_err(), "{uri:?}");
        }
        // The parser would read the tab away; the comparison must not.
        assert!(!matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:5000/call\tback"
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn uri() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,80}",
                "(https?|cursor|vscode|javascript)://[a-z0-9.:\\[\\]@%-]{0,30}(/[ -~]{0,30})?(#.{0,5})?",
                "http://(127\\.0\\.0\\.1|localhost|\\[::1\\])(:[0-9]{1,5})?/[a-z]{0,8}",
            ]
        }

        proptest! {
            #[test]
            fn checks_never_panic(registered in uri(), requested in uri(), http in any::<bool>()) {
                let _ = validate_registrable(&registered, http);
                let _ = matches(&registered, &requested);
            }

            #[test]
            fn what_matches_is_what_was_registered_or_its_loopback_port(
                registered in uri(), requested in uri()
            ) {
                if matches(&registered, &requested) {
                    prop_assert!(!requested.contains('#'));
                    prop_assert!(!requested.chars().any(|c| c.is_whitespace() || c.is_control()));
                    if registered != requested {
                        let url = Url::parse(&requested).unwrap();
                        prop_assert_eq!(url.scheme(), "http");
                        prop_assert!(is_loopback_host(&url));
                    }
                }
            }

            #[test]
            fn what_can_be_registered_matches_itself(uri in uri()) {
                if validate_registered(&uri).is_ok() {
                    prop_assert!(matches(&uri, &uri));
                }
            }
        }
    }
}
