//! The audit trail: security events as JSON lines on the tracing target `audit`, one stable event
//! name each (README, "Audit trail", documents the schema). An event says who did what to which
//! client or grant; it never carries a secret, a token, a code or a password, only the ids that
//! let an operator follow a grant (`jti`, `family_id`) and revoke it.
//!
//! `record` only emits a tracing event; where it goes is the subscriber's business: with the
//! service's log (`audit.output: log`, the default), or to its own stream or file through
//! `sink::AuditLayer`, which adds the time and the request's id and client address.

pub mod sink;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The tracing target of every audit event.
pub const TARGET: &str = "audit";

/// The span the HTTP layer opens around each request; its `request_id` and `client_address`
/// fields are copied into the audit events recorded inside it.
pub const REQUEST_SPAN: &str = "request";

/// `audit`: where the audit trail goes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default)]
    pub output: AuditOutput,
    /// The file the trail is appended to, with `output: file`.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutput {
    /// In the service's own log, as events of target `audit` (`RUST_LOG` decides only when it
    /// names `audit`).
    #[default]
    Log,
    Stdout,
    Stderr,
    /// Appended to `audit.file`.
    File,
    Off,
}

impl AuditConfig {
    /// Every problem of `audit`, with its field path.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        match (self.output, &self.file) {
            (AuditOutput::File, None) => {
                problems.push("audit.file: required with audit.output: file".to_owned());
            }
            (AuditOutput::File, Some(path)) if !path.is_absolute() => problems.push(format!(
                "audit.file: {} is not an absolute path",
                path.display()
            )),
            (AuditOutput::File, Some(_)) | (_, None) => {}
            (_, Some(_)) => problems.push(
                "audit.file: set while audit.output is not file; set audit.output: file or remove it"
                    .to_owned(),
            ),
        }
    }
}

/// How a family of refresh and access tokens came to an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// A retired refresh token was presented again (RFC 9700 §4.14.2).
    RefreshReuse,
    /// The authorization code that started the family was presented again (RFC 6749 §4.1.2).
    CodeReplay,
    /// The client asked for it (RFC 7009).
    ClientRequest,
    /// The provider no longer refreshes the user's session there (re-validation on refresh).
    UpstreamSessionEnded,
    /// Its client was deleted (RFC 7592, or by an administrator).
    ClientDeleted,
    /// An administrator revoked the grants of its user or client.
    Admin,
    /// The provider said the user's session there ended (OIDC Back-Channel Logout).
    BackchannelLogout,
    /// The provider the user signed in at is no longer configured.
    ProviderRemoved,
}

/// Why a registered client was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionReason {
    /// The client deleted its own registration (RFC 7592).
    ClientRequest,
    /// An administrator deleted it (`DELETE /admin/clients/…`).
    Admin,
}

/// One security event. The `event` name and the fields of each are the schema: names stay,
/// fields are only ever added.
#[derive(Debug, Serialize)]
#[serde(tag = "event")]
pub enum Event<'a> {
    /// A user proved who they are and the client got an authorization code.
    #[serde(rename = "sign_in.succeeded")]
    SignInSucceeded {
        /// `upstream` (the OpenID Connect provider) or `local` (the built-in users).
        provider: &'a str,
        subject: &'a str,
        client_id: &'a str,
        scope: &'a [String],
        /// The resource (RFC 8707) the grant is for.
        audience: &'a str,
    },
    /// A sign-in that did not end in a code for the client.
    #[serde(rename = "sign_in.failed")]
    SignInFailed {
        provider: &'a str,
        /// `denied` (the user, the provider or the access policy said no), `failed` (an error
        /// of ours or the provider's), `invalid_response` (the provider's answer did not
        /// verify), `wrong_credentials`, `throttled`.
        reason: &'a str,
        /// When it was known: the sign-in had got as far as a verified identity, or the wrong
        /// password was for a user that exists.
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        /// The OAuth error the client was sent back with, if it was.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    },
    /// An approval on the consent page, recorded once the user who gave it signed in.
    #[serde(rename = "consent.granted")]
    ConsentGranted {
        subject: &'a str,
        client_id: &'a str,
        redirect_uri: &'a str,
        scope: &'a [String],
        audience: &'a str,
    },
    /// Deny on the consent page (before the user signs in, so with no subject).
    #[serde(rename = "consent.denied")]
    ConsentDenied {
        client_id: &'a str,
        redirect_uri: &'a str,
        scope: &'a [String],
        audience: &'a str,
    },
    /// An access token (and with it, maybe, a refresh token) left the token endpoint.
    #[serde(rename = "token.issued")]
    TokenIssued {
        grant_type: &'a str,
        client_id: &'a str,
        subject: &'a str,
        jti: &'a str,
        scope: &'a [String],
        audience: &'a str,
        expires_at: i64,
        /// The refresh-token family (grant) the token belongs to, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        family_id: Option<&'a str>,
        /// For a token exchange: the client that acts for the subject (RFC 8693 `act`).
        #[serde(skip_serializing_if = "Option::is_none")]
        actor: Option<&'a str>,
    },
    /// A token exchange handed the identity provider's access token for a user to an MCP server
    /// (`audience=upstream`, RFC 8693).
    #[serde(rename = "upstream_token.released")]
    UpstreamTokenReleased {
        /// The exchanging client (the actor).
        client_id: &'a str,
        subject: &'a str,
        provider: &'a str,
        family_id: &'a str,
        /// The provider's scope of the token, when it said.
        #[serde(skip_serializing_if = "Option::is_none")]
        scope: Option<&'a str>,
        expires_at: i64,
        /// Whether the kept token had expired and was renewed at the provider first.
        refreshed: bool,
    },
    /// A retired refresh token was presented: its family is revoked with every access token.
    #[serde(rename = "refresh.reuse_detected")]
    RefreshReuseDetected {
        client_id: &'a str,
        subject: &'a str,
        family_id: &'a str,
    },
    /// A grant (refresh-token family) and every access token it issued were revoked.
    #[serde(rename = "grant.revoked")]
    GrantRevoked {
        reason: RevocationReason,
        family_id: &'a str,
        client_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<&'a str>,
        /// The identity provider whose answer (or absence) ended it: with re-validation, and
        /// when the provider was removed.
        #[serde(skip_serializing_if = "Option::is_none")]
        provider: Option<&'a str>,
    },
    /// One access token revoked on its own (RFC 7009 with an access token).
    #[serde(rename = "token.revoked")]
    AccessTokenRevoked {
        client_id: &'a str,
        subject: &'a str,
        jti: &'a str,
    },
    /// A client registered itself (RFC 7591).
    #[serde(rename = "client.registered")]
    ClientRegistered {
        client_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_name: Option<&'a str>,
        redirect_uris: &'a [String],
        grant_types: &'a [String],
        token_endpoint_auth_method: &'a str,
    },
    /// A registered client was deleted; its grants were revoked with it.
    #[serde(rename = "client.deleted")]
    ClientDeleted {
        client_id: &'a str,
        reason: DeletionReason,
    },
    /// The sweep deleted registered clients unused for too long (which can no longer use the
    /// grants they hold: they authenticate nowhere).
    #[serde(rename = "clients.expired")]
    ClientsExpired { count: usize },
    /// The identity provider ended a user's session there and sent a logout token: every grant
    /// of that session was revoked (`grant.revoked` for each).
    #[serde(rename = "logout.backchannel")]
    BackchannelLogout {
        provider: &'a str,
        /// The provider's `sub` and `sid`, as the logout token named them.
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
        /// Grants that gave access until then.
        count: usize,
    },
    /// A request to the administration API, allowed.
    #[serde(rename = "admin.action")]
    AdminAction {
        /// The first eight hex digits of the SHA-256 of the administrator's token.
        admin: &'a str,
        /// `clients.list`, `clients.delete`, `grants.list`, `grants.revoke`.
        action: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        /// Clients listed, clients deleted (0 or 1), grants listed, live grants revoked.
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<usize>,
    },
    /// A request to the administration API without a valid token.
    #[serde(rename = "admin.refused")]
    AdminRefused {
        /// `missing` (no bearer token) or `invalid`.
        reason: &'a str,
        method: &'a str,
        /// The request's path (never its query).
        path: &'a str,
    },
}

/// Emits `event` on the `audit` target, serialised once, only when something listens.
pub fn record(event: &Event<'_>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    match serde_json::to_string(event) {
        Ok(json) => tracing::info!(target: TARGET, "{json}"),
        // Not reachable with these types (strings, numbers, lists); said rather than dropped.
        Err(error) => tracing::error!(%error, "an audit event could not be written"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_its_name_then_its_fields_and_absent_options_are_left_out() {
        let scope = vec!["openid".to_owned(), "mcp:read".to_owned()];
        let json = serde_json::to_value(Event::TokenIssued {
            grant_type: "authorization_code",
            client_id: "cli",
            subject: "u-1",
            jti: "j-1",
            scope: &scope,
            audience: "https://mcp.example.com/mcp",
            expires_at: 1_700_003_600,
            family_id: None,
            actor: None,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "event": "token.issued", "grant_type": "authorization_code", "client_id": "cli",
                "subject": "u-1", "jti": "j-1", "scope": ["openid", "mcp:read"],
                "audience": "https://mcp.example.com/mcp", "expires_at": 1_700_003_600_i64,
            })
        );
        let json = serde_json::to_value(Event::GrantRevoked {
            reason: RevocationReason::RefreshReuse,
            family_id: "f",
            client_id: "c",
            subject: None,
            provider: None,
        })
        .unwrap();
        assert_eq!(json["event"], "grant.revoked");
        assert_eq!(json["reason"], "refresh_reuse");
        assert!(json.get("subject").is_none());
        let json = serde_json::to_value(Event::UpstreamTokenReleased {
            client_id: "reports-mcp",
            subject: "u-1",
            provider: "upstream",
            family_id: "f",
            scope: None,
            expires_at: 1_700_000_300,
            refreshed: true,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "event": "upstream_token.released", "client_id": "reports-mcp", "subject": "u-1",
                "provider": "upstream", "family_id": "f", "expires_at": 1_700_000_300_i64,
                "refreshed": true,
            })
        );
    }

    #[test]
    fn a_file_output_needs_an_absolute_file_and_a_file_needs_that_output() {
        let problems = |output, file: Option<&str>| {
            let mut problems = Vec::new();
            AuditConfig {
                output,
                file: file.map(PathBuf::from),
            }
            .validate(&mut problems);
            problems
        };
        assert!(problems(AuditOutput::File, None)[0].starts_with("audit.file: required"));
        assert!(problems(AuditOutput::File, Some("audit.log"))[0].contains("not an absolute"));
        assert!(problems(AuditOutput::Stdout, Some("/var/log/a"))[0].contains("not file"));
        assert!(problems(AuditOutput::File, Some("/var/log/audit.jsonl")).is_empty());
        assert!(problems(AuditOutput::Log, None).is_empty());
    }
}
