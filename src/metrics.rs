//! Prometheus metrics of `slum serve`: requests by status, upstream latency,
//! route table size, servers by state, health transitions.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The metrics of one `slum serve` process.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Router responses by status code.
    pub requests: IntCounterVec,
    /// Time from sending a request upstream to its response head, by server.
    pub upstream_latency: HistogramVec,
    /// Customer domains in the route table.
    pub route_table_domains: IntGauge,
    /// Servers by state.
    pub servers: IntGaugeVec,
    /// Health transitions of servers, by new state.
    pub transitions: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("slum_requests_total", "Router responses by status code"),
            &["status"],
        )
        .expect("valid metric");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "slum_upstream_latency_seconds",
                "Time from sending a request to a tenement server to its response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["server"],
        )
        .expect("valid metric");
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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_latency.clone()),
            Box::new(route_table_domains.clone()),
            Box::new(servers.clone()),
            Box::new(transitions.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            upstream_latency,
            route_table_domains,
            servers,
            transitions,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
