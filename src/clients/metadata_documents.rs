//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25):
//! a client whose `client_id` is an https URL is described by the JSON document at that URL.
//! The fetch is an SSRF risk, so it is bounded: https only, no redirects, a timeout, a size
//! limit, and no private, loopback or link-local addresses unless the host is allow-listed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use url::{Host, Url};

use super::client::Client;
use crate::bounded_read::{BodyError, read_at_most};
use crate::clock::UnixTime;
use crate::duration::{ConfigDuration, whole_seconds};
use crate::oauth::client_assertion::PRIVATE_KEY_JWT;
use crate::oauth::redirect_policy::RedirectPolicy;
use crate::oauth::registration::{RegistrationRequest, validate_registration};
use crate::rate_limit::RateLimitConfig;
use crate::tokens::keys::SigningAlgorithm;

/// Documents cached at most; past it the cache starts over.
const MAX_CACHED: usize = 10_000;
/// Without caching headers a document is kept this long (within the configured bounds).
const DEFAULT_CACHE: Duration = Duration::from_secs(3600);

/// `oauth.cimd`: Client ID Metadata Documents. Their redirect URIs obey `oauth.dcr`'s patterns
/// and profiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CimdConfig {
    pub enabled: bool,
    /// Hosts that may resolve to private, loopback or link-local addresses.
    pub allowed_hosts: Vec<String>,
    pub timeout: ConfigDuration,
    pub max_document_bytes: usize,
    pub min_cache: ConfigDuration,
    pub max_cache: ConfigDuration,
    /// PEM files of extra certificate authorities to trust for the fetch.
    pub extra_root_certificates: Vec<PathBuf>,
    /// Documents not yet cached that one client address may have fetched per window.
    pub fetch_rate_limit: RateLimitConfig,
}

impl Default for CimdConfig {
    fn default() -> Self {
        CimdConfig {
            enabled: false,
            allowed_hosts: Vec::new(),
            timeout: ConfigDuration(Duration::from_secs(5)),
            max_document_bytes: 16 * 1024,
            min_cache: ConfigDuration(Duration::from_secs(300)),
            max_cache: ConfigDuration(Duration::from_secs(86400)),
            extra_root_certificates: Vec::new(),
            fetch_rate_limit: RateLimitConfig::default(),
        }
    }
}

impl CimdConfig {
    /// Problems of `oauth.cimd`, with their field paths.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        for (name, value) in [("min_cache", self.min_cache), ("max_cache", self.max_cache)] {
            problems.extend(whole_seconds(&format!("oauth.cimd.{name}"), value, 1));
        }
        if !self.enabled {
            return;
        }
        if self.min_cache.0 > self.max_cache.0 {
            problems.push("oauth.cimd.min_cache: must not exceed max_cache".to_owned());
        }
        if self.timeout.0.is_zero() || self.max_document_bytes == 0 {
            problems
                .push("oauth.cimd: timeout and max_document_bytes must be above zero".to_owned());
        }
        for (i, path) in self.extra_root_certificates.iter().enumerate() {
            if !path.is_file() {
                problems.push(format!(
                    "oauth.cimd.extra_root_certificates[{i}]: {} is not a readable file",
                    path.display()
                ));
            }
        }
        self.fetch_rate_limit
            .validate("oauth.cimd.fetch_rate_limit", problems);
    }
}

/// An extra certificate authority that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertificateError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a PEM certificate")]
    NotPem {
        path: PathBuf,
        source: reqwest::Error,
    },
}

#[derive(Debug, Clone)]
pub struct CimdSettings {
    /// Hosts that may resolve to private or loopback addresses (an internal client's host).
    pub allowed_hosts: Vec<String>,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub min_cache: Duration,
    pub max_cache: Duration,
    /// Extra trust anchors for the fetch (PEM), e.g. an internal CA.
    pub root_certificates: Vec<reqwest::Certificate>,
    pub redirects: RedirectPolicy,
    pub scopes_supported: Vec<String>,
    /// What a document's `id_token_signed_response_alg` may name.
    pub id_token_algorithms: Vec<SigningAlgorithm>,
}

/// The fields of a metadata document we act on.
#[derive(Debug, Deserialize)]
struct Document {
    client_id: String,
    client_name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    token_endpoint_auth_method: Option<String>,
    grant_types: Option<Vec<String>>,
    response_types: Option<Vec<String>>,
    scope: Option<String>,
    id_token_signed_response_alg: Option<String>,
    jwks: Option<serde_json::Value>,
    jwks_uri: Option<String>,
}

/// Fetches under way at most: anyone can make the bridge fetch, so it must not fan out.
const MAX_CONCURRENT_FETCHES: usize = 16;
/// How long a document that could not be used stays refused without a new fetch.
const FAILURE_CACHE: Duration = Duration::from_secs(60);

/// Why a metadata document gives no client. A fetch failure says something about the network
/// behind the bridge (does this name resolve inside, is that port open, what does that host
/// answer), so its reason goes to the log only and the browser sees one message for all; a
/// document that arrived but is unusable was written by whoever named it, who may read why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("the client's metadata document could not be fetched")]
    Unreachable { reason: String },
    #[error("the client's metadata document cannot be used: {0}")]
    Invalid(String),
    #[error("too many client metadata documents are being fetched; try again shortly")]
    Busy,
}

impl DocumentError {
    /// The reason, for the log.
    pub(crate) fn detail(&self) -> &str {
        match self {
            DocumentError::Unreachable { reason } | DocumentError::Invalid(reason) => reason,
            DocumentError::Busy => "fetch slots full",
        }
    }
}

fn unreachable(reason: impl Into<String>) -> DocumentError {
    DocumentError::Unreachable {
        reason: reason.into(),
    }
}

type Cached = (Result<Arc<Client>, DocumentError>, UnixTime);

pub struct MetadataDocuments {
    settings: CimdSettings,
    cache: Mutex<HashMap<String, Cached>>,
    fetches: tokio::sync::Semaphore,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Whether a `client_id` names a metadata document rather than a registered client.
pub(crate) fn is_metadata_url(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// Public unicast addresses only: what an internet-facing document may be served from.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Addresses that embed an IPv4 one are judged by it: mapped, compatible, NAT64, 6to4.
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            if s[..6] == [0, 0, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x64 && s[1] == 0xff9b {
                return is_public(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_public(IpAddr::V4(embedded(s[1], s[2])));
            }
            // Global unicast only (2000::/3), less Teredo and documentation.
            (s[0] & 0xe000) == 0x2000
                && !(s[0] == 0x2001 && s[1] == 0)
                && !(s[0] == 0x2001 && s[1] == 0xdb8)
        }
    }
}

/// Host names compared as DNS does: case-insensitive, without a trailing dot or IPv6 brackets.
pub(crate) fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `max-age` from Cache-Control, bounded; `no-store`/`no-cache` count as zero, so the minimum
/// applies (the bridge cannot re-fetch on every request without becoming an amplifier).
fn cache_lifetime(header: Option<&str>, min: Duration, max: Duration) -> Duration {
    let Some(header) = header else {
        return DEFAULT_CACHE.clamp(min, max);
    };
    let mut lifetime = DEFAULT_CACHE;
    for directive in header.split(',').map(str::trim) {
        if directive.eq_ignore_ascii_case("no-store") || directive.eq_ignore_ascii_case("no-cache")
        {
            lifetime = Duration::ZERO;
        } else if let Some((name, value)) = directive.split_once('=')
            && name.trim().eq_ignore_ascii_case("max-age")
            && let Ok(seconds) = value.trim().parse()
        {
            lifetime = Duration::from_secs(seconds);
        }
    }
    lifetime.clamp(min, max)
}

impl CimdSettings {
    /// The running settings of `config`: its certificate authorities loaded, with the redirect
    /// policy registrations share and the scopes the bridge supports.
    pub(crate) fn configured(
        config: &CimdConfig,
        redirects: RedirectPolicy,
        scopes_supported: Vec<String>,
        id_token_algorithms: Vec<SigningAlgorithm>,
    ) -> Result<CimdSettings, CertificateError> {
        let mut root_certificates = Vec::new();
        for path in &config.extra_root_certificates {
            let pem = std::fs::read(path).map_err(|source| CertificateError::Read {
                path: path.clone(),
                source,
            })?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|source| {
                CertificateError::NotPem {
                    path: path.clone(),
                    source,
                }
            })?;
            root_certificates.push(certificate);
        }
        Ok(CimdSettings {
            allowed_hosts: config.allowed_hosts.clone(),
            timeout: config.timeout.0,
            max_bytes: config.max_document_bytes,
            min_cache: config.min_cache.0,
            max_cache: config.max_cache.0,
            root_certificates,
            redirects,
            scopes_supported,
            id_token_algorithms,
        })
    }
}

impl MetadataDocuments {
    pub fn new(settings: CimdSettings) -> Self {
        MetadataDocuments {
            settings,
            cache: Mutex::new(HashMap::new()),
            fetches: tokio::sync::Semaphore::new(MAX_CONCURRENT_FETCHES),
            metrics: None,
        }
    }

    /// Counts each fetch's outcome in `metrics`.
    pub(crate) fn observed(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether `client_id` would be fetched now (not cached, or cached and stale).
    pub(crate) fn needs_fetch(&self, client_id: &str, now: UnixTime) -> bool {
        self.cache.lock().map_or(true, |cache| {
            cache.get(client_id).is_none_or(|(_, until)| *until <= now)
        })
    }

    /// The client described by the document at `client_id`; the error says why it is unusable.
    pub async fn client(
        &self,
        client_id: &str,
        now: UnixTime,
    ) -> Result<Arc<Client>, DocumentError> {
        if let Ok(cache) = self.cache.lock()
            && let Some((cached, until)) = cache.get(client_id)
            && *until > now
        {
            return cached.clone();
        }
        let Ok(_permit) = self.fetches.try_acquire() else {
            if let Some(metrics) = &self.metrics {
                metrics.registration("metadata_document", "busy");
            }
            return Err(DocumentError::Busy);
        };
        // One bound for the whole fetch: DNS, connection, TLS and body together.
        let fetched = match tokio::time::timeout(self.settings.timeout, self.fetch(client_id)).await
        {
            Ok(fetched) => fetched,
            Err(_) => Err(unreachable("fetching the metadata document timed out")),
        };
        if let Some(metrics) = &self.metrics {
            let outcome = match &fetched {
                Ok(_) => "fetched",
                Err(DocumentError::Invalid(_)) => "invalid",
                Err(DocumentError::Unreachable { .. }) => "unreachable",
                Err(DocumentError::Busy) => "busy", // not from a fetch, counted above
            };
            metrics.registration("metadata_document", outcome);
        }
        let (result, lifetime) = match fetched {
            Ok((client, lifetime)) => (Ok(Arc::new(client)), lifetime),
            Err(reason) => (Err(reason), FAILURE_CACHE),
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(client_id.to_owned(), (result.clone(), now.plus(lifetime)));
        }
        result
    }

    async fn fetch(&self, client_id: &str) -> Result<(Client, Duration), DocumentError> {
        let body = self.fetch_body(client_id).await?;
        let (document, lifetime) = body;
        let invalid = |reason: &str| DocumentError::Invalid(reason.to_owned());
        let document: Document = serde_json::from_slice(&document)
            .map_err(|_| invalid("the metadata document is not valid client metadata JSON"))?;
        if document.client_id != client_id {
            return Err(invalid(
                "the metadata document's client_id differs from its URL",
            ));
        }
        let method = match document.token_endpoint_auth_method.as_deref() {
            None | Some("none") => "none",
            Some(PRIVATE_KEY_JWT) => PRIVATE_KEY_JWT,
            Some(_) => {
                return Err(invalid(
                    "token_endpoint_auth_method must be none or private_key_jwt (a document cannot hold a secret)",
                ));
            }
        };
        let valid = validate_registration(
            RegistrationRequest {
                redirect_uris: document.redirect_uris,
                token_endpoint_auth_method: Some(method.to_owned()),
                grant_types: document.grant_types,
                response_types: document.response_types,
                client_name: document.client_name,
                scope: document.scope,
                application_type: None,
                id_token_signed_response_alg: document.id_token_signed_response_alg,
                jwks: document.jwks,
                jwks_uri: document.jwks_uri,
            },
            &self.settings.redirects,
            &self.settings.scopes_supported,
            &self.settings.id_token_algorithms,
        )
        .map_err(|error| invalid(error.description()))?;
        Ok((Client::from_metadata_document(client_id, valid), lifetime))
    }

    /// The document's bytes and how long to cache them, within every bound of the fetch.
    async fn fetch_body(&self, client_id: &str) -> Result<(Vec<u8>, Duration), DocumentError> {
        guarded_fetch(&self.settings, client_id, &METADATA_DOCUMENT).await
    }
}

/// What a guarded fetch is of, in its refusals: the URL's name and the document's.
pub(crate) struct FetchLabels {
    pub(crate) url: &'static str,
    pub(crate) document: &'static str,
}

const METADATA_DOCUMENT: FetchLabels = FetchLabels {
    url: "the client_id",
    document: "the metadata document",
};

/// GETs `url` with every guard a URL chosen by someone else needs (SSRF): https on the default
/// port unless the host is allow-listed, no private, loopback or link-local address unless
/// allow-listed, the address checked is the one connected to, no redirect, no proxy, a timeout
/// and a size bound. The body and how long it may be cached.
pub(crate) async fn guarded_fetch(
    settings: &CimdSettings,
    target: &str,
    labels: &FetchLabels,
) -> Result<(Vec<u8>, Duration), DocumentError> {
    let url = Url::parse(target)
        .map_err(|_| unreachable(format!("{u} is not a valid URL", u = labels.url)))?;
    if url.scheme() != "https"
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(unreachable(format!(
            "{} must be an https URL without fragment or credentials",
            labels.url
        )));
    }
    if url.path() == "/" {
        return Err(unreachable(format!(
            "{u} URL must have a path",
            u = labels.url
        )));
    }
    let host = url
        .host()
        .ok_or_else(|| unreachable(format!("{u} URL has no host", u = labels.url)))?;
    let host_name = normalize_host(url.host_str().unwrap_or_default());
    let port = url.port_or_known_default().unwrap_or(443);
    let allow_listed = settings
        .allowed_hosts
        .iter()
        .any(|h| normalize_host(h) == host_name);
    // Checked before any lookup: the bridge must not probe other ports for anyone.
    if !allow_listed && port != 443 {
        return Err(unreachable(format!(
            "{} URL must use the default https port",
            labels.url
        )));
    }
    let addresses: Vec<SocketAddr> = match host {
        Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Host::Domain(domain) => tokio::net::lookup_host((domain, port))
            .await
            .map_err(|_| unreachable(format!("{u} host does not resolve", u = labels.url)))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(unreachable(format!(
            "{u} host does not resolve",
            u = labels.url
        )));
    }
    if !allow_listed && addresses.iter().any(|a| !is_public(a.ip())) {
        return Err(unreachable(format!(
            "{} host resolves to a private, loopback or link-local address",
            labels.url
        )));
    }
    let mut builder = reqwest::Client::builder()
        // A proxy from the environment would resolve the host itself and bypass the check above.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout);
    if let Host::Domain(domain) = host {
        // Connect to the address just checked, so a second lookup cannot be steered elsewhere.
        builder = builder.resolve_to_addrs(domain, &addresses);
    }
    for certificate in &settings.root_certificates {
        builder = builder.add_root_certificate(certificate.clone());
    }
    let http = builder
        .build()
        .map_err(|_| unreachable(format!("cannot prepare the fetch of {}", labels.document)))?;
    let mut response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            unreachable(if e.is_timeout() {
                format!("fetching {} timed out", labels.document)
            } else {
                format!("{} could not be fetched", labels.document)
            })
        })?;
    if response.status().is_redirection() {
        return Err(unreachable(format!(
            "{} URL redirects; redirects are not followed",
            labels.document
        )));
    }
    if !response.status().is_success() {
        return Err(unreachable(format!(
            "fetching {} answered {}",
            labels.document,
            response.status().as_u16()
        )));
    }
    let max = settings.max_bytes;
    let lifetime = cache_lifetime(
        response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok()),
        settings.min_cache,
        settings.max_cache,
    );
    let body = read_at_most(&mut response, max)
        .await
        .map_err(|error| match error {
            BodyError::TooLarge => unreachable(format!(
                "{d} is larger than {max} bytes",
                d = labels.document
            )),
            BodyError::Read(_) => {
                unreachable(format!("{d} could not be read", d = labels.document))
            }
        })?;
    Ok((body, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_embed_or_reserve_are_not_public() {
        for private in [
            "::7f00:1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2001::1",
            "2001:db8::1",
            "fec0::1",
            "100::1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        assert!(
            is_public("64:ff9b::808:808".parse().unwrap()),
            "NAT64 of a public address"
        );
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("Internal.Corp."), "internal.corp");
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn cache_lifetime_follows_headers_within_bounds() {
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(86400));
        assert_eq!(
            cache_lifetime(Some("public, max-age=600"), min, max),
            Duration::from_secs(600)
        );
        assert_eq!(cache_lifetime(Some("max-age=5"), min, max), min);
        assert_eq!(
            cache_lifetime(Some("Max-Age=700"), min, max),
            Duration::from_secs(700)
        );
        assert_eq!(cache_lifetime(Some("max-age=9999999"), min, max), max);
        assert_eq!(cache_lifetime(Some("no-store"), min, max), min);
        assert_eq!(cache_lifetime(None, min, max), DEFAULT_CACHE);
    }
}
