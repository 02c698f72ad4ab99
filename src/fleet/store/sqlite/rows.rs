//! Rows and statements: the columns read, rows made into the model, the
//! conditions bound only when given, and constraint failures classified.

use super::*;

/// `used_mb` is the counter the instances' triggers keep (migration 0011): the
/// memory of the instances placed on the server or moving to it.
pub(super) const SERVER_COLUMNS: &str = "s.id, s.url, s.region, s.capacity_mb, s.token, s.domain, \
     s.status, s.last_seen, s.routing_problem, s.created_at, s.used_mb, s.cordoned";
pub(super) const TENANT_COLUMNS: &str =
    "domain, name, server_id, process, instance_id, failover, created_at";
pub(super) const INSTANCE_COLUMNS: &str =
    "tenant, instance_id, process, server_id, moving_to, memory_mb, \
     desired, observed, observed_at, created_at";

pub(super) fn server_from_row(row: &SqliteRow) -> Result<Server> {
    Ok(Server {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        region: row.try_get("region")?,
        capacity_mb: row.try_get("capacity_mb")?,
        token: row.try_get("token")?,
        domain: row.try_get("domain")?,
        status: ServerStatus::from_str(row.try_get("status")?)?,
        last_seen: row.try_get::<Option<i64>, _>("last_seen")?.map(from_millis),
        routing_problem: row.try_get("routing_problem")?,
        created_at: from_millis(row.try_get("created_at")?),
        used_capacity_mb: row.try_get("used_mb")?,
        cordoned: row.try_get("cordoned")?,
    })
}

pub(super) fn tenant_from_row(row: &SqliteRow) -> Result<Tenant> {
    Ok(Tenant {
        domain: row.try_get("domain")?,
        name: row.try_get("name")?,
        server_id: row.try_get("server_id")?,
        process: row.try_get("process")?,
        instance_id: row.try_get("instance_id")?,
        failover: FailoverPolicy::from_str(row.try_get("failover")?)?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

pub(super) fn instance_from_row(row: &SqliteRow) -> Result<Instance> {
    InstanceColumns {
        tenant: row.try_get("tenant")?,
        instance_id: row.try_get("instance_id")?,
        process: row.try_get("process")?,
        server_id: row.try_get("server_id")?,
        moving_to: row.try_get("moving_to")?,
        memory_mb: row.try_get("memory_mb")?,
        desired: row.try_get("desired")?,
        observed: row.try_get("observed")?,
        observed_at: row.try_get("observed_at")?,
        created_at: row.try_get("created_at")?,
    }
    .into_instance()
}

/// An instance's columns ([`INSTANCE_COLUMNS`]) as they are stored, in
/// their order: read from a row, or from a JSON array of them (see
/// [`instances_from_json`]), then made into the model.
#[derive(serde::Deserialize)]
struct InstanceColumns {
    tenant: String,
    instance_id: String,
    process: String,
    server_id: String,
    moving_to: Option<String>,
    memory_mb: i64,
    desired: String,
    observed: String,
    observed_at: Option<i64>,
    created_at: i64,
}

impl InstanceColumns {
    fn into_instance(self) -> Result<Instance> {
        Ok(Instance {
            desired: DesiredState::from_str(&self.desired)?,
            observed: InstanceState::from_str(&self.observed)?,
            observed_at: self.observed_at.map(from_millis),
            created_at: from_millis(self.created_at),
            tenant: self.tenant,
            instance_id: self.instance_id,
            process: self.process,
            server_id: self.server_id,
            moving_to: self.moving_to,
            memory_mb: self.memory_mb,
        })
    }
}

/// The instances of a `json_group_array` of `json_array(`[`INSTANCE_COLUMNS`]`)`s:
/// a read of a thousand rows as one value, where sqlx hands rows over one
/// at a time between its SQLite thread and the caller's (most of what a
/// reconcile round's reads cost, docs/benchmarks.md).
pub(super) fn instances_from_json(json: &str) -> Result<Vec<Instance>> {
    let rows: Vec<InstanceColumns> = serde_json::from_str(json)
        .map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))?;
    rows.into_iter()
        .map(InstanceColumns::into_instance)
        .collect()
}

/// `WHERE a AND b`, or nothing without conditions.
pub(super) fn where_clause(conditions: &[&str]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

/// Binds a value only when it is there (its condition is in the statement
/// only then: see [`where_clause`]).
pub(super) trait BindOpt<'q> {
    fn bind_opt(self, value: Option<&'q str>) -> Self;
}

impl<'q> BindOpt<'q> for sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    fn bind_opt(self, value: Option<&'q str>) -> Self {
        match value {
            Some(v) => self.bind(v),
            None => self,
        }
    }
}

pub(super) fn violation(e: &sqlx::Error) -> Option<ErrorKind> {
    let d = e.as_database_error()?;
    // An `ON DELETE RESTRICT` failure comes as SQLITE_CONSTRAINT_TRIGGER (1811),
    // which sqlx does not classify; it is a foreign key failure all the same.
    if d.code().as_deref() == Some("1811") {
        return Some(ErrorKind::ForeignKeyViolation);
    }
    Some(d.kind())
}
