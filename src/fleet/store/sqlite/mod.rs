//! The embedded SQLite fleet database, slum's default.
//!
//! WAL journal (readers never wait for the writer), foreign keys on for every
//! connection, a busy timeout so concurrent writers queue instead of failing, and
//! every write a single autocommit statement, so no transaction ever has to upgrade
//! a read lock (the case a busy timeout cannot help with). `synchronous = NORMAL`
//! in WAL mode keeps every committed write across a crash or `kill -9` of the
//! process; only a power loss can take the last commits (never corrupting the file).
//!
//! The WAL is copied back into the file (checkpointed) by a task of the store's
//! own, every second, never by a commit: SQLite's automatic checkpoint runs in
//! the commit that fills 1,000 pages, and at a million domains that commit was
//! the slowest route changes' (p99 of a `tenant add` 9.5 ms against 2.8 ms
//! without it, scripts/bench-scale.sh).
//!
//! The file holds each server's tenement admin token in clear, so slum creates
//! it readable and writable by its owner only (0600) before SQLite opens it;
//! SQLite gives the `-wal` and `-shm` files it creates beside it the main file's
//! mode. An existing file is left as the operator set it, with a warning when
//! others may read it.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::error::ErrorKind;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;

use super::{
    certificate_from_row, certificate_sql, check_reservation, duplicate_instance, event_from_row,
    event_sql, from_millis, incoming_sibling, insufficient_capacity, material, millis,
    millis_after, pending_stop, refused_move, sqlite_placeholders, Dependents, EventFilter,
    RouteChange, RouteKey, RouteRow, RouteRowRef, RouteScope, Store, RESPAWN_TENANTS_ON,
    ROUTE_ROWS,
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
mod checkpoint;
mod events;
mod rows;
mod tokens;

use checkpoint::AbortOnDrop;
use rows::{
    instance_from_row, instances_from_json, server_from_row, tenant_from_row, violation,
    where_clause, BindOpt, INSTANCE_COLUMNS, SERVER_COLUMNS, TENANT_COLUMNS,
};

/// Rows a batched write takes in one statement (its rows bound as one JSON
/// array, read back with `json_each`): a statement holds the writer for a
/// few milliseconds at most.
const WRITE_BATCH: usize = 500;

pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Stops the checkpoints when the last clone of the store goes.
    _checkpoints: Arc<AbortOnDrop>,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        create_private(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // Checkpoints are the store's task's (see the module's comment).
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            // A local file does not go stale: the ping before each acquire only
            // costs thread round trips (measured: about half the context switches
            // of a lookup).
            .test_before_acquire(false)
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        let checkpoints = checkpoint::start(pool.clone());
        Ok(SqliteStore {
            pool,
            _checkpoints: Arc::new(checkpoints),
        })
    }

    /// Runs `sql` once a [`WRITE_BATCH`] of `rows`, each batch bound as `?1`
    /// (a JSON array of the rows, read with `json_each`) and `at` as `?2`
    /// (Unix milliseconds); returns the rows it changed.
    async fn update_batched<T: serde::Serialize>(
        &self,
        sql: &str,
        rows: &[T],
        at: DateTime<Utc>,
    ) -> Result<u64> {
        let mut written = 0;
        for batch in rows.chunks(WRITE_BATCH) {
            let json = serde_json::to_string(batch)
                .map_err(|e| Error::Database(sqlx::Error::Encode(Box::new(e))))?;
            written += sqlx::query(sql)
                .bind(json)
                .bind(millis(at))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(written)
    }
}

/// Creates the database file with mode 0600 when it does not exist (SQLite
/// would create it 0644, less the umask, and its -wal and -shm files alike);
/// warns when an existing one is open to group or others.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if meta.is_file() && mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{mode:o}"),
                        "the fleet database holds tenement admin tokens and others may read it: chmod 600 it");
                }
            }
            Ok(())
        }
        Err(e) => Err(Error::Database(sqlx::Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot create {}: {e}", path.display()),
        )))),
    }
}

impl SqliteStore {
    /// Explains why a reservation inserted nothing: the server is missing,
    /// unusable, or full.
    async fn refused_reservation(&self, instance: &Instance) -> Error {
        if let Ok(all) = self.list_instances_of_tenant(&instance.tenant).await {
            if let Some(o) = all.iter().find(|o| {
                o.moving_to.as_deref() == Some(instance.server_id.as_str())
                    && o.process == instance.process
            }) {
                return incoming_sibling(instance, o);
            }
        }
        match self.get_server(&instance.server_id).await {
            Ok(server) => match check_reservation(&server, instance) {
                Err(e) => e,
                // It fits now: it did not when the statement ran.
                Ok(()) => insufficient_capacity(&server, instance),
            },
            Err(e) => e,
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_server(&self, s: &Server) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO servers (id, url, region, capacity_mb, token, domain, status, last_seen, created_at, drain, cordoned) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT {SERVER_COLUMNS} FROM servers s WHERE s.id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found(Kind::Server, id))?;
        server_from_row(&row)
    }

    async fn update_server(&self, s: &Server, with_status: bool) -> Result<()> {
        let res = sqlx::query(
            "UPDATE servers SET url = ?1, region = ?2, capacity_mb = ?3, token = ?4, domain = ?5, \
             status = CASE WHEN ?6 THEN ?7 ELSE status END, \
             drain = CASE WHEN ?6 THEN ?7 = 'draining' ELSE drain END, \
             routing_problem = CASE WHEN url IS NOT ?1 OR domain IS NOT ?5 THEN NULL \
                                    ELSE routing_problem END \
             WHERE id = ?8",
        )
        .bind(&s.url)
        .bind(&s.region)
        .bind(s.capacity_mb)
        .bind(&s.token)
        .bind(&s.domain)
        .bind(with_status)
        .bind(s.status.as_str())
        .bind(&s.id)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(Error::not_found(Kind::Server, &s.id));
        }
        Ok(())
    }

    async fn set_server_routing_problem(&self, id: &str, problem: Option<&str>) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE servers SET routing_problem = ?1 WHERE id = ?2 AND routing_problem IS NOT ?1",
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
        let res = sqlx::query("UPDATE servers SET cordoned = ?1 WHERE id = ?2 AND cordoned <> ?1")
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
            "UPDATE servers SET status = CASE WHEN ?1 = 'online' AND drain THEN 'draining' ELSE ?1 END, \
             last_seen = COALESCE(?2, last_seen) WHERE id = ?3 AND status = ?4",
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
        // A statement a batch, its rows as JSON: the writer is held for one
        // statement, not for a round trip a server.
        let rows: Vec<(&str, &str)> = seen
            .iter()
            .map(|(id, status)| (id.as_str(), status.as_str()))
            .collect();
        self.update_batched(
            "UPDATE servers SET status = CASE WHEN v.status = 'online' AND servers.drain \
                 THEN 'draining' ELSE v.status END, last_seen = ?2 \
             FROM (SELECT value->>0 AS id, value->>1 AS status FROM json_each(?1)) AS v \
             WHERE servers.id = v.id AND servers.status = v.status",
            &rows,
            at,
        )
        .await
    }

    async fn delete_server(&self, id: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM servers WHERE id = ?")
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

    // The LIMIT is written into the statement, not bound: knowing it is small,
    // the planner walks the key's index rather than sorting the whole table
    // (SQLite 3.46 did that for a bound LIMIT: 130 ms a page at 100,000
    // instances). It is a number, so nothing can be injected.
    async fn list_servers_page(&self, after: Option<&str>, limit: i64) -> Result<Vec<Server>> {
        let rows = match after {
            Some(after) => {
                sqlx::query(&format!(
                "SELECT {SERVER_COLUMNS} FROM servers s WHERE s.id > ? ORDER BY s.id LIMIT {limit}"
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
            "SELECT (SELECT COUNT(*) FROM tenants WHERE server_id = ?1) AS tenants, \
                    (SELECT COUNT(*) FROM instances WHERE server_id = ?1 OR moving_to = ?1) AS instances",
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
            "INSERT INTO tenants (domain, name, server_id, process, instance_id, failover, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&t.domain)
        .bind(&t.name)
        .bind(&t.server_id)
        .bind(&t.process)
        .bind(&t.instance_id)
        .bind(t.failover.as_str())
        .bind(millis(Utc::now()))
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
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE domain = ?"
        ))
        .bind(domain)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| Error::not_found(Kind::Tenant, domain))?;
        tenant_from_row(&row)
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let res = sqlx::query(
            "UPDATE tenants SET name = ?, server_id = ?, process = ?, instance_id = ?, failover = ? \
             WHERE domain = ?",
        )
        .bind(&t.name)
        .bind(&t.server_id)
        .bind(&t.process)
        .bind(&t.instance_id)
        .bind(t.failover.as_str())
        .bind(&t.domain)
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
        let res = sqlx::query("DELETE FROM tenants WHERE domain = ?")
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
                    "SELECT {TENANT_COLUMNS} FROM tenants WHERE server_id = ? ORDER BY domain"
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
        // The statement names only the conditions given, so that SQLite plans
        // each on its index (`?1 IS NULL OR ...` would defeat that).
        let mut conditions = Vec::new();
        if server_id.is_some() {
            conditions.push("server_id = ?");
        }
        if after.is_some() {
            conditions.push("domain > ?");
        }
        let sql = format!(
            "SELECT {TENANT_COLUMNS} FROM tenants {} ORDER BY domain LIMIT {limit}",
            where_clause(&conditions)
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
        // One statement, so SQLite's single writer makes check and insert atomic:
        // concurrent reservations can never overbook a server.
        let res = sqlx::query(
            "INSERT INTO instances (tenant, instance_id, process, server_id, memory_mb, desired, observed, created_at) \
             SELECT ?1, ?2, ?3, s.id, ?4, 'running', 'starting', ?5 FROM servers s \
             WHERE s.id = ?6 AND s.status NOT IN ('offline', 'draining') AND NOT s.cordoned \
               AND s.capacity_mb - s.used_mb >= ?4 \
               AND NOT EXISTS (SELECT 1 FROM instances o WHERE o.moving_to = s.id \
                               AND o.tenant = ?1 AND o.process = ?3)",
        )
        .bind(&i.tenant)
        .bind(&i.instance_id)
        .bind(&i.process)
        .bind(i.memory_mb)
        .bind(millis(Utc::now()))
        .bind(&i.server_id)
        .execute(&self.pool)
        .await;
        match res {
            Ok(r) if r.rows_affected() == 1 => {
                // A stop still pending for this name on this server would kill
                // the new instance: the new one supersedes it.
                sqlx::query("DELETE FROM pending_stops WHERE server_id = ? AND name = ?")
                    .bind(&i.server_id)
                    .bind(i.tenement_name())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
            Ok(_) => Err(self.refused_reservation(i).await),
            Err(e) if violation(&e) == Some(ErrorKind::UniqueViolation) => {
                Err(duplicate_instance(self, i).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_instance(&self, tenant: &str, instance_id: &str) -> Result<Instance> {
        let row = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = ? AND instance_id = ?"
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
                    "SELECT {INSTANCE_COLUMNS} FROM instances WHERE server_id = ? \
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
        let mut conditions = Vec::new();
        if server_id.is_some() {
            conditions.push("server_id = ?");
        }
        if after.is_some() {
            conditions.push("(tenant, instance_id) > (?, ?)");
        }
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances {} ORDER BY tenant, instance_id LIMIT {limit}",
            where_clause(&conditions)
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
            sqlx::query("UPDATE instances SET desired = ? WHERE tenant = ? AND instance_id = ?")
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
            "UPDATE instances SET observed = ?, observed_at = ? WHERE tenant = ? AND instance_id = ?",
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
        let res = sqlx::query("DELETE FROM instances WHERE tenant = ? AND instance_id = ?")
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

    async fn list_instances_of_tenant(&self, tenant: &str) -> Result<Vec<Instance>> {
        sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE tenant = ? ORDER BY instance_id"
        ))
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(instance_from_row)
        .collect()
    }

    async fn domains_of_tenants(&self, names: &[String]) -> Result<Vec<(String, String, String)>> {
        let mut out: Vec<(String, String, String)> = Vec::new();
        // A page of names at a time: far below SQLite's limit on parameters.
        for chunk in names.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT name, process, domain FROM tenants WHERE name IN ({marks}) ORDER BY domain"
            );
            let mut query = sqlx::query(&sql);
            for name in chunk {
                query = query.bind(name);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
            }
        }
        out.sort_by(|a, b| a.2.cmp(&b.2));
        Ok(out)
    }

    async fn list_instances_touching(&self, server_id: &str) -> Result<Vec<Instance>> {
        // Two index searches, named: with statistics (ANALYZE) an `OR`, or a
        // sorted search of `moving_to` (NULL in nearly every row), is planned as
        // a scan of the whole table.
        // Handed over as one JSON document (see `instances_from_json`).
        let json: String = sqlx::query_scalar(&format!(
            "SELECT json_group_array(json(j)) FROM ( \
                 SELECT json_array({INSTANCE_COLUMNS}) AS j FROM instances WHERE server_id = ?1 \
                 UNION ALL \
                 SELECT json_array({INSTANCE_COLUMNS}) AS j FROM instances INDEXED BY instances_moving_to \
                 WHERE moving_to = ?1 AND server_id <> ?1)"
        ))
        .bind(server_id)
        .fetch_one(&self.pool)
        .await?;
        let mut found = instances_from_json(&json)?;
        found.sort_by(|a, b| (&a.tenant, &a.instance_id).cmp(&(&b.tenant, &b.instance_id)));
        Ok(found)
    }

    async fn respawn_records(&self, server_id: &str) -> Result<(Vec<Tenant>, Vec<Instance>)> {
        let on = RESPAWN_TENANTS_ON.replace("$1", "?1");
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
        // As record_servers_seen: a statement a batch. The first reconcile
        // round at a million instances writes them all, a thousand a server;
        // written a statement each in one transaction, each server's held the
        // writer for some 30 ms (bench_capacity), and every other write of the
        // fleet waited for it.
        let rows: Vec<(&str, &str, &str)> = observed
            .iter()
            .map(|(tenant, id, state)| (tenant.as_str(), id.as_str(), state.as_str()))
            .collect();
        self.update_batched(
            "UPDATE instances SET observed = v.observed, observed_at = ?2 \
             FROM (SELECT value->>0 AS tenant, value->>1 AS instance_id, \
                          value->>2 AS observed FROM json_each(?1)) AS v \
             WHERE instances.tenant = v.tenant AND instances.instance_id = v.instance_id",
            &rows,
            at,
        )
        .await
    }

    async fn begin_move(&self, tenant: &str, instance_id: &str, target: &str) -> Result<()> {
        // One statement: check and reservation are atomic under SQLite's writer.
        let res = sqlx::query(
            "UPDATE instances SET moving_to = ?3 \
             WHERE tenant = ?1 AND instance_id = ?2 AND moving_to IS NULL \
               AND desired = 'running' AND server_id <> ?3 \
               AND EXISTS (SELECT 1 FROM servers s WHERE s.id = ?3 \
                   AND s.status NOT IN ('offline', 'draining') AND NOT s.cordoned \
                   AND s.capacity_mb - s.used_mb >= instances.memory_mb) \
               AND NOT EXISTS (SELECT 1 FROM instances o WHERE o.tenant = ?1 \
                   AND o.process = instances.process AND (o.server_id = ?3 OR o.moving_to = ?3))",
        )
        .bind(tenant)
        .bind(instance_id)
        .bind(target)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 1 {
            Ok(())
        } else {
            Err(refused_move(self, tenant, instance_id, target).await)
        }
    }

    async fn abort_move(&self, tenant: &str, instance_id: &str) -> Result<()> {
        sqlx::query("UPDATE instances SET moving_to = NULL WHERE tenant = ? AND instance_id = ?")
            .bind(tenant)
            .bind(instance_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_move(&self, tenant: &str, instance_id: &str, grace: Duration) -> Result<()> {
        // The first statement writes, so the transaction takes the write lock at
        // once (waiting under the busy timeout) and never has to upgrade.
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO pending_stops (server_id, name, created_at, stop_after) \
             SELECT server_id, process || ':' || tenant, ?3, ?4 FROM instances \
             WHERE tenant = ?1 AND instance_id = ?2 AND moving_to IS NOT NULL \
             ON CONFLICT (server_id, name) DO UPDATE SET stop_after = excluded.stop_after",
        )
        .bind(tenant)
        .bind(instance_id)
        .bind(millis(Utc::now()))
        .bind(millis_after(grace))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE tenants SET server_id = \
                 (SELECT moving_to FROM instances WHERE tenant = ?1 AND instance_id = ?2) \
             WHERE name = ?1 AND instance_id = ?2 \
               AND process = (SELECT process FROM instances WHERE tenant = ?1 AND instance_id = ?2) \
               AND EXISTS (SELECT 1 FROM instances WHERE tenant = ?1 AND instance_id = ?2 \
                           AND moving_to IS NOT NULL)",
        )
        .bind(tenant)
        .bind(instance_id)
        .execute(&mut *tx)
        .await?;
        // An old copy of this name still pending on the target is the instance
        // that now lives there: it must not be stopped.
        sqlx::query(
            "DELETE FROM pending_stops WHERE (server_id, name) IN \
             (SELECT moving_to, process || ':' || tenant FROM instances \
              WHERE tenant = ?1 AND instance_id = ?2 AND moving_to IS NOT NULL)",
        )
        .bind(tenant)
        .bind(instance_id)
        .execute(&mut *tx)
        .await?;
        let moved = sqlx::query(
            "UPDATE instances SET server_id = moving_to, moving_to = NULL \
             WHERE tenant = ? AND instance_id = ? AND moving_to IS NOT NULL",
        )
        .bind(tenant)
        .bind(instance_id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(match self.get_instance(tenant, instance_id).await {
                Ok(i) => Error::invalid("instance", format!("'{}' is not moving", i.key())),
                Err(e) => e,
            });
        }
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
        let res = sqlx::query("DELETE FROM pending_stops WHERE server_id = ? AND name = ?")
            .bind(server_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    async fn add_pending_stop(&self, server_id: &str, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO pending_stops (server_id, name, created_at, stop_after) \
             VALUES (?1, ?2, ?3, ?3)",
        )
        .bind(server_id)
        .bind(name)
        .bind(millis(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
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
            "SELECT seq, kind, key FROM route_changes WHERE seq > ? ORDER BY seq LIMIT ?",
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
             WHERE seq <= (SELECT version FROM fleet_version WHERE id = 1) - ?",
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
        let rows = sqlx::query(&format!("{ROUTE_ROWS} WHERE {filter} = ?"))
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

    /// No commit checkpoints; the store's task copies the WAL into the file.
    #[tokio::test]
    async fn the_wal_is_checkpointed_by_the_stores_task_not_by_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(auto, 0);
        // The migrations' pages reach the file (it holds only its header
        // page, or nothing, until a checkpoint).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let len = std::fs::metadata(&path).unwrap().len();
            if len > 16 * 4096 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no checkpoint: the file is {len} bytes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The task ends with the store.
        let pool = store.pool.clone();
        drop(store);
        pool.close().await;
    }

    /// Migration 0015 makes token names unique: names given twice before it
    /// are told apart (the oldest keeps its name), not lost.
    #[tokio::test]
    async fn tokens_named_alike_before_names_were_unique_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("old.db"))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let mut before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                MIGRATOR
                    .iter()
                    .filter(|m| m.version < 14)
                    .cloned()
                    .collect(),
            ),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.set_ignore_missing(true);
        before.run(&pool).await.unwrap();
        for (id, at) in [("aaa", 2), ("bbb", 1), ("ccc", 3)] {
            sqlx::query(
                "INSERT INTO api_tokens (id, name, hash, created_at) VALUES (?, 'ci', ?, ?)",
            )
            .bind(id)
            .bind(format!("hash-{id}"))
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
        }
        MIGRATOR.run(&pool).await.unwrap();
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM api_tokens ORDER BY created_at")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(names, ["ci", "ci (aaa)", "ci (ccc)"]);
        let again = sqlx::query(
            "INSERT INTO api_tokens (id, name, hash, created_at) VALUES ('d', 'ci', 'h', 4)",
        )
        .execute(&pool)
        .await
        .unwrap_err();
        assert_eq!(violation(&again), Some(ErrorKind::UniqueViolation));
    }
}
