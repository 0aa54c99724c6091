//! The audit trail of the released binary, written to a file of its own: every security event of
//! a grant's life in order, each line JSON with its time, request and client address, none of
//! them quoting a secret, and none of them silenced by `RUST_LOG` or mixed into the log.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Pkce, location, query_of};
use crate::log_hygiene::{Bridge, LoginForm, browser, cookie_values, free_port, unique};
use crate::oidc_provider::{self, TestProvider};

const REDIRECT: &str = "http://127.0.0.1:9/cb";

fn audit_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}.jsonl", unique("mob-audit")))
}

/// The audit file's lines, each parsed; a line that is not a JSON object fails the test.
fn read_trail(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

fn events_named<'a>(trail: &'a [Value], name: &str) -> Vec<&'a Value> {
    trail.iter().filter(|line| line["event"] == name).collect()
}

fn only<'a>(trail: &'a [Value], name: &str) -> &'a Value {
    let found = events_named(trail, name);
    assert_eq!(found.len(), 1, "one {name} expected in {trail:#?}");
    found[0]
}

/// An authorization by this browser, through the consent page (answered with `decision`) when
/// the bridge shows one; the response that sends the browser on.
async fn authorize(
    bridge: &Bridge,
    browser: &reqwest::Client,
    client_id: &str,
    pkce: &Pkce,
    decision: &str,
    secrets: &mut Vec<String>,
) -> reqwest::Response {
    let authorize = browser
        .get(bridge.url("/oauth/authorize"))
        .query(&[
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
            ("scope", "openid email offline_access"),
        ])
        .send()
        .await
        .unwrap();
    secrets.extend(cookie_values(&authorize));
    let next = location(&authorize);
    if !next.starts_with(&bridge.url("/oauth/consent")) {
        return authorize;
    }
    let consent_token = query_of(&next)["request"].clone();
    secrets.push(consent_token.clone());
    let decided = browser
        .post(bridge.url("/oauth/consent"))
        .form(&[("request", consent_token.as_str()), ("decision", decision)])
        .send()
        .await
        .unwrap();
    secrets.extend(cookie_values(&decided));
    decided
}

/// A whole sign-in at the test provider, approving the client: the code the client gets.
async fn signed_in_code(
    bridge: &Bridge,
    browser: &reqwest::Client,
    client_id: &str,
    pkce: &Pkce,
    secrets: &mut Vec<String>,
) -> String {
    let allowed = authorize(bridge, browser, client_id, pkce, "allow", secrets).await;
    let to_upstream = location(&allowed);
    secrets.push(query_of(&to_upstream)["state"].clone());
    let to_callback = location(&browser.get(&to_upstream).send().await.unwrap());
    let callback = browser.get(&to_callback).send().await.unwrap();
    secrets.extend(cookie_values(&callback));
    let code = query_of(&location(&callback))["code"].clone();
    secrets.push(code.clone());
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_follows_grants_from_registration_to_revocation_and_quotes_no_secret() {
    let provider = TestProvider::start().await;
    let trail_path = audit_file();
    let port = free_port().await;
    let service_secret = unique("service-client-secret");
    let config = format!(
        r#"
server:
  address: "127.0.0.1:{port}"
  public_url: "{{origin}}"
oauth:
  clients:
    - {{ id: service, secret: "{service_secret}", grant_types: [client_credentials] }}
  dcr:
    enabled: true
    allowed_redirect_profiles: [loopback]
  upstream:
    issuer: "{issuer}"
    client_id: {client_id}
    client_secret: "{client_secret}"
audit:
  output: file
  file: "{trail}"
"#,
        issuer = provider.issuer,
        client_id = oidc_provider::CLIENT_ID,
        client_secret = oidc_provider::CLIENT_SECRET,
        trail = trail_path.display(),
    );
    // Everything at info goes to the log: the trail must go to its file instead.
    let bridge = Bridge::start_logging(port, &config, "json", "info").await;
    let api = reqwest::Client::new();
    let browser = browser();
    let mut secrets: Vec<String> = provider.secrets();
    secrets.push(service_secret.clone());

    let registered: Value = api
        .post(bridge.url("/oauth/register"))
        .json(
            &json!({"client_name": "Audited \"App\" <x>", "redirect_uris": [REDIRECT],
                      "grant_types": ["authorization_code", "refresh_token"]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let client_secret = registered["client_secret"].as_str().unwrap().to_owned();
    let registration_token = registered["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    secrets.extend([client_secret.clone(), registration_token.clone()]);

    // Denied on the consent page, then refused by the provider, then allowed through.
    let pkce = Pkce::new();
    secrets.push(pkce.verifier.clone());
    let denied = authorize(&bridge, &browser, &client_id, &pkce, "deny", &mut secrets).await;
    assert_eq!(query_of(&location(&denied))["error"], "access_denied");
    let allowed = authorize(&bridge, &browser, &client_id, &pkce, "allow", &mut secrets).await;
    let state = query_of(&location(&allowed))["state"].clone();
    secrets.push(state.clone());
    let refused = browser
        .get(bridge.url("/oauth/callback"))
        .query(&[("state", state.as_str()), ("error", "access_denied")])
        .send()
        .await
        .unwrap();
    assert_eq!(query_of(&location(&refused))["error"], "access_denied");

    let token = |form: Vec<(&'static str, String)>| {
        let request = api
            .post(bridge.url("/oauth/token"))
            .basic_auth(&client_id, Some(&client_secret))
            // Chosen by the client: not the id the trail files the request under.
            .header("x-request-id", "forged-request-id")
            .form(&form);
        async move { request.send().await.unwrap() }
    };
    let code_form = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", pkce.verifier.clone()),
        ]
    };
    let issued = |tokens: &Value, secrets: &mut Vec<String>| {
        for name in ["access_token", "refresh_token", "id_token"] {
            if let Some(value) = tokens[name].as_str() {
                secrets.push(value.to_owned());
            }
        }
    };
    // A grant whose code is then replayed: it is revoked.
    let first = signed_in_code(&bridge, &browser, &client_id, &pkce, &mut secrets).await;
    let tokens: Value = token(code_form(&first)).await.json().await.unwrap();
    issued(&tokens, &mut secrets);
    assert_eq!(
        token(code_form(&first)).await.status(),
        StatusCode::BAD_REQUEST
    );

    // A grant refreshed twice, one access token revoked, then the first refresh token reused.
    let second = signed_in_code(&bridge, &browser, &client_id, &pkce, &mut secrets).await;
    let tokens: Value = token(code_form(&second)).await.json().await.unwrap();
    issued(&tokens, &mut secrets);
    let refresh_form = |refresh: &str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh.to_owned()),
        ]
    };
    let original = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refreshed: Value = token(refresh_form(&original)).await.json().await.unwrap();
    issued(&refreshed, &mut secrets);
    let again: Value = token(refresh_form(refreshed["refresh_token"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    issued(&again, &mut secrets);
    let revoked = api
        .post(bridge.url("/oauth/revoke"))
        .basic_auth(&client_id, Some(&client_secret))
        .form(&[
            ("token", again["access_token"].as_str().unwrap()),
            ("token_type_hint", "access_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        token(refresh_form(&original)).await.status(),
        StatusCode::BAD_REQUEST
    );

    let service: Value = api
        .post(bridge.url("/oauth/token"))
        .basic_auth("service", Some(&service_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    issued(&service, &mut secrets);

    // A live grant when the registration is deleted: it goes with it.
    let third = signed_in_code(&bridge, &browser, &client_id, &pkce, &mut secrets).await;
    let tokens: Value = token(code_form(&third)).await.json().await.unwrap();
    issued(&tokens, &mut secrets);
    let deleted = api
        .delete(bridge.url(&format!("/oauth/register/{client_id}")))
        .bearer_auth(&registration_token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let origin = bridge.url("");
    let log = bridge.stop().await;
    let trail = read_trail(&trail_path);
    let text = std::fs::read_to_string(&trail_path).unwrap();
    let _ = std::fs::remove_file(&trail_path);
    let names: Vec<&str> = trail.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(
        names,
        [
            "client.registered",
            "consent.denied",
            "sign_in.failed",
            "consent.granted",
            "sign_in.succeeded",
            "token.issued",
            "grant.revoked",
            "sign_in.succeeded",
            "token.issued",
            "token.issued",
            "token.issued",
            "token.revoked",
            "refresh.reuse_detected",
            "grant.revoked",
            "token.issued",
            "sign_in.succeeded",
            "token.issued",
            "client.deleted",
            "grant.revoked",
        ],
        "{trail:#?}"
    );
    for line in &trail {
        assert!(
            chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).is_ok(),
            "{line}"
        );
        assert_eq!(line["client_address"], "127.0.0.1", "{line}");
        assert_eq!(line["request_id"].as_str().unwrap().len(), 36, "{line}");
    }
    assert!(!text.contains("forged-request-id"));
    let registered = only(&trail, "client.registered");
    assert_eq!(registered["client_id"], client_id.as_str());
    assert_eq!(registered["client_name"], "Audited \"App\" <x>");
    assert_eq!(registered["redirect_uris"], json!([REDIRECT]));
    assert_eq!(
        registered["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    let denied = only(&trail, "consent.denied");
    assert_eq!(denied["client_id"], client_id.as_str());
    assert_eq!(
        denied["scope"],
        json!(["openid", "email", "offline_access"])
    );
    let failed = only(&trail, "sign_in.failed");
    assert_eq!(failed["provider"], "upstream");
    assert_eq!(failed["reason"], "denied");
    assert_eq!(failed["error"], "access_denied");
    assert_eq!(failed["client_id"], client_id.as_str());
    let sign_ins = events_named(&trail, "sign_in.succeeded");
    let subject = "upstream-user-42";
    assert!(
        sign_ins
            .iter()
            .all(|s| s["subject"] == subject && s["provider"] == "upstream")
    );
    let granted = only(&trail, "consent.granted");
    assert_eq!(granted["subject"], subject);
    assert_eq!(granted["redirect_uri"], REDIRECT);

    let issued = events_named(&trail, "token.issued");
    let grant_types: Vec<&str> = issued
        .iter()
        .map(|t| t["grant_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        grant_types,
        [
            "authorization_code",
            "authorization_code",
            "refresh_token",
            "refresh_token",
            "client_credentials",
            "authorization_code"
        ]
    );
    let families: Vec<&str> = issued
        .iter()
        .filter_map(|t| t["family_id"].as_str())
        .collect();
    assert_eq!(families.len(), 5, "client_credentials records no grant");
    let (first, second, third) = (families[0], families[1], families[4]);
    assert!(first != second && second != third && first != third);
    assert_eq!(
        families[2..4],
        [second, second],
        "refreshes stay in their grant"
    );
    for token in &issued[..4] {
        assert_eq!(token["subject"], subject);
        assert_eq!(token["client_id"], client_id.as_str());
        assert_eq!(token["audience"], origin.as_str(), "{token}");
    }
    assert_eq!(issued[4]["client_id"], "service");
    assert_eq!(issued[4]["subject"], "service");
    let jtis: std::collections::HashSet<&str> =
        issued.iter().map(|t| t["jti"].as_str().unwrap()).collect();
    assert_eq!(jtis.len(), 6);
    let revocations = events_named(&trail, "grant.revoked");
    let revoked: Vec<(&str, &str)> = revocations
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap(),
                r["family_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        revoked,
        [
            ("code_replay", first),
            ("refresh_reuse", second),
            ("client_deleted", third)
        ]
    );
    assert_eq!(only(&trail, "refresh.reuse_detected")["family_id"], second);
    let token_revoked = only(&trail, "token.revoked");
    assert_eq!(token_revoked["jti"], issued[3]["jti"]);
    assert_eq!(token_revoked["subject"], subject);
    assert_eq!(only(&trail, "client.deleted")["reason"], "client_request");

    for secret in &secrets {
        assert!(secret.len() >= 8, "too short to search for: {secret:?}");
        assert!(!text.contains(secret.as_str()), "a secret is in the trail");
    }
    assert!(
        log.contains("finished processing request") || log.contains("\"level\":\"INFO\""),
        "the log has info lines"
    );
    assert!(
        !log.contains("token.issued") && !log.contains("\"target\":\"audit\""),
        "the trail went to its file, not into the log:\n{log}"
    );
}

#[tokio::test]
async fn by_default_the_trail_is_in_the_log_and_a_refused_login_names_only_users_that_exist() {
    let password = unique("local-user-password");
    // What a user types into the username field by mistake: never to be written down.
    let typed_password = unique("password-in-the-username-field");
    let hash = bcrypt::hash(&password, 4).unwrap();
    let port = free_port().await;
    let config = format!(
        r#"
server:
  address: "127.0.0.1:{port}"
  public_url: "{{origin}}"
oauth:
  clients:
    - {{ id: cli, redirect_uris: ["http://127.0.0.1/cb"], skip_consent: true }}
  local_users:
    - {{ username: ada, subject: user-ada, password_hash: "{hash}" }}
    - {{ username: bob, subject: user-bob, password_hash: "{hash}" }}
  login_throttle: {{ slowdown: 0s, max_failures_per_user: 2 }}
"#
    );
    // A RUST_LOG that does not name the trail keeps it.
    let bridge = Bridge::start_logging(port, &config, "text", "mcp_oauth_bridge=warn").await;
    let browser = browser();
    let pkce = Pkce::new();
    let form = LoginForm::open(&bridge, &browser, &pkce).await;
    for (username, attempt) in [
        (typed_password.as_str(), "whatever-it-is"),
        ("ADA", "not-her-password"),
        ("ada", "still-not-her-password"),
        ("ada", password.as_str()),
        ("bob", password.as_str()),
    ] {
        browser
            .post(bridge.url("/oauth/login"))
            .form(&[
                ("state", form.state.as_str()),
                ("csrf", form.csrf.as_str()),
                ("username", username),
                ("password", attempt),
            ])
            .send()
            .await
            .unwrap();
    }
    let cancelled = LoginForm::open(&bridge, &browser, &pkce).await;
    let response = browser
        .post(bridge.url("/oauth/login"))
        .form(&[
            ("state", cancelled.state.as_str()),
            ("csrf", cancelled.csrf.as_str()),
            ("cancel", "Cancel"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(query_of(&location(&response))["error"], "access_denied");
    let log = bridge.stop().await;
    let trail: Vec<Value> = log
        .lines()
        .filter_map(|line| Some(serde_json::from_str(&line[line.find(" audit: ")? + 8..]).unwrap()))
        .collect();
    let outcomes: Vec<(&str, Option<&str>, Option<&str>)> = trail
        .iter()
        .map(|line| {
            (
                line["event"].as_str().unwrap(),
                line["reason"].as_str(),
                line["subject"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("sign_in.failed", Some("wrong_credentials"), None),
            (
                "sign_in.failed",
                Some("wrong_credentials"),
                Some("user-ada")
            ),
            (
                "sign_in.failed",
                Some("wrong_credentials"),
                Some("user-ada")
            ),
            ("sign_in.failed", Some("throttled"), Some("user-ada")),
            ("sign_in.succeeded", None, Some("user-bob")),
            ("sign_in.failed", Some("denied"), None),
        ],
        "{log}"
    );
    assert_eq!(trail[5]["error"], "access_denied");
    assert!(
        trail
            .iter()
            .all(|line| line["provider"] == "local" && line["client_id"] == "cli")
    );
    assert!(!log.contains(&typed_password), "{log}");
    assert!(!log.contains(&password), "{log}");
}

/// With several providers, every line about a sign-in or a logout names the provider, and the
/// subject is the one the provider's prefix made ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_names_the_provider_of_each_sign_in_and_logout() {
    let corp = TestProvider::start().await;
    let partner = TestProvider::start().await;
    let trail_path = audit_file();
    let port = free_port().await;
    let provider = |name: &str, issuer: &str, domain: &str| {
        format!(
            "    - {{ name: {name}, issuer: \"{issuer}\", client_id: {client_id}, client_secret: \"{secret}\", email_domains: [{domain}] }}\n",
            client_id = oidc_provider::CLIENT_ID,
            secret = oidc_provider::CLIENT_SECRET,
        )
    };
    let config = format!(
        "server:\n  address: \"127.0.0.1:{port}\"\n  public_url: \"{{origin}}\"\noauth:\n  clients:\n    - {{ id: cli, redirect_uris: [\"{REDIRECT}\"], skip_consent: true }}\n  upstreams:\n{corp}{partner}audit:\n  output: file\n  file: \"{trail}\"\n",
        corp = provider("corp", &corp.issuer, "corp.example"),
        partner = provider("partner", &partner.issuer, "partner.example"),
        trail = trail_path.display(),
    );
    let bridge = Bridge::start_logging(port, &config, "json", "info").await;
    let browser = browser();
    let sign_in = |hint: &'static str| {
        let (browser, bridge) = (&browser, &bridge);
        async move {
            let pkce = Pkce::new();
            let authorize = browser
                .get(bridge.url("/oauth/authorize"))
                .query(&[
                    ("client_id", "cli"),
                    ("redirect_uri", REDIRECT),
                    ("response_type", "code"),
                    ("code_challenge", &pkce.challenge),
                    ("code_challenge_method", "S256"),
                    ("scope", "openid email"),
                    ("login_hint", hint),
                ])
                .send()
                .await
                .unwrap();
            let at_provider = browser.get(location(&authorize)).send().await.unwrap();
            let back = browser.get(location(&at_provider)).send().await.unwrap();
            let code = query_of(&location(&back))["code"].clone();
            let redeemed = reqwest::Client::new()
                .post(bridge.url("/oauth/token"))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("client_id", "cli"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                    ("code_verifier", &pkce.verifier),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(redeemed.status(), StatusCode::OK);
        }
    };
    sign_in("ada@corp.example").await;
    sign_in("ada@partner.example").await;
    let token = partner.sign_logout_token(&partner.logout_claims(Some("upstream-session-1")));
    let logout = reqwest::Client::new()
        .post(bridge.url("/oauth/backchannel-logout"))
        .form(&[("logout_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::OK);

    let trail = read_trail(&trail_path);
    let signed_in = events_named(&trail, "sign_in.succeeded");
    let named: Vec<(&str, &str)> = signed_in
        .iter()
        .map(|line| {
            (
                line["provider"].as_str().unwrap(),
                line["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            ("corp", "corp|upstream-user-42"),
            ("partner", "partner|upstream-user-42")
        ],
        "{trail:#?}"
    );
    let logout = only(&trail, "logout.backchannel");
    assert_eq!(logout["provider"], "partner");
    assert_eq!(logout["count"], 1, "the partner's session alone: {logout}");
    let revoked = only(&trail, "grant.revoked");
    assert_eq!(revoked["reason"], "backchannel_logout");
    assert_eq!(revoked["provider"], "partner");
    assert_eq!(revoked["subject"], "partner|upstream-user-42");
    let _ = std::fs::remove_file(&trail_path);
}
