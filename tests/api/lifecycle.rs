//! The rest of a token's life: revocation (RFC 7009), introspection (RFC 7662), UserInfo (OIDC
//! Core §5.3) and the client credentials grant (RFC 6749 §4.4).

use std::sync::Arc;
use std::time::Duration;

use mcp_oauth_bridge::clock::{Clock, FixedClock, SystemClock};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const SERVICE: &str = "nightly-report";
const SERVICE_SECRET: &str = "service-secret-0123456789";
const RESOURCE_SERVER: &str = "mcp-server";
const RESOURCE_SERVER_SECRET: &str = "resource-server-secret-0123";
const INTROSPECTION_TOKEN: &str = "introspection-token-0123456789abcdef";

/// The secrets are hashed at cost 4 (from `hash-secret --cost 4`) to keep the tests quick.
/// The two service clients, and the token resource servers introspect with.
fn services(config: &mut Config) {
    for (id, hash) in [
        (
            SERVICE,
            "$2b$04$U3GXWr0zljxBButxQWdqJeDSjYi8dLdUZYVnlE.Qxo3GD1k0nDCUG",
        ),
        (
            RESOURCE_SERVER,
            "$2b$04$BBCHpcomaHfj5a5xXGOL7eEXbVW2tAjyjwz1lp0.GgcYxavV5aIIa",
        ),
    ] {
        config.oauth.clients.push(ClientConfig {
            secret: Some(SecretString::new(hash)),
            grant_types: Some(strings(["client_credentials"])),
            ..client(id)
        });
    }
    config.oauth.introspection_tokens = vec![SecretString::new(INTROSPECTION_TOKEN)];
}

async fn app_with(clock: Option<Arc<FixedClock>>) -> TestApp {
    spawn_app_with(Options {
        configure: configure(services),
        clock: clock.map(|c| c as _),
        ..Options::default()
    })
    .await
}

async fn app() -> TestApp {
    app_with(None).await
}

impl TestApp {
    async fn revoke(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.api
            .post(self.url("/oauth/revoke"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Introspects as a resource server holding the introspection token.
    async fn introspect(&self, token: &str) -> Value {
        let response = self
            .api
            .post(self.url("/oauth/introspect"))
            .bearer_auth(INTROSPECTION_TOKEN)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["cache-control"], "no-store");
        response.json().await.unwrap()
    }

    async fn userinfo(&self, token: &str) -> reqwest::Response {
        self.api
            .get(self.url("/oauth/userinfo"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn service_token(&self, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(extra);
        self.api
            .post(self.url("/oauth/token"))
            .basic_auth(SERVICE, Some(SERVICE_SECRET))
            .form(&form)
            .send()
            .await
            .unwrap()
    }
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap()
}

fn challenge(response: &reqwest::Response) -> String {
    response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_revoked_access_token_is_inactive_and_refused_at_userinfo_while_its_refresh_token_lives()
{
    let app = app().await;
    let tokens = app.tokens().await;
    let access = str_of(&tokens, "access_token");

    let response = app.userinfo(access).await;
    assert_eq!(response.status(), StatusCode::OK);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["sub"], "upstream-user-42");
    assert_eq!(user["email"], "ada@corp.example");
    let active = app.introspect(access).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], PUBLIC_CLIENT);
    assert_eq!(active["sub"], "upstream-user-42");
    assert_eq!(active["aud"], RESOURCE);
    assert_eq!(active["scope"], "openid email");
    assert_eq!(active["token_type"], "Bearer");
    assert_eq!(active["iss"], app.issuer);
    assert!(active["exp"].as_i64().unwrap() > active["iat"].as_i64().unwrap());

    let response = app
        .revoke(&[("client_id", PUBLIC_CLIENT), ("token", access)])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.introspect(access).await,
        serde_json::json!({"active": false})
    );
    let response = app.userinfo(access).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let header = challenge(&response);
    assert!(
        header.starts_with("Bearer error=\"invalid_token\""),
        "{header}"
    );
    assert!(header.contains("revoked"), "{header}");
    // RFC 7009 §2.1 leaves the grant alone when only an access token is revoked.
    let response = app.refresh(str_of(&tokens, "refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_its_family_and_its_access_tokens_whatever_the_hint() {
    let app = app().await;
    let tokens = app.tokens().await;
    let refresh = str_of(&tokens, "refresh_token");
    let introspected = app.introspect(refresh).await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["token_use"], "refresh_token");
    assert_eq!(introspected["client_id"], PUBLIC_CLIENT);
    assert_eq!(introspected["sub"], "upstream-user-42");

    // A wrong hint only changes the order of the lookups.
    let response = app
        .revoke(&[
            ("client_id", PUBLIC_CLIENT),
            ("token", refresh),
            ("token_type_hint", "access_token"),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    oauth_error(
        app.refresh(refresh).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    )
    .await;
    assert_eq!(app.introspect(refresh).await["active"], false);
    assert_eq!(
        app.introspect(str_of(&tokens, "access_token")).await["active"],
        false
    );
    assert_eq!(
        app.userinfo(str_of(&tokens, "access_token")).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn another_client_cannot_revoke_your_tokens() {
    let app = app().await;
    let tokens = app.tokens().await;
    for token in ["access_token", "refresh_token"] {
        let response = app
            .revoke(&[
                ("client_id", WEB_CLIENT),
                ("client_secret", WEB_SECRET),
                ("token", str_of(&tokens, token)),
            ])
            .await;
        let body = oauth_error(response, StatusCode::BAD_REQUEST, "unauthorized_client").await;
        assert_eq!(
            body["error_description"],
            "this token was issued to another client"
        );
    }
    assert_eq!(
        app.introspect(str_of(&tokens, "access_token")).await["active"],
        true
    );
    let response = app.refresh(str_of(&tokens, "refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn revocation_answers_200_for_unknown_tokens_and_needs_the_client() {
    let app = app().await;
    for token in ["no-such-token", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        let response = app
            .revoke(&[("client_id", PUBLIC_CLIENT), ("token", token)])
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{token}");
    }
    oauth_error(
        app.revoke(&[("client_id", PUBLIC_CLIENT)]).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    let response = app.revoke(&[("token", "x")]).await;
    assert!(response.headers().contains_key("www-authenticate"));
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    oauth_error(
        app.revoke(&[
            ("client_id", WEB_CLIENT),
            ("client_secret", "wrong"),
            ("token", "x"),
        ])
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_client",
    )
    .await;
}

#[tokio::test]
async fn introspection_needs_a_confidential_client_or_the_introspection_token() {
    let app = app().await;
    let tokens = app.tokens().await;
    let access = str_of(&tokens, "access_token");
    let introspect = |request: reqwest::RequestBuilder| async move {
        request.form(&[("token", access)]).send().await.unwrap()
    };
    let endpoint = app.url("/oauth/introspect");

    let response = introspect(app.api.post(&endpoint)).await;
    assert!(response.headers().contains_key("www-authenticate"));
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let response = introspect(app.api.post(&endpoint).bearer_auth("not-the-token")).await;
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // A public client proves nothing about itself.
    let response = app
        .api
        .post(&endpoint)
        .form(&[("token", access), ("client_id", PUBLIC_CLIENT)])
        .send()
        .await
        .unwrap();
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let response = introspect(
        app.api
            .post(&endpoint)
            .basic_auth(RESOURCE_SERVER, Some("wrong-secret")),
    )
    .await;
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;

    // The resource server as a confidential client: any access token, but no one else's
    // refresh token.
    let as_resource_server = |token: &'static str| {
        let request = app
            .api
            .post(&endpoint)
            .basic_auth(RESOURCE_SERVER, Some(RESOURCE_SERVER_SECRET));
        async move {
            let response = request.form(&[("token", token)]).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        }
    };
    let access: &'static str = access.to_owned().leak();
    let refresh: &'static str = str_of(&tokens, "refresh_token").to_owned().leak();
    assert_eq!(as_resource_server(access).await["active"], true);
    assert_eq!(
        as_resource_server(refresh).await,
        serde_json::json!({"active": false})
    );
    assert_eq!(app.introspect(refresh).await["active"], true);
}

#[tokio::test]
async fn expired_malformed_and_foreign_tokens_are_inactive() {
    // Ahead of the provider's clock, so its ID tokens are never issued in our future.
    let clock = Arc::new(FixedClock::at(SystemClock.now().seconds() + 30));
    let app = app_with(Some(Arc::clone(&clock))).await;
    let tokens = app.tokens().await;
    let access = str_of(&tokens, "access_token");

    // Signed by a key of ours that the bridge does not have: another instance's, say.
    let other = spawn_app().await;
    let foreign = other.tokens().await;
    for token in [
        "garbage",
        "a.b.c",
        str_of(&foreign, "access_token"),
        str_of(&foreign, "refresh_token"),
    ] {
        assert_eq!(
            app.introspect(token).await,
            serde_json::json!({"active": false}),
            "{token}"
        );
    }
    // A token whose payload was altered keeps the header but loses the signature.
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    assert_eq!(app.introspect(&parts.join(".")).await["active"], false);

    assert_eq!(app.introspect(access).await["active"], true);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(app.introspect(access).await["active"], false);
    let response = app.userinfo(access).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&response).contains("expired"));
}

#[tokio::test]
async fn userinfo_answers_per_rfc_6750_and_releases_claims_by_scope() {
    let app = app().await;
    let response = app
        .api
        .get(app.url("/oauth/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&response), "Bearer");
    let response = app.userinfo("not-a-jwt").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(challenge(&response).starts_with("Bearer error=\"invalid_token\""));

    // POST works as GET (OIDC Core §5.3.1).
    let tokens = app.tokens().await;
    let response = app
        .api
        .post(app.url("/oauth/userinfo"))
        .bearer_auth(str_of(&tokens, "access_token"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["sub"], "upstream-user-42");
    assert_eq!(user["email"], "ada@corp.example");
    assert!(
        user.get("name").is_none(),
        "profile was not granted: {user}"
    );

    // A service token has no user behind it.
    let service: Value = app.service_token(&[]).await.json().await.unwrap();
    let response = app.userinfo(str_of(&service, "access_token")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        challenge(&response).contains("error=\"insufficient_scope\""),
        "{}",
        challenge(&response)
    );
}

#[tokio::test]
async fn client_credentials_issues_an_access_token_for_the_client_itself() {
    let app = app().await;
    let response = app
        .service_token(&[("resource", RESOURCE), ("scope", "")])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.unwrap();
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    assert!(tokens.get("id_token").is_none(), "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let claims = jwt_payload(str_of(&tokens, "access_token"));
    assert_eq!(claims["sub"], SERVICE);
    assert_eq!(claims["client_id"], SERVICE);
    assert_eq!(claims["aud"], RESOURCE);
    assert!(claims.get("email").is_none());
    assert_eq!(
        app.introspect(str_of(&tokens, "access_token")).await["sub"],
        SERVICE
    );

    // And it can revoke it again.
    let response = app
        .api
        .post(app.url("/oauth/revoke"))
        .basic_auth(SERVICE, Some(SERVICE_SECRET))
        .form(&[("token", str_of(&tokens, "access_token"))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.introspect(str_of(&tokens, "access_token")).await["active"],
        false
    );
}

#[tokio::test]
async fn client_credentials_is_refused_to_user_scopes_public_clients_and_clients_without_it() {
    let app = app().await;
    let body = oauth_error(
        app.service_token(&[("scope", "openid")]).await,
        StatusCode::BAD_REQUEST,
        "invalid_scope",
    )
    .await;
    assert!(
        str_of(&body, "error_description").contains("signed-in user"),
        "{body}"
    );
    oauth_error(
        app.post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", PUBLIC_CLIENT),
        ])
        .await,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
    )
    .await;
    oauth_error(
        app.post_token(&[
            ("grant_type", "client_credentials"),
            ("client_id", WEB_CLIENT),
            ("client_secret", WEB_SECRET),
        ])
        .await,
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
    )
    .await;
    let response = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(SERVICE, Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // The service may not use the grants it was not given.
    let response = app
        .api
        .post(app.url("/oauth/token"))
        .basic_auth(SERVICE, Some(SERVICE_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    oauth_error(response, StatusCode::BAD_REQUEST, "unauthorized_client").await;
}

impl TestApp {
    /// The published access-token keys (ES256).
    async fn published_kids(&self) -> Vec<String> {
        self.published_kids_of("ES256").await
    }

    /// The published keys of `algorithm`.
    async fn published_kids_of(&self, algorithm: &str) -> Vec<String> {
        self.get_json(&self.url("/oauth/jwks")).await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|key| key["alg"] == algorithm)
            .map(|key| key["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn service_access_token(&self) -> String {
        let response = self.service_token(&[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let tokens: Value = response.json().await.unwrap();
        str_of(&tokens, "access_token").to_owned()
    }
}

/// Polls until `done` holds: the rotation task looks at the clock once a second.
async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..50 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn rotated_keys_are_published_ahead_sign_for_a_period_and_verify_until_their_tokens_expire() {
    const DAY: i64 = 86_400;
    let boundary = 20_000 * DAY;
    let clock = Arc::new(FixedClock::at(boundary - 1800));
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            services(config);
            config.oauth.access_token_ttl = seconds(3600);
            config.oauth.signing = Some(SigningConfig {
                algorithm: None,
                key_file: None,
                keys: Vec::new(),
                rotation_period: Some(seconds(86_400)),
            });
        }),
        clock: Some(Arc::clone(&clock) as _),
        ..Options::default()
    })
    .await;
    let old_token = app.service_access_token().await;
    let old_kid = kid_of(&old_token);
    let published = app.published_kids().await;
    assert_eq!(
        published.len(),
        2,
        "the signing key and the next one: {published:?}"
    );
    assert_eq!(published[0], old_kid);
    let next_kid = published[1].clone();
    // ID tokens' RSA keys rotate on the same schedule.
    let id_token_kids = app.published_kids_of("RS256").await;
    assert_eq!(id_token_kids.len(), 2, "{id_token_kids:?}");

    // The period ends: the key published ahead signs, the old one still verifies its tokens.
    clock.advance(Duration::from_secs(1800));
    eventually("rotation to the next key", || async {
        kid_of(&app.service_access_token().await) == next_kid
    })
    .await;
    let published = app.published_kids().await;
    assert_eq!(published.len(), 3, "{published:?}");
    assert!(published.contains(&old_kid));
    assert_eq!(app.introspect(&old_token).await["active"], true);
    let new_token = app.service_access_token().await;
    assert_eq!(app.introspect(&new_token).await["active"], true);

    // This token has expired, but the old key stays: it signed until the period's last second,
    // and those tokens live an hour more.
    clock.advance(Duration::from_secs(1800));
    assert_eq!(app.introspect(&old_token).await["active"], false);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(app.published_kids().await.contains(&old_kid));

    // An access-token lifetime (and five minutes' grace for lagging instances) after the
    // period ended, no token of the old key can be alive.
    clock.advance(Duration::from_secs(1800 + 300));
    eventually("the old key leaving the JWKS", || async {
        !app.published_kids().await.contains(&old_kid)
    })
    .await;
    assert_eq!(app.published_kids().await.len(), 2);
    let id_token_kids_now = app.published_kids_of("RS256").await;
    assert_eq!(id_token_kids_now.len(), 2, "{id_token_kids_now:?}");
    assert!(!id_token_kids_now.contains(&id_token_kids[0]));
    assert_eq!(id_token_kids_now[0], id_token_kids[1]);
    let newest = app.service_access_token().await;
    assert_eq!(kid_of(&newest), next_kid);
    assert_eq!(app.introspect(&newest).await["active"], true);
}

#[tokio::test]
async fn a_self_registered_client_sees_only_its_own_tokens_at_introspection() {
    let app = spawn_app_with(Options {
        configure: configure(|config| {
            config.oauth.dcr.enabled = true;
            config.oauth.dcr.allowed_redirect_profiles = strings(["loopback"]);
        }),
        ..Options::default()
    })
    .await;
    let registered: Value = app
        .api
        .post(app.url("/oauth/register"))
        .json(&serde_json::json!({"redirect_uris": ["http://127.0.0.1:9/cb"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tokens = app.tokens().await;
    let response = app
        .api
        .post(app.url("/oauth/introspect"))
        .basic_auth(
            str_of(&registered, "client_id"),
            Some(str_of(&registered, "client_secret")),
        )
        .form(&[("token", str_of(&tokens, "access_token"))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer, serde_json::json!({"active": false}));
}

#[tokio::test]
async fn a_refused_introspection_bearer_token_is_challenged_as_a_bearer_token() {
    let app = app().await;
    let response = app
        .api
        .post(app.url("/oauth/introspect"))
        .bearer_auth("wrong")
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&response), "Bearer error=\"invalid_token\"");
    let response = app
        .api
        .get(app.url("/oauth/userinfo"))
        .header("authorization", "Bearer ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
