//! In-memory storage for a single instance: one mutex over plain maps, never held across `.await`.
//! The maps that expire are `IndexMap`s, so that the sweep can walk them by position a chunk at a
//! time and let requests in between. Refresh families, of which there may be millions, are kept
//! packed (`families.rs`).

mod families;
mod packed;
mod symbols;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use indexmap::IndexMap;

use self::families::Families;
use self::packed::PackedFamily;
use super::{
    AuthorizationCodeRecord, AuthorizationRequest, CodeRedemption, ConsentGrant, ConsentRequest,
    EndedGrant, GrantOwner, IssueGrant, LAST_USE_PRECISION, PendingAuthorization, PendingTake,
    RegisteredClient, SessionRef, Storage, StorageError,
};
use crate::clock::UnixTime;
use crate::sealing::SealedSecret;
use crate::secret::SecretBytes;
use crate::tokens::TokenHash;
use crate::tokens::refresh::{
    Persist, Presentation, REVOKED_FAMILY_TOMBSTONE_TTL, RefreshFamily, RefreshRequest, Replacement,
};

#[derive(Default)]
pub struct MemoryStorage {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pending: IndexMap<TokenHash, PendingAuthorization>,
    codes: IndexMap<TokenHash, CodeEntry>,
    /// With every refresh token each ever had, current or retired, so reuse can be recognised.
    families: Families,
    family_tombstones: IndexMap<String, UnixTime>,
    revoked_access_tokens: IndexMap<String, UnixTime>,
    consent_requests: IndexMap<TokenHash, ConsentRequest>,
    /// Keyed by subject and client; one grant per redirect URI.
    consent_grants: IndexMap<(String, String), Vec<ConsentGrant>>,
    registered_clients: HashMap<String, RegisteredClient>,
    shared_secrets: HashMap<String, SecretBytes>,
    used_once: IndexMap<String, UnixTime>,
}

struct CodeEntry {
    record: AuthorizationCodeRecord,
    redeemed: bool,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StorageError> {
        self.inner.lock().map_err(|_| StorageError::Poisoned)
    }
}

impl Inner {
    /// Revokes the family, or leaves a tombstone that revokes it when it is created; false
    /// when it was revoked (or tombstoned) already.
    fn revoke_family(&mut self, family_id: &str, now: UnixTime) -> Result<bool, StorageError> {
        let tombstoned = self
            .family_tombstones
            .insert(family_id.to_owned(), now.plus(REVOKED_FAMILY_TOMBSTONE_TTL))
            .is_some();
        let Some(mut family) = self.families.get(family_id)? else {
            return Ok(!tombstoned);
        };
        let revoked_now = !family.revoked;
        family.revoke();
        for token in family.access_tokens.drain(..) {
            self.revoked_access_tokens
                .insert(token.jti, token.expires_at);
        }
        self.families.put(&family)?;
        Ok(revoked_now)
    }

    /// Ends every grant of `owner` not ended yet: its families, and the grants its codes not
    /// yet redeemed would start.
    fn end_grants(
        &mut self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<EndedGrant>, StorageError> {
        let mut ended: Vec<EndedGrant> = self
            .families
            .unrevoked_of(owner)?
            .iter()
            .map(|family| EndedGrant::of_family(family, now))
            .collect();
        ended.extend(
            self.codes
                .values()
                .filter(|code| !code.redeemed)
                .filter(|code| {
                    let record = &code.record;
                    owner.owns(
                        &record.client_id,
                        &record.identity.subject,
                        record.upstream_session.as_ref().map(SessionRef::of),
                    )
                })
                .filter(|code| {
                    let family_id = &code.record.family_id;
                    !self.families.contains(family_id)
                        && !self.family_tombstones.contains_key(family_id)
                })
                .map(|code| EndedGrant::of_code(&code.record)),
        );
        for grant in &ended {
            self.revoke_family(&grant.family_id, now)?;
        }
        Ok(ended)
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn put_pending(
        &self,
        state: TokenHash,
        pending: PendingAuthorization,
    ) -> Result<(), StorageError> {
        self.lock()?.pending.insert(state, pending);
        Ok(())
    }

    async fn take_pending(
        &self,
        state: &TokenHash,
        binding: Option<&TokenHash>,
        now: UnixTime,
    ) -> Result<PendingTake, StorageError> {
        let mut inner = self.lock()?;
        let Some(pending) = inner.pending.get(state) else {
            return Ok(PendingTake::Missing);
        };
        if pending.expires_at <= now {
            inner.pending.swap_remove(state);
            return Ok(PendingTake::Missing);
        }
        if binding != Some(&pending.browser_binding) {
            return Ok(PendingTake::OtherBrowser);
        }
        Ok(inner
            .pending
            .swap_remove(state)
            .map_or(PendingTake::Missing, |p| PendingTake::Taken(Box::new(p))))
    }

    async fn peek_pending(
        &self,
        state: &TokenHash,
        binding: Option<&TokenHash>,
        now: UnixTime,
    ) -> Result<PendingTake, StorageError> {
        let inner = self.lock()?;
        Ok(match inner.pending.get(state) {
            None => PendingTake::Missing,
            Some(pending) if pending.expires_at <= now => PendingTake::Missing,
            Some(pending) if binding != Some(&pending.browser_binding) => PendingTake::OtherBrowser,
            Some(pending) => PendingTake::Taken(Box::new(pending.clone())),
        })
    }

    async fn count_pending(&self, now: UnixTime) -> Result<usize, StorageError> {
        let inner = self.lock()?;
        Ok(inner
            .pending
            .values()
            .filter(|p| p.expires_at > now)
            .count()
            + inner
                .consent_requests
                .values()
                .filter(|r| r.expires_at > now)
                .count())
    }

    async fn put_code(
        &self,
        code: TokenHash,
        record: AuthorizationCodeRecord,
    ) -> Result<(), StorageError> {
        self.lock()?.codes.insert(
            code,
            CodeEntry {
                record,
                redeemed: false,
            },
        );
        Ok(())
    }

    async fn redeem_code(
        &self,
        code: &TokenHash,
        client_id: &str,
        now: UnixTime,
        issue: &mut IssueGrant<'_>,
    ) -> Result<CodeRedemption, StorageError> {
        let mut inner = self.lock()?;
        let Some(entry) = inner.codes.get_mut(code) else {
            return Ok(CodeRedemption::Unknown);
        };
        if entry.record.client_id != client_id {
            return Ok(CodeRedemption::OtherClient);
        }
        if entry.redeemed {
            return Ok(CodeRedemption::Replayed {
                family_id: entry.record.family_id.clone(),
                client_id: entry.record.client_id.clone(),
            });
        }
        if entry.record.expires_at <= now {
            return Ok(CodeRedemption::Expired);
        }
        entry.redeemed = true;
        let record = entry.record.clone();
        if let Some(family) = issue(&record) {
            inner.families.put(&family)?;
            if inner.family_tombstones.contains_key(&family.id) {
                inner.revoke_family(&family.id, now)?;
            }
        }
        Ok(CodeRedemption::Redeemed(Box::new(record)))
    }

    async fn create_family(&self, family: RefreshFamily) -> Result<bool, StorageError> {
        let mut inner = self.lock()?;
        if inner.family_tombstones.contains_key(&family.id) {
            return Ok(false);
        }
        inner.families.put(&family)?;
        Ok(true)
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        request: &RefreshRequest<'_>,
        replacement: Replacement,
        now: UnixTime,
    ) -> Result<Option<(Presentation, RefreshFamily)>, StorageError> {
        let mut inner = self.lock()?;
        let Some(mut family) = inner.families.get_by_token(presented)? else {
            return Ok(None);
        };
        let outcome = family.present(presented, request, replacement, now);
        let evicted = family.evict_excess_access_tokens();
        for token in evicted {
            inner
                .revoked_access_tokens
                .insert(token.jti, token.expires_at);
        }
        match outcome.persist() {
            // Storing the family indexes its new token and keeps the one it replaced known as its.
            Persist::IndexReplacement => inner.families.put(&family)?,
            // The rule revoked it, as `revoke_family` does again to the stored one.
            Persist::RevokeFamily => {
                inner.revoke_family(&family.id, now)?;
            }
            // Refused before the rule changed anything (and so nothing was evicted).
            Persist::Nothing => {}
        }
        Ok(Some((outcome, family)))
    }

    async fn revoke_family(&self, family_id: &str, now: UnixTime) -> Result<bool, StorageError> {
        self.lock()?.revoke_family(family_id, now)
    }

    async fn grant_is_live(&self, family_id: &str) -> Result<bool, StorageError> {
        Ok(self.lock()?.families.is_live_grant(family_id)?)
    }

    async fn is_access_token_revoked(
        &self,
        jti: &str,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        Ok(self
            .lock()?
            .revoked_access_tokens
            .get(jti)
            .is_some_and(|expires_at| *expires_at > now))
    }

    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: UnixTime,
    ) -> Result<(), StorageError> {
        self.lock()?
            .revoked_access_tokens
            .entry(jti.to_owned())
            .or_insert(expires_at);
        Ok(())
    }

    async fn replace_upstream_tokens(
        &self,
        family_id: &str,
        previous: &SealedSecret,
        refresh: SealedSecret,
        access: Option<SealedSecret>,
    ) -> Result<bool, StorageError> {
        let mut inner = self.lock()?;
        let Some(mut family) = inner.families.get(family_id)? else {
            return Ok(false);
        };
        if family.upstream_refresh.as_ref() != Some(previous) {
            return Ok(false);
        }
        family.upstream_refresh = Some(refresh);
        if access.is_some() {
            family.upstream_access = access.map(Box::new);
        }
        inner.families.put(&family)?;
        Ok(true)
    }

    async fn refresh_family(&self, family_id: &str) -> Result<Option<RefreshFamily>, StorageError> {
        Ok(self.lock()?.families.get(family_id)?)
    }

    async fn refresh_family_of(
        &self,
        token: &TokenHash,
    ) -> Result<Option<RefreshFamily>, StorageError> {
        Ok(self.lock()?.families.get_by_token(token)?)
    }

    async fn put_consent_request(
        &self,
        token: TokenHash,
        request: ConsentRequest,
    ) -> Result<(), StorageError> {
        self.lock()?.consent_requests.insert(token, request);
        Ok(())
    }

    async fn get_consent_request(
        &self,
        token: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<ConsentRequest>, StorageError> {
        Ok(self
            .lock()?
            .consent_requests
            .get(token)
            .filter(|r| r.expires_at > now)
            .cloned())
    }

    async fn take_consent_request(
        &self,
        token: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<ConsentRequest>, StorageError> {
        Ok(self
            .lock()?
            .consent_requests
            .swap_remove(token)
            .filter(|r| r.expires_at > now))
    }

    async fn put_consent_grant(
        &self,
        grant: ConsentGrant,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        let mut inner = self.lock()?;
        let grants = inner
            .consent_grants
            .entry((grant.subject.clone(), grant.client_id.clone()))
            .or_default();
        match grants
            .iter_mut()
            .find(|g| g.redirect_uri == grant.redirect_uri && g.audience == grant.audience)
        {
            Some(existing) if existing.expires_at <= now => *existing = grant,
            // A later approval adds to what was approved before and renews it.
            Some(existing) => {
                for scope in grant.scope {
                    if !existing.scope.contains(&scope) {
                        existing.scope.push(scope);
                    }
                }
                existing.expires_at = grant.expires_at;
            }
            None => grants.push(grant),
        }
        Ok(())
    }

    async fn consented_scopes(
        &self,
        subject: &str,
        request: &AuthorizationRequest,
        now: UnixTime,
    ) -> Result<Option<Vec<String>>, StorageError> {
        let inner = self.lock()?;
        let key = (subject.to_owned(), request.client_id.clone());
        Ok(inner.consent_grants.get(&key).and_then(|grants| {
            grants
                .iter()
                .find(|g| {
                    g.expires_at > now
                        && g.redirect_uri == request.redirect_uri
                        && g.audience == request.audience
                })
                .map(|g| g.scope.clone())
        }))
    }

    async fn register_client(
        &self,
        client: RegisteredClient,
        max_clients: usize,
    ) -> Result<bool, StorageError> {
        let mut inner = self.lock()?;
        if inner.registered_clients.len() >= max_clients {
            return Ok(false);
        }
        inner
            .registered_clients
            .insert(client.client_id.clone(), client);
        Ok(true)
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<RegisteredClient>, StorageError> {
        Ok(self.lock()?.registered_clients.get(client_id).cloned())
    }

    async fn touch_client(&self, client_id: &str, now: UnixTime) -> Result<(), StorageError> {
        if let Some(client) = self.lock()?.registered_clients.get_mut(client_id)
            && client
                .last_used_at
                .is_none_or(|last| last.plus(LAST_USE_PRECISION) <= now)
        {
            client.last_used_at = Some(now);
        }
        Ok(())
    }

    async fn delete_client(
        &self,
        client_id: &str,
        now: UnixTime,
    ) -> Result<Option<Vec<EndedGrant>>, StorageError> {
        let mut inner = self.lock()?;
        if inner.registered_clients.remove(client_id).is_none() {
            return Ok(None);
        }
        Ok(Some(inner.end_grants(GrantOwner::Client(client_id), now)?))
    }

    async fn list_clients(&self) -> Result<Vec<RegisteredClient>, StorageError> {
        let mut clients: Vec<RegisteredClient> =
            self.lock()?.registered_clients.values().cloned().collect();
        clients.sort_by(|a, b| (a.issued_at, &a.client_id).cmp(&(b.issued_at, &b.client_id)));
        Ok(clients)
    }

    // A walk over every family, under the lock: an administrator's occasional question, not
    // worth an index that every family would pay for in memory.
    async fn live_grants(
        &self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<RefreshFamily>, StorageError> {
        let mut grants = self.lock()?.families.unrevoked_of(owner)?;
        grants.retain(|family| family.is_live(now));
        grants.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(grants)
    }

    async fn revoke_grants(
        &self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<EndedGrant>, StorageError> {
        let mut inner = self.lock()?;
        let ended = inner.end_grants(owner, now)?;
        inner
            .consent_grants
            .retain(|(subject, client_id), _| !owner.owns_consent(subject, client_id));
        Ok(ended)
    }

    async fn delete_unused_clients(
        &self,
        used_before: UnixTime,
        never_used_before: UnixTime,
    ) -> Result<usize, StorageError> {
        let mut inner = self.lock()?;
        let before = inner.registered_clients.len();
        inner
            .registered_clients
            .retain(|_, c| match c.last_used_at {
                Some(last) => last >= used_before,
                None => c.issued_at >= never_used_before,
            });
        Ok(before - inner.registered_clients.len())
    }

    async fn count_clients(&self) -> Result<usize, StorageError> {
        Ok(self.lock()?.registered_clients.len())
    }

    async fn shared_secret(
        &self,
        name: &str,
        fresh: SecretBytes,
    ) -> Result<SecretBytes, StorageError> {
        Ok(self
            .lock()?
            .shared_secrets
            .entry(name.to_owned())
            .or_insert(fresh)
            .clone())
    }

    async fn use_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        let mut inner = self.lock()?;
        match inner.used_once.get_mut(key) {
            // Expired but not swept yet: as good as forgotten.
            Some(until) if *until <= now => {
                *until = expires_at;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                inner.used_once.insert(key.to_owned(), expires_at);
                Ok(true)
            }
        }
    }

    async fn existing_shared_secret(
        &self,
        name: &str,
    ) -> Result<Option<SecretBytes>, StorageError> {
        Ok(self.lock()?.shared_secrets.get(name).cloned())
    }

    async fn shared_secret_names(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        Ok(self
            .lock()?
            .shared_secrets
            .keys()
            .filter(|name| name.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn delete_shared_secret(&self, name: &str) -> Result<(), StorageError> {
        self.lock()?.shared_secrets.remove(name);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.lock().map(|_| ())
    }

    async fn sweep_expired(&self, now: UnixTime) -> Result<usize, StorageError> {
        let mut removed = 0;
        removed += self
            .sweep(|inner, at, garbage| {
                sweep_chunk(&mut inner.pending, at, garbage, |_, p| p.expires_at <= now)
            })
            .await?;
        removed += self
            .sweep(|inner, at, garbage| {
                sweep_chunk(&mut inner.codes, at, garbage, |_, c| {
                    c.record.expires_at <= now
                })
            })
            .await?;
        removed += self
            .sweep(|inner, at, garbage: &mut Vec<PackedFamily>| {
                let whole = inner
                    .families
                    .sweep_chunk(at, SWEEP_CHUNK, garbage, |family| {
                        families::expired(family, now)
                    })?;
                Ok(Walked::from(whole))
            })
            .await?;
        self.sweep(|inner, at, _: &mut Vec<()>| {
            Ok(Walked::from(
                inner.families.sweep_retired_chunk(at, SWEEP_CHUNK),
            ))
        })
        .await?;
        removed += self
            .sweep(|inner, at, garbage| {
                sweep_chunk(&mut inner.family_tombstones, at, garbage, |_, until| {
                    *until <= now
                })
            })
            .await?;
        self.sweep(|inner, at, garbage| {
            sweep_chunk(&mut inner.consent_requests, at, garbage, |_, r| {
                r.expires_at <= now
            })
        })
        .await?;
        self.sweep(|inner, at, garbage| {
            sweep_chunk(&mut inner.consent_grants, at, garbage, |_, grants| {
                grants.retain(|g| g.expires_at > now);
                grants.is_empty()
            })
        })
        .await?;
        self.sweep(|inner, at, garbage| {
            sweep_chunk(&mut inner.used_once, at, garbage, |_, expires_at| {
                *expires_at <= now
            })
        })
        .await?;
        removed += self
            .sweep(|inner, at, garbage| {
                sweep_chunk(
                    &mut inner.revoked_access_tokens,
                    at,
                    garbage,
                    |_, expires_at| *expires_at <= now,
                )
            })
            .await?;
        Ok(removed)
    }
}

/// Entries the sweep looks at per hold of the lock: well under a millisecond of work, so that a
/// million expired families cost each request at most a short wait.
const SWEEP_CHUNK: usize = 512;

impl MemoryStorage {
    /// Runs `chunk` under the lock until it has walked its whole map, letting other tasks run
    /// between chunks; what it removed is freed outside the lock, in a buffer reused for every
    /// chunk. How many entries it removed.
    async fn sweep<V>(
        &self,
        mut chunk: impl FnMut(&mut Inner, &mut usize, &mut Vec<V>) -> Result<Walked, StorageError>,
    ) -> Result<usize, StorageError> {
        let mut position = 0;
        let mut removed = 0;
        let mut garbage = Vec::new();
        loop {
            let walked = chunk(&mut *self.lock()?, &mut position, &mut garbage)?;
            removed += garbage.len();
            garbage.clear();
            if walked == Walked::Whole {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }
}

#[derive(PartialEq, Eq)]
enum Walked {
    Chunk,
    Whole,
}

impl From<bool> for Walked {
    fn from(whole: bool) -> Self {
        if whole { Walked::Whole } else { Walked::Chunk }
    }
}

/// Moves the expired entries among the next `SWEEP_CHUNK` from `position` into `removed`. An
/// entry removed takes the last one's place, which is looked at next. Between chunks, requests
/// may remove entries (moving others behind `position`) or add them: the next sweep sees those.
fn sweep_chunk<K: Hash + Eq, V>(
    map: &mut IndexMap<K, V>,
    position: &mut usize,
    removed: &mut Vec<V>,
    mut expired: impl FnMut(&K, &mut V) -> bool,
) -> Result<Walked, StorageError> {
    for _ in 0..SWEEP_CHUNK {
        let Some((key, value)) = map.get_index_mut(*position) else {
            return Ok(Walked::Whole);
        };
        if expired(key, value) {
            removed.extend(map.swap_remove_index(*position).map(|(_, value)| value));
        } else {
            *position += 1;
        }
    }
    Ok(Walked::from(*position >= map.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::storage::contract_tests::Backend;

    struct Memory(Arc<MemoryStorage>);

    impl Backend for Memory {
        type Storage = MemoryStorage;

        async fn start() -> Option<Self> {
            Some(Memory(Arc::new(MemoryStorage::new())))
        }

        fn storage(&self) -> Arc<MemoryStorage> {
            Arc::clone(&self.0)
        }
    }

    /// The storage contract, one test per rule.
    mod contract {
        use super::Memory;

        crate::storage::contract_tests::storage_contract!(Memory);
    }

    const NOW: UnixTime = UnixTime(1_700_000_000);

    /// `n` families named `{prefix}-{i}`; every other one ended before `NOW`.
    async fn families(storage: &MemoryStorage, prefix: &str, n: usize) {
        for i in 0..n {
            let mut family = crate::storage::contract_tests::family(
                &format!("{prefix}-{i}"),
                TokenHash::of(&format!("{prefix}-token-{i}")),
            );
            if i % 2 == 0 {
                family.absolute_expires_at = NOW;
            }
            assert!(storage.create_family(family).await.unwrap());
        }
    }

    #[tokio::test]
    async fn a_sweep_over_many_chunks_removes_exactly_the_expired() {
        let storage = MemoryStorage::new();
        let n = 3 * SWEEP_CHUNK + 7;
        families(&storage, "many", n).await;
        assert_eq!(storage.sweep_expired(NOW).await.unwrap(), n.div_ceil(2));
        let inner = storage.lock().unwrap();
        assert_eq!(inner.families.len(), n / 2);
        for i in 0..n {
            assert_eq!(
                inner.families.contains(&format!("many-{i}")),
                i % 2 == 1,
                "family {i}"
            );
            assert_eq!(
                inner
                    .families
                    .get_by_token(&TokenHash::of(&format!("many-token-{i}")))
                    .unwrap()
                    .is_some(),
                i % 2 == 1,
                "token {i}"
            );
        }
    }

    /// On one thread, a sweep that never let go of the lock would finish before anything else ran.
    #[tokio::test(flavor = "current_thread")]
    async fn requests_go_on_between_the_chunks_of_a_long_sweep() {
        let storage = Arc::new(MemoryStorage::new());
        families(&storage, "long", 8 * SWEEP_CHUNK).await;
        let sweeping = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sweep = tokio::spawn({
            let storage = Arc::clone(&storage);
            let sweeping = Arc::clone(&sweeping);
            async move {
                let removed = storage.sweep_expired(NOW).await.unwrap();
                sweeping.store(false, std::sync::atomic::Ordering::SeqCst);
                removed
            }
        });
        let prober = tokio::spawn({
            let storage = Arc::clone(&storage);
            let sweeping = Arc::clone(&sweeping);
            async move {
                let mut answered_during_sweep = 0;
                loop {
                    let found = storage
                        .refresh_family_of(&TokenHash::of("long-token-1"))
                        .await
                        .unwrap();
                    if !sweeping.load(std::sync::atomic::Ordering::SeqCst) {
                        return answered_during_sweep;
                    }
                    assert!(found.is_some());
                    answered_during_sweep += 1;
                    tokio::task::yield_now().await;
                }
            }
        });
        assert_eq!(sweep.await.unwrap(), 4 * SWEEP_CHUNK);
        let answered = prober.await.unwrap();
        assert!(
            answered >= 4,
            "only {answered} requests were answered while the sweep ran"
        );
    }
}
