//! The public keys of `private_key_jwt` clients: registered inline (`jwks`) or published at a
//! URL (`jwks_uri`), fetched with the same guards as metadata documents and cached.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Semaphore;

use super::metadata_documents::{CimdSettings, DocumentError, FetchLabels, guarded_fetch};
use crate::clock::UnixTime;
use crate::oauth::client_assertion::{
    AssertionRefused, check_client_keys, client_key_set, published_key_set,
};

/// Where a client's signing keys are.
#[derive(Debug, Clone)]
pub(crate) enum ClientKeys {
    Inline(Arc<JwkSet>),
    Remote(String),
}

impl ClientKeys {
    /// From client metadata: `jwks` (checked: public signing keys only) or `jwks_uri`.
    pub(crate) fn from_metadata(
        jwks: Option<&serde_json::Value>,
        jwks_uri: Option<&str>,
    ) -> Result<Option<Self>, &'static str> {
        if !check_client_keys(jwks, jwks_uri)? {
            return Ok(None);
        }
        Ok(Some(match (jwks, jwks_uri) {
            (Some(jwks), _) => ClientKeys::Inline(Arc::new(client_key_set(jwks)?)),
            (None, Some(uri)) => ClientKeys::Remote(uri.to_owned()),
            (None, None) => return Ok(None),
        }))
    }
}

impl ClientKeys {
    /// What `check` says of these keys: inline ones, or the set at the URL, fetched again once
    /// when none of it verifies the signature (its owner may have rotated its keys). The outer
    /// error: the keys could not be fetched.
    pub(crate) async fn check_with<T>(
        &self,
        remote: &RemoteKeySets,
        now: UnixTime,
        check: impl Fn(&JwkSet) -> Result<T, AssertionRefused>,
    ) -> Result<Result<T, AssertionRefused>, DocumentError> {
        let uri = match self {
            ClientKeys::Inline(keys) => return Ok(check(keys)),
            ClientKeys::Remote(uri) => uri,
        };
        let keys = remote.keys(uri, false, now).await?;
        match check(&keys) {
            Err(refusal) if refusal.is_about_keys() => {
                let again = remote.keys(uri, true, now).await?;
                // The same set again (fetched too recently to fetch anew) verifies nothing new.
                if Arc::ptr_eq(&again, &keys) {
                    Ok(Err(refusal))
                } else {
                    Ok(check(&again))
                }
            }
            outcome => Ok(outcome),
        }
    }
}

const JWK_SET: FetchLabels = FetchLabels {
    url: "the jwks_uri",
    document: "the JWK set",
};

/// A fetched key set is fetched again for a signature no key of it verifies (the client rotated
/// its keys), but not sooner than this after the last fetch; a set that could not be fetched is
/// not tried again sooner either. Either way a client cannot make the bridge fetch on every
/// request.
const REFETCH_AFTER: Duration = Duration::from_secs(60);
/// URLs remembered at most; past it the cache starts over.
const MAX_CACHED_SETS: usize = 1_000;
/// Fetches under way at most, as for metadata documents: anyone who registers a client chooses
/// the URL, so the bridge must not fan out.
const MAX_CONCURRENT_FETCHES: usize = 16;

enum Cached {
    Keys {
        keys: Arc<JwkSet>,
        fetched_at: UnixTime,
        expires_at: UnixTime,
    },
    Failed {
        error: DocumentError,
        until: UnixTime,
    },
}

/// Key sets fetched from `jwks_uri`s, cached by URL within the fetch settings' bounds.
pub(crate) struct RemoteKeySets {
    /// For URLs that anyone may have registered: the metadata documents' guards.
    guarded: CimdSettings,
    /// For the exact URLs the operator configured: their hosts may be internal.
    configured: CimdSettings,
    configured_uris: HashSet<String>,
    cache: Mutex<HashMap<String, Cached>>,
    fetches: Semaphore,
}

impl RemoteKeySets {
    /// `configured_uris` are the `jwks_uri`s of configured clients: fetched with their hosts
    /// allowed even when private. Any other URL gets `guarded` as it is.
    pub(crate) fn new(guarded: CimdSettings, configured_uris: Vec<String>) -> Self {
        let mut configured = guarded.clone();
        configured.allowed_hosts.extend(
            configured_uris
                .iter()
                .filter_map(|uri| Some(url::Url::parse(uri).ok()?.host_str()?.to_owned())),
        );
        RemoteKeySets {
            guarded,
            configured,
            configured_uris: configured_uris.into_iter().collect(),
            cache: Mutex::new(HashMap::new()),
            fetches: Semaphore::new(MAX_CONCURRENT_FETCHES),
        }
    }

    /// The key set at `uri`: cached, or fetched when the cached one has expired, or when `stale`
    /// (a signature none of its keys verified) and it was fetched a while ago.
    pub(crate) async fn keys(
        &self,
        uri: &str,
        stale: bool,
        now: UnixTime,
    ) -> Result<Arc<JwkSet>, DocumentError> {
        match self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uri)
        {
            Some(Cached::Keys {
                keys,
                fetched_at,
                expires_at,
            }) if *expires_at > now && !(stale && fetched_at.plus(REFETCH_AFTER) <= now) => {
                return Ok(Arc::clone(keys));
            }
            Some(Cached::Failed { error, until }) if *until > now => return Err(error.clone()),
            _ => {}
        }
        let outcome = self.fetch(uri).await;
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_SETS {
            cache.clear();
        }
        match outcome {
            Ok((keys, lifetime)) => {
                let keys = Arc::new(keys);
                cache.insert(
                    uri.to_owned(),
                    Cached::Keys {
                        keys: Arc::clone(&keys),
                        fetched_at: now,
                        expires_at: now.plus(lifetime),
                    },
                );
                Ok(keys)
            }
            // A set fetched again after a good one keeps the good one: a failed refetch (which
            // anyone can prompt with an unknown kid) must not stop every signature for a minute.
            Err(error) => {
                if let Some(Cached::Keys {
                    keys,
                    fetched_at,
                    expires_at,
                }) = cache.get_mut(uri)
                    && *expires_at > now
                {
                    // Counted as a fetch, so the next one waits its minute too.
                    *fetched_at = now;
                    return Ok(Arc::clone(keys));
                }
                cache.insert(
                    uri.to_owned(),
                    Cached::Failed {
                        error: error.clone(),
                        until: now.plus(REFETCH_AFTER),
                    },
                );
                Err(error)
            }
        }
    }

    async fn fetch(&self, uri: &str) -> Result<(JwkSet, Duration), DocumentError> {
        let _slot = self
            .fetches
            .try_acquire()
            .map_err(|_| DocumentError::Busy)?;
        let settings = if self.configured_uris.contains(uri) {
            &self.configured
        } else {
            &self.guarded
        };
        // The lookup too: a resolver that never answers must not hold the request.
        let (body, lifetime) =
            tokio::time::timeout(settings.timeout, guarded_fetch(settings, uri, &JWK_SET))
                .await
                .map_err(|_| DocumentError::Unreachable {
                    reason: "fetching the JWK set timed out".to_owned(),
                })??;
        let value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| DocumentError::Invalid("the JWK set is not JSON".to_owned()))?;
        let keys = published_key_set(&value)
            .map_err(|problem| DocumentError::Invalid(problem.to_owned()))?;
        Ok((keys, lifetime))
    }
}
