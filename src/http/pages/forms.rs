//! The local login form and the identity provider chooser: same look and protections as the
//! consent page.

use axum::http::StatusCode;
use axum::response::Response;

use super::{PageContext, escape, page};

/// What the login form tells the user above the fields.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LoginMessage {
    WrongCredentials,
    /// Locked for this many more minutes.
    Throttled {
        minutes: u64,
    },
}

const LOGIN_STYLE: &str = "label{display:block;margin-top:1rem;font-weight:600}\
input[name=username],input[type=password]{display:block;width:100%;box-sizing:border-box;font:inherit;\
padding:.5rem;margin-top:.3rem;border:1px solid var(--border);border-radius:.3rem;background:var(--bg);color:var(--fg)}";

pub(crate) fn login_page(
    action: &str,
    sign_in: &str,
    csrf: &str,
    message: Option<LoginMessage>,
    status: StatusCode,
) -> Response {
    let context = PageContext::current();
    let message = message
        .map(|message| {
            let text = match message {
                LoginMessage::WrongCredentials => context.text("login.wrong"),
                LoginMessage::Throttled { minutes: 1 } => context.text("login.throttled_one"),
                LoginMessage::Throttled { minutes } => {
                    context.fill("login.throttled_many", &[("minutes", &minutes.to_string())])
                }
            };
            format!("<p class=\"warning\" role=\"alert\" id=\"login-error\">{text}</p>")
        })
        .unwrap_or_default();
    // The error, when there is one, is what a screen reader says of the fields.
    let described = if message.is_empty() {
        ""
    } else {
        " aria-describedby=\"login-error\""
    };
    let title = context.plain("login.title");
    let main = format!(
        "<h1>{heading}</h1>{message}\
         <form method=\"post\" action=\"{action}\" id=\"login\">\
         <input type=\"hidden\" name=\"state\" value=\"{sign_in}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"username\">{username}</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" autocapitalize=\"none\" required autofocus{described}>\
         <label for=\"password\">{password}</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required{described}>\
         <div class=\"actions\"><button class=\"allow\" type=\"submit\">{submit}</button>\
         <button type=\"submit\" name=\"cancel\" value=\"1\" formnovalidate>{cancel}</button></div>\
         </form>",
        action = escape(action),
        sign_in = escape(sign_in),
        csrf = escape(csrf),
        username = context.text("login.username"),
        password = context.text("login.password"),
        submit = context.text("login.submit"),
        cancel = context.text("login.cancel"),
        heading = context.text("login.title"),
    );
    page(&context, &title, &main, LOGIN_STYLE, status)
}

const CHOOSER_STYLE: &str = "ul.providers{list-style:none;padding:0;display:grid;gap:.8rem}\
ul.providers button{width:100%;text-align:left}";

/// One button per identity provider, in configuration order.
pub(crate) fn chooser_page(
    action: &str,
    sign_in: &str,
    csrf: &str,
    choices: &[crate::oauth::choose::Choice],
) -> Response {
    let context = PageContext::current();
    let buttons: String = choices
        .iter()
        .map(|choice| {
            format!(
                "<li><button type=\"submit\" name=\"provider\" value=\"{name}\">{label}</button></li>",
                name = escape(choice.name),
                label = escape(&choice.display_name),
            )
        })
        .collect();
    let main = format!(
        "<h1 id=\"choose-heading\">{heading}</h1>\
         <form method=\"post\" action=\"{action}\" id=\"choose\" aria-labelledby=\"choose-heading\">\
         <input type=\"hidden\" name=\"state\" value=\"{sign_in}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <ul class=\"providers\">{buttons}</ul></form>",
        heading = context.text("chooser.heading"),
        action = escape(action),
        sign_in = escape(sign_in),
        csrf = escape(csrf),
    );
    page(
        &context,
        &context.plain("chooser.title"),
        &main,
        CHOOSER_STYLE,
        StatusCode::OK,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::Ui;
    use std::sync::Arc;

    async fn login_html(message: Option<LoginMessage>, language: &str) -> String {
        let response = super::super::rendered_in(Arc::new(Ui::default()), language, || {
            login_page("/oauth/login", "s", "c", message, StatusCode::OK)
        })
        .await;
        super::super::body_text(response).await
    }

    #[tokio::test]
    async fn a_throttled_login_says_how_long_in_the_users_language() {
        let one = login_html(Some(LoginMessage::Throttled { minutes: 1 }), "en").await;
        assert!(one.contains("Try again in 1 minute."), "{one}");
        let many = login_html(Some(LoginMessage::Throttled { minutes: 10 }), "fr").await;
        assert!(many.contains("Réessayez dans 10 minutes."), "{many}");
        assert!(many.contains("aria-describedby=\"login-error\""), "{many}");
        let none = login_html(None, "en").await;
        assert!(!none.contains("aria-describedby"), "{none}");
    }
}
