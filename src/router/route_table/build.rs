//! Building a route table: whole from the rows the database streams
//! ([`TableBuilder`]), or a domain's entry from its rows for a table made
//! from the last one; the servers and names an entry names interned as they
//! are read.

use std::sync::Arc;

use super::*;

/// A shard while a table is built: a domain's rows that come apart find
/// its entry and add to it.
#[derive(Debug, Default)]
struct Building(hashbrown::HashTable<Entry>);

impl Building {
    #[inline]
    fn find(&self, hash: u64, domain: &str) -> Option<&Entry> {
        self.0.find(hash, |e| e.is(domain))
    }

    /// Sets `entry` for its domain; says whether it is a new one (1) or
    /// replaced one (0).
    fn put(&mut self, hasher: &Hasher, hash: u64, entry: Entry) -> usize {
        match self.0.find_entry(hash, |e| e.is(entry.domain())) {
            Ok(mut slot) => {
                *slot.get_mut() = entry;
                0
            }
            Err(_) => {
                self.0
                    .insert_unique(hash, entry, |e| hasher.hash(e.domain()));
                1
            }
        }
    }

    /// The shard of its entries.
    fn finish(self, hasher: &Hasher) -> Shard {
        FlatTable::build(self.0.into_iter().map(|mut e| {
            let hash = hasher.hash(e.domain());
            e.tag = Hasher::tag_of(hash);
            (hash, e)
        }))
    }
}

/// Where the servers and names of an entry get their indexes.
pub(super) trait Intern {
    fn server(&mut self, id: &str) -> u32;
    fn name(&mut self, name: &str) -> u32;
    /// The names as they stand now.
    fn names(&self) -> &Names;
}

/// A builder's own indexes, added to in place.
struct Owned<'t> {
    servers: &'t mut Servers,
    names: &'t mut Names,
}

impl Intern for Owned<'_> {
    fn server(&mut self, id: &str) -> u32 {
        self.servers.index_of(id)
    }

    fn name(&mut self, name: &str) -> u32 {
        self.names.add(name)
    }

    fn names(&self) -> &Names {
        self.names
    }
}

/// A table's indexes, shared until a server or name they lack must be added,
/// then copied once. A domain's change usually names only servers and names
/// the table knows: a copy of a thousand servers' index each change would be
/// most of what it allocates.
pub(super) struct Shared<'t> {
    pub(super) servers: &'t Servers,
    pub(super) names: &'t Names,
    pub(super) copied_servers: Option<Servers>,
    pub(super) copied_names: Option<Names>,
}

impl Intern for Shared<'_> {
    fn server(&mut self, id: &str) -> u32 {
        match (&mut self.copied_servers, self.servers.index.get(id)) {
            (Some(copy), _) => copy.index_of(id),
            (None, Some(&i)) => i,
            (None, None) => self
                .copied_servers
                .insert(self.servers.clone())
                .index_of(id),
        }
    }

    fn name(&mut self, name: &str) -> u32 {
        match (&mut self.copied_names, self.names.find(name)) {
            (Some(copy), _) => copy.add(name),
            (None, Some(i)) => i,
            (None, None) => self.copied_names.insert(self.names.clone()).add(name),
        }
    }

    fn names(&self) -> &Names {
        self.copied_names.as_ref().unwrap_or(self.names)
    }
}

/// A domain's entry from its route and its tenant process's running
/// instances (id, server).
pub(super) fn entry_of(
    domain: &str,
    route: DomainRoute,
    placed: Vec<(String, String)>,
    interned: &mut impl Intern,
) -> Entry {
    let mut run = Run::new(
        RouteRowRef {
            domain,
            tenant: &route.tenant,
            process: &route.process,
            instance_id: &route.instance_id,
            home_server: &route.home_server,
            placed: None,
        },
        interned,
        Scratch::default(),
    );
    for (instance_id, server_id) in &placed {
        run.place(Some((instance_id, server_id)), interned);
    }
    run.into_entry(interned.names()).0
}

/// What a domain's entry is gathered in, handed by a builder from one
/// domain to the next (so that a million domains do not each allocate them).
#[derive(Debug, Default)]
struct Scratch {
    /// The domain, then its tenant's name.
    names: String,
    /// Its tenant process's running instances, each once.
    placed: Vec<Target>,
}

/// A domain's entry as its rows come, its servers and names interned as
/// they are read.
struct Run {
    scratch: Scratch,
    domain_len: u16,
    process: u32,
    own: u32,
    home: u32,
}

impl Run {
    /// The entry of `row`'s domain as far as `row` tells it, gathered in
    /// `scratch`.
    fn new(row: RouteRowRef<'_>, interned: &mut impl Intern, mut scratch: Scratch) -> Run {
        scratch.names.clear();
        scratch.names.push_str(row.domain);
        scratch.names.push_str(row.tenant);
        scratch.placed.clear();
        let mut run = Run {
            scratch,
            // Longer than any host the router is asked for (253 bytes at
            // most): such a row matches no request whatever is kept of it.
            domain_len: u16::try_from(row.domain.len()).unwrap_or(u16::MAX),
            process: interned.name(row.process),
            own: interned.name(row.instance_id),
            home: interned.server(row.home_server),
        };
        run.place(row.placed, interned);
        run
    }

    fn domain(&self) -> &str {
        self.scratch
            .names
            .get(..usize::from(self.domain_len))
            .unwrap_or("")
    }

    /// Takes a running instance (id, server) of the domain's tenant process.
    fn place(&mut self, placed: Option<(&str, &str)>, interned: &mut impl Intern) {
        if let Some((instance_id, server_id)) = placed {
            let target = Target {
                server: interned.server(server_id),
                instance_id: interned.name(instance_id),
            };
            if !self.scratch.placed.contains(&target) {
                self.scratch.placed.push(target);
            }
        }
    }

    /// The entry: the domain's own instance first when it runs, the others
    /// by instance id; and the scratch, for the next domain.
    fn into_entry(mut self, names: &Names) -> (Entry, Scratch) {
        let own = self.own;
        let placed = &mut self.scratch.placed;
        placed.sort_by(|a, b| {
            (a.instance_id != own)
                .cmp(&(b.instance_id != own))
                .then_with(|| names.get(a.instance_id).cmp(names.get(b.instance_id)))
        });
        let own_first = placed.first().is_some_and(|t| t.instance_id == own);
        let targets = match placed[..] {
            [] => Targets::None {
                own,
                home: self.home,
            },
            [one] => Targets::One(one),
            ref many => Targets::Many(Arc::new(many.into())),
        };
        let entry = Entry {
            names: Arc::from(self.scratch.names.as_str()),
            domain_len: self.domain_len,
            process: self.process,
            own_first,
            // Set where the entry is put in its shard, from the hash.
            tag: 0,
            targets,
        };
        (entry, self.scratch)
    }
}

pub(super) fn route_row(t: &Tenant, placed: Option<&Instance>) -> RouteRow {
    RouteRow {
        domain: t.domain.clone(),
        tenant: t.name.clone(),
        process: t.process.clone(),
        instance_id: t.instance_id.clone(),
        home_server: t.server_id.clone(),
        placed: placed.map(|i| (i.instance_id.clone(), i.server_id.clone())),
    }
}

/// Builds a whole table from route rows as they come. A domain's rows
/// usually come together (a join driven by the tenants): each run is made
/// into its entry as soon as it ends, so the fleet is never held twice; a
/// domain whose rows come apart has its entry made again with the late ones.
pub struct TableBuilder {
    servers: Servers,
    slots: Vec<Slot>,
    names: Names,
    hasher: Hasher,
    shards: Box<[Building; SHARDS]>,
    len: usize,
    /// The domain whose rows are coming now.
    run: Option<Run>,
    /// What a run gathers its entry in, between runs.
    scratch: Scratch,
}

impl TableBuilder {
    /// A builder over `servers` (those in `offline` taken as offline), their
    /// indexes and requests in flight carried over from `previous`.
    pub fn new(
        previous: &RouteTable,
        servers: &[Server],
        offline: &std::collections::HashSet<String>,
    ) -> TableBuilder {
        let mut table = (*previous.servers).clone();
        let mut slots = Vec::new();
        for s in servers {
            let i = table.index_of(&s.id) as usize;
            let before = previous.slot(i as u32).and_then(|s| s.upstream.as_deref());
            if slots.len() <= i {
                slots.resize(i + 1, Slot::default());
            }
            slots[i] = Slot::of(upstream_of(s, offline.contains(&s.id), before));
        }
        TableBuilder {
            servers: table,
            slots,
            names: Names::default(),
            hasher: previous.domains.hasher,
            shards: Box::new(std::array::from_fn(|_| Building::default())),
            len: 0,
            run: None,
            scratch: Scratch::default(),
        }
    }

    /// Takes one route row.
    pub fn add(&mut self, row: RouteRowRef<'_>) {
        let mut owned = Owned {
            servers: &mut self.servers,
            names: &mut self.names,
        };
        match &mut self.run {
            Some(run) if run.domain() == row.domain => run.place(row.placed, &mut owned),
            _ => {
                let run = Run::new(row, &mut owned, std::mem::take(&mut self.scratch));
                if let Some(ended) = self.run.replace(run) {
                    self.put(ended);
                }
            }
        }
    }

    /// Makes a domain's entry from its rows, with those that came before.
    fn put(&mut self, mut run: Run) {
        let hash = self.hasher.hash(run.domain());
        let shard = &mut self.shards[Hasher::shard_of(hash)];
        if let Some(earlier) = shard.find(hash, run.domain()) {
            for t in earlier.targets.as_slice() {
                if !run.scratch.placed.contains(t) {
                    run.scratch.placed.push(*t);
                }
            }
        }
        let (entry, scratch) = run.into_entry(&self.names);
        self.scratch = scratch;
        self.len += shard.put(&self.hasher, hash, entry);
    }

    pub fn finish(mut self, version: i64) -> RouteTable {
        if let Some(run) = self.run.take() {
            self.put(run);
        }
        let (hasher, mut building) = (self.hasher, self.shards);
        RouteTable {
            version,
            slots: slots_for(&self.servers, self.slots),
            servers: Arc::new(self.servers),
            domains: Domains {
                hasher,
                shards: Arc::new(std::array::from_fn(|i| {
                    std::mem::take(&mut building[i]).finish(&hasher)
                })),
                len: self.len,
            },
            names: Arc::new(self.names),
        }
    }
}
