//! Per-tool scopes at the proxy (`proxy.tool_scopes`, MCP 2026-07-28 `Mcp-Method`/`Mcp-Name`):
//! a guarded call without its scope is 403 `insufficient_scope` naming every scope it needs, a
//! step-up token passes, headers that disagree with the body never reach the server.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::proxy::{Proxied, challenge_params, first_event, param, proxied};

/// `delete_repo` and every `admin_*` tool need `profile` beyond the resource's `email`.
fn guarded(proxy: &mut ProxyConfig) {
    proxy.required_scopes = strings(["email"]);
    proxy.tool_scopes = vec![
        ToolScopeRule {
            method: "tools/call".into(),
            name: Some("delete_repo".into()),
            scopes: strings(["profile"]),
        },
        ToolScopeRule {
            method: "tools/call".into(),
            name: Some("admin_*".into()),
            scopes: strings(["profile"]),
        },
    ];
    proxy.max_message_bytes = 4096;
}

fn call(id: u64, tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": {"repo": "bridge"}}})
}

impl Proxied {
    /// POSTs `body` to the proxy as a 2026-07-28 client would, mirroring method and name into
    /// headers when `headers` holds them.
    async fn post(
        &self,
        token: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self
            .app
            .api
            .post(self.app.url("/mcp"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(body).send().await.unwrap()
    }

    async fn token_with(&self, scope: &str) -> String {
        let tokens = self.tokens_for(&self.resource, scope).await;
        assert_eq!(tokens["scope"], scope);
        tokens["access_token"].as_str().unwrap().to_owned()
    }
}

/// A body that never ends: 64 spaces every 50 ms.
fn endless_body() -> reqwest::Body {
    reqwest::Body::wrap_stream(futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, std::io::Error>(vec![b' '; 64]), ()))
    }))
}

/// Refused before the MCP server: `status` with JSON-RPC error `code`; the whole answer.
async fn assert_refused(response: reqwest::Response, status: StatusCode, code: i64) -> Value {
    let (got, answer) = json_rpc_error(response).await;
    assert_eq!(
        (got, &answer["error"]["code"]),
        (status, &json!(code)),
        "{answer}"
    );
    answer
}

async fn json_rpc_error(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    (status, body)
}

#[tokio::test]
async fn a_guarded_tool_is_refused_for_step_up_and_passes_with_the_wider_token() {
    let proxied = proxied(guarded, None).await;
    let metadata: Value = proxied
        .app
        .api
        .get(proxied.app.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["scopes_supported"], json!(["email", "profile"]));
    let token = proxied.token_with("openid email").await;
    let allowed = call(1, "list_repos").to_string();
    let response = proxied
        .post(
            &token,
            &[("mcp-method", "tools/call"), ("mcp-name", "list_repos")],
            allowed.clone(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(
        echoed["body"], allowed,
        "the body reaches the server as it was sent"
    );
    assert_eq!(proxied.upstream.requests(), 1);

    let guarded_call = call(2, "delete_repo").to_string();
    let headers = [("mcp-method", "tools/call"), ("mcp-name", "delete_repo")];
    let response = proxied.post(&token, &headers, guarded_call.clone()).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let params = challenge_params(&response);
    assert_eq!(param(&params, "error"), Some("insufficient_scope"));
    // Every scope this call needs, not only the missing one (RFC 6750 §3.1).
    assert_eq!(param(&params, "scope"), Some("email profile"));
    assert_eq!(
        param(&params, "resource_metadata"),
        Some(
            proxied
                .app
                .url("/.well-known/oauth-protected-resource/mcp")
                .as_str()
        )
    );
    let prefixed = proxied
        .post(
            &token,
            &[("mcp-method", "tools/call"), ("mcp-name", "admin_purge")],
            call(3, "admin_purge").to_string(),
        )
        .await;
    assert_eq!(prefixed.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        proxied.upstream.requests(),
        1,
        "refused calls never reach the server"
    );

    // The client steps up: a token with the wider scope passes.
    let wider = proxied.token_with("openid email profile").await;
    let response = proxied.post(&wider, &headers, guarded_call.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["body"], guarded_call);
}

#[tokio::test]
async fn headers_that_disagree_with_the_body_are_refused_with_32020() {
    let proxied = proxied(guarded, None).await;
    let token = proxied.token_with("openid email profile").await;
    // Authorized as one tool and run as another: what the header check exists for.
    let cases: [(&[(&str, &str)], String); 5] = [
        (
            &[("mcp-method", "tools/call"), ("mcp-name", "list_repos")],
            call(7, "delete_repo").to_string(),
        ),
        (
            &[("mcp-method", "tools/list")],
            call(7, "delete_repo").to_string(),
        ),
        (
            &[("mcp-method", "tools/call")],
            call(7, "delete_repo").to_string(),
        ),
        (
            &[("mcp-name", "delete_repo")],
            call(7, "delete_repo").to_string(),
        ),
        (
            &[("mcp-method", "tools/call"), ("mcp-name", "delete_repo")],
            json!([call(7, "delete_repo")]).to_string(),
        ),
    ];
    for (headers, body) in cases {
        let (status, answer) = json_rpc_error(proxied.post(&token, headers, body).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert_eq!(answer["error"]["code"], -32020, "{headers:?}: {answer}");
    }
    let (_, answer) = json_rpc_error(
        proxied
            .post(
                &token,
                &[("mcp-method", "tools/call"), ("mcp-name", "list_repos")],
                call(7, "delete_repo").to_string(),
            )
            .await,
    )
    .await;
    assert_eq!(answer["id"], 7, "the error answers the request it refuses");
    // The same header twice could be read as either value.
    let repeated = proxied
        .app
        .api
        .post(proxied.app.url("/mcp"))
        .bearer_auth(&token)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "list_repos")
        .header("mcp-name", "delete_repo")
        .body(call(8, "list_repos").to_string())
        .send()
        .await
        .unwrap();
    assert_refused(repeated, StatusCode::BAD_REQUEST, -32020).await;
    assert_eq!(proxied.upstream.requests(), 0);
}

#[tokio::test]
async fn names_outside_visible_ascii_travel_base64_encoded() {
    let proxied = proxied(
        |proxy| {
            guarded(proxy);
            proxy.tool_scopes[0].name = Some("supprimer_dépôt".into());
        },
        None,
    )
    .await;
    let token = proxied.token_with("openid email").await;
    use base64::Engine;
    let encoded = format!(
        "=?base64?{}?=",
        base64::engine::general_purpose::STANDARD.encode("supprimer_dépôt")
    );
    let headers = [("mcp-method", "tools/call"), ("mcp-name", encoded.as_str())];
    let response = proxied
        .post(&token, &headers, call(1, "supprimer_dépôt").to_string())
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The encoded header that names another tool than the body is still a mismatch.
    assert_refused(
        proxied
            .post(&token, &headers, call(1, "supprimer_depot").to_string())
            .await,
        StatusCode::BAD_REQUEST,
        -32020,
    )
    .await;
}

#[tokio::test]
async fn older_clients_without_the_headers_are_judged_by_their_body_batches_included() {
    let proxied = proxied(guarded, None).await;
    let token = proxied.token_with("openid email").await;
    let response = proxied
        .post(&token, &[], call(1, "delete_repo").to_string())
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        param(&challenge_params(&response), "scope"),
        Some("email profile")
    );
    // One guarded call hidden in a batch is enough.
    let batch = json!([
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        call(2, "list_repos"),
        call(3, "delete_repo"),
    ]);
    let response = proxied.post(&token, &[], batch.to_string()).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let harmless = json!([call(4, "list_repos"), {"jsonrpc": "2.0", "id": 9, "result": {}}]);
    let response = proxied.post(&token, &[], harmless.to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(proxied.upstream.requests(), 1);
}

#[tokio::test]
async fn bodies_that_cannot_be_judged_are_refused_not_guessed() {
    let proxied = proxied(guarded, None).await;
    let token = proxied.token_with("openid email").await;
    let twice = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo","name":"list_repos"}}"#;
    assert_refused(
        proxied.post(&token, &[], twice).await,
        StatusCode::BAD_REQUEST,
        -32600,
    )
    .await;
    assert_refused(
        proxied.post(&token, &[], "{not json").await,
        StatusCode::BAD_REQUEST,
        -32700,
    )
    .await;
    // Larger than proxy.max_message_bytes: 413, never half-read and guessed.
    let mut big = call(1, "list_repos");
    big["params"]["arguments"]["padding"] = json!("x".repeat(8192));
    assert_refused(
        proxied.post(&token, &[], big.to_string()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        -32600,
    )
    .await;
    assert_eq!(proxied.upstream.requests(), 0);
}

#[tokio::test]
async fn a_caller_without_a_token_is_refused_before_its_body_is_read() {
    let proxied = proxied(guarded, None).await;
    // A body that never ends: a proxy that read it before checking the token would answer only
    // once max_message_bytes had arrived (413), seconds later.
    let endless = endless_body();
    let response = tokio::time::timeout(
        Duration::from_secs(2),
        proxied
            .app
            .api
            .post(proxied.app.url("/mcp"))
            .body(endless)
            .send(),
    )
    .await
    .expect("answered without reading the body")
    .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn streams_from_the_server_still_arrive_event_by_event() {
    let proxied = proxied(guarded, None).await;
    let token = proxied.token_with("openid email").await;
    let mut response = proxied
        .app
        .api
        .get(proxied.app.url("/mcp/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    first_event(&proxied, &mut response).await;
}

#[tokio::test]
async fn without_tool_scopes_the_proxy_never_reads_the_body() {
    // Nothing is decided on the body, so nothing is checked in it: the MCP server judges.
    let proxied = proxied(|_| {}, None).await;
    let token = proxied.access_token().await;
    let response = proxied
        .post(
            &token,
            &[("mcp-method", "tools/call"), ("mcp-name", "list_repos")],
            "{not json",
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_the_server_would_decode_differently_is_refused() {
    let proxied = proxied(guarded, None).await;
    let token = proxied.token_with("openid email").await;
    // In UTF-7 (which body-parser decodes) this says "name":"echo","x":"","name":"delete_repo":
    // the proxy would judge echo, the server would run delete_repo.
    let utf7 = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","x":"+ACIALAAi-name+ACI-:+ACI-delete_repo"}}"#;
    for (content_type, encoding) in [
        ("application/json; charset=utf-7", None),
        ("application/json; charset=utf-16", None),
        ("text/plain", None),
        ("application/json; foo=bar", None),
        ("application/json", Some("gzip")),
    ] {
        let mut request = proxied
            .app
            .api
            .post(proxied.app.url("/mcp"))
            .bearer_auth(&token)
            .header("content-type", content_type);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        let (status, answer) = json_rpc_error(request.body(utf7).send().await.unwrap()).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, &json!(-32600)),
            "{content_type} {encoding:?}"
        );
    }
    let response = proxied
        .app
        .api
        .post(proxied.app.url("/mcp"))
        .bearer_auth(&token)
        .header("content-type", "Application/JSON; Charset=\"UTF-8\"")
        .body(call(1, "list_repos").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "UTF-8 JSON, however spelled"
    );
    assert_eq!(proxied.upstream.requests(), 1);
}

#[tokio::test]
async fn member_names_in_another_case_or_header_names_in_another_spelling_are_refused() {
    let proxied = proxied(guarded, None).await;
    let token = proxied.token_with("openid email").await;
    // Go servers match member names in any case: to them this is a call of delete_repo.
    let shouted = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"delete_repo"}}"#;
    assert_refused(
        proxied.post(&token, &[], shouted).await,
        StatusCode::BAD_REQUEST,
        -32600,
    )
    .await;
    let renamed = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_repos","Name":"delete_repo"}}"#;
    let (status, _) = json_rpc_error(proxied.post(&token, &[], renamed).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // CGI servers read Mcp_Name as Mcp-Name.
    assert_refused(
        proxied
            .post(
                &token,
                &[("mcp_name", "list_repos")],
                call(1, "list_repos").to_string(),
            )
            .await,
        StatusCode::BAD_REQUEST,
        -32020,
    )
    .await;
    assert_eq!(proxied.upstream.requests(), 0);
}

#[tokio::test]
async fn a_resource_rule_holds_however_the_uri_is_spelled() {
    let proxied = proxied(
        |proxy| {
            guarded(proxy);
            proxy.tool_scopes.push(ToolScopeRule {
                method: "resources/read".into(),
                name: Some("file:///secret/*".into()),
                scopes: strings(["profile"]),
            });
        },
        None,
    )
    .await;
    let token = proxied.token_with("openid email").await;
    for uri in [
        "file:///secret/key",
        "file:///public/../secret/key",
        "FILE:///secret/key",
        "file:///public/%2e%2e/secret/key",
        "file:///%73ecret/key",
        "file:///secret/key?v=2",
    ] {
        let read =
            json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": uri}});
        let headers = [("mcp-method", "resources/read"), ("mcp-name", uri)];
        let response = proxied.post(&token, &headers, read.to_string()).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{uri}");
    }
    let public = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "file:///public/key"}});
    let response = proxied.post(&token, &[], public.to_string()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_without_the_resources_own_scopes_is_refused_before_its_body_is_read() {
    let proxied = proxied(guarded, None).await;
    let token = proxied.token_with("openid").await;
    let endless = endless_body();
    let response = tokio::time::timeout(
        Duration::from_secs(2),
        proxied
            .app
            .api
            .post(proxied.app.url("/mcp"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(endless)
            .send(),
    )
    .await
    .expect("answered without reading the body")
    .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(param(&challenge_params(&response), "scope"), Some("email"));
}
