//! Who is on the other end of a request. The TCP peer, unless the peer is one of
//! `server.trusted_proxies`: then the address that proxy recorded in `X-Forwarded-For` (or
//! `Forwarded`), walking the list from the right past every hop that is itself trusted, as
//! nginx's `real_ip_recursive` does. Nothing a client writes in those headers is believed unless
//! it reached us through a proxy we trust, and only the hops that proxy appended count.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

use super::REQUEST_ID;

/// The header the trusted proxies append the client's address to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAddressHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, AWS ALB, most ingresses).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    Forwarded,
}

/// The proxies whose word about the client's address is taken.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    pub(crate) networks: Vec<IpNet>,
    pub(crate) header: ClientAddressHeader,
}

/// The client's address as the bridge believes it, put on every request by `resolve_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddress {
    /// None only for requests that did not come over a socket (in-process tests).
    pub(crate) ip: Option<IpAddr>,
    /// The request came through a trusted proxy.
    pub(crate) via_trusted_proxy: bool,
}

impl ClientAddress {
    /// The address of a request, as resolved by the middleware (a request that bypassed it, in
    /// a test, counts as having no address).
    pub(crate) fn of(request_extensions: &axum::http::Extensions) -> ClientAddress {
        request_extensions
            .get::<ClientAddress>()
            .copied()
            .unwrap_or(ClientAddress {
                ip: None,
                via_trusted_proxy: false,
            })
    }
}

/// Handlers take the address as an argument; a request that bypassed the middleware (in a test)
/// has none.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress::of(&parts.extensions))
    }
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`, given the request's forwarding headers.
    pub(crate) fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddress {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return ClientAddress {
                ip: Some(peer),
                via_trusted_proxy: false,
            };
        }
        let hops = match self.header {
            ClientAddressHeader::XForwardedFor => forwarded_for_hops(headers),
            ClientAddressHeader::Forwarded => forwarded_hops(headers),
        };
        // From the right: each trusted hop vouches for the one before it. The first hop we do
        // not trust is the client; an entry that is not an address ends the walk where we are.
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = hop else { break };
            client = canonical(*ip);
            if !self.trusts(client) {
                break;
            }
        }
        ClientAddress {
            ip: Some(client),
            via_trusted_proxy: true,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack socket reports) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// An address as proxies write it: bare, with a port, or bracketed IPv6 with or without one.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    text.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse().ok())
}

/// Every `X-Forwarded-For` line in order, split at commas; `None` for an entry that is not an
/// address.
fn forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => text.split(',').map(parse_hop).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// The `for=` parameter of every RFC 7239 element, in order.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(axum::http::header::FORWARDED)
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => text
                .split(',')
                .map(|element| {
                    element
                        .split(';')
                        .filter_map(|pair| pair.split_once('='))
                        .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                        .and_then(|(_, value)| parse_hop(value))
                })
                .collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// Resolves the client's address for the rest of the stack, and drops any request id that came
/// with the request (ours is set next): a client must not choose the id its requests are logged
/// and forwarded under, and a load balancer in front may pass a client's one through untouched.
pub(crate) fn resolve_client(proxies: &TrustedProxies, mut request: Request) -> Request {
    let address = match request.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => proxies.client_of(peer.ip(), request.headers()),
        None => ClientAddress {
            ip: None,
            via_trusted_proxy: false,
        },
    };
    request.headers_mut().remove(&REQUEST_ID);
    request.extensions_mut().insert(address);
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(networks: &[&str], header: ClientAddressHeader) -> TrustedProxies {
        TrustedProxies {
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            header,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = proxies(&["10.0.0.0/8"], ClientAddressHeader::XForwardedFor);
        let claimed = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        assert_eq!(
            trusted.client_of(ip("203.0.113.9"), &claimed),
            ClientAddress {
                ip: Some(ip("203.0.113.9")),
                via_trusted_proxy: false
            }
        );
        let nobody = TrustedProxies::default();
        assert_eq!(
            nobody.client_of(ip("10.0.0.1"), &claimed).ip,
            Some(ip("10.0.0.1")),
            "no proxy is trusted by default"
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(
            &["10.0.0.0/8", "192.168.1.1/32"],
            ClientAddressHeader::XForwardedFor,
        );
        // The client forged "6.6.6.6"; the load balancer appended the address it saw.
        let chain = headers(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "192.168.1.1"),
        ]);
        let client = trusted.client_of(ip("10.1.2.3"), &chain);
        assert_eq!(client.ip, Some(ip("198.51.100.7")));
        assert!(client.via_trusted_proxy);
        let only_proxies = headers(&[("x-forwarded-for", "10.0.0.5, 192.168.1.1")]);
        assert_eq!(
            trusted.client_of(ip("10.1.2.3"), &only_proxies).ip,
            Some(ip("10.0.0.5"))
        );
        let garbage = headers(&[("x-forwarded-for", "6.6.6.6, unknown, 10.0.0.5")]);
        assert_eq!(
            trusted.client_of(ip("10.1.2.3"), &garbage).ip,
            Some(ip("10.0.0.5")),
            "an entry that is no address ends the walk"
        );
        assert_eq!(
            trusted.client_of(ip("10.1.2.3"), &HeaderMap::new()).ip,
            Some(ip("10.1.2.3"))
        );
    }

    #[test]
    fn the_forwarded_header_is_read_only_when_configured() {
        let chain = headers(&[
            (
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::7]:4711\";proto=https",
            ),
            ("x-forwarded-for", "6.6.6.6"),
        ]);
        let standard = proxies(&["::1/128"], ClientAddressHeader::Forwarded);
        assert_eq!(
            standard.client_of(ip("::1"), &chain).ip,
            Some(ip("2001:db8::7"))
        );
        let legacy = proxies(&["::1/128"], ClientAddressHeader::XForwardedFor);
        assert_eq!(legacy.client_of(ip("::1"), &chain).ip, Some(ip("6.6.6.6")));
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_networks() {
        let trusted = proxies(&["127.0.0.1/32"], ClientAddressHeader::XForwardedFor);
        let chain = headers(&[("x-forwarded-for", "198.51.100.7:5555")]);
        assert_eq!(
            trusted.client_of(ip("::ffff:127.0.0.1"), &chain).ip,
            Some(ip("198.51.100.7"))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn the_client_is_the_peer_or_an_address_the_header_named(
                chain in "[0-9a-f.:, \\[\\]\"=;forFOR_-]{0,80}", trusted in any::<bool>()
            ) {
                let proxies = TrustedProxies {
                    networks: vec!["10.0.0.0/8".parse().unwrap()],
                    header: if trusted { ClientAddressHeader::XForwardedFor } else { ClientAddressHeader::Forwarded },
                };
                let mut headers = HeaderMap::new();
                if let Ok(value) = HeaderValue::from_str(&chain) {
                    headers.insert("x-forwarded-for", value.clone());
                    headers.insert("forwarded", value);
                }
                let peer: IpAddr = "10.1.1.1".parse().unwrap();
                let client = proxies.client_of(peer, &headers).ip.unwrap();
                let named: Vec<IpAddr> = forwarded_for_hops(&headers)
                    .into_iter()
                    .chain(forwarded_hops(&headers))
                    .flatten()
                    .map(canonical)
                    .collect();
                prop_assert!(client == peer || named.contains(&client), "{} from {:?}", client, chain);
                let outsider: IpAddr = "203.0.113.1".parse().unwrap();
                prop_assert_eq!(proxies.client_of(outsider, &headers).ip, Some(outsider));
            }
        }
    }
}
