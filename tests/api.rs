//! The management API over real HTTP: authentication, CRUD, the error contract
//! of docs/management-api.md, route table updates, and spawn, move and stop
//! against real tenement servers.
//!
//! Each test serves the API in-process on 127.0.0.1:0 over its own fleet
//! database. Servers registered without the harness point at a loopback port
//! nothing listens on, so every call that reaches one fails fast.

mod common;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use slum::route_table::{Decision, DomainRoute};
use slum::serve::AppState;
use slum::serve::HealthPolicy;
use slum::SlumDb;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use common::ask;

/// A management API served in-process over a fresh fleet database.
struct Api {
    base: String,
    /// A valid token, made directly in the database.
    secret: String,
    http: reqwest::Client,
    state: AppState,
    test_db: common::TestDb,
    stop: watch::Sender<bool>,
    served: JoinHandle<anyhow::Result<()>>,
}

impl Api {
    async fn start() -> Api {
        let (test_db, db) = common::temp_db().await;
        let state = AppState::new(db.clone(), HealthPolicy::default())
            .await
            .expect("state");
        let (_, secret) = db.create_api_token("tests").await.expect("token");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = watch::channel(false);
        let served = tokio::spawn(slum::api::serve(listener, state.clone(), stopped));
        let http = reqwest::Client::builder()
            .no_proxy()
            // Spawns and moves wait for tenement.
            .timeout(Duration::from_secs(90))
            .build()
            .expect("client");
        Api {
            base,
            secret,
            http,
            state,
            test_db,
            stop,
            served,
        }
    }

    fn db(&self) -> &SlumDb {
        &self.state.db
    }

    /// The fleet database's rows, read straight from it.
    async fn dump(&self) -> Vec<String> {
        self.test_db.dump().await
    }

    /// A request with no token at all.
    fn bare(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// `method path` with the valid token and an optional JSON body; the status
    /// and the JSON answer (`Null` when there is no body).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.bare(method, path).bearer_auth(&self.secret);
        if let Some(body) = body {
            req = req.json(&body);
        }
        send(req).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// A raw (possibly not JSON) body.
    async fn send_raw(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        send(
            self.bare(method, path)
                .bearer_auth(&self.secret)
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    /// Registers a server on an unreachable loopback port.
    async fn add_server(&self, id: &str, capacity_mb: i64) {
        let (status, body) = self
            .post(
                "/v1/servers",
                json!({"id": id, "url": "http://127.0.0.1:9", "capacity_mb": capacity_mb}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    async fn add_tenant(&self, domain: &str, server: &str) {
        let (status, body) = self
            .post(
                "/v1/tenants",
                json!({"domain": domain, "server_id": server, "process": "api", "instance_id": "prod"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Registers a real tenement server, with the region and capacity given.
    async fn add_real_server(
        &self,
        server: &slum::local_fleet::LocalServer,
        region: Option<&str>,
        capacity_mb: i64,
    ) {
        let r = server.record();
        let (status, body) = self
            .post(
                "/v1/servers",
                json!({"id": r.id, "url": r.url, "capacity_mb": capacity_mb, "region": region,
                       "token": r.token, "domain": r.domain}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Where the router would send a request for `host` right now.
    fn route(&self, host: &str) -> Routed {
        match self.state.routes.current().route(host) {
            Decision::Forward { primary, .. } => Routed::Forward {
                server: primary.upstream.server_id.clone(),
            },
            Decision::Spawn(r) => Routed::Spawn(*r),
            Decision::ServerDown(down) => Routed::ServerDown {
                servers: down.servers(),
            },
            Decision::UnknownHost => Routed::UnknownHost,
        }
    }
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request to the API");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    if text.is_empty() {
        return (status, Value::Null);
    }
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {status} {text:?}"));
    (status, value)
}

/// Asserts the error shape of the contract and returns its object.
fn error_of(status: StatusCode, body: &Value, want: StatusCode, kind: &str) -> Value {
    assert_eq!(status, want, "{body}");
    let e = &body["error"];
    assert_eq!(e["kind"], kind, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    e.clone()
}

#[tokio::test]
async fn health_and_metrics_answer_without_a_token() {
    let api = Api::start().await;
    let (status, body) = send(api.bare(Method::GET, "/health")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    // The gauge is set by route table reloads, so an API change shows in it.
    api.add_server("east", 1024).await;
    api.add_tenant("acme.example.com", "east").await;
    let resp = api
        .bare(Method::GET, "/metrics")
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/plain; version=0.0.4");
    let text = resp.text().await.expect("body");
    assert!(text.contains("slum_route_table_domains 1"), "{text}");
    assert!(text.contains("slum_servers{state=\"unknown\"} 1"), "{text}");
}

#[tokio::test]
async fn every_v1_route_refuses_a_missing_or_wrong_token() {
    let api = Api::start().await;
    // Records each mutation would change if it got through.
    api.add_server("east", 1024).await;
    api.add_server("spare", 1024).await;
    api.add_tenant("acme.example.com", "east").await;
    let (other, _) = api.db().create_api_token("other").await.expect("token");
    let before = api.dump().await;
    let tokens_before = api.db().list_api_tokens().await.expect("tokens");

    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/v1/servers".into(), None),
        (
            Method::POST,
            "/v1/servers".into(),
            Some(json!({"id": "west", "url": "http://127.0.0.1:9", "capacity_mb": 1})),
        ),
        (Method::GET, "/v1/servers/east".into(), None),
        (
            Method::PATCH,
            "/v1/servers/east".into(),
            Some(json!({"capacity_mb": 1})),
        ),
        (Method::DELETE, "/v1/servers/spare".into(), None),
        (Method::GET, "/v1/servers/east/stats".into(), None),
        (Method::POST, "/v1/servers/east/drain".into(), None),
        (Method::GET, "/v1/servers/east/drain".into(), None),
        (Method::POST, "/v1/servers/east/undrain".into(), None),
        (Method::GET, "/v1/traffic/top".into(), None),
        (Method::GET, "/v1/traffic/servers".into(), None),
        (Method::GET, "/v1/traffic/tenants/acme".into(), None),
        (Method::GET, "/v1/tenants".into(), None),
        (
            Method::POST,
            "/v1/tenants".into(),
            Some(
                json!({"domain": "b.example.com", "server_id": "east", "process": "api", "instance_id": "prod"}),
            ),
        ),
        (Method::GET, "/v1/tenants/acme.example.com".into(), None),
        (
            Method::PATCH,
            "/v1/tenants/acme.example.com".into(),
            Some(json!({"process": "web"})),
        ),
        (
            Method::POST,
            "/v1/tenants/acme.example.com/move".into(),
            Some(json!({"server_id": "spare"})),
        ),
        (Method::DELETE, "/v1/tenants/acme.example.com".into(), None),
        (Method::GET, "/v1/instances".into(), None),
        (
            Method::POST,
            "/v1/instances".into(),
            Some(
                json!({"tenant": "acme", "process": "api", "instance_id": "prod", "server_id": "east"}),
            ),
        ),
        (Method::GET, "/v1/instances/acme:prod".into(), None),
        (Method::DELETE, "/v1/instances/acme:prod".into(), None),
        (Method::GET, "/v1/status".into(), None),
        (Method::POST, "/v1/reconcile".into(), None),
        (Method::GET, "/v1/tokens".into(), None),
        (
            Method::POST,
            "/v1/tokens".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, format!("/v1/tokens/{}", other.id), None),
        (Method::GET, "/v1/certificates".into(), None),
        (
            Method::GET,
            "/v1/certificates/acme.example.com".into(),
            None,
        ),
        (
            Method::PUT,
            "/v1/certificates/acme.example.com".into(),
            Some(json!({"cert_pem": "x", "key_pem": "y"})),
        ),
        (
            Method::DELETE,
            "/v1/certificates/acme.example.com".into(),
            None,
        ),
        (
            Method::POST,
            "/v1/certificates/acme.example.com/order".into(),
            None,
        ),
    ];
    let wrong = format!("slum_{}", "0".repeat(64));
    for (method, path, body) in &routes {
        let variants: [(&str, Option<String>); 4] = [
            ("no token", None),
            ("wrong token", Some(format!("Bearer {wrong}"))),
            ("another scheme", Some(format!("Basic {}", api.secret))),
            ("empty bearer", Some("Bearer ".to_owned())),
        ];
        for (what, authorization) in variants {
            let mut req = api.bare(method.clone(), path);
            if let Some(a) = authorization {
                req = req.header("authorization", a);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.expect("request");
            assert_eq!(
                resp.headers().get("www-authenticate").map(|v| v.as_bytes()),
                Some(&b"Bearer"[..]),
                "{what}: {method} {path}"
            );
            let status = resp.status();
            let body: Value = resp.json().await.expect("JSON error");
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {method} {path}");
            assert_eq!(
                body["error"]["kind"], "unauthorized",
                "{what}: {method} {path}"
            );
            // The presented secret is never echoed back.
            assert!(!body.to_string().contains(&api.secret));
        }
    }
    assert_eq!(before, api.dump().await, "nothing changed");
    assert_eq!(
        tokens_before,
        api.db().list_api_tokens().await.expect("tokens")
    );
    // And the same routes work with the token (one read to prove the contrast).
    let (status, _) = api.get("/v1/servers").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn servers_are_created_read_patched_and_deleted() {
    let api = Api::start().await;
    let (status, created) = api
        .post(
            "/v1/servers",
            json!({"id": "east", "url": "http://127.0.0.1:9/", "region": " us-east ",
                   "capacity_mb": 2048, "token": "tenement-secret", "domain": "East.Fleet.Test."}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["id"], "east");
    assert_eq!(created["url"], "http://127.0.0.1:9", "normalised");
    assert_eq!(created["region"], "us-east");
    assert_eq!(created["domain"], "east.fleet.test");
    assert_eq!(created["capacity_mb"], 2048);
    assert_eq!(created["status"], "unknown");
    assert!(
        created.get("token").is_none(),
        "token never returned: {created}"
    );
    assert!(created["created_at"].is_string());
    // ...but it is stored, for slum's calls to the server.
    let stored = api.db().get_server("east").await.expect("stored");
    assert_eq!(stored.token.as_deref(), Some("tenement-secret"));

    let (status, one) = api.get("/v1/servers/east").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, created);
    api.add_server("west", 512).await;
    let (status, all) = api.get("/v1/servers").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = all
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["east", "west"]);
    assert!(!all.to_string().contains("tenement-secret"));

    // PATCH changes what it names and keeps the rest.
    let (status, patched) = api
        .patch(
            "/v1/servers/east",
            json!({"capacity_mb": 4096, "status": "draining"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["capacity_mb"], 4096);
    assert_eq!(patched["status"], "draining");
    assert_eq!(patched["region"], "us-east");
    assert_eq!(patched["domain"], "east.fleet.test");
    assert_eq!(patched["url"], "http://127.0.0.1:9");
    let stored = api.db().get_server("east").await.expect("stored");
    assert_eq!(stored.token.as_deref(), Some("tenement-secret"), "kept");

    // null clears an optional field; a new token replaces the old.
    let (status, patched) = api
        .patch(
            "/v1/servers/east",
            json!({"region": null, "token": "rotated"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["region"], Value::Null);
    assert_eq!(patched["capacity_mb"], 4096);
    let stored = api.db().get_server("east").await.expect("stored");
    assert_eq!(stored.token.as_deref(), Some("rotated"));

    let (status, body) = api.delete("/v1/servers/east").await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = api.get("/v1/servers/east").await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(e["key"], "east");
    assert_eq!(e["server"], "east");
    let (status, body) = api.delete("/v1/servers/east").await;
    error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn tenants_are_created_listed_patched_and_deleted() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    api.add_server("west", 1024).await;

    let (status, created) = api
        .post(
            "/v1/tenants",
            json!({"domain": "Customer-1.Example.com.", "server_id": "east",
                   "process": "api", "instance_id": "prod"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["domain"], "customer-1.example.com");
    assert_eq!(created["name"], "customer-1", "name from the first label");
    assert_eq!(created["server_id"], "east");
    let (status, named) = api
        .post(
            "/v1/tenants",
            json!({"domain": "www.acme.test", "name": "acme", "server_id": "west",
                   "process": "web", "instance_id": "site"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    assert_eq!(named["name"], "acme");

    // Looked up case-insensitively.
    let (status, one) = api.get("/v1/tenants/CUSTOMER-1.example.com").await;
    assert_eq!((status, &one), (StatusCode::OK, &created));
    let (_, all) = api.get("/v1/tenants").await;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    let (status, on_west) = api.get("/v1/tenants?server=west").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(on_west, json!([named]));
    let (status, body) = api.get("/v1/tenants?server=nowhere").await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(e["server"], "nowhere");

    let (status, patched) = api
        .patch(
            "/v1/tenants/customer-1.example.com",
            json!({"instance_id": "canary"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["instance_id"], "canary");
    assert_eq!(patched["process"], "api", "kept");
    assert_eq!(patched["server_id"], "east", "kept");
    assert_eq!(patched["name"], "customer-1", "kept");
    assert_eq!(patched["created_at"], created["created_at"]);

    let (status, _) = api.delete("/v1/tenants/customer-1.example.com").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.get("/v1/tenants/customer-1.example.com").await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(e["key"], "customer-1.example.com");
    assert_eq!(e["server"], Value::Null);
}

#[tokio::test]
async fn each_error_kind_has_its_status_and_names_what_it_is_about() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    api.add_tenant("acme.example.com", "east").await;
    let before = api.dump().await;

    // Invalid: 422 naming the field.
    let (status, body) = api
        .post(
            "/v1/servers",
            json!({"id": "East_1", "url": "http://127.0.0.1:9", "capacity_mb": 1}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(e["field"], "server.id");
    assert!(
        e["message"].as_str().unwrap_or("").contains("East_1"),
        "{e}"
    );
    let (status, body) = api
        .patch("/v1/servers/east", json!({"capacity_mb": -5}))
        .await;
    let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(e["field"], "server.capacity_mb");
    let (status, body) = api
        .post(
            "/v1/tenants",
            json!({"domain": "bad domain.com", "server_id": "east", "process": "api", "instance_id": "prod"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(e["field"], "tenant.domain");
    let (status, body) = api.get("/v1/instances/no-colon").await;
    let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(e["field"], "instance");

    // AlreadyExists: 409 naming the key.
    let (status, body) = api
        .post(
            "/v1/servers",
            json!({"id": "east", "url": "http://127.0.0.1:9", "capacity_mb": 1}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::CONFLICT, "already_exists");
    assert_eq!(e["key"], "east");
    let (status, body) = api
        .post(
            "/v1/tenants",
            json!({"domain": "ACME.example.com", "server_id": "east", "process": "api", "instance_id": "prod"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::CONFLICT, "already_exists");
    assert_eq!(e["key"], "acme.example.com");

    // HasDependents: 409 with the counts.
    let (status, body) = api.delete("/v1/servers/east").await;
    let e = error_of(status, &body, StatusCode::CONFLICT, "has_dependents");
    assert_eq!(
        (&e["key"], &e["server"], &e["tenants"], &e["instances"]),
        (&json!("east"), &json!("east"), &json!(1), &json!(0))
    );

    // NotFound: 404 naming the key, and the server when it is one.
    let (status, body) = api
        .post(
            "/v1/tenants",
            json!({"domain": "b.example.com", "server_id": "nowhere", "process": "api", "instance_id": "prod"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        (&e["key"], &e["server"]),
        (&json!("nowhere"), &json!("nowhere"))
    );
    let (status, body) = api.get("/v1/instances/acme:prod").await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        (&e["key"], &e["server"]),
        (&json!("acme:prod"), &Value::Null)
    );
    let (status, body) = api.delete("/v1/tokens/feedfacecafe").await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(e["key"], "feedfacecafe");

    // InsufficientCapacity: 507, refused before the server is asked.
    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "acme", "process": "api", "instance_id": "prod",
                   "server_id": "east", "memory_mb": 2048}),
        )
        .await;
    let e = error_of(
        status,
        &body,
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_capacity",
    );
    assert_eq!(e["server"], "east");
    assert_eq!(
        (&e["requested_mb"], &e["free_mb"]),
        (&json!(2048), &json!(1024))
    );

    // ServerUnreachable: 502 naming the server; the spawn left nothing behind.
    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "acme", "process": "api", "instance_id": "prod", "server_id": "east"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::BAD_GATEWAY, "server_unreachable");
    assert_eq!(e["server"], "east");
    assert_eq!(before, api.dump().await, "no error changed the fleet");

    // ServerUnavailable: 409 for a draining server.
    let (status, _) = api
        .patch("/v1/servers/east", json!({"status": "draining"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "acme", "process": "api", "instance_id": "prod", "server_id": "east"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::CONFLICT, "server_unavailable");
    assert_eq!(e["server"], "east");
    assert!(
        e["message"].as_str().unwrap_or("").contains("draining"),
        "{e}"
    );
    assert!(api
        .db()
        .list_instance_records()
        .await
        .expect("list")
        .is_empty());
}

/// A tenant added without a name must not join another customer's tenant
/// because its domain starts with the same label.
#[tokio::test]
async fn a_default_tenant_name_taken_by_another_customer_is_refused() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    api.add_tenant("a.example.com", "east").await;
    let before = api.dump().await;
    for placement in [json!({"server_id": "east"}), json!({"auto": true})] {
        let mut body = json!({"domain": "a.other-customer.net", "process": "api",
                              "instance_id": "prod"});
        body.as_object_mut()
            .expect("object")
            .extend(placement.as_object().expect("object").clone());
        let (status, answer) = api.post("/v1/tenants", body).await;
        let e = error_of(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert_eq!(e["field"], "tenant.name", "{placement}: {answer}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains("--name"), "{message}");
        assert!(message.contains("a.example.com"), "{message}");
    }
    assert_eq!(before, api.dump().await, "the refusals changed nothing");
    let (status, answer) = api
        .post(
            "/v1/tenants",
            json!({"domain": "a.other-customer.net", "name": "other-a", "server_id": "east",
                   "process": "api", "instance_id": "prod"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["name"], "other-a");
}

/// A terminal escape in a stored field would reach the terminal of every
/// operator who lists it: each free-text field refuses control characters,
/// naming the field, and nothing is changed.
#[tokio::test]
async fn control_characters_are_refused_in_every_free_text_field() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    let before = api.dump().await;
    let escape = "\u{1b}[31mx";
    let cases = [
        (
            Method::POST,
            "/v1/servers",
            json!({"id": "west", "url": "http://127.0.0.1:9", "capacity_mb": 1, "region": escape}),
            "server.region",
        ),
        (
            Method::PATCH,
            "/v1/servers/east",
            json!({"region": escape}),
            "server.region",
        ),
        (
            Method::POST,
            "/v1/servers",
            json!({"id": "west", "url": format!("http://127.0.0.1:9/{escape}"), "capacity_mb": 1}),
            "server.url",
        ),
        (
            Method::PATCH,
            "/v1/servers/east",
            json!({"url": "http://127.0.0.1:9/\n"}),
            "server.url",
        ),
        (
            Method::PATCH,
            "/v1/servers/east",
            json!({"domain": format!("east{escape}.test")}),
            "server.domain",
        ),
        (
            Method::POST,
            "/v1/tenants",
            json!({"domain": "acme.example.com", "auto": true, "region": escape,
                   "process": "api", "instance_id": "prod"}),
            "region",
        ),
        (
            Method::POST,
            "/v1/tenants",
            json!({"domain": "acme.example.com", "name": format!("acme{escape}"),
                   "server_id": "east", "process": "api", "instance_id": "prod"}),
            "tenant.name",
        ),
        (
            Method::POST,
            "/v1/instances",
            json!({"tenant": "acme", "process": "api", "instance_id": "prod",
                   "auto": true, "region": escape}),
            "region",
        ),
        (
            Method::POST,
            "/v1/tokens",
            json!({"name": format!("ci{escape}")}),
            "token.name",
        ),
    ];
    for (method, path, body, field) in cases {
        let (status, answer) = api.call(method.clone(), path, Some(body.clone())).await;
        let e = error_of(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert_eq!(e["field"], field, "{method} {path} {body}: {answer}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            !message.chars().any(char::is_control),
            "the message echoes the control character raw: {message:?}"
        );
    }
    assert_eq!(before, api.dump().await, "no refusal changed the fleet");
    let (_, tokens) = api.get("/v1/tokens").await;
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");
}

#[tokio::test]
async fn malformed_requests_are_400_naming_the_problem() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    api.add_tenant("acme.example.com", "east").await;
    let before = api.dump().await;

    let cases: [(Method, &str, &str, &str); 9] = [
        (Method::POST, "/v1/servers", "{not json", "parse"),
        (Method::POST, "/v1/servers", "", "EOF"),
        (
            Method::POST,
            "/v1/servers",
            r#"{"id":"w","url":"http://127.0.0.1:9","capacity_mb":1,"regoin":"eu"}"#,
            "unknown field `regoin`",
        ),
        (
            Method::POST,
            "/v1/servers",
            r#"{"id":"w","url":"http://127.0.0.1:9","capacity_mb":"lots"}"#,
            "capacity_mb",
        ),
        (
            Method::POST,
            "/v1/servers",
            r#"{"id":"w","capacity_mb":1}"#,
            "missing field `url`",
        ),
        (
            Method::PATCH,
            "/v1/servers/east",
            r#"{"status":"asleep"}"#,
            "status",
        ),
        (
            // The domain is the key of a tenant, not a field to change.
            Method::PATCH,
            "/v1/tenants/acme.example.com",
            r#"{"domain":"other.example.com"}"#,
            "unknown field `domain`",
        ),
        (
            Method::POST,
            "/v1/tenants/acme.example.com/move",
            r#""east""#,
            "invalid type",
        ),
        (
            Method::POST,
            "/v1/tenants/acme.example.com/move",
            r#"["east"]"#,
            "must be a JSON object",
        ),
    ];
    for (method, route, body, names) in cases {
        let (status, answer) = api.send_raw(method.clone(), route, body).await;
        let e = error_of(status, &answer, StatusCode::BAD_REQUEST, "bad_request");
        let message = e["message"].as_str().unwrap_or("");
        assert!(
            message.contains(names),
            "{method} {route} {body:?}: {message}"
        );
    }
    // A query parameter the route does not take.
    let (status, answer) = api.get("/v1/tenants?srv=east").await;
    let e = error_of(status, &answer, StatusCode::BAD_REQUEST, "bad_request");
    assert!(e["message"].as_str().unwrap_or("").contains("srv"), "{e}");
    // Without a Content-Type, a JSON body is still read (curl -d sends a form type).
    let resp = api
        .bare(Method::PATCH, "/v1/servers/east")
        .bearer_auth(&api.secret)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"capacity_mb": 2048}"#)
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        api.db().get_server("east").await.expect("east").capacity_mb,
        2048
    );
    let after_patch = api.dump().await;
    assert_ne!(before, after_patch);

    // Unknown routes and methods answer in the same JSON shape.
    let (status, answer) = api.get("/v1/nothing-here").await;
    error_of(status, &answer, StatusCode::NOT_FOUND, "not_found");
    let (status, answer) = api.call(Method::PUT, "/v1/servers/east", None).await;
    error_of(
        status,
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, answer) = send(api.bare(Method::POST, "/health")).await;
    error_of(
        status,
        &answer,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    // A method not allowed on a /v1 route still needs a token first.
    let (status, _) = send(api.bare(Method::PUT, "/v1/servers/east")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_route_table_follows_api_changes_at_once() {
    let api = Api::start().await;
    // No follower runs in these tests: only the API's own reloads move the table.
    assert_eq!(api.route("x.example.com"), Routed::UnknownHost);
    api.add_server("east", 1024).await;
    api.add_server("west", 1024).await;
    api.add_tenant("x.example.com", "east").await;
    match api.route("x.example.com") {
        Routed::Spawn(r) => {
            assert_eq!((r.tenant.as_str(), r.home_server.as_str()), ("x", "east"))
        }
        other => panic!("expected Spawn on east, got {other:?}"),
    }

    let (status, _) = api
        .patch("/v1/servers/east", json!({"status": "offline"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        matches!(api.route("x.example.com"), Routed::ServerDown { ref servers } if servers == &["east"]),
        "{:?}",
        api.route("x.example.com")
    );

    let (status, moved) = api
        .post(
            "/v1/tenants/x.example.com/move",
            json!({"server_id": "west"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    match api.route("x.example.com") {
        Routed::Spawn(r) => assert_eq!(r.home_server, "west"),
        other => panic!("expected Spawn on west, got {other:?}"),
    }

    let (status, _) = api
        .patch("/v1/tenants/x.example.com", json!({"process": "web"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    match api.route("x.example.com") {
        Routed::Spawn(r) => assert_eq!(r.process, "web"),
        other => panic!("expected Spawn of web, got {other:?}"),
    }

    let (status, _) = api.delete("/v1/tenants/x.example.com").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.route("x.example.com"), Routed::UnknownHost);
    let (status, _) = api.delete("/v1/servers/west").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(api.state.routes.current().upstream("west").is_none());
}

#[tokio::test]
async fn moving_a_tenant_without_an_instance_changes_only_its_home() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    api.add_server("west", 1024).await;
    api.add_server("north", 1024).await;
    api.add_tenant("acme.example.com", "east").await;

    let (status, moved) = api
        .post(
            "/v1/tenants/ACME.example.com/move",
            json!({"server_id": "west"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["server_id"], "west");
    assert_eq!(moved["domain"], "acme.example.com");
    let stored = api
        .db()
        .get_tenant_by_domain("acme.example.com")
        .await
        .expect("tenant");
    assert_eq!(stored.server_id, "west");

    assert_eq!(moved["moved"], true);

    // To where it already is: nothing to do, the same tenant, said so.
    let before = api.dump().await;
    let (status, mut again) = api
        .post(
            "/v1/tenants/acme.example.com/move",
            json!({"server_id": "west"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["moved"], false, "{again}");
    let mut moved = moved;
    again["moved"] = json!(null);
    moved["moved"] = json!(null);
    assert_eq!(again, moved);
    assert_eq!(before, api.dump().await);

    // Refusals change nothing.
    let (status, _) = api
        .patch("/v1/servers/north", json!({"status": "draining"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = api.dump().await;
    let (status, body) = api
        .post(
            "/v1/tenants/acme.example.com/move",
            json!({"server_id": "north"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::CONFLICT, "server_unavailable");
    assert_eq!(e["server"], "north");
    let (status, body) = api
        .post(
            "/v1/tenants/acme.example.com/move",
            json!({"server_id": "nowhere"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(e["server"], "nowhere");
    let (status, body) = api
        .post(
            "/v1/tenants/acme.example.com/move",
            json!({"server_id": "No Such"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(e["field"], "server_id");
    let (status, body) = api
        .post(
            "/v1/tenants/other.example.com/move",
            json!({"server_id": "east"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(e["key"], "other.example.com");
    let (status, body) = api
        .post(
            "/v1/tenants/acme.example.com/move",
            json!({"server": "east"}),
        )
        .await;
    error_of(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(before, api.dump().await);
}

#[tokio::test]
async fn tokens_made_through_the_api_work_until_revoked() {
    let api = Api::start().await;
    let (status, created) = api.post("/v1/tokens", json!({"name": "ci"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(
        secret.starts_with("slum_") && secret.len() == 69,
        "{secret}"
    );
    assert_eq!(created["token"]["name"], "ci");
    let id = created["token"]["id"].as_str().expect("id").to_owned();

    // The new secret works on its own.
    let (status, listed) = send(api.bare(Method::GET, "/v1/tokens").bearer_auth(&secret)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let names: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["tests", "ci"]);
    assert!(!listed.to_string().contains(&secret), "no secrets listed");
    assert!(
        !listed.to_string().contains(&api.secret),
        "no secrets listed"
    );

    let (status, body) = api.post("/v1/tokens", json!({"name": "  "})).await;
    let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(e["field"], "token.name");

    let (status, _) = api.delete(&format!("/v1/tokens/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = send(api.bare(Method::GET, "/v1/tokens").bearer_auth(&secret)).await;
    error_of(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    // The other token is untouched.
    let (status, _) = api.get("/v1/tokens").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn status_reports_every_server_and_the_fleet_totals() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    api.add_server("west", 512).await;
    api.add_tenant("a.example.com", "east").await;
    api.add_tenant("b.example.com", "east").await;
    api.add_tenant("c.example.com", "west").await;
    let (status, body) = api.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["tenants"], &body["instances"]),
        (&json!(3), &json!(0))
    );
    let servers = body["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["server_id"], "east");
    assert_eq!(servers[0]["tenants"], 2);
    assert_eq!(servers[1]["server_id"], "west");
    assert_eq!(servers[1]["capacity_mb"], 512);
    for s in servers {
        // Nothing listens there: asked, and the answer says why not.
        assert_eq!(s["reachable"], false, "{s}");
        assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()), "{s}");
    }
    let (status, stats) = api.get("/v1/servers/west/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats, servers[1]);
}

#[tokio::test]
async fn stop_ends_the_api_gracefully() {
    let api = Api::start().await;
    let (status, _) = api.get("/v1/servers").await;
    assert_eq!(status, StatusCode::OK);
    api.stop.send(true).expect("stop");
    let served = tokio::time::timeout(Duration::from_secs(20), api.served)
        .await
        .expect("serve returned after stop")
        .expect("serve task");
    assert!(served.is_ok(), "{served:?}");
    let refused = api.http.get(format!("{}/health", api.base)).send().await;
    assert!(refused.is_err(), "still answering after stop");
}

/// A server whose tenement routes by another domain than the one slum would
/// send it is refused, naming the `--domain` to use, and nothing is recorded:
/// a domain it does not route by, none (the url's host, where tenement's
/// default is localhost), and a subdomain of its own (tenement would take
/// the process label for an instance's). The right one is taken; a PATCH to
/// a wrong one is refused too. A server that cannot be asked is still added.
#[tokio::test]
async fn a_server_that_routes_by_another_domain_is_refused_naming_the_domain_to_use() {
    let Some(fleet) = common::fleet(1).await else {
        return;
    };
    let s1 = &fleet.servers[0];
    let record = s1.record();
    let api = Api::start().await;
    let url_host = s1.ip.to_string();
    let parent = format!("api.{}", s1.domain);
    let before = api.dump().await;
    for (domain, slum_domain, answered) in [
        (
            Some("elsewhere.test"),
            "elsewhere.test",
            "its own /health for 'probe.slum-routing-probe.elsewhere.test'",
        ),
        (
            None,
            url_host.as_str(),
            "its own /health for 'probe.slum-routing-probe.",
        ),
        (Some(parent.as_str()), parent.as_str(), "parent domain"),
    ] {
        let (status, body) = api
            .post(
                "/v1/servers",
                json!({"id": "s1", "url": record.url, "capacity_mb": 1024,
                       "token": record.token, "domain": domain}),
            )
            .await;
        let e = error_of(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "domain_mismatch",
        );
        assert_eq!(e["server"], "s1", "{body}");
        assert_eq!(e["domain"], slum_domain, "{body}");
        assert_eq!(e["field"], "server.domain", "{body}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!(
                "server 's1' routes by a different domain than '{slum_domain}'"
            )),
            "{message}"
        );
        assert!(message.contains(answered), "{message}");
        assert!(
            message.contains(&format!("`ten serve --domain {slum_domain}`")),
            "{message}"
        );
        assert_eq!(
            api.dump().await,
            before,
            "a refused add changed the database"
        );
    }

    api.add_real_server(s1, None, 1024).await;
    let (_, added) = api.get("/v1/servers/s1").await;
    assert_eq!(added["routing_problem"], Value::Null, "{added}");

    let before = api.dump().await;
    for patch in [
        json!({"domain": "elsewhere.test"}),
        json!({"domain": null}),
        json!({"domain": parent, "capacity_mb": 1}),
    ] {
        let (status, body) = api.patch("/v1/servers/s1", patch).await;
        error_of(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "domain_mismatch",
        );
        assert_eq!(
            api.dump().await,
            before,
            "a refused patch changed the database"
        );
    }
    // What does not move the address is not checked.
    let (status, body) = api
        .patch("/v1/servers/s1", json!({"capacity_mb": 2048}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Nothing answers here: added as before, for the health checks to judge.
    let (status, body) = api
        .post(
            "/v1/servers",
            json!({"id": "dark", "url": "http://127.0.0.1:9", "capacity_mb": 1,
                   "domain": "elsewhere.test"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Spawn, move and stop through the API against two real tenement servers,
/// with the failures only real servers produce.
#[tokio::test]
async fn spawn_move_and_stop_through_the_api_on_real_servers() {
    let Some(mut fleet) = common::fleet(2).await else {
        return;
    };
    let api = Api::start().await;
    for s in &fleet.servers {
        let r = s.record();
        let (status, body) = api
            .post(
                "/v1/servers",
                json!({"id": r.id, "url": r.url, "capacity_mb": r.capacity_mb,
                       "token": r.token, "domain": r.domain}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let s1 = fleet.server("s1").expect("s1");
    let s2 = fleet.server("s2").expect("s2");
    api.add_tenant("alice.example.com", "s1").await;

    let (status, inst) = api
        .post(
            "/v1/instances",
            json!({"tenant": "alice", "process": "api", "instance_id": "prod", "server_id": "s1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{inst}");
    assert_eq!(
        (&inst["server_id"], &inst["observed"], &inst["memory_mb"]),
        (&json!("s1"), &json!("running"), &json!(128))
    );
    assert_eq!(
        ask(s1, "alice", "api").await.trim(),
        "tenant=alice process=api server=s1"
    );
    match api.route("alice.example.com") {
        Routed::Forward { server } => assert_eq!(server, "s1"),
        other => panic!("expected Forward to s1, got {other:?}"),
    }
    let (status, body) = api.delete("/v1/servers/s1").await;
    let e = error_of(status, &body, StatusCode::CONFLICT, "has_dependents");
    assert_eq!((&e["tenants"], &e["instances"]), (&json!(1), &json!(1)));
    let (status, live) = api.get("/v1/instances").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(live.as_array().map(Vec::len), Some(1), "{live}");
    assert_eq!(live[0]["state"], "running");
    let (_, none) = api.get("/v1/instances?server=s2").await;
    assert_eq!(none, json!([]));
    let (status, body) = api.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&body["tenants"], &body["instances"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(body["servers"][0]["reachable"], true, "{body}");
    assert_eq!(body["servers"][0]["running"], 1, "{body}");
    assert_eq!(body["servers"][1]["running"], 0, "{body}");

    // Move: stopped on s1, started on s2, routed there at once.
    let (status, moved) = api
        .post(
            "/v1/tenants/alice.example.com/move",
            json!({"server_id": "s2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["server_id"], "s2");
    match api.route("alice.example.com") {
        Routed::Forward { server } => assert_eq!(server, "s2"),
        other => panic!("expected Forward to s2, got {other:?}"),
    }
    let (status, now) = api.get("/v1/instances/alice:prod").await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!(
        (
            &now["instance"]["server_id"],
            &now["state"],
            &now["instance"]["memory_mb"]
        ),
        (&json!("s2"), &json!("running"), &json!(128))
    );
    assert_eq!(
        ask(s2, "alice", "api").await.trim(),
        "tenant=alice process=api server=s2"
    );
    let (_, on_s1) = api.get("/v1/servers/s1/stats").await;
    assert_eq!(
        (&on_s1["running"], &on_s1["used_mb"]),
        (&json!(0), &json!(0)),
        "{on_s1}"
    );

    // What tenement itself refuses: a process it does not offer, and one that
    // dies at start, with its reason.
    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "t1", "process": "nosuch", "instance_id": "prod", "server_id": "s1"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::BAD_GATEWAY, "tenement");
    assert_eq!(e["server"], "s1");
    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "t1", "process": "crashing", "instance_id": "prod", "server_id": "s1"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::BAD_GATEWAY, "spawn_failed");
    assert_eq!((&e["server"], &e["key"]), (&json!("s1"), &json!("t1:prod")));
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("DATABASE_URL is not set"),
        "{e}"
    );

    api.add_tenant("bob.example.com", "s1").await;
    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "bob", "process": "api", "instance_id": "prod", "server_id": "s1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "carol", "process": "api", "instance_id": "prod", "server_id": "s1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    fleet.server_mut("s1").expect("s1").kill().expect("kill s1");
    let s2 = fleet.server("s2").expect("s2");

    // The old server is dead: the tenant moves all the same (its old copy is
    // stopped by reconcile once s1 answers again).
    let (status, body) = api
        .post(
            "/v1/tenants/bob.example.com/move",
            json!({"server_id": "s2"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["server_id"], "s2");
    assert_eq!(
        ask(s2, "bob", "api").await.trim(),
        "tenant=bob process=api server=s2"
    );

    // The new home cannot start it: it is started again where it was.
    let (status, body) = api
        .post(
            "/v1/tenants/alice.example.com/move",
            json!({"server_id": "s1"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::BAD_GATEWAY, "server_unreachable");
    assert_eq!(e["server"], "s1");
    let (_, alice) = api.get("/v1/tenants/alice.example.com").await;
    assert_eq!(alice["server_id"], "s2", "home unchanged");
    let (_, now) = api.get("/v1/instances/alice:prod").await;
    assert_eq!(
        (&now["instance"]["server_id"], &now["state"]),
        (&json!("s2"), &json!("running")),
        "{now}"
    );
    assert_eq!(
        ask(s2, "alice", "api").await.trim(),
        "tenant=alice process=api server=s2"
    );
    match api.route("alice.example.com") {
        Routed::Forward { server } => assert_eq!(server, "s2"),
        other => panic!("expected Forward to s2, got {other:?}"),
    }

    // A stop on a dead server is pending: 202 (an outcome, not an error body),
    // and no more traffic for it.
    let (status, body) = api.delete("/v1/instances/carol:prod").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (&body["server"], &body["key"], body.get("error")),
        (&json!("s1"), &json!("carol:prod"), None),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("pending") && m.contains("s1")),
        "{body}"
    );

    // Reconcile leaves the dead server for later and says so.
    let (status, report) = api.post("/v1/reconcile", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let unreachable = report["unreachable"].as_array().expect("unreachable");
    assert!(
        unreachable.len() == 1
            && unreachable[0]
                .as_str()
                .is_some_and(|u| u.starts_with("s1:")),
        "{report}"
    );
    assert_eq!(report["failed"], json!([]), "{report}");

    let (status, _) = api.delete("/v1/instances/alice:prod").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.delete("/v1/instances/bob:prod").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, on_s2) = api.get("/v1/servers/s2/stats").await;
    assert_eq!(on_s2["running"], 0, "{on_s2}");
    assert!(matches!(api.route("alice.example.com"), Routed::Spawn(_)));
}

/// The server the router sends `host` to, or a panic naming the decision.
fn forwarded_to(api: &Api, host: &str) -> String {
    match api.route(host) {
        Routed::Forward { server } => server,
        other => panic!("expected Forward for {host}, got {other:?}"),
    }
}

#[tokio::test]
async fn placement_is_named_once_and_the_failover_policy_round_trips() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    let before = api.dump().await;
    let base = json!({"domain": "acme.example.com", "process": "api", "instance_id": "prod"});
    let with = |extra: Value| {
        let mut body = base.clone();
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    for (extra, field) in [
        (json!({}), "server_id"),
        (json!({"server_id": "east", "auto": true}), "server_id"),
        (json!({"server_id": "east", "region": "eu"}), "region"),
    ] {
        let (status, body) = api.post("/v1/tenants", with(extra.clone())).await;
        let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert_eq!(e["field"], field, "{extra}: {body}");
    }
    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "acme", "process": "api", "instance_id": "prod",
                   "server_id": "east", "distinct_region": true}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(e["field"], "distinct_region", "{body}");
    let (status, body) = api
        .post(
            "/v1/tenants",
            with(json!({"server_id": "east", "failover": "sometimes"})),
        )
        .await;
    let e = error_of(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        e["message"].as_str().unwrap_or("").contains("failover"),
        "{body}"
    );
    assert_eq!(before, api.dump().await, "nothing was added");

    // The default is none; respawn is kept, changed and read back.
    api.add_tenant("plain.example.com", "east").await;
    let (_, plain) = api.get("/v1/tenants/plain.example.com").await;
    assert_eq!(plain["failover"], "none");
    let (status, t) = api
        .post(
            "/v1/tenants",
            with(json!({"server_id": "east", "failover": "respawn"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    assert_eq!(t["failover"], "respawn");
    let (_, t) = api.get("/v1/tenants/acme.example.com").await;
    assert_eq!(t["failover"], "respawn");
    let (status, t) = api
        .patch("/v1/tenants/acme.example.com", json!({"failover": "none"}))
        .await;
    assert_eq!((status, &t["failover"]), (StatusCode::OK, &json!("none")));
    let (status, t) = api
        .patch(
            "/v1/tenants/acme.example.com",
            json!({"failover": "respawn"}),
        )
        .await;
    assert_eq!(
        (status, &t["failover"]),
        (StatusCode::OK, &json!("respawn"))
    );
    let stored = api
        .db()
        .get_tenant_by_domain("acme.example.com")
        .await
        .expect("tenant");
    assert_eq!(stored.failover, slum::FailoverPolicy::Respawn);
}

#[tokio::test]
async fn status_lists_the_domains_whose_servers_are_offline() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    api.add_server("west", 1024).await;
    api.add_tenant("b.example.com", "east").await;
    api.add_tenant("a.example.com", "east").await;
    api.add_tenant("c.example.com", "west").await;
    let (status, body) = api.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["down_tenants"], json!([]), "{body}");
    assert!(
        body["servers"][0]
            .as_object()
            .is_some_and(|s| s.contains_key("last_seen")),
        "{body}"
    );

    let (status, _) = api
        .patch("/v1/servers/east", json!({"status": "offline"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = api.get("/v1/status").await;
    assert_eq!(
        body["down_tenants"],
        json!([
            {"domain": "a.example.com", "tenant": "a", "servers": ["east"]},
            {"domain": "b.example.com", "tenant": "b", "servers": ["east"]},
        ]),
        "{body}"
    );
    assert_eq!(body["servers"][0]["status"], "offline", "{body}");

    let (status, _) = api
        .patch("/v1/servers/east", json!({"status": "online"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = api.get("/v1/status").await;
    assert_eq!(body["down_tenants"], json!([]), "{body}");
}

/// Automatic placement on real servers: the most free usable server, the
/// region when asked, never beside a sibling, and a clear 507 with nothing
/// changed when no server has room.
#[tokio::test]
async fn auto_placement_picks_the_most_free_server_and_refuses_when_full() {
    let Some(fleet) = common::fleet(2).await else {
        return;
    };
    let s1 = fleet.server("s1").expect("s1");
    let s2 = fleet.server("s2").expect("s2");
    let api = Api::start().await;
    api.add_real_server(s1, Some("eu"), 256).await;
    api.add_real_server(s2, Some("us"), 512).await;

    let (status, alice) = api
        .post(
            "/v1/tenants",
            json!({"domain": "alice.example.com", "process": "api", "instance_id": "prod",
                   "auto": true, "failover": "respawn"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{alice}");
    assert_eq!(
        (&alice["server_id"], &alice["failover"]),
        (&json!("s2"), &json!("respawn")),
        "the most free server: {alice}"
    );
    assert_eq!(
        ask(s2, "alice", "api").await.trim(),
        "tenant=alice process=api server=s2"
    );
    assert_eq!(forwarded_to(&api, "alice.example.com"), "s2");

    // In the region asked for, though s2 has more room.
    let (status, bob) = api
        .post(
            "/v1/tenants",
            json!({"domain": "bob.example.com", "process": "api", "instance_id": "prod",
                   "auto": true, "region": "eu"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bob}");
    assert_eq!(bob["server_id"], "s1", "{bob}");
    assert_eq!(
        ask(s1, "bob", "api").await.trim(),
        "tenant=bob process=api server=s1"
    );

    // A backup never shares its primary's server, even the one with more room.
    let (status, backup) = api
        .post(
            "/v1/instances",
            json!({"tenant": "alice", "process": "api", "instance_id": "backup", "auto": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{backup}");
    assert_eq!(backup["server_id"], "s1", "{backup}");

    // s1 (eu) is full now: refused, naming the need, with nothing changed.
    let before = api.dump().await;
    let (status, body) = api
        .post(
            "/v1/tenants",
            json!({"domain": "carol.example.com", "process": "api", "instance_id": "prod",
                   "auto": true, "region": "eu"}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::INSUFFICIENT_STORAGE, "no_room");
    assert_eq!(e["requested_mb"], 128, "{body}");
    let message = e["message"].as_str().unwrap_or("");
    assert!(message.contains("region 'eu'"), "{body}");
    assert!(
        message.contains("s1 has ") && message.contains(" MB free of the 128 MB asked"),
        "the message names why each server could not: {body}"
    );
    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "dave", "process": "api", "instance_id": "prod", "auto": true,
                   "memory_mb": 512}),
        )
        .await;
    let e = error_of(status, &body, StatusCode::INSUFFICIENT_STORAGE, "no_room");
    assert_eq!(e["requested_mb"], 512, "{body}");
    assert_eq!(
        before,
        api.dump().await,
        "a refused placement changes nothing"
    );
    let (_, gone) = api.get("/v1/tenants/carol.example.com").await;
    assert_eq!(gone["error"]["kind"], "not_found", "{gone}");
}

/// Drain and undrain through the API on two real servers: every instance
/// leaves the drained server, domains without one are re-homed, and the server
/// takes placements again after undrain.
#[tokio::test]
async fn drain_moves_every_instance_off_a_server_and_undrain_reopens_it() {
    let Some(fleet) = common::fleet(2).await else {
        return;
    };
    let s1 = fleet.server("s1").expect("s1");
    let s2 = fleet.server("s2").expect("s2");
    let api = Api::start().await;
    api.add_real_server(s1, None, 1024).await;
    api.add_real_server(s2, None, 1024).await;
    for name in ["alice", "bob"] {
        api.add_tenant(&format!("{name}.example.com"), "s1").await;
        let (status, body) = api
            .post(
                "/v1/instances",
                json!({"tenant": name, "process": "api", "instance_id": "prod", "server_id": "s1"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Homed on s1, never started.
    api.add_tenant("carol.example.com", "s1").await;

    let (status, body) = api.get("/v1/servers/s1/drain").await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!((&e["key"], &e["server"]), (&json!("s1"), &json!("s1")));
    assert!(
        e["message"].as_str().unwrap_or("").contains("no drain"),
        "{body}"
    );
    let (status, body) = api.post("/v1/servers/nosuch/drain", json!({})).await;
    error_of(status, &body, StatusCode::NOT_FOUND, "not_found");

    let (status, started) = api.post("/v1/servers/s1/drain", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["server"], "s1");
    let (_, s1_record) = api.get("/v1/servers/s1").await;
    assert_eq!(s1_record["status"], "draining");
    // No new placement on a draining server.
    let (status, body) = api
        .post(
            "/v1/instances",
            json!({"tenant": "dave", "process": "api", "instance_id": "prod", "server_id": "s1"}),
        )
        .await;
    error_of(status, &body, StatusCode::CONFLICT, "server_unavailable");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let progress = loop {
        let (status, p) = api.get("/v1/servers/s1/drain").await;
        assert_eq!(status, StatusCode::OK, "{p}");
        if p["done"] == true {
            break p;
        }
        assert!(tokio::time::Instant::now() < deadline, "drain stalled: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(progress["total"], 2, "{progress}");
    assert_eq!(progress["failed"], json!([]), "{progress}");
    let mut moved: Vec<&str> = progress["moved"]
        .as_array()
        .expect("moved")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    moved.sort();
    assert_eq!(moved, ["alice:prod -> s2", "bob:prod -> s2"], "{progress}");
    assert_eq!(
        progress["rehomed"],
        json!(["carol.example.com -> s2"]),
        "{progress}"
    );

    let (_, on_s1) = api.get("/v1/instances?server=s1").await;
    assert_eq!(on_s1, json!([]), "no instance left on s1");
    let (_, homed) = api.get("/v1/tenants?server=s1").await;
    assert_eq!(homed, json!([]), "no domain left on s1");
    let (_, stats) = api.get("/v1/servers/s1/stats").await;
    assert_eq!(
        (&stats["running"], &stats["used_mb"]),
        (&json!(0), &json!(0)),
        "{stats}"
    );
    for name in ["alice", "bob"] {
        assert_eq!(forwarded_to(&api, &format!("{name}.example.com")), "s2");
        assert_eq!(
            ask(s2, name, "api").await.trim(),
            format!("tenant={name} process=api server=s2")
        );
    }

    let (status, server) = api.post("/v1/servers/s1/undrain", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{server}");
    assert_eq!(server["id"], "s1");
    assert_ne!(server["status"], "draining", "{server}");
    // s1 is usable again, and now the most free.
    let (status, inst) = api
        .post(
            "/v1/instances",
            json!({"tenant": "dave", "process": "api", "instance_id": "prod", "auto": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{inst}");
    assert_eq!(inst["server_id"], "s1", "{inst}");
}

/// `?limit=N&after=KEY` on the lists: pages in key order, the next page's key
/// in `Slum-Next-After` (absent on the last), and a bad limit or after a 422
/// naming the field, with nothing read or changed.
#[tokio::test]
async fn lists_are_paged_and_a_bad_limit_or_after_is_a_422_naming_it() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    api.add_server("west", 1024).await;
    for d in ["e", "a", "d", "b", "c"] {
        api.add_tenant(&format!("{d}.example.com"), "east").await;
    }
    // A page, and the header saying where the next one starts.
    let page = |path: String| {
        let req = api.bare(Method::GET, &path).bearer_auth(&api.secret);
        async move {
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status(), StatusCode::OK);
            let next = resp
                .headers()
                .get("slum-next-after")
                .map(|v| v.to_str().expect("ASCII").to_owned());
            let body: Value = resp.json().await.expect("JSON");
            (body, next)
        }
    };
    let mut domains = Vec::new();
    let mut path = "/v1/tenants?limit=2".to_owned();
    loop {
        let (body, next) = page(path.clone()).await;
        let items = body.as_array().expect("an array");
        assert!(items.len() <= 2);
        domains.extend(
            items
                .iter()
                .map(|t| t["domain"].as_str().unwrap().to_owned()),
        );
        match next {
            Some(key) => {
                assert_eq!(Some(&key), domains.last());
                path = format!("/v1/tenants?limit=2&after={key}");
            }
            None => break,
        }
    }
    let want: Vec<String> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|d| format!("{d}.example.com"))
        .collect();
    assert_eq!(domains, want);
    let (body, next) = page("/v1/tenants?server=west".into()).await;
    assert_eq!((body, next), (json!([]), None));
    let (body, next) = page("/v1/servers?limit=1".into()).await;
    assert_eq!(body[0]["id"], "east");
    assert_eq!(next.as_deref(), Some("east"));
    let (body, next) = page("/v1/servers?after=east".into()).await;
    assert_eq!((body[0]["id"].clone(), next), (json!("west"), None));
    // The status: a page of servers, the whole fleet's counts.
    let (body, next) = page("/v1/status?limit=1".into()).await;
    assert_eq!(body["servers"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["tenants"], 5);
    assert_eq!(next.as_deref(), Some("east"));
    let (body, next) = page("/v1/instances?limit=10".into()).await;
    assert_eq!((body, next), (json!([]), None));

    let before = api.dump().await;
    let cases = [
        ("/v1/tenants?limit=abc", "limit"),
        ("/v1/tenants?limit=0", "limit"),
        ("/v1/tenants?limit=10001", "limit"),
        ("/v1/tenants?limit=-1", "limit"),
        ("/v1/tenants?after=", "after"),
        ("/v1/tenants?after=not_a_domain", "after"),
        ("/v1/instances?after=no-colon", "after"),
        ("/v1/instances?limit=1.5", "limit"),
        ("/v1/servers?after=a.b", "after"),
        ("/v1/status?limit=x", "limit"),
        ("/v1/status?after=East", "after"),
    ];
    for (path, field) in cases {
        let (status, body) = api.get(path).await;
        let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert_eq!(e["field"], field, "{path}: {body}");
        assert!(
            e["message"].as_str().is_some_and(|m| m.contains(field)),
            "{path}: {body}"
        );
    }
    // A parameter the list does not take is a mistake, not ignored.
    let (status, body) = api.get("/v1/servers?server=east").await;
    error_of(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(before, api.dump().await);
}

/// Where the router would send a request, as the tests compare it.
#[derive(Debug, PartialEq)]
enum Routed {
    Forward { server: String },
    Spawn(DomainRoute),
    ServerDown { servers: Vec<String> },
    UnknownHost,
}

// ----- certificates -----

/// `PUT /v1/certificates/{name}` with a test certificate.
async fn put_certificate(
    api: &Api,
    name: &str,
    cert: &common::certs::TestCert,
    extra: Value,
) -> (StatusCode, Value) {
    let mut body = json!({"cert_pem": cert.cert_pem, "key_pem": cert.key_pem});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    api.call(Method::PUT, &format!("/v1/certificates/{name}"), Some(body))
        .await
}

#[tokio::test]
async fn certificates_are_put_listed_shown_and_removed_and_never_show_a_key() {
    use common::certs::{self, assert_no_key};
    let api = Api::start().await;
    let shop = certs::with_ca(&["shop.example.com"]);
    let (status, stored) = put_certificate(&api, "Shop.Example.com", &shop, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["name"], "shop.example.com");
    assert_eq!(stored["source"], "uploaded");
    assert_eq!(stored["state"], "issued");
    assert_eq!(stored["redirect"], Value::Null);
    assert!(stored["not_after"].is_string(), "{stored}");
    let wild = certs::expiring_in(&["*.example.com"], 5);
    let (status, stored) =
        put_certificate(&api, "*.example.com", &wild, json!({"redirect": true})).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["redirect"], true);

    // A page by name, the next page's key in the header.
    let resp = api
        .bare(Method::GET, "/v1/certificates?limit=1")
        .bearer_auth(&api.secret)
        .send()
        .await
        .expect("list");
    assert_eq!(
        resp.headers()
            .get("slum-next-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned()),
        Some("*.example.com".to_owned())
    );
    let page: Value = resp.json().await.expect("JSON");
    assert_eq!(page.as_array().map(Vec::len), Some(1), "{page}");
    let (status, rest) = api.get("/v1/certificates?after=*.example.com").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rest[0]["name"], "shop.example.com", "{rest}");
    let (status, one) = api.get("/v1/certificates/shop.example.com").await;
    assert_eq!(
        (status, &one["name"]),
        (StatusCode::OK, &json!("shop.example.com"))
    );

    // The status and the metrics warn of the one that expires in 5 days only.
    let (_, status_body) = api.get("/v1/status").await;
    assert_eq!(status_body["certificates_expiring"], 1, "{status_body}");
    assert_eq!(
        status_body["expiring_certificates"][0]["name"], "*.example.com",
        "{status_body}"
    );
    let metrics = send_text(api.bare(Method::GET, "/metrics")).await;
    assert!(
        metrics.lines().any(|l| l == "slum_certificates_expiring 1"),
        "{metrics}"
    );
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("slum_certificate_expiry_seconds{"))
        .collect();
    assert_eq!(series.len(), 1, "{metrics}");
    let left: i64 = series[0]
        .strip_prefix("slum_certificate_expiry_seconds{name=\"*.example.com\"} ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{}", series[0]));
    assert!((3 * 86_400..=5 * 86_400).contains(&left), "{left}");

    // Nothing the API answered holds a key.
    let (_, list) = api.get("/v1/certificates").await;
    for text in [
        list.to_string(),
        one.to_string(),
        status_body.to_string(),
        metrics,
    ] {
        assert_no_key(&text, &shop.key_pem);
        assert_no_key(&text, &wild.key_pem);
        assert!(!text.contains("BEGIN CERTIFICATE"), "no PEM at all: {text}");
    }

    let (status, _) = api.delete("/v1/certificates/shop.example.com").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.get("/v1/certificates/shop.example.com").await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(e["key"], "shop.example.com");
    let (status, body) = api.delete("/v1/certificates/shop.example.com").await;
    error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    // Removed, the expiring one leaves the metrics.
    api.delete("/v1/certificates/*.example.com").await;
    let metrics = send_text(api.bare(Method::GET, "/metrics")).await;
    assert!(
        metrics.contains("slum_certificates_expiring 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("slum_certificate_expiry_seconds{"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_refused_certificate_is_a_422_naming_its_field_and_changes_nothing() {
    use common::certs::{self, assert_no_key};
    let api = Api::start().await;
    let good = certs::self_signed(&["shop.example.com"]);
    let before = api.dump().await;
    let other_key = certs::other_key();
    let cases = [
        (
            "shop.example.com",
            json!({"key_pem": other_key}),
            "certificate.key_pem",
        ),
        ("www.example.com", json!({}), "certificate.cert_pem"),
        (
            "shop.example.com",
            json!({"cert_pem": "junk"}),
            "certificate.cert_pem",
        ),
        ("*.com", json!({}), "certificate.name"),
    ];
    for (name, changes, field) in cases {
        let (status, body) = put_certificate(&api, name, &good, changes).await;
        let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert_eq!(e["field"], field, "{body}");
        assert_no_key(&body.to_string(), &good.key_pem);
        assert_no_key(&body.to_string(), &other_key);
    }
    let (status, body) = put_certificate(&api, "shop.example.com", &good, json!({"keyy": 1})).await;
    error_of(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert_no_key(&body.to_string(), &good.key_pem);
    assert_eq!(before, api.dump().await, "nothing changed");
}

#[tokio::test]
async fn a_certificate_is_ordered_for_a_tenant_domain_only() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    api.add_tenant("acme.example.com", "east").await;
    let before = api.dump().await;
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/certificates/evil.example.org/order",
            None,
        )
        .await;
    let e = error_of(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(e["key"], "evil.example.org");
    assert_eq!(before, api.dump().await, "nothing ordered");

    let (status, body) = api
        .call(
            Method::POST,
            "/v1/certificates/Acme.Example.com/order",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (&body["name"], &body["source"], &body["state"]),
        (
            &json!("acme.example.com"),
            &json!("acme"),
            &json!("pending")
        )
    );
    let (status, again) = api
        .call(
            Method::POST,
            "/v1/certificates/acme.example.com/order",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "already wanted: {again}");
}

/// The text of an answer.
async fn send_text(req: reqwest::RequestBuilder) -> String {
    req.send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body")
}

#[tokio::test]
async fn traffic_is_this_routers_and_a_bad_limit_or_name_is_a_422_naming_it() {
    let api = Api::start().await;
    // No router in this process has carried a request: nothing is counted,
    // and the shape is there all the same.
    let (status, top) = api.get("/v1/traffic/top?limit=5").await;
    assert_eq!(status, StatusCode::OK, "{top}");
    assert_eq!(top["tenants"], json!([]), "{top}");
    assert_eq!(top["total"]["requests"], 0, "{top}");
    assert!(top["window_seconds"].is_number(), "{top}");
    let (status, servers) = api.get("/v1/traffic/servers").await;
    assert_eq!(status, StatusCode::OK, "{servers}");
    assert_eq!(servers["servers"], json!([]), "{servers}");
    let (status, one) = api.get("/v1/traffic/tenants/acme").await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(
        (&one["tenant"], &one["tracked"], &one["requests"]),
        (&json!("acme"), &json!(false), &json!(0)),
        "{one}"
    );
    for bad in ["0", "1001", "ten"] {
        let (status, body) = api.get(&format!("/v1/traffic/top?limit={bad}")).await;
        let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert_eq!(e["field"], "limit", "{body}");
    }
    let (status, body) = api.get("/v1/traffic/tenants/Not_A_Name").await;
    let e = error_of(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(e["field"], "tenant", "{body}");
}

/// A client that keeps redirects to itself, as the tests read them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test]
async fn the_dashboard_signs_in_with_a_token_into_a_read_only_session_cookie() {
    let api = Api::start().await;
    api.add_server("east", 1024).await;
    let http = no_redirects();
    let url = |path: &str| format!("{}{path}", api.base);

    // The page and its files, under a policy that allows nothing else.
    let page = http.get(url("/ui/")).send().await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("action=\"/ui/sign-in\""), "{html}");
    assert!(
        !html.contains("<script>") && !html.contains("http"),
        "only its own files"
    );
    for (path, kind) in [("/ui/app.js", "javascript"), ("/ui/style.css", "css")] {
        let r = http.get(url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().contains(kind));
    }
    let root = http.get(url("/")).send().await.unwrap();
    assert_eq!(root.status(), StatusCode::SEE_OTHER);
    assert_eq!(root.headers()["location"], "/ui/");
    let (status, _) = send(http.get(url("/ui/session"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let sign_in = |token: &str| {
        http.post(url("/ui/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
    };
    // A wrong token goes back to the form, saying so, with no cookie.
    let refused = sign_in("slum_wrong").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SEE_OTHER);
    assert_eq!(refused.headers()["location"], "/ui/?signin=failed");
    assert!(refused.headers().get("set-cookie").is_none());
    // Another site's form is refused outright.
    let forged = sign_in(&api.secret)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get("set-cookie").is_none());

    let signed = sign_in(&api.secret)
        .header("origin", api.base.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed.headers()["location"], "/ui/");
    let set = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(
        !set.contains(&api.secret),
        "the cookie is not the token: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let behind_https = sign_in(&api.secret)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let set = behind_https.headers()["set-cookie"].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");

    // The cookie reads, and changes nothing.
    let with_cookie = |method: Method, path: &str| {
        http.request(method, url(path))
            .header("cookie", cookie.clone())
    };
    let (status, who) = send(with_cookie(Method::GET, "/ui/session")).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert_eq!(who["token"]["name"], "tests");
    let (status, servers) = send(with_cookie(Method::GET, "/v1/servers")).await;
    assert_eq!(status, StatusCode::OK, "{servers}");
    assert_eq!(servers[0]["id"], "east");
    let (status, drains) = send(with_cookie(Method::GET, "/v1/drains")).await;
    assert_eq!((status, drains), (StatusCode::OK, json!([])));
    let (status, body) = send(with_cookie(Method::DELETE, "/v1/servers/east")).await;
    error_of(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, body) = send(
        with_cookie(Method::POST, "/v1/servers")
            .json(&json!({"id": "west", "url": "http://127.0.0.1:9", "capacity_mb": 1})),
    )
    .await;
    error_of(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(api.db().list_servers().await.unwrap().len(), 1);

    // Signing out ends the session; so does revoking its token.
    let out = with_cookie(Method::POST, "/ui/sign-out")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _) = send(with_cookie(Method::GET, "/v1/servers")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let again = sign_in(&api.secret).send().await.unwrap();
    let cookie = again.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let token = api
        .db()
        .verify_api_token(&api.secret)
        .await
        .unwrap()
        .unwrap();
    api.db().revoke_api_token(&token.id).await.unwrap();
    let (status, _) = send(http.get(url("/v1/servers")).header("cookie", cookie)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
