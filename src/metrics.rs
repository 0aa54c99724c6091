//! Prometheus metrics of one running bridge (`GET /metrics`, README "Metrics"). Every label takes
//! a value from a fixed set (grant types, error codes, outcomes, routes): never a client id of a
//! self-registered client, a subject or anything else a caller chooses, so a hostile client
//! cannot grow the set of series.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// `metrics`: whether `GET /metrics` is served, and where.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Off by default: the counts say how the service is used, which is the operator's to share.
    #[serde(default)]
    pub enabled: bool,
    /// A separate listener for `/metrics` alone (e.g. `127.0.0.1:9090`); without it, `/metrics`
    /// is served on `server.address`.
    #[serde(default)]
    pub address: Option<std::net::SocketAddr>,
}

impl MetricsConfig {
    /// Every problem of `metrics`, with its field path.
    pub(crate) fn validate(&self, server_address: &str, problems: &mut Vec<String>) {
        match self.address {
            Some(_) if !self.enabled => problems.push(
                "metrics.address: set while metrics.enabled is false; enable the metrics or remove it"
                    .to_owned(),
            ),
            Some(address) if address.to_string() == server_address => problems.push(format!(
                "metrics.address: {address} is server.address; leave it out to serve /metrics there"
            )),
            _ => {}
        }
    }
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The grant types of the token endpoint (`GrantType::as_str`) and what an unknown one counts as.
const GRANT_TYPES: [&str; 6] = [
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "urn:ietf:params:oauth:grant-type:token-exchange",
    "unknown",
];

/// The error codes `OAuthError::code` answers with.
const ERROR_CODES: [&str; 13] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "unsupported_response_type",
    "invalid_scope",
    "access_denied",
    "invalid_target",
    "invalid_redirect_uri",
    "invalid_client_metadata",
    "server_error",
    "temporarily_unavailable",
];

/// How a sign-in at a provider (or the local form) can end.
const SIGN_IN_OUTCOMES: [&str; 4] = ["success", "denied", "failed", "invalid_response"];

/// One label, both halves from a fixed set.
type Label = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// One gauge's value, read at a scrape; readings of one name with different labels are one
/// metric family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaugeReading {
    pub name: &'static str,
    pub help: &'static str,
    /// A label from a bounded set (the configured providers), if the gauge has one.
    pub label: Option<(&'static str, &'static str)>,
    pub value: i64,
}

impl GaugeReading {
    pub fn new(name: &'static str, help: &'static str, value: i64) -> Self {
        GaugeReading {
            name,
            help,
            label: None,
            value,
        }
    }
}

/// Something whose current value is read at each scrape (pending authorizations, the pool).
pub trait Gauges: Send + Sync + 'static {
    /// Each gauge, read now.
    fn read(&self) -> Vec<GaugeReading>;
}

pub struct Metrics {
    registry: Registry,
    /// Read at each scrape; added to after start (`watch`).
    gauges: Arc<std::sync::Mutex<Vec<Arc<dyn Gauges>>>>,
    upstream_latency: Family<Labels2, Histogram>,
    storage_latency: Family<Label, Histogram>,
    storage_errors: Family<Label, Counter>,
    upstream_failures: Family<Labels2, Counter>,
    tokens_issued: Family<Label, Counter>,
    token_errors: Family<Label, Counter>,
    refresh_reuse: Counter,
    revocations: Counter,
    sign_ins: Family<Labels2, Counter>,
    consent_decisions: Family<Label, Counter>,
    registrations: Family<Labels2, Counter>,
    rate_limited: Family<Label, Counter>,
    proxy_requests: Family<Label, Counter>,
    proxy_latency: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcp_oauth_bridge");
        let gauges: Arc<std::sync::Mutex<Vec<Arc<dyn Gauges>>>> = Arc::default();
        registry.register_collector(Box::new(GaugeCollector(Arc::clone(&gauges))));
        let metrics = Metrics {
            registry: Registry::default(),
            gauges,
            // 5 ms to about 20 s.
            upstream_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 13))
            }),
            upstream_failures: Family::default(),
            // 50 µs to about 9 s (past the pool's connect timeout).
            storage_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.00005, 3.0, 12))
            }),
            storage_errors: Family::default(),
            tokens_issued: Family::default(),
            token_errors: Family::default(),
            refresh_reuse: Counter::default(),
            revocations: Counter::default(),
            sign_ins: Family::default(),
            consent_decisions: Family::default(),
            registrations: Family::default(),
            rate_limited: Family::default(),
            proxy_requests: Family::default(),
            // 100 µs to about 105 s (past any proxy.timeout worth having).
            proxy_latency: Histogram::new(exponential_buckets(0.0001, 4.0, 11)),
        };
        registry.register(
            "build",
            "the running version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "tokens_issued",
            "tokens issued at the token endpoint, by grant type",
            metrics.tokens_issued.clone(),
        );
        registry.register(
            "token_errors",
            "token endpoint errors, by OAuth error code",
            metrics.token_errors.clone(),
        );
        registry.register(
            "refresh_reuse_detections",
            "refresh tokens presented again after rotation; each revokes its family",
            metrics.refresh_reuse.clone(),
        );
        registry.register(
            "revocations",
            "revocation requests for a token the bridge recognised (an access token only while live)",
            metrics.revocations.clone(),
        );
        registry.register(
            "upstream_request_duration_seconds",
            "calls to the identity provider, by endpoint and provider",
            metrics.upstream_latency.clone(),
        );
        registry.register(
            "upstream_failures",
            "calls to the identity provider that failed, by endpoint and provider",
            metrics.upstream_failures.clone(),
        );
        registry.register(
            "storage_operation_duration_seconds",
            "storage operations, by operation",
            metrics.storage_latency.clone(),
        );
        registry.register(
            "storage_errors",
            "storage operations that failed, by operation",
            metrics.storage_errors.clone(),
        );
        registry.register(
            "sign_ins",
            "sign-ins that ended, and attempts at the local form refused, by outcome and provider",
            metrics.sign_ins.clone(),
        );
        registry.register(
            "consent_decisions",
            "answers on the consent page",
            metrics.consent_decisions.clone(),
        );
        registry.register(
            "registrations",
            "dynamic client registrations and metadata-document fetches, by outcome",
            metrics.registrations.clone(),
        );
        registry.register(
            "rate_limited",
            "requests refused with 429, by route",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "proxy_requests",
            "requests through the proxy, by status class",
            metrics.proxy_requests.clone(),
        );
        registry.register(
            "proxy_request_duration_seconds",
            "time from a proxied request to the MCP server's answer headers (or the proxy's refusal)",
            metrics.proxy_latency.clone(),
        );
        // Every series exists from the start, at 0: an alert on `increase(...)` then sees the
        // first event, and a ratio has a denominator before anything went wrong.
        for grant_type in GRANT_TYPES {
            metrics
                .tokens_issued
                .get_or_create_owned(&[("grant_type", grant_type)]);
        }
        for error in ERROR_CODES {
            metrics
                .token_errors
                .get_or_create_owned(&[("error", error)]);
        }
        for outcome in SIGN_IN_OUTCOMES {
            metrics
                .sign_ins
                .get_or_create_owned(&[("outcome", outcome), ("provider", "local")]);
        }
        for outcome in ["wrong_credentials", "throttled"] {
            metrics
                .sign_ins
                .get_or_create_owned(&[("outcome", outcome), ("provider", "local")]);
        }
        for decision in ["allow", "deny"] {
            metrics
                .consent_decisions
                .get_or_create_owned(&[("decision", decision)]);
        }
        for (kind, outcome) in [
            ("dcr", "created"),
            ("dcr", "full"),
            ("dcr", "invalid_client_metadata"),
            ("dcr", "invalid_redirect_uri"),
            ("dcr", "invalid_request"),
            ("metadata_document", "fetched"),
            ("metadata_document", "invalid"),
            ("metadata_document", "unreachable"),
            ("metadata_document", "busy"),
        ] {
            metrics
                .registrations
                .get_or_create_owned(&[("kind", kind), ("outcome", outcome)]);
        }
        for route in [
            "authorize",
            "register",
            "metadata_document_fetch",
            "login",
            "admin",
        ] {
            metrics
                .rate_limited
                .get_or_create_owned(&[("route", route)]);
        }
        for status in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            metrics
                .proxy_requests
                .get_or_create_owned(&[("status", status)]);
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Series for each storage operation, at 0 until used.
    pub(crate) fn prepare_storage(&self, operations: &[&'static str]) {
        for operation in operations {
            let label = [("operation", *operation)];
            self.storage_latency.get_or_create_owned(&label);
            self.storage_errors.get_or_create_owned(&label);
        }
    }

    /// Shows a provider's series from the start, at zero, as every series with a fixed label is.
    pub(crate) fn prepare_provider(&self, provider: &'static str) {
        for endpoint in ["discovery", "token", "refresh", "userinfo"] {
            let label = [("endpoint", endpoint), ("provider", provider)];
            self.upstream_latency.get_or_create_owned(&label);
            self.upstream_failures.get_or_create_owned(&label);
        }
        for outcome in SIGN_IN_OUTCOMES {
            self.sign_ins
                .get_or_create_owned(&[("outcome", outcome), ("provider", provider)]);
        }
    }

    /// Adds gauges read at each scrape.
    pub fn watch(&self, gauges: Arc<dyn Gauges>) {
        if let Ok(mut watched) = self.gauges.lock() {
            watched.push(gauges);
        }
    }

    /// One call to the identity provider named `provider`: `endpoint` is `discovery`, `token`,
    /// `refresh` or `userinfo`.
    pub(crate) fn upstream_call(
        &self,
        provider: &'static str,
        endpoint: &'static str,
        took: Duration,
        succeeded: bool,
    ) {
        let label = [("endpoint", endpoint), ("provider", provider)];
        self.upstream_latency
            .get_or_create_owned(&label)
            .observe(took.as_secs_f64());
        if !succeeded {
            self.upstream_failures.get_or_create_owned(&label).inc();
        }
    }

    /// The OpenMetrics text format; `None` if it could not be written.
    pub fn render(&self) -> Option<String> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).ok()?;
        Some(text)
    }

    /// One storage operation (the `Storage` method's name).
    pub(crate) fn storage_call(&self, operation: &'static str, took: Duration, failed: bool) {
        let label = [("operation", operation)];
        self.storage_latency
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if failed {
            self.storage_errors.get_or_create(&label).inc();
        }
    }

    pub(crate) fn token_issued(&self, grant_type: &'static str) {
        self.tokens_issued
            .get_or_create(&[("grant_type", grant_type)])
            .inc();
    }

    pub(crate) fn token_error(&self, error: &'static str) {
        self.token_errors.get_or_create(&[("error", error)]).inc();
    }

    pub(crate) fn refresh_reuse_detected(&self) {
        self.refresh_reuse.inc();
    }

    pub(crate) fn revoked(&self) {
        self.revocations.inc();
    }

    /// `outcome`: `success`, `denied` (by the user, the provider or the access policy),
    /// `invalid_response` (an ID token or UserInfo answer that did not verify), `failed`, and for
    /// attempts at the local form `wrong_credentials` and `throttled`; `provider`: the
    /// provider's name (`upstream` for the single `oauth.upstream`) or `local`.
    pub(crate) fn sign_in(&self, outcome: &'static str, provider: &'static str) {
        self.sign_ins
            .get_or_create(&[("outcome", outcome), ("provider", provider)])
            .inc();
    }

    pub(crate) fn consent(&self, decision: &'static str) {
        self.consent_decisions
            .get_or_create(&[("decision", decision)])
            .inc();
    }

    /// `kind`: `dcr` (`outcome`: `created`, `full` or the refusal's error code) or
    /// `metadata_document` (`fetched`, `invalid`, `unreachable`, `busy`).
    pub(crate) fn registration(&self, kind: &'static str, outcome: &'static str) {
        self.registrations
            .get_or_create(&[("kind", kind), ("outcome", outcome)])
            .inc();
    }

    pub(crate) fn rate_limited(&self, route: &'static str) {
        self.rate_limited.get_or_create(&[("route", route)]).inc();
    }

    pub(crate) fn proxied(&self, status: u16, took: Duration) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.proxy_requests
            .get_or_create(&[("status", class)])
            .inc();
        self.proxy_latency.observe(took.as_secs_f64());
    }
}

struct GaugeCollector(Arc<std::sync::Mutex<Vec<Arc<dyn Gauges>>>>);

impl std::fmt::Debug for GaugeCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("GaugeCollector")
    }
}

impl Collector for GaugeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let watched: Vec<Arc<dyn Gauges>> = match self.0.lock() {
            Ok(watched) => watched.clone(),
            Err(_) => return Ok(()),
        };
        let mut readings: Vec<GaugeReading> =
            watched.iter().flat_map(|gauges| gauges.read()).collect();
        // A family is described once, with each of its label sets under it.
        readings.sort_by_key(|reading| reading.name);
        for family in readings.chunk_by(|a, b| a.name == b.name) {
            let Some(first) = family.first() else {
                continue;
            };
            let mut metric =
                encoder.encode_descriptor(first.name, first.help, None, MetricType::Gauge)?;
            match first.label {
                // Written `name 2`: a gauge without labels has one reading.
                None => {
                    debug_assert_eq!(family.len(), 1, "{} is read twice", first.name);
                    ConstGauge::new(first.value).encode(metric)?;
                }
                Some(_) => {
                    for reading in family {
                        let labels: Vec<(&str, &str)> = reading.label.into_iter().collect();
                        ConstGauge::new(reading.value).encode(metric.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Two;

    impl Gauges for Two {
        fn read(&self) -> Vec<GaugeReading> {
            vec![GaugeReading::new("pending_authorizations", "in flight", 2)]
        }
    }

    #[test]
    fn a_metrics_address_needs_the_metrics_on_and_its_own_port() {
        let problems = |enabled: bool, address: &str| {
            let config = MetricsConfig {
                enabled,
                address: Some(address.parse().unwrap()),
            };
            let mut problems = Vec::new();
            config.validate("127.0.0.1:8080", &mut problems);
            problems
        };
        assert_eq!(problems(true, "127.0.0.1:9090"), Vec::<String>::new());
        assert_eq!(
            problems(false, "127.0.0.1:9090"),
            [
                "metrics.address: set while metrics.enabled is false; enable the metrics or remove it"
            ]
        );
        assert_eq!(
            problems(true, "127.0.0.1:8080"),
            [
                "metrics.address: 127.0.0.1:8080 is server.address; leave it out to serve /metrics there"
            ]
        );
    }

    #[test]
    fn counters_and_gauges_render_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.watch(Arc::new(Two));
        metrics.upstream_call("corp", "token", Duration::from_millis(20), false);
        // Two sources of one family: described once, each sample under it.
        metrics.watch(Arc::new(Discovered(&[("partner", 0)])));
        metrics.watch(Arc::new(Discovered(&[("corp", 1)])));
        metrics.token_issued("refresh_token");
        metrics.token_issued("refresh_token");
        metrics.token_error("invalid_grant");
        metrics.proxied(200, Duration::from_millis(3));
        let text = metrics.render().unwrap();
        for line in [
            "mcp_oauth_bridge_tokens_issued_total{grant_type=\"refresh_token\"} 2",
            "mcp_oauth_bridge_token_errors_total{error=\"invalid_grant\"} 1",
            "mcp_oauth_bridge_proxy_requests_total{status=\"2xx\"} 1",
            "mcp_oauth_bridge_proxy_request_duration_seconds_count 1",
            "mcp_oauth_bridge_pending_authorizations 2",
            "mcp_oauth_bridge_upstream_failures_total{endpoint=\"token\",provider=\"corp\"} 1",
            "mcp_oauth_bridge_upstream_request_duration_seconds_count{endpoint=\"token\",provider=\"corp\"} 1",
            "mcp_oauth_bridge_upstream_discovered{provider=\"corp\"} 1",
            "mcp_oauth_bridge_upstream_discovered{provider=\"partner\"} 0",
            "mcp_oauth_bridge_build_info{version=\"",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert_eq!(
            text.matches("# HELP mcp_oauth_bridge_upstream_discovered ")
                .count(),
            1,
            "one family, a sample per provider:\n{text}"
        );
    }

    struct Discovered(&'static [(&'static str, i64)]);

    impl Gauges for Discovered {
        fn read(&self) -> Vec<GaugeReading> {
            self.0
                .iter()
                .map(|(provider, value)| GaugeReading {
                    name: "upstream_discovered",
                    help: "discovered",
                    label: Some(("provider", provider)),
                    value: *value,
                })
                .collect()
        }
    }
}
