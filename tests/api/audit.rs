//! The audit trail of the released binary, written to a file of its own: every security event of
//! a grant's life in order, each line JSON with its time, request and client address, none of
//! them quoting a secret, and none of them silenced by `RUST_LOG` or mixed into the log.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Pkce, location, query_of};
use crate::log_hygiene::{
    Bridge, LoginForm, browser, cookie_values, free_port, local_login_config, unique,
};
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

/// A sign-in through the consent page to the client's code, by this browser.
async fn sign_in(
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
    let consent_token = query_of(&location(&authorize))["request"].clone();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_follows_a_grant_from_registration_to_revocation_and_quotes_no_secret() {
    let provider = TestProvider::start().await;
    let trail_path = audit_file();
    let port = free_port().await;
    let config = format!(
        r#"
server:
  address: "127.0.0.1:{port}"
  public_url: "{{origin}}"
oauth:
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
    // The service's log says only warnings: the trail must not depend on it.
    let bridge = Bridge::start_logging(port, &config, "json", "warn").await;
    let api = reqwest::Client::new();
    let browser = browser();
    let mut secrets: Vec<String> = provider.secrets();

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
    let denied = sign_in(&bridge, &browser, &client_id, &pkce, "deny", &mut secrets).await;
    assert_eq!(query_of(&location(&denied))["error"], "access_denied");
    let allowed = sign_in(&bridge, &browser, &client_id, &pkce, "allow", &mut secrets).await;
    let state = query_of(&location(&allowed))["state"].clone();
    secrets.push(state.clone());
    let refused = browser
        .get(bridge.url("/oauth/callback"))
        .query(&[("state", state.as_str()), ("error", "access_denied")])
        .send()
        .await
        .unwrap();
    assert_eq!(query_of(&location(&refused))["error"], "access_denied");
    let allowed = sign_in(&bridge, &browser, &client_id, &pkce, "allow", &mut secrets).await;
    let to_upstream = location(&allowed);
    secrets.push(query_of(&to_upstream)["state"].clone());
    let to_callback = location(&browser.get(&to_upstream).send().await.unwrap());
    let callback = browser.get(&to_callback).send().await.unwrap();
    secrets.extend(cookie_values(&callback));
    let code = query_of(&location(&callback))["code"].clone();
    secrets.push(code.clone());

    let token = |form: Vec<(&'static str, String)>| {
        let request = api
            .post(bridge.url("/oauth/token"))
            .basic_auth(&client_id, Some(&client_secret))
            .form(&form);
        async move { request.send().await.unwrap() }
    };
    let code_form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.clone()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("code_verifier", pkce.verifier.clone()),
    ];
    let tokens: Value = token(code_form.clone()).await.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([access.clone(), refresh.clone()]);
    secrets.push(tokens["id_token"].as_str().unwrap().to_owned());
    let refresh_form = |refresh: &str| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh.to_owned()),
        ]
    };
    let refreshed: Value = token(refresh_form(&refresh)).await.json().await.unwrap();
    secrets.extend([
        refreshed["access_token"].as_str().unwrap().to_owned(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
    ]);
    // The first refresh token again, after its successor was used: a reuse.
    let successor = refreshed["refresh_token"].as_str().unwrap().to_owned();
    let again: Value = token(refresh_form(&successor)).await.json().await.unwrap();
    secrets.extend([
        again["access_token"].as_str().unwrap().to_owned(),
        again["refresh_token"].as_str().unwrap().to_owned(),
    ]);
    let live_access = again["access_token"].as_str().unwrap().to_owned();
    let revoked = api
        .post(bridge.url("/oauth/revoke"))
        .basic_auth(&client_id, Some(&client_secret))
        .form(&[
            ("token", live_access.as_str()),
            ("token_type_hint", "access_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let reused = token(refresh_form(&refresh)).await;
    assert_eq!(reused.status(), StatusCode::BAD_REQUEST);
    // The code again: its grant, revoked already, is revoked again.
    assert_eq!(
        token(code_form).await.status(),
        StatusCode::BAD_REQUEST,
        "a replayed code"
    );
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
            "token.issued",
            "token.issued",
            "token.revoked",
            "refresh.reuse_detected",
            "grant.revoked",
            "grant.revoked",
            "client.deleted",
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
    let subject = only(&trail, "sign_in.succeeded")["subject"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(subject, "upstream-user-42");
    let granted = only(&trail, "consent.granted");
    assert_eq!(granted["subject"], subject.as_str());
    assert_eq!(granted["redirect_uri"], REDIRECT);
    let issued = events_named(&trail, "token.issued");
    assert_eq!(issued[0]["grant_type"], "authorization_code");
    assert_eq!(issued[1]["grant_type"], "refresh_token");
    let family = issued[0]["family_id"].as_str().unwrap();
    for token in &issued {
        assert_eq!(token["family_id"], family, "one grant: {token}");
        assert_eq!(token["subject"], subject.as_str());
        assert_eq!(token["client_id"], client_id.as_str());
        assert_eq!(token["audience"], origin.as_str(), "{token}");
        assert!(!token["jti"].as_str().unwrap().is_empty());
    }
    let jtis: Vec<&str> = issued.iter().map(|t| t["jti"].as_str().unwrap()).collect();
    assert_eq!(
        jtis.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );
    assert_eq!(only(&trail, "refresh.reuse_detected")["family_id"], family);
    let revocations = events_named(&trail, "grant.revoked");
    assert_eq!(revocations[0]["reason"], "refresh_reuse");
    assert_eq!(revocations[1]["reason"], "code_replay");
    assert!(revocations.iter().all(|r| r["family_id"] == family));
    let token_revoked = only(&trail, "token.revoked");
    assert_eq!(token_revoked["jti"], jtis[2]);
    assert_eq!(token_revoked["subject"], subject.as_str());
    assert_eq!(only(&trail, "client.deleted")["reason"], "client_request");

    for secret in &secrets {
        assert!(secret.len() >= 8, "too short to search for: {secret:?}");
        assert!(!text.contains(secret.as_str()), "a secret is in the trail");
    }
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
    let config = local_login_config(port, &hash);
    let bridge = Bridge::start_logging(port, &config, "text", "audit=info").await;
    let browser = browser();
    let pkce = Pkce::new();
    let form = LoginForm::open(&bridge, &browser, &pkce).await;
    let (state, csrf) = (form.state, form.csrf);
    for (username, attempt) in [
        (typed_password.as_str(), "whatever-it-is"),
        ("ADA", "not-her-password"),
        ("ada", password.as_str()),
    ] {
        browser
            .post(bridge.url("/oauth/login"))
            .form(&[
                ("state", state.as_str()),
                ("csrf", csrf.as_str()),
                ("username", username),
                ("password", attempt),
            ])
            .send()
            .await
            .unwrap();
    }
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
            ("sign_in.succeeded", None, Some("user-ada")),
        ],
        "{log}"
    );
    assert!(
        trail
            .iter()
            .all(|line| line["provider"] == "local" && line["client_id"] == "cli")
    );
    assert!(!log.contains(&typed_password), "{log}");
    assert!(!log.contains(&password), "{log}");
}
