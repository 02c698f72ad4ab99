//! What people see: tables, details and summaries, rendered at a fixed "now".

use chrono::TimeZone;

use super::*;
use crate::api::wire::{
    CertificateSource, CertificateState, DownTenant, ExpiringCertificate, InstanceState,
    ServerStatus,
};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

#[test]
fn a_drain_summary_counts_and_lists_what_happened() {
    let p = DrainProgress {
        server: "s1".into(),
        total: 2,
        moved: vec!["a:prod -> s2".into()],
        failed: vec!["b:prod: no server can take b:prod (api, 128 MB): s2 is offline".into()],
        rehomed: vec!["c.test -> s2".into()],
        done: true,
        ..Default::default()
    };
    assert_eq!(
        render_drain(&p),
        "drained server s1: moved 1, re-homed 1, failed 1\n\
         moved:\n  a:prod -> s2\n\
         re-homed:\n  c.test -> s2\n\
         failed:\n  b:prod: no server can take b:prod (api, 128 MB): s2 is offline"
    );
    let empty = DrainProgress {
        server: "s1".into(),
        done: true,
        ..Default::default()
    };
    assert_eq!(
        render_drain(&empty),
        "drained server s1: moved 0, re-homed 0, failed 0"
    );
}

#[test]
fn durations_and_ages_read_like_people_write_them() {
    assert_eq!(format_duration(0), "0s");
    assert_eq!(format_duration(45), "45s");
    assert_eq!(format_duration(60), "1m");
    assert_eq!(format_duration(725), "12m 5s");
    assert_eq!(format_duration(3 * 3600 + 12 * 60 + 9), "3h 12m");
    assert_eq!(format_duration(7200), "2h");
    assert_eq!(format_duration(2 * 86_400 + 3 * 3600), "2d 3h");
    assert_eq!(format_ago(at(12), Some(at(0))), "12s ago");
    assert_eq!(format_ago(at(0), Some(at(5))), "just now");
    assert_eq!(format_ago(at(0), None), "never");
    assert_eq!(
        format_when(at(3 * 86_400), at(0)),
        "2023-11-14 22:13 UTC (3d ago)"
    );
}

fn server(id: &str, url: &str, used: i64) -> Server {
    Server {
        id: id.into(),
        url: url.into(),
        region: Some("us-east".into()),
        capacity_mb: 1024,
        status: ServerStatus::Online,
        last_seen: Some(at(-30)),
        used_capacity_mb: used,
        ..Default::default()
    }
}

#[test]
fn server_table_aligns_columns() {
    let out = render_servers(
        &[
            server("east", "http://east.example.com:8000", 256),
            server("w", "http://w:1", 0),
        ],
        at(0),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ID    URL"), "{out}");
    // Every column starts at the same offset on every line.
    let col = lines[0].find("REGION").expect("REGION");
    assert_eq!(&lines[1][col..col + 7], "us-east", "{out}");
    assert_eq!(&lines[2][col..col + 7], "us-east", "{out}");
    assert!(
        lines[1].contains("256 MB") && lines[1].contains("768 MB"),
        "{out}"
    );
    assert!(lines[1].ends_with("30s ago"), "{out}");
}

#[test]
fn servers_the_router_sends_nothing_say_why() {
    let problem = "routes by a different domain than 'east.fleet.test': start it with \
                   `ten serve --domain east.fleet.test`";
    let east = Server {
        status: ServerStatus::Offline,
        routing_problem: Some(problem.into()),
        ..server("east", "http://east:8000", 0)
    };
    let list = render_servers(&[east.clone(), server("w", "http://w:1", 0)], at(0));
    assert!(
        list.ends_with(&format!("\neast: not routed: {problem}")),
        "{list}"
    );
    assert!(!list.contains("w: not routed"), "{list}");
    let one = render_server(&east, None, at(0));
    assert!(
        one.lines()
            .any(|l| l.starts_with("not routed:") && l.ends_with(problem)),
        "{one}"
    );
    let status = FleetStatus {
        servers: vec![ServerStats {
            server_id: "east".into(),
            status: ServerStatus::Offline,
            reachable: true,
            routing_problem: Some(problem.into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let out = render_status(&status, at(0));
    assert!(
        out.contains(&format!("\neast: not routed: {problem}")),
        "{out}"
    );
}

#[test]
fn server_details_include_stats() {
    let stats = ServerStats {
        server_id: "east".into(),
        status: ServerStatus::Offline,
        capacity_mb: 1024,
        used_mb: 128,
        free_mb: 896,
        tenants: 3,
        instances: 2,
        reachable: false,
        running: None,
        error: Some("connection refused".into()),
        last_seen: None,
        routing_problem: None,
        cordoned: false,
    };
    let out = render_server(
        &server("east", "http://east:8000", 128),
        Some(&stats),
        at(0),
    );
    assert!(out.contains("tenants:    3"), "{out}");
    assert!(out.contains("instances:  2\n"), "{out}");
    assert!(out.contains("reachable:  no: connection refused"), "{out}");
    assert!(
        out.contains("capacity:   128 MB used of 1024 MB (896 MB free)"),
        "{out}"
    );
    assert!(out.contains("domain:     east"), "{out}");
}

#[test]
fn status_joins_last_seen_and_lists_errors() {
    let status = FleetStatus {
        servers: vec![ServerStats {
            server_id: "east".into(),
            status: ServerStatus::Online,
            capacity_mb: 1024,
            used_mb: 256,
            free_mb: 768,
            tenants: 4,
            instances: 2,
            reachable: false,
            running: None,
            error: Some("timed out".into()),
            last_seen: Some(at(-30)),
            routing_problem: None,
            cordoned: false,
        }],
        tenants: 4,
        instances: 2,
        down_tenants: vec![DownTenant {
            domain: "acme.example.com".into(),
            tenant: "acme".into(),
            servers: vec!["east".into(), "west".into()],
        }],
        ..Default::default()
    };
    let out = render_status(&status, at(0));
    let row = out.lines().nth(1).expect("row");
    for cell in [
        "east", "online", "30s ago", "256 MB", "1024 MB", "768 MB", "no",
    ] {
        assert!(row.contains(cell), "{cell} missing in {row}");
    }
    assert!(out.contains("\neast: timed out"), "{out}");
    assert!(
        out.contains("down: 1 domain(s) whose servers are offline\nDOMAIN"),
        "{out}"
    );
    let down = out
        .lines()
        .find(|l| l.starts_with("acme.example.com"))
        .expect("down row");
    assert_eq!(
        down.split_whitespace().collect::<Vec<_>>(),
        ["acme.example.com", "acme", "east,", "west"]
    );
    let quiet = render_status(
        &FleetStatus {
            down_tenants: vec![],
            ..status.clone()
        },
        at(0),
    );
    assert!(!quiet.contains("down:"), "{quiet}");
    assert!(
        out.ends_with("1 server(s), 4 tenant(s), 2 instance(s)"),
        "{out}"
    );
}

#[test]
fn instances_show_key_state_health_uptime_memory() {
    let inst = InstanceStatus {
        instance: Instance {
            tenant: "c1".into(),
            instance_id: "prod".into(),
            process: "api".into(),
            server_id: "s1".into(),
            memory_mb: 128,
            ..Default::default()
        },
        state: InstanceState::Running,
        health: Some("healthy".into()),
        uptime_secs: Some(125),
        restarts: Some(0),
        error: None,
        domains: vec!["c1.example.com".into()],
    };
    let cells = |out: &str, n: usize| -> Vec<String> {
        let row = out.lines().nth(n).expect("row");
        row.split_whitespace().map(str::to_owned).collect()
    };
    let out = render_instances(std::slice::from_ref(&inst));
    assert_eq!(
        cells(&out, 1),
        [
            "c1:prod",
            "c1.example.com",
            "api",
            "s1",
            "running",
            "healthy",
            "2m",
            "5s",
            "128",
            "MB"
        ]
    );
    // A backup with two domains, and a stop still pending on an unreachable
    // server.
    let mut pending = inst.clone();
    pending.instance.instance_id = "backup".into();
    pending.instance.desired = DesiredState::Stopped;
    pending.state = InstanceState::Unknown;
    pending.domains.push("shop.c1.example.com".into());
    let mut orphan = inst;
    orphan.instance.tenant = "c2".into();
    orphan.domains.clear();
    let out = render_instances(&[pending, orphan]);
    assert_eq!(
        &cells(&out, 1)[..5],
        ["c1:backup", "c1.example.com,+1", "api", "s1", "stopping"]
    );
    assert_eq!(&cells(&out, 2)[..2], ["c2:prod", "-"]);
    assert_eq!(render_instances(&[]), "no instances");
}

#[test]
fn reconcile_report_lists_what_it_did() {
    assert_eq!(
        render_reconcile(&ReconcileReport::default()),
        "nothing to do: the fleet runs what it should"
    );
    let r = ReconcileReport {
        respawned: vec!["c1:prod".into()],
        unreachable: vec!["s2: connection refused".into()],
        ..Default::default()
    };
    assert_eq!(
        render_reconcile(&r),
        "respawned:\n  c1:prod\nunreachable:\n  s2: connection refused"
    );
}

/// Whatever the API sends (an older slum's records, a tenement server's answer,
/// a tenant app's log line in an error), a control character reaches the
/// terminal escaped, never raw.
#[test]
fn control_characters_from_the_api_are_shown_escaped() {
    let mut evil = server("east", "http://east:8000", 0);
    evil.region = Some("\u{1b}[31mx".into());
    let out = render_servers(&[evil.clone(), server("west", "http://west:1", 0)], at(0));
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(
        out.lines().nth(1).and_then(|l| l.split_whitespace().nth(2)),
        Some("\\u{1b}[31mx"),
        "{out}"
    );
    // A newline in a value cannot forge a row or a field either.
    evil.region = Some("x\nwest  forged".into());
    let out = render_server(&evil, None, at(0));
    assert!(out.contains("region:     x\\nwest  forged\n"), "{out}");

    let inst = InstanceStatus {
        instance: Instance {
            tenant: "c1".into(),
            instance_id: "prod".into(),
            process: "api".into(),
            server_id: "s1".into(),
            ..Default::default()
        },
        state: InstanceState::Unhealthy,
        health: Some("\u{1b}]0;owned\u{7}".into()),
        uptime_secs: None,
        restarts: None,
        error: Some("spawn failed: \u{1b}[2J".into()),
        domains: vec!["c1.\u{1b}[31mexample.com".into()],
    };
    let out = render_instances(&[inst]);
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    assert!(out.contains("\\u{1b}]0;owned\\u{7}"), "{out}");
    assert!(out.ends_with("c1:prod: spawn failed: \\u{1b}[2J"), "{out}");
    let r = ReconcileReport {
        failed: vec!["c1:prod: \u{1b}[2J".into()],
        ..Default::default()
    };
    assert_eq!(render_reconcile(&r), "failed:\n  c1:prod: \\u{1b}[2J");
    assert_eq!(printable("plain: text"), "plain: text");
    assert_eq!(
        printable("a\u{1b}b\tc\r\n\u{9b}"),
        "a\\u{1b}b\\tc\\r\\n\\u{9b}"
    );
}

#[test]
fn status_warns_of_certificates_near_expiry_and_says_how_many_more() {
    let status = FleetStatus {
        certificates_expiring: 3,
        expiring_certificates: vec![
            ExpiringCertificate {
                name: "old.example.com".into(),
                not_after: at(-2 * 86_400),
            },
            ExpiringCertificate {
                name: "*.example.com".into(),
                not_after: at(3 * 86_400 + 3600),
            },
        ],
        ..Default::default()
    };
    let out = render_status(&status, at(0));
    assert!(
        out.contains("warning: 3 certificate(s) expire within 14 days\nCERTIFICATE"),
        "{out}"
    );
    assert!(out.contains("(expired 2d ago)"), "{out}");
    assert!(out.contains("(in 3d 1h)"), "{out}");
    assert!(out.ends_with("and 1 more (slum cert list)"), "{out}");
    let quiet = render_status(&FleetStatus::default(), at(0));
    assert!(!quiet.contains("warning"), "{quiet}");
}

#[test]
fn certificates_show_state_expiry_next_try_and_the_cas_reason() {
    let issued = CertificateInfo {
        name: "shop.example.com".into(),
        source: CertificateSource::Uploaded,
        state: CertificateState::Issued,
        not_before: Some(at(-86_400)),
        not_after: Some(at(45 * 86_400)),
        updated_at: at(-60),
        ..Default::default()
    };
    let failing = CertificateInfo {
        name: "new.example.com".into(),
        source: CertificateSource::Acme,
        state: CertificateState::Failing,
        last_error: Some("urn:ietf:params:acme:error:connection: refused\u{1b}[31m".into()),
        failures: 2,
        next_try: Some(at(300)),
        updated_at: at(-60),
        ..Default::default()
    };
    let out = render_certificates(&[failing.clone(), issued.clone()], at(0));
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "SOURCE", "STATE", "EXPIRES", "NEXT", "TRY"]
    );
    assert_eq!(
        rows[1],
        ["new.example.com", "acme", "failing", "-", "in", "5m"]
    );
    assert_eq!(&rows[2][..3], ["shop.example.com", "uploaded", "issued"]);
    assert!(out.contains("(in 45d)"), "{out}");
    assert!(
        out.ends_with("new.example.com: urn:ietf:params:acme:error:connection: refused\\u{1b}[31m"),
        "the reason, escaped: {out}"
    );
    let shown = render_certificate(&failing, at(0));
    for line in [
        "state:       failing",
        "expires:     -",
        "redirect:    fleet default",
        "next try:    in 5m",
        "failures:    2",
    ] {
        assert!(shown.contains(line), "{line:?} missing in:\n{shown}");
    }
    assert!(
        render_certificate(&issued, at(0)).contains("expires:     2023-12-"),
        "{out}"
    );
}

fn traffic(requests: u64, rate: f64, errors: f64, p50: f64, p99: f64) -> TrafficFigures {
    TrafficFigures {
        requests,
        requests_per_second: rate,
        errors: (requests as f64 * errors) as u64,
        error_rate: errors,
        p50_ms: Some(p50),
        p99_ms: Some(p99),
    }
}

#[test]
fn top_lists_the_busiest_tenants_and_marks_a_rate_that_may_be_over() {
    let top = TrafficTop {
        window_seconds: 64.2,
        total: traffic(7_000, 109.4, 0.004, 2.04, 31.0),
        tenants: vec![
            TenantTraffic {
                tenant: "acme".into(),
                tracked: true,
                requests_min: 6_000,
                figures: traffic(6_000, 93.5, 0.0, 1.92, 12.3),
                ..Default::default()
            },
            TenantTraffic {
                tenant: "beta".into(),
                tracked: true,
                requests_min: 900,
                figures: traffic(1_000, 15.6, 0.25, 2.5, 15_400.0),
                ..Default::default()
            },
        ],
    };
    assert_eq!(
        render_top(&top),
        "last 64 s, all tenants: 109 req/s, 0.4% errors, p50 2.0 ms, p99 31 ms\n\
         \n\
         TENANT  REQ/S  ERRORS     P50    P99\n\
         acme     93.5      0%  1.9 ms  12 ms\n\
         beta    ≤15.6     25%  2.5 ms   15 s"
    );
    let quiet = TrafficTop {
        window_seconds: 3.0,
        ..Default::default()
    };
    assert_eq!(
        render_top(&quiet),
        "last 3 s, all tenants: 0.0 req/s, 0% errors, p50 -, p99 -\n\nno tenant requests"
    );
}

#[test]
fn a_tenants_traffic_says_when_it_is_not_among_the_busiest() {
    let counted = TenantTraffic {
        tenant: "acme".into(),
        tracked: true,
        requests_min: 60,
        figures: traffic(60, 1.0, 0.0005, 3.0, 9.0),
        window_seconds: Some(60.0),
    };
    assert_eq!(
        render_tenant_traffic(&counted),
        "traffic:  1.0 req/s, <0.1% errors, p50 3.0 ms, p99 9.0 ms over the last 60 s"
    );
    let bounded = TenantTraffic {
        tenant: "calm".into(),
        figures: TrafficFigures {
            requests: 12,
            requests_per_second: 0.2,
            ..Default::default()
        },
        window_seconds: Some(60.0),
        ..Default::default()
    };
    assert_eq!(
        render_tenant_traffic(&bounded),
        "traffic:  not among the busiest tenants of the last 60 s (at most 0.2 req/s)"
    );
    let none = TenantTraffic {
        window_seconds: Some(60.0),
        ..Default::default()
    };
    assert_eq!(
        render_tenant_traffic(&none),
        "traffic:  no requests in the last 60 s"
    );
}

#[test]
fn an_event_is_one_aligned_line_naming_its_object_and_router() {
    let e = Event {
        id: 7,
        at: at(0),
        kind: "server-offline".into(),
        level: EventLevel::Warning,
        server: Some("s1".into()),
        tenant: None,
        instance: None,
        cause: "2 health checks failed in a row, the last: connection refused".into(),
        router: "edge:8080 (pid 9)".into(),
    };
    assert_eq!(
        render_event(&e),
        "2023-11-14T22:13:20Z  warning  server-offline        s1            -                     \
         2 health checks failed in a row, the last: connection refused  (by edge:8080 (pid 9))"
    );
    let header_cause = events_header().find("CAUSE").unwrap();
    assert_eq!(
        render_event(&e).find("2 health"),
        Some(header_cause),
        "aligned"
    );
    let spawned = Event {
        kind: "spawned".into(),
        level: EventLevel::Normal,
        tenant: Some("acme".into()),
        instance: Some("acme:prod".into()),
        cause: "spawned on s1\x1b[2J".into(),
        ..e
    };
    let line = render_event(&spawned);
    assert!(line.contains("  normal   spawned  "), "{line}");
    assert!(
        line.contains("  acme:prod  "),
        "the instance is the object: {line}"
    );
    assert!(line.contains("spawned on s1\\u{1b}[2J"), "escaped: {line}");
}

#[test]
fn a_log_line_says_when_where_and_which_stream() {
    let l = LogLine {
        at: at(1),
        stream: LogStream::Stderr,
        message: "boom\x1b[31m".into(),
        server: "s2".into(),
        instance: "acme:prod".into(),
    };
    assert_eq!(
        render_log_line(&l),
        "2023-11-14T22:13:21Z s2 ERR boom\\u{1b}[31m"
    );
}
