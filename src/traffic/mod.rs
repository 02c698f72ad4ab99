//! Traffic now, per tenant and per server, without a metric series per
//! tenant: a million tenants would drown Prometheus, and a map of every
//! tenant would cost the router memory and time in proportion to the fleet.
//!
//! Each router thread counts its own requests (no two cores write the same
//! memory) in a ring of [`SLOTS`] time slots of [`SLOT`] each: the slot of
//! now, and the ones before it that make the last minute. In each slot it
//! keeps:
//!
//! - the busiest tenants, in [`HeavyHitters`] (Space-Saving in fixed memory:
//!   a request looks at 8 counters and allocates nothing), each with its 5xx
//!   answers and a latency histogram ([`latency`]);
//! - the exact totals of all tenants' requests (count, 5xx, latencies);
//! - per server: the requests sent to it, those it failed (a 5xx or no
//!   answer), and the time to its response head.
//!
//! A reader (the management API) sums the live slots of every thread:
//! [`TenantTally`] and [`ServerTally`] turn them into [`TrafficTop`],
//! [`TenantTraffic`] and [`ServerTraffic`]. Counts from Space-Saving are
//! upper bounds (`requests`), with the part counted for sure beside them
//! (`requests_min`); a tenant no thread counts had at most the floor of its
//! set in each slot, which is what its `requests` says then.
//!
//! The figures are one router's (one `slum serve`): several routers each
//! show their own.

pub(crate) mod heavy_hitters;
pub(crate) mod latency;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use heavy_hitters::{set_of, HeavyHitters, TenantKey, SETS};
use latency::{Latencies, LatencySum};

/// How long a time slot is.
pub(crate) const SLOT: Duration = Duration::from_secs(15);
/// Slots kept: the one of now and the four before it, so that the figures
/// cover the last minute (and the part of the slot of now gone by).
pub(crate) const SLOTS: usize = 5;

/// The hasher of tenant names: one per process, shared by its threads, so that
/// a tenant falls in the same set everywhere and a reader can find its
/// floor.
pub(crate) type TenantHasher = foldhash::fast::RandomState;

/// Time slots counted from a process's start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// The slot `now` is in.
    #[inline]
    pub(crate) fn slot(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() / SLOT.as_secs()
    }

    /// The time the live slots cover at `now`: the complete ones and the
    /// part of the current one gone by (less just after start).
    pub(crate) fn covered(&self, now: Instant) -> Duration {
        let up = now.saturating_duration_since(self.origin);
        let into_slot = Duration::from_nanos((up.as_nanos() % SLOT.as_nanos()) as u64);
        let window = SLOT * (SLOTS as u32 - 1) + into_slot;
        up.min(window)
    }
}

/// Something a slot holds, made empty again when the slot is reused.
pub(crate) trait Clear: Default {
    fn clear(&mut self);
}

/// A ring of time slots, each holding a `T`.
pub(crate) struct Window<T> {
    slots: [(u64, T); SLOTS],
}

impl<T: Clear> Default for Window<T> {
    fn default() -> Self {
        Window {
            // u64::MAX: never in use.
            slots: std::array::from_fn(|_| (u64::MAX, T::default())),
        }
    }
}

impl<T: Clear> Window<T> {
    /// The `T` of slot `slot`, emptied first when it last held an older one.
    #[inline]
    pub(crate) fn at(&mut self, slot: u64) -> &mut T {
        let (held, data) = &mut self.slots[(slot % SLOTS as u64) as usize];
        if *held != slot {
            *held = slot;
            data.clear();
        }
        data
    }

    /// The slots within the window at `slot`.
    pub(crate) fn live(&self, slot: u64) -> impl Iterator<Item = &T> {
        self.slots
            .iter()
            .filter(move |(held, _)| *held <= slot && slot - *held < SLOTS as u64)
            .map(|(_, data)| data)
    }
}

/// Requests, their 5xx and their latencies, in one slot.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    requests: u32,
    errors: u32,
    latency: Latencies,
}

impl Counts {
    #[inline]
    pub(crate) fn record(&mut self, error: bool, took: Option<Duration>) {
        self.requests = self.requests.saturating_add(1);
        self.errors += u32::from(error);
        if let Some(took) = took {
            self.latency.observe(took);
        }
    }
}

impl Clear for Counts {
    fn clear(&mut self) {
        self.requests = 0;
        self.errors = 0;
        self.latency.clear();
    }
}

/// One thread's tenant requests in one slot.
#[derive(Clone, Default)]
pub(crate) struct TenantSlot {
    busiest: HeavyHitters,
    all: Counts,
}

impl Clear for TenantSlot {
    fn clear(&mut self) {
        self.busiest.clear();
        self.all.clear();
    }
}

impl TenantSlot {
    /// Counts a request of `tenant` (hashed to `hash`), answered in `took`.
    #[inline]
    pub(crate) fn record(&mut self, hash: u64, tenant: &str, error: bool, took: Duration) {
        self.busiest.record(hash, tenant, error, took);
        self.all.record(error, Some(took));
    }
}

// ----- what readers see -----

/// Requests in the window, and what became of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrafficFigures {
    /// Requests in the window (for a tenant: at most this many; see
    /// `requests_min`).
    pub requests: u64,
    /// `requests` over the time the window covers.
    pub requests_per_second: f64,
    /// 5xx answers (for a server: also requests it gave no answer to),
    /// among the requests counted.
    pub errors: u64,
    /// `errors` over the requests counted (0 to 1).
    pub error_rate: f64,
    /// Median latency, in ms (none without requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, in ms.
    pub p99_ms: Option<f64>,
}

impl TrafficFigures {
    fn new(requests: u64, counted: u64, errors: u64, latency: &LatencySum, secs: f64) -> Self {
        TrafficFigures {
            requests,
            requests_per_second: rate(requests, secs),
            errors,
            error_rate: match counted {
                0 => 0.0,
                n => errors as f64 / n as f64,
            },
            p50_ms: latency.quantile_ms(0.5).map(round_ms),
            p99_ms: latency.quantile_ms(0.99).map(round_ms),
        }
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    (n as f64 / secs * 100.0).round() / 100.0
}

fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// One tenant's traffic through this router.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantTraffic {
    pub tenant: String,
    /// Whether a router thread counts it now among its busiest tenants;
    /// when not, `requests` is the most it can have had.
    pub tracked: bool,
    /// Requests counted for sure: `requests` is at most this plus the
    /// counts other tenants may have left in its counters.
    pub requests_min: u64,
    #[serde(flatten)]
    pub figures: TrafficFigures,
    /// The time the figures cover, in seconds: given when the tenant is
    /// asked for alone (in a list, the list's `window_seconds` says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<f64>,
}

/// One server's traffic from this router.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerTraffic {
    pub server: String,
    /// Latencies are the time to the server's response head.
    #[serde(flatten)]
    pub figures: TrafficFigures,
}

/// `GET /v1/traffic/top`: the busiest tenants now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrafficTop {
    /// The time the figures cover, in seconds (up to a minute and a slot).
    pub window_seconds: f64,
    /// Every tenant's requests together (exact).
    pub total: TrafficFigures,
    /// The busiest tenants, busiest first.
    pub tenants: Vec<TenantTraffic>,
}

/// `GET /v1/traffic/servers`: every server this router sent requests to in
/// the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServersTraffic {
    pub window_seconds: f64,
    /// By server id.
    pub servers: Vec<ServerTraffic>,
}

/// A tenant's sums over slots and threads.
#[derive(Default)]
struct TenantSum {
    /// Its counts less the floor of its set in each summary that counts it.
    excess: u64,
    counted: u64,
    errors: u64,
    latency: LatencySum,
}

/// Sums the tenant slots of every router thread.
pub(crate) struct TenantTally {
    hasher: TenantHasher,
    tenants: HashMap<TenantKey, TenantSum>,
    /// The floors of each set, summed over the summaries.
    floors: Box<[u64; SETS]>,
    all: TenantSum,
}

impl TenantTally {
    pub(crate) fn new(hasher: TenantHasher) -> TenantTally {
        TenantTally {
            hasher,
            tenants: HashMap::new(),
            floors: Box::new([0; SETS]),
            all: TenantSum::default(),
        }
    }

    /// Adds one thread's slot; `only`: only that tenant's counts (and
    /// every floor), for one tenant's figures.
    pub(crate) fn add(&mut self, slot: &TenantSlot, only: Option<&str>) {
        for s in 0..SETS {
            // The floor of set `s`: any hash whose top bits name it.
            self.floors[s] += u64::from(slot.busiest.floor((s as u64) << 58));
        }
        for e in slot.busiest.entries() {
            if only.is_some_and(|name| e.key.as_str() != name) {
                continue;
            }
            let floor = slot.busiest.floor(e.hash);
            let sum = self.tenants.entry(*e.key).or_default();
            sum.excess += u64::from(e.count - floor);
            sum.counted += u64::from(e.count - e.over);
            sum.errors += u64::from(e.errors);
            sum.latency.add(e.latency);
        }
        self.all.counted += u64::from(slot.all.requests);
        self.all.errors += u64::from(slot.all.errors);
        self.all.latency.add(&slot.all.latency);
    }

    fn figures(&self, name: &str, sum: Option<&TenantSum>, secs: f64) -> TenantTraffic {
        let floor = self.floors[set_of(self.hasher.hash_one(name))];
        let empty = TenantSum::default();
        let s = sum.unwrap_or(&empty);
        TenantTraffic {
            tenant: name.to_owned(),
            tracked: sum.is_some(),
            requests_min: s.counted,
            figures: TrafficFigures::new(s.excess + floor, s.counted, s.errors, &s.latency, secs),
            window_seconds: None,
        }
    }

    /// The `limit` busiest tenants, over `covered`.
    pub(crate) fn top(&self, limit: usize, covered: Duration) -> TrafficTop {
        let secs = covered.as_secs_f64();
        let mut tenants: Vec<TenantTraffic> = self
            .tenants
            .iter()
            .map(|(key, sum)| self.figures(key.as_str(), Some(sum), secs))
            .collect();
        tenants.sort_by(|a, b| {
            b.figures
                .requests
                .cmp(&a.figures.requests)
                .then_with(|| a.tenant.cmp(&b.tenant))
        });
        tenants.truncate(limit);
        let all = &self.all;
        TrafficTop {
            window_seconds: round_ms(secs),
            total: TrafficFigures::new(all.counted, all.counted, all.errors, &all.latency, secs),
            tenants,
        }
    }

    /// One tenant's figures over `covered`.
    pub(crate) fn tenant(&self, name: &str, covered: Duration) -> TenantTraffic {
        let sum = self.tenants.get(&TenantKey::new(name));
        let secs = covered.as_secs_f64();
        TenantTraffic {
            window_seconds: Some(round_ms(secs)),
            ..self.figures(name, sum, secs)
        }
    }
}

/// Sums the server slots of every router thread.
#[derive(Default)]
pub(crate) struct ServerTally {
    servers: HashMap<String, TenantSum>,
}

impl ServerTally {
    pub(crate) fn add(&mut self, server: &str, counts: &Counts) {
        if counts.requests == 0 {
            return;
        }
        let sum = match self.servers.get_mut(server) {
            Some(sum) => sum,
            None => self.servers.entry(server.to_owned()).or_default(),
        };
        sum.counted += u64::from(counts.requests);
        sum.errors += u64::from(counts.errors);
        sum.latency.add(&counts.latency);
    }

    pub(crate) fn finish(self, covered: Duration) -> ServersTraffic {
        let secs = covered.as_secs_f64();
        let mut servers: Vec<ServerTraffic> = self
            .servers
            .into_iter()
            .map(|(server, s)| ServerTraffic {
                server,
                figures: TrafficFigures::new(s.counted, s.counted, s.errors, &s.latency, secs),
            })
            .collect();
        servers.sort_by(|a, b| a.server.cmp(&b.server));
        ServersTraffic {
            window_seconds: round_ms(secs),
            servers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct N(u32);

    impl Clear for N {
        fn clear(&mut self) {
            self.0 = 0;
        }
    }

    #[test]
    fn a_slot_is_emptied_when_the_ring_comes_round_to_it() {
        let mut w = Window::<N>::default();
        w.at(0).0 += 1;
        w.at(1).0 += 2;
        assert_eq!(w.live(1).map(|n| n.0).sum::<u32>(), 3);
        assert_eq!(
            w.live(SLOTS as u64).map(|n| n.0).sum::<u32>(),
            2,
            "slot 0 is out"
        );
        w.at(SLOTS as u64).0 += 4;
        assert_eq!(w.live(SLOTS as u64).map(|n| n.0).sum::<u32>(), 6);
        assert_eq!(w.at(SLOTS as u64).0, 4, "slot 0's count went with it");
        assert_eq!(w.live(100).count(), 0);
    }

    #[test]
    fn the_window_covers_a_minute_and_the_slot_of_now() {
        let clock = Clock::new();
        let start = clock.origin;
        let secs = Duration::from_secs;
        assert_eq!(clock.covered(start + secs(10)), secs(10));
        assert_eq!(clock.slot(start + secs(31)), 2);
        assert_eq!(clock.covered(start + secs(607)), secs(67));
    }

    #[test]
    fn tallies_sum_threads_and_bound_tenants_they_do_not_count() {
        let hasher = TenantHasher::default();
        let (mut a, mut b) = (TenantSlot::default(), TenantSlot::default());
        let ms = Duration::from_millis;
        for i in 0..90 {
            a.record(hasher.hash_one("busy"), "busy", i % 10 == 0, ms(2));
        }
        for _ in 0..30 {
            b.record(hasher.hash_one("busy"), "busy", false, ms(4));
            b.record(hasher.hash_one("calm"), "calm", false, ms(1));
        }
        let mut tally = TenantTally::new(hasher);
        tally.add(&a, None);
        tally.add(&b, None);
        let top = tally.top(10, Duration::from_secs(60));
        assert_eq!(top.total.requests, 150);
        assert_eq!(top.total.errors, 9);
        assert_eq!(top.total.requests_per_second, 2.5);
        let names: Vec<&str> = top.tenants.iter().map(|t| t.tenant.as_str()).collect();
        assert_eq!(names, ["busy", "calm"]);
        let busy = &top.tenants[0];
        assert_eq!((busy.figures.requests, busy.requests_min), (120, 120));
        assert_eq!(busy.figures.errors, 9);
        assert_eq!(busy.figures.error_rate, 0.075);
        assert_eq!(busy.figures.requests_per_second, 2.0);
        assert!(busy.figures.p50_ms.unwrap() < busy.figures.p99_ms.unwrap());
        let unknown = tally.tenant("quiet", Duration::from_secs(60));
        assert!(!unknown.tracked);
        assert_eq!(
            unknown.figures.requests, 0,
            "no set is full: nobody was evicted"
        );
        assert_eq!(tally.top(1, Duration::from_secs(60)).tenants.len(), 1);
    }

    #[test]
    fn servers_are_summed_by_id() {
        let mut tally = ServerTally::default();
        let mut c = Counts::default();
        c.record(false, Some(Duration::from_millis(3)));
        c.record(true, None);
        tally.add("east", &c);
        tally.add("east", &c);
        tally.add("west", &Counts::default());
        let t = tally.finish(Duration::from_secs(4));
        assert_eq!(t.servers.len(), 1, "a server with no request is left out");
        let east = &t.servers[0].figures;
        assert_eq!((east.requests, east.errors, east.error_rate), (4, 2, 0.5));
        assert_eq!(east.requests_per_second, 1.0);
    }
}
