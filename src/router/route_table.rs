//! The router's in-memory view of the fleet, and the pure decision of where a
//! request goes.
//!
//! A [`RouteTable`] is built from a snapshot of the fleet database and never
//! changed afterwards: the router swaps in a new one when the fleet changes, so
//! a lookup takes no lock and makes no query. Every domain's [`Decision`] is
//! worked out when the table is built: a lookup is one hash-map probe and a
//! copy of a few reference-counted pointers, the same work with a thousand
//! tenants or a million, and no allocation.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::Uri;

use crate::fleet::model::{DesiredState, Instance, Server, ServerStatus, Tenant};

/// A tenement server as the router needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub server_id: String,
    /// Base URL, without trailing slash (shared: it keys the router's pools).
    pub url: Arc<str>,
    /// The domain tenement routes by.
    pub domain: String,
    pub status: ServerStatus,
    /// The server's routing problem (its tenement routes by another domain,
    /// or that is not checked yet): while it has one it is taken as down
    /// whatever its status, since the Hosts the router sends it could reach
    /// tenement's own dashboard and API.
    pub routing_problem: Option<Arc<str>>,
    /// `url`'s scheme and authority, where connections go; `None` when `url`
    /// is not a usable http(s) URL.
    pub origin: Option<Uri>,
    /// The path `url` ends in, without trailing slash (usually empty):
    /// request paths are sent under it.
    pub path_prefix: String,
    /// Its requests in flight through this router.
    pub load: ServerLoad,
}

/// A server's requests in flight through the router, across its threads and
/// route tables: a table built after another takes its servers' counters
/// over (see [`RouteTable::build_after`]). Not part of what a server is: any
/// two compare equal.
#[derive(Debug, Clone, Default)]
pub struct ServerLoad(pub(crate) Arc<AtomicUsize>);

impl ServerLoad {
    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.0.load(Relaxed)
    }
}

impl PartialEq for ServerLoad {
    fn eq(&self, _: &ServerLoad) -> bool {
        true
    }
}

impl Eq for ServerLoad {}

/// Splits a server URL into its origin and its path.
pub(crate) fn split_url(url: &str) -> (Option<Uri>, String) {
    let Ok(uri) = url.parse::<Uri>() else {
        return (None, String::new());
    };
    let prefix = uri.path().trim_end_matches('/').to_owned();
    let origin = match (uri.scheme(), uri.authority()) {
        (Some(scheme), Some(authority)) => Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok(),
        _ => None,
    };
    (origin, prefix)
}

/// Where a customer domain goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRoute {
    pub tenant: String,
    pub process: String,
    pub instance_id: String,
    pub home_server: String,
}

/// A request's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub upstream: Arc<Upstream>,
    /// The Host header tenement routes by: `{tenant}.{process}.{server domain}`.
    pub host: HeaderValue,
    /// The instance key, `{tenant}:{instance_id}`.
    pub instance: Arc<str>,
}

/// What the router does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send it to `primary`; `fallbacks` are other live instances of the same
    /// tenant and process, best first (for a retry when `primary` fails).
    Forward {
        primary: Target,
        fallbacks: Arc<[Target]>,
        /// True when `primary` is not the domain's own instance (failover).
        failover: bool,
    },
    /// The tenant has no instance yet: spawn it on its home server, then route.
    Spawn(DomainRoute),
    /// Every instance of the tenant is on an offline server (or, with none, its
    /// home server is offline).
    ServerDown {
        tenant: String,
        servers: Vec<String>,
    },
    /// No tenant has this domain.
    UnknownHost,
}

/// Why a Host header cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHost {
    Missing,
    Malformed,
    /// An absolute-form request target and the Host header name different
    /// hosts.
    Conflicting,
}

/// The router's snapshot of the fleet.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The fleet database's routing version this table was built from.
    pub version: i64,
    /// Each customer domain's decision, made when the table was built. Hashed
    /// with foldhash, seeded per process: a lookup costs half what SipHash
    /// does, and the keys are the operator's domains, not the clients'.
    domains: foldhash::HashMap<Box<str>, Decision>,
    upstreams: HashMap<String, Arc<Upstream>>,
}

impl RouteTable {
    /// Builds a table from a snapshot of the fleet. Instances whose stop is
    /// pending take no traffic.
    pub fn build(
        version: i64,
        servers: &[Server],
        tenants: &[Tenant],
        instances: &[Instance],
    ) -> RouteTable {
        RouteTable::build_after(&RouteTable::default(), version, servers, tenants, instances)
    }

    /// [`build`](Self::build), to replace `previous`: its servers' counts of
    /// requests in flight go on in the new table.
    pub fn build_after(
        previous: &RouteTable,
        version: i64,
        servers: &[Server],
        tenants: &[Tenant],
        instances: &[Instance],
    ) -> RouteTable {
        let upstreams: HashMap<String, Arc<Upstream>> = servers
            .iter()
            .map(|s| {
                let (origin, path_prefix) = split_url(&s.url);
                let load = previous
                    .upstreams
                    .get(&s.id)
                    .map(|u| u.load.clone())
                    .unwrap_or_default();
                (
                    s.id.clone(),
                    Arc::new(Upstream {
                        server_id: s.id.clone(),
                        url: s.url.trim_end_matches('/').into(),
                        domain: s.routing_domain(),
                        status: s.status,
                        routing_problem: s.routing_problem.as_deref().map(Arc::from),
                        origin,
                        path_prefix,
                        load,
                    }),
                )
            })
            .collect();
        let mut placements: HashMap<&str, Vec<&Instance>> = HashMap::new();
        for i in instances
            .iter()
            .filter(|i| i.desired == DesiredState::Running)
        {
            placements.entry(i.tenant.as_str()).or_default().push(i);
        }
        let domains = tenants
            .iter()
            .map(|t| {
                let route = DomainRoute {
                    tenant: t.name.clone(),
                    process: t.process.clone(),
                    instance_id: t.instance_id.clone(),
                    home_server: t.server_id.clone(),
                };
                let placed = placements
                    .get(t.name.as_str())
                    .map_or(&[][..], Vec::as_slice);
                let decision = decide(route, placed, &upstreams);
                (t.domain.as_str().into(), decision)
            })
            .collect();
        RouteTable {
            version,
            domains,
            upstreams,
        }
    }

    /// Number of customer domains routed.
    pub fn domains(&self) -> usize {
        self.domains.len()
    }

    /// The upstream of a server.
    pub fn upstream(&self, server_id: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(server_id)
    }

    /// Every upstream.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.upstreams.values()
    }

    /// Where a request for `host` (already normalised) goes.
    pub fn route(&self, host: &str) -> &Decision {
        static UNKNOWN: Decision = Decision::UnknownHost;
        self.get(host).unwrap_or(&UNKNOWN)
    }

    /// The decision for `host` when it is a routed domain as it stands.
    pub fn get(&self, host: &str) -> Option<&Decision> {
        self.domains.get(host)
    }
}

impl Upstream {
    /// Whether the router sends the server nothing: offline, or with a
    /// routing problem.
    pub fn is_down(&self) -> bool {
        self.status == ServerStatus::Offline || self.routing_problem.is_some()
    }
}

/// Where requests for a domain of `route` go, given the running instances of
/// its tenant (`placed`, any process) and the servers.
fn decide(
    route: DomainRoute,
    placed: &[&Instance],
    upstreams: &HashMap<String, Arc<Upstream>>,
) -> Decision {
    let placements: Vec<&Instance> = placed
        .iter()
        .copied()
        .filter(|p| p.process == route.process)
        .collect();
    if placements.is_empty() {
        let home_up = upstreams
            .get(&route.home_server)
            .is_some_and(|u| !u.is_down());
        return if home_up {
            Decision::Spawn(route)
        } else {
            Decision::ServerDown {
                servers: vec![route.home_server],
                tenant: route.tenant,
            }
        };
    }
    // Candidates: the domain's own instance first, then the others on online
    // servers before those on servers not checked yet.
    let mut live: Vec<(u8, &Instance, &Arc<Upstream>)> = placements
        .iter()
        .filter_map(|&p| {
            let up = upstreams.get(&p.server_id)?;
            if up.is_down() {
                return None;
            }
            let rank = match (p.instance_id == route.instance_id, up.status) {
                (true, _) => 0,
                (false, ServerStatus::Online) => 1,
                (false, _) => 2,
            };
            Some((rank, p, up))
        })
        .collect();
    if live.is_empty() {
        let mut servers: Vec<String> = placements.iter().map(|p| p.server_id.clone()).collect();
        servers.sort();
        servers.dedup();
        return Decision::ServerDown {
            tenant: route.tenant,
            servers,
        };
    }
    live.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| a.1.instance_id.cmp(&b.1.instance_id))
    });
    let failover = live[0].0 != 0;
    let mut targets = live.into_iter().filter_map(|(_, p, up)| {
        // Names are validated DNS labels, so the header is always valid; a
        // target that is not is left out rather than sent a broken Host.
        let host = format!("{}.{}.{}", route.tenant, route.process, up.domain);
        Some(Target {
            host: HeaderValue::try_from(host).ok()?,
            instance: format!("{}:{}", route.tenant, p.instance_id).into(),
            upstream: Arc::clone(up),
        })
    });
    match targets.next() {
        Some(primary) => Decision::Forward {
            primary,
            fallbacks: targets.collect(),
            failover,
        },
        None => Decision::ServerDown {
            tenant: route.tenant,
            servers: Vec::new(),
        },
    }
}

/// Normalises a Host header value: lower-case, port and trailing dot removed.
/// IPv6 literals and anything that is not a host name are malformed.
pub fn normalize_host(raw: Option<&str>) -> Result<String, BadHost> {
    let raw = raw
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(BadHost::Missing)?;
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return Err(BadHost::Malformed),
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return Err(BadHost::Malformed);
    }
    // The rule tenants' domains were checked with (lower-cased above).
    if !host
        .split('.')
        .all(|l| crate::fleet::validation::dns_label("host", l).is_ok())
    {
        return Err(BadHost::Malformed);
    }
    Ok(host)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn server(id: &str, status: ServerStatus) -> Server {
        Server {
            id: id.into(),
            url: format!("http://10.0.0.{}:8000/", id.len()),
            domain: Some(format!("{id}.fleet.test")),
            status,
            ..Default::default()
        }
    }

    pub(crate) fn tenant(domain: &str, name: &str, server: &str) -> Tenant {
        Tenant {
            domain: domain.into(),
            name: name.into(),
            server_id: server.into(),
            process: "api".into(),
            instance_id: "prod".into(),
            ..Default::default()
        }
    }

    fn inst(tenant: &str, id: &str, server: &str) -> Instance {
        Instance {
            tenant: tenant.into(),
            instance_id: id.into(),
            process: "api".into(),
            server_id: server.into(),
            ..Default::default()
        }
    }

    fn forward_to(d: &Decision) -> (String, String, bool) {
        match d {
            Decision::Forward {
                primary, failover, ..
            } => (
                primary.upstream.server_id.clone(),
                primary.host.to_str().unwrap().to_owned(),
                *failover,
            ),
            other => panic!("expected Forward, got {other:?}"),
        }
    }

    #[test]
    fn routes_to_the_tenants_instance_with_the_mapped_host() {
        use ServerStatus::*;
        let t = RouteTable::build(
            1,
            &[server("east", Online), server("west", Unknown)],
            &[
                tenant("acme.com", "acme", "east"),
                tenant("www.acme.com", "acme", "east"),
            ],
            &[inst("acme", "prod", "west")],
        );
        assert_eq!(
            forward_to(t.route("acme.com")),
            ("west".into(), "acme.api.west.fleet.test".into(), false)
        );
        assert_eq!(t.route("www.acme.com"), t.route("acme.com"));
        assert_eq!(t.route("nobody.com"), &Decision::UnknownHost);
        assert_eq!(t.domains(), 2);
    }

    #[test]
    fn fails_over_to_a_backup_and_back() {
        use ServerStatus::*;
        let tenants = [tenant("acme.com", "acme", "east")];
        let instances = [inst("acme", "prod", "east"), inst("acme", "backup", "west")];
        let up = RouteTable::build(
            1,
            &[server("east", Online), server("west", Online)],
            &tenants,
            &instances,
        );
        let Decision::Forward { fallbacks, .. } = up.route("acme.com") else {
            panic!()
        };
        assert_eq!(fallbacks.len(), 1);
        assert_eq!(&*fallbacks[0].instance, "acme:backup");
        assert_eq!(forward_to(up.route("acme.com")).0, "east");

        let down = RouteTable::build(
            2,
            &[server("east", Offline), server("west", Online)],
            &tenants,
            &instances,
        );
        assert_eq!(
            forward_to(down.route("acme.com")),
            ("west".into(), "acme.api.west.fleet.test".into(), true)
        );

        let both = RouteTable::build(
            3,
            &[server("east", Offline), server("west", Offline)],
            &tenants,
            &instances,
        );
        assert_eq!(
            both.route("acme.com"),
            &Decision::ServerDown {
                tenant: "acme".into(),
                servers: vec!["east".into(), "west".into()]
            }
        );
    }

    #[test]
    fn a_tenant_without_instance_is_spawned_on_its_home_unless_it_is_down() {
        use ServerStatus::*;
        let tenants = [tenant("acme.com", "acme", "east")];
        let t = RouteTable::build(1, &[server("east", Unknown)], &tenants, &[]);
        assert!(matches!(t.route("acme.com"), Decision::Spawn(r) if r.home_server == "east"));
        let t = RouteTable::build(1, &[server("east", Offline)], &tenants, &[]);
        assert!(matches!(t.route("acme.com"), Decision::ServerDown { .. }));
        // A pending stop takes no traffic.
        let mut stopping = inst("acme", "prod", "east");
        stopping.desired = DesiredState::Stopped;
        let t = RouteTable::build(1, &[server("east", Online)], &tenants, &[stopping]);
        assert!(matches!(t.route("acme.com"), Decision::Spawn(_)));
    }

    #[test]
    fn a_server_with_a_routing_problem_is_down_whatever_its_status() {
        use ServerStatus::*;
        let tenants = [tenant("acme.com", "acme", "east")];
        let instances = [inst("acme", "prod", "east"), inst("acme", "backup", "west")];
        let misrouted = |id: &str| Server {
            routing_problem: Some("routes by a different domain".into()),
            ..server(id, Online)
        };
        // Its instance is passed over for the backup...
        let t = RouteTable::build(
            1,
            &[misrouted("east"), server("west", Online)],
            &tenants,
            &instances,
        );
        assert_eq!(
            forward_to(t.route("acme.com")),
            ("west".into(), "acme.api.west.fleet.test".into(), true)
        );
        let Decision::Forward { fallbacks, .. } = t.route("acme.com") else {
            panic!()
        };
        assert!(fallbacks.is_empty(), "never a fallback either");
        // ...and with none, nothing goes to it, not even a spawn.
        let t = RouteTable::build(1, &[misrouted("east")], &tenants, &[]);
        assert!(matches!(t.route("acme.com"), Decision::ServerDown { .. }));
        let t = RouteTable::build(1, &[misrouted("east")], &tenants, &instances[..1]);
        assert!(matches!(t.route("acme.com"), Decision::ServerDown { .. }));
    }

    #[test]
    fn another_process_of_the_same_tenant_is_not_a_backup() {
        let tenants = [tenant("acme.com", "acme", "east")];
        let mut web = inst("acme", "site", "east");
        web.process = "web".into();
        let t = RouteTable::build(1, &[server("east", ServerStatus::Online)], &tenants, &[web]);
        assert!(matches!(t.route("acme.com"), Decision::Spawn(_)));
    }

    #[test]
    fn a_table_built_after_another_keeps_its_servers_counts_in_flight() {
        use ServerStatus::*;
        let tenants = [tenant("acme.com", "acme", "east")];
        let first = RouteTable::build(1, &[server("east", Online)], &tenants, &[]);
        first.upstream("east").unwrap().load.0.fetch_add(2, Relaxed);
        let next = RouteTable::build_after(
            &first,
            2,
            &[server("east", Offline), server("west", Online)],
            &tenants,
            &[],
        );
        assert_eq!(next.upstream("east").unwrap().load.in_flight(), 2);
        assert_eq!(next.upstream("west").unwrap().load.in_flight(), 0);
        first.upstream("east").unwrap().load.0.fetch_sub(2, Relaxed);
        assert_eq!(
            next.upstream("east").unwrap().load.in_flight(),
            0,
            "a request counted on the old table is given back to the new one"
        );
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalize_host(Some("Acme.COM:8080")), Ok("acme.com".into()));
        assert_eq!(normalize_host(Some("acme.com.")), Ok("acme.com".into()));
        assert_eq!(normalize_host(None), Err(BadHost::Missing));
        assert_eq!(normalize_host(Some("  ")), Err(BadHost::Missing));
        for bad in [
            "a b.com",
            "acme.com:",
            "acme.com:x",
            "[::1]:80",
            "a..b",
            "-a.com",
            "a_b.com",
            "acme.com:80:80",
        ] {
            assert_eq!(normalize_host(Some(bad)), Err(BadHost::Malformed), "{bad}");
        }
    }
}
