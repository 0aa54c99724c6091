//! The headers that cross the proxy. The MCP server trusts what the proxy says about the caller
//! and the connection, so nothing the client sends may look like it to any server: CGI, WSGI and
//! PHP read `X_Forwarded_User` and `X-Forwarded-User` as one variable and merge them, and
//! lighttpd's CGI turns every other punctuation character into `_` as well. So names are compared
//! with every character but a letter or a digit read as `-`, and names with anything but letters,
//! digits and `-` are dropped altogether (`_` only unless the operator allows it, as nginx's
//! `underscores_in_headers off` does).

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use super::Proxy;

/// RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a client may never send the MCP server, in any spelling: its credentials, our host,
/// every way of naming the client's address or the original URL, and the request id (ours goes).
const NEVER_FROM_CLIENT: [&str; 11] = [
    "authorization",
    "host",
    "forwarded",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "x-request-id",
    "x-envoy-external-address",
];

/// Any header the proxy itself sets on the way to the server starts with this or is listed.
const FORWARDING_PREFIX: &str = "x-forwarded-";

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A header name as a CGI-style server reads it: lowercase, every punctuation character alike.
fn canonical_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Which incoming headers never reach the MCP server.
pub(crate) struct HeaderPolicy {
    /// Canonical names of the headers the proxy sets (identity, identity JWT) and those listed
    /// in `NEVER_FROM_CLIENT`.
    reserved: Vec<String>,
    allow_underscores: bool,
}

impl HeaderPolicy {
    pub(crate) fn new<'a>(
        set_by_proxy: impl IntoIterator<Item = &'a HeaderName>,
        allow_underscores: bool,
    ) -> Self {
        // What the proxy strips by name (hop by hop, the framing it sets itself) is reserved in
        // every spelling too.
        let mut reserved: Vec<String> = NEVER_FROM_CLIENT
            .iter()
            .chain(HOP_BY_HOP.iter())
            .chain(["content-length", "cookie"].iter())
            .map(|name| canonical_name(name))
            .collect();
        reserved.extend(
            set_by_proxy
                .into_iter()
                .map(|name| canonical_name(name.as_str())),
        );
        HeaderPolicy {
            reserved,
            allow_underscores,
        }
    }

    /// Whether the client's header `name` stays behind. The exact names the proxy handles itself
    /// (`cookie`, `content-length`) are not refused here but replaced by what it computes.
    fn refuses(&self, name: &str) -> bool {
        let odd = name.bytes().any(|b| {
            !(b.is_ascii_alphanumeric() || b == b'-' || (b == b'_' && self.allow_underscores))
        });
        if odd {
            return true;
        }
        if matches!(name, "cookie" | "content-length") {
            return false;
        }
        let canonical = canonical_name(name);
        canonical.starts_with(FORWARDING_PREFIX) || self.reserved.contains(&canonical)
    }
}

/// The client's headers minus hop-by-hop ones, the bridge's own cookies, and every header the
/// policy refuses.
pub(super) fn forwarded_headers(incoming: &HeaderMap, proxy: &Proxy) -> HeaderMap {
    let mut headers = HeaderMap::new();
    copy_end_to_end(incoming, &mut headers);
    let refused: Vec<HeaderName> = headers
        .keys()
        .filter(|name| proxy.headers.refuses(name.as_str()))
        .cloned()
        .collect();
    for name in refused {
        headers.remove(name);
    }
    if let Some(cookies) = without_bridge_cookies(incoming) {
        headers.insert(header::COOKIE, cookies);
    } else {
        headers.remove(header::COOKIE);
    }
    headers
}

/// Who connected and how the client reached us (RFC 7239's de-facto `X-Forwarded-*` forms), and
/// the id this request is logged under.
pub(super) fn add_forwarding(
    headers: &mut HeaderMap,
    proxy: &Proxy,
    client: Option<IpAddr>,
    request_id: Option<&HeaderValue>,
) {
    if let Some(client) = client
        && let Ok(value) = HeaderValue::from_str(&client.to_string())
    {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", proxy.public_origin.proto.clone());
    headers.insert("x-forwarded-host", proxy.public_origin.host.clone());
    if let Some(id) = request_id {
        headers.insert(REQUEST_ID.clone(), id.clone());
    }
}

/// The MCP server's headers minus hop-by-hop ones and any cookie of the bridge's (it answers
/// from the bridge's origin, so it could otherwise overwrite the sign-in cookies), with our
/// `Content-Security-Policy` added: its pages share the bridge's origin, so they are sandboxed.
pub(super) fn answered_headers(from: &HeaderMap, policy: Option<&HeaderValue>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    copy_end_to_end(from, &mut headers);
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|value| {
            value.to_str().map_or(true, |text| {
                let name = text.trim_start();
                !name.starts_with("mob_") && !name.starts_with("__Host-mob_")
            })
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Appended, not replacing the server's own: a browser enforces every policy it is given.
    if let Some(policy) = policy {
        headers.append(header::CONTENT_SECURITY_POLICY, policy.clone());
    }
    headers
}

/// The Cookie header without the bridge's sign-in and consent cookies, which are not the MCP
/// server's business.
fn without_bridge_cookies(incoming: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = incoming
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !pair.starts_with("mob_") && !pair.starts_with("__Host-mob_"))
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let listed_in_connection: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in from {
        let name_text = name.as_str();
        if HOP_BY_HOP.contains(&name_text)
            || listed_in_connection
                .iter()
                .any(|listed| listed == name_text)
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::proxy;
    use super::*;

    #[test]
    fn the_servers_answer_cannot_set_the_bridges_cookies_and_is_sandboxed() {
        let mut answer = HeaderMap::new();
        answer.append(
            header::SET_COOKIE,
            HeaderValue::from_static("__Host-mob_login_x=; Max-Age=0"),
        );
        answer.append(
            header::SET_COOKIE,
            HeaderValue::from_static("session=1; HttpOnly"),
        );
        answer.append(header::SET_COOKIE, HeaderValue::from_static("theme=dark"));
        answer.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        );
        let sandbox = HeaderValue::from_static("sandbox");
        let out = answered_headers(&answer, Some(&sandbox));
        let cookies: Vec<_> = out.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["session=1; HttpOnly", "theme=dark"]);
        assert_eq!(out[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let policies: Vec<_> = out
            .get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .collect();
        assert_eq!(policies, ["default-src 'self'", "sandbox"]);
        let unsandboxed = answered_headers(&HeaderMap::new(), None);
        assert!(!unsandboxed.contains_key(header::CONTENT_SECURITY_POLICY));
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_dropped() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        incoming.insert("x-private", HeaderValue::from_static("1"));
        incoming.insert(header::TE, HeaderValue::from_static("trailers"));
        incoming.insert("mcp-session-id", HeaderValue::from_static("s1"));
        incoming.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        incoming.insert("x-forwarded-user", HeaderValue::from_static("admin"));
        incoming.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        incoming.insert("x-forwarded-admin", HeaderValue::from_static("yes"));
        incoming.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        incoming.insert("x-real-ip", HeaderValue::from_static("10.0.0.1"));
        incoming.insert(
            header::COOKIE,
            HeaderValue::from_static("mob_login_x=1; theme=dark; __Host-mob_consent=2"),
        );
        let out = forwarded_headers(&incoming, &proxy("http://mcp:3000"));
        assert_eq!(out["mcp-session-id"], "s1");
        assert_eq!(out[header::COOKIE], "theme=dark");
        for gone in [
            "connection",
            "x-private",
            "te",
            "authorization",
            "x-forwarded-user",
            "x-forwarded-for",
            "x-forwarded-admin",
            "forwarded",
            "x-real-ip",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn spellings_a_cgi_server_would_merge_with_ours_are_dropped() {
        let mut incoming = HeaderMap::new();
        for name in [
            "x_forwarded_user",
            "x_forwarded_groups",
            "x_forwarded_email",
            "x_forwarded_for",
            "x-forwarded_host",
            "x_real_ip",
            "x-original-url",
            "x-rewrite-url",
            "true-client-ip",
            "x-client-ip",
            "cf-connecting-ip",
            "x-request-id",
            "x_request_id",
            "x_custom",
            "x.forwarded.user",
            "x~forwarded~groups",
            "x+forwarded+email",
            "x!real!ip",
            "transfer.encoding",
            "proxy~authorization",
        ] {
            incoming.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static("forged"),
            );
        }
        incoming.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2025-11-25"),
        );
        let out = forwarded_headers(&incoming, &proxy("http://mcp:3000"));
        assert_eq!(
            out.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["mcp-protocol-version"]
        );
    }

    #[test]
    fn underscores_pass_only_when_allowed_and_never_for_reserved_names() {
        let mut allowing = proxy("http://mcp:3000");
        allowing.headers = HeaderPolicy::new([&HeaderName::from_static("x-identity")], true);
        let mut incoming = HeaderMap::new();
        incoming.insert("x_custom", HeaderValue::from_static("kept"));
        incoming.insert("x_identity", HeaderValue::from_static("forged"));
        incoming.insert("x_forwarded_groups", HeaderValue::from_static("forged"));
        incoming.insert("transfer_encoding", HeaderValue::from_static("chunked"));
        incoming.insert("content_length", HeaderValue::from_static("5"));
        incoming.insert("x.custom", HeaderValue::from_static("odd"));
        let out = forwarded_headers(&incoming, &allowing);
        assert_eq!(
            out.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["x_custom"]
        );
    }

    mod properties {
        use super::super::super::tests::proxy;
        use super::*;
        use proptest::prelude::*;

        /// The CGI variable a server makes of a header name (lighttpd's rule, the widest: every
        /// character but a letter or a digit becomes `_`).
        fn cgi_variable(name: &str) -> String {
            let upper: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("HTTP_{upper}")
        }

        /// Variables a server must only ever get from the proxy.
        const PROXYS_OWN: [&str; 18] = [
            "HTTP_X_FORWARDED_USER",
            "HTTP_X_FORWARDED_EMAIL",
            "HTTP_X_FORWARDED_GROUPS",
            "HTTP_X_FORWARDED_FOR",
            "HTTP_X_FORWARDED_HOST",
            "HTTP_X_FORWARDED_PROTO",
            "HTTP_FORWARDED",
            "HTTP_X_REAL_IP",
            "HTTP_X_ORIGINAL_URL",
            "HTTP_X_REWRITE_URL",
            "HTTP_TRUE_CLIENT_IP",
            "HTTP_X_CLIENT_IP",
            "HTTP_CF_CONNECTING_IP",
            "HTTP_X_REQUEST_ID",
            "HTTP_AUTHORIZATION",
            "HTTP_TRANSFER_ENCODING",
            "HTTP_PROXY_AUTHORIZATION",
            "HTTP_HOST",
        ];

        fn name() -> impl Strategy<Value = String> {
            let separator = "[-_.~+!*'|^`#$%&]";
            let pattern = |text: String| proptest::string::string_regex(&text).unwrap();
            prop_oneof![
                pattern("[a-zA-Z0-9_.~+-]{1,24}".to_owned()),
                pattern(format!(
                    "(x|X){separator}(forwarded|FORWARDED|Forwarded){separator}(user|email|groups|for|host|proto|admin)"
                )),
                pattern(format!(
                    "(x|X){separator}(real|original|rewrite|request|client){separator}(ip|url|id|IP|URL|ID)"
                )),
                pattern(format!(
                    "(true|cf){separator}(client|connecting){separator}ip"
                )),
                pattern(format!(
                    "(transfer{separator}encoding|proxy{separator}authorization|authorization|host|forwarded)"
                )),
            ]
        }

        proptest! {
            #[test]
            fn nothing_a_server_could_read_as_a_header_of_ours_gets_through(
                names in proptest::collection::vec(name(), 0..12), allow in any::<bool>()
            ) {
                let mut policy_proxy = proxy("http://mcp:3000");
                policy_proxy.headers = HeaderPolicy::new(
                    [
                        &HeaderName::from_static("x-forwarded-user"),
                        &HeaderName::from_static("x-forwarded-email"),
                        &HeaderName::from_static("x-forwarded-groups"),
                    ],
                    allow,
                );
                let mut incoming = HeaderMap::new();
                for name in &names {
                    if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                        incoming.append(name, HeaderValue::from_static("forged"));
                    }
                }
                let out = forwarded_headers(&incoming, &policy_proxy);
                for name in out.keys() {
                    let variable = cgi_variable(name.as_str());
                    prop_assert!(!PROXYS_OWN.contains(&variable.as_str()), "{} reads as {}", name, variable);
                    prop_assert!(!variable.starts_with("HTTP_X_FORWARDED_"), "{}", name);
                    prop_assert!(allow || !name.as_str().contains('_'), "{}", name);
                }
            }
        }
    }
}
