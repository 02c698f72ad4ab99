//! The router's in-memory view of the fleet, and the pure decision of where a
//! request goes.
//!
//! A [`RouteTable`] is never changed once made: the router swaps in a new one
//! when the fleet changes, so a lookup takes no lock and makes no query. A
//! change costs what it touches, not the fleet: a domain's entry names its
//! tenant, process and the instances it can go to, with their servers as
//! small indexes into the table's server list, and the [`Decision`] (the
//! domain's own instance if its server is up, else a live backup) is taken at
//! lookup from the two. A server going offline makes a new server list (a
//! thousand pointers) and shares every domain; a domain's change copies its
//! shard of the domains (one of 4,096) and shares the rest. A lookup is one
//! hash, one probe and a look at each of the domain's servers: the same work
//! with a thousand tenants or a million, and no allocation. The Host header
//! sent to a server is made per request (see [`Pick::host`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::Uri;

use crate::fleet::model::{DesiredState, Instance, Server, ServerStatus, Tenant};
use crate::fleet::store::{RouteRow, RouteRowRef};
use slum_flat_table::FlatTable;

mod build;
mod host;

pub use build::TableBuilder;
use build::{entry_of, route_row, Shared};
pub use host::normalize_host;

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
/// over. Not part of what a server is: any
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

/// Where a customer domain goes when its tenant has no instance running yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRoute {
    pub tenant: String,
    pub process: String,
    pub instance_id: String,
    pub home_server: String,
}

/// A request's destination, as the lookup found it.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'t> {
    pub upstream: &'t Arc<Upstream>,
    entry: &'t Entry,
    target: &'t Target,
    names: &'t Names,
}

impl<'t> Pick<'t> {
    pub fn tenant(&self) -> &'t str {
        self.entry.tenant()
    }

    pub fn process(&self) -> &'t str {
        self.names.get(self.entry.process)
    }

    pub fn instance_id(&self) -> &'t str {
        self.names.get(self.target.instance_id)
    }

    /// The Host header tenement routes by: `{tenant}.{process}.{server
    /// domain}`. Made per request rather than kept per domain: a million
    /// of them would be most of the table. `None` for a name that cannot be a
    /// header (names are validated DNS labels, so never in practice).
    pub fn host(&self) -> Option<HeaderValue> {
        // Pushed rather than `format!`ed: the formatting machinery cost a
        // thousand instructions a request here.
        let (tenant, process, domain) = (self.tenant(), self.process(), &self.upstream.domain);
        let mut host = Vec::with_capacity(tenant.len() + process.len() + domain.len() + 2);
        for (i, part) in [tenant, process, domain.as_str()].into_iter().enumerate() {
            if i > 0 {
                host.push(b'.');
            }
            host.extend_from_slice(part.as_bytes());
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(host)).ok()
    }
}

impl PartialEq for Pick<'_> {
    fn eq(&self, other: &Pick<'_>) -> bool {
        self.upstream == other.upstream
            && self.tenant() == other.tenant()
            && self.process() == other.process()
            && self.instance_id() == other.instance_id()
    }
}

/// What the router does with a request, decided at lookup from the domain's
/// entry and its servers' states.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<'t> {
    /// Send it to `primary`; `fallback` is another live instance of the same
    /// tenant and process, the next best (for a retry when `primary` fails).
    Forward {
        primary: Pick<'t>,
        fallback: Option<Pick<'t>>,
        /// True when `primary` is not the domain's own instance (failover).
        failover: bool,
    },
    /// The tenant has no instance yet: spawn it on its home server, then
    /// route (made at lookup: only a tenant's first requests come here).
    Spawn(Box<DomainRoute>),
    /// Every instance of the tenant is on a server that is down (or, with
    /// none, its home server is).
    ServerDown(Down<'t>),
    /// No tenant has this domain.
    UnknownHost,
}

/// A domain whose servers are all down.
#[derive(Debug, Clone, Copy)]
pub struct Down<'t> {
    entry: &'t Entry,
    table: &'t RouteTable,
}

impl Down<'_> {
    /// The domain's tenant.
    pub fn tenant(&self) -> &str {
        self.entry.tenant()
    }

    /// The servers its instances are on (its home server when it has none),
    /// sorted.
    pub fn servers(&self) -> Vec<String> {
        let mut servers: Vec<String> = match &self.entry.targets {
            Targets::None { home, .. } => vec![self.table.servers.id(*home).to_owned()],
            targets => targets
                .as_slice()
                .iter()
                .map(|t| self.table.servers.id(t.server).to_owned())
                .collect(),
        };
        servers.sort();
        servers.dedup();
        servers
    }
}

impl PartialEq for Down<'_> {
    fn eq(&self, other: &Down<'_>) -> bool {
        self.tenant() == other.tenant() && self.servers() == other.servers()
    }
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

/// One running instance a domain's requests can go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    /// Its server, as an index into the table's servers.
    server: u32,
    /// Its instance id, as an index into the table's names (most are
    /// "prod" or "backup").
    instance_id: u32,
}

/// A domain's running instances: most have one, kept inline. 16 bytes, so
/// that an entry is 40 (see [`Entry`]).
#[derive(Debug, Clone)]
enum Targets {
    /// None runs: where the domain's own instance is spawned.
    None {
        /// The domain's own instance id, as an index into the table's names.
        own: u32,
        /// The server it is spawned on.
        home: u32,
    },
    One(Target),
    /// Behind a thin pointer (one more read, for the domains with a second
    /// instance only): a slice's own pointer would make every entry 8
    /// bytes larger.
    Many(Arc<Box<[Target]>>),
}

impl Targets {
    fn as_slice(&self) -> &[Target] {
        match self {
            Targets::None { .. } => &[],
            Targets::One(t) => std::slice::from_ref(t),
            Targets::Many(ts) => ts,
        }
    }
}

/// A customer domain's entry: its tenant and process, and the running
/// instances of that process it can go to (the domain's own first when it
/// runs, the others by instance id), or where to start one.
/// 40 bytes, kept in its shard's array itself: the smaller an entry, the
/// more slots a shard has for the same memory and the fewer lookups probe
/// past the first (docs/benchmarks.md). `repr(C)`: the tag, which a probe
/// reads of each entry it passes, first.
#[derive(Debug, Clone)]
#[repr(C)]
struct Entry {
    /// The top 8 bits of the domain's hash: a lookup compares the domain
    /// only with the entries that have its tag (1 in 256 of the others).
    tag: u8,
    /// Whether the first target is the domain's own instance.
    own_first: bool,
    /// Where the domain ends in `names` (a domain is at most 253 bytes).
    domain_len: u16,
    /// The process, as an index into the table's names.
    process: u32,
    /// The domain, then its tenant's name: one allocation, not two; shared,
    /// not copied, by the copy of its shard a change to another domain
    /// makes. Copied, the names of a shard's few hundred domains were most
    /// of what a change allocated, on whichever thread made the change,
    /// while the old ones went back to another thread's arena: at a million
    /// domains RSS grew by 27 MB a thousand changes (the `Arc`'s counts cost
    /// 16 bytes a domain).
    names: Arc<str>,
    targets: Targets,
}

impl Entry {
    #[inline]
    fn domain(&self) -> &str {
        self.names.get(..usize::from(self.domain_len)).unwrap_or("")
    }

    #[inline]
    fn tenant(&self) -> &str {
        self.names.get(usize::from(self.domain_len)..).unwrap_or("")
    }

    /// Whether this is `domain`'s entry: its bytes compared, no check that
    /// the domain ends on a character boundary (a lookup's hot path).
    #[inline]
    fn is(&self, domain: &str) -> bool {
        self.names.as_bytes().get(..usize::from(self.domain_len)) == Some(domain.as_bytes())
    }
}

/// The server ids of a table: each known server id has an index for good
/// (domains' entries name servers by it). Shared by the tables made one after
/// another until a new server comes.
#[derive(Debug, Clone, Default)]
struct Servers {
    index: HashMap<Arc<str>, u32>,
    ids: Vec<Arc<str>>,
}

/// Whether a server takes requests, as a lookup ranks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Usable {
    /// Gone, offline, or with a routing problem.
    #[default]
    No,
    Online,
    /// Up, but not checked yet (or draining): a backup after the online ones.
    Unchecked,
}

/// A server's place in a table: its upstream while it exists, and whether
/// it takes requests, which a lookup reads here without following the
/// upstream. The table keeps its slots in one array (a thousand of 24
/// bytes), indexed by server: a server's change copies it, never a domain.
#[derive(Debug, Clone, Default)]
struct Slot {
    upstream: Option<Arc<Upstream>>,
    /// `upstream` when it takes requests: what a lookup reads, one test.
    up: Option<Arc<Upstream>>,
    usable: Usable,
}

impl Slot {
    fn of(upstream: Upstream) -> Slot {
        let usable = match (upstream.is_down(), upstream.status) {
            (true, _) => Usable::No,
            (false, ServerStatus::Online) => Usable::Online,
            (false, _) => Usable::Unchecked,
        };
        let upstream = Arc::new(upstream);
        Slot {
            up: (usable != Usable::No).then(|| Arc::clone(&upstream)),
            upstream: Some(upstream),
            usable,
        }
    }

    /// The upstream, when it takes requests.
    #[inline]
    fn up(&self) -> Option<&Arc<Upstream>> {
        self.up.as_ref()
    }
}

impl Servers {
    /// The index of server `id`, made when it is new.
    fn index_of(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        let id: Arc<str> = id.into();
        self.index.insert(Arc::clone(&id), i);
        self.ids.push(id);
        i
    }

    fn id(&self, i: u32) -> &str {
        self.ids.get(i as usize).map_or("", |id| id)
    }
}

/// `slots` grown to one per server of `servers` (a server new to them has
/// no upstream yet).
fn slots_for(servers: &Servers, mut slots: Vec<Slot>) -> Arc<[Slot]> {
    slots.resize(servers.ids.len(), Slot::default());
    slots.into()
}

/// Process names and instance ids, each kept once and named by index.
/// Shared by the tables made one after another; a new name (rare: there are
/// a few of them in a fleet) copies the list.
#[derive(Debug, Clone, Default)]
struct Names {
    list: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
}

impl Names {
    fn get(&self, i: u32) -> &str {
        self.list.get(i as usize).map_or("", |n| n)
    }

    fn find(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    fn add(&mut self, name: &str) -> u32 {
        if let Some(i) = self.find(name) {
            return i;
        }
        let i = u32::try_from(self.list.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = name.into();
        self.index.insert(Arc::clone(&name), i);
        self.list.push(name);
        i
    }
}

/// How many shards the domains are kept in: a domain's change copies its
/// shard (a few hundred entries at a million domains) and the list of
/// shards, never the table. Fewer, larger shards make lookups faster (the
/// list stays in the CPU's caches) but a change's copy larger, and the RSS
/// after 1,000 changes at a million was no longer flat (1.05–1.20x with
/// 1,024 and 256 shards, 1.00x with 4,096; docs/benchmarks.md).
const SHARDS: usize = 4096;

/// Some of the domains, their entries in one array the list of shards
/// points at: a lookup goes from the list to the entry (hand-written for
/// that, `crates/flat-table`; docs/router.md).
type Shard = FlatTable<Entry>;

/// Hashes domains with foldhash, seeded per process: half what SipHash
/// costs, and the keys are the operator's domains, not the clients'.
#[derive(Debug, Clone, Copy, Default)]
struct Hasher(foldhash::fast::RandomState);

impl Hasher {
    /// The domain's bytes, written once: not `hash_one(domain)`, whose
    /// `str` adds a `0xff` byte after them (so that strings hashed one after
    /// another in a tuple cannot run into each other), and that byte costs a
    /// multiplication more a lookup. A domain is the whole key, so nothing
    /// follows it.
    #[inline]
    fn hash(&self, domain: &str) -> u64 {
        use std::hash::{BuildHasher, Hasher as _};
        let mut state = self.0.build_hasher();
        state.write(domain.as_bytes());
        state.finish()
    }

    /// The shard of a hash: bits 32 to 43 (a shard places an entry by the
    /// low 32, and the tag is the top 8).
    #[inline]
    fn shard_of(hash: u64) -> usize {
        ((hash >> 32) as usize) % SHARDS
    }

    #[inline]
    fn tag_of(hash: u64) -> u8 {
        (hash >> 56) as u8
    }
}

/// The customer domains, sharded by hash.
#[derive(Debug, Clone)]
struct Domains {
    hasher: Hasher,
    /// Of a fixed number, so that a lookup's index needs no bounds check.
    shards: Arc<[Shard; SHARDS]>,
    len: usize,
}

impl Default for Domains {
    fn default() -> Domains {
        Domains {
            hasher: Hasher::default(),
            shards: Arc::new(std::array::from_fn(|_| Shard::default())),
            len: 0,
        }
    }
}

impl Domains {
    #[inline]
    fn get(&self, domain: &str) -> Option<&Entry> {
        let hash = self.hasher.hash(domain);
        let tag = Hasher::tag_of(hash);
        self.shards[Hasher::shard_of(hash)].find(hash, |e| e.tag == tag && e.is(domain))
    }

    /// These domains with their entries set (`None`: removed; the last
    /// change of a domain counts), the other shards shared.
    fn with(&self, changes: Vec<(String, Option<Entry>)>) -> Domains {
        // Each change with its hash, by shard (the last of a domain's first).
        let mut changes: Vec<(usize, u64, String, Option<Entry>)> = changes
            .into_iter()
            .rev()
            .map(|(domain, entry)| {
                let hash = self.hasher.hash(&domain);
                (Hasher::shard_of(hash), hash, domain, entry)
            })
            .collect();
        changes.sort_by_key(|c| c.0);
        // The list of shards copied once, in place (no list made first and
        // copied again).
        let mut shards = Arc::clone(&self.shards);
        let list = Arc::make_mut(&mut shards);
        let mut len = self.len;
        for group in changes.chunk_by(|a, b| a.0 == b.0) {
            let mut added: Vec<(u64, Entry)> = Vec::with_capacity(group.len());
            for (i, (_, hash, domain, entry)) in group.iter().enumerate() {
                let later = group[..i].iter().any(|c| c.2 == *domain);
                if let (false, Some(entry)) = (later, entry) {
                    let mut entry = entry.clone();
                    entry.tag = Hasher::tag_of(*hash);
                    added.push((*hash, entry));
                }
            }
            let shard = &mut list[group[0].0];
            let hasher = self.hasher;
            len += added.len();
            let (changed, removed) = shard.with(
                |e| group.iter().any(|c| e.is(&c.2)),
                added,
                |e| hasher.hash(e.domain()),
            );
            *shard = changed;
            len -= removed;
        }
        Domains {
            hasher: self.hasher,
            shards,
            len,
        }
    }
}

/// The router's view of the fleet: never changed once made. A change to the
/// fleet makes a new table from the last one, sharing all it did not touch.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// The routing version (route change feed number) this table is at.
    pub version: i64,
    servers: Arc<Servers>,
    /// By server index.
    slots: Arc<[Slot]>,
    domains: Domains,
    names: Arc<Names>,
}

/// The route rows of one domain, as they are gathered for its entry.
#[derive(Debug, Default)]
pub struct DomainRows {
    pub route: Option<DomainRoute>,
    /// Its tenant process's running instances: id and server.
    pub placed: Vec<(String, String)>,
}

impl DomainRows {
    /// Takes one row of the domain.
    pub fn add(&mut self, row: RouteRow) {
        if let Some(p) = row.placed {
            if !self.placed.contains(&p) {
                self.placed.push(p);
            }
        }
        if self.route.is_none() {
            self.route = Some(DomainRoute {
                tenant: row.tenant,
                process: row.process,
                instance_id: row.instance_id,
                home_server: row.home_server,
            });
        }
    }
}

impl RouteTable {
    /// Builds a table from a snapshot of the fleet (tests and tools: `slum
    /// serve` streams the rows, see [`TableBuilder`]). Instances whose stop
    /// is pending take no traffic.
    pub fn build(
        version: i64,
        servers: &[Server],
        tenants: &[Tenant],
        instances: &[Instance],
    ) -> RouteTable {
        let mut builder = TableBuilder::new(&RouteTable::default(), servers, &Default::default());
        let mut running: HashMap<(&str, &str), Vec<&Instance>> = HashMap::new();
        for i in instances
            .iter()
            .filter(|i| i.desired == DesiredState::Running)
        {
            running
                .entry((i.tenant.as_str(), i.process.as_str()))
                .or_default()
                .push(i);
        }
        for t in tenants {
            match running.get(&(t.name.as_str(), t.process.as_str())) {
                Some(placed) => {
                    for i in placed {
                        builder.add(route_row(t, Some(i)).as_ref());
                    }
                }
                None => builder.add(route_row(t, None).as_ref()),
            }
        }
        builder.finish(version)
    }

    /// Number of customer domains routed.
    pub fn domains(&self) -> usize {
        self.domains.len
    }

    /// The upstream of a server.
    pub fn upstream(&self, server_id: &str) -> Option<&Arc<Upstream>> {
        let i = *self.servers.index.get(server_id)?;
        self.slots.get(i as usize)?.upstream.as_ref()
    }

    /// Every upstream.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.slots.iter().filter_map(|s| s.upstream.as_ref())
    }

    /// The slot of server `i`.
    #[inline]
    fn slot(&self, i: u32) -> Option<&Slot> {
        self.slots.get(i as usize)
    }

    /// Where a request for `host` (already normalised) goes.
    #[inline]
    pub fn route(&self, host: &str) -> Decision<'_> {
        self.get(host).unwrap_or(Decision::UnknownHost)
    }

    /// The decision for `host` when it is a routed domain as it stands.
    #[inline]
    pub fn get(&self, host: &str) -> Option<Decision<'_>> {
        Some(self.decide(self.domains.get(host)?))
    }

    /// The decision for an entry, from the states of its servers now: the
    /// domain's own instance if its server is up, else the others on online
    /// servers before those on servers not checked yet, each by instance id.
    /// No allocation, but for a tenant's first requests (a spawn).
    #[inline]
    fn decide<'t>(&'t self, entry: &'t Entry) -> Decision<'t> {
        // Nearly every request: one instance, on a server that takes
        // requests. Only this is inlined into the lookup; the rest is a call.
        if let Targets::One(target) = &entry.targets {
            if let Some(forward) = self.forward_one(entry, target) {
                return forward;
            }
        }
        self.decide_any(entry)
    }

    /// The decision for an entry with one instance, `target`, when its
    /// server takes requests.
    #[inline]
    fn forward_one<'t>(&'t self, entry: &'t Entry, target: &'t Target) -> Option<Decision<'t>> {
        let upstream = self.slot(target.server).and_then(Slot::up)?;
        Some(Decision::Forward {
            primary: Pick {
                upstream,
                entry,
                target,
                names: &self.names,
            },
            fallback: None,
            failover: !entry.own_first,
        })
    }

    /// [`RouteTable::route`] without `decide`'s inlined case (tests check
    /// that the two agree).
    #[cfg(test)]
    pub(crate) fn route_without_shortcut(&self, host: &str) -> Decision<'_> {
        self.domains
            .get(host)
            .map_or(Decision::UnknownHost, |e| self.decide_any(e))
    }

    /// [`RouteTable::decide`] for any entry.
    #[inline(never)]
    fn decide_any<'t>(&'t self, entry: &'t Entry) -> Decision<'t> {
        let pick = |upstream, target| Pick {
            upstream,
            entry,
            target,
            names: &self.names,
        };
        let targets = match &entry.targets {
            Targets::One(target) => {
                return self
                    .forward_one(entry, target)
                    .unwrap_or(Decision::ServerDown(Down { entry, table: self }));
            }
            Targets::Many(targets) => targets,
            &Targets::None { own, home } => {
                return match self.slot(home).and_then(Slot::up).is_some() {
                    true => Decision::Spawn(Box::new(DomainRoute {
                        tenant: entry.tenant().to_owned(),
                        process: self.names.get(entry.process).to_owned(),
                        instance_id: self.names.get(own).to_owned(),
                        home_server: self.servers.id(home).to_owned(),
                    })),
                    false => Decision::ServerDown(Down { entry, table: self }),
                };
            }
        };
        // The best two, by (rank, place).
        let mut best: [Option<(u8, Pick<'t>)>; 2] = [None, None];
        for (place, target) in targets.iter().enumerate() {
            let Some(slot) = self.slot(target.server) else {
                continue;
            };
            let Some(upstream) = slot.up() else {
                continue;
            };
            let rank = match (place == 0 && entry.own_first, slot.usable) {
                (true, _) => 0,
                (false, Usable::Online) => 1,
                (false, _) => 2,
            };
            let pick = pick(upstream, target);
            match best {
                [None, _] => best[0] = Some((rank, pick)),
                [Some((r0, _)), _] if rank < r0 => {
                    best[1] = best[0];
                    best[0] = Some((rank, pick));
                }
                [_, None] => best[1] = Some((rank, pick)),
                [_, Some((r1, _))] if rank < r1 => best[1] = Some((rank, pick)),
                _ => {}
            }
        }
        match best {
            [Some((rank, primary)), fallback] => Decision::Forward {
                primary,
                fallback: fallback.map(|(_, p)| p),
                failover: rank != 0,
            },
            [None, _] => Decision::ServerDown(Down { entry, table: self }),
        }
    }

    /// This table with `server` as it is now (`Err(id)`: deleted), its
    /// requests in flight carried over, `offline` forcing it offline. Its
    /// domains' entries are shared as they are: they name it by index, and
    /// the Host header it is sent is made per request.
    pub fn with_server(
        &self,
        version: i64,
        server: Result<&Server, &str>,
        offline: bool,
    ) -> RouteTable {
        let id = match server {
            Ok(s) => s.id.as_str(),
            Err(id) => id,
        };
        let (servers, i) = match self.servers.index.get(id) {
            Some(&i) => (Arc::clone(&self.servers), i),
            None => {
                let mut servers = (*self.servers).clone();
                let i = servers.index_of(id);
                (Arc::new(servers), i)
            }
        };
        let mut slots = self.slots.to_vec();
        slots.resize(servers.ids.len(), Slot::default());
        let before = std::mem::take(&mut slots[i as usize]).upstream;
        if let Ok(s) = server {
            slots[i as usize] = Slot::of(upstream_of(s, offline, before.as_deref()));
        }
        RouteTable {
            version,
            servers,
            slots: slots.into(),
            domains: self.domains.clone(),
            names: Arc::clone(&self.names),
        }
    }

    /// This table with these domains' entries made again from their rows
    /// (no rows: the domain is gone).
    pub fn with_domains(
        &self,
        version: i64,
        domains: impl IntoIterator<Item = (String, DomainRows)>,
    ) -> RouteTable {
        let mut shared = Shared {
            servers: &self.servers,
            names: &self.names,
            copied_servers: None,
            copied_names: None,
        };
        let mut changes = Vec::new();
        for (domain, rows) in domains {
            let entry = rows
                .route
                .map(|route| entry_of(&domain, route, rows.placed, &mut shared));
            changes.push((domain, entry));
        }
        let (servers, slots) = match shared.copied_servers {
            Some(servers) => {
                let slots = slots_for(&servers, self.slots.to_vec());
                (Arc::new(servers), slots)
            }
            None => (Arc::clone(&self.servers), Arc::clone(&self.slots)),
        };
        RouteTable {
            version,
            servers,
            slots,
            domains: self.domains.with(changes),
            names: shared
                .copied_names
                .map_or_else(|| Arc::clone(&self.names), Arc::new),
        }
    }
}

/// The upstream of `s`, its requests in flight carried over from `before`.
fn upstream_of(s: &Server, offline: bool, before: Option<&Upstream>) -> Upstream {
    let (origin, path_prefix) = split_url(&s.url);
    Upstream {
        server_id: s.id.clone(),
        url: s.url.trim_end_matches('/').into(),
        domain: s.routing_domain(),
        status: match offline {
            true => ServerStatus::Offline,
            false => s.status,
        },
        routing_problem: s.routing_problem.as_deref().map(Arc::from),
        origin,
        path_prefix,
        load: before.map(|b| b.load.clone()).unwrap_or_default(),
    }
}

impl Upstream {
    /// Whether the router sends the server nothing: offline, or with a
    /// routing problem.
    #[inline]
    pub fn is_down(&self) -> bool {
        self.status == ServerStatus::Offline || self.routing_problem.is_some()
    }
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

    fn forward_to(d: Decision) -> (String, String, bool) {
        match d {
            Decision::Forward {
                primary, failover, ..
            } => (
                primary.upstream.server_id.clone(),
                primary.host().unwrap().to_str().unwrap().to_owned(),
                failover,
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
        assert_eq!(t.route("nobody.com"), Decision::UnknownHost);
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
        let Decision::Forward { fallback, .. } = up.route("acme.com") else {
            panic!()
        };
        assert_eq!(fallback.map(|f| f.instance_id()), Some("backup"));
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
        let Decision::ServerDown(down) = both.route("acme.com") else {
            panic!("expected ServerDown")
        };
        assert_eq!(
            (down.tenant(), down.servers()),
            ("acme", vec!["east".to_owned(), "west".to_owned()])
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
        let Decision::Forward { fallback, .. } = t.route("acme.com") else {
            panic!()
        };
        assert!(fallback.is_none(), "never a fallback either");
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
        let running = [inst("acme", "prod", "east")];
        let first = RouteTable::build(1, &[server("east", Online)], &tenants, &running);
        first.upstream("east").unwrap().load.0.fetch_add(2, Relaxed);
        let next = first.with_server(2, Ok(&server("east", Offline)), false);
        let next = next.with_server(2, Ok(&server("west", Online)), false);
        assert_eq!(next.upstream("east").unwrap().load.in_flight(), 2);
        let back = next.with_server(3, Ok(&server("east", Online)), false);
        let Decision::Forward { primary, .. } = back.route("acme.com") else {
            panic!("east is back: {:?}", back.route("acme.com"));
        };
        assert!(
            Arc::ptr_eq(primary.upstream, back.upstream("east").unwrap()),
            "a lookup counts its request on the server's one counter"
        );
        assert_eq!(primary.upstream.load.in_flight(), 2);
        assert_eq!(next.upstream("west").unwrap().load.in_flight(), 0);
        first.upstream("east").unwrap().load.0.fetch_sub(2, Relaxed);
        assert_eq!(
            next.upstream("east").unwrap().load.in_flight(),
            0,
            "a request counted on the old table is given back to the new one"
        );
    }

    fn row(domain: &str, tenant: &str, placed: Option<(&str, &str)>) -> RouteRow {
        RouteRow {
            domain: domain.into(),
            tenant: tenant.into(),
            process: "api".into(),
            instance_id: "prod".into(),
            home_server: "east".into(),
            placed: placed.map(|(i, s)| (i.into(), s.into())),
        }
    }

    #[test]
    fn a_domains_rows_that_come_apart_make_the_same_entry() {
        use ServerStatus::*;
        let servers = [server("east", Online), server("west", Online)];
        let build = |rows: Vec<RouteRow>| {
            let mut b = TableBuilder::new(
                &RouteTable::default(),
                &servers,
                &std::collections::HashSet::new(),
            );
            for r in rows {
                b.add(r.as_ref());
            }
            b.finish(1)
        };
        let together = build(vec![
            row("acme.com", "acme", Some(("prod", "east"))),
            row("acme.com", "acme", Some(("backup", "west"))),
            row("other.com", "other", None),
        ]);
        let apart = build(vec![
            row("acme.com", "acme", Some(("backup", "west"))),
            row("other.com", "other", None),
            row("acme.com", "acme", Some(("prod", "east"))),
        ]);
        for t in [&together, &apart] {
            assert_eq!(t.domains(), 2);
            let Decision::Forward {
                primary, fallback, ..
            } = t.route("acme.com")
            else {
                panic!("expected Forward")
            };
            assert_eq!(
                (primary.upstream.server_id.as_str(), primary.instance_id()),
                ("east", "prod")
            );
            assert_eq!(fallback.map(|f| f.instance_id()), Some("backup"));
        }
    }

    #[test]
    fn domains_removed_and_added_in_place_leave_the_others_found() {
        use ServerStatus::*;
        let servers = [server("east", Online)];
        let mut b = TableBuilder::new(
            &RouteTable::default(),
            &servers,
            &std::collections::HashSet::new(),
        );
        let n = 20_000;
        for i in 0..n {
            b.add(
                row(
                    &format!("d{i}.test"),
                    &format!("t{i}"),
                    Some(("prod", "east")),
                )
                .as_ref(),
            );
        }
        let mut table = b.finish(1);
        // Every third removed, in several changes, and some added again.
        for chunk in (0..n).step_by(3).collect::<Vec<_>>().chunks(500) {
            let gone = chunk
                .iter()
                .map(|i| (format!("d{i}.test"), DomainRows::default()));
            table = table.with_domains(2, gone);
        }
        let back = (0..n).step_by(9).map(|i| {
            let mut rows = DomainRows::default();
            rows.add(row(&format!("d{i}.test"), &format!("t{i}"), None));
            (format!("d{i}.test"), rows)
        });
        table = table.with_domains(3, back);
        let mut expected = 0;
        for i in 0..n {
            let d = format!("d{i}.test");
            match (i % 3 == 0, i % 9 == 0) {
                (false, _) => {
                    expected += 1;
                    assert!(matches!(table.route(&d), Decision::Forward { .. }), "{d}")
                }
                (true, true) => {
                    expected += 1;
                    assert!(matches!(table.route(&d), Decision::Spawn(_)), "{d}")
                }
                (true, false) => assert_eq!(table.route(&d), Decision::UnknownHost, "{d}"),
            }
        }
        assert_eq!(table.domains(), expected);
    }

    #[test]
    fn a_domain_changed_with_known_servers_and_names_shares_them_and_a_new_one_copies() {
        use ServerStatus::*;
        let servers = [server("east", Online), server("west", Online)];
        let first = RouteTable::build(1, &servers, &[tenant("a.com", "a", "east")], &[]);
        let rows = |domain: &str, server: &str, id: &str| {
            let mut rows = DomainRows::default();
            rows.add(RouteRow {
                placed: Some((id.into(), server.into())),
                ..row(domain, "b", None)
            });
            (domain.to_owned(), rows)
        };
        let known = first.with_domains(2, [rows("b.com", "west", "prod")]);
        assert!(Arc::ptr_eq(&first.servers, &known.servers));
        assert!(Arc::ptr_eq(&first.names, &known.names));
        assert_eq!(forward_to(known.route("b.com")).0, "west");

        let new = known.with_domains(3, [rows("c.com", "north", "canary")]);
        assert!(!Arc::ptr_eq(&known.servers, &new.servers));
        assert!(!Arc::ptr_eq(&known.names, &new.names));
        assert!(
            matches!(new.route("c.com"), Decision::ServerDown(_)),
            "a server the table has no upstream for is down"
        );
        assert_eq!(known.servers.ids.len(), 2, "the old table is as it was");
        assert_eq!(forward_to(new.route("b.com")).0, "west");
    }

    #[test]
    fn an_entry_takes_40_bytes_of_its_shard() {
        // What a million domains cost is mostly this times the slots, 2.8 a
        // domain (an empty slot is a `None` of the same size): 112 bytes.
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 40);
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
