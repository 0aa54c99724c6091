//! Automatic key rotation (`oauth.signing.rotation_period`). Time is cut into periods counted
//! from the Unix epoch; period `n` signs with key `n`, kept in storage under a name of its own,
//! so every instance sharing the storage picks the same key without talking to the others.
//! Key `n + 1` is published a whole period before it signs, so resource servers caching the
//! JWKS know it in time; key `k` stays published until the last token it signed has expired,
//! and is deleted after. ID tokens follow the same schedule with RSA keys of their own.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{SharedClock, UnixTime};
use crate::storage::{Storage, StorageError};
use crate::tokens::keys::{KeyError, KeyRing, KeySet, SigningAlgorithm, SigningKey};

const KEY_NAME_PREFIX: &str = "signing-key/";
const ID_TOKEN_KEY_NAME_PREFIX: &str = "id-token-key/";
/// How much longer than strictly needed a key is kept: for instances whose clocks lag, or that
/// swap keys a little late, so their last tokens still verify everywhere.
const GRACE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
pub(crate) struct RotationSchedule {
    pub(crate) period: Duration,
    pub(crate) access_token_ttl: Duration,
}

/// Which keys a moment needs: the one that signs, and the oldest that may have signed a live token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyWindow {
    signing: i64,
    oldest: i64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RotationError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl RotationSchedule {
    fn period_seconds(&self) -> i64 {
        i64::try_from(self.period.as_secs())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    fn needed_at(&self, now: UnixTime) -> KeyWindow {
        let period = self.period_seconds();
        let kept = i64::try_from((self.access_token_ttl + GRACE).as_secs()).unwrap_or(i64::MAX);
        // Key k signs until (k + 1) * period; its tokens live until `ttl` later.
        KeyWindow {
            signing: now.seconds().div_euclid(period),
            oldest: now.seconds().saturating_sub(kept).div_euclid(period),
        }
    }

    /// The key set for `now`, creating the signing and the next key when they do not exist yet,
    /// and deleting keys no live token can need.
    pub(crate) async fn load(
        &self,
        storage: &dyn Storage,
        now: UnixTime,
    ) -> Result<(KeySet, KeyWindow), RotationError> {
        let needed = self.needed_at(now);
        let access = self.load_keys(storage, needed, KEY_NAME_PREFIX, SigningAlgorithm::ES256);
        let id_token = self.load_keys(
            storage,
            needed,
            ID_TOKEN_KEY_NAME_PREFIX,
            SigningAlgorithm::RS256,
        );
        let (access, id_token) = tokio::try_join!(access, id_token)?;
        let mut access = access.into_iter();
        let active = access
            .next()
            .ok_or_else(|| KeyError::Invalid("the rotation loaded no signing key".to_owned()))?;
        Ok((
            KeySet::new(active)
                .with_verify_only(access.collect())
                .with_id_token_keys(id_token),
            needed,
        ))
    }

    /// The keys of one kind a window needs, the signing one first, then the next one, then
    /// older ones still needed; deletes the keys of this kind no live token can need.
    async fn load_keys(
        &self,
        storage: &dyn Storage,
        needed: KeyWindow,
        prefix: &str,
        algorithm: SigningAlgorithm,
    ) -> Result<Vec<SigningKey>, RotationError> {
        let (active_name, next_name) = (
            key_name(prefix, needed.signing),
            key_name(prefix, needed.signing + 1),
        );
        let (active, next) = tokio::try_join!(
            stored_key(storage, &active_name, algorithm),
            stored_key(storage, &next_name, algorithm),
        )?;
        let mut keys = vec![active, next];
        let mut stored: Vec<(i64, String)> = storage
            .shared_secret_names(prefix)
            .await?
            .into_iter()
            .filter_map(|name| Some((index_of(prefix, &name)?, name)))
            .collect();
        stored.sort();
        for (index, name) in stored {
            if index < needed.oldest {
                storage.delete_shared_secret(&name).await?;
                tracing::info!(
                    key = index,
                    kind = prefix.trim_end_matches('/'),
                    "rotated-out key deleted: no live token needs it"
                );
            } else if index < needed.signing {
                keys.push(stored_key(storage, &name, algorithm).await?);
            }
        }
        Ok(keys)
    }
}

fn key_name(prefix: &str, index: i64) -> String {
    format!("{prefix}{index}")
}

fn index_of(prefix: &str, name: &str) -> Option<i64> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// The key stored under `name`, generated and stored first when there is none, so that every
/// instance sharing the storage signs with the same one. Generated only when missing (an RSA
/// key takes a sizeable fraction of a second, on the blocking pool).
pub(crate) async fn stored_key(
    storage: &dyn Storage,
    name: &str,
    algorithm: SigningAlgorithm,
) -> Result<SigningKey, RotationError> {
    let mut fresh = None;
    stored_key_keeping(storage, name, algorithm, &mut fresh).await
}

/// As `stored_key`, keeping a key it generated in `fresh` when storing it fails, so that a
/// caller retrying does not search for new primes each time.
pub(crate) async fn stored_key_keeping(
    storage: &dyn Storage,
    name: &str,
    algorithm: SigningAlgorithm,
    fresh: &mut Option<String>,
) -> Result<SigningKey, RotationError> {
    let pem = match storage.existing_shared_secret(name).await? {
        Some(pem) => pem,
        None => {
            let generated = match fresh.take() {
                Some(pem) => pem,
                None => generate_pem(algorithm).await?,
            };
            *fresh = Some(generated.clone());
            let stored = storage
                .shared_secret(name, generated.into_bytes().into())
                .await?;
            *fresh = None;
            stored
        }
    };
    Ok(match algorithm {
        SigningAlgorithm::ES256 => SigningKey::from_es256_pem(pem.expose())?,
        SigningAlgorithm::RS256 => SigningKey::from_rs256_pem(pem.expose())?,
    })
}

async fn generate_pem(algorithm: SigningAlgorithm) -> Result<String, KeyError> {
    match algorithm {
        SigningAlgorithm::ES256 => SigningKey::generate_es256_pem(),
        SigningAlgorithm::RS256 => tokio::task::spawn_blocking(SigningKey::generate_rs256_pem)
            .await
            .map_err(|_| KeyError::Invalid("generating an RSA key was interrupted".to_owned()))?,
    }
}

/// Swaps the ring's key set whenever the period or the oldest needed key changes. Checked every
/// second: cheap when nothing changed, and a storage outage only delays the swap (the grace
/// period covers a short one). `loaded` is the window the ring's keys were loaded for.
pub(crate) fn spawn_rotation(
    schedule: RotationSchedule,
    storage: Arc<dyn Storage>,
    ring: Arc<KeyRing>,
    clock: SharedClock,
    mut loaded: KeyWindow,
) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut failing = false;
        loop {
            ticker.tick().await;
            let now = clock.now();
            if schedule.needed_at(now) == loaded {
                continue;
            }
            match schedule.load(storage.as_ref(), now).await {
                Ok((keys, window)) => {
                    tracing::info!(kid = %keys.active().kid, "signing keys rotated");
                    ring.replace(keys);
                    loaded = window;
                    failing = false;
                }
                // Once per outage, not once a second.
                Err(error) if !failing => {
                    let error = crate::error_chain(&error);
                    tracing::warn!(%error, "signing key rotation failed; retrying every second");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    const HOUR: u64 = 3600;

    fn schedule() -> RotationSchedule {
        RotationSchedule {
            period: Duration::from_secs(24 * HOUR),
            access_token_ttl: Duration::from_secs(HOUR),
        }
    }

    /// The published access-token keys (ES256).
    fn kids(keys: &KeySet) -> Vec<String> {
        published(keys, "ES256")
    }

    /// The published ID-token keys (RS256).
    fn id_kids(keys: &KeySet) -> Vec<String> {
        published(keys, "RS256")
    }

    fn published(keys: &KeySet, algorithm: &str) -> Vec<String> {
        keys.jwks()
            .keys
            .iter()
            .filter(|jwk| {
                serde_json::to_value(jwk).is_ok_and(|jwk| jwk["alg"].as_str() == Some(algorithm))
            })
            .filter_map(|jwk| jwk.common.key_id.clone())
            .collect()
    }

    fn signs_id_tokens(keys: &KeySet) -> String {
        keys.id_token_key(jsonwebtoken::Algorithm::RS256)
            .unwrap()
            .kid
            .clone()
    }

    #[tokio::test]
    async fn a_key_is_published_a_period_ahead_signs_for_a_period_then_verifies_until_its_tokens_expire()
     {
        let storage = MemoryStorage::new();
        let schedule = schedule();
        let day = 86_400;
        let start = UnixTime(1_000 * day);

        let (first, _) = schedule.load(&storage, start).await.unwrap();
        let signing = first.active().kid.clone();
        let next = kids(&first)[1].clone();
        assert_eq!(kids(&first).len(), 2, "signing and next key");
        assert_eq!(id_kids(&first).len(), 2, "ID tokens: signing and next key");
        let id_signing = signs_id_tokens(&first);
        let id_next = id_kids(&first)[1].clone();
        assert_eq!(id_kids(&first)[0], id_signing);
        // Another instance at the same moment gets the same keys.
        let (again, _) = schedule
            .load(&storage, start.plus(Duration::from_secs(60)))
            .await
            .unwrap();
        assert_eq!(kids(&again), kids(&first));
        assert_eq!(id_kids(&again), id_kids(&first));

        // The next period: the pre-published key signs, the old one still verifies.
        let after = start.plus(Duration::from_secs(day as u64));
        let (second, _) = schedule.load(&storage, after).await.unwrap();
        assert_eq!(second.active().kid, next);
        assert!(second.find(&signing).is_some());
        assert_eq!(kids(&second).len(), 3);
        assert_eq!(signs_id_tokens(&second), id_next);
        assert!(id_kids(&second).contains(&id_signing));
        assert_eq!(id_kids(&second).len(), 3);
        // An ID-token key never verifies an access token.
        assert!(second.find(&id_signing).is_none());

        // Just before an hour (the token lifetime) and the grace have passed, it is still kept.
        let almost = after.plus(Duration::from_secs(HOUR) + GRACE - Duration::from_secs(1));
        let (kept, _) = schedule.load(&storage, almost).await.unwrap();
        assert!(kept.find(&signing).is_some());
        // Then no token of the old key can be alive: it is neither published nor stored.
        let later = after.plus(Duration::from_secs(HOUR) + GRACE);
        let (third, _) = schedule.load(&storage, later).await.unwrap();
        assert!(third.find(&signing).is_none());
        assert_eq!(kids(&third).len(), 2);
        assert!(!id_kids(&third).contains(&id_signing));
        assert_eq!(id_kids(&third).len(), 2);
        for prefix in [KEY_NAME_PREFIX, ID_TOKEN_KEY_NAME_PREFIX] {
            assert_eq!(
                storage.shared_secret_names(prefix).await.unwrap().len(),
                2,
                "{prefix}"
            );
        }
    }

    #[test]
    fn the_oldest_needed_key_follows_the_token_lifetime_and_the_grace() {
        let schedule = schedule();
        let day = 86_400;
        let kept = (HOUR + GRACE.as_secs()) as i64;
        assert_eq!(
            schedule.needed_at(UnixTime(10 * day + kept - 1)),
            KeyWindow {
                signing: 10,
                oldest: 9
            }
        );
        assert_eq!(
            schedule.needed_at(UnixTime(10 * day + kept)),
            KeyWindow {
                signing: 10,
                oldest: 10
            }
        );
    }
}
