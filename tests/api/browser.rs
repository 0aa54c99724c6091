//! The consent page and the local login form in a real browser (headless Debian Chromium, driven by playwright-core).
//! Needs `chromium` and `npm ci` in tests/browser, which `.ci/run` installs; run with
//! `cargo test --test api -- --ignored browser`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

/// Runs a script of tests/browser in node on a blocking thread (the app serves on this test's
/// runtime meanwhile); its last line of output is a JSON report.
async fn run_browser_script(script: &str, args: Vec<String>) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command_args = vec![
        root.join("tests/browser")
            .join(script)
            .display()
            .to_string(),
    ];
    command_args.extend(args);
    let output =
        tokio::task::spawn_blocking(move || Command::new("node").args(command_args).output())
            .await
            .unwrap()
            .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

fn screenshot_path(name: &str) -> std::path::PathBuf {
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let path = screenshots.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test]
#[ignore = "needs Chromium and tests/browser/node_modules; .ci/run installs both and runs it"]
async fn browser_signs_in_at_the_local_login_form_and_reaches_the_client() {
    let app = crate::local_login::spawn_local(None).await;
    let pkce = Pkce::new();
    let mut authorize = url::Url::parse(&app.url("/oauth/authorize")).unwrap();
    authorize
        .query_pairs_mut()
        .extend_pairs(app.authorize_params(&pkce));
    let screenshot = screenshot_path("login.png");
    let report = run_browser_script(
        "login.mjs",
        vec![
            authorize.to_string(),
            screenshot.display().to_string(),
            PUBLIC_REDIRECT.to_owned(),
            "demo".to_owned(),
            crate::local_login::DEMO_PASSWORD.to_owned(),
        ],
    )
    .await;
    assert!(
        report["loginUrl"]
            .as_str()
            .unwrap()
            .starts_with(&app.url("/oauth/login?state="))
    );
    assert_eq!(report["framing"], "DENY");
    assert_eq!(report["heading"], "Sign in");
    assert_eq!(report["error"], "Wrong username or password.");
    let reached = report["clientReached"]
        .as_str()
        .expect("the browser reached the client");
    let query = query_of(reached);
    assert_eq!(query["iss"], app.issuer);
    let png = std::fs::read(&screenshot).expect("a screenshot was taken");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("login page screenshot: {}", screenshot.display());
    let response = app.redeem_code(&query["code"], &pkce).await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
#[ignore = "needs Chromium and tests/browser/node_modules; .ci/run installs both and runs it"]
async fn browser_approves_the_consent_page_and_reaches_the_client() {
    let app = spawn_app().await;
    let pkce = Pkce::new();
    let mut authorize = url::Url::parse(&app.url("/oauth/authorize")).unwrap();
    authorize
        .query_pairs_mut()
        .extend_pairs(app.authorize_params(&pkce));
    let screenshot = screenshot_path("consent.png");
    let report = run_browser_script(
        "consent.mjs",
        vec![
            authorize.to_string(),
            screenshot.display().to_string(),
            PUBLIC_REDIRECT.to_owned(),
        ],
    )
    .await;

    assert_eq!(report["consentStatus"], 200);
    assert!(
        report["consentUrl"]
            .as_str()
            .unwrap()
            .starts_with(&app.url("/oauth/consent"))
    );
    assert_eq!(
        report["heading"],
        "Allow MCP command line to access your account?"
    );
    assert_eq!(report["framing"], "DENY");
    let reached = report["clientReached"]
        .as_str()
        .expect("the browser reached the client");
    let query = query_of(reached);
    assert_eq!(query["state"], "client-state-1");
    assert_eq!(query["iss"], app.issuer);
    let png = std::fs::read(&screenshot).expect("a screenshot was taken");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    println!("consent page screenshot: {}", screenshot.display());

    // The code the browser brought back is good at the token endpoint.
    let response = app.redeem_code(&query["code"], &pkce).await;
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

/// How the README's deployment dresses its pages: a name, a logo file, a support link.
fn branded(config: &mut mcp_oauth_bridge::config::Config) {
    let logo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/logo.svg");
    config.ui = serde_yaml::from_str(&format!(
        "title: Example Corp\nlogo_file: \"{}\"\nsupport_url: https://help.example.com/\n",
        logo.display()
    ))
    .unwrap();
}

/// An authorization URL of the web client (no consent page: it is first-party).
fn web_authorize(app: &TestApp) -> String {
    let pkce = Pkce::new();
    let mut url = url::Url::parse(&app.url("/oauth/authorize")).unwrap();
    url.query_pairs_mut().extend_pairs([
        ("client_id", WEB_CLIENT),
        ("redirect_uri", WEB_REDIRECT),
        ("response_type", "code"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", "s"),
        ("scope", "openid email"),
    ]);
    url.to_string()
}

/// The consent, login, chooser and error pages in English and German, light and dark: axe-core
/// finds no WCAG 2.1 A or AA violation, each page says its language, runs no script, fits 320 px
/// and shows where the focus is; the screenshots the README shows are saved in docs/screenshots.
#[tokio::test]
#[ignore = "needs Chromium and tests/browser/node_modules; .ci/run installs both and runs it"]
async fn every_page_passes_axe_in_two_languages_and_both_colour_schemes() {
    let consenting = spawn_app_with(Options {
        configure: configure(branded),
        ..Options::default()
    })
    .await;
    let mut consent = url::Url::parse(&consenting.url("/oauth/authorize")).unwrap();
    let mut params = consenting.authorize_params(&Pkce::new());
    params.retain(|(name, _)| *name != "scope");
    params.push(("scope", "openid email profile offline_access".into()));
    consent.query_pairs_mut().extend_pairs(params);
    let local = spawn_app_with(Options {
        configure: configure(|config| {
            crate::local_login::local_users(config);
            branded(config);
        }),
        ..Options::default()
    })
    .await;
    let (choosing, _partner) = crate::providers::two_providers_configured(|_| {}, branded).await;
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let plan = serde_json::json!({
        "pages": [
            {"name": "consent", "url": consent.to_string()},
            {"name": "login", "url": web_authorize(&local)},
            {"name": "login-error", "url": web_authorize(&local), "wrong_password": true},
            {"name": "chooser", "url": web_authorize(&choosing)},
            {"name": "error", "url": consenting.url("/oauth/authorize?client_id=nobody")},
        ],
        "languages": ["en", "de"],
        "schemes": ["light", "dark"],
        "screenshots": screenshots.display().to_string(),
        "client_redirect": PUBLIC_REDIRECT,
    });
    let plan_path =
        std::env::temp_dir().join(format!("mob-pages-{:x}.json", rand::random::<u64>()));
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let report = run_browser_script("pages.mjs", vec![plan_path.display().to_string()]).await;
    let _ = std::fs::remove_file(&plan_path);

    let headings = [
        (
            "consent",
            "en",
            "Allow MCP command line to access your account?",
        ),
        (
            "consent",
            "de",
            "Darf MCP command line auf Ihr Konto zugreifen?",
        ),
        ("login", "en", "Sign in"),
        ("login", "de", "Anmelden"),
        ("login-error", "en", "Sign in"),
        ("login-error", "de", "Anmelden"),
        ("chooser", "en", "Where do you have your account?"),
        ("chooser", "de", "Wo haben Sie Ihr Konto?"),
        ("error", "en", "Sign-in failed"),
        ("error", "de", "Anmeldung fehlgeschlagen"),
    ];
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 20, "{report}");
    for result in results {
        let (page, language) = (
            result["page"].as_str().unwrap(),
            result["language"].as_str().unwrap(),
        );
        let what = format!("{page} in {language}, {}: {result}", result["scheme"]);
        let heading = headings
            .iter()
            .find(|(p, l, _)| *p == page && *l == language)
            .map(|(_, _, heading)| *heading)
            .unwrap();
        assert_eq!(result["heading"], heading, "{what}");
        assert_eq!(result["lang"], language, "{what}");
        let status = if page == "error" { 400 } else { 200 };
        assert_eq!(result["status"], status, "{what}");
        assert_eq!(result["violations"], serde_json::json!([]), "{what}");
        assert!(
            result["rulesPassed"].as_u64().unwrap() > 5,
            "axe ran: {what}"
        );
        assert_eq!(result["scripts"], 0, "{what}");
        assert_eq!(result["overflowsAt320"], false, "{what}");
        assert_eq!(result["focusRing"], true, "{what}");
        assert_eq!(result["violationsAt320"], serde_json::json!([]), "{what}");
        assert_eq!(result["logoShown"], true, "{what}");
        if page == "login-error" {
            assert_eq!(result["announced"], true, "{what}");
        }
    }
    // Without JavaScript, a person signs in all the same (the form posts; the error comes back).
    assert_eq!(
        report["withoutScript"]["error"], "Wrong username or password.",
        "{report}"
    );
    for page in ["consent", "login", "chooser", "error"] {
        for scheme in ["light", "dark"] {
            let png = std::fs::read(screenshots.join(format!("{page}-{scheme}.png"))).unwrap();
            assert!(png.starts_with(b"\x89PNG"), "{page}-{scheme}");
        }
    }
}
