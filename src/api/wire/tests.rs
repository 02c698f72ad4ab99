//! The wire types keep the JSON `docs/management-api.md` documents, and every
//! body survives the trip from one end to the other: what the CLI serializes,
//! the handlers deserialize to the same value, and the other way round.

use chrono::{TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::*;

/// The field names of a JSON object, sorted.
fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    keys
}

fn to_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("serializes")
}

/// Serializes `value` as one end does, reads it back as the other end does,
/// and serializes that again: a field the reader drops or refuses shows.
fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> Value {
    let sent = to_json(value);
    let read: T = serde_json::from_value(sent.clone())
        .unwrap_or_else(|e| panic!("the other end cannot read {sent}: {e}"));
    let again = to_json(&read);
    assert_eq!(again, sent, "changed on the way");
    sent
}

fn stats() -> ServerStats {
    ServerStats {
        server_id: "east".into(),
        status: ServerStatus::Online,
        capacity_mb: 1024,
        used_mb: 256,
        free_mb: 768,
        tenants: 3,
        instances: 2,
        reachable: true,
        running: Some(2),
        error: None,
        last_seen: Utc.timestamp_opt(1_700_000_000, 0).single(),
        routing_problem: None,
        cordoned: false,
    }
}

#[test]
fn the_status_answer_keeps_its_documented_fields() {
    let status = FleetStatus {
        servers: vec![stats()],
        tenants: 3,
        instances: 2,
        down_tenants: vec![DownTenant {
            domain: "acme.example.com".into(),
            tenant: "acme".into(),
            servers: vec!["east".into()],
        }],
        certificates_expiring: 1,
        expiring_certificates: vec![ExpiringCertificate {
            name: "*.example.com".into(),
            not_after: Utc
                .timestamp_opt(1_700_000_000, 0)
                .single()
                .unwrap_or_default(),
        }],
    };
    let json = round_trip(&status);
    assert_eq!(
        keys(&json),
        [
            "certificates_expiring",
            "down_tenants",
            "expiring_certificates",
            "instances",
            "servers",
            "tenants"
        ]
    );
    assert_eq!(
        keys(&json["expiring_certificates"][0]),
        ["name", "not_after"]
    );
    assert_eq!(json["tenants"], json!(3));
    assert_eq!(
        keys(&json["servers"][0]),
        [
            "capacity_mb",
            "cordoned",
            "error",
            "free_mb",
            "instances",
            "last_seen",
            "reachable",
            "routing_problem",
            "running",
            "server_id",
            "status",
            "tenants",
            "used_mb"
        ]
    );
    assert_eq!(
        json["down_tenants"],
        json!([{"domain": "acme.example.com", "tenant": "acme", "servers": ["east"]}])
    );
    let back: FleetStatus = serde_json::from_value(json).expect("reads");
    assert_eq!(back, status);
}

#[test]
fn a_status_without_down_tenants_still_reads() {
    // What a `slum serve` from before `down_tenants` answers.
    let old = json!({"servers": [], "tenants": 1, "instances": 0});
    let status: FleetStatus = serde_json::from_value(old).expect("reads");
    assert_eq!(status.tenants, 1);
    assert!(status.down_tenants.is_empty());
}

#[test]
fn a_server_is_listed_with_its_capacity_and_never_its_token() {
    let server = Server {
        id: "east".into(),
        url: "http://east.example.com".into(),
        region: Some("us-east".into()),
        capacity_mb: 1024,
        token: Some("tenement-secret".into()),
        used_capacity_mb: 256,
        ..Default::default()
    };
    let json = to_json(&vec![server]);
    assert_eq!(
        keys(&json[0]),
        [
            "capacity_mb",
            "cordoned",
            "created_at",
            "domain",
            "id",
            "last_seen",
            "region",
            "routing_problem",
            "status",
            "url",
            "used_capacity_mb"
        ]
    );
    assert_eq!(json[0]["used_capacity_mb"], json!(256));
    assert!(!json.to_string().contains("tenement-secret"), "{json}");
    let read: Vec<Server> = serde_json::from_value(json).expect("reads");
    assert_eq!(read[0].free_capacity_mb(), 768);
}

#[test]
fn a_tenant_and_an_instance_keep_their_documented_fields() {
    let tenant = Tenant {
        domain: "c1.example.com".into(),
        name: "c1".into(),
        server_id: "east".into(),
        process: "api".into(),
        instance_id: "prod".into(),
        failover: FailoverPolicy::Respawn,
        ..Default::default()
    };
    let json = round_trip(&tenant);
    assert_eq!(
        keys(&json),
        [
            "created_at",
            "domain",
            "failover",
            "instance_id",
            "name",
            "process",
            "server_id"
        ]
    );
    assert_eq!(json["failover"], json!("respawn"));

    let status = InstanceStatus {
        instance: Instance {
            tenant: "c1".into(),
            instance_id: "prod".into(),
            process: "api".into(),
            server_id: "east".into(),
            memory_mb: 128,
            ..Default::default()
        },
        state: InstanceState::Running,
        health: Some("healthy".into()),
        uptime_secs: Some(5),
        restarts: Some(0),
        error: None,
        domains: vec!["c1.example.com".into()],
    };
    let json = round_trip(&status);
    assert_eq!(
        keys(&json),
        [
            "domains",
            "error",
            "health",
            "instance",
            "restarts",
            "state",
            "uptime_secs"
        ]
    );
    assert_eq!(
        keys(&json["instance"]),
        [
            "created_at",
            "desired",
            "instance_id",
            "memory_mb",
            "moving_to",
            "observed",
            "observed_at",
            "process",
            "server_id",
            "tenant"
        ]
    );
}

#[test]
fn a_created_token_carries_its_secret_once_beside_the_token() {
    let created = CreatedToken {
        token: ApiToken {
            id: "tok_1".into(),
            name: "ci".into(),
            created_at: Utc.timestamp_opt(1_700_000_000, 0).single().expect("time"),
        },
        secret: "slum_abc".into(),
    };
    let json = round_trip(&created);
    assert_eq!(keys(&json), ["secret", "token"]);
    assert_eq!(keys(&json["token"]), ["created_at", "id", "name"]);
    assert_eq!(json["secret"], json!("slum_abc"));
}

#[test]
fn an_error_always_names_field_server_and_key_and_its_extras_only_when_set() {
    let plain = ErrorBody {
        error: Problem {
            kind: "not_found".into(),
            message: "server 'east' not found".into(),
            server: Some("east".into()),
            key: Some("east".into()),
            ..Default::default()
        },
    };
    assert_eq!(
        to_json(&plain),
        json!({"error": {"kind": "not_found", "message": "server 'east' not found",
                         "field": null, "server": "east", "key": "east"}})
    );
    let dependents = Problem {
        kind: "has_dependents".into(),
        message: "server 'east' has 1 tenant(s) and 2 instance(s)".into(),
        tenants: Some(1),
        instances: Some(2),
        ..Default::default()
    };
    let json = to_json(&dependents);
    assert_eq!(
        keys(&json),
        [
            "field",
            "instances",
            "key",
            "kind",
            "message",
            "server",
            "tenants"
        ]
    );
    let read: Problem = serde_json::from_value(json).expect("reads");
    assert_eq!(read, dependents);
    // An error of another shape's making (a proxy in front, an older slum)
    // still reads when it has a message.
    let bare: ErrorBody =
        serde_json::from_value(json!({"error": {"message": "no"}})).expect("reads");
    assert_eq!(
        (bare.error.kind.as_str(), bare.error.message.as_str()),
        ("", "no")
    );
}

#[test]
fn request_bodies_leave_out_what_is_not_given_and_read_back_the_same() {
    let minimal = NewTenant {
        domain: "c1.test".into(),
        name: None,
        server_id: Some("east".into()),
        process: "api".into(),
        instance_id: "prod".into(),
        auto: false,
        region: None,
        failover: None,
    };
    assert_eq!(
        round_trip(&minimal),
        json!({"domain": "c1.test", "server_id": "east", "process": "api", "instance_id": "prod"})
    );
    let auto = NewInstance {
        tenant: "c1".into(),
        process: "api".into(),
        instance_id: "backup".into(),
        server_id: None,
        memory_mb: Some(64),
        auto: true,
        region: Some("eu".into()),
        distinct_region: true,
    };
    assert_eq!(
        round_trip(&auto),
        json!({"tenant": "c1", "process": "api", "instance_id": "backup", "memory_mb": 64,
               "auto": true, "region": "eu", "distinct_region": true})
    );
    let server = NewServer {
        id: "east".into(),
        url: "http://east:8000".into(),
        region: None,
        capacity_mb: 1024,
        token: None,
        domain: None,
    };
    assert_eq!(
        round_trip(&server),
        json!({"id": "east", "url": "http://east:8000", "capacity_mb": 1024})
    );
    assert_eq!(round_trip(&ServerPatch::default()), json!({}));
    assert_eq!(round_trip(&TenantPatch::default()), json!({}));
    assert_eq!(
        round_trip(&MoveTo {
            server_id: "west".into()
        }),
        json!({"server_id": "west"})
    );
    assert_eq!(
        round_trip(&NewToken { name: "ci".into() }),
        json!({"name": "ci"})
    );
    assert_eq!(round_trip(&ListQuery::default()), json!({}));
}

#[test]
fn patch_bodies_tell_null_from_absent() {
    let c: ServerPatch = serde_json::from_str(r#"{"region":null}"#).unwrap();
    assert_eq!(c.region, Some(None));
    assert_eq!(c.domain, None);
    let c: ServerPatch = serde_json::from_str(r#"{"domain":"x.test"}"#).unwrap();
    assert_eq!(c.domain, Some(Some("x.test".into())));
    let e = serde_json::from_str::<ServerPatch>(r#"{"regoin":"eu"}"#)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("unknown field `regoin`"), "{e}");
    // A cleared field goes out as `null`, so a client can clear it too.
    let clear = ServerPatch {
        region: Some(None),
        capacity_mb: Some(512),
        ..Default::default()
    };
    assert_eq!(
        round_trip(&clear),
        json!({"region": null, "capacity_mb": 512})
    );
}
