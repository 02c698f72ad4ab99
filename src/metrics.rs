//! Prometheus metrics of `slum serve`: requests by status, upstream latency,
//! the router's own errors by server and cause, route table size, servers by
//! state, health transitions, servers whose tenement routes by another domain,
//! what the router refused (connections and requests over its caps, request
//! bodies too slow), requests retried on a backup, and the certificates near
//! their expiry (refreshed when scraped, see [`Metrics::set_expiring_certificates`]).
//!
//! The two the router updates for every request are kept per router thread
//! ([`RouterShard`]): each thread writes only its own counters, so that no two
//! cores contend for one cache line on the request path, and a scrape sums them.
//! The same shards keep the traffic of the last minute per tenant and per
//! server ([`crate::traffic`]), which the management API reads: not series,
//! since one per tenant would drown Prometheus.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::time::Instant;

use crate::traffic::{
    Clock, Counts, ServerTally, ServersTraffic, TenantHasher, TenantSlot, TenantTally,
    TenantTraffic, TrafficTop, Window,
};

const REQUESTS: &str = "slum_requests_total";
const REQUESTS_HELP: &str = "Router responses by status code";
const LATENCY: &str = "slum_upstream_latency_seconds";
const LATENCY_HELP: &str = "Time from sending a request to a tenement server to its response head";

/// Upper bounds of the upstream latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Status codes a response can have (hyper's range).
const STATUSES: std::ops::RangeInclusive<u16> = 100..=999;

/// The metrics of one `slum serve` process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Router responses by status code, and the time from sending a request
    /// upstream to its response head by server: one shard per router thread.
    router_shards: Arc<Mutex<Vec<Arc<RouterShard>>>>,
    /// The time slots of the traffic figures, and the hasher of tenant names
    /// every router thread uses.
    clock: Clock,
    tenant_hasher: TenantHasher,
    /// Customer domains in the route table.
    pub route_table_domains: IntGauge,
    /// Servers by state.
    pub servers: IntGaugeVec,
    /// Health transitions of servers, by new state.
    pub transitions: IntCounterVec,
    /// Servers the health checks found routing by another domain than
    /// slum's, once per change.
    pub routing_mismatches: IntCounter,
    /// Servers the router sends nothing because of a routing problem.
    pub unroutable_servers: IntGauge,
    /// The router's own error answers (502, 503, 504), by the server
    /// concerned and the cause: the details their public bodies leave out.
    pub router_errors: IntCounterVec,
    /// Client connections the router refused, by the cap they were over.
    connections_refused: IntCounterVec,
    /// Requests the router refused or cut off, by reason.
    requests_refused: IntCounterVec,
    /// Requests sent once more, to a backup, after their server failed them;
    /// by the server that failed.
    pub backup_retries: IntCounterVec,
    /// ACME orders this process placed, by result (`issued`, `failed`).
    pub acme_orders: IntCounterVec,
    /// Certificates that expire within the warning window (or have expired).
    certificates_expiring: IntGauge,
    /// Seconds left to each of the first [`CERTIFICATE_SERIES`] of those,
    /// by name.
    certificate_expiry: IntGaugeVec,
}

/// The most certificates given a series of their own: the first to expire.
/// A series per certificate of a fleet of a million domains would drown
/// Prometheus; the count says how many there are in all.
pub(crate) const CERTIFICATE_SERIES: usize = 100;

/// The reasons of `slum_router_connections_refused_total`.
pub(crate) const CONNECTIONS_REFUSED: [&str; 2] = ["total", "per_client"];
/// The reasons of `slum_router_requests_refused_total`.
pub(crate) const REQUESTS_REFUSED: [&str; 4] = [
    "body_timeout",
    "body_too_slow",
    "client_in_flight",
    "server_in_flight",
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let route_table_domains = IntGauge::new(
            "slum_route_table_domains",
            "Customer domains in the router's route table",
        )
        .expect("valid metric");
        let servers = IntGaugeVec::new(
            Opts::new("slum_servers", "Servers of the fleet by state"),
            &["state"],
        )
        .expect("valid metric");
        let transitions = IntCounterVec::new(
            Opts::new(
                "slum_server_transitions_total",
                "Server health transitions, by the state entered",
            ),
            &["state"],
        )
        .expect("valid metric");
        let routing_mismatches = IntCounter::new(
            "slum_server_routing_mismatches_total",
            "Servers found routing by another domain than slum's (each change once)",
        )
        .expect("valid metric");
        let unroutable_servers = IntGauge::new(
            "slum_servers_unroutable",
            "Servers the router sends nothing because their routing check has not passed",
        )
        .expect("valid metric");
        let router_errors = IntCounterVec::new(
            Opts::new(
                "slum_router_errors_total",
                "The router's own error answers (502, 503, 504), by server and cause",
            ),
            &["server", "cause"],
        )
        .expect("valid metric");
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "slum_router_connections_refused_total",
                "Client connections the router closed at once, by the cap they were over",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let requests_refused = IntCounterVec::new(
            Opts::new(
                "slum_router_requests_refused_total",
                "Requests the router refused (a cap on requests in flight) or cut off (a request body too slow, or still for the body timeout), by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let backup_retries = IntCounterVec::new(
            Opts::new(
                "slum_backup_retries_total",
                "GETs and HEADs sent once more, to a backup, after their server failed them \
                 (refused, broke off before the answer went out, or went offline meanwhile), \
                 by the server that failed",
            ),
            &["server"],
        )
        .expect("valid metric");
        let acme_orders = IntCounterVec::new(
            Opts::new(
                "slum_acme_orders_total",
                "Certificate orders this router placed with the ACME CA (it leads the fleet), \
                 by result (issued, failed)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let certificates_expiring = IntGauge::new(
            "slum_certificates_expiring",
            "Certificates that expire within 14 days, or have expired",
        )
        .expect("valid metric");
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "slum_certificate_expiry_seconds",
                "Seconds until the certificate expires (negative once it has), only for \
                 certificates within 14 days of expiry (the first 100 to expire)",
            ),
            &["name"],
        )
        .expect("valid metric");
        // Shown from the start, at 0: an alert on their rise needs them.
        for result in ["issued", "failed"] {
            acme_orders.with_label_values(&[result]);
        }
        for reason in CONNECTIONS_REFUSED {
            connections_refused.with_label_values(&[reason]);
        }
        for reason in REQUESTS_REFUSED {
            requests_refused.with_label_values(&[reason]);
        }
        for c in [
            Box::new(route_table_domains.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(servers.clone()),
            Box::new(transitions.clone()),
            Box::new(routing_mismatches.clone()),
            Box::new(unroutable_servers.clone()),
            Box::new(router_errors.clone()),
            Box::new(connections_refused.clone()),
            Box::new(requests_refused.clone()),
            Box::new(backup_retries.clone()),
            Box::new(acme_orders.clone()),
            Box::new(certificates_expiring.clone()),
            Box::new(certificate_expiry.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            router_shards: Arc::default(),
            clock: Clock::new(),
            tenant_hasher: TenantHasher::default(),
            route_table_domains,
            servers,
            transitions,
            routing_mismatches,
            unroutable_servers,
            router_errors,
            connections_refused,
            requests_refused,
            backup_retries,
            acme_orders,
            certificates_expiring,
            certificate_expiry,
        }
    }

    /// Sets the certificates' expiry gauges: `count` expire within the
    /// warning window, and `first` (name, not_after in Unix seconds; at most
    /// [`CERTIFICATE_SERIES`] are shown) are the first of them, whose series
    /// say how many seconds each has left at `now`. Series of certificates
    /// no longer among them go.
    pub(crate) fn set_expiring_certificates(&self, count: i64, first: &[(String, i64)], now: i64) {
        self.certificates_expiring.set(count);
        self.certificate_expiry.reset();
        for (name, not_after) in first.iter().take(CERTIFICATE_SERIES) {
            self.certificate_expiry
                .with_label_values(&[name])
                .set(not_after - now);
        }
    }

    /// Counts a client connection refused for `reason` (one of
    /// [`CONNECTIONS_REFUSED`]). Off the request path: refusals only.
    pub(crate) fn connection_refused(&self, reason: &str) {
        self.connections_refused.with_label_values(&[reason]).inc();
    }

    /// Counts a request refused or cut off for `reason` (one of
    /// [`REQUESTS_REFUSED`]).
    pub(crate) fn request_refused(&self, reason: &str) {
        self.requests_refused.with_label_values(&[reason]).inc();
    }

    /// A new router thread's share of the request metrics.
    pub(crate) fn router_shard(&self) -> Arc<RouterShard> {
        let shard = Arc::new(RouterShard {
            requests: STATUSES.map(|_| AtomicU64::new(0)).collect(),
            servers: Mutex::default(),
            tenants: Mutex::default(),
            clock: self.clock,
            tenant_hasher: self.tenant_hasher,
        });
        crate::lock(&self.router_shards).push(Arc::clone(&shard));
        shard
    }

    /// The `limit` busiest tenants of the last minute, over every router
    /// thread.
    pub(crate) fn traffic_top(&self, limit: usize) -> TrafficTop {
        let now = Instant::now();
        self.tenant_tally(now, None)
            .top(limit, self.clock.covered(now))
    }

    /// One tenant's traffic of the last minute.
    pub(crate) fn traffic_tenant(&self, tenant: &str) -> TenantTraffic {
        let now = Instant::now();
        self.tenant_tally(now, Some(tenant))
            .tenant(tenant, self.clock.covered(now))
    }

    fn tenant_tally(&self, now: Instant, only: Option<&str>) -> TenantTally {
        let slot = self.clock.slot(now);
        let mut tally = TenantTally::new(self.tenant_hasher);
        let shards = crate::lock(&self.router_shards).clone();
        for shard in &shards {
            // Held while its slots are summed (a fraction of a millisecond):
            // the thread's next request waits that long at most.
            let tenants = crate::lock(&shard.tenants);
            for s in tenants.live(slot) {
                tally.add(s, only);
            }
        }
        tally
    }

    /// The traffic of the last minute to each server.
    pub(crate) fn traffic_servers(&self) -> ServersTraffic {
        let now = Instant::now();
        let slot = self.clock.slot(now);
        let mut tally = ServerTally::default();
        let shards = crate::lock(&self.router_shards).clone();
        for shard in &shards {
            for (server, counts) in crate::lock(&shard.servers).iter() {
                for s in counts.window.live(slot) {
                    tally.add(server, s);
                }
            }
        }
        tally.finish(self.clock.covered(now))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(self.router_families());
        families.sort_by(|a, b| a.get_name().cmp(b.get_name()));
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "metrics could not be rendered");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Requests by status and upstream latency by server, summed over the
    /// router threads.
    fn router_families(&self) -> Vec<MetricFamily> {
        let shards = crate::lock(&self.router_shards).clone();
        let mut requests = vec![0u64; STATUSES.len()];
        let mut latency: HashMap<String, LatencySum> = HashMap::new();
        for shard in &shards {
            for (total, n) in requests.iter_mut().zip(shard.requests.iter()) {
                *total += n.load(Relaxed);
            }
            for (server, counts) in crate::lock(&shard.servers).iter() {
                latency
                    .entry(server.clone())
                    .or_default()
                    .add(&counts.latency);
            }
        }
        let counters = STATUSES
            .zip(requests)
            .filter(|&(_, n)| n > 0)
            .map(|(status, n)| {
                let mut counter = proto::Counter::default();
                counter.set_value(n as f64);
                let mut m = metric("status", &status.to_string());
                m.set_counter(counter);
                m
            })
            .collect();
        let mut servers: Vec<_> = latency.into_iter().collect();
        servers.sort_by(|a, b| a.0.cmp(&b.0));
        let histograms = servers
            .into_iter()
            .map(|(server, sum)| {
                let mut m = metric("server", &server);
                m.set_histogram(sum.into_proto());
                m
            })
            .collect();
        // The text encoder refuses a family without metrics: before the first
        // request there are none.
        [
            family(REQUESTS, REQUESTS_HELP, MetricType::COUNTER, counters),
            family(LATENCY, LATENCY_HELP, MetricType::HISTOGRAM, histograms),
        ]
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
    }
}

fn metric(label: &str, value: &str) -> proto::Metric {
    let mut pair = proto::LabelPair::default();
    pair.set_name(label.to_owned());
    pair.set_value(value.to_owned());
    let mut m = proto::Metric::default();
    m.set_label(vec![pair]);
    m
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// One router thread's request metrics. Only that thread writes them.
pub(crate) struct RouterShard {
    /// Responses by status code (`status - 100`).
    requests: Box<[AtomicU64]>,
    /// Upstream latency and the last minute's traffic by server, looked up
    /// for each request (foldhash, as the route table).
    servers: Mutex<foldhash::HashMap<String, ServerCounts>>,
    /// The last minute's traffic by tenant.
    tenants: Mutex<Window<TenantSlot>>,
    clock: Clock,
    tenant_hasher: TenantHasher,
}

/// What a router thread keeps of one server.
#[derive(Default)]
struct ServerCounts {
    /// Since the start, for Prometheus.
    latency: LatencyCounts,
    /// The last minute.
    window: Window<Counts>,
}

impl RouterShard {
    /// Counts a response.
    pub fn count(&self, status: u16) {
        if let Some(n) = status
            .checked_sub(*STATUSES.start())
            .and_then(|i| self.requests.get(usize::from(i)))
        {
            n.fetch_add(1, Relaxed);
        }
    }

    /// Records that `server` answered with a response head of `status`,
    /// `took` after it was sent the request, at `now`.
    pub fn upstream_answered(&self, server: &str, status: u16, took: Duration, now: Instant) {
        let slot = self.clock.slot(now);
        self.with_server(server, |counts| {
            counts.latency.observe(took);
            counts.window.at(slot).record(status >= 500, Some(took));
        });
    }

    /// Records that `server` gave no answer to a request (refused, broke
    /// off, timed out), at `now`.
    pub fn upstream_failed(&self, server: &str, now: Instant) {
        let slot = self.clock.slot(now);
        self.with_server(server, |counts| {
            counts.window.at(slot).record(true, None);
        });
    }

    fn with_server(&self, server: &str, f: impl FnOnce(&mut ServerCounts)) {
        // Locked by this thread, and by a scrape or a traffic read now and then.
        let mut servers = crate::lock(&self.servers);
        match servers.get_mut(server) {
            Some(counts) => f(counts),
            None => f(servers.entry(server.to_owned()).or_default()),
        }
    }

    /// Records the router's answer of `status` to a request of `tenant`,
    /// `took` after its head was read, at `now`.
    pub fn tenant_answered(&self, tenant: &str, status: u16, took: Duration, now: Instant) {
        let slot = self.clock.slot(now);
        let hash = std::hash::BuildHasher::hash_one(&self.tenant_hasher, tenant);
        crate::lock(&self.tenants)
            .at(slot)
            .record(hash, tenant, status >= 500, took);
    }
}

/// A histogram's counts, bucket by bucket (not cumulative).
#[derive(Default)]
struct LatencyCounts {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl LatencyCounts {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(b) = LATENCY_BUCKETS.iter().position(|&upper| seconds <= upper) {
            self.buckets[b].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

/// Latency counts summed over router threads.
#[derive(Default)]
struct LatencySum {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_nanos: u64,
}

impl LatencySum {
    fn add(&mut self, c: &LatencyCounts) {
        for (total, n) in self.buckets.iter_mut().zip(&c.buckets) {
            *total += n.load(Relaxed);
        }
        self.count += c.count.load(Relaxed);
        self.sum_nanos = self.sum_nanos.saturating_add(c.sum_nanos.load(Relaxed));
    }

    fn into_proto(self) -> proto::Histogram {
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(self.buckets)
            .map(|(&upper, n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(upper);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect::<Vec<_>>();
        let mut h = proto::Histogram::default();
        h.set_sample_count(self.count);
        h.set_sample_sum(self.sum_nanos as f64 / 1e9);
        h.set_bucket(buckets);
        h
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_thread_shares_are_summed_when_scraped() {
        let metrics = Metrics::new();
        metrics.route_table_domains.set(3);
        assert!(
            metrics.render().contains("slum_route_table_domains 3"),
            "no request yet: the other metrics are still shown"
        );
        let (a, b) = (metrics.router_shard(), metrics.router_shard());
        a.count(200);
        b.count(200);
        b.count(502);
        let now = Instant::now();
        a.upstream_answered("east", 200, Duration::from_micros(300), now);
        b.upstream_answered("east", 200, Duration::from_millis(2), now);
        b.upstream_answered("west", 200, Duration::from_secs(40), now);
        let text = metrics.render();
        for line in [
            "slum_requests_total{status=\"200\"} 2",
            "slum_requests_total{status=\"502\"} 1",
            "slum_upstream_latency_seconds_bucket{server=\"east\",le=\"0.0005\"} 1",
            "slum_upstream_latency_seconds_bucket{server=\"east\",le=\"0.001\"} 1",
            "slum_upstream_latency_seconds_bucket{server=\"east\",le=\"0.0025\"} 2",
            "slum_upstream_latency_seconds_bucket{server=\"east\",le=\"+Inf\"} 2",
            "slum_upstream_latency_seconds_sum{server=\"east\"} 0.0023",
            "slum_upstream_latency_seconds_count{server=\"east\"} 2",
            "slum_upstream_latency_seconds_bucket{server=\"west\",le=\"30\"} 0",
            "slum_upstream_latency_seconds_bucket{server=\"west\",le=\"+Inf\"} 1",
            "# TYPE slum_upstream_latency_seconds histogram",
            "# TYPE slum_requests_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("status=\"404\""), "{text}");
    }

    #[test]
    fn only_certificates_near_expiry_have_a_series() {
        let metrics = Metrics::new();
        metrics.set_expiring_certificates(
            2,
            &[("a.test".into(), 1_000), ("*.b.test".into(), 400)],
            500,
        );
        let text = metrics.render();
        for line in [
            "slum_certificates_expiring 2",
            "slum_certificate_expiry_seconds{name=\"a.test\"} 500",
            "slum_certificate_expiry_seconds{name=\"*.b.test\"} -100",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        metrics.set_expiring_certificates(0, &[], 500);
        let text = metrics.render();
        assert!(text.contains("slum_certificates_expiring 0"), "{text}");
        assert!(
            !text.contains("a.test"),
            "a renewed certificate's series goes: {text}"
        );
    }
}
