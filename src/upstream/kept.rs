//! The provider's tokens the bridge keeps for a grant (for `revalidate_on_refresh`, and for
//! `keep_tokens`): only ever stored sealed, each bound to its grant's family so that it opens
//! for no other.

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
    token: &'a str,
    expires_at: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

pub(crate) fn seal_access(
    sealer: &Sealer,
    family_id: &str,
    token: &ProviderAccessToken,
) -> Result<SealedSecret, SealError> {
    let name = access_name(family_id);
    let plain = serde_json::to_string(&Sealed {
        token: token.token.expose(),
        expires_at: token.expires_at,
        scope: token.scope.as_deref(),
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
        scope: opened.scope.map(str::to_owned),
    })
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
