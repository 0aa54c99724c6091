//! Client registration management (RFC 7592): a client registered by DCR reads or deletes its
//! registration at `registration_client_uri` with the `registration_access_token` it was given.
//! Deleting revokes every grant the client holds. Clients from the configuration or from
//! metadata documents have no registration to manage.

use subtle::ConstantTimeEq;

use super::Bridge;
use super::bearer::BearerError;
use super::register::{RegistrationResponse, registration_client_uri};
use crate::audit;
use crate::clock::UnixTime;
use crate::storage::RegisteredClient;
use crate::tokens::TokenHash;

/// One answer for every refusal: an unknown client, one registered without a token, a wrong
/// token. RFC 7592 §2.1 has an unknown client answered 401 as well, so that nobody learns which
/// client ids exist.
const NOT_THIS_REGISTRATION: &str = "the registration access token is not valid for this client";

/// The registration `client_id` names, if `token` is its registration access token.
pub(crate) async fn managed_client(
    bridge: &Bridge,
    client_id: &str,
    token: Option<&str>,
) -> Result<RegisteredClient, BearerError> {
    let token = token.ok_or(BearerError::Missing)?;
    let client = bridge
        .storage
        .get_client(client_id)
        .await?
        .ok_or(BearerError::InvalidToken(NOT_THIS_REGISTRATION))?;
    let presented = TokenHash::of(token);
    match &client.registration_token_hash {
        Some(expected) if bool::from(expected.0.ct_eq(&presented.0)) => Ok(client),
        _ => Err(BearerError::InvalidToken(NOT_THIS_REGISTRATION)),
    }
}

/// RFC 7592 §3: what the client registered, the registration's URL and its token (the one just
/// presented: only its hash is kept). The client secret is not shown again; it is kept hashed.
pub(crate) fn client_information(
    bridge: &Bridge,
    client: RegisteredClient,
    token: &str,
) -> RegistrationResponse {
    RegistrationResponse {
        registration_client_uri: registration_client_uri(&bridge.settings, &client.client_id),
        registration_access_token: token.to_owned(),
        client_secret: None,
        client_secret_expires_at: None,
        client_id_issued_at: client.issued_at.seconds(),
        redirect_uris: client.redirect_uris,
        token_endpoint_auth_method: client.token_endpoint_auth_method,
        grant_types: client.grant_types,
        response_types: client.response_types,
        client_name: client.client_name,
        scope: client.scope.map(|scope| scope.join(" ")),
        application_type: client.application_type,
        id_token_signed_response_alg: client.id_token_signed_response_alg,
        jwks: client.jwks,
        jwks_uri: client.jwks_uri,
        client_id: client.client_id,
    }
}

/// RFC 7592 §2.3: the registration is gone, and with it every grant of the client: its refresh
/// tokens stop working and its access tokens are refused wherever revocation is checked.
pub(crate) async fn delete_registration(
    bridge: &Bridge,
    client_id: &str,
    token: Option<&str>,
    now: UnixTime,
) -> Result<(), BearerError> {
    let client = managed_client(bridge, client_id, token).await?;
    // Deleted by a concurrent request in between: the outcome the client asked for.
    if let Some(ended) = bridge.storage.delete_client(&client.client_id, now).await? {
        tracing::info!(client_id = client.client_id, "client registration deleted");
        audit::record(&audit::Event::ClientDeleted {
            client_id: &client.client_id,
            reason: audit::DeletionReason::ClientRequest,
        });
        super::revoke::record_ended(&ended, audit::RevocationReason::ClientDeleted, None);
    }
    Ok(())
}
