//! The administration API: only an administrator's token opens it; registered clients listed and
//! deleted, a user's and a client's grants listed and revoked, and what was revoked refused at
//! once by refresh, introspection, userinfo and the proxy, on every instance sharing PostgreSQL.
//! The `admin` command line calls it over HTTP.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::mcp_upstream::McpUpstream;

const ADMIN_TOKEN: &str = "admin-token-for-the-tests-0123456789abcdef";
const SUBJECT: &str = "upstream-user-42";

fn with_admin(config: &mut Config) {
    config.admin.tokens = vec![SecretString::new(ADMIN_TOKEN)];
}

async fn admin_app() -> TestApp {
    spawn_app_with(Options {
        configure: configure(|config| {
            with_admin(config);
            config.oauth.dcr.enabled = true;
            config.oauth.dcr.allowed_redirect_profiles = strings(["loopback"]);
        }),
        ..Options::default()
    })
    .await
}

/// An admin request with `token` (none without); its status and JSON body (`null` when empty).
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut request = app.api.request(method, app.origin.clone() + path);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body, headers)
}

async fn admin_get(app: &TestApp, path: &str) -> Value {
    let (status, body, headers) = call(app, reqwest::Method::GET, path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    assert_eq!(headers["cache-control"], "no-store");
    body
}

async fn admin_delete(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let (status, body, _) = call(app, reqwest::Method::DELETE, path, Some(ADMIN_TOKEN)).await;
    (status, body)
}

#[tokio::test]
async fn only_an_administrators_token_opens_the_api_and_it_is_absent_without_tokens() {
    let app = admin_app().await;
    let (get, delete) = (reqwest::Method::GET, reqwest::Method::DELETE);
    // Every route, even with an id its extractor cannot decode: nothing runs before the token.
    for (method, path) in [
        (&get, "/admin/clients"),
        (&get, "/admin/grants?subject=x"),
        (&delete, "/admin/grants?subject=x"),
        (&delete, "/admin/clients/anyone"),
        (&delete, "/admin/clients/%FF"),
    ] {
        let (status, _, headers) = call(&app, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        for wrong in [
            "admin-token-for-the-tests-0123456789abcdeF",
            &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1],
            // The hash that `admin hash-token` prints is what is kept, not a token.
            &mcp_oauth_bridge::oauth::admin::hashed_token(ADMIN_TOKEN),
        ] {
            let (status, _, headers) = call(&app, method.clone(), path, Some(wrong)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {wrong}");
            assert!(
                headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .contains("error=\"invalid_token\"")
            );
        }
    }
    // Twenty refusals a minute per address are answered and written down; then 429.
    let (status, _, headers) = call(&app, get.clone(), "/admin/clients", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(
        admin_get(&app, "/admin/clients").await,
        json!({"clients": []}),
        "an administrator is not slowed down"
    );
    // An access token of a signed-in user is no admin token (nor one past the refusals' limit).
    let app = admin_app().await;
    let tokens = app.tokens().await;
    let (status, _, _) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("/admin/grants?subject={SUBJECT}"),
        tokens["access_token"].as_str(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let refreshed = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), StatusCode::OK, "nothing was revoked");

    let without = spawn_app().await;
    let (status, _, _) = call(
        &without,
        reqwest::Method::GET,
        "/admin/clients",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_users_grants_are_listed_and_revoked_and_refused_everywhere_at_once() {
    let app = admin_app().await;
    let first = app.tokens().await;
    let second = app.tokens().await;
    let refreshed: Value = app
        .refresh(second["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let listed = admin_get(&app, &format!("/admin/grants?subject={SUBJECT}")).await;
    let grants = listed["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 2, "{listed}");
    for grant in grants {
        assert_eq!(grant["client_id"], PUBLIC_CLIENT);
        assert_eq!(grant["subject"], SUBJECT);
        assert_eq!(grant["scope"], json!(["openid", "email"]));
        assert_eq!(grant["audience"], RESOURCE);
        assert_eq!(grant["refreshable"], true);
        assert!(grant["created_at"].as_i64().unwrap() > 1_700_000_000);
        assert!(grant["expires_at"].as_i64() > grant["created_at"].as_i64());
        assert!(grant.get("family_id").is_some());
    }
    // Created within the same second, so in no particular order: one was refreshed.
    let (used, unused): (Vec<&Value>, Vec<&Value>) = grants
        .iter()
        .partition(|grant| !grant["last_used_at"].is_null());
    assert_eq!((used.len(), unused.len()), (1, 1), "{listed}");
    assert!(used[0]["last_used_at"].as_i64() >= used[0]["created_at"].as_i64());
    let by_client = admin_get(&app, &format!("/admin/grants?client_id={PUBLIC_CLIENT}")).await;
    assert_eq!(by_client["grants"], listed["grants"]);
    let nobody = admin_get(&app, "/admin/grants?subject=someone-else").await;
    assert_eq!(nobody, json!({"grants": []}));

    let (status, body) = admin_delete(&app, &format!("/admin/grants?subject={SUBJECT}")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"revoked": 2})));
    for refresh in [&first["refresh_token"], &refreshed["refresh_token"]] {
        let response = app.refresh(refresh.as_str().unwrap()).await;
        oauth_error(response, StatusCode::BAD_REQUEST, "invalid_grant").await;
    }
    for access in [&first["access_token"], &refreshed["access_token"]] {
        let userinfo = app
            .api
            .get(app.url("/oauth/userinfo"))
            .bearer_auth(access.as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(userinfo.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            app.introspect_as_web_client(access.as_str().unwrap()).await,
            json!({"active": false})
        );
    }
    let listed = admin_get(&app, &format!("/admin/grants?subject={SUBJECT}")).await;
    assert_eq!(listed, json!({"grants": []}));
    let (status, body) = admin_delete(&app, &format!("/admin/grants?subject={SUBJECT}")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"revoked": 0})));

    // The consent was forgotten with the grants: the next sign-in asks again.
    let pkce = Pkce::new();
    let next = location(&app.get_authorize(&app.authorize_params(&pkce)).await);
    assert!(next.starts_with(&app.url("/oauth/consent")), "{next}");
}

#[tokio::test]
async fn a_request_names_exactly_one_owner_once() {
    let app = admin_app().await;
    for query in [
        "",
        "?subject=a&client_id=b",
        "?subject=a&subject=b",
        "?subject=",
        "?subject=a%00b",
        &format!("?subject={}", "x".repeat(1025)),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let path = format!("/admin/grants{query}");
            let (status, body, _) = call(&app, method.clone(), &path, Some(ADMIN_TOKEN)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
            assert_eq!(body["error"], "invalid_request", "{path}");
        }
    }
    let (status, _, _) = call(
        &app,
        reqwest::Method::POST,
        "/admin/grants?subject=a",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_deleted_client_is_gone_with_its_grants_and_a_client_s_grants_go_alone() {
    let app = admin_app().await;
    let registered: Value = app
        .api
        .post(app.url("/oauth/register"))
        .json(
            &json!({"client_name": "Doomed", "redirect_uris": ["http://127.0.0.1:7/cb"],
                      "token_endpoint_auth_method": "client_secret_basic"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let listed = admin_get(&app, "/admin/clients").await;
    let clients = listed["clients"].as_array().unwrap();
    assert_eq!(
        clients.len(),
        1,
        "configured clients are not listed: {listed}"
    );
    assert_eq!(clients[0]["client_id"], client_id.as_str());
    assert_eq!(clients[0]["client_name"], "Doomed");
    assert!(clients[0]["last_used_at"].is_null());
    let text = listed.to_string();
    assert!(
        !text.contains("secret_hash") && !text.contains("$2"),
        "{text}"
    );

    // A user signs in to it; the public client's grant is another's.
    let public = app.tokens().await;
    let pkce = Pkce::new();
    let mut params = app.authorize_params(&pkce);
    for (name, value) in params.iter_mut() {
        match *name {
            "client_id" => *value = client_id.clone(),
            "redirect_uri" => *value = "http://127.0.0.1:7/cb".to_owned(),
            _ => {}
        }
    }
    let code = query_of(&location(&app.sign_in(&params).await))["code"].clone();
    let doomed: Value = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(&client_id, registered["client_secret"].as_str())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", "http://127.0.0.1:7/cb"),
            ("code_verifier", pkce.verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let doomed_access = doomed["access_token"].as_str().unwrap();
    assert_eq!(
        app.introspect_as_web_client(doomed_access).await["active"],
        true
    );
    let (status, body) = admin_delete(&app, &format!("/admin/grants?client_id={WEB_CLIENT}")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"revoked": 0})));

    let (status, body) = admin_delete(&app, &format!("/admin/clients/{client_id}")).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(
        admin_get(&app, "/admin/clients").await,
        json!({"clients": []})
    );
    let (status, body) = admin_delete(&app, &format!("/admin/clients/{client_id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    let (status, _) = admin_delete(&app, &format!("/admin/clients/{PUBLIC_CLIENT}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a configured client stays");
    assert_eq!(
        app.introspect_as_web_client(doomed_access).await,
        json!({"active": false}),
        "its grant went with it"
    );
    let refresh = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(&client_id, registered["client_secret"].as_str())
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                doomed["refresh_token"].as_str().unwrap_or("none"),
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), StatusCode::UNAUTHORIZED);
    let still = app.refresh(public["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        still.status(),
        StatusCode::OK,
        "another client's grant stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_is_refused_by_the_other_s_proxy_and_introspection() {
    let Some(database) = crate::postgres::test_database().await else {
        return;
    };
    let upstream = McpUpstream::start().await;
    let instance = |behind: Option<(String, String)>| {
        let url = database.url.clone();
        let mcp = upstream.url.clone();
        spawn_app_with(Options {
            configure: configure(move |config| {
                postgres(config, &url);
                with_admin(config);
                config.proxy = Some(ProxyConfig::forwarding_to(mcp));
            }),
            public_url: behind.as_ref().map(|(issuer, _)| issuer.clone()),
            upstream_issuer: behind.map(|(_, provider)| provider),
            ..Options::default()
        })
    };
    let a = instance(None).await;
    let b = instance(Some((a.issuer.clone(), a.provider.issuer.clone()))).await;
    let resource = format!("{}/mcp", a.issuer);
    let pkce = Pkce::new();
    let mut params = a.authorize_params(&pkce);
    params.retain(|(name, _)| *name != "resource");
    params.push(("resource", resource.clone()));
    let code = query_of(&location(&a.sign_in(&params).await))["code"].clone();
    let tokens: Value = a.redeem_code(&code, &pkce).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let through_b = || {
        b.api
            .post(b.url("/mcp"))
            .bearer_auth(access)
            .header("content-type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
            .send()
    };
    assert_eq!(through_b().await.unwrap().status(), StatusCode::OK);
    let listed = admin_get(&b, &format!("/admin/grants?subject={SUBJECT}")).await;
    assert_eq!(listed["grants"][0]["audience"], resource.as_str());

    let (status, body) = admin_delete(&a, &format!("/admin/grants?subject={SUBJECT}")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"revoked": 1})));
    let refused = through_b().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        b.introspect_as_web_client(access).await,
        json!({"active": false})
    );
    let refresh = b.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    oauth_error(refresh, StatusCode::BAD_REQUEST, "invalid_grant").await;
    database.drop_database().await;
}

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-oauth-bridge");

/// `mcp-oauth-bridge admin …` against `url`, with the token in its environment variable.
async fn command_line(url: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(BINARY)
        .arg("admin")
        .args(["--url", url])
        .args(args)
        .env("MCP_OAUTH_BRIDGE_ADMIN_TOKEN", token)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_lists_and_revokes_through_the_api() {
    let app = admin_app().await;
    let tokens = app.tokens().await;
    let (ok, out, err) =
        command_line(&app.origin, ADMIN_TOKEN, &["grants", "--subject", SUBJECT]).await;
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["grants"][0]["client_id"], PUBLIC_CLIENT);
    let (ok, _, err) = command_line("http://192.0.2.1:8080", ADMIN_TOKEN, &["clients"]).await;
    assert!(!ok);
    assert!(
        err.contains("use https"),
        "the token is not sent in clear: {err}"
    );
    let (ok, _, err) = command_line(&app.origin, "not-the-token", &["clients"]).await;
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    let (ok, _, err) = command_line(&app.origin, ADMIN_TOKEN, &["grants"]).await;
    assert!(!ok, "an owner is required");
    assert!(err.contains("--subject"), "{err}");
    let (ok, out, err) = command_line(
        &app.origin,
        ADMIN_TOKEN,
        &["revoke", "--client-id", PUBLIC_CLIENT],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"revoked": 1})
    );
    let refresh = app.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    oauth_error(refresh, StatusCode::BAD_REQUEST, "invalid_grant").await;
    let (ok, _, err) =
        command_line(&app.origin, ADMIN_TOKEN, &["delete-client", "nobody/../x"]).await;
    assert!(!ok);
    assert!(err.contains("404"), "{err}");

    let mut hashing = std::process::Command::new(BINARY)
        .args(["admin", "hash-token"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    hashing
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{ADMIN_TOKEN}\n").as_bytes())
        .unwrap();
    let output = hashing.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim(),
        mcp_oauth_bridge::oauth::admin::hashed_token(ADMIN_TOKEN)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_admin_address_alone_every_action_and_refusal_is_in_the_audit_trail() {
    use crate::log_hygiene::{Bridge, LoginForm, browser, free_port, local_login_config, unique};
    let password = unique("local-user-password");
    let hash = bcrypt::hash(&password, 4).unwrap();
    let (port, admin_port) = (free_port().await, free_port().await);
    let trail = std::env::temp_dir().join(format!("{}.jsonl", unique("mob-admin-audit")));
    let config = local_login_config(port, &hash)
        + &format!(
            "admin: {{ tokens: [\"{hashed}\"], address: \"127.0.0.1:{admin_port}\" }}\n\
             audit: {{ output: file, file: \"{trail}\" }}\n",
            hashed = mcp_oauth_bridge::oauth::admin::hashed_token(ADMIN_TOKEN),
            trail = trail.display(),
        );
    let bridge = Bridge::start_logging(port, &config, "text", "warn").await;
    let browser = browser();
    let pkce = Pkce::new();
    let form = LoginForm::open(&bridge, &browser, &pkce).await;
    let signed_in = browser
        .post(bridge.url("/oauth/login"))
        .form(&[
            ("state", form.state.as_str()),
            ("csrf", form.csrf.as_str()),
            ("username", "ada"),
            ("password", password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let code = query_of(&location(&signed_in))["code"].clone();
    let tokens = reqwest::Client::new()
        .post(bridge.url("/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "cli"),
            ("code", code.as_str()),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", pkce.verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(tokens.status(), StatusCode::OK);

    let main = reqwest::Client::new()
        .get(bridge.url("/admin/clients"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        main.status(),
        StatusCode::NOT_FOUND,
        "not on server.address"
    );
    let admin_url = format!("http://127.0.0.1:{admin_port}");
    let health = reqwest::get(format!("{admin_url}/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::NOT_FOUND, "nothing else there");
    let (ok, out, err) = command_line(
        &admin_url,
        ADMIN_TOKEN,
        &["grants", "--subject", "user-ada"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["grants"][0]["client_id"],
        "cli"
    );
    let (ok, _, _) = command_line(&admin_url, &unique("not-an-admin-token"), &["clients"]).await;
    assert!(!ok);
    let (ok, out, err) = command_line(
        &admin_url,
        ADMIN_TOKEN,
        &["revoke", "--subject", "user-ada"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"revoked":1}"#);

    bridge.stop().await;
    let text = std::fs::read_to_string(&trail).unwrap();
    let _ = std::fs::remove_file(&trail);
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|line: &Value| line["event"].as_str().unwrap().starts_with("admin."))
        .collect();
    let fingerprint = &mcp_oauth_bridge::oauth::admin::hashed_token(ADMIN_TOKEN)[7..15];
    let expected = [
        json!({"event": "admin.action", "admin": fingerprint, "action": "grants.list",
               "subject": "user-ada", "count": 1}),
        json!({"event": "admin.refused", "reason": "invalid"}),
        json!({"event": "admin.action", "admin": fingerprint, "action": "grants.revoke",
               "subject": "user-ada", "count": 1}),
    ];
    assert_eq!(lines.len(), expected.len(), "{text}");
    for (line, expected) in lines.iter().zip(expected) {
        for (field, value) in expected.as_object().unwrap() {
            assert_eq!(&line[field], value, "{line}");
        }
        assert_eq!(line["client_address"], "127.0.0.1", "{line}");
        assert!(line["request_id"].is_string(), "{line}");
    }
    assert!(!text.contains(ADMIN_TOKEN));
}
