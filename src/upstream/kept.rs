//! The provider's tokens the bridge keeps for a grant (for `revalidate_on_refresh`, and for
//! `keep_tokens`): only ever stored sealed, each bound to its grant's family so that it opens
//! for no other.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::{Deserialize, Serialize};

use super::ProviderAccessToken;
use crate::clock::UnixTime;
use crate::sealing::{SealError, SealedSecret, Sealer};
use crate::secret::SecretString;

/// What a sealed provider refresh token is bound to.
pub(crate) fn refresh_name(family_id: &str) -> String {
    format!("upstream-refresh-token/{family_id}")
}

fn access_name(family_id: &str) -> String {
    format!("upstream-access-token/{family_id}")
}

/// The sealed form: the token with what is known of it, so that its lifetime cannot be read or
/// changed at rest either.
#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    expires_at: UnixTime,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    scope: Option<Cow<'a, str>>,
}

pub(crate) fn seal_access(
    sealer: &Sealer,
    family_id: &str,
    token: &ProviderAccessToken,
) -> Result<SealedSecret, SealError> {
    let name = access_name(family_id);
    let plain = serde_json::to_string(&Sealed {
        token: Cow::Borrowed(token.token.expose()),
        expires_at: token.expires_at,
        scope: token.scope.as_deref().map(Cow::Borrowed),
    })
    .map_err(|_| SealError::Encrypt { name: name.clone() })?;
    sealer.seal_secret(&name, &SecretString::new(plain))
}

pub(crate) fn open_access(
    sealer: &Sealer,
    family_id: &str,
    sealed: &SealedSecret,
) -> Result<ProviderAccessToken, SealError> {
    let name = access_name(family_id);
    let plain = sealer.open_secret(&name, sealed)?;
    let opened: Sealed<'_> =
        serde_json::from_str(plain.expose()).map_err(|_| SealError::Malformed { name })?;
    Ok(ProviderAccessToken {
        token: SecretString::new(opened.token),
        expires_at: opened.expires_at,
        scope: opened.scope.map(Cow::into_owned),
    })
}

/// One use of a grant's kept refresh token at a time, in this process: a provider that detects
/// refresh-token reuse (Keycloak's "revoke refresh token", Auth0, Okta) ends the user's session
/// when the same token is spent twice, as concurrent renewals would.
#[derive(Debug, Default)]
pub struct Renewals(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl Renewals {
    /// Waits for the grant's renewal in progress, if any; holds the grant's turn until dropped.
    pub(crate) async fn turn_of(&self, family_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            // Only renewals in progress are held here.
            locks.retain(|_, lock| lock.strong_count() > 0);
            match locks.get(family_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(family_id.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&SecretString::new("a-storage-encryption-key-of-32-chars!"))
    }

    fn token() -> ProviderAccessToken {
        ProviderAccessToken {
            token: SecretString::new("provider-at"),
            expires_at: UnixTime(1_700_000_300),
            scope: Some("openid email".into()),
        }
    }

    #[tokio::test]
    async fn renewals_of_one_grant_take_turns_and_others_do_not_wait() {
        let renewals = Renewals::default();
        let first = renewals.turn_of("family-1").await;
        let other = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            renewals.turn_of("family-2"),
        )
        .await;
        assert!(other.is_ok(), "another grant does not wait");
        let same = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            renewals.turn_of("family-1"),
        )
        .await;
        assert!(same.is_err(), "the same grant waits for its turn");
        drop(first);
        drop(other);
        let again = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            renewals.turn_of("family-1"),
        )
        .await;
        assert!(again.is_ok(), "and gets it once the renewal is done");
    }

    #[test]
    fn a_token_with_quotes_and_backslashes_opens_as_sealed() {
        let sealer = sealer();
        let odd = ProviderAccessToken {
            token: SecretString::new("a\"b\\c"),
            expires_at: UnixTime(1),
            scope: None,
        };
        let sealed = seal_access(&sealer, "family-1", &odd).unwrap();
        let opened = open_access(&sealer, "family-1", &sealed).unwrap();
        assert_eq!(opened.token.expose(), "a\"b\\c");
        assert_eq!(opened.scope, None);
    }

    #[test]
    fn an_access_token_opens_only_for_its_own_grant() {
        let sealer = sealer();
        let sealed = seal_access(&sealer, "family-1", &token()).unwrap();
        assert!(!sealed.as_str().contains("provider-at"));
        let opened = open_access(&sealer, "family-1", &sealed).unwrap();
        assert_eq!(opened.token.expose(), "provider-at");
        assert_eq!(opened.expires_at, UnixTime(1_700_000_300));
        assert_eq!(opened.scope.as_deref(), Some("openid email"));
        assert!(matches!(
            open_access(&sealer, "family-2", &sealed),
            Err(SealError::WrongKey { .. })
        ));
        // A refresh token of the same grant does not pass for its access token.
        let refresh = sealer
            .seal_secret(&refresh_name("family-1"), &SecretString::new("rt"))
            .unwrap();
        assert!(open_access(&sealer, "family-1", &refresh).is_err());
    }
}
