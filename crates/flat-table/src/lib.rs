//! An immutable hash table whose entries sit in one shared array: a shard
//! of slum's route table.
//!
//! Why it is hand-written (measured, see slum's `docs/router.md`): the
//! route table keeps a million domains in 4,096 shards so that a change
//! copies one shard, not the table. With each shard a `hashbrown` table
//! behind an `Arc`, a lookup followed the list of shards to the `Arc`, the
//! `Arc` to the table's header, the header to its control bytes and those
//! to the entry: two dependent loads more than the single map slum had
//! before, and the lookup was 10–15 ns slower. A [`FlatTable`] is a fat
//! `Arc<[Option<T>]>`: the list of shards holds the pointer to the entries
//! and their number, so a lookup goes from the list straight to the entry.
//!
//! What it is: open addressing with linear probing over `n` slots, the
//! first slot `hash`'s low 32 bits mapped onto `0..n` (multiply and shift,
//! so `n` need not be a power of two), at most 36 % of the slots full,
//! never changed once made: a change makes a new table from the entries of
//! the old one ([`FlatTable::with`]), in one allocation. No deletion, no
//! tombstones, no growth, no `unsafe`. The caller keys the entries: it
//! hands each entry's hash and a test of whether an entry is the one it
//! looks for (slum compares an 8-bit tag of the hash kept in the entry
//! first, then the domain).
//!
//! Fuzzed against `std`'s `HashMap` (`fuzz/`; run it with slum's
//! `scripts/fuzz.sh flat-table [SECONDS]`), with hashes cut to a few bits so
//! that keys collide and probes wrap around.

#![forbid(unsafe_code)]

use std::sync::Arc;

/// An immutable open-addressing table of `T`s, shared by its clones.
#[derive(Debug)]
pub struct FlatTable<T> {
    slots: Arc<[Option<T>]>,
}

impl<T> Clone for FlatTable<T> {
    fn clone(&self) -> FlatTable<T> {
        FlatTable {
            slots: Arc::clone(&self.slots),
        }
    }
}

impl<T> Default for FlatTable<T> {
    fn default() -> FlatTable<T> {
        FlatTable {
            slots: Arc::from(Vec::new()),
        }
    }
}

/// The slot `hash` starts its probe at, of `n`.
#[inline]
fn home(hash: u64, n: usize) -> usize {
    ((u64::from(hash as u32) * n as u64) >> 32) as usize
}

/// The slots a table of `len` entries has: 2.8 a entry, so 36 % full at
/// most (a lookup finds four entries in five in their first slot, and reads
/// 1.27 slots on average; at half full, three in four and 1.5), and always
/// one empty slot at least, which ends every probe. slum's entries are 40
/// bytes: its shards take 112 a domain, what half full cost with the
/// 56-byte entries it had before.
fn slots_for(len: usize) -> usize {
    len * 14 / 5 + 1
}

impl<T> FlatTable<T> {
    /// A table of these entries, each with its hash. The caller keeps the
    /// keys unique: an entry whose key is already in is found or not
    /// depending on the order.
    pub fn build(entries: impl ExactSizeIterator<Item = (u64, T)>) -> FlatTable<T> {
        FlatTable::filled(entries.len(), entries)
    }

    /// A table of `len` entries, those of `entries`: one allocation, the
    /// slots' own (a change at a million domains makes one of these; what it
    /// allocates and frees is what the allocator has to keep in order).
    fn filled(len: usize, entries: impl Iterator<Item = (u64, T)>) -> FlatTable<T> {
        if len == 0 {
            return FlatTable::default();
        }
        let n = slots_for(len);
        let mut slots: Arc<[Option<T>]> = std::iter::repeat_with(|| None).take(n).collect();
        // A new `Arc` is not shared: `get_mut` always gives it.
        if let Some(place) = Arc::get_mut(&mut slots) {
            for (hash, entry) in entries.take(len) {
                let mut i = home(hash, n);
                // Ends: fewer entries than slots.
                while place[i].is_some() {
                    i += 1;
                    if i == n {
                        i = 0;
                    }
                }
                place[i] = Some(entry);
            }
        }
        FlatTable { slots }
    }

    /// The entry with this hash for which `is` holds. `is` is asked of the
    /// entries from the hash's first slot to the next empty one (slum's
    /// compares an 8-bit tag of the hash kept in the entry first).
    #[inline]
    pub fn find(&self, hash: u64, is: impl Fn(&T) -> bool) -> Option<&T> {
        let slots = &*self.slots;
        let n = slots.len();
        // An empty table has no slot 0: `get` ends the probe.
        let mut i = home(hash, n);
        loop {
            match slots.get(i)? {
                None => return None,
                Some(entry) if is(entry) => return Some(entry),
                Some(_) => {
                    i += 1;
                    if i == n {
                        i = 0;
                    }
                }
            }
        }
    }

    /// Its entries, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    /// How many entries it has (counted: a table keeps no number).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// How many slots it takes (its entries' memory is this times the size
    /// of `Option<T>`).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Whether `self` and `other` are the same table, not copies.
    pub fn ptr_eq(&self, other: &FlatTable<T>) -> bool {
        Arc::ptr_eq(&self.slots, &other.slots)
    }
}

impl<T: Clone> FlatTable<T> {
    /// A new table: this one's entries but those for which `replaced`
    /// holds, and `added` (each with its hash); and how many it took out.
    /// `hash` gives the hash of an entry kept. The caller keeps the keys
    /// unique: `replaced` holds for every entry whose key is one of
    /// `added`'s.
    pub fn with(
        &self,
        replaced: impl Fn(&T) -> bool,
        added: Vec<(u64, T)>,
        hash: impl Fn(&T) -> u64,
    ) -> (FlatTable<T>, usize) {
        let (mut kept, mut removed) = (0, 0);
        for entry in self.iter() {
            match replaced(entry) {
                true => removed += 1,
                false => kept += 1,
            }
        }
        let len = kept + added.len();
        let entries = self
            .iter()
            .filter(|e| !replaced(e))
            .map(|e| (hash(e), e.clone()))
            .chain(added);
        (FlatTable::filled(len, entries), removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(keys: &[(u64, &'static str)]) -> FlatTable<(u64, &'static str)> {
        FlatTable::build(keys.iter().map(|&(h, k)| (h, (h, k))))
    }

    fn find(t: &FlatTable<(u64, &'static str)>, hash: u64, key: &str) -> Option<&'static str> {
        t.find(hash, |e| e.1 == key).map(|e| e.1)
    }

    #[test]
    fn an_empty_table_finds_nothing() {
        let t: FlatTable<(u64, &str)> = FlatTable::default();
        assert_eq!(find(&t, 7, "a"), None);
        assert_eq!(t.slots(), 0);
        assert!(t.is_empty());
    }

    #[test]
    fn colliding_keys_are_each_found_and_a_missing_one_is_not() {
        // Every hash lands on the same slot, and on the last one: probes
        // wrap around.
        let last = u64::from(u32::MAX);
        let t = table(&[(last, "a"), (last, "b"), (last, "c"), (3, "d")]);
        assert_eq!(t.slots(), 12);
        for k in ["a", "b", "c"] {
            assert_eq!(find(&t, last, k), Some(k));
        }
        assert_eq!(find(&t, 3, "d"), Some("d"));
        assert_eq!(find(&t, last, "e"), None);
        assert_eq!(find(&t, 3, "a"), None, "a probe stops at an empty slot");
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn with_replaces_removes_and_adds_leaving_the_old_table_as_it_was() {
        let t = table(&[(1, "a"), (2, "b"), (3, "c")]);
        let (u, removed) = t.with(
            |e| e.1 == "a" || e.1 == "b",
            vec![(1, (1, "a")), (9, (9, "z"))],
            |e| e.0,
        );
        assert_eq!(removed, 2);
        assert_eq!(find(&u, 1, "a"), Some("a"));
        assert_eq!(find(&u, 2, "b"), None);
        assert_eq!(find(&u, 3, "c"), Some("c"));
        assert_eq!(find(&u, 9, "z"), Some("z"));
        assert_eq!(u.len(), 3);
        assert_eq!(find(&t, 2, "b"), Some("b"));
        assert_eq!(t.len(), 3);
        assert!(!t.ptr_eq(&u));
        assert!(t.ptr_eq(&t.clone()));
    }

    #[test]
    fn a_table_is_at_most_36_percent_full() {
        for len in [1usize, 2, 3, 10, 244, 1000] {
            let t = FlatTable::build(
                (0..len)
                    .map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                    .map(|h| (h, h)),
            );
            assert_eq!(t.len(), len);
            assert!(t.slots() * 5 >= len * 14, "{len} in {}", t.slots());
            assert!(t.slots() > len, "{len} in {}", t.slots());
            for i in 0..len as u64 {
                let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                assert_eq!(t.find(h, |&e| e == h), Some(&h));
            }
        }
    }
}
