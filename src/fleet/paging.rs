//! Paged lists: at most a page of records in key order, after a key, so that
//! listing a fleet of a million domains costs a page, not the fleet. Each page
//! is one keyset query (`WHERE key > after ORDER BY key LIMIT n`) on an index,
//! on both backends, so it costs the same wherever it starts, and a record
//! added or removed between pages never makes another one be skipped or shown
//! twice: a walk sees every record that exists from its start to its end
//! exactly once, in key order (and those added behind the cursor meanwhile
//! not at all).

use crate::error::{Error, Result};
use crate::fleet::db::FleetDb;
use crate::fleet::model::{Instance, Server, Tenant};
use crate::fleet::validation;

/// Records in a page when the caller does not say.
pub const DEFAULT_PAGE_LIMIT: usize = 1000;
/// The most records a page may hold.
pub const MAX_PAGE_LIMIT: usize = 10_000;

/// A page of records, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The key of the last record when more follow it: pass it as `after`
    /// for the next page. `None` on the last page.
    pub next: Option<String>,
}

/// Which page: at most `limit` records (1 to [`MAX_PAGE_LIMIT`]), those after
/// the key `after` (from the first without).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub after: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            limit: DEFAULT_PAGE_LIMIT,
            after: None,
        }
    }
}

impl PageRequest {
    /// The first page of `limit` records.
    pub fn first(limit: usize) -> PageRequest {
        PageRequest { limit, after: None }
    }

    /// The page of `limit` records after the key `after`.
    pub fn after(limit: usize, after: impl Into<String>) -> PageRequest {
        PageRequest {
            limit,
            after: Some(after.into()),
        }
    }

    /// The limit, checked, and the query's `LIMIT`: one more than asked, to
    /// know whether more follow without another query.
    pub(crate) fn fetch_limit(&self) -> Result<i64> {
        if !(1..=MAX_PAGE_LIMIT).contains(&self.limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be 1 to {MAX_PAGE_LIMIT}, not {}", self.limit),
            ));
        }
        // At most MAX_PAGE_LIMIT + 1: fits.
        Ok(i64::try_from(self.limit).unwrap_or(i64::MAX) + 1)
    }

    /// `after`, if any, checked with `check` (which names the field `after`).
    pub(crate) fn after_key<K>(&self, check: impl FnOnce(&str) -> Result<K>) -> Result<Option<K>> {
        match self.after.as_deref() {
            None => Ok(None),
            Some("") => Err(Error::invalid(
                "after",
                "is empty; leave it out to start from the first record",
            )),
            Some(after) => check(after).map(Some),
        }
    }
}

/// The page of `items` (at most `limit + 1` rows fetched), and its `next`.
pub(crate) fn page<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(key)
    } else {
        None
    };
    Page { items, next }
}

/// An instance key `tenant:instance_id`, as `after`.
fn instance_key(after: &str) -> Result<(String, String)> {
    validation::instance_key(after).map_err(|e| match e {
        Error::Invalid { reason, .. } => Error::invalid(
            "after",
            format!("must be an instance key, tenant:instance_id: {reason}"),
        ),
        other => other,
    })
}

impl FleetDb {
    /// A page of the servers with their used capacity, by id.
    pub async fn list_servers_page(&self, page_req: &PageRequest) -> Result<Page<Server>> {
        let limit = page_req.fetch_limit()?;
        let after =
            page_req.after_key(|a| validation::dns_label("after", a).map(|()| a.to_owned()))?;
        let rows = self
            .store
            .list_servers_page(after.as_deref(), limit)
            .await?;
        Ok(page(rows, page_req.limit, |s| s.id.clone()))
    }

    /// A page of the tenants, by domain; only those whose home is
    /// `server_id` when given (`NotFound` when that server does not exist).
    pub async fn list_tenants_page(
        &self,
        server_id: Option<&str>,
        page_req: &PageRequest,
    ) -> Result<Page<Tenant>> {
        let limit = page_req.fetch_limit()?;
        let after = page_req.after_key(|a| validation::domain("after", a))?;
        if let Some(id) = server_id {
            self.store.get_server(id).await?;
        }
        let rows = self
            .store
            .list_tenants_page(server_id, after.as_deref(), limit)
            .await?;
        Ok(page(rows, page_req.limit, |t| t.domain.clone()))
    }

    /// A page of the instance records (no server is asked), by key; only those
    /// on `server_id` when given (`NotFound` when that server does not exist).
    pub async fn list_instance_records_page(
        &self,
        server_id: Option<&str>,
        page_req: &PageRequest,
    ) -> Result<Page<Instance>> {
        let limit = page_req.fetch_limit()?;
        let after = page_req.after_key(instance_key)?;
        if let Some(id) = server_id {
            self.store.get_server(id).await?;
        }
        let rows = self
            .store
            .list_instances_page(
                server_id,
                after.as_ref().map(|(t, i)| (t.as_str(), i.as_str())),
                limit,
            )
            .await?;
        Ok(page(rows, page_req.limit, Instance::key))
    }

    /// How many tenants and instance records the fleet holds, counted by the
    /// database.
    pub async fn count_records(&self) -> Result<crate::fleet::store::Dependents> {
        self.store.counts().await
    }

    /// The tenants that may be down now: those homed on a server that is
    /// offline or has a routing problem, and those with a running instance on
    /// one, by domain. Reads only what such servers hold.
    pub async fn list_tenants_near_down_servers(&self) -> Result<Vec<Tenant>> {
        self.store.list_tenants_near_down_servers().await
    }
}
