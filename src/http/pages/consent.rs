//! The consent page: who asks, where the result goes, what its tokens will say of the user, and
//! what each scope lets it do, in words first and the protocol's name in small print.

use axum::http::StatusCode;
use axum::response::Response;

use super::{PageContext, escape, page};
use crate::oauth::consent::{ConsentPage, Destination};
use crate::oauth::disclosure::IdentityClaim;
use crate::ui::i18n::fill;

fn claim_key(claim: IdentityClaim) -> &'static str {
    match claim {
        IdentityClaim::Email => "claim.email",
        IdentityClaim::Name => "claim.name",
        IdentityClaim::Groups => "claim.groups",
    }
}

/// One scope: what it lets the client do, then its name; only the name when nobody said more.
fn scope_item(context: &PageContext, scope: &str) -> String {
    match context.ui.describe_scope(&context.language, scope) {
        Some((description, language)) => format!(
            "<li><span class=\"what\"{}>{}</span> <small class=\"fine\"><code>{}</code></small></li>",
            language
                .map(|tag| format!(" lang=\"{}\"", escape(tag)))
                .unwrap_or_default(),
            escape(description),
            escape(scope)
        ),
        None => format!("<li><code>{}</code></li>", escape(scope)),
    }
}

fn scope_list(context: &PageContext, class: &str, scopes: &[String]) -> String {
    let items: String = scopes
        .iter()
        .map(|scope| scope_item(context, scope))
        .collect();
    format!("<ul class=\"{class}\">{items}</ul>")
}

/// The consent page: Allow or Deny, posted to `action` with the request's `token`.
pub(crate) fn consent_page(page_data: &ConsentPage, action: &str, token: &str) -> Response {
    let context = PageContext::current();
    let name = escape(
        page_data
            .client_name
            .as_deref()
            .unwrap_or(&page_data.client_id),
    );
    let strong = |text: &str| format!("<strong>{text}</strong>");
    let learns: String = std::iter::once(context.text("claim.subject"))
        .chain(
            page_data
                .claims
                .iter()
                .map(|claim| context.text(claim_key(*claim))),
        )
        .map(|what| format!("<li>{what}</li>"))
        .collect();
    let asks = match (
        page_data.scope.is_empty(),
        page_data.already_approved.is_empty(),
    ) {
        (true, true) => format!("<p>{}</p>", context.text("consent.asks_nothing")),
        (true, false) => format!("<p>{}</p>", context.text("consent.asks_nothing_more")),
        (false, true) => format!(
            "<p>{}</p>{}",
            context.text("consent.asks"),
            scope_list(&context, "asks", &page_data.scope)
        ),
        (false, false) => format!(
            "<p>{}</p>{}",
            context.text("consent.asks_more"),
            scope_list(&context, "asks", &page_data.scope)
        ),
    };
    let keeps = match page_data.already_approved.is_empty() {
        true => String::new(),
        false => format!(
            "<p>{}</p>{}",
            context.text("consent.keeps"),
            scope_list(&context, "approved", &page_data.already_approved)
        ),
    };
    let (destination, warning) = match &page_data.destination {
        Destination::Web(host) => (escape(host), None),
        Destination::ThisComputer => (context.text("consent.this_computer"), None),
        Destination::AppScheme(scheme) => (
            escape(scheme),
            Some(context.fill("consent.warning_scheme", &[("scheme", &escape(scheme))])),
        ),
        Destination::Invalid(uri) => (escape(uri), Some(context.text("consent.warning_invalid"))),
    };
    let warning = warning
        .map(|w| format!("<p class=\"warning\" role=\"alert\">{w}</p>"))
        .unwrap_or_default();
    let publisher = page_data
        .publisher
        .as_deref()
        .map(|host| {
            format!(
                "<p class=\"publisher\">{}</p>",
                context.fill("consent.publisher", &[("host", &strong(&escape(host)))])
            )
        })
        .unwrap_or_default();
    let host = format!(
        "<strong class=\"host\">{}</strong>",
        escape(&page_data.destination_host)
    );
    let main = format!(
        "<h1>{heading}</h1>{publisher}\
         <p class=\"destination\">{sent_back}</p>\
         <p>{resource}</p><p>{destination}</p>{warning}\
         <p>{tokens_tell}</p><ul class=\"claims\">{learns}</ul>{asks}{keeps}\
         <p>{only_if}</p>\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"request\" value=\"{token}\">\
         <div class=\"actions\"><button class=\"allow\" type=\"submit\" name=\"decision\" value=\"allow\">{allow}</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">{deny}</button></div></form>\
         <p class=\"fine\">{client_id_label} <code>{client_id}</code></p>",
        heading = context.fill("consent.heading", &[("client", &strong(&name))]),
        sent_back = context.fill("consent.sent_back", &[("host", &host)]),
        resource = context.fill(
            "consent.resource",
            &[("resource", &strong(&escape(&page_data.resource)))]
        ),
        destination = context.fill(
            "consent.destination",
            &[("destination", &strong(&destination))]
        ),
        tokens_tell = context.text("consent.tokens_tell"),
        only_if = context.text("consent.only_if"),
        action = escape(action),
        token = escape(token),
        allow = context.text("consent.allow"),
        deny = context.text("consent.deny"),
        client_id_label = context.text("consent.client_id"),
        client_id = escape(&page_data.client_id),
    );
    let title = fill(&context.plain("consent.title"), &[("client", &name)]);
    page(&context, &title, &main, "", StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::Ui;
    use std::sync::Arc;

    async fn rendered(page_data: ConsentPage, language: &str) -> String {
        let response = super::super::rendered_in(Arc::new(Ui::default()), language, || {
            consent_page(&page_data, "/oauth/consent", "t")
        })
        .await;
        super::super::body_text(response).await
    }

    fn page_data(destination: Destination) -> ConsentPage {
        ConsentPage {
            client_id: "https://tools.example.org/client.json".into(),
            client_name: Some("Tools <script>".into()),
            destination,
            destination_host: "cursor://anysphere.cursor-mcp".into(),
            publisher: Some("tools.example.org".into()),
            scope: vec!["openid".into(), "mcp:tools".into()],
            already_approved: vec![],
            claims: vec![IdentityClaim::Email],
            resource: "https://mcp.example.com/mcp".into(),
        }
    }

    #[tokio::test]
    async fn an_app_scheme_is_warned_of_and_a_documents_publisher_named() {
        let html = rendered(page_data(Destination::AppScheme("cursor:".into())), "de").await;
        for expected in [
            "<h1>Darf <strong>Tools &lt;script&gt;</strong> auf Ihr Konto zugreifen?</h1>",
            "<p class=\"publisher\">Herausgegeben von <strong>tools.example.org</strong></p>",
            "<p class=\"warning\" role=\"alert\">Das Ergebnis geht an die „cursor:“-Adresse einer Anwendung",
            "<strong class=\"host\">cursor://anysphere.cursor-mcp</strong>",
            "<li>Ihre E-Mail-Adresse</li>",
            "<li><code>mcp:tools</code></li>",
        ] {
            assert!(html.contains(expected), "{expected} in {html}");
        }
        assert!(!html.contains("<script>"), "{html}");
        let html = rendered(page_data(Destination::Invalid("::".into())), "en").await;
        assert!(
            html.contains(
                "<p class=\"warning\" role=\"alert\">The destination is not a valid address.</p>"
            ),
            "{html}"
        );
        let html = rendered(page_data(Destination::Web("claude.ai".into())), "en").await;
        assert!(!html.contains("class=\"warning\""), "{html}");
    }
}
