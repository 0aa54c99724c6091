//! A refresh family as the memory backend keeps it: one allocation of bytes instead of a struct
//! of ten heap strings, so that a million live grants fit in a few hundred megabytes. Values that
//! families share are symbols (`symbols.rs`); times are varints; a family id that is the bridge's
//! own 16 random bytes in base64url is kept as those bytes (access-token ids stay text: a rotation
//! packs up to 32 of them, and base64 each time would cost more than the bytes it saves).
//!
//! What the sweep and the owner walks read (expiry, revocation, the current token, the id, the
//! client, the subject, the provider session) comes first, so that they stop reading early.

use std::hash::BuildHasher;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::symbols::{Symbol, Symbols};
use crate::clock::UnixTime;
use crate::identity::{Identity, UpstreamSession};
use crate::sealing::SealedSecret;
use crate::storage::StorageError;
use crate::tokens::TokenHash;
use crate::tokens::refresh::{IssuedAccessToken, RefreshFamily, RetiredToken};

/// Bytes that do not read as a packed family: a bug of this module, never an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

impl From<Corrupt> for StorageError {
    fn from(_: Corrupt) -> Self {
        StorageError::Corrupt
    }
}

pub(super) struct PackedFamily(Box<[u8]>);

const REVOKED: u16 = 1;
const CURRENT: u16 = 1 << 1;
const EMAIL: u16 = 1 << 2;
const NAME: u16 = 1 << 3;
const EMAIL_VERIFIED_KNOWN: u16 = 1 << 4;
const EMAIL_VERIFIED: u16 = 1 << 5;
const LAST_USED: u16 = 1 << 6;
const PREVIOUS: u16 = 1 << 7;
const SESSION: u16 = 1 << 8;
/// The provider's `sub` is the grant's subject, as it is without a subject prefix.
const SESSION_SUBJECT_IS_SUBJECT: u16 = 1 << 9;
const SESSION_ID: u16 = 1 << 10;
const UPSTREAM_REFRESH: u16 = 1 << 11;
const UPSTREAM_ACCESS: u16 = 1 << 12;

/// flags (2), absolute expiry (8), current token's expiry (8), then the current token (32).
const FIXED: usize = 18;

/// The symbols a packed family holds a use of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Uses {
    client: Symbol,
    audience: Symbol,
    scope: Symbol,
    groups: Symbol,
    provider: Option<Symbol>,
}

impl Uses {
    /// Gives the uses back.
    pub(super) fn release<S: BuildHasher>(self, symbols: &mut Symbols<S>) {
        for symbol in [self.client, self.audience, self.scope, self.groups]
            .into_iter()
            .chain(self.provider)
        {
            symbols.release(symbol);
        }
    }
}

impl PackedFamily {
    /// Packs `family`, taking a use of each symbol it names. `before`, the uses of the family as it
    /// was, lets a rotation (which names what it named) take its symbols without looking them up.
    pub(super) fn pack<S: BuildHasher>(
        family: &RefreshFamily,
        before: Option<Uses>,
        symbols: &mut Symbols<S>,
        scratch: &mut Vec<u8>,
    ) -> Self {
        let identity = &family.identity;
        let session = family.upstream_session.as_ref();
        let mut flags = 0;
        for (set, flag) in [
            (family.revoked, REVOKED),
            (family.current.is_some(), CURRENT),
            (identity.email.is_some(), EMAIL),
            (identity.name.is_some(), NAME),
            (identity.email_verified.is_some(), EMAIL_VERIFIED_KNOWN),
            (identity.email_verified == Some(true), EMAIL_VERIFIED),
            (family.last_used_at.is_some(), LAST_USED),
            (family.previous.is_some(), PREVIOUS),
            (session.is_some(), SESSION),
            (
                session.is_some_and(|session| session.subject == identity.subject),
                SESSION_SUBJECT_IS_SUBJECT,
            ),
            (
                session.is_some_and(|session| session.session_id.is_some()),
                SESSION_ID,
            ),
            (family.upstream_refresh.is_some(), UPSTREAM_REFRESH),
            (family.upstream_access.is_some(), UPSTREAM_ACCESS),
        ] {
            if set {
                flags |= flag;
            }
        }
        scratch.clear();
        let out = scratch;
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&family.absolute_expires_at.0.to_le_bytes());
        out.extend_from_slice(&family.current_expires_at.0.to_le_bytes());
        if let Some(current) = family.current {
            out.extend_from_slice(&current.0);
        }
        put_token_text(out, &family.id);
        let client = before.map(|b| b.client);
        put_varint(out, take(symbols, client, &[&family.client_id]));
        put_text(out, &identity.subject);
        if let Some(session) = session {
            let provider = before.and_then(|b| b.provider);
            put_varint(out, take(symbols, provider, &[&session.provider]));
            if session.subject != identity.subject {
                put_text(out, &session.subject);
            }
            if let Some(session_id) = &session.session_id {
                put_text(out, session_id);
            }
        }
        let audience = before.map(|b| b.audience);
        put_varint(out, take(symbols, audience, &[&family.audience]));
        put_varint(out, take(symbols, before.map(|b| b.scope), &family.scope));
        put_varint(
            out,
            take(symbols, before.map(|b| b.groups), &identity.groups),
        );
        if let Some(email) = &identity.email {
            put_text(out, email);
        }
        if let Some(name) = &identity.name {
            put_text(out, name);
        }
        put_time(out, family.created_at);
        if let Some(last_used_at) = family.last_used_at {
            put_time(out, last_used_at);
        }
        if let Some(previous) = family.previous {
            out.extend_from_slice(&previous.hash.0);
            put_time(out, previous.rotated_at);
            put_varint(out, u64::from(previous.retries));
        }
        if let Some(sealed) = &family.upstream_refresh {
            put_text(out, sealed.as_str());
        }
        if let Some(sealed) = &family.upstream_access {
            put_text(out, sealed.as_str());
        }
        put_varint(out, family.access_tokens.len() as u64);
        for token in &family.access_tokens {
            // As text: rotations pack and unpack up to 32 of them, and what bytes would
            // save is small beside what base64 costs each time.
            put_text(out, &token.jti);
            put_time(out, token.expires_at);
        }
        PackedFamily(Box::from(out.as_slice()))
    }

    /// The symbols `pack` took a use of.
    pub(super) fn uses(&self) -> Result<Uses, Corrupt> {
        self.read()?.uses()
    }

    pub(super) fn unpack<S: BuildHasher>(
        &self,
        symbols: &Symbols<S>,
    ) -> Result<RefreshFamily, Corrupt> {
        self.read()?.unpack(symbols)
    }

    pub(super) fn revoked(&self) -> Result<bool, Corrupt> {
        Ok(self.flags()? & REVOKED != 0)
    }

    pub(super) fn absolute_expires_at(&self) -> Result<UnixTime, Corrupt> {
        self.fixed_time(2)
    }

    pub(super) fn current_expires_at(&self) -> Result<UnixTime, Corrupt> {
        self.fixed_time(10)
    }

    pub(super) fn current(&self) -> Result<Option<TokenHash>, Corrupt> {
        if self.flags()? & CURRENT == 0 {
            return Ok(None);
        }
        let bytes = self.0.get(FIXED..FIXED + 32).ok_or(Corrupt)?;
        Ok(Some(TokenHash(bytes.try_into().map_err(|_| Corrupt)?)))
    }

    /// The family's id, as it compares and hashes with `TokenText::of` an id asked for.
    pub(super) fn id(&self) -> Result<TokenText<'_>, Corrupt> {
        self.after_current()?.token_text()
    }

    /// A reader at what follows the current token: the id.
    fn after_current(&self) -> Result<Reader<'_>, Corrupt> {
        let current = if self.flags()? & CURRENT != 0 { 32 } else { 0 };
        Ok(Reader {
            bytes: &self.0,
            at: FIXED + current,
        })
    }

    /// What `GrantOwner` looks at, as bytes, the texts unchecked: what a walk over every family
    /// compares before it reads any further.
    pub(super) fn owner_bytes(&self) -> Result<OwnerParts<'_, [u8]>, Corrupt> {
        let (raw, _) = self.raw_head()?;
        Ok(OwnerParts {
            client: raw.client,
            subject: raw.subject,
            session: raw.session.map(|session| SessionParts {
                provider: session.provider,
                subject: session.subject.unwrap_or(raw.subject),
                session_id: session.session_id,
            }),
        })
    }

    /// What `GrantOwner` looks at.
    pub(super) fn owner(&self) -> Result<OwnerParts<'_, str>, Corrupt> {
        let (head, _) = self.head()?;
        Ok(OwnerParts {
            client: head.client,
            subject: head.subject,
            session: head.session.map(|session| SessionParts {
                provider: session.provider,
                subject: session.subject.unwrap_or(head.subject),
                session_id: session.session_id,
            }),
        })
    }

    fn flags(&self) -> Result<u16, Corrupt> {
        let bytes = self.0.get(..2).ok_or(Corrupt)?;
        Ok(u16::from_le_bytes(bytes.try_into().map_err(|_| Corrupt)?))
    }

    fn fixed_time(&self, at: usize) -> Result<UnixTime, Corrupt> {
        let bytes = self.0.get(at..at + 8).ok_or(Corrupt)?;
        Ok(UnixTime(i64::from_le_bytes(
            bytes.try_into().map_err(|_| Corrupt)?,
        )))
    }

    /// Reads what the walks need, and no further; the texts unchecked.
    fn raw_head(&self) -> Result<(RawHead<'_>, Reader<'_>), Corrupt> {
        let flags = self.flags()?;
        let current = self.current()?;
        let mut reader = self.after_current()?;
        let id = reader.token_text()?;
        let client = reader.symbol()?;
        let subject = reader.bytes()?;
        let session = if flags & SESSION != 0 {
            let provider = reader.symbol()?;
            let subject = if flags & SESSION_SUBJECT_IS_SUBJECT != 0 {
                None
            } else {
                Some(reader.bytes()?)
            };
            let session_id = if flags & SESSION_ID != 0 {
                Some(reader.bytes()?)
            } else {
                None
            };
            Some(ReadSession {
                provider,
                subject,
                session_id,
            })
        } else {
            None
        };
        let head = RawHead {
            flags,
            current,
            id,
            client,
            subject,
            session,
        };
        Ok((head, reader))
    }

    /// `raw_head`, its texts checked and its id read.
    fn head(&self) -> Result<(Head<'_>, Reader<'_>), Corrupt> {
        let (raw, reader) = self.raw_head()?;
        fn text(bytes: &[u8]) -> Result<&str, Corrupt> {
            std::str::from_utf8(bytes).map_err(|_| Corrupt)
        }
        let session = match raw.session {
            Some(session) => Some(ReadSession {
                provider: session.provider,
                subject: session.subject.map(text).transpose()?,
                session_id: session.session_id.map(text).transpose()?,
            }),
            None => None,
        };
        let head = Head {
            flags: raw.flags,
            current: raw.current,
            id: raw.id,
            client: raw.client,
            subject: text(raw.subject)?,
            session,
        };
        Ok((head, reader))
    }

    /// Reads up to the access tokens, which stay bytes until asked for.
    fn read(&self) -> Result<Read<'_>, Corrupt> {
        let (head, mut reader) = self.head()?;
        let flags = head.flags;
        let audience = reader.symbol()?;
        let scope = reader.symbol()?;
        let groups = reader.symbol()?;
        let email = reader.text_if(flags & EMAIL != 0)?;
        let name = reader.text_if(flags & NAME != 0)?;
        let created_at = reader.time()?;
        let last_used_at = if flags & LAST_USED != 0 {
            Some(reader.time()?)
        } else {
            None
        };
        let previous = if flags & PREVIOUS != 0 {
            Some(RetiredToken {
                hash: TokenHash(reader.array()?),
                rotated_at: reader.time()?,
                retries: u32::try_from(reader.varint()?).map_err(|_| Corrupt)?,
            })
        } else {
            None
        };
        let upstream_refresh = reader.text_if(flags & UPSTREAM_REFRESH != 0)?;
        let upstream_access = reader.text_if(flags & UPSTREAM_ACCESS != 0)?;
        Ok(Read {
            absolute_expires_at: self.absolute_expires_at()?,
            current_expires_at: self.current_expires_at()?,
            head,
            audience,
            scope,
            groups,
            email,
            name,
            created_at,
            last_used_at,
            previous,
            upstream_refresh,
            upstream_access,
            access_tokens: reader,
        })
    }
}

/// A family's owner, borrowed from its bytes: texts (`str`) or bytes not checked yet (`[u8]`).
pub(super) struct OwnerParts<'a, T: ?Sized> {
    pub(super) client: Symbol,
    pub(super) subject: &'a T,
    pub(super) session: Option<SessionParts<'a, T>>,
}

pub(super) struct SessionParts<'a, T: ?Sized> {
    pub(super) provider: Symbol,
    pub(super) subject: &'a T,
    pub(super) session_id: Option<&'a T>,
}

struct ReadSession<'a, T: ?Sized> {
    provider: Symbol,
    /// None: the grant's subject.
    subject: Option<&'a T>,
    session_id: Option<&'a T>,
}

struct RawHead<'a> {
    flags: u16,
    current: Option<TokenHash>,
    id: TokenText<'a>,
    client: Symbol,
    subject: &'a [u8],
    session: Option<ReadSession<'a, [u8]>>,
}

struct Head<'a> {
    flags: u16,
    current: Option<TokenHash>,
    id: TokenText<'a>,
    client: Symbol,
    subject: &'a str,
    session: Option<ReadSession<'a, str>>,
}

struct Read<'a> {
    head: Head<'a>,
    absolute_expires_at: UnixTime,
    current_expires_at: UnixTime,
    audience: Symbol,
    scope: Symbol,
    groups: Symbol,
    email: Option<&'a str>,
    name: Option<&'a str>,
    created_at: UnixTime,
    last_used_at: Option<UnixTime>,
    previous: Option<RetiredToken>,
    upstream_refresh: Option<&'a str>,
    upstream_access: Option<&'a str>,
    access_tokens: Reader<'a>,
}

impl Read<'_> {
    fn uses(&self) -> Result<Uses, Corrupt> {
        Ok(Uses {
            client: self.head.client,
            audience: self.audience,
            scope: self.scope,
            groups: self.groups,
            provider: self.head.session.as_ref().map(|session| session.provider),
        })
    }

    fn unpack<S: BuildHasher>(mut self, symbols: &Symbols<S>) -> Result<RefreshFamily, Corrupt> {
        let flags = self.head.flags;
        let owned = |parts: &[Box<str>]| parts.iter().map(|part| String::from(&**part)).collect();
        let count = self.access_tokens.varint()?;
        // Bounded by what is left: a count that claims more than the bytes hold is corrupt.
        let mut access_tokens = Vec::with_capacity(
            usize::try_from(count)
                .map_err(|_| Corrupt)?
                .min(self.access_tokens.remaining()),
        );
        for _ in 0..count {
            access_tokens.push(IssuedAccessToken {
                jti: self.access_tokens.text()?.to_owned(),
                expires_at: self.access_tokens.time()?,
            });
        }
        if self.access_tokens.remaining() != 0 {
            return Err(Corrupt);
        }
        let upstream_session = match &self.head.session {
            Some(session) => Some(UpstreamSession {
                provider: symbols.resolve_one(session.provider)?.to_owned(),
                subject: session.subject.unwrap_or(self.head.subject).to_owned(),
                session_id: session.session_id.map(str::to_owned),
            }),
            None => None,
        };
        Ok(RefreshFamily {
            id: self.head.id.to_text(),
            client_id: symbols.resolve_one(self.head.client)?.to_owned(),
            identity: Identity {
                subject: self.head.subject.to_owned(),
                email: self.email.map(str::to_owned),
                email_verified: (flags & EMAIL_VERIFIED_KNOWN != 0)
                    .then_some(flags & EMAIL_VERIFIED != 0),
                name: self.name.map(str::to_owned),
                groups: owned(symbols.resolve(self.groups)?),
            },
            scope: owned(symbols.resolve(self.scope)?),
            audience: symbols.resolve_one(self.audience)?.to_owned(),
            absolute_expires_at: self.absolute_expires_at,
            current: self.head.current,
            current_expires_at: self.current_expires_at,
            previous: self.previous,
            revoked: flags & REVOKED != 0,
            access_tokens,
            upstream_refresh: self.upstream_refresh.map(SealedSecret::from_stored),
            upstream_access: self
                .upstream_access
                .map(|text| Box::new(SealedSecret::from_stored(text))),
            upstream_session,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
        })
    }
}

/// An id as packed: the 16 bytes behind a 22-character base64url text, or the text itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum TokenText<'a> {
    Random([u8; 16]),
    Text(&'a str),
}

impl<'a> TokenText<'a> {
    pub(super) fn of(text: &'a str) -> Self {
        let mut bytes = [0u8; 16];
        // The engine refuses padding and set bits past the 16th byte, so a text that decodes is
        // the one encoding of its bytes (the tests hold it to that).
        let canonical =
            text.len() == 22 && URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) == Ok(16);
        if canonical {
            TokenText::Random(bytes)
        } else {
            TokenText::Text(text)
        }
    }
}

impl TokenText<'_> {
    /// The text again, exactly as it was packed.
    pub(super) fn to_text(self) -> String {
        match self {
            TokenText::Random(bytes) => URL_SAFE_NO_PAD.encode(bytes),
            TokenText::Text(text) => text.to_owned(),
        }
    }
}

/// A use of the symbol of `value`, which was `was` before a rotation.
fn take<S: BuildHasher, T: AsRef<str>>(
    symbols: &mut Symbols<S>,
    was: Option<Symbol>,
    value: &[T],
) -> u64 {
    u64::from(match was {
        Some(was) => symbols.acquire_again(was, value),
        None => symbols.acquire(value),
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_time(out: &mut Vec<u8>, time: UnixTime) {
    let zigzag = ((time.0 << 1) ^ (time.0 >> 63)) as u64;
    put_varint(out, zigzag);
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Tag 0 and 16 bytes, or the text's length plus one and the text.
fn put_token_text(out: &mut Vec<u8>, text: &str) {
    match TokenText::of(text) {
        TokenText::Random(bytes) => {
            out.push(0);
            out.extend_from_slice(&bytes);
        }
        TokenText::Text(text) => {
            put_varint(out, text.len() as u64 + 1);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        let end = self.at.checked_add(n).ok_or(Corrupt)?;
        let bytes = self.bytes.get(self.at..end).ok_or(Corrupt)?;
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        self.take(N)?.try_into().map_err(|_| Corrupt)
    }

    fn varint(&mut self) -> Result<u64, Corrupt> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.array::<1>()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Corrupt)
    }

    fn symbol(&mut self) -> Result<Symbol, Corrupt> {
        Symbol::try_from(self.varint()?).map_err(|_| Corrupt)
    }

    fn time(&mut self) -> Result<UnixTime, Corrupt> {
        let zigzag = self.varint()?;
        Ok(UnixTime(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64)))
    }

    fn text(&mut self) -> Result<&'a str, Corrupt> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Corrupt)
    }

    /// A text's bytes, unchecked.
    fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let len = usize::try_from(self.varint()?).map_err(|_| Corrupt)?;
        self.take(len)
    }

    fn text_if(&mut self, present: bool) -> Result<Option<&'a str>, Corrupt> {
        if present {
            self.text().map(Some)
        } else {
            Ok(None)
        }
    }

    fn token_text(&mut self) -> Result<TokenText<'a>, Corrupt> {
        match self.varint()? {
            0 => Ok(TokenText::Random(self.array()?)),
            tag => {
                let len = usize::try_from(tag - 1).map_err(|_| Corrupt)?;
                std::str::from_utf8(self.take(len)?)
                    .map(TokenText::Text)
                    .map_err(|_| Corrupt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;

    use super::*;
    use crate::storage::contract_tests::family;
    use crate::tokens::opaque::random_string;

    fn same(left: &RefreshFamily, right: &RefreshFamily) {
        assert_eq!(
            serde_json::to_value(left).unwrap(),
            serde_json::to_value(right).unwrap()
        );
    }

    fn round_trip(family: &RefreshFamily) -> (PackedFamily, Symbols<RandomState>) {
        let mut symbols = Symbols::default();
        let packed = PackedFamily::pack(family, None, &mut symbols, &mut Vec::new());
        same(&packed.unpack(&symbols).unwrap(), family);
        (packed, symbols)
    }

    /// Every optional field present, the provider's subject not the grant's, times before 1970.
    fn everything() -> RefreshFamily {
        let mut family = family(&random_string(16), TokenHash::of("current"));
        family.client_id = "dcr_client".into();
        family.identity.email = Some("ada@example.com".into());
        family.identity.email_verified = Some(false);
        family.identity.name = Some("Ada Lovelace — ☃".into());
        family.identity.groups = vec!["admins".into(), "".into(), "with space".into()];
        family.scope = vec!["openid".into(), "files:read".into()];
        family.previous = Some(RetiredToken {
            hash: TokenHash::of("previous"),
            rotated_at: UnixTime(-5),
            retries: 3,
        });
        family.revoked = true;
        family.access_tokens.push(IssuedAccessToken {
            jti: random_string(16),
            expires_at: UnixTime(i64::MAX),
        });
        family.access_tokens.push(IssuedAccessToken {
            jti: String::new(),
            expires_at: UnixTime(i64::MIN),
        });
        family.upstream_refresh = Some(SealedSecret::from_stored("c2VhbGVkIHJlZnJlc2g"));
        family.upstream_access = Some(Box::new(SealedSecret::from_stored("c2VhbGVkIGFjY2Vzcw")));
        family.upstream_session = Some(UpstreamSession {
            provider: "corp".into(),
            subject: "provider-sub".into(),
            session_id: Some("sid-1".into()),
        });
        family.last_used_at = Some(UnixTime(1_700_000_123));
        family.created_at = UnixTime(-1);
        family
    }

    #[test]
    fn a_family_with_every_field_comes_back_as_it_went_in() {
        round_trip(&everything());
    }

    #[test]
    fn a_family_with_no_optional_field_comes_back_as_it_went_in() {
        let mut family = family("not-one-of-ours", TokenHash::of("t"));
        family.current = None;
        family.access_tokens.clear();
        family.scope.clear();
        family.identity.email = None;
        family.identity.name = None;
        family.identity.email_verified = None;
        family.identity.groups.clear();
        round_trip(&family);
    }

    #[test]
    fn each_way_of_knowing_the_email_verified_and_the_session_comes_back() {
        for verified in [None, Some(false), Some(true)] {
            for session_id in [None, Some("sid".to_owned())] {
                let mut family = everything();
                family.identity.email_verified = verified;
                let subject = family.identity.subject.clone();
                family.upstream_session = Some(UpstreamSession {
                    provider: "upstream".into(),
                    subject,
                    session_id: session_id.clone(),
                });
                round_trip(&family);
            }
        }
    }

    #[test]
    fn releasing_a_family_gives_back_every_symbol_it_took() {
        let (first, mut symbols) = round_trip(&everything());
        let second = PackedFamily::pack(&everything(), None, &mut symbols, &mut Vec::new());
        let held = symbols.len();
        assert!(
            held >= 5,
            "client, audience, scope, groups, provider: {held}"
        );
        first.uses().unwrap().release(&mut symbols);
        assert_eq!(symbols.len(), held, "the second family still names them");
        second.uses().unwrap().release(&mut symbols);
        assert_eq!(symbols.len(), 0);
    }

    #[test]
    fn only_a_canonical_22_character_base64url_text_is_kept_as_bytes() {
        let ours = random_string(16);
        assert!(matches!(TokenText::of(&ours), TokenText::Random(_)));
        // 22 characters of base64url whose last one carries bits past the 16th byte.
        let trailing_bits = "AAAAAAAAAAAAAAAAAAAAAB";
        for text in [
            trailing_bits,
            "AAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAA+",
            "AAAAAAAAAAAAAAAAAAAAAAA",
            "",
            "é",
        ] {
            assert_eq!(TokenText::of(text), TokenText::Text(text), "{text:?}");
        }
        for text in [ours.as_str(), trailing_bits] {
            let mut family = family(text, TokenHash::of("t"));
            family.access_tokens[0].jti = text.to_owned();
            round_trip(&family);
        }
    }

    #[test]
    fn cut_bytes_read_as_corrupt_never_as_a_family_or_a_panic() {
        let (packed, symbols) = round_trip(&everything());
        for len in 0..packed.0.len() {
            let cut = PackedFamily(Box::from(&packed.0[..len]));
            assert_eq!(cut.unpack(&symbols).err(), Some(Corrupt), "{len} bytes");
        }
        let mut longer = packed.0.to_vec();
        longer.push(0);
        let longer = PackedFamily(longer.into_boxed_slice());
        assert_eq!(longer.unpack(&symbols).err(), Some(Corrupt));
    }

    #[test]
    fn a_symbol_the_table_does_not_hold_reads_as_corrupt() {
        let (packed, _) = round_trip(&everything());
        let empty: Symbols<RandomState> = Symbols::default();
        assert_eq!(packed.unpack(&empty).err(), Some(Corrupt));
    }
}
