//! Where a proxied request goes: its path below the mount, joined to the MCP server's URL, and
//! its query without any access token. Paths are forwarded byte for byte, so a path that other
//! servers would read as climbing out of the mount is refused instead of being rewritten.

use percent_encoding::percent_decode_str;
use url::Url;

use super::Proxy;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unroutable {
    /// Shares only a prefix with the mount (`/mcpx` under `/mcp`).
    OutsideTheMount,
    /// A segment some server would resolve as `.`/`..`, or whose meaning differs between us and
    /// the server (an encoded slash, a control character, a second layer of encoding).
    Traversal,
}

/// Where a request goes, query included (less any `access_token`, which never travels on).
pub(super) fn upstream_url(
    proxy: &Proxy,
    path: &str,
    query: Option<&str>,
) -> Result<Url, Unroutable> {
    let rest = path
        .strip_prefix(&proxy.mount)
        .ok_or(Unroutable::OutsideTheMount)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return Err(Unroutable::OutsideTheMount);
    }
    if rest.split('/').any(is_unsafe_segment) {
        return Err(Unroutable::Traversal);
    }
    let mut url = proxy.upstream.clone();
    let prefix = match url.path() {
        "" | "/" => proxy.path.as_str(),
        own => own.trim_end_matches('/'),
    };
    let joined = format!("{prefix}{rest}");
    url.set_path(if joined.is_empty() { "/" } else { &joined });
    // Some servers also split at `;` (Go before 1.17, Python before 3.9.2, Perl's CGI): a pair
    // that hides an access token behind one goes as a whole.
    let kept: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.split(';').any(names_an_access_token))
        .collect();
    url.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());
    Ok(url)
}

/// A path segment is read differently by different servers when, decoded once: it is `.` or `..`
/// before any `;parameters` (Tomcat, Jetty and Spring cut those and then resolve `..;` as `..`);
/// it holds a slash, a backslash, NUL or another control character; or it is still
/// percent-encoded (`%252e` becomes `.` at a server that decodes twice). So is a `%` that does not
/// start an escape (`%u002e`, which IIS reads as `.`), and an escape that does not decode to UTF-8
/// (the overlong `%c0%ae`, which old decoders read as `.`).
fn is_unsafe_segment(segment: &str) -> bool {
    let raw = segment.as_bytes();
    let malformed_escape = raw.iter().enumerate().any(|(at, b)| {
        *b == b'%'
            && !(raw.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
                && raw.get(at + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    let decoded: Vec<u8> = percent_decode_str(segment).collect();
    if malformed_escape || std::str::from_utf8(&decoded).is_err() {
        return true;
    }
    let name = decoded.split(|b| *b == b';').next().unwrap_or_default();
    name == b"."
        || name == b".."
        || decoded
            .iter()
            .any(|b| matches!(b, b'/' | b'\\') || b.is_ascii_control())
        || decoded
            .windows(3)
            .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// `access_token` (RFC 6750 §2.3) in any spelling a server might read as it: any case, percent-
/// encoded, with `.`, `-`, `[` or a space for the underscore, or as `access_token[]` (PHP reads
/// all of these as the same name).
fn names_an_access_token(pair: &str) -> bool {
    let raw_name = pair.split('=').next().unwrap_or_default().replace('+', " ");
    let decoded = percent_decode_str(&raw_name).decode_utf8_lossy();
    let normalized: String = decoded
        .trim_matches(|c: char| c.is_whitespace() || c.is_control())
        .chars()
        .map(|c| match c {
            '.' | ' ' | '-' => '_',
            other => other.to_ascii_lowercase(),
        })
        .collect();
    // PHP cuts a name at a `[` that opens an array index, and reads an unmatched one as `_`.
    normalized.split('[').next() == Some("access_token")
        || normalized.replace('[', "_") == "access_token"
}

#[cfg(test)]
mod tests {
    use super::super::tests::proxy;
    use super::*;

    fn url(p: &Proxy, path: &str, query: Option<&str>) -> Option<String> {
        upstream_url(p, path, query).ok().map(String::from)
    }

    #[test]
    fn paths_map_like_nginx_proxy_pass() {
        let bare = proxy("http://mcp:3000");
        assert_eq!(
            url(&bare, "/auth/mcp", None).as_deref(),
            Some("http://mcp:3000/mcp")
        );
        assert_eq!(
            url(&bare, "/auth/mcp/sse", Some("a=1")).as_deref(),
            Some("http://mcp:3000/mcp/sse?a=1")
        );
        assert_eq!(url(&bare, "/auth/mcpx", None), None);
        let pathed = proxy("http://mcp:3000/v1/");
        assert_eq!(
            url(&pathed, "/auth/mcp", None).as_deref(),
            Some("http://mcp:3000/v1")
        );
        assert_eq!(
            url(&pathed, "/auth/mcp/x", None).as_deref(),
            Some("http://mcp:3000/v1/x")
        );
        assert_eq!(
            url(&bare, "/auth/mcp", Some("access_token=t&page=2")).as_deref(),
            Some("http://mcp:3000/mcp?page=2")
        );
    }

    #[test]
    fn dot_segments_and_encoded_slashes_cannot_leave_the_mount() {
        let pathed = proxy("http://gateway/team-a/");
        for path in [
            "/auth/mcp/../team-b/x",
            "/auth/mcp/%2e%2e/team-b",
            "/auth/mcp/.%2E/x",
            "/auth/mcp/%2E./x",
            "/auth/mcp/./x",
            "/auth/mcp/a%2Fb",
            "/auth/mcp/a%5cb",
            "/auth/mcp/..",
        ] {
            assert_eq!(
                upstream_url(&pathed, path, None),
                Err(Unroutable::Traversal),
                "{path}"
            );
        }
        assert!(upstream_url(&pathed, "/auth/mcp/..well/x", None).is_ok());
    }

    #[test]
    fn path_parameters_control_characters_and_double_encoding_are_refused() {
        let pathed = proxy("http://gateway/team-a/");
        for path in [
            "/auth/mcp/..;/secret",
            "/auth/mcp/%2e%2e;/x",
            "/auth/mcp/%2e%2e%3b/x",
            "/auth/mcp/..;jsessionid=1/x",
            "/auth/mcp/.;/x",
            "/auth/mcp/%252e%252e/x",
            "/auth/mcp/%252fsecret",
            "/auth/mcp/a%00b",
            "/auth/mcp/a%0d%0aX-Injected:%201",
            "/auth/mcp/a%09b",
            "/auth/mcp/a%7fb",
            "/auth/mcp/a\\..",
            "/auth/mcp/%u002e%u002e/x",
            "/auth/mcp/%c0%ae%c0%ae/x",
            "/auth/mcp/%e0%80%ae/x",
            "/auth/mcp/50%/x",
            "/auth/mcp/%ff",
        ] {
            assert_eq!(
                upstream_url(&pathed, path, None),
                Err(Unroutable::Traversal),
                "{path}"
            );
        }
    }

    #[test]
    fn other_paths_are_forwarded_byte_for_byte() {
        let bare = proxy("http://mcp:3000");
        assert_eq!(
            url(&bare, "/auth/mcp/a;b=c/%41%42/x%20y/caf%C3%A9/..x", None).as_deref(),
            Some("http://mcp:3000/mcp/a;b=c/%41%42/x%20y/caf%C3%A9/..x")
        );
    }

    #[test]
    fn an_access_token_never_travels_on_in_any_spelling() {
        let bare = proxy("http://mcp:3000");
        let query = "ACCESS_TOKEN=a&Access_Token=b&access%5Ftoken=c&%61ccess_token=d\
                     &access.token=e&access-token=f&access+token=g&access_token%5B%5D=h\
                     &access_token[x]=i&%20access_token=j&page=2&access_tokens=k\
                     &access[token=l&v=1;access_token=m";
        assert_eq!(
            url(&bare, "/auth/mcp", Some(query)).as_deref(),
            Some("http://mcp:3000/mcp?page=2&access_tokens=k")
        );
    }

    mod properties {
        use super::super::super::tests::proxy;
        use super::*;
        use proptest::prelude::*;

        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just("%2e".to_owned()),
                Just("%2E%2e".to_owned()),
                Just("..;".to_owned()),
                Just(";x=1".to_owned()),
                Just("%2f".to_owned()),
                Just("%5c".to_owned()),
                Just("%252e%252e".to_owned()),
                Just("%00".to_owned()),
                Just("%3b".to_owned()),
                "[a-zA-Z0-9._~;=%-]{0,8}",
            ]
        }

        /// Every segment of a path decoded as a server that decodes twice and cuts `;` would.
        fn harshest_reading(path: &str) -> Vec<Vec<u8>> {
            path.split('/')
                .map(|segment| {
                    let once: Vec<u8> = percent_decode_str(segment).collect();
                    let twice: Vec<u8> = percent_decode(&once).collect();
                    twice
                        .split(|b| *b == b';')
                        .next()
                        .unwrap_or_default()
                        .to_vec()
                })
                .collect()
        }

        use percent_encoding::percent_decode;

        proptest! {
            #[test]
            fn no_forwarded_path_climbs_out_of_the_mount(segments in proptest::collection::vec(segment(), 0..6)) {
                let pathed = proxy("http://gateway/team-a/");
                let path = format!("/auth/mcp/{}", segments.join("/"));
                if let Ok(url) = upstream_url(&pathed, &path, None) {
                    prop_assert!(url.path().starts_with("/team-a"), "{}", url);
                    for segment in harshest_reading(url.path()) {
                        prop_assert!(segment != b"." && segment != b"..", "{}", url);
                    }
                }
            }

            #[test]
            fn no_access_token_survives_in_the_query(
                name_case in proptest::collection::vec(any::<bool>(), 12),
                encode in proptest::collection::vec(any::<bool>(), 12),
                other in "[a-z]{1,6}=[a-z]{0,6}", separator in "[;&]", bracket in any::<bool>()
            ) {
                let name: String = "access_token"
                    .chars()
                    .zip(name_case.iter().zip(&encode))
                    .map(|(c, (upper, encoded))| {
                        let c = if *upper { c.to_ascii_uppercase() } else { c };
                        if *encoded { format!("%{:02X}", c as u8) } else { c.to_string() }
                    })
                    .collect();
                let name = if bracket { name.replacen("_", "[", 1) } else { name };
                let query = format!("{other}{separator}{name}=T0KEN");
                let url = upstream_url(&proxy("http://mcp:3000"), "/auth/mcp", Some(&query)).unwrap();
                prop_assert!(!url.as_str().contains("T0KEN"), "{}", url);
            }
        }
    }
}
