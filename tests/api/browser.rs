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
