//! Integration tests: the real server over loopback HTTP against a real (test) OIDC provider.

// Helpers outside #[test] functions fail the test by panicking, which is what a test helper is for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin;
mod audit;
mod backchannel_logout;
mod browser;
mod cli;
mod client_address;
mod connections;
mod consent;
mod deploy;
mod discovery;
mod document_server;
mod flow;
mod helpers;
mod id_tokens;
mod identity_assertion;
mod lifecycle;
mod limits;
mod local_login;
mod log_hygiene;
mod malformed;
mod mcp_upstream;
mod metadata_documents;
mod metrics;
mod oidc_provider;
mod pages;
mod postgres;
mod private_key_jwt;
mod providers;
mod proxy;
mod proxy_tool_scopes;
mod registration;
mod revalidation;
mod token_endpoint;
mod token_exchange;
