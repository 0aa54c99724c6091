//! Per-tool authorization at the proxy (`proxy.tool_scopes`). MCP 2026-07-28 clients mirror the
//! JSON-RPC method and the tool, prompt or resource it names into `Mcp-Method` and `Mcp-Name`,
//! so that intermediaries can decide without reading JSON; an intermediary that does decide on
//! them must prove they say what the body says, or a request would be authorized as one call and
//! run as another. Older clients send no such headers: their calls are read from the body alone.
//!
//! Nothing here knows HTTP: the proxy hands over the decoded headers and the body it read.

mod envelope;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use envelope::{Body, Message, Params, Text};

/// JSON-RPC error of MCP 2026-07-28: the mirrored headers disagree with the body.
pub(crate) const HEADER_MISMATCH: i64 = -32020;
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const INVALID_PARAMS: i64 = -32602;

/// The methods that name something, and where the body names it (the `Mcp-Name` sources of
/// MCP 2026-07-28).
const NAMED_METHODS: [(&str, &str); 6] = [
    ("tools/call", "name"),
    ("prompts/get", "name"),
    ("resources/read", "uri"),
    ("tasks/get", "taskId"),
    ("tasks/update", "taskId"),
    ("tasks/cancel", "taskId"),
];

/// Whether a 2026-07-28 client must mirror the name into `Mcp-Name` (the core three; clients
/// differ on tasks).
fn name_required(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

fn name_field(method: &str) -> Option<&'static str> {
    NAMED_METHODS
        .iter()
        .find(|(named, _)| *named == method)
        .map(|(_, field)| *field)
}

/// One entry of `proxy.tool_scopes`: calls of `method` (naming `name`, when given) need `scopes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolScopeRule {
    /// A JSON-RPC method, e.g. `tools/call`.
    pub method: String,
    /// The tool or prompt name (the resource URI for `resources/read`, the task id for
    /// `tasks/*`); a trailing `*` matches
    /// every name that starts with what precedes it. Without it, every call of the method.
    #[serde(default)]
    pub name: Option<String>,
    pub scopes: Vec<String>,
}

impl ToolScopeRule {
    fn applies_to(&self, call: &Call) -> bool {
        if self.method != call.method {
            return false;
        }
        let Some(pattern) = &self.name else {
            return true;
        };
        let Some(name) = &call.name else {
            return false;
        };
        if call.method != "resources/read" {
            return match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => pattern == name,
            };
        }
        let name = resource_key(name);
        match pattern.strip_suffix('*') {
            // `file:///secret/*` covers `file:///secret` itself and what is below it.
            Some(prefix) => {
                let directory = resource_key(prefix);
                let below = if prefix.ends_with('/') {
                    format!("{directory}/")
                } else {
                    directory.clone()
                };
                name.starts_with(&below) || name == directory
            }
            None => name == resource_key(pattern),
        }
    }
}

/// A resource URI as servers read it, for comparing with rules: WHATWG-normalized (as pydantic's
/// `AnyUrl` in the Python SDK parses it: `file:///public/../secret`, `FILE:///secret` and
/// `file:///public/%2e%2e/secret` are all `file:///secret`), without query or fragment (the
/// Python SDK's templates match without them), percent-decoded (FastMCP unquotes template
/// parameters: `file:///%73ecret`, `file:///secret%2Fkey`) and without trailing slashes.
fn resource_key(uri: &str) -> String {
    let Ok(mut url) = url::Url::parse(uri) else {
        return uri.to_owned();
    };
    url.set_query(None);
    url.set_fragment(None);
    let decoded = percent_encoding::percent_decode_str(url.as_str())
        .decode_utf8_lossy()
        .into_owned();
    let trimmed = decoded.trim_end_matches('/');
    if trimmed.ends_with(':') {
        // `file:///` and its like are the root, not an empty path.
        decoded
    } else {
        trimmed.to_owned()
    }
}

/// The methods of MCP 2026-07-28 a client sends; a rule for another one (`tool/call`,
/// `Tools/Call`) matches nothing, which is worth a warning at start-up.
const KNOWN_METHODS: [&str; 19] = [
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/update",
    "tasks/cancel",
    "tasks/result",
    "subscriptions/listen",
];

/// Rules whose method no MCP client sends (`proxy.tool_scopes[i].method`, for a warning).
pub(crate) fn unknown_methods(rules: &[ToolScopeRule]) -> Vec<String> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| {
            !KNOWN_METHODS.contains(&rule.method.as_str())
                && !rule.method.starts_with("notifications/")
        })
        .map(|(i, rule)| format!("proxy.tool_scopes[{i}].method: {:?}", rule.method))
        .collect()
}

/// Every problem of `proxy.tool_scopes`, with its field path.
pub(crate) fn validate(
    rules: &[ToolScopeRule],
    scopes_supported: &[String],
    problems: &mut Vec<String>,
) {
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("proxy.tool_scopes[{i}]");
        if rule.method.is_empty()
            || rule
                .method
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            problems.push(format!(
                "{field}.method: {:?} is not a JSON-RPC method name",
                rule.method
            ));
        }
        if let Some(name) = &rule.name {
            if name_field(&rule.method).is_none() {
                problems.push(format!(
                    "{field}.name: only tools/call, prompts/get, resources/read and tasks/get|update|cancel name what they call; {:?} does not",
                    rule.method
                ));
            }
            let prefix = name.strip_suffix('*').unwrap_or(name);
            if prefix.is_empty() || prefix.contains('*') {
                problems.push(format!(
                    "{field}.name: {name:?} must be a name, or a prefix followed by one final *; leave name out to cover every call of the method"
                ));
            }
        }
        if rule.scopes.is_empty() {
            problems.push(format!("{field}.scopes: name at least one scope"));
        }
        for (j, scope) in rule.scopes.iter().enumerate() {
            if scope == super::protected_resource::OFFLINE_ACCESS {
                problems.push(format!(
                    "{field}.scopes[{j}]: \"offline_access\" asks for refresh tokens, which never reach the MCP server; a call cannot require it"
                ));
            } else if !scopes_supported.contains(scope) {
                problems.push(format!(
                    "{field}.scopes[{j}]: {scope:?} is not in oauth.scopes_supported"
                ));
            }
        }
        if rules[..i]
            .iter()
            .any(|earlier| earlier.method == rule.method && earlier.name == rule.name)
        {
            problems.push(format!(
                "{field}: another entry already covers this method and name; list every scope in one"
            ));
        }
    }
}

/// One JSON-RPC request or notification, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) method: String,
    /// What a named method calls (tool, prompt or resource URI).
    pub(crate) name: Option<String>,
}

/// What `Mcp-Method` and `Mcp-Name` say, decoded; `None` when the header was not sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub(crate) method: Option<String>,
    pub(crate) name: Option<String>,
}

/// Why a request is refused before the MCP server sees it, as a JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refused {
    pub(crate) code: i64,
    pub(crate) message: &'static str,
    /// The request's id when the body had a readable one, else null (JSON-RPC §5).
    pub(crate) id: Value,
}

impl Refused {
    fn mismatch(message: &'static str, id: Value) -> Self {
        Refused {
            code: HEADER_MISMATCH,
            message,
            id,
        }
    }

    fn invalid(message: &'static str, id: Value) -> Self {
        Refused {
            code: INVALID_REQUEST,
            message,
            id,
        }
    }

    /// The body is larger than the proxy reads to decide.
    pub(crate) fn too_large() -> Self {
        Refused::invalid(
            "the message is larger than this proxy reads to apply per-tool scopes (proxy.max_message_bytes)",
            Value::Null,
        )
    }

    /// The body is not plain UTF-8 JSON as sent: another media type, charset or encoding.
    pub(crate) fn unsupported_media_type() -> Self {
        Refused::invalid(
            "with per-tool scopes the body must be Content-Type: application/json (charset utf-8 at most), not encoded",
            Value::Null,
        )
    }

    /// A header value that cannot be read (not visible ASCII, a broken Base64 sentinel, sent twice).
    pub(crate) fn malformed_header() -> Self {
        Refused::mismatch(
            "an Mcp-Method or Mcp-Name header is malformed or repeated",
            Value::Null,
        )
    }

    pub(crate) fn to_json(&self) -> Value {
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": self.id,
            "error": {"code": self.code, "message": self.message},
        })
    }
}

/// A header value as MCP encodes it: visible ASCII as it is, anything else as
/// `=?base64?<standard Base64 of the UTF-8>?=`.
pub(crate) fn decode_header_value(raw: &[u8]) -> Result<String, Refused> {
    let text = std::str::from_utf8(raw).map_err(|_| Refused::malformed_header())?;
    if text.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        return Err(Refused::malformed_header());
    }
    match text
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(Refused::malformed_header),
        None => Ok(text.to_owned()),
    }
}

/// The calls of a request that carries no body: what its headers claim, if anything.
pub(crate) fn calls_from_headers(claimed: &Claimed) -> Result<Vec<Call>, Refused> {
    match (&claimed.method, &claimed.name) {
        (None, None) => Ok(Vec::new()),
        (None, Some(_)) => Err(Refused::mismatch(
            "an Mcp-Name header needs the Mcp-Method header it belongs to",
            Value::Null,
        )),
        (Some(method), name) => {
            let unexpected = name.is_some() && name_field(method).is_none();
            if unexpected || (name.is_none() && name_required(method)) {
                return Err(Refused::mismatch(
                    "the Mcp-Name header is sent exactly with the methods that name what they call",
                    Value::Null,
                ));
            }
            Ok(vec![Call {
                method: method.clone(),
                name: name.clone(),
            }])
        }
    }
}

/// The calls of a JSON-RPC body (one message or a batch), checked against the headers when the
/// client sent them. Responses to the server's own requests call nothing.
pub(crate) fn calls_from_body(claimed: &Claimed, body: &[u8]) -> Result<Vec<Call>, Refused> {
    let body = envelope::parse(body).map_err(|_| Refused {
        code: PARSE_ERROR,
        message: "the body is not JSON",
        id: Value::Null,
    })?;
    let (messages, one) = match body {
        Body::One(message) => (vec![message], true),
        Body::Batch { messages, .. } if messages.is_empty() => {
            return Err(Refused::invalid("an empty batch", Value::Null));
        }
        Body::Batch { too_many: true, .. } => {
            return Err(Refused::invalid(
                "more messages in one batch than this proxy reads (100)",
                Value::Null,
            ));
        }
        Body::Batch { messages, .. } => {
            let messages = messages
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    Refused::invalid("every message of a batch is an object", Value::Null)
                })?;
            (messages, false)
        }
        Body::Other => {
            return Err(Refused::invalid(
                "a JSON-RPC body is an object or a batch of them",
                Value::Null,
            ));
        }
    };
    let id = match (one, messages.first()) {
        (true, Some(message)) => message.id.clone(),
        _ => Value::Null,
    };
    let mut calls = Vec::with_capacity(messages.len());
    for message in messages {
        if let Some(call) = call_of(message, &id)? {
            calls.push(call);
        }
    }
    if claimed.method.is_none() && claimed.name.is_none() {
        return Ok(calls);
    }
    let Some(claimed_method) = &claimed.method else {
        return Err(Refused::mismatch(
            "an Mcp-Name header needs the Mcp-Method header it belongs to",
            id,
        ));
    };
    let ([call], true) = (calls.as_slice(), one) else {
        return Err(Refused::mismatch(
            "the Mcp-Method header describes one request, and the body is not one",
            id,
        ));
    };
    if *claimed_method != call.method {
        return Err(Refused::mismatch(
            "the Mcp-Method header does not match the method in the body",
            id,
        ));
    }
    match (&claimed.name, &call.name) {
        (None, None) => Ok(calls),
        (Some(claimed_name), Some(name)) if claimed_name == name => Ok(calls),
        (Some(_), Some(_)) => Err(Refused::mismatch(
            "the Mcp-Name header does not match the name in the body",
            id,
        )),
        // Tasks may be named in the header; what they call is read from the body either way.
        (None, Some(_)) if !name_required(&call.method) => Ok(calls),
        (None, Some(_)) => Err(Refused::mismatch(
            "the Mcp-Name header is required for this method and was not sent",
            id,
        )),
        (Some(_), None) => Err(Refused::mismatch(
            "the Mcp-Name header is sent only with the methods that name what they call",
            id,
        )),
    }
}

/// The call one message makes; `None` for a response.
fn call_of(message: Message, id: &Value) -> Result<Option<Call>, Refused> {
    let named = match &message.params {
        Params::Named(named) => Some(named),
        Params::Absent | Params::Other => None,
    };
    if message.ambiguous || named.is_some_and(|named| named.ambiguous) {
        return Err(Refused::invalid(
            "a member of the message appears twice, or spelled in another case: it could be read two ways",
            id.clone(),
        ));
    }
    let method = match message.method {
        Text::Absent if message.answers => return Ok(None),
        Text::Absent => {
            return Err(Refused::invalid(
                "a message without a method must answer with result or error",
                id.clone(),
            ));
        }
        Text::Other => {
            return Err(Refused::invalid("the method is not a string", id.clone()));
        }
        Text::Is(method) => method,
    };
    let name = match name_field(&method) {
        None => None,
        Some(field) => match named.map(|named| named.field(field)) {
            Some(Text::Is(name)) => Some(name.clone()),
            _ => {
                return Err(Refused {
                    code: INVALID_PARAMS,
                    message: "this method names what it calls in params (name, uri or taskId, a string)",
                    id: id.clone(),
                });
            }
        },
    };
    Ok(Some(Call { method, name }))
}

/// Every scope the request needs: the resource's own, then each rule's that applies to a call,
/// each named once, in that order (the order a challenge lists them in).
pub(crate) fn needed_scopes(
    required: &[String],
    rules: &[ToolScopeRule],
    calls: &[Call],
) -> Vec<String> {
    let mut needed: Vec<String> = Vec::new();
    let applicable = rules
        .iter()
        .filter(|rule| calls.iter().any(|call| rule.applies_to(call)))
        .flat_map(|rule| rule.scopes.iter());
    for scope in required.iter().chain(applicable) {
        if !needed.contains(scope) {
            needed.push(scope.clone());
        }
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(method: Option<&str>, name: Option<&str>) -> Claimed {
        Claimed {
            method: method.map(str::to_owned),
            name: name.map(str::to_owned),
        }
    }

    fn call(method: &str, name: Option<&str>) -> Call {
        Call {
            method: method.into(),
            name: name.map(str::to_owned),
        }
    }

    fn code_of(result: Result<Vec<Call>, Refused>) -> i64 {
        result.expect_err("refused").code
    }

    const DELETE: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_repo","arguments":{}}}"#;

    #[test]
    fn a_call_whose_headers_match_its_body_is_read_once() {
        let calls = calls_from_body(
            &claimed(Some("tools/call"), Some("delete_repo")),
            DELETE.as_bytes(),
        );
        assert_eq!(calls, Ok(vec![call("tools/call", Some("delete_repo"))]));
        let read = calls_from_body(
            &claimed(Some("resources/read"), Some("file:///a b")),
            br#"{"jsonrpc":"2.0","id":"x","method":"resources/read","params":{"uri":"file:///a b"}}"#,
        );
        assert_eq!(read, Ok(vec![call("resources/read", Some("file:///a b"))]));
    }

    #[test]
    fn headers_that_say_another_call_than_the_body_are_a_mismatch() {
        let refused = calls_from_body(
            &claimed(Some("tools/call"), Some("list_repos")),
            DELETE.as_bytes(),
        )
        .expect_err("mismatch");
        assert_eq!(refused.code, HEADER_MISMATCH);
        assert_eq!(
            refused.id,
            Value::from(7),
            "the error answers the request's id"
        );
        for headers in [
            claimed(Some("tools/list"), None),
            claimed(Some("tools/call"), None),
            claimed(None, Some("delete_repo")),
            claimed(Some("tools/call"), Some("DELETE_REPO")),
            claimed(Some("tools/call"), Some("delete_repo ")),
        ] {
            assert_eq!(
                code_of(calls_from_body(&headers, DELETE.as_bytes())),
                HEADER_MISMATCH,
                "{headers:?}"
            );
        }
        let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        assert_eq!(
            code_of(calls_from_body(
                &claimed(Some("tools/list"), Some("x")),
                list
            )),
            HEADER_MISMATCH,
            "a name on a method that names nothing"
        );
    }

    #[test]
    fn headers_describe_one_message_never_a_batch_or_a_response() {
        let batch = format!("[{DELETE}]");
        assert_eq!(
            code_of(calls_from_body(
                &claimed(Some("tools/call"), Some("delete_repo")),
                batch.as_bytes()
            )),
            HEADER_MISMATCH
        );
        let response = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        assert_eq!(
            code_of(calls_from_body(
                &claimed(Some("tools/call"), Some("x")),
                response
            )),
            HEADER_MISMATCH
        );
        assert_eq!(calls_from_body(&Claimed::default(), response), Ok(vec![]));
    }

    #[test]
    fn older_clients_are_read_from_the_body_batches_included() {
        let batch = format!(
            r#"[{{"jsonrpc":"2.0","method":"notifications/initialized"}},{DELETE},{{"jsonrpc":"2.0","id":2,"result":{{}}}},
               {{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{{"name":"p"}}}}]"#
        );
        assert_eq!(
            calls_from_body(&Claimed::default(), batch.as_bytes()),
            Ok(vec![
                call("notifications/initialized", None),
                call("tools/call", Some("delete_repo")),
                call("prompts/get", Some("p")),
            ])
        );
    }

    #[test]
    fn a_body_that_can_be_read_two_ways_is_refused() {
        // Most parsers keep the last member, some the first: the proxy would authorize one tool
        // and the server could run the other.
        let twice = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo","name":"list_repos"}}"#;
        assert_eq!(
            code_of(calls_from_body(&Claimed::default(), twice)),
            INVALID_REQUEST
        );
        let method_twice =
            br#"{"method":"tools/list","method":"tools/call","params":{"name":"x"}}"#;
        assert_eq!(
            code_of(calls_from_body(&Claimed::default(), method_twice)),
            INVALID_REQUEST
        );
        // JSON escapes spell the same name: it is still the same member.
        let escaped = br#"{"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}"#;
        assert_eq!(
            code_of(calls_from_body(&Claimed::default(), escaped)),
            INVALID_REQUEST
        );
        // Go's encoding/json matches member names in any case (and folds ſ and K): a proxy that
        // read only the exact spelling would see a response, or another tool.
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"delete_repo"}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"a","task_id":"b"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_repos","Name":"delete_repo"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","PARAMS":{"name":"delete_repo"},"params":{"name":"x"}}"#,
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"paramſ\":{\"name\":\"delete_repo\"}}".as_bytes(),
        ] {
            assert_eq!(
                code_of(calls_from_body(&Claimed::default(), body)),
                INVALID_REQUEST,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn what_is_not_a_json_rpc_call_is_refused_not_guessed() {
        let nobody = Claimed::default();
        assert_eq!(code_of(calls_from_body(&nobody, b"{")), PARSE_ERROR);
        assert_eq!(code_of(calls_from_body(&nobody, b"")), PARSE_ERROR);
        assert_eq!(
            code_of(calls_from_body(&nobody, b"{} trailing")),
            PARSE_ERROR
        );
        // Nesting as deep as a megabyte allows overflows no stack: as a batch it is refused, in
        // the arguments (skipped, never built) it leaves the call what it is.
        let deep = "[".repeat(500_000) + &"]".repeat(500_000);
        assert!(calls_from_body(&nobody, deep.as_bytes()).is_err());
        let deep_arguments = r#"{"method":"tools/call","params":{"name":"x","arguments":"#
            .to_owned()
            + &"[".repeat(500_000)
            + &"]".repeat(500_000)
            + "}}";
        assert_eq!(
            calls_from_body(&nobody, deep_arguments.as_bytes()),
            Ok(vec![call("tools/call", Some("x"))])
        );
        for body in [
            &b"[]"[..],
            b"42",
            b"\"tools/call\"",
            b"[1]",
            b"[[]]",
            br#"{"method":7}"#,
            // Neither a request nor an answer: nothing says what it is.
            br#"{"jsonrpc":"2.0","id":1}"#,
        ] {
            assert_eq!(
                code_of(calls_from_body(&nobody, body)),
                INVALID_REQUEST,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &br#"{"method":"tools/call"}"#[..],
            br#"{"method":"tools/call","params":{"name":5}}"#,
            br#"{"method":"tools/call","params":["delete_repo"]}"#,
            br#"{"method":"resources/read","params":{"name":"file:///x"}}"#,
        ] {
            assert_eq!(
                code_of(calls_from_body(&nobody, body)),
                INVALID_PARAMS,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let batch = format!(
            "[{}]",
            vec![r#"{"jsonrpc":"2.0","method":"ping","id":1}"#; 101].join(",")
        );
        assert_eq!(
            code_of(calls_from_body(&nobody, batch.as_bytes())),
            INVALID_REQUEST,
            "a batch of more than 100"
        );
    }

    #[test]
    fn header_values_decode_from_the_base64_sentinel_only_when_well_formed() {
        assert_eq!(
            decode_header_value(b"delete_repo"),
            Ok("delete_repo".into())
        );
        assert_eq!(
            decode_header_value(b"=?base64?ZmlsZTovLy/DqXTDqQ==?="),
            Ok("file:///été".into())
        );
        for raw in [
            &b"=?base64?not base64?="[..],
            b"=?base64?/w==?=", // not UTF-8
            b"caf\xc3\xa9",
            b"tab\there",
        ] {
            assert_eq!(
                decode_header_value(raw).map_err(|r| r.code),
                Err(HEADER_MISMATCH)
            );
        }
    }

    #[test]
    fn tasks_may_leave_their_name_out_of_the_headers() {
        let get = br#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t-1"}}"#;
        assert_eq!(
            calls_from_body(&claimed(Some("tasks/get"), None), get),
            Ok(vec![call("tasks/get", Some("t-1"))])
        );
        assert_eq!(
            code_of(calls_from_body(
                &claimed(Some("tasks/get"), Some("t-2")),
                get
            )),
            HEADER_MISMATCH
        );
        assert_eq!(
            calls_from_headers(&claimed(Some("tasks/cancel"), None)),
            Ok(vec![call("tasks/cancel", None)])
        );
    }

    #[test]
    fn resource_rules_match_the_uri_as_servers_normalize_it() {
        let rules = [rule("resources/read", Some("file:///secret/*"), &["admin"])];
        let needs = |rules: &[ToolScopeRule], uri: &str| {
            needed_scopes(&[], rules, &[call("resources/read", Some(uri))])
        };
        for uri in [
            "file:///secret/key",
            "file:///public/../secret/key",
            "FILE:///secret/key",
            "file:///public/%2e%2e/secret/key",
            "file:///./secret/key",
            "file:///%73ecret/key",
            "file:///secret%2Fkey",
            "file:///secret/key?x=1",
            "file:///secret/key/",
            "file:///secret/",
            "file:///secret",
        ] {
            assert_eq!(needs(&rules, uri), ["admin"], "{uri}");
        }
        for uri in ["file:///public/key", "file:///secretive", "file:///"] {
            assert_eq!(needs(&rules, uri), Vec::<String>::new(), "{uri}");
        }
        let exact = [rule(
            "resources/read",
            Some("weather://secret/current"),
            &["admin"],
        )];
        for uri in [
            "weather://secret/current",
            "weather://secret/current?x=1",
            "weather://secret/current/",
            "WEATHER://secret/current#top",
        ] {
            assert_eq!(needs(&exact, uri), ["admin"], "{uri}");
        }
    }

    #[test]
    fn requests_without_a_body_are_what_their_headers_claim() {
        assert_eq!(calls_from_headers(&Claimed::default()), Ok(vec![]));
        assert_eq!(
            calls_from_headers(&claimed(Some("tools/call"), Some("x"))),
            Ok(vec![call("tools/call", Some("x"))])
        );
        for headers in [
            claimed(None, Some("x")),
            claimed(Some("tools/call"), None),
            claimed(Some("tools/list"), Some("x")),
        ] {
            assert_eq!(
                calls_from_headers(&headers).map_err(|r| r.code),
                Err(HEADER_MISMATCH)
            );
        }
    }

    fn rule(method: &str, name: Option<&str>, scopes: &[&str]) -> ToolScopeRule {
        ToolScopeRule {
            method: method.into(),
            name: name.map(str::to_owned),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_request_needs_the_resource_scopes_and_those_of_every_rule_that_applies() {
        let rules = [
            rule("tools/call", None, &["mcp:tools"]),
            rule("tools/call", Some("delete_repo"), &["repo:admin"]),
            rule("tools/call", Some("repo_*"), &["repo:read", "mcp:tools"]),
            rule("prompts/get", None, &["mcp:prompts"]),
        ];
        let required = ["openid".to_owned()];
        let needed = |calls: &[Call]| needed_scopes(&required, &rules, calls);
        assert_eq!(needed(&[]), ["openid"]);
        assert_eq!(
            needed(&[call("tools/call", Some("list"))]),
            ["openid", "mcp:tools"]
        );
        assert_eq!(
            needed(&[call("tools/call", Some("delete_repo"))]),
            ["openid", "mcp:tools", "repo:admin"]
        );
        assert_eq!(
            needed(&[call("tools/call", Some("repo_list"))]),
            ["openid", "mcp:tools", "repo:read"]
        );
        assert_eq!(
            needed(&[
                call("tools/call", Some("repo")),
                call("prompts/get", Some("p"))
            ]),
            ["openid", "mcp:tools", "mcp:prompts"],
            "a batch needs what each of its calls needs"
        );
        assert_eq!(needed(&[call("tools/list", None)]), ["openid"]);
    }

    #[test]
    fn a_rule_for_a_method_no_client_sends_is_named() {
        let rules = [
            rule("tools/call", None, &["a"]),
            rule("tool/call", None, &["a"]),
            rule("notifications/initialized", None, &["a"]),
        ];
        assert_eq!(
            unknown_methods(&rules),
            ["proxy.tool_scopes[1].method: \"tool/call\""]
        );
    }

    #[test]
    fn rules_are_checked_when_the_file_is_loaded() {
        let supported = ["mcp:tools", "repo:admin", "offline_access"].map(String::from);
        let problems_of = |rules: &[ToolScopeRule]| {
            let mut problems = Vec::new();
            validate(rules, &supported, &mut problems);
            problems
        };
        assert_eq!(
            problems_of(&[rule("tools/call", Some("delete_*"), &["repo:admin"])]),
            Vec::<String>::new()
        );
        let problems = problems_of(&[
            rule("tools/list", Some("x"), &["mcp:tools"]),
            rule("tools/call", Some("a*b"), &["mcp:tools"]),
            rule("tools/call", Some("*"), &["mcp:tools"]),
            rule("tools call", None, &[]),
            rule("tools/call", None, &["offline_access", "admin"]),
            rule("tools/call", None, &["mcp:tools"]),
        ]);
        assert_eq!(
            problems,
            [
                "proxy.tool_scopes[0].name: only tools/call, prompts/get, resources/read and tasks/get|update|cancel name what they call; \"tools/list\" does not",
                "proxy.tool_scopes[1].name: \"a*b\" must be a name, or a prefix followed by one final *; leave name out to cover every call of the method",
                "proxy.tool_scopes[2].name: \"*\" must be a name, or a prefix followed by one final *; leave name out to cover every call of the method",
                "proxy.tool_scopes[3].method: \"tools call\" is not a JSON-RPC method name",
                "proxy.tool_scopes[3].scopes: name at least one scope",
                "proxy.tool_scopes[4].scopes[0]: \"offline_access\" asks for refresh tokens, which never reach the MCP server; a call cannot require it",
                "proxy.tool_scopes[4].scopes[1]: \"admin\" is not in oauth.scopes_supported",
                "proxy.tool_scopes[5]: another entry already covers this method and name; list every scope in one",
            ]
        );
    }
}
