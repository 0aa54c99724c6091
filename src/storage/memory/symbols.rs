//! Values that many families share (a client id, an audience, a scope set, a user's groups, a
//! provider's name), each kept once and named in a family by a small number. Counted, so that a
//! value no live family names any more is forgotten: groups and registered clients come and go.

use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::HashTable;

use super::packed::Corrupt;

pub(super) type Symbol = u32;

pub(super) struct Symbols<S> {
    entries: Vec<Option<Entry>>,
    vacant: Vec<Symbol>,
    by_value: HashTable<Symbol>,
    hasher: S,
}

struct Entry {
    value: Box<[Box<str>]>,
    uses: usize,
}

impl<S: BuildHasher + Default> Default for Symbols<S> {
    fn default() -> Self {
        Symbols {
            entries: Vec::new(),
            vacant: Vec::new(),
            by_value: HashTable::new(),
            hasher: S::default(),
        }
    }
}

impl<S: BuildHasher> Symbols<S> {
    /// The symbol of `value`, counted as one more use.
    pub(super) fn acquire<T: AsRef<str>>(&mut self, value: &[T]) -> Symbol {
        let hash = self.hash(value);
        if let Some(symbol) = self.find_hashed(hash, value) {
            self.count_use(symbol);
            return symbol;
        }
        let entry = Entry {
            value: value.iter().map(|part| Box::from(part.as_ref())).collect(),
            uses: 1,
        };
        let symbol = match self.vacant.pop() {
            Some(symbol) => {
                self.entries[symbol as usize] = Some(entry);
                symbol
            }
            None => {
                // More distinct values than a u32 counts would each need a family of their own:
                // gigabytes of families before this could wrap.
                let symbol = Symbol::try_from(self.entries.len()).unwrap_or(Symbol::MAX);
                self.entries.push(Some(entry));
                symbol
            }
        };
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.by_value.insert_unique(hash, symbol, |symbol| {
            hash_parts(hasher, Self::value_of(entries, *symbol).unwrap_or_default())
        });
        symbol
    }

    /// The symbol of `value` when it is `was` (one more use of it, found without hashing),
    /// else as `acquire` finds it.
    pub(super) fn acquire_again<T: AsRef<str>>(&mut self, was: Symbol, value: &[T]) -> Symbol {
        if Self::holds(&self.entries, was, value) {
            self.count_use(was);
            return was;
        }
        self.acquire(value)
    }

    /// One use fewer; the value is forgotten with its last use.
    pub(super) fn release(&mut self, symbol: Symbol) {
        let Some(Some(entry)) = self.entries.get_mut(symbol as usize) else {
            return;
        };
        entry.uses -= 1;
        if entry.uses > 0 {
            return;
        }
        let hash = hash_parts(
            &self.hasher,
            Self::value_of(&self.entries, symbol).unwrap_or_default(),
        );
        if let Ok(found) = self.by_value.find_entry(hash, |other| *other == symbol) {
            found.remove();
        }
        self.entries[symbol as usize] = None;
        self.vacant.push(symbol);
    }

    pub(super) fn resolve(&self, symbol: Symbol) -> Result<&[Box<str>], Corrupt> {
        match self.entries.get(symbol as usize) {
            Some(Some(entry)) => Ok(&entry.value),
            _ => Err(Corrupt),
        }
    }

    /// The one text of a symbol made of one.
    pub(super) fn resolve_one(&self, symbol: Symbol) -> Result<&str, Corrupt> {
        match self.resolve(symbol)? {
            [only] => Ok(only),
            _ => Err(Corrupt),
        }
    }

    /// The symbol of `value`, if a family names it.
    pub(super) fn find<T: AsRef<str>>(&self, value: &[T]) -> Option<Symbol> {
        self.find_hashed(self.hash(value), value)
    }

    fn find_hashed<T: AsRef<str>>(&self, hash: u64, value: &[T]) -> Option<Symbol> {
        self.by_value
            .find(hash, |symbol| Self::holds(&self.entries, *symbol, value))
            .copied()
    }

    fn count_use(&mut self, symbol: Symbol) {
        if let Some(Some(entry)) = self.entries.get_mut(symbol as usize) {
            entry.uses += 1;
        }
    }

    /// Distinct values held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_value.len()
    }

    fn hash<T: AsRef<str>>(&self, value: &[T]) -> u64 {
        hash_parts(&self.hasher, value)
    }

    fn holds<T: AsRef<str>>(entries: &[Option<Entry>], symbol: Symbol, value: &[T]) -> bool {
        Self::value_of(entries, symbol).is_some_and(|stored| {
            stored.len() == value.len()
                && stored
                    .iter()
                    .zip(value)
                    .all(|(stored, part)| **stored == *part.as_ref())
        })
    }

    fn value_of(entries: &[Option<Entry>], symbol: Symbol) -> Option<&[Box<str>]> {
        match entries.get(symbol as usize) {
            Some(Some(entry)) => Some(&entry.value),
            _ => None,
        }
    }
}

/// One hash for a value whether it is asked for (`&[String]`) or stored (`[Box<str>]`).
fn hash_parts<S: BuildHasher, T: AsRef<str>>(hasher: &S, parts: &[T]) -> u64 {
    let mut state = hasher.build_hasher();
    state.write_usize(parts.len());
    for part in parts {
        part.as_ref().hash(&mut state);
    }
    state.finish()
}
