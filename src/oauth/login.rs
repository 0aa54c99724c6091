//! The local login form (`oauth.local_users`): it plays the upstream provider's part. The
//! authorization endpoint parks the request under a state and sends the browser here with it;
//! a right password completes the sign-in exactly as the upstream callback does (consent
//! remembered, our code minted, back to the client).

use std::net::IpAddr;

use super::authorize::{AuthorizeError, ClientRedirect};
use super::login_throttle::{LoginThrottle, Verdict};
use super::sign_in::{
    SignedIn, SignedInUser, finish_sign_in, peek_pending_sign_in, take_pending_sign_in,
};
use super::{Bridge, OAuthError, SignIn};
use crate::clock::UnixTime;
use crate::local_users::LocalUsers;
use crate::secret::SecretString;

/// Usernames longer than this are refused before any lookup.
const MAX_USERNAME_LEN: usize = 256;

pub struct LocalLogin {
    pub users: LocalUsers,
    pub(crate) throttle: LoginThrottle,
}

/// What became of a submitted form.
#[derive(Debug)]
pub(crate) enum LoginOutcome {
    SignedIn(SignedIn),
    /// Show the form again with one message for a wrong password and an unknown user alike.
    WrongCredentials,
    /// Too many failures: no password was checked.
    Throttled {
        retry_after: u64,
    },
}

fn local_login(bridge: &Bridge) -> Result<&LocalLogin, AuthorizeError> {
    match &bridge.sign_in {
        SignIn::Local(login) => Ok(login),
        SignIn::Upstream(_) => Err(AuthorizeError::Page(OAuthError::invalid_request(
            "users of this service sign in at its identity provider",
        ))),
    }
}

/// Checks that the sign-in named by `state` is alive and was started by this browser, without
/// consuming it: the form may be shown, and submitted with a wrong password, more than once.
pub(crate) async fn check_sign_in(
    bridge: &Bridge,
    state: &str,
    binding: Option<&str>,
    now: UnixTime,
) -> Result<String, AuthorizeError> {
    local_login(bridge)?;
    peek_pending_sign_in(bridge, state, binding, now)
        .await
        .map(|pending| pending.request.client_id)
}

/// The user gave up at the form: the sign-in ends, and the client hears `access_denied`, as
/// when a user cancels at an upstream provider.
pub(crate) async fn cancel_login(
    bridge: &Bridge,
    state: &str,
    binding: Option<&str>,
    now: UnixTime,
) -> AuthorizeError {
    if let Err(error) = local_login(bridge) {
        return error;
    }
    match take_pending_sign_in(bridge, state, binding, now).await {
        Ok(pending) => {
            tracing::info!(client_id = %pending.request.client_id, "the user cancelled the sign-in");
            let error = ClientRedirect::error(
                &pending.request,
                OAuthError::AccessDenied("the user cancelled the sign-in".into()),
            );
            bridge.metrics.sign_in("denied", LOCAL);
            super::sign_in::record_failed_sign_in(
                LOCAL,
                "denied",
                Some(&pending.request.client_id),
                None,
                &error,
            );
            error
        }
        Err(error) => error,
    }
}

/// Checks a submitted username and password under the throttle; a right one completes the
/// sign-in. `address` is the source address as the caller buckets it.
pub(crate) async fn submit_login(
    bridge: &Bridge,
    state: &str,
    binding: Option<&str>,
    username: &str,
    password: &SecretString,
    address: Option<IpAddr>,
    now: UnixTime,
) -> Result<LoginOutcome, AuthorizeError> {
    let login = local_login(bridge)?;
    let client_id = check_sign_in(bridge, state, binding, now).await?;
    let username = username.trim();
    if username.is_empty() || username.len() > MAX_USERNAME_LEN {
        refused_login(bridge, "wrong_credentials", &client_id, None);
        return Ok(LoginOutcome::WrongCredentials);
    }
    match login.throttle.begin_attempt(username, address, now) {
        Verdict::Refused { retry_after } => {
            // No username in the log: people type passwords into that field too.
            tracing::warn!(?address, "login refused: too many failed attempts");
            refused_login(
                bridge,
                "throttled",
                &client_id,
                login.users.subject_of(username),
            );
            return Ok(LoginOutcome::Throttled { retry_after });
        }
        Verdict::Allowed { delay } if !delay.is_zero() => tokio::time::sleep(delay).await,
        Verdict::Allowed { .. } => {}
    }
    let Some(identity) = login.users.authenticate(username, password).await else {
        tracing::info!(?address, "login failed: wrong username or password");
        refused_login(
            bridge,
            "wrong_credentials",
            &client_id,
            login.users.subject_of(username),
        );
        return Ok(LoginOutcome::WrongCredentials);
    };
    login.throttle.record_success(username, address);
    // Consumed only now: a replayed or concurrent submission finds it gone.
    let pending = take_pending_sign_in(bridge, state, binding, now).await?;
    tracing::info!(subject = %identity.subject, "local user signed in");
    let subject = identity.subject.clone();
    let user = SignedInUser {
        provider: LOCAL,
        identity,
        auth_time: now,
        provider_tokens: None,
        upstream_session: None,
    };
    let signed_in = finish_sign_in(bridge, &pending, user, now).await;
    let outcome = super::sign_in::outcome_of(&signed_in);
    bridge.metrics.sign_in(outcome, LOCAL);
    if let Err(error) = &signed_in {
        super::sign_in::record_failed_sign_in(
            LOCAL,
            outcome,
            Some(&pending.request.client_id),
            Some(&subject),
            error,
        );
    }
    signed_in.map(LoginOutcome::SignedIn)
}

/// The built-in users' name in the metrics and the audit trail.
const LOCAL: &str = "local";

/// A login refused before the user was known to be who they say. `subject` only when the
/// username names a user: a username may be a password typed into the wrong field.
fn refused_login(bridge: &Bridge, reason: &'static str, client_id: &str, subject: Option<&str>) {
    bridge.metrics.sign_in(reason, LOCAL);
    crate::audit::record(&crate::audit::Event::SignInFailed {
        provider: LOCAL,
        reason,
        subject,
        client_id: Some(client_id),
        error: None,
    });
}
