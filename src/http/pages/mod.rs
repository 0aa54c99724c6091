//! HTML pages shown to the user's browser, and the redirect responses of the authorization flow.
//! Every page speaks the browser's language (`in_the_browsers_language` picks it once per
//! request) and wears the deployment's brand (`ui`); none loads anything from elsewhere but the
//! logo the operator chose, and none needs JavaScript.

mod consent;
mod forms;

use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use url::Url;

use super::AppState;
use super::error::status_of;
use crate::oauth::OAuthError;
use crate::ui::Ui;
use crate::ui::i18n::fill;

pub(crate) use consent::consent_page;
pub(crate) use forms::{LoginMessage, chooser_page, login_page};

/// What a page is rendered with: the deployment's look, and the request's language.
#[derive(Clone)]
pub(crate) struct PageContext {
    ui: Arc<Ui>,
    language: String,
}

tokio::task_local! {
    static PAGE: PageContext;
}

impl PageContext {
    /// The request's, or, outside a page route, the shipped look in English.
    fn current() -> PageContext {
        PAGE.try_with(Clone::clone).unwrap_or_else(|_| {
            static SHIPPED: OnceLock<Arc<Ui>> = OnceLock::new();
            let ui = Arc::clone(SHIPPED.get_or_init(|| Arc::new(Ui::default())));
            let language = ui.catalog.default_language().to_owned();
            PageContext { ui, language }
        })
    }

    /// The words of `key`, escaped for HTML; marked with their language when they had to be
    /// taken from another one (a deployment's language that lacks some words).
    fn text(&self, key: &str) -> String {
        let (text, language) = self.ui.catalog.text_with_language(&self.language, key);
        match language == self.language {
            true => escape(text),
            false => format!(
                "<span lang=\"{}\">{}</span>",
                escape(language),
                escape(text)
            ),
        }
    }

    /// The words of `key`, escaped, without markup: for the page's `<title>`.
    fn plain(&self, key: &str) -> String {
        escape(self.ui.catalog.text(&self.language, key))
    }

    /// The words of `key`, escaped, with each `{name}` replaced by its (already HTML) value.
    fn fill(&self, key: &str, values: &[(&str, &str)]) -> String {
        fill(&self.text(key), values)
    }
}

/// Renders the pages of this request in the language its browser prefers (`Accept-Language`).
pub(crate) async fn in_the_browsers_language(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let accept = request
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok());
    let language = state.ui.catalog.negotiate(accept).to_owned();
    let context = PageContext {
        ui: Arc::clone(&state.ui),
        language,
    };
    PAGE.scope(context, next.run(request)).await
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            other => other.to_string(),
        })
        .collect()
}

fn harden(response: &mut Response, image_origin: Option<&str>) {
    let images = match image_origin {
        Some(origin) => format!("; img-src {origin}"),
        None => String::new(),
    };
    let policy =
        format!("default-src 'none'; style-src 'unsafe-inline'{images}; frame-ancestors 'none'");
    let headers = response.headers_mut();
    // An origin that makes no header value costs the logo, never the policy.
    let policy = HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    ));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // URLs of this flow carry codes and state: never leak them to the next page.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Light and dark by the system's preference; every pair of colours meets WCAG 2.1 AA
/// (4.5:1 for text, 3:1 for borders and the focus ring); nothing overflows 320 px.
const STYLE: &str = ":root{color-scheme:light dark;--bg:#fff;--fg:#1b1b1b;--muted:#4a4a4a;\
--border:#767676;--code:#f0f0f0;--primary:#1f5fbf;--on-primary:#fff;--link:#0b57d0;--focus:#1f5fbf;\
--warn-bg:#fff4e5;--warn-edge:#b35900}\
@media (prefers-color-scheme:dark){:root{--bg:#121212;--fg:#ececec;--muted:#c4c4c4;--border:#9a9a9a;\
--code:#2b2b2b;--link:#9cc0ff;--focus:#9cc0ff;--warn-bg:#3a2a12;--warn-edge:#e0a050}}\
body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;\
background:var(--bg);color:var(--fg);line-height:1.5;overflow-wrap:anywhere}\
h1{font-size:1.4rem}ul{padding-left:1.2rem}a{color:var(--link)}\
code{background:var(--code);padding:.1rem .3rem;border-radius:.2rem}\
.brand{display:flex;align-items:center;gap:.7rem;margin-bottom:1.5rem}.brand img{max-height:2.5rem;max-width:10rem}\
.product{font-weight:600;font-size:1.1rem}\
.fine{font-size:.875rem;color:var(--muted)}.fine code{color:var(--fg)}\
.warning{border-left:4px solid var(--warn-edge);background:var(--warn-bg);padding:.6rem .8rem}\
.destination{font-size:1.15rem}.host{font-size:1.35rem}\
.actions{display:flex;flex-wrap:wrap;gap:.8rem;margin-top:1.5rem}\
button{font:inherit;padding:.55rem 1.4rem;border-radius:.3rem;border:1px solid var(--border);\
background:var(--bg);color:var(--fg);cursor:pointer}\
button.allow{background:var(--primary);border-color:var(--primary);color:var(--on-primary)}\
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}\
footer{margin-top:2.5rem}";

/// A whole page: the brand, `main`, and the way to help, in the request's language.
fn page(
    context: &PageContext,
    title: &str,
    main: &str,
    style: &str,
    status: StatusCode,
) -> Response {
    let ui = &context.ui;
    let product = ui.title.as_deref().map(escape);
    let full_title = match &product {
        Some(product) => format!("{title} – {product}"),
        None => title.to_owned(),
    };
    // The product's name stands beside it (validation requires one with a logo): decorative.
    let logo = ui
        .logo_src
        .as_deref()
        .map(|src| format!("<img src=\"{}\" alt=\"\">", escape(src)));
    let brand = match (&logo, &product) {
        (None, None) => String::new(),
        (logo, product) => format!(
            "<header class=\"brand\">{}{}</header>",
            logo.as_deref().unwrap_or_default(),
            product
                .as_ref()
                .map(|p| format!("<span class=\"product\">{p}</span>"))
                .unwrap_or_default()
        ),
    };
    let support = ui
        .support_url
        .as_deref()
        .map(|url| {
            format!(
                "<footer class=\"fine\"><a href=\"{}\">{}</a></footer>",
                escape(url),
                context.text("support")
            )
        })
        .unwrap_or_default();
    let primary = ui
        .primary_color
        .as_deref()
        .map(|color| format!(":root{{--primary:{}}}", escape(color)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{full_title}</title><style>{STYLE}{primary}{style}</style></head><body>\
         {brand}<main>{main}</main>{support}</body></html>",
        lang = escape(&context.language),
    );
    let mut response = (status, Html(body)).into_response();
    let images = ui.logo_src.as_ref().map(|_| match ui.logo_origin() {
        Some(origin) => origin,
        None => "'self'".to_owned(),
    });
    harden(&mut response, images.as_deref());
    if let Ok(language) = HeaderValue::from_str(&context.language) {
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_LANGUAGE, language);
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    }
    response
}

/// The page for errors that must not be redirected (client or redirect URI not proven). The
/// protocol's description of what went wrong is English, and marked so.
pub(crate) fn error_page(error: &OAuthError) -> Response {
    let context = PageContext::current();
    let title = context.plain("error.title");
    let explanation = match error.code() {
        "invalid_request" => "error.invalid_request",
        "unauthorized_client" | "invalid_client" => "error.unauthorized_client",
        "access_denied" => "error.access_denied",
        "invalid_scope" => "error.invalid_scope",
        "invalid_target" => "error.invalid_target",
        "server_error" => "error.server_error",
        "temporarily_unavailable" => "error.temporarily_unavailable",
        _ => "error.other",
    };
    let main = format!(
        "<h1>{heading}</h1><p>{}</p><p>{}</p>\
         <p class=\"fine\">{} <span lang=\"en\">{}</span></p><p class=\"fine\">{} <code>{}</code></p>",
        context.text(explanation),
        context.text("error.retry"),
        context.text("error.details"),
        escape(error.description()),
        context.text("error.code"),
        escape(error.code()),
        heading = context.text("error.title"),
    );
    let status = match status_of(error) {
        StatusCode::UNAUTHORIZED => StatusCode::BAD_REQUEST,
        other => other,
    };
    let mut response = page(&context, &title, &main, "", status);
    super::failures::attach(error, &mut response);
    let retry_after = match error {
        OAuthError::TooManyRequests { retry_after, .. } => Some(*retry_after),
        OAuthError::TemporarilyUnavailable(_) => Some(5),
        _ => None,
    };
    if let Some(seconds) = retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The logo file of `ui.logo_file`, served from the bridge's own origin. An SVG may hold
/// scripts: it is served sandboxed, so that opening it directly runs none on this origin.
pub(crate) fn logo(ui: &Ui) -> Response {
    let Some(logo) = &ui.logo_file else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, logo.media_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; sandbox",
            ),
        ],
        logo.bytes.clone(),
    )
        .into_response()
}

pub(crate) fn redirect(location: &Url) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    match HeaderValue::from_str(location.as_str()) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Err(error) => return error_page(&OAuthError::internal(error)),
    }
    harden(&mut response, None);
    response
}

/// A page as `page` renders it in `language` with `ui`, as the pages' layer would have it.
#[cfg(test)]
pub(crate) async fn rendered_in(
    ui: std::sync::Arc<crate::ui::Ui>,
    language: &str,
    page: impl FnOnce() -> Response,
) -> Response {
    let context = PageContext {
        ui,
        language: language.to_owned(),
    };
    PAGE.scope(context, async { page() }).await
}

#[cfg(test)]
pub(crate) async fn body_text(response: Response) -> String {
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_escaped() {
        assert_eq!(escape("<script>\"&'"), "&lt;script&gt;&quot;&amp;&#39;");
    }

    #[test]
    fn error_page_is_hardened_and_never_a_401() {
        let page = error_page(&OAuthError::invalid_client("x"));
        assert_eq!(page.status(), StatusCode::BAD_REQUEST);
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(page.headers()[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(page.headers()[header::CONTENT_LANGUAGE], "en");
    }

    #[tokio::test]
    async fn a_page_speaks_the_requests_language_and_wears_the_brand() {
        let config: crate::ui::UiConfig = serde_yaml::from_str(
            "title: \"Acme <Reports>\"\nlogo_url: https://cdn.acme.example/logo.svg\nprimary_color: \"#123456\"\nsupport_url: https://help.acme.example/\n",
        )
        .unwrap();
        let ui = Arc::new(Ui::configured(&config, "/ui/logo").unwrap());
        let response = rendered_in(ui, "de", || {
            error_page(&OAuthError::invalid_request("bad <input>"))
        })
        .await;
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("img-src https://cdn.acme.example;"), "{csp}");
        assert_eq!(response.headers()[header::CONTENT_LANGUAGE], "de");
        let html = body_text(response).await;
        for expected in [
            "<html lang=\"de\">",
            "<title>Anmeldung fehlgeschlagen – Acme &lt;Reports&gt;</title>",
            "<span class=\"product\">Acme &lt;Reports&gt;</span>",
            "<img src=\"https://cdn.acme.example/logo.svg\" alt=\"\">",
            ":root{--primary:#123456}",
            "<a href=\"https://help.acme.example/\">Brauchen Sie Hilfe?",
            "<p>Die Anwendung hat eine Anfrage gestellt, die dieser Anmeldedienst nicht annehmen kann.</p>",
            "Details: <span lang=\"en\">bad &lt;input&gt;</span>",
        ] {
            assert!(html.contains(expected), "{expected} in {html}");
        }
    }
}
