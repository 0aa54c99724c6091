//! The refresh families of the memory backend: packed (`packed.rs`) in slots that keep their place,
//! found by id and by current token through tables of slot numbers (a few bytes a family, where
//! maps keyed by copies of the id and the token cost a hundred), and by earlier tokens through a
//! map of their own, which only families that rotated fill.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use indexmap::IndexMap;

use super::packed::{Corrupt, OwnerParts, PackedFamily, TokenText};
use super::symbols::Symbols;
use crate::clock::UnixTime;
use crate::storage::GrantOwner;
use crate::tokens::TokenHash;
use crate::tokens::refresh::RefreshFamily;

type Slot = u32;

#[derive(Default)]
pub(super) struct Families {
    slots: Vec<Option<PackedFamily>>,
    vacant: Vec<Slot>,
    by_id: HashTable<Slot>,
    by_current: HashTable<Slot>,
    /// Tokens rotated out, by family id: kept until the family is gone, so that a reuse is
    /// recognised however old the token.
    retired: IndexMap<TokenHash, Box<str>>,
    symbols: Symbols<RandomState>,
    hasher: RandomState,
    /// Reused by every `pack`, so a rotation allocates only the packed family itself.
    scratch: Vec<u8>,
}

impl Families {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.slot_of(id).is_some()
    }

    pub(super) fn get(&self, id: &str) -> Result<Option<RefreshFamily>, Corrupt> {
        self.slot_of(id).map(|slot| self.unpack(slot)).transpose()
    }

    /// The family `token` was ever a refresh token of.
    pub(super) fn get_by_token(&self, token: &TokenHash) -> Result<Option<RefreshFamily>, Corrupt> {
        self.slot_of_token(token)
            .map(|slot| self.unpack(slot))
            .transpose()
    }

    pub(super) fn is_live_grant(&self, id: &str) -> Result<bool, Corrupt> {
        match self.slot_of(id) {
            Some(slot) => Ok(!self.packed(slot)?.revoked()?),
            None => Ok(false),
        }
    }

    /// Stores `family`, in place of the one with its id if there is one. A token that was the
    /// current one and is not any more stays known as the family's.
    pub(super) fn put(&mut self, family: &RefreshFamily) -> Result<(), Corrupt> {
        let Some(slot) = self.slot_of(&family.id) else {
            let packed = PackedFamily::pack(family, None, &mut self.symbols, &mut self.scratch);
            let slot = match self.vacant.pop() {
                Some(slot) => slot,
                None => {
                    self.slots.push(None);
                    Slot::try_from(self.slots.len() - 1).map_err(|_| Corrupt)?
                }
            };
            if let Some(current) = family.current {
                self.index_current(slot, current);
            }
            self.slots[slot as usize] = Some(packed);
            let hash = self.hasher.hash_one(TokenText::of(&family.id));
            let (slots, hasher) = (&self.slots, &self.hasher);
            self.by_id
                .insert_unique(hash, slot, |slot| id_hash(slots, hasher, *slot));
            return Ok(());
        };
        let uses = self.packed(slot)?.uses()?;
        let packed = PackedFamily::pack(family, Some(uses), &mut self.symbols, &mut self.scratch);
        let before = self.packed(slot)?.current()?;
        if before != family.current {
            if let Some(before) = before {
                self.unindex_current(slot, before);
                self.retired.insert(before, Box::from(family.id.as_str()));
            }
            if let Some(current) = family.current {
                self.index_current(slot, current);
            }
        }
        self.slots[slot as usize] = Some(packed);
        uses.release(&mut self.symbols);
        Ok(())
    }

    /// The families `owner` owns that are not revoked, unpacked (what ending grants and listing
    /// live ones start from).
    pub(super) fn unrevoked_of(
        &self,
        owner: GrantOwner<'_>,
    ) -> Result<Vec<RefreshFamily>, Corrupt> {
        // A million families are walked under the lock: what tells most of them apart is
        // compared first, as symbols and bytes, and the rest read only for those that match.
        let symbol = |text: &str| self.symbols.find(&[text]);
        let wanted = match owner {
            GrantOwner::Client(client) => symbol(client),
            GrantOwner::ProviderSession { provider, .. } => symbol(provider),
            GrantOwner::Subject(_) => Some(0),
        };
        let Some(wanted) = wanted else {
            return Ok(Vec::new());
        };
        let mut owned = Vec::new();
        for packed in self.slots.iter().flatten() {
            let Some(parts) = readable(packed.owner_bytes(), "left out of a walk") else {
                continue;
            };
            let maybe = match owner {
                GrantOwner::Subject(subject) => parts.subject == subject.as_bytes(),
                GrantOwner::Client(_) => parts.client == wanted,
                GrantOwner::ProviderSession {
                    subject,
                    session_id,
                    ..
                } => parts.session.is_some_and(|session| {
                    session.provider == wanted
                        && match (subject, session_id) {
                            (Some(subject), _) => session.subject == subject.as_bytes(),
                            (None, Some(id)) => session.session_id == Some(id.as_bytes()),
                            (None, None) => false,
                        }
                }),
            };
            if !maybe || packed.revoked()? {
                continue;
            }
            if self.owns(owner, &packed.owner()?)? {
                owned.push(packed.unpack(&self.symbols)?);
            }
        }
        Ok(owned)
    }

    fn owns(&self, owner: GrantOwner<'_>, parts: &OwnerParts<'_, str>) -> Result<bool, Corrupt> {
        let session = match &parts.session {
            Some(session) => Some(crate::storage::SessionRef {
                provider: self.symbols.resolve_one(session.provider)?,
                subject: session.subject,
                session_id: session.session_id,
            }),
            None => None,
        };
        Ok(owner.owns(
            self.symbols.resolve_one(parts.client)?,
            parts.subject,
            session,
        ))
    }

    /// Removes, among the slots from `position` on, the families `expired` says are, at most
    /// `chunk` slots at a time; the packed families go into `removed`, to be freed outside the
    /// lock. Whether the walk reached the end.
    pub(super) fn sweep_chunk(
        &mut self,
        position: &mut usize,
        chunk: usize,
        removed: &mut Vec<PackedFamily>,
        expired: impl Fn(&PackedFamily) -> Result<bool, Corrupt>,
    ) -> Result<bool, Corrupt> {
        let end = (*position + chunk).min(self.slots.len());
        for at in *position..end {
            let Some(packed) = &self.slots[at] else {
                continue;
            };
            if readable(expired(packed), "left in place by the sweep") == Some(true) {
                let slot = Slot::try_from(at).map_err(|_| Corrupt)?;
                removed.extend(self.remove_slot(slot)?);
            }
        }
        *position = end;
        Ok(end >= self.slots.len())
    }

    /// Forgets, among the next `chunk` retired tokens from `position`, those whose family is
    /// gone. Whether the walk reached the end.
    pub(super) fn sweep_retired_chunk(&mut self, position: &mut usize, chunk: usize) -> bool {
        for _ in 0..chunk {
            let Some((_, family_id)) = self.retired.get_index(*position) else {
                return true;
            };
            if self.contains(family_id) {
                *position += 1;
            } else {
                self.retired.swap_remove_index(*position);
            }
        }
        *position >= self.retired.len()
    }

    fn remove_slot(&mut self, slot: Slot) -> Result<Option<PackedFamily>, Corrupt> {
        let Some(packed) = self.slots.get(slot as usize).and_then(Option::as_ref) else {
            return Ok(None);
        };
        let id_hash = self.hasher.hash_one(packed.id()?);
        let current = packed.current()?;
        let uses = packed.uses()?;
        if let Some(current) = current {
            self.unindex_current(slot, current);
        }
        if let Ok(entry) = self.by_id.find_entry(id_hash, |other| *other == slot) {
            entry.remove();
        }
        let packed = self.slots[slot as usize].take();
        uses.release(&mut self.symbols);
        self.vacant.push(slot);
        Ok(packed)
    }

    fn index_current(&mut self, slot: Slot, current: TokenHash) {
        let hash = self.hasher.hash_one(current);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_current.insert_unique(hash, slot, |slot| {
            current_of(slots, *slot).map_or(0, |current| hasher.hash_one(current))
        });
    }

    fn unindex_current(&mut self, slot: Slot, current: TokenHash) {
        let hash = self.hasher.hash_one(current);
        if let Ok(entry) = self.by_current.find_entry(hash, |other| *other == slot) {
            entry.remove();
        }
    }

    fn slot_of(&self, id: &str) -> Option<Slot> {
        let wanted = TokenText::of(id);
        self.by_id
            .find(self.hasher.hash_one(wanted), |slot| {
                self.packed(*slot)
                    .and_then(PackedFamily::id)
                    .is_ok_and(|id| id == wanted)
            })
            .copied()
    }

    fn slot_of_token(&self, token: &TokenHash) -> Option<Slot> {
        let current = self
            .by_current
            .find(self.hasher.hash_one(token), |slot| {
                current_of(&self.slots, *slot) == Some(*token)
            })
            .copied();
        current.or_else(|| {
            self.retired
                .get(token)
                .and_then(|family_id| self.slot_of(family_id))
        })
    }

    fn packed(&self, slot: Slot) -> Result<&PackedFamily, Corrupt> {
        self.slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .ok_or(Corrupt)
    }

    fn unpack(&self, slot: Slot) -> Result<RefreshFamily, Corrupt> {
        self.packed(slot)?.unpack(&self.symbols)
    }

    #[cfg(test)]
    pub(super) fn symbols_held(&self) -> usize {
        self.symbols.len()
    }

    #[cfg(test)]
    pub(super) fn retired_len(&self) -> usize {
        self.retired.len()
    }
}

/// A family that does not read back is a bug of the packing, not of the request that finds it: a
/// walk over every family goes on past it, saying so, rather than fail every sweep and logout.
fn readable<T>(read: Result<T, Corrupt>, what: &str) -> Option<T> {
    match read {
        Ok(value) => Some(value),
        Err(Corrupt) => {
            tracing::error!("memory storage: a refresh family does not read back; {what}");
            None
        }
    }
}

/// Whether a packed family has outlived what keeps it: its absolute end, or, unless revoked
/// (a revoked family is kept to its absolute end so that its tokens keep failing as revoked),
/// its current token's.
pub(super) fn expired(packed: &PackedFamily, now: UnixTime) -> Result<bool, Corrupt> {
    Ok(packed.absolute_expires_at()? <= now
        || (!packed.revoked()? && packed.current_expires_at()? <= now))
}

fn current_of(slots: &[Option<PackedFamily>], slot: Slot) -> Option<TokenHash> {
    slots
        .get(slot as usize)
        .and_then(Option::as_ref)
        .and_then(|packed| packed.current().ok().flatten())
}

fn id_hash(slots: &[Option<PackedFamily>], hasher: &RandomState, slot: Slot) -> u64 {
    slots
        .get(slot as usize)
        .and_then(Option::as_ref)
        .and_then(|packed| packed.id().ok())
        .map_or(0, |id| hasher.hash_one(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::UpstreamSession;
    use crate::storage::contract_tests::family;
    use crate::tokens::opaque::random_string;

    const NOW: UnixTime = UnixTime(1_700_000_000);

    fn ids(families: &[RefreshFamily]) -> Vec<&str> {
        let mut ids: Vec<&str> = families.iter().map(|f| f.id.as_str()).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_rotated_out_token_still_finds_its_family_and_the_new_one_does_too() {
        let mut families = Families::default();
        let mut grant = family(&random_string(16), TokenHash::of("first"));
        families.put(&grant).unwrap();
        grant.current = Some(TokenHash::of("second"));
        families.put(&grant).unwrap();
        grant.current = Some(TokenHash::of("third"));
        families.put(&grant).unwrap();
        for token in ["first", "second", "third"] {
            let found = families.get_by_token(&TokenHash::of(token)).unwrap();
            assert_eq!(found.map(|f| f.id), Some(grant.id.clone()), "{token}");
        }
        assert_eq!(
            families
                .get_by_token(&TokenHash::of("fourth"))
                .unwrap()
                .map(|f| f.id),
            None
        );
        assert_eq!(families.len(), 1);
    }

    #[test]
    fn storing_a_family_again_names_what_it_names_now_and_lets_go_of_the_rest() {
        let mut families = Families::default();
        let mut grant = family("grant", TokenHash::of("first"));
        grant.identity.groups = vec!["staff".into()];
        families.put(&grant).unwrap();
        families
            .put(&family("other", TokenHash::of("other")))
            .unwrap();
        // client, audience, ["openid"], ["staff"] and the other family's [] groups.
        assert_eq!(families.symbols_held(), 5);
        for _ in 0..3 {
            families.put(&grant).unwrap();
        }
        assert_eq!(families.symbols_held(), 5, "storing again leaks nothing");
        // Re-validation found the user in other groups, and the client asked for less.
        grant.identity.groups = vec!["admins".into(), "staff".into()];
        grant.scope = vec![];
        families.put(&grant).unwrap();
        let stored = families.get("grant").unwrap().unwrap();
        assert_eq!(stored.identity.groups, ["admins", "staff"]);
        assert!(stored.scope.is_empty());
        assert_eq!(
            families.symbols_held(),
            5,
            "[staff] gone, [admins, staff] new, [] the grant's scope and the other's groups"
        );
        grant.identity.groups.clear();
        families.put(&grant).unwrap();
        assert_eq!(families.symbols_held(), 4, "[admins, staff] gone");
    }

    /// A family past its end, rotated once: tokens `gone-1` (retired) and `gone-2` (current).
    fn expired_after_one_rotation() -> Families {
        let mut families = Families::default();
        let mut gone = family("gone", TokenHash::of("gone-1"));
        gone.absolute_expires_at = NOW;
        families.put(&gone).unwrap();
        gone.current = Some(TokenHash::of("gone-2"));
        families.put(&gone).unwrap();
        families
    }

    #[test]
    fn a_family_swept_away_takes_its_tokens_and_symbols_with_it() {
        let mut families = expired_after_one_rotation();
        assert_eq!(families.retired_len(), 1);

        let mut removed = Vec::new();
        let mut position = 0;
        while !families
            .sweep_chunk(&mut position, 1, &mut removed, |f| expired(f, NOW))
            .unwrap()
        {}
        assert_eq!(removed.len(), 1);
        assert_eq!(families.symbols_held(), 0);
        let mut position = 0;
        while !families.sweep_retired_chunk(&mut position, 1) {}
        assert_eq!(families.retired_len(), 0);

        // The slot is used again by another family, which the old tokens must not lead to.
        let other = family("other", TokenHash::of("other-1"));
        families.put(&other).unwrap();
        for token in ["gone-1", "gone-2"] {
            assert!(
                families
                    .get_by_token(&TokenHash::of(token))
                    .unwrap()
                    .is_none()
            );
        }
        assert!(!families.contains("gone"));
        assert!(families.contains("other"));
        assert_eq!(families.len(), 1);
    }

    #[test]
    fn a_retired_token_of_a_swept_family_never_leads_to_the_family_in_its_slot() {
        let mut families = expired_after_one_rotation();
        let mut removed = Vec::new();
        families
            .sweep_chunk(&mut 0, 16, &mut removed, |f| expired(f, NOW))
            .unwrap();
        // Before the retired tokens are swept, a new family takes the slot.
        families
            .put(&family("other", TokenHash::of("other-1")))
            .unwrap();
        assert!(
            families
                .get_by_token(&TokenHash::of("gone-1"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn only_what_has_expired_is_swept() {
        let mut families = Families::default();
        let live = family("live", TokenHash::of("live"));
        let mut ended = family("ended", TokenHash::of("ended"));
        ended.current_expires_at = NOW;
        let mut revoked = family("revoked", TokenHash::of("revoked"));
        revoked.current_expires_at = NOW;
        revoked.revoked = true;
        for f in [&live, &ended, &revoked] {
            families.put(f).unwrap();
        }
        let mut removed = Vec::new();
        families
            .sweep_chunk(&mut 0, 16, &mut removed, |f| expired(f, NOW))
            .unwrap();
        assert!(families.contains("live"));
        assert!(!families.contains("ended"));
        assert!(
            families.contains("revoked"),
            "a revoked family stays to its absolute end"
        );
    }

    #[test]
    fn owners_find_their_unrevoked_families_and_no_other() {
        let mut families = Families::default();
        let mut ada = family("ada-1", TokenHash::of("a1"));
        ada.identity.subject = "ada".into();
        ada.upstream_session = Some(UpstreamSession {
            provider: "corp".into(),
            subject: "corp-ada".into(),
            session_id: Some("s-1".into()),
        });
        let mut ada_elsewhere = ada.clone();
        ada_elsewhere.id = "ada-2".into();
        ada_elsewhere.current = Some(TokenHash::of("a2"));
        ada_elsewhere.client_id = "other-client".into();
        ada_elsewhere.upstream_session = Some(UpstreamSession {
            provider: "partner".into(),
            subject: "corp-ada".into(),
            session_id: Some("s-1".into()),
        });
        let mut bob = family("bob-1", TokenHash::of("b1"));
        bob.identity.subject = "bob".into();
        let mut ada_revoked = ada.clone();
        ada_revoked.id = "ada-3".into();
        ada_revoked.current = Some(TokenHash::of("a3"));
        ada_revoked.revoked = true;
        for f in [&ada, &ada_elsewhere, &bob, &ada_revoked] {
            families.put(f).unwrap();
        }
        let owned = |owner| families.unrevoked_of(owner).unwrap();
        assert_eq!(ids(&owned(GrantOwner::Subject("ada"))), ["ada-1", "ada-2"]);
        assert_eq!(
            ids(&owned(GrantOwner::Client("client"))),
            ["ada-1", "bob-1"]
        );
        assert_eq!(
            ids(&owned(GrantOwner::Client("nobody"))),
            Vec::<&str>::new()
        );
        assert_eq!(
            ids(&owned(GrantOwner::ProviderSession {
                provider: "corp",
                subject: Some("corp-ada"),
                session_id: None,
            })),
            ["ada-1"]
        );
        assert_eq!(
            ids(&owned(GrantOwner::ProviderSession {
                provider: "partner",
                subject: None,
                session_id: Some("s-1"),
            })),
            ["ada-2"]
        );
        assert_eq!(
            ids(&owned(GrantOwner::ProviderSession {
                provider: "nobody",
                subject: Some("corp-ada"),
                session_id: Some("s-1"),
            })),
            Vec::<&str>::new()
        );
        assert_eq!(
            ids(&owned(GrantOwner::ProviderSession {
                provider: "corp",
                subject: None,
                session_id: None,
            })),
            Vec::<&str>::new(),
            "a logout that names neither subject nor session ends nothing"
        );
    }
}
