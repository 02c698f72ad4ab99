//! The PostgreSQL fleet database, for fleets where several routers (and any
//! number of library users) share one database.
//!
//! The schema (`migrations/postgres`, applied on connect) mirrors the SQLite one
//! table for table and column for column: times as Unix milliseconds, text
//! compared and sorted byte by byte (`COLLATE "C"`), the same checks, keys and
//! references, and the routing version bumped by triggers on the same columns.
//! Errors are mapped to the same [`Error`] kinds with the same messages: a unique
//! violation (23505) is `AlreadyExists`, a foreign key violation (23503) is a
//! missing server on insert or `HasDependents` on delete.
//!
//! What differs is concurrency. SQLite has one writer, so a single
//! `INSERT ... SELECT` checks and reserves capacity atomically; PostgreSQL runs
//! writers side by side, so a reservation is a transaction that first locks the
//! server's row and only then reads its free capacity (see
//! [`Store::reserve_instance`] below): reservations on one server, from any
//! connection of any process, take turns, and none can overbook it. Every other
//! write is a single autocommit statement.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use super::{
    certificate_from_row, certificate_sql, check_reservation, duplicate_instance, event_from_row,
    event_sql, from_millis, incoming_sibling, material, millis, millis_after, pending_stop,
    refused_move, Change, Dependents, EventFilter, RouteChange, RouteKey, RouteRow, RouteRowRef,
    RouteScope, Store, RESPAWN_TENANTS_ON, ROUTE_ROWS,
};
use crate::error::{Error, Kind, Result};
use crate::fleet::certificate::{
    CertificateInfo, CertificateMaterial, Challenges, SecretPem, VerifiedCertificate,
};
use crate::fleet::events::{Event, EventRow};
use crate::fleet::model::{
    ApiToken, DesiredState, FailoverPolicy, Instance, InstanceState, PendingStop, Server,
    ServerStatus, Tenant,
};

mod certificates;
mod events;
mod rows;
mod tokens;

use rows::{
    instance_from_row, postgres_placeholders, server_from_row, tenant_from_row, violation,
    where_clause, BindOpt, Placeholders, INSTANCE_COLUMNS, SERVER_COLUMNS, TENANT_COLUMNS,
};

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections one process keeps to the database at most. Routers hold no
/// connection on the request path, so a handful serves API calls, reconcile and
/// health checks; a fleet of several routers stays far below PostgreSQL's
/// default of 100 connections.
const MAX_CONNECTIONS: u32 = 10;

/// The advisory lock key of the fleet's leader ("slum" in ASCII).
const LEADER_LOCK: i64 = 0x736c_756d;

/// The channel routing changes are notified on (migrations/postgres/0005).
const CHANGES_CHANNEL: &str = "slum_fleet";

/// How long a call waits for a free connection (or for the server to accept a
/// new one) before it fails, like SQLite's busy timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL backend.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl std::fmt::Debug for PostgresStore {
    // The connection options hold the password: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

pub use super::{is_postgres_url, redacted};

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host/db`)
    /// and applies pending migrations. Several processes may connect at once:
    /// the migrator holds an advisory lock while it works.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("slum");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

/// Locks, in the order of their ids, the rows of the servers whose used
/// memory a change of the instance will move (its server, and the target of
/// its move), and returns them as read before the locks. Every write that
/// moves a server's counter takes its server's row first, as reservations
/// do, and only then the instance's: taken the other way round (the
/// instance's row by the statement, the server's by its trigger), a deletion
/// and a reservation of the same key on the same server each wait for the
/// other. The caller checks the instance still has these servers once it
/// holds the locks, and looks again when not. `None`: no such instance.
async fn servers_first(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    tenant: &str,
    instance_id: &str,
) -> Result<Option<(String, Option<String>)>> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT server_id, moving_to FROM instances WHERE tenant = $1 AND instance_id = $2",
    )
    .bind(tenant)
    .bind(instance_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((server, moving_to)) = row else {
        return Ok(None);
    };
    let ids: Vec<&str> = std::iter::once(server.as_str())
        .chain(moving_to.as_deref())
        .collect();
    sqlx::query("SELECT id FROM servers WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(Some((server, moving_to)))
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert_server(&self, s: &Server) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO servers (id, url, region, capacity_mb, token, domain, status, last_seen, created_at, drain, cordoned) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&s.id)
        .bind(&s.url)
        .bind(&s.region)
        .bind(s.capacity_mb)
        .bind(&s.token)
        .bind(&s.domain)
        .bind(s.status.as_str())
        .bind(s.last_seen.map(millis))
        .bind(millis(Utc::now()))
        .bind(s.status == ServerStatus::Draining)
        .bind(s.cordoned)
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if violation(&e) == Some(ErrorKind::UniqueViolation) => {
                Err(Error::already_exists(Kind::Server, &s.id))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_server(&self, id: &str) -> Result<Server> {
        let row = sqlx::query(&format!(
            "SELECT {SERVER_COLUMNS} FROM servers s WHERE s.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found(Kind::Server, id))?;
        server_from_row(&row)
    }

    async fn update_server(&self, s: &Server, with_status: bool) -> Result<()> {
        let res = sqlx::query(
            "UPDATE servers SET url = $1, region = $2, capacity_mb = $3, token = $4, domain = $5, \
             status = CASE WHEN $8 THEN $6 ELSE status END, \
             drain = CASE WHEN $8 THEN $6 = 'draining' ELSE drain END, \
             routing_problem = CASE WHEN url IS DISTINCT FROM $1 OR domain IS DISTINCT FROM $5 \
                                    THEN NULL ELSE routing_problem END \
             WHERE id = $7",
        )
        .bind(&s.url)
        .bind(&s.region)
        .bind(s.capacity_mb)
        .bind(&s.token)
        .bind(&s.domain)
        .bind(s.status.as_str())
        .bind(&s.id)
        .bind(with_status)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(Error::not_found(Kind::Server, &s.id));
        }
        Ok(())
    }

    async fn set_server_routing_problem(&self, id: &str, problem: Option<&str>) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE servers SET routing_problem = $1 \
             WHERE id = $2 AND routing_problem IS DISTINCT FROM $1",
        )
        .bind(problem)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            self.get_server(id).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn set_server_cordoned(&self, id: &str, cordoned: bool) -> Result<bool> {
        let res = sqlx::query("UPDATE servers SET cordoned = $1 WHERE id = $2 AND cordoned <> $1")
            .bind(cordoned)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            self.get_server(id).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn set_server_health(
        &self,
        id: &str,
        expected: ServerStatus,
        status: ServerStatus,
        last_seen: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let res = sqlx::query(
            // A drained server that recovers goes back to draining.
            "UPDATE servers SET status = CASE WHEN $1 = 'online' AND drain THEN 'draining' ELSE $1 END, \
             last_seen = COALESCE($2, last_seen) WHERE id = $3 AND status = $4",
        )
        .bind(status.as_str())
        .bind(last_seen.map(millis))
        .bind(id)
        .bind(expected.as_str())
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            self.get_server(id).await?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn record_servers_seen(
        &self,
        seen: &[(String, ServerStatus)],
        at: DateTime<Utc>,
    ) -> Result<u64> {
        let (ids, statuses): (Vec<&str>, Vec<&str>) =
            seen.iter().map(|(id, s)| (id.as_str(), s.as_str())).unzip();
        let done = sqlx::query(
            "UPDATE servers s SET status = CASE WHEN v.status = 'online' AND s.drain \
                 THEN 'draining' ELSE v.status END, last_seen = $3 \
             FROM UNNEST($1::TEXT[], $2::TEXT[]) AS v(id, status) \
             WHERE s.id = v.id AND s.status = v.status",
        )
        .bind(&ids)
        .bind(&statuses)
        .bind(millis(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn delete_server(&self, id: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await;
        match res {
            Ok(r) if r.rows_affected() == 0 => Err(Error::not_found(Kind::Server, id)),
            Ok(_) => Ok(()),
            Err(e) if violation(&e) == Some(ErrorKind::ForeignKeyViolation) => {
                let d = self.dependents(id).await?;
                Err(Error::HasDependents {
                    kind: Kind::Server,
                    key: id.to_owned(),
                    tenants: d.tenants,
                    instances: d.instances,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn list_servers(&self) -> Result<Vec<Server>> {
        sqlx::query(&format!(
            "SELECT {SERVER_COLUMNS} FROM servers s ORDER BY s.id"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(server_from_row)
        .collect()
    }

    // The LIMIT is written into the statement, not bound, as on SQLite: a
    // generic plan for an unknown LIMIT may sort the whole table rather than
    // walk the key's index. It is a number, so nothing can be injected.
    async fn list_servers_page(&self, after: Option<&str>, limit: i64) -> Result<Vec<Server>> {
        let rows = match after {
            Some(after) => {
                sqlx::query(&format!(
                    "SELECT {SERVER_COLUMNS} FROM servers s WHERE s.id > $1 ORDER BY s.id LIMIT {limit}"
                ))
                .bind(after)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SERVER_COLUMNS} FROM servers s ORDER BY s.id LIMIT {limit}"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(server_from_row).collect()
    }

    async fn dependents(&self, server_id: &str) -> Result<Dependents> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM tenants WHERE server_id = $1) AS tenants, \
                    (SELECT COUNT(*) FROM instances WHERE server_id = $1 OR moving_to = $1) AS instances",
        )
        .bind(server_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(Dependents {
            tenants: row.try_get("tenants")?,
            instances: row.try_get("instances")?,
        })
    }

    async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO tenants (domain, name, server_id, process, instance_id, created_at, failover) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.domain)
        .bind(&t.name)
        .bind(&t.server_id)
        .bind(&t.process)
        .bind(&t.instance_id)
        .bind(millis(Utc::now()))
        .bind(t.failover.as_str())
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if violation(&e) == Some(ErrorKind::UniqueViolation) => {
                Err(Error::already_exists(Kind::Tenant, &t.domain))
            }
            Err(e) if violation(&e) == Some(ErrorKind::ForeignKeyViolation) => {
                Err(Error::not_found(Kind::Server, &t.server_id))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_tenant(&self, domain: &str) -> Result<Tenant> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE domain = $1"
        ))
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found(Kind::Tenant, domain))?;
        tenant_from_row(&row)
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let res = sqlx::query(
            "UPDATE tenants SET name = $1, server_id = $2, process = $3, instance_id = $4, \
             failover = $6 WHERE domain = $5",
        )
        .bind(&t.name)
        .bind(&t.server_id)
        .bind(&t.process)
        .bind(&t.instance_id)
        .bind(&t.domain)
        .bind(t.failover.as_str())
        .execute(&self.pool)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 0 => Err(Error::not_found(Kind::Tenant, &t.domain)),
            Ok(_) => Ok(()),
            Err(e) if violation(&e) == Some(ErrorKind::ForeignKeyViolation) => {
                Err(Error::not_found(Kind::Server, &t.server_id))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_tenant(&self, domain: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM tenants WHERE domain = $1")
            .bind(domain)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(Error::not_found(Kind::Tenant, domain));
        }
        Ok(())
    }

    async fn list_tenants(&self, server_id: Option<&str>) -> Result<Vec<Tenant>> {
        let rows = match server_id {
            Some(id) => {
                sqlx::query(&format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants WHERE server_id = $1 ORDER BY domain"
                ))
                .bind(id)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY domain"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(tenant_from_row).collect()
    }

    async fn list_tenants_page(
        &self,
        server_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Tenant>> {
        // Only the conditions given, each on its index.
        let mut sql = Placeholders::default();
        let mut conditions = Vec::new();
        if server_id.is_some() {
            conditions.push(format!("server_id = {}", sql.next()));
        }
        if after.is_some() {
            conditions.push(format!("domain > {}", sql.next()));
        }
        let sql = format!(
            "SELECT {TENANT_COLUMNS} FROM tenants {} ORDER BY domain LIMIT {limit}",
            where_clause(&conditions),
        );
        let rows = sqlx::query(&sql)
            .bind_opt(server_id)
            .bind_opt(after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn list_tenants_near_down_servers(&self) -> Result<Vec<Tenant>> {
        let down = "SELECT id FROM servers WHERE status = 'offline' OR routing_problem IS NOT NULL";
        sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE server_id IN ({down}) \
             UNION \
             SELECT {TENANT_COLUMNS} FROM tenants WHERE name IN \
                 (SELECT tenant FROM instances WHERE desired = 'running' AND server_id IN ({down})) \
             ORDER BY domain"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(tenant_from_row)
        .collect()
    }

    async fn counts(&self) -> Result<Dependents> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM tenants) AS tenants, \
                    (SELECT COUNT(*) FROM instances) AS instances",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Dependents {
            tenants: row.try_get("tenants")?,
            instances: row.try_get("instances")?,
        })
    }

    async fn reserve_instance(&self, i: &Instance) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Lock the server's row first. Every reservation on this server, from any
        // connection of any process, queues here until the one before it commits
        // or rolls back. The lock does not block readers, nor the foreign key
        // checks of tenants and instances (`NO KEY UPDATE` leaves `KEY SHARE`
        // alone); `update_server` and health writes wait for it.
        //
        // Every change of the server's used memory (the instances' triggers,
        // migration 0011) updates this row, so it waits for this lock too: the
        // row the locking statement returns, which under READ COMMITTED is the
        // newest committed version once the lock is granted, holds a counter
        // that cannot move until this transaction ends.
        let row = sqlx::query(&format!(
            "SELECT {SERVER_COLUMNS} FROM servers s WHERE s.id = $1 FOR NO KEY UPDATE"
        ))
        .bind(&i.server_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found(Kind::Server, &i.server_id))?;
        let incoming = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances \
             WHERE moving_to = $1 AND tenant = $2 AND process = $3"
        ))
        .bind(&i.server_id)
        .bind(&i.tenant)
        .bind(&i.process)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = incoming {
            return Err(incoming_sibling(i, &instance_from_row(&row)?));
        }
        check_reservation(&server_from_row(&row)?, i)?;
        sqlx::query("DELETE FROM pending_stops WHERE server_id = $1 AND name = $2")
            .bind(&i.server_id)
            .bind(i.tenement_name())
            .execute(&mut *tx)
            .await?;
        let res = sqlx::query(
            "INSERT INTO instances (tenant, instance_id, process, server_id, memory_mb, desired, observed, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'running', 'starting', $6)",
        )
        .bind(&i.tenant)
        .bind(&i.instance_id)
        .bind(&i.process)
        .bind(&i.server_id)
        .bind(i.memory_mb)
        .bind(millis(Utc::now()))
        .execute(&mut *tx)
        .await;
        match res {
            Ok(_) => Ok(tx.commit().await?),
            Err(e) if violation(&e) == Some(ErrorKind::UniqueViolation) => {
                tx.rollback().await?;
                Err(duplicate_instance(self, i).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_instance(&self, tenant: &str, instance_id: &str) -> Result<Instance> {
        let row = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = $1 AND instance_id = $2"
        ))
        .bind(tenant)
        .bind(instance_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found(Kind::Instance, format!("{tenant}:{instance_id}")))?;
        instance_from_row(&row)
    }

    async fn list_instances(&self, server_id: Option<&str>) -> Result<Vec<Instance>> {
        let rows = match server_id {
            Some(id) => {
                sqlx::query(&format!(
                    "SELECT {INSTANCE_COLUMNS} FROM instances WHERE server_id = $1 \
                     ORDER BY tenant, instance_id"
                ))
                .bind(id)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY tenant, instance_id"
                ))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(instance_from_row).collect()
    }

    async fn list_instances_page(
        &self,
        server_id: Option<&str>,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<Instance>> {
        let mut sql = Placeholders::default();
        let mut conditions = Vec::new();
        if server_id.is_some() {
            conditions.push(format!("server_id = {}", sql.next()));
        }
        if after.is_some() {
            let (a, b) = (sql.next(), sql.next());
            conditions.push(format!("(tenant, instance_id) > ({a}, {b})"));
        }
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances {} ORDER BY tenant, instance_id LIMIT {limit}",
            where_clause(&conditions),
        );
        let rows = sqlx::query(&sql)
            .bind_opt(server_id)
            .bind_opt(after.map(|a| a.0))
            .bind_opt(after.map(|a| a.1))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(instance_from_row).collect()
    }

    async fn set_instance_desired(
        &self,
        tenant: &str,
        instance_id: &str,
        desired: DesiredState,
    ) -> Result<()> {
        let res =
            sqlx::query("UPDATE instances SET desired = $1 WHERE tenant = $2 AND instance_id = $3")
                .bind(desired.as_str())
                .bind(tenant)
                .bind(instance_id)
                .execute(&self.pool)
                .await?;
        if res.rows_affected() == 0 {
            return Err(Error::not_found(
                Kind::Instance,
                format!("{tenant}:{instance_id}"),
            ));
        }
        Ok(())
    }

    async fn set_instance_observed(
        &self,
        tenant: &str,
        instance_id: &str,
        observed: InstanceState,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let res = sqlx::query(
            "UPDATE instances SET observed = $1, observed_at = $2 \
             WHERE tenant = $3 AND instance_id = $4",
        )
        .bind(observed.as_str())
        .bind(millis(at))
        .bind(tenant)
        .bind(instance_id)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(Error::not_found(
                Kind::Instance,
                format!("{tenant}:{instance_id}"),
            ));
        }
        Ok(())
    }

    async fn delete_instance(&self, tenant: &str, instance_id: &str) -> Result<()> {
        loop {
            let mut tx = self.pool.begin().await?;
            let Some((server, moving_to)) = servers_first(&mut tx, tenant, instance_id).await?
            else {
                return Err(Error::not_found(
                    Kind::Instance,
                    format!("{tenant}:{instance_id}"),
                ));
            };
            let res = sqlx::query(
                "DELETE FROM instances WHERE tenant = $1 AND instance_id = $2 \
                 AND server_id = $3 AND moving_to IS NOT DISTINCT FROM $4",
            )
            .bind(tenant)
            .bind(instance_id)
            .bind(&server)
            .bind(&moving_to)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 1 {
                tx.commit().await?;
                return Ok(());
            }
            // Moved or gone between the look and the locks: look again.
            tx.rollback().await?;
        }
    }

    async fn list_instances_of_tenant(&self, tenant: &str) -> Result<Vec<Instance>> {
        sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = $1 ORDER BY instance_id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(instance_from_row)
        .collect()
    }

    async fn domains_of_tenants(&self, names: &[String]) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT name, process, domain FROM tenants WHERE name = ANY($1) ORDER BY domain",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    }

    async fn list_instances_touching(&self, server_id: &str) -> Result<Vec<Instance>> {
        sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE server_id = $1 OR moving_to = $1 \
             ORDER BY tenant, instance_id"
        ))
        .bind(server_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(instance_from_row)
        .collect()
    }

    async fn respawn_records(&self, server_id: &str) -> Result<(Vec<Tenant>, Vec<Instance>)> {
        let on = RESPAWN_TENANTS_ON;
        let tenants = sqlx::query(&format!(
            "SELECT t.domain, t.name, t.server_id, t.process, t.instance_id, t.failover, \
             t.created_at {on} ORDER BY t.domain"
        ))
        .bind(server_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(tenant_from_row)
        .collect::<Result<Vec<_>>>()?;
        let instances = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances \
             WHERE tenant IN (SELECT i.tenant {on}) ORDER BY tenant, instance_id"
        ))
        .bind(server_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(instance_from_row)
        .collect::<Result<Vec<_>>>()?;
        Ok((tenants, instances))
    }

    async fn set_instances_observed(
        &self,
        observed: &[(String, String, InstanceState)],
        at: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tenants = Vec::with_capacity(observed.len());
        let mut ids = Vec::with_capacity(observed.len());
        let mut states = Vec::with_capacity(observed.len());
        for (tenant, id, state) in observed {
            tenants.push(tenant.as_str());
            ids.push(id.as_str());
            states.push(state.as_str());
        }
        let done = sqlx::query(
            "UPDATE instances i SET observed = v.observed, observed_at = $4 \
             FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[]) AS v(tenant, instance_id, observed) \
             WHERE i.tenant = v.tenant AND i.instance_id = v.instance_id",
        )
        .bind(&tenants)
        .bind(&ids)
        .bind(&states)
        .bind(millis(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn begin_move(&self, tenant: &str, instance_id: &str, target: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // As in reserve_instance: the target's row lock queues every reservation
        // on it, then a fresh statement reads what is committed.
        let locked = sqlx::query("SELECT id FROM servers WHERE id = $1 FOR NO KEY UPDATE")
            .bind(target)
            .fetch_optional(&mut *tx)
            .await?;
        if locked.is_none() {
            return Err(Error::not_found(Kind::Server, target));
        }
        let res = sqlx::query(
            "UPDATE instances SET moving_to = $3 \
             WHERE tenant = $1 AND instance_id = $2 AND moving_to IS NULL \
               AND desired = 'running' AND server_id <> $3 \
               AND EXISTS (SELECT 1 FROM servers t WHERE t.id = $3 \
                   AND t.status NOT IN ('offline', 'draining') AND NOT t.cordoned \
                   AND t.capacity_mb - t.used_mb >= instances.memory_mb) \
               AND NOT EXISTS (SELECT 1 FROM instances o WHERE o.tenant = $1 \
                   AND o.process = instances.process AND (o.server_id = $3 OR o.moving_to = $3))",
        )
        .bind(tenant)
        .bind(instance_id)
        .bind(target)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 1 {
            tx.commit().await?;
            Ok(())
        } else {
            tx.rollback().await?;
            Err(refused_move(self, tenant, instance_id, target).await)
        }
    }

    async fn abort_move(&self, tenant: &str, instance_id: &str) -> Result<()> {
        loop {
            let mut tx = self.pool.begin().await?;
            let Some((_, Some(target))) = servers_first(&mut tx, tenant, instance_id).await? else {
                // Gone, or not moving: nothing is reserved.
                return Ok(());
            };
            let res = sqlx::query(
                "UPDATE instances SET moving_to = NULL \
                 WHERE tenant = $1 AND instance_id = $2 AND moving_to = $3",
            )
            .bind(tenant)
            .bind(instance_id)
            .bind(&target)
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 1 {
                tx.commit().await?;
                return Ok(());
            }
            tx.rollback().await?;
        }
    }

    async fn finish_move(&self, tenant: &str, instance_id: &str, grace: Duration) -> Result<()> {
        let (mut tx, row) = loop {
            let mut tx = self.pool.begin().await?;
            let Some(locked) = servers_first(&mut tx, tenant, instance_id).await? else {
                return Err(Error::not_found(
                    Kind::Instance,
                    format!("{tenant}:{instance_id}"),
                ));
            };
            let row = sqlx::query(
                "SELECT server_id, moving_to, process FROM instances \
                 WHERE tenant = $1 AND instance_id = $2 FOR UPDATE",
            )
            .bind(tenant)
            .bind(instance_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Err(Error::not_found(
                    Kind::Instance,
                    format!("{tenant}:{instance_id}"),
                ));
            };
            let now = (
                row.try_get::<String, _>("server_id")?,
                row.try_get::<Option<String>, _>("moving_to")?,
            );
            if now == locked {
                break (tx, row);
            }
            // Changed between the look and the locks: look again.
            tx.rollback().await?;
        };
        let from: String = row.try_get("server_id")?;
        let process: String = row.try_get("process")?;
        let Some(to) = row.try_get::<Option<String>, _>("moving_to")? else {
            return Err(Error::invalid(
                "instance",
                format!("'{tenant}:{instance_id}' is not moving"),
            ));
        };
        // The old copy's tenement name (`Instance::tenement_name`).
        let name = format!("{process}:{tenant}");
        sqlx::query(
            "INSERT INTO pending_stops (server_id, name, created_at, stop_after) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (server_id, name) DO UPDATE SET stop_after = EXCLUDED.stop_after",
        )
        .bind(&from)
        .bind(&name)
        .bind(millis(Utc::now()))
        .bind(millis_after(grace))
        .execute(&mut *tx)
        .await?;
        // An old copy of this name still pending on the target is the instance
        // that now lives there: it must not be stopped.
        sqlx::query("DELETE FROM pending_stops WHERE server_id = $1 AND name = $2")
            .bind(&to)
            .bind(&name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE tenants SET server_id = $3 WHERE name = $1 AND instance_id = $2 AND process = $4",
        )
        .bind(tenant)
        .bind(instance_id)
        .bind(&to)
        .bind(&process)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE instances SET server_id = moving_to, moving_to = NULL \
             WHERE tenant = $1 AND instance_id = $2",
        )
        .bind(tenant)
        .bind(instance_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_pending_stops(&self) -> Result<Vec<PendingStop>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT server_id, name, stop_after FROM pending_stops ORDER BY server_id, name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(pending_stop).collect())
    }

    async fn delete_pending_stop(&self, server_id: &str, name: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM pending_stops WHERE server_id = $1 AND name = $2")
            .bind(server_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    async fn add_pending_stop(&self, server_id: &str, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO pending_stops (server_id, name, created_at, stop_after) \
             VALUES ($1, $2, $3, $3) ON CONFLICT DO NOTHING",
        )
        .bind(server_id)
        .bind(name)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn follow_changes(&self, changes: tokio::sync::mpsc::Sender<Change>) -> Result<()> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        loop {
            // `None`: the connection broke; the next call reconnects and listens
            // again, and whatever was notified meanwhile is lost.
            let signal = match listener.try_recv().await? {
                Some(_) => Change::Changed,
                None => Change::Resync,
            };
            if changes.send(signal).await.is_err() {
                return Ok(());
            }
        }
    }

    async fn lead(&self, leading: tokio::sync::watch::Sender<bool>) -> Result<()> {
        // A session of its own: the lock lives exactly as long as it does.
        let mut conn = self.pool.acquire().await?.detach();
        let result = async {
            loop {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(LEADER_LOCK)
                    .fetch_one(&mut conn)
                    .await?;
                if got {
                    leading.send_replace(true);
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        tokio::time::timeout(
                            Duration::from_secs(3),
                            sqlx::query("SELECT 1").execute(&mut conn),
                        )
                        .await
                        .map_err(|_| sqlx::Error::PoolTimedOut)??;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        .await;
        leading.send_replace(false);
        result
    }

    async fn fleet_version(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT version FROM fleet_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn route_changes_after(&self, after: i64, limit: i64) -> Result<Vec<RouteChange>> {
        let rows = sqlx::query(
            "SELECT seq, kind, key FROM route_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RouteChange {
                    seq: r.try_get(0)?,
                    key: RouteKey::from_row(&r.try_get::<String, _>(1)?, r.try_get(2)?)?,
                })
            })
            .collect()
    }

    async fn trim_route_changes(&self, keep: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM route_changes \
             WHERE seq <= (SELECT version FROM fleet_version WHERE id = 1) - $1",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn route_rows(&self, scope: RouteScope<'_>) -> Result<Vec<RouteRow>> {
        let (filter, key) = match scope {
            RouteScope::Domain(d) => ("t.domain", d),
            RouteScope::Tenant(t) => ("t.name", t),
        };
        let rows = sqlx::query(&format!("{ROUTE_ROWS} WHERE {filter} = $1"))
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok(RouteRowRef::parse(row.try_get(0)?)?.to_owned()))
            .collect()
    }

    async fn for_each_route_row(
        &self,
        each: &mut (dyn for<'r> FnMut(RouteRowRef<'r>) + Send),
    ) -> Result<()> {
        use futures::TryStreamExt;
        let mut rows = sqlx::query(ROUTE_ROWS).fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            each(RouteRowRef::parse(row.try_get(0)?)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_told_apart_and_passwords_kept_out_of_logs() {
        assert!(is_postgres_url("postgres://db/slum"));
        assert!(is_postgres_url("postgresql://u@db/slum"));
        assert!(!is_postgres_url("slum.db"));
        assert!(!is_postgres_url("/var/lib/postgres://x"));
        assert_eq!(
            redacted("postgres://slum:hunter2@db:5432/slum?sslmode=require"),
            "postgres://slum:***@db:5432/slum?sslmode=require"
        );
        assert_eq!(
            redacted("postgres://slum@db/slum"),
            "postgres://slum@db/slum"
        );
        assert_eq!(redacted("/var/lib/slum.db"), "/var/lib/slum.db");
        assert!(!redacted("postgres://u:hunter2@[::1/x").contains("hunter2"));
    }
}
