//! Rendering for people: aligned tables and `key: value` blocks of the API's
//! answers. Every function is pure (records and "now" in, text out), so the
//! output is tested without a server; `--json` bypasses all of this and prints
//! the API's own JSON.
//!
//! Every value is shown through [`printable`]: the API refuses control
//! characters, but what it returns may come from an older slum, a tenement
//! server or a tenant app's log lines, and an escape sequence must not reach the
//! operator's terminal raw (nor a newline forge a row).

use chrono::{DateTime, Utc};

use crate::api::wire::{
    state_text, ApiToken, CertificateInfo, DesiredState, DrainProgress, Event, EventLevel,
    FleetStatus, Instance, InstanceStatus, LogLine, LogStream, ReconcileReport, Server,
    ServerStats, ServersTraffic, Tenant, TenantTraffic, TrafficFigures, TrafficTop,
    EXPIRY_WARNING_DAYS,
};

#[cfg(test)]
mod tests;

/// `s` with its control characters (C0, DEL, C1; newlines and tabs too)
/// escaped as Rust writes them (`\u{1b}`, `\n`), everything else as is.
pub(super) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `items` as indented lines under `title:`, each shown printable.
fn section(out: &mut Vec<String>, title: &str, items: &[String]) {
    if !items.is_empty() {
        out.push(format!("{title}:"));
        out.extend(items.iter().map(|i| format!("  {}", printable(i))));
    }
}

/// An aligned table without borders; columns in `right` are right-aligned
/// (numbers).
fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row.iter().map(|cell| printable(cell)).collect::<Vec<_>>());
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.trim_fmt()
}

/// `key: value` lines with the values aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{:<width$}  {}", format!("{k}:"), printable(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn or_dash(v: Option<&str>) -> String {
    match v {
        Some(s) if !s.is_empty() => s.to_owned(),
        _ => "-".to_owned(),
    }
}

/// "12s ago", "5m ago", "3h ago", "4d ago"; "never" for none.
fn format_ago(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    let Some(t) = t else {
        return "never".to_owned();
    };
    let secs = (now - t).num_seconds();
    if secs < 1 {
        "just now".to_owned()
    } else {
        format!("{} ago", format_duration(secs.unsigned_abs()))
    }
}

/// A moment as a date and how long ago it was: "2024-05-01 12:00 UTC (3d ago)".
fn format_when(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    format!(
        "{} ({})",
        t.format("%Y-%m-%d %H:%M UTC"),
        format_ago(now, Some(t))
    )
}

/// A duration in its two largest units: "45s", "12m 5s", "3h 12m", "2d 3h".
fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) if m == 0 => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        _ if h == 0 => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

fn mb(n: i64) -> String {
    format!("{n} MB")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub(super) fn render_servers(servers: &[Server], now: DateTime<Utc>) -> String {
    let rows = servers
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.url.clone(),
                or_dash(s.region.as_deref()),
                s.state_text(),
                mb(s.used_capacity_mb()),
                mb(s.capacity_mb),
                mb(s.free_capacity_mb()),
                format_ago(now, s.last_seen),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "URL",
            "REGION",
            "STATUS",
            "USED",
            "CAPACITY",
            "FREE",
            "LAST SEEN",
        ],
        rows,
        &[4, 5, 6],
    );
    out.push_str(&routing_problems(
        servers
            .iter()
            .map(|s| (s.id.as_str(), s.routing_problem.as_deref())),
    ));
    out
}

/// One line per server the router sends nothing for a routing problem,
/// after a table of servers.
fn routing_problems<'a>(servers: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> String {
    servers
        .filter_map(|(id, problem)| Some(format!("\n{id}: not routed: {}", problem?)))
        .collect()
}

/// One server, with its live stats when given.
pub(super) fn render_server(s: &Server, stats: Option<&ServerStats>, now: DateTime<Utc>) -> String {
    let mut rows = vec![
        ("id", s.id.clone()),
        ("url", s.url.clone()),
        ("region", or_dash(s.region.as_deref())),
        ("domain", s.routing_domain()),
        ("status", s.state_text()),
        ("last seen", format_ago(now, s.last_seen)),
    ];
    if let Some(problem) = &s.routing_problem {
        rows.push(("not routed", problem.clone()));
    }
    match stats {
        Some(st) => {
            rows.push((
                "capacity",
                format!(
                    "{} used of {} ({} free)",
                    mb(st.used_mb),
                    mb(st.capacity_mb),
                    mb(st.free_mb)
                ),
            ));
            rows.push(("tenants", st.tenants.to_string()));
            let running = st
                .running
                .map(|r| format!(" ({r} running)"))
                .unwrap_or_default();
            rows.push(("instances", format!("{}{running}", st.instances)));
            let reachable = match (&st.reachable, &st.error) {
                (true, _) => "yes".to_owned(),
                (false, Some(e)) => format!("no: {e}"),
                (false, None) => "no".to_owned(),
            };
            rows.push(("reachable", reachable));
        }
        None => rows.push((
            "capacity",
            format!(
                "{} used of {} ({} free)",
                mb(s.used_capacity_mb()),
                mb(s.capacity_mb),
                mb(s.free_capacity_mb())
            ),
        )),
    }
    rows.push(("created", format_when(now, s.created_at)));
    fields(&rows)
}

pub(super) fn render_tenants(tenants: &[Tenant]) -> String {
    let rows = tenants
        .iter()
        .map(|t| {
            vec![
                t.domain.clone(),
                t.name.clone(),
                t.server_id.clone(),
                t.process.clone(),
                t.instance_id.clone(),
            ]
        })
        .collect();
    table(
        &["DOMAIN", "TENANT", "SERVER", "PROCESS", "INSTANCE"],
        rows,
        &[],
    )
}

pub(super) fn render_tenant(t: &Tenant, now: DateTime<Utc>) -> String {
    fields(&[
        ("domain", t.domain.clone()),
        ("tenant", t.name.clone()),
        ("server", t.server_id.clone()),
        ("process", t.process.clone()),
        ("instance", t.instance_id.clone()),
        ("routes to", t.instance_key()),
        ("failover", t.failover.as_str().to_owned()),
        ("created", format_when(now, t.created_at)),
    ])
}

/// A tenant's traffic line under `tenant show`.
pub(super) fn render_tenant_traffic(t: &TenantTraffic) -> String {
    let f = &t.figures;
    let window_seconds = t.window_seconds.unwrap_or(60.0);
    let value = if f.requests == 0 {
        format!("no requests in the last {}", seconds(window_seconds))
    } else if !t.tracked {
        format!(
            "not among the busiest tenants of the last {} (at most {} req/s)",
            seconds(window_seconds),
            per_second(f.requests_per_second)
        )
    } else {
        format!("{} over the last {}", figures(f), seconds(window_seconds))
    };
    fields(&[("traffic", value)])
}

/// "12.5 req/s, 0.4% errors, p50 3.1 ms, p99 20 ms".
fn figures(f: &TrafficFigures) -> String {
    format!(
        "{} req/s, {} errors, p50 {}, p99 {}",
        per_second(f.requests_per_second),
        percent(f.error_rate),
        millis(f.p50_ms),
        millis(f.p99_ms)
    )
}

fn seconds(s: f64) -> String {
    format!("{:.0} s", s)
}

fn per_second(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn percent(share: f64) -> String {
    match share * 100.0 {
        0.0 => "0%".to_owned(),
        p if p < 0.1 => "<0.1%".to_owned(),
        p if p < 10.0 => format!("{p:.1}%"),
        p => format!("{p:.0}%"),
    }
}

fn millis(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 10.0 => format!("{ms:.1} ms"),
        Some(ms) if ms < 10_000.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{:.0} s", ms / 1000.0),
    }
}

/// `slum top`: the router's totals, then its busiest tenants. A rate that
/// may count other tenants' requests (Space-Saving's overcount) is shown as
/// at most (`≤`).
pub(super) fn render_top(top: &TrafficTop) -> String {
    let mut out = format!(
        "last {}, all tenants: {}\n",
        seconds(top.window_seconds),
        figures(&top.total)
    );
    if top.tenants.is_empty() {
        out.push_str("\nno tenant requests");
        return out;
    }
    let rows = top
        .tenants
        .iter()
        .map(|t| {
            let f = &t.figures;
            let rate = per_second(f.requests_per_second);
            vec![
                t.tenant.clone(),
                match t.requests_min < f.requests {
                    true => format!("≤{rate}"),
                    false => rate,
                },
                percent(f.error_rate),
                millis(f.p50_ms),
                millis(f.p99_ms),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["TENANT", "REQ/S", "ERRORS", "P50", "P99"],
        rows,
        &[1, 2, 3, 4],
    ));
    out
}

/// `slum top --servers`: the router's traffic to each server.
pub(super) fn render_top_servers(t: &ServersTraffic) -> String {
    let mut out = format!("last {}, by server\n", seconds(t.window_seconds));
    if t.servers.is_empty() {
        out.push_str("\nno requests sent to a server");
        return out;
    }
    let rows = t
        .servers
        .iter()
        .map(|s| {
            let f = &s.figures;
            vec![
                s.server.clone(),
                per_second(f.requests_per_second),
                percent(f.error_rate),
                millis(f.p50_ms),
                millis(f.p99_ms),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["SERVER", "REQ/S", "ERRORS", "P50", "P99"],
        rows,
        &[1, 2, 3, 4],
    ));
    out
}

pub(super) fn render_spawned(i: &Instance) -> String {
    printable(&format!(
        "spawned {} ({}) on server {}: {} reserved, {}",
        i.key(),
        i.process,
        i.server_id,
        mb(i.memory_mb),
        i.observed
    ))
}

/// The instances as a table: each one's domain (the first of its tenant's
/// process, `,+N` for more), its state (`stopping` for a stop still pending,
/// whatever its server last said), health, uptime and memory; "no instances"
/// for none.
pub(super) fn render_instances(instances: &[InstanceStatus]) -> String {
    if instances.is_empty() {
        return "no instances".to_owned();
    }
    let rows = instances
        .iter()
        .map(|s| {
            let domain = match s.domains.as_slice() {
                [] => "-".to_owned(),
                [one] => one.clone(),
                [first, rest @ ..] => format!("{first},+{}", rest.len()),
            };
            let state = if s.instance.desired == DesiredState::Stopped {
                "stopping".to_owned()
            } else {
                s.state.to_string()
            };
            vec![
                s.instance.key(),
                domain,
                s.instance.process.clone(),
                s.instance.server_id.clone(),
                state,
                or_dash(s.health.as_deref()),
                s.uptime_secs
                    .map(format_duration)
                    .unwrap_or_else(|| "-".into()),
                mb(s.instance.memory_mb),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "KEY", "DOMAIN", "PROCESS", "SERVER", "STATE", "HEALTH", "UPTIME", "MEMORY",
        ],
        rows,
        &[6, 7],
    );
    for s in instances {
        if let Some(e) = &s.error {
            out.push_str(&format!(
                "\n{}: {}",
                printable(&s.instance.key()),
                printable(e)
            ));
        }
    }
    out
}

/// The fleet at a glance: each server's state, when it last answered a health
/// check and its capacity, then the domains no server can serve now.
pub(super) fn render_status(status: &FleetStatus, now: DateTime<Utc>) -> String {
    let rows = status
        .servers
        .iter()
        .map(|st| {
            vec![
                st.server_id.clone(),
                state_text(st.status, st.cordoned),
                format_ago(now, st.last_seen),
                mb(st.used_mb),
                mb(st.capacity_mb),
                mb(st.free_mb),
                st.tenants.to_string(),
                st.instances.to_string(),
                yes_no(st.reachable).to_owned(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SERVER",
            "STATUS",
            "LAST SEEN",
            "USED",
            "TOTAL",
            "FREE",
            "TENANTS",
            "INSTANCES",
            "REACHABLE",
        ],
        rows,
        &[3, 4, 5, 6, 7],
    );
    for st in &status.servers {
        if let Some(e) = &st.error {
            out.push_str(&format!("\n{}: {}", printable(&st.server_id), printable(e)));
        }
    }
    out.push_str(&routing_problems(
        status
            .servers
            .iter()
            .map(|st| (st.server_id.as_str(), st.routing_problem.as_deref())),
    ));
    if !status.down_tenants.is_empty() {
        let rows = status
            .down_tenants
            .iter()
            .map(|d| vec![d.domain.clone(), d.tenant.clone(), d.servers.join(", ")])
            .collect();
        out.push_str(&format!(
            "\n\ndown: {} domain(s) whose servers are offline\n{}",
            status.down_tenants.len(),
            table(&["DOMAIN", "TENANT", "OFFLINE SERVERS"], rows, &[])
        ));
    }
    out.push_str(&format!(
        "\n\n{} server(s), {} tenant(s), {} instance(s)",
        status.servers.len(),
        status.tenants,
        status.instances
    ));
    out.push_str(&expiry_warning(status, now));
    out
}

/// The warning of `slum status` for certificates near their expiry: how many,
/// and the first of them.
fn expiry_warning(status: &FleetStatus, now: DateTime<Utc>) -> String {
    if status.certificates_expiring <= 0 {
        return String::new();
    }
    let rows = status
        .expiring_certificates
        .iter()
        .map(|c| vec![c.name.clone(), format_expiry(now, Some(c.not_after))])
        .collect();
    let mut out = format!(
        "\n\nwarning: {} certificate(s) expire within {EXPIRY_WARNING_DAYS} days\n{}",
        status.certificates_expiring,
        table(&["CERTIFICATE", "EXPIRES"], rows, &[])
    );
    let more = status.certificates_expiring - status.expiring_certificates.len() as i64;
    if more > 0 {
        out.push_str(&format!("\nand {more} more (slum cert list)"));
    }
    out
}

/// When a certificate expires, and how far that is: "2025-06-01 12:00 UTC (in
/// 3d 4h)", "... (expired 2d ago)"; "-" for none yet.
fn format_expiry(now: DateTime<Utc>, not_after: Option<DateTime<Utc>>) -> String {
    let Some(t) = not_after else {
        return "-".to_owned();
    };
    let secs = (t - now).num_seconds();
    let how_far = if secs > 0 {
        format!("in {}", format_duration(secs.unsigned_abs()))
    } else {
        format!("expired {} ago", format_duration(secs.unsigned_abs()))
    };
    format!("{} ({how_far})", t.format("%Y-%m-%d %H:%M UTC"))
}

/// When the next order is due: "in 5m", "due" once the time has come, "-"
/// for none.
fn format_next_try(now: DateTime<Utc>, next: Option<DateTime<Utc>>) -> String {
    match next {
        None => "-".to_owned(),
        Some(t) if t <= now => "due".to_owned(),
        Some(t) => format!(
            "in {}",
            format_duration((t - now).num_seconds().unsigned_abs())
        ),
    }
}

fn redirect_text(r: Option<bool>) -> &'static str {
    match r {
        None => "fleet default",
        Some(true) => "on",
        Some(false) => "off",
    }
}

pub(super) fn render_certificates(certs: &[CertificateInfo], now: DateTime<Utc>) -> String {
    let rows = certs
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.source.to_string(),
                c.state.to_string(),
                format_expiry(now, c.not_after),
                format_next_try(now, c.next_try),
            ]
        })
        .collect();
    let mut out = table(
        &["NAME", "SOURCE", "STATE", "EXPIRES", "NEXT TRY"],
        rows,
        &[],
    );
    // The CA's reasons, one line each, after the table (they are long).
    for c in certs {
        if let Some(e) = &c.last_error {
            out.push_str(&format!("\n{}: {}", printable(&c.name), printable(e)));
        }
    }
    out
}

pub(super) fn render_certificate(c: &CertificateInfo, now: DateTime<Utc>) -> String {
    let mut rows = vec![
        ("name", c.name.clone()),
        ("source", c.source.to_string()),
        ("state", c.state.to_string()),
        (
            "valid from",
            c.not_before
                .map(|t| format_when(now, t))
                .unwrap_or_else(|| "-".into()),
        ),
        ("expires", format_expiry(now, c.not_after)),
        ("redirect", redirect_text(c.redirect).to_owned()),
        ("next try", format_next_try(now, c.next_try)),
    ];
    if c.failures > 0 {
        rows.push(("failures", c.failures.to_string()));
    }
    if let Some(e) = &c.last_error {
        rows.push(("last error", e.clone()));
    }
    rows.push(("updated", format_when(now, c.updated_at)));
    fields(&rows)
}

/// What a drain did: one summary line, then what moved where and why anything
/// failed.
pub(super) fn render_drain(p: &DrainProgress) -> String {
    let verb = if p.done && !p.stopped {
        "drained"
    } else {
        "stopped draining"
    };
    let mut out = vec![format!(
        "{verb} server {}: moved {}, re-homed {}, failed {}",
        printable(&p.server),
        p.moved.len(),
        p.rehomed.len(),
        p.failed.len()
    )];
    section(&mut out, "moved", &p.moved);
    section(&mut out, "re-homed", &p.rehomed);
    section(&mut out, "failed", &p.failed);
    out.join("\n")
}

pub(super) fn render_tokens(tokens: &[ApiToken], now: DateTime<Utc>) -> String {
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                format_ago(now, Some(t.created_at)),
            ]
        })
        .collect();
    table(&["ID", "NAME", "CREATED"], rows, &[])
}

pub(super) fn render_reconcile(r: &ReconcileReport) -> String {
    let sections = [
        ("respawned", &r.respawned),
        ("stopped", &r.stopped),
        ("failed", &r.failed),
        ("unreachable", &r.unreachable),
        ("unmanaged (left alone)", &r.unmanaged),
    ];
    let mut out: Vec<String> = Vec::new();
    for (title, items) in sections {
        section(&mut out, title, items);
    }
    if out.is_empty() {
        "nothing to do: the fleet runs what it should".to_owned()
    } else {
        out.join("\n")
    }
}

/// A time as events and log lines show it: to the second, UTC.
fn format_stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The columns of [`render_event`]'s lines, in the widths of
/// [`events_header`].
fn event_columns(at: &str, level: &str, kind: &str, server: &str, object: &str) -> String {
    format!("{at:<20}  {level:<7}  {kind:<20}  {server:<12}  {object:<20}  ")
}

/// The header of [`render_event`]'s lines.
pub(super) fn events_header() -> String {
    format!(
        "{}CAUSE",
        event_columns("TIME", "TYPE", "KIND", "SERVER", "OBJECT")
    )
}

/// One event as a line under [`events_header`] (columns of a fixed width,
/// so that a followed list stays aligned): the object is the instance, else
/// the tenant; the router that made it ends the line.
pub(super) fn render_event(e: &Event) -> String {
    let level = match e.level {
        EventLevel::Normal => "normal",
        EventLevel::Warning => "warning",
    };
    let object = e.instance.as_deref().or(e.tenant.as_deref());
    format!(
        "{}{}  (by {})",
        event_columns(
            &format_stamp(e.at),
            level,
            &printable(&e.kind),
            &printable(&or_dash(e.server.as_deref())),
            &printable(&or_dash(object)),
        ),
        printable(&e.cause),
        printable(&e.router)
    )
}

/// One line an instance wrote: when, on which server, which stream, what.
pub(super) fn render_log_line(l: &LogLine) -> String {
    let stream = match l.stream {
        LogStream::Stdout => "OUT",
        LogStream::Stderr => "ERR",
    };
    format!(
        "{} {} {stream} {}",
        format_stamp(l.at),
        printable(&l.server),
        printable(&l.message)
    )
}
