//! The fleet's events end to end, against a real tenement server: a spawn, a
//! stop and a server's death are recorded with their cause and the router
//! that made them, and shown by `GET /v1/events` and by `slum events`, which
//! follows them with `-f`. (The store's side, on both backends, is in
//! `tests/fleet_db.rs`.)

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::{lines_of, run_ok, slum_cli, wait_line};
use common::serve::Slum;
use serde_json::{json, Value};
use slum::events::{Event, EventQuery};

/// Waits until `db` holds an event of `kind` about `server`; returns it.
async fn event_of(slum: &Slum, server: &str, kind: &str, within: Duration) -> Event {
    let deadline = Instant::now() + within;
    loop {
        let query = EventQuery {
            server: Some(server.into()),
            ..Default::default()
        };
        let events = slum.db().events(&query).await.expect("events").items;
        if let Some(e) = events.into_iter().find(|e| e.kind == kind) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event of {server} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_spawn_stop_and_server_death_are_events_shown_and_followed_by_slum_events() {
    let Some(mut fleet) = common::fleet(1).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    let (_, token) = slum.db().create_api_token("tests").await.expect("token");
    slum.add_fleet(&fleet).await;
    let router_name = format!(
        "{}:{} (pid {})",
        slum::events::host_name(),
        slum.router.port(),
        std::process::id()
    );
    let online = event_of(&slum, "s1", "server-online", Duration::from_secs(10)).await;
    assert_eq!(online.cause, "its first health check passed");
    assert_eq!(online.router, router_name);

    // A spawn and a stop through the API.
    let api = format!("http://{}", slum.api);
    let http = common::http();
    let spawned = http
        .post(format!("{api}/v1/instances"))
        .bearer_auth(&token)
        .json(
            &json!({"tenant": "acme", "process": "api", "instance_id": "prod", "server_id": "s1"}),
        )
        .send()
        .await
        .expect("spawn");
    assert_eq!(spawned.status(), 201, "{:?}", spawned.text().await);
    let stopped = http
        .delete(format!("{api}/v1/instances/acme:prod"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("stop");
    assert_eq!(stopped.status(), 204);

    // `slum events -f` shows what there is, then what comes.
    let mut follower = slum_cli(&slum, &token, &["--json", "events", "-f", "--server", "s1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("slum events -f");
    let lines = lines_of(follower.stdout.take().expect("piped stdout"));
    let kind_of = |line: &str| -> String {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        v["kind"].as_str().unwrap_or_default().to_owned()
    };
    wait_line(&lines, Duration::from_secs(10), |l| kind_of(l) == "stopped");

    fleet.server_mut("s1").expect("s1").kill().expect("kill s1");
    let (offline, _) = wait_line(&lines, Duration::from_secs(15), |l| {
        kind_of(l) == "server-offline"
    });
    let _ = follower.kill();
    let _ = follower.wait();
    let offline: Value = serde_json::from_str(&offline).expect("json");
    assert_eq!(offline["level"], "warning");
    assert_eq!(offline["server"], "s1");
    assert_eq!(offline["router"], router_name.as_str());
    assert!(
        offline["cause"]
            .as_str()
            .is_some_and(|c| c.starts_with("2 health checks failed in a row, the last: ")),
        "{offline}"
    );

    // The API: the server's events, in order, with what they concern.
    let events: Vec<Event> = http
        .get(format!("{api}/v1/events?server=s1"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "server-added",
            "server-online",
            "spawned",
            "stopped",
            "server-offline"
        ],
        "{events:#?}"
    );
    assert_eq!(events[2].instance.as_deref(), Some("acme:prod"));
    assert_eq!(events[2].cause, "spawned on s1 with 128 MB");
    assert_eq!(events[3].cause, "stopped on s1");
    // A tenant's events; after an id.
    let acme: Vec<Event> = http
        .get(format!(
            "{api}/v1/events?tenant=acme&after={}",
            events[2].id - 1
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    let kinds: Vec<&str> = acme.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["spawned", "stopped"]);
    let bad = http
        .get(format!("{api}/v1/events?since=yesterday"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("events");
    assert_eq!(bad.status(), 422);
    let problem: Value = bad.json().await.expect("json");
    assert_eq!(problem["error"]["field"], "since");

    // `slum events` for people: a header, then one aligned line each.
    let text = run_ok(
        &slum,
        &token,
        &["events", "--tenant", "acme", "--since", "1h"],
    );
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows[0].starts_with("TIME") && rows[0].ends_with("CAUSE"),
        "{text}"
    );
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[1].contains("  normal   spawned  "), "{text}");
    assert!(rows[1].contains("  acme:prod  "), "{text}");
    assert!(
        rows[1].ends_with(&format!("spawned on s1 with 128 MB  (by {router_name})")),
        "{text}"
    );
    let json_lines = run_ok(&slum, &token, &["--json", "events", "--limit", "2"]);
    let last_two: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(last_two.len(), 2, "{json_lines}");
    assert_eq!(last_two[1]["kind"], "server-offline", "the newest last");
    let none = run_ok(&slum, &token, &["events", "--server", "nowhere"]);
    assert_eq!(none.trim(), "no events");
}
