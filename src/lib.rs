//! mcp-oauth-bridge: an OAuth 2.1 authorization server for MCP clients that delegates the
//! user's login to an upstream OpenID Connect provider and issues its own tokens.

/// Build the service from configuration, bind, serve, shut down gracefully.
pub mod app;
/// The audit trail: security events as JSON lines.
pub mod audit;

mod bounded_read;
/// Client registry: YAML clients, registered clients, metadata documents, and their
/// authentication.
pub mod clients;
/// The one place that reads the system time.
pub mod clock;
/// YAML configuration with environment substitution and validation.
pub mod config;
/// Durations as the configuration writes them.
mod duration;
/// HTTP routes, parsing and rendering; no protocol rules.
mod http;
/// The signed-in user as the bridge records it.
pub mod identity;
/// Signing keys generated, published and retired on a schedule, shared through storage.
mod key_rotation;
/// The built-in user directory, for signing in without an identity provider.
pub mod local_users;
/// Prometheus metrics of the running bridge.
pub mod metrics;
/// The OAuth 2.1 protocol rules, free of HTTP.
pub mod oauth;
/// bcrypt: how client secrets and passwords are stored and checked.
pub mod password_hash;
/// Requests counted per source address and window.
mod rate_limit;
/// AES-256-GCM for the secrets kept in storage.
pub mod sealing;
/// Secret newtypes and constant-time comparison.
pub mod secret;
/// Storage trait and its backends.
pub mod storage;
/// For this crate's own tests: a PostgreSQL server to test against. Not in the shipped
/// library: only the crate's tests enable the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
/// Access tokens, signing keys, opaque codes and refresh-token families.
pub mod tokens;
/// The pages' look and words: brand, scope descriptions, languages.
pub mod ui;
/// The upstream OpenID Connect provider.
pub mod upstream;

/// An error with its causes, for logs: `a: b: c`. A cause an error already quotes at the end of
/// its own message (`#[error("…: {0}")]` with `#[from]`) is not repeated.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("disk full")]
    struct Disk;

    #[derive(Debug, thiserror::Error)]
    enum Quoting {
        #[error("cannot save: {0}")]
        Quotes(#[from] Disk),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot save")]
    struct Wrapping(#[source] Disk);

    #[test]
    fn a_chain_names_each_cause_once() {
        assert_eq!(
            super::error_chain(&Wrapping(Disk)),
            "cannot save: disk full"
        );
        assert_eq!(
            super::error_chain(&Quoting::from(Disk)),
            "cannot save: disk full"
        );
    }
}
