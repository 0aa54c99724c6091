//! Limits on what unauthenticated callers can make the bridge hold or do: parameter sizes,
//! authorizations per address, live authorizations in all.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn oversized_authorization_parameters_are_a_400_page_not_a_stored_request() {
    let app = spawn_app().await;
    for (name, length) in [
        ("state", 1025),
        ("nonce", 513),
        ("scope", 1025),
        ("resource", 2049),
        ("redirect_uri", 2049),
        ("client_id", 1025),
    ] {
        let mut params = app.authorize_params(&Pkce::new());
        params.retain(|(k, _)| *k != name);
        params.push((name, "a".repeat(length)));
        let response = app.get_authorize(&params).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        assert!(response.headers().get("location").is_none(), "{name}");
        let html = response.text().await.unwrap();
        assert!(html.contains(&format!("{name} is too long")), "{html}");
    }
}

#[tokio::test]
async fn starting_authorizations_is_limited_per_address() {
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            config.oauth.authorize_rate_limit = RateLimitConfig {
                requests: 3,
                window: seconds(60),
            };
            trust_proxies(config, &["127.0.0.1/32"]);
        }),
        ..Options::default()
    })
    .await;
    let from = |address: &'static str| {
        app.browser
            .get(app.url("/oauth/authorize"))
            .query(&app.authorize_params(&Pkce::new()))
            .header("x-forwarded-for", address)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            from("198.51.100.1").await.unwrap().status(),
            StatusCode::FOUND
        );
    }
    let limited = from("198.51.100.1").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(limited.text().await.unwrap().contains("too many sign-ins"));
    assert_eq!(
        from("198.51.100.2").await.unwrap().status(),
        StatusCode::FOUND
    );
}

#[tokio::test]
async fn past_the_cap_of_live_authorizations_new_ones_are_503_and_those_in_flight_finish() {
    let app = spawn_app_with(Options {
        configure: configure(|config| config.oauth.max_pending_authorizations = 5),
        ..Options::default()
    })
    .await;
    let mut consent_pages = Vec::new();
    for _ in 0..5 {
        let next = location(&app.get_authorize(&app.authorize_params(&Pkce::new())).await);
        assert!(next.starts_with(&app.url("/oauth/consent")), "{next}");
        consent_pages.push(next);
    }
    for _ in 0..20 {
        let refused = app.get_authorize(&app.authorize_params(&Pkce::new())).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.headers().get("retry-after").is_some());
        assert!(refused.headers().get("location").is_none());
        let html = refused.text().await.unwrap();
        assert!(html.contains("temporarily_unavailable"), "{html}");
    }
    // Nothing in flight was evicted: the first sign-in completes.
    let (_, token) = app.consent_page(&consent_pages[0]).await;
    let to_upstream = location(&app.post_consent(&token, "allow").await);
    let to_callback = location(&app.browser.get(&to_upstream).send().await.unwrap());
    let back = location(&app.browser.get(&to_callback).send().await.unwrap());
    assert!(query_of(&back).contains_key("code"), "{back}");
    // Once it is done, the bridge counts again and there is room for one more (straight to the
    // provider: the user's approval is remembered now).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let next = location(&app.get_authorize(&app.authorize_params(&Pkce::new())).await);
    assert!(next.starts_with(&app.provider.issuer), "{next}");
    let refused = app.get_authorize(&app.authorize_params(&Pkce::new())).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
}
