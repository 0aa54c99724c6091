//! A small OpenID Connect provider for the tests: discovery, JWKS, an authorize endpoint that logs
//! a configured user in, and a token endpoint that checks PKCE and returns RS256 ID tokens (or,
//! started with `start_eddsa`, Ed25519 ones, which cost it microseconds instead of milliseconds:
//! the load benchmark's provider answers as if instantly).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_oauth_bridge::clock::{Clock, SystemClock};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "bridge";
pub const CLIENT_SECRET: &str = "upstream-client-secret";
pub const REALM_PATH: &str = "/realms/test";
const SIGNING_KEY: &str = include_str!("../fixtures/upstream_rsa.pem");
const FOREIGN_KEY: &str = include_str!("../fixtures/other_rsa.pem");

/// How the provider answers the next logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    LogIn,
    DenyLogin,
    ForeignSignature,
    ExpiredIdToken,
    WrongAudience,
    WrongNonce,
    /// The provider has replaced its signing key since the bridge discovered it.
    RotatedKey,
    /// Strict OIDC Core §5.4, as panva's oidc-provider: the ID token carries `sub` only, the
    /// user's other claims come from the UserInfo endpoint.
    ClaimsOnlyInUserInfo,
    /// As `ClaimsOnlyInUserInfo`, but UserInfo speaks of someone else (token substitution).
    UserInfoForAnotherSubject,
    /// The ID token carries `sub` and `email` only, and the UserInfo endpoint fails.
    UserInfoFails,
}

struct IssuedCode {
    nonce: String,
    challenge: String,
    redirect_uri: String,
}

pub struct ProviderState {
    issuer: String,
    pub redirect_uri: Mutex<String>,
    pub user: Mutex<Value>,
    pub behaviour: Mutex<Behaviour>,
    codes: Mutex<HashMap<String, IssuedCode>>,
    pub token_requests: Mutex<u32>,
    pub userinfo_requests: Mutex<u32>,
    /// Live refresh tokens (rotated on every use, as Keycloak can be set to).
    refresh_tokens: Mutex<HashSet<String>>,
    /// Live access tokens, each new (UserInfo accepts these).
    access_tokens: Mutex<HashSet<String>>,
    pub refresh_requests: Mutex<u32>,
    /// The token endpoint answers refreshes with a bare 503, as a provider behind a failing
    /// load balancer does.
    refresh_outage: Mutex<bool>,
    /// The `token_type` of its token responses (`Bearer`; `DPoP` for a token bound to a key).
    token_type: Mutex<&'static str>,
    /// Every code, token and PKCE verifier that crossed the wire, for tests that check the
    /// bridge's logs hold none of them.
    secrets: Mutex<Vec<String>>,
    /// Signs ID tokens with this Ed25519 key instead of the RSA ones (and `behaviour`'s key
    /// changes do not apply).
    eddsa: Option<ring::signature::Ed25519KeyPair>,
}

const EDDSA_KEY_ID: &str = "test-ed25519";

pub struct TestProvider {
    pub issuer: String,
    pub state: Arc<ProviderState>,
}

impl TestProvider {
    pub async fn start() -> TestProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(listener)
    }

    /// A provider whose ID tokens are signed EdDSA (Ed25519), with a key made now.
    pub async fn start_eddsa() -> TestProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let random = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&random).unwrap();
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Self::serve_with(listener, Some(key))
    }

    pub fn serve_on(listener: tokio::net::TcpListener) -> TestProvider {
        Self::serve_with(listener, None)
    }

    fn serve_with(
        listener: tokio::net::TcpListener,
        eddsa: Option<ring::signature::Ed25519KeyPair>,
    ) -> TestProvider {
        let issuer = format!("http://{}{REALM_PATH}", listener.local_addr().unwrap());
        let state = Arc::new(ProviderState {
            issuer: issuer.clone(),
            redirect_uri: Mutex::new(String::new()),
            user: Mutex::new(json!({
                "sub": "upstream-user-42",
                "sid": "upstream-session-1",
                "email": "ada@corp.example",
                "email_verified": true,
                "name": "Ada Lovelace",
                "realm_access": {"roles": ["mcp-users", "analysts"]},
            })),
            behaviour: Mutex::new(Behaviour::LogIn),
            codes: Mutex::new(HashMap::new()),
            token_requests: Mutex::new(0),
            userinfo_requests: Mutex::new(0),
            refresh_tokens: Mutex::new(HashSet::new()),
            access_tokens: Mutex::new(HashSet::new()),
            refresh_requests: Mutex::new(0),
            refresh_outage: Mutex::new(false),
            token_type: Mutex::new("Bearer"),
            secrets: Mutex::new(vec![CLIENT_SECRET.to_owned()]),
            eddsa,
        });
        let routes = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/protocol/openid-connect/certs", get(jwks))
            .route("/protocol/openid-connect/auth", get(authorize))
            .route("/protocol/openid-connect/token", post(token))
            .route("/protocol/openid-connect/userinfo", get(userinfo));
        let app = Router::new()
            .nest(REALM_PATH, routes)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestProvider { issuer, state }
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock().unwrap() = behaviour;
    }

    /// Ends every session, as disabling the user or logging them out does in Keycloak: their
    /// refresh tokens stop working.
    pub fn end_sessions(&self) {
        self.state.refresh_tokens.lock().unwrap().clear();
        self.state.access_tokens.lock().unwrap().clear();
    }

    pub fn set_refresh_outage(&self, down: bool) {
        *self.state.refresh_outage.lock().unwrap() = down;
    }

    pub fn set_token_type(&self, token_type: &'static str) {
        *self.state.token_type.lock().unwrap() = token_type;
    }

    pub fn refresh_requests(&self) -> u32 {
        *self.state.refresh_requests.lock().unwrap()
    }

    /// The client secret and every code, token and verifier exchanged so far.
    pub fn secrets(&self) -> Vec<String> {
        self.state.secrets.lock().unwrap().clone()
    }

    /// The claims of a logout token for the user's session `sid` (OIDC Back-Channel Logout
    /// 1.0 §2.4), as the provider makes them now.
    pub fn logout_claims(&self, sid: Option<&str>) -> Value {
        let now = SystemClock.now().seconds();
        let mut claims = json!({
            "iss": self.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
            "jti": URL_SAFE_NO_PAD.encode(rand_bytes()),
            "sub": self.state.user.lock().unwrap()["sub"],
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        });
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        claims
    }

    /// `claims` signed as the provider signs (RS256, its published key), typed `logout+jwt`.
    pub fn sign_logout_token(&self, claims: &Value) -> String {
        self.sign_with(claims, SIGNING_KEY, "logout+jwt")
    }

    /// `claims` signed with a key the provider does not publish, under its key id.
    pub fn sign_with_foreign_key(&self, claims: &Value) -> String {
        self.sign_with(claims, FOREIGN_KEY, "logout+jwt")
    }

    /// `claims` signed with the provider's key and a `typ` of the caller's choosing.
    pub fn sign_with(&self, claims: &Value, pem: &str, typ: &str) -> String {
        self.sign_as(claims, pem, "test-key", typ)
    }

    /// `claims` signed with `pem` under the key id `kid`.
    pub fn sign_as(&self, claims: &Value, pem: &str, kid: &str, typ: &str) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        header.typ = Some(typ.into());
        jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

/// The provider's signing key, for tests that sign as it does by hand.
pub const PROVIDER_KEY: &str = SIGNING_KEY;
/// The key `Behaviour::RotatedKey` publishes instead, under `rotated-key`.
pub const ROTATED_KEY: &str = FOREIGN_KEY;

impl ProviderState {
    fn saw(&self, secret: &str) {
        if !secret.is_empty() {
            self.secrets.lock().unwrap().push(secret.to_owned());
        }
    }
}

async fn discovery(State(state): State<Arc<ProviderState>>) -> Json<Value> {
    let base = &state.issuer;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/protocol/openid-connect/auth"),
        "token_endpoint": format!("{base}/protocol/openid-connect/token"),
        "jwks_uri": format!("{base}/protocol/openid-connect/certs"),
        "userinfo_endpoint": format!("{base}/protocol/openid-connect/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [if state.eddsa.is_some() { "EdDSA" } else { "RS256" }],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

/// The key the provider signs with now, and its id.
fn active_key(behaviour: Behaviour) -> (&'static str, &'static str) {
    match behaviour {
        Behaviour::RotatedKey => (FOREIGN_KEY, "rotated-key"),
        _ => (SIGNING_KEY, "test-key"),
    }
}

async fn jwks(State(state): State<Arc<ProviderState>>) -> Response {
    if let Some(key) = &state.eddsa {
        use ring::signature::KeyPair;
        return Json(json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": EDDSA_KEY_ID,
            "x": URL_SAFE_NO_PAD.encode(key.public_key().as_ref()),
        }]}))
        .into_response();
    }
    let (pem, kid) = active_key(*state.behaviour.lock().unwrap());
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.into());
    Json(JwkSet { keys: vec![jwk] }).into_response()
}

fn bad_request(reason: &str) -> Response {
    (StatusCode::BAD_REQUEST, reason.to_owned()).into_response()
}

async fn authorize(
    State(state): State<Arc<ProviderState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| params.get(name).cloned().unwrap_or_default();
    if param("client_id") != CLIENT_ID {
        return bad_request("unknown client");
    }
    if param("response_type") != "code" || !param("scope").split(' ').any(|s| s == "openid") {
        return bad_request("not an OpenID Connect code request");
    }
    if param("code_challenge_method") != "S256" || param("code_challenge").len() != 43 {
        return bad_request("PKCE S256 required");
    }
    if param("nonce").is_empty() || param("state").is_empty() {
        return bad_request("state and nonce required");
    }
    let redirect_uri = param("redirect_uri");
    *state.redirect_uri.lock().unwrap() = redirect_uri.clone();
    let mut target = url::Url::parse(&redirect_uri).unwrap();
    if *state.behaviour.lock().unwrap() == Behaviour::DenyLogin {
        target
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", &param("state"));
        return Redirect::to(target.as_str()).into_response();
    }
    let code = URL_SAFE_NO_PAD.encode(rand_bytes());
    state.saw(&code);
    state.codes.lock().unwrap().insert(
        code.clone(),
        IssuedCode {
            nonce: param("nonce"),
            challenge: param("code_challenge"),
            redirect_uri: redirect_uri.clone(),
        },
    );
    target
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &param("state"));
    Redirect::to(target.as_str()).into_response()
}

fn rand_bytes() -> [u8; 32] {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn token_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({"error": error}))).into_response()
}

async fn token(
    State(state): State<Arc<ProviderState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    *state.token_requests.lock().unwrap() += 1;
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let by_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    let by_body = form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    if !by_header && !by_body {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {}
        Some("refresh_token") => return refresh(&state, &form),
        _ => return token_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
    let Some(issued) = form
        .get("code")
        .and_then(|code| state.codes.lock().unwrap().remove(code))
    else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if form.get("redirect_uri") != Some(&issued.redirect_uri) {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    state.saw(&verifier);
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != issued.challenge {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let now = SystemClock.now().seconds();
    let behaviour = *state.behaviour.lock().unwrap();
    let mut claims = state.user.lock().unwrap().clone();
    match behaviour {
        Behaviour::ClaimsOnlyInUserInfo | Behaviour::UserInfoForAnotherSubject => {
            claims = json!({"sub": claims["sub"]});
        }
        Behaviour::UserInfoFails => {
            claims = json!({"sub": claims["sub"], "email": claims["email"]});
        }
        _ => {}
    }
    claims["iss"] = json!(state.issuer);
    claims["aud"] = json!(if behaviour == Behaviour::WrongAudience {
        "someone-else"
    } else {
        CLIENT_ID
    });
    claims["iat"] = json!(now);
    claims["exp"] = json!(if behaviour == Behaviour::ExpiredIdToken {
        now - 600
    } else {
        now + 300
    });
    claims["nonce"] = json!(if behaviour == Behaviour::WrongNonce {
        "not-the-nonce".to_owned()
    } else {
        issued.nonce
    });
    let (pem, kid) = match behaviour {
        // Signed with a key the JWKS does not hold, under the published key id.
        Behaviour::ForeignSignature => (FOREIGN_KEY, "test-key"),
        other => active_key(other),
    };
    token_response(&state, &claims, pem, kid)
}

/// Tokens with an ID token carrying `claims` (RS256, or EdDSA for `start_eddsa`), and a new
/// refresh token.
fn token_response(state: &ProviderState, claims: &Value, pem: &str, kid: &str) -> Response {
    let id_token = match &state.eddsa {
        Some(key) => {
            let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": EDDSA_KEY_ID});
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let signature = key.sign(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
        }
        None => {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(kid.into());
            jsonwebtoken::encode(
                &header,
                claims,
                &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            )
            .unwrap()
        }
    };
    state.saw(&id_token);
    let access_token = format!(
        "{UPSTREAM_ACCESS_TOKEN}-{}",
        URL_SAFE_NO_PAD.encode(rand_bytes())
    );
    state.saw(&access_token);
    state
        .access_tokens
        .lock()
        .unwrap()
        .insert(access_token.clone());
    Json(json!({
        "access_token": access_token,
        "token_type": *state.token_type.lock().unwrap(),
        "expires_in": 300,
        "id_token": id_token,
        "refresh_token": new_refresh_token(state),
    }))
    .into_response()
}

fn new_refresh_token(state: &ProviderState) -> String {
    let token = format!("upstream-rt-{}", URL_SAFE_NO_PAD.encode(rand_bytes()));
    state.saw(&token);
    state.refresh_tokens.lock().unwrap().insert(token.clone());
    token
}

/// The refresh grant: the token is rotated, and a fresh ID token without nonce comes along.
fn refresh(state: &ProviderState, form: &HashMap<String, String>) -> Response {
    *state.refresh_requests.lock().unwrap() += 1;
    if *state.refresh_outage.lock().unwrap() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let presented = form.get("refresh_token").cloned().unwrap_or_default();
    if !state.refresh_tokens.lock().unwrap().remove(&presented) {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let now = SystemClock.now().seconds();
    let mut claims = state.user.lock().unwrap().clone();
    claims["iss"] = json!(state.issuer);
    claims["aud"] = json!(CLIENT_ID);
    claims["iat"] = json!(now);
    claims["exp"] = json!(now + 300);
    let (pem, kid) = active_key(*state.behaviour.lock().unwrap());
    token_response(state, &claims, pem, kid)
}

const UPSTREAM_ACCESS_TOKEN: &str = "upstream-access-token";

async fn userinfo(State(state): State<Arc<ProviderState>>, headers: HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state.access_tokens.lock().unwrap().contains(presented) {
        return token_error(StatusCode::UNAUTHORIZED, "invalid_token");
    }
    *state.userinfo_requests.lock().unwrap() += 1;
    let mut claims = state.user.lock().unwrap().clone();
    match *state.behaviour.lock().unwrap() {
        Behaviour::UserInfoForAnotherSubject => claims["sub"] = json!("someone-else"),
        Behaviour::UserInfoFails => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
        }
        _ => {}
    }
    Json(claims).into_response()
}
