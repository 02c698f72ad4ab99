//! The busiest tenants of a stream of requests, in fixed memory: Space-Saving
//! (Metwally, Agrawal and El Abbadi, 2005), split into small sets as a CPU
//! cache is.
//!
//! Space-Saving keeps `k` counters. A request for a tenant that has one adds
//! to it; a request for one that has none takes over the smallest counter and
//! adds one to the count it had, remembering that count as its possible
//! overcount. A tenant that is not counted has had at most as many requests as
//! the smallest counter, and every count is at most its overcount too high:
//! any tenant with more than `1/k` of the requests is always counted, with
//! each of its requests since it came in.
//!
//! Finding the smallest of all `k` counters on each new tenant would cost a
//! heap or a linked structure. Here a tenant's hash picks one of [`SETS`] sets
//! of [`WAYS`] counters, and Space-Saving runs within each set: a request
//! looks at 8 hashes in one cache line, never more, and allocates nothing.
//! The guarantee holds per set (a tenant with more than 1/8 of its set's
//! requests is counted); hashing spreads the tenants evenly over the sets, so
//! that is any tenant with more than about `1/(SETS * WAYS)` of the requests,
//! the plain algorithm's bound with as many counters.
//!
//! Each counted tenant also has its 5xx answers and a latency histogram,
//! since it came in: those are exact for the requests counted.

use std::time::Duration;

use super::latency::Latencies;

/// Counters per set: one tenant's request looks at this many.
pub(crate) const WAYS: usize = 8;
/// Sets of counters.
pub(crate) const SETS: usize = 64;
/// Tenants counted at once.
pub(crate) const CAPACITY: usize = SETS * WAYS;

/// The set a tenant's hash falls in (its top bits: the low ones are what the
/// hash compares within the set).
#[inline]
pub(crate) fn set_of(hash: u64) -> usize {
    (hash >> 58) as usize % SETS
}

/// A tenant name, kept inline: names are DNS labels, at most 63 bytes
/// (a longer one is cut there).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TenantKey {
    len: u8,
    bytes: [u8; 63],
}

impl TenantKey {
    pub(crate) fn new(name: &str) -> TenantKey {
        let mut key = TenantKey {
            len: 0,
            bytes: [0; 63],
        };
        key.set(name);
        key
    }

    #[inline]
    fn set(&mut self, name: &str) {
        let n = name.len().min(self.bytes.len());
        self.bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.len = n as u8;
    }

    #[inline]
    fn is(&self, name: &str) -> bool {
        let n = name.len().min(self.bytes.len());
        usize::from(self.len) == n && self.bytes[..n] == name.as_bytes()[..n]
    }

    pub(crate) fn as_str(&self) -> &str {
        // Cut at a character boundary when it was cut at all.
        let bytes = &self.bytes[..usize::from(self.len)];
        match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
        }
    }
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// One set's counters, side by side: what a request looks at fits in two
/// cache lines.
#[derive(Clone, Default)]
struct Set {
    hashes: [u64; WAYS],
    /// Requests counted to each counter, its overcount included; 0: free.
    counts: [u32; WAYS],
    /// The count each counter's tenant took over (at most this many of its
    /// count are another tenant's).
    over: [u32; WAYS],
}

/// What is kept of a counted tenant besides its count.
#[derive(Clone)]
struct Tracked {
    key: TenantKey,
    errors: u32,
    latency: Latencies,
}

impl Default for Tracked {
    fn default() -> Self {
        Tracked {
            key: TenantKey::new(""),
            errors: 0,
            latency: Latencies::default(),
        }
    }
}

/// A counted tenant, as [`HeavyHitters::entries`] shows it.
pub(crate) struct Entry<'a> {
    pub(crate) key: &'a TenantKey,
    pub(crate) hash: u64,
    /// Requests counted, overcount included.
    pub(crate) count: u32,
    /// At most this many of `count` are not the tenant's.
    pub(crate) over: u32,
    /// 5xx answers among the requests counted since it came in.
    pub(crate) errors: u32,
    pub(crate) latency: &'a Latencies,
}

/// The busiest tenants of a stream of requests (see the module's notes).
/// About 125 KB, whatever the number of tenants.
#[derive(Clone)]
pub(crate) struct HeavyHitters {
    sets: Box<[Set]>,
    tracked: Box<[Tracked]>,
}

impl Default for HeavyHitters {
    fn default() -> Self {
        HeavyHitters {
            sets: vec![Set::default(); SETS].into_boxed_slice(),
            tracked: vec![Tracked::default(); CAPACITY].into_boxed_slice(),
        }
    }
}

impl HeavyHitters {
    /// Counts a request of `tenant`, whose hash is `hash` (the same hasher
    /// for every request), answered in `took`, with a 5xx when `error`.
    #[inline]
    pub(crate) fn record(&mut self, hash: u64, tenant: &str, error: bool, took: Duration) {
        let s = set_of(hash);
        let set = &mut self.sets[s];
        let found = (0..WAYS).find(|&w| {
            set.hashes[w] == hash && set.counts[w] > 0 && self.tracked[s * WAYS + w].key.is(tenant)
        });
        let w = match found {
            Some(w) => w,
            None => {
                // The smallest counter (a free one is 0): the tenant takes it
                // over, with its count as the overcount.
                let mut w = 0;
                for i in 1..WAYS {
                    if set.counts[i] < set.counts[w] {
                        w = i;
                    }
                }
                set.hashes[w] = hash;
                set.over[w] = set.counts[w];
                let t = &mut self.tracked[s * WAYS + w];
                t.key.set(tenant);
                t.errors = 0;
                t.latency.clear();
                w
            }
        };
        set.counts[w] = set.counts[w].saturating_add(1);
        let t = &mut self.tracked[s * WAYS + w];
        t.errors += u32::from(error);
        t.latency.observe(took);
    }

    /// Forgets every tenant (the memory stays).
    pub(crate) fn clear(&mut self) {
        for set in self.sets.iter_mut() {
            *set = Set::default();
        }
    }

    /// The most requests a tenant hashed to `hash` can have had without
    /// being counted: the smallest count of its set.
    pub(crate) fn floor(&self, hash: u64) -> u32 {
        self.sets[set_of(hash)]
            .counts
            .iter()
            .copied()
            .min()
            .unwrap_or(0)
    }

    /// The tenants counted.
    pub(crate) fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        self.sets.iter().enumerate().flat_map(move |(s, set)| {
            (0..WAYS).filter(|&w| set.counts[w] > 0).map(move |w| {
                let t = &self.tracked[s * WAYS + w];
                Entry {
                    key: &t.key,
                    hash: set.hashes[w],
                    count: set.counts[w],
                    over: set.over[w],
                    errors: t.errors,
                    latency: &t.latency,
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::BuildHasher;

    use super::*;

    fn hash(name: &str) -> u64 {
        foldhash::fast::FixedState::default().hash_one(name)
    }

    /// A small deterministic generator (xorshift), for reproducible streams.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn heavy_tenants_are_found_among_a_million_light_ones() {
        let mut hh = HeavyHitters::default();
        let mut truth: HashMap<String, u32> = HashMap::new();
        let mut rng = Rng(0x5eed);
        let heavy: Vec<String> = (0..10).map(|i| format!("heavy-{i}")).collect();
        // 1,000,000 requests: 300,000 light tenants with three or so each,
        // and ten heavy ones with 0.5% to 0.8% of all requests each.
        for n in 0..1_000_000u32 {
            let name = if n % 20 == 0 {
                heavy[(rng.next() % 10) as usize].clone()
            } else if n % 101 == 0 {
                heavy[(rng.next() % 3) as usize].clone()
            } else {
                format!("light-{}", rng.next() % 300_000)
            };
            *truth.entry(name.clone()).or_default() += 1;
            hh.record(hash(&name), &name, n % 7 == 0, Duration::from_millis(1));
        }
        let mut found: Vec<_> = hh.entries().collect();
        found.sort_by_key(|e| std::cmp::Reverse(e.count));
        let top: Vec<&str> = found[..10].iter().map(|e| e.key.as_str()).collect();
        for h in &heavy {
            assert!(top.contains(&h.as_str()), "{h} not in the top 10: {top:?}");
        }
        for e in &found {
            let real = truth[e.key.as_str()];
            assert!(
                e.count >= real && e.count - e.over <= real,
                "{:?}: counted {} (over {}), had {real}",
                e.key,
                e.count,
                e.over
            );
        }
        // The heaviest are counted nearly from the start: little overcount.
        for e in &found[..3] {
            assert!(
                e.over * 50 < e.count,
                "{:?}: over {} of {}",
                e.key,
                e.over,
                e.count
            );
        }
        // A tenant not counted had at most its set's floor.
        for (name, &real) in &truth {
            if !found.iter().any(|e| e.key.is(name)) {
                assert!(real <= hh.floor(hash(name)), "{name}: {real} uncounted");
            }
        }
    }

    #[test]
    fn memory_stays_the_same_whatever_the_number_of_tenants() {
        let mut hh = HeavyHitters::default();
        for n in 0..300_000u32 {
            let name = format!("t{n}");
            hh.record(hash(&name), &name, false, Duration::ZERO);
        }
        assert_eq!(hh.sets.len(), SETS);
        assert_eq!(hh.tracked.len(), CAPACITY);
        let bytes = SETS * std::mem::size_of::<Set>() + CAPACITY * std::mem::size_of::<Tracked>();
        assert!(bytes < 128 * 1024, "{bytes} bytes");
        assert_eq!(hh.entries().count(), CAPACITY, "every counter in use");
        let total: u64 = hh.entries().map(|e| u64::from(e.count)).sum();
        assert_eq!(total, 300_000, "each request counted once");
        hh.clear();
        assert_eq!(hh.entries().count(), 0);
    }

    #[test]
    fn a_counted_tenant_has_its_errors_and_latencies_since_it_came_in() {
        let mut hh = HeavyHitters::default();
        let h = hash("umbrella");
        for i in 0..10 {
            hh.record(h, "umbrella", i < 3, Duration::from_millis(5));
        }
        let e = hh.entries().next().unwrap();
        assert_eq!(
            (e.key.as_str(), e.count, e.over, e.errors),
            ("umbrella", 10, 0, 3)
        );
        let mut sum = super::super::latency::LatencySum::default();
        sum.add(e.latency);
        assert_eq!(sum.count(), 10);
        // Same hash, other name: not mistaken for it.
        hh.record(h, "parasol", false, Duration::ZERO);
        assert_eq!(hh.entries().count(), 2);
    }

    #[test]
    fn a_long_name_is_cut_at_a_character_boundary() {
        let name = format!("{}é", "a".repeat(62));
        let key = TenantKey::new(&name);
        assert_eq!(key.as_str(), "a".repeat(62));
        assert!(key.is(&name));
    }
}
