//! The pages people see, as a deployment dresses them (`ui`) and in their browser's language.

use reqwest::StatusCode;

use crate::helpers::*;

/// Every one of `expected` is in `html`.
fn assert_has_all(html: &str, expected: &[&str]) {
    for expected in expected {
        assert!(html.contains(expected), "{expected} in {html}");
    }
}

/// The consent page of a fresh authorization, its browser asking for `accept_language`.
async fn consent_in(app: &TestApp, accept_language: Option<&str>) -> reqwest::Response {
    let next = location(&app.get_authorize(&app.authorize_params(&Pkce::new())).await);
    assert!(
        next.starts_with(&app.url("/oauth/consent?request=")),
        "{next}"
    );
    let mut request = app.browser.get(&next);
    if let Some(language) = accept_language {
        request = request.header("accept-language", language);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_consent_page_speaks_the_browsers_language_and_says_what_scopes_mean() {
    let app = spawn_app().await;
    let response = consent_in(&app, Some("de-CH, de;q=0.9, en;q=0.5")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-language"], "de");
    let html = response.text().await.unwrap();
    assert_has_all(
        &html,
        &[
            "<html lang=\"de\">",
            "Darf <strong>MCP command line</strong> auf Ihr Konto zugreifen?",
            "<span class=\"what\">Wissen, wer Sie sind</span> <small class=\"fine\"><code>openid</code></small>",
            "<span class=\"what\">Ihre E-Mail-Adresse sehen</span>",
            "eine Anwendung auf diesem Computer",
            "<button class=\"allow\" type=\"submit\" name=\"decision\" value=\"allow\">Erlauben</button>",
            "Client-ID: <code>mcp-cli</code>",
        ],
    );
    // Japanese, and a language the bridge does not have: English.
    let html = consent_in(&app, Some("ja")).await.text().await.unwrap();
    assert!(
        html.contains("アカウントへのアクセスを許可しますか"),
        "{html}"
    );
    let response = consent_in(&app, Some("sw, tlh;q=0.8")).await;
    assert_eq!(response.headers()["content-language"], "en");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("<span class=\"what\">Know who you are</span>"),
        "{html}"
    );

    // The error page too, with the protocol's words marked as English.
    let response = app
        .browser
        .get(app.url("/oauth/authorize?client_id=nobody"))
        .header("accept-language", "fr")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    assert!(html.contains("<h1>Échec de la connexion</h1>"), "{html}");
    assert!(
        html.contains("<p>L’application a fait une demande que ce service de connexion ne peut pas accepter.</p>"),
        "{html}"
    );
    assert!(
        html.contains("Détails\u{202f}: <span lang=\"en\">"),
        "{html}"
    );
}

#[tokio::test]
async fn a_deployment_brands_the_pages_describes_its_scopes_and_adds_words() {
    let translations = std::env::temp_dir().join(format!("mob-ui-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&translations).unwrap();
    std::fs::write(
        translations.join("de.json"),
        r#"{"consent.allow": "Zugriff erlauben"}"#,
    )
    .unwrap();
    let logo = translations.join("logo.svg");
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#;
    std::fs::write(&logo, svg).unwrap();
    let dir = translations.clone();
    let app = spawn_app_with(Options {
        configure: configure(move |config| {
            config.ui = serde_yaml::from_str(&format!(
                "title: Acme Reports\nlogo_file: \"{}\"\nprimary_color: \"#7a1f5c\"\nsupport_url: mailto:help@acme.example\ndefault_locale: de\ntranslations_dir: \"{}\"\nscope_descriptions:\n  openid: {{ de: Sie erkennen, en: Recognise you }}\n",
                logo.display(),
                dir.display()
            ))
            .unwrap();
        }),
        ..Options::default()
    })
    .await;
    // No preference: the default language, with the deployment's own words.
    let response = consent_in(&app, None).await;
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("img-src 'self'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = response.text().await.unwrap();
    assert_has_all(
        &html,
        &[
            "<html lang=\"de\">",
            "– Acme Reports</title>",
            "<img src=\"/ui/logo\" alt=\"\"><span class=\"product\">Acme Reports</span>",
            ":root{--primary:#7a1f5c}",
            "<a href=\"mailto:help@acme.example\">",
            ">Zugriff erlauben</button>",
            ">Ablehnen</button>",
            "<span class=\"what\">Sie erkennen</span>",
        ],
    );
    let html = consent_in(&app, Some("en")).await.text().await.unwrap();
    assert!(
        html.contains("<span class=\"what\">Recognise you</span>"),
        "{html}"
    );

    // The logo, from the bridge itself; an SVG is sandboxed should anyone open it directly.
    let logo = app.api.get(app.url("/ui/logo")).send().await.unwrap();
    assert_eq!(logo.status(), StatusCode::OK);
    assert_eq!(logo.headers()["content-type"], "image/svg+xml");
    assert_eq!(logo.headers()["x-content-type-options"], "nosniff");
    assert!(
        logo.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(logo.text().await.unwrap(), svg);
    std::fs::remove_dir_all(&translations).unwrap();

    // Without a logo file there is nothing there.
    let plain = spawn_app().await;
    let none = plain.api.get(plain.url("/ui/logo")).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    let html = consent_in(&plain, None).await.text().await.unwrap();
    assert!(
        !html.contains("class=\"brand\"") && !html.contains("<footer"),
        "{html}"
    );
}

/// A local-login app and the login form its browser was sent to (consent approved on the way).
async fn login_form() -> (TestApp, String) {
    let app = crate::local_login::spawn_local(None).await;
    let login = app
        .authorize_to_upstream(&app.authorize_params(&Pkce::new()))
        .await;
    assert!(
        login.starts_with(&app.url("/oauth/login?state=")),
        "{login}"
    );
    (app, login)
}

async fn page_text(request: reqwest::RequestBuilder, accept_language: &str) -> String {
    let response = request
        .header("accept-language", accept_language)
        .send()
        .await
        .unwrap();
    response.text().await.unwrap()
}

#[tokio::test]
async fn the_login_form_speaks_the_browsers_language() {
    let (app, login) = login_form().await;
    let html = page_text(app.browser.get(&login), "es-MX").await;
    assert_has_all(
        &html,
        &[
            "<html lang=\"es\">",
            "<label for=\"username\">Nombre de usuario</label>",
            "<label for=\"password\">Contraseña</label>",
        ],
    );
}

/// A wrong password is said above the fields, announced (`role="alert"`) and tied to them
/// (`aria-describedby`); the first view has neither.
#[tokio::test]
async fn the_login_error_is_announced_and_tied_to_the_fields() {
    let (app, login) = login_form().await;
    let html = page_text(app.browser.get(&login), "en").await;
    assert!(
        !html.contains("aria-describedby") && !html.contains("role=\"alert\""),
        "{html}"
    );
    let field = |name: &str| crate::local_login::hidden(&html, name);
    let (state, csrf) = (field("state"), field("csrf"));
    let posted = app.browser.post(app.url("/oauth/login")).form(&[
        ("state", state.as_str()),
        ("csrf", csrf.as_str()),
        ("username", "demo"),
        ("password", "not-the-password"),
    ]);
    let refused = page_text(posted, "de").await;
    assert_has_all(
        &refused,
        &[
            "<p class=\"warning\" role=\"alert\" id=\"login-error\">Benutzername oder Passwort ist falsch.</p>",
            "autofocus aria-describedby=\"login-error\">",
            "required aria-describedby=\"login-error\">",
        ],
    );
}
