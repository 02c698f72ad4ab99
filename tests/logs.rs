//! `slum logs` end to end, against real tenement servers running the demo
//! app: an instance's output through the management API (which reads it with
//! the server's token), filtered by stream, text and time; followed with
//! `-f` across a move and a failover, saying so; and a server that does not
//! answer said in one line.

mod common;

use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::cli::{lines_of, run, run_ok, slum_cli, wait_line};
use common::serve::Slum;
use serde_json::{json, Value};
use slum::FailoverPolicy;

/// Has the demo app behind `domain` write `line` (to stderr with `stderr`),
/// through slum's router.
async fn write_line(slum: &Slum, domain: &str, line: &str, stderr: bool) {
    let stream = if stderr { "&stream=stderr" } else { "" };
    let (status, body) = slum.get(domain, &format!("/log?line={line}{stream}")).await;
    assert_eq!((status, body.as_str()), (200, "written\n"));
}

/// A follower of `slum logs -f`: its stdout and stderr lines.
struct Follower {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Follower {
    fn start(slum: &Slum, token: &str, args: &[&str]) -> Follower {
        let mut child = slum_cli(slum, token, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("slum logs -f");
        let out = lines_of(child.stdout.take().expect("stdout"));
        let err = lines_of(child.stderr.take().expect("stderr"));
        Follower { child, out, err }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_read_filtered_and_followed_across_a_move_and_a_failover() {
    let Some(mut fleet) = common::fleet(2).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    let (_, token) = slum.db().create_api_token("tests").await.expect("token");
    slum.add_fleet(&fleet).await;
    slum.add_running_tenant("acme.example.com", "s1").await;
    write_line(&slum, "acme.example.com", "hello-out", false).await;
    write_line(&slum, "acme.example.com", "hello-err", true).await;

    // Read: the API's JSON, then the CLI by name, by domain, by instance.
    let api = format!("http://{}", slum.api);
    let lines: Value = common::http()
        .get(format!("{api}/v1/tenants/acme/logs"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("logs")
        .json()
        .await
        .expect("json");
    let messages: Vec<&str> = lines
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(
        messages[0].starts_with("serving tenant acme (api) on server s1 at 127.0.0.1:"),
        "{lines:#}"
    );
    assert_eq!(&messages[1..], ["hello-out", "hello-err"], "{lines:#}");
    assert_eq!(lines[2]["stream"], "stderr");
    assert_eq!(lines[2]["server"], "s1");
    assert_eq!(lines[2]["instance"], "acme:prod");

    let text = run_ok(&slum, &token, &["logs", "acme"]);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows[0].contains(" s1 OUT serving tenant acme (api) on server s1"),
        "{text}"
    );
    assert!(rows[2].ends_with(" s1 ERR hello-err"), "{text}");
    assert_eq!(
        run_ok(&slum, &token, &["logs", "acme.example.com"]),
        text,
        "by one of its domains"
    );
    let errors = run_ok(&slum, &token, &["logs", "acme:prod", "--stderr"]);
    assert_eq!(errors.lines().count(), 1, "{errors}");
    assert!(errors.ends_with(" s1 ERR hello-err\n"), "{errors}");
    let grepped = run_ok(
        &slum,
        &token,
        &["logs", "acme", "--stdout", "--grep", "hello"],
    );
    assert_eq!(grepped.lines().count(), 1, "{grepped}");
    assert!(grepped.ends_with(" s1 OUT hello-out\n"), "{grepped}");
    let json = run_ok(&slum, &token, &["--json", "logs", "acme", "--limit", "1"]);
    let last: Value = serde_json::from_str(json.trim()).expect("one JSON line");
    assert_eq!(last["message"], "hello-err");
    assert_eq!(
        run_ok(&slum, &token, &["logs", "acme", "--since", "0s"]),
        ""
    );
    assert_eq!(
        run_ok(&slum, &token, &["logs", "acme", "--since", "1h"]),
        text
    );

    // Follow: the lines there are, then new ones, then across a move.
    let follower = Follower::start(&slum, &token, &["logs", "acme", "-f"]);
    wait_line(&follower.out, Duration::from_secs(10), |l| {
        l.contains("hello-err")
    });
    write_line(&slum, "acme.example.com", "live-1", false).await;
    wait_line(&follower.out, Duration::from_secs(10), |l| {
        l.contains(" s1 OUT live-1")
    });
    let moved = common::http()
        .post(format!("{api}/v1/tenants/acme.example.com/move"))
        .bearer_auth(&token)
        .json(&json!({"server_id": "s2"}))
        .send()
        .await
        .expect("move");
    assert_eq!(moved.status(), 200, "{:?}", moved.text().await);
    wait_line(&follower.err, Duration::from_secs(10), |l| {
        l.contains("slum: acme:prod moved from server s1 to server s2; following it there")
    });
    wait_line(&follower.out, Duration::from_secs(10), |l| {
        l.contains(" s2 OUT serving tenant acme (api) on server s2")
    });
    write_line(&slum, "acme.example.com", "live-2", false).await;
    wait_line(&follower.out, Duration::from_secs(10), |l| {
        l.contains(" s2 OUT live-2")
    });

    // Its server dies: said once, then followed to where failover respawns it.
    let mut tenant = slum
        .db()
        .get_tenant_by_domain("acme.example.com")
        .await
        .expect("tenant");
    tenant.failover = FailoverPolicy::Respawn;
    slum.db()
        .update_tenant(&tenant)
        .await
        .expect("respawn policy");
    fleet.server_mut("s2").expect("s2").kill().expect("kill s2");
    let (_, before) = wait_line(&follower.err, Duration::from_secs(20), |l| {
        l.contains("slum: acme:prod moved from server s2 to server s1; following it there")
    });
    let waited: Vec<&String> = before
        .iter()
        .filter(|l| l.contains("waiting for it to answer, or for acme:prod to move"))
        .collect();
    assert_eq!(waited.len(), 1, "said once: {before:#?}");
    assert!(
        waited[0].starts_with("slum: server 's2' is unreachable: "),
        "{before:#?}"
    );
    wait_line(&follower.out, Duration::from_secs(10), |l| {
        l.contains(" s1 OUT serving tenant acme (api) on server s1")
    });
    drop(follower);
    // The move and the failover are the instance's events too.
    let acme = slum
        .db()
        .events(&slum::events::EventQuery {
            tenant: Some("acme".into()),
            ..Default::default()
        })
        .await
        .expect("events")
        .items;
    let moves: Vec<(&str, &str)> = acme
        .iter()
        .filter(|e| e.kind == "moved" || e.kind == "respawned")
        .map(|e| (e.kind.as_str(), e.cause.as_str()))
        .collect();
    assert_eq!(
        moves,
        [
            (
                "moved",
                "move of tenant acme.example.com: moved from s1 to s2; its old copy stops after \
                 a grace of 2s"
            ),
            (
                "respawned",
                "server s2 is offline: respawned on s1 (failover policy respawn); its old copy \
                 is stopped once s2 answers"
            )
        ],
        "{acme:#?}"
    );

    // Not followed, an unreachable server is one clear line.
    tenant.failover = FailoverPolicy::None;
    slum.db().update_tenant(&tenant).await.expect("no failover");
    fleet.server_mut("s1").expect("s1").kill().expect("kill s1");
    let (code, stdout, stderr) = run(&slum, &token, &["logs", "acme"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: server 's1' is unreachable: "),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_of_an_unknown_tenant_or_a_bad_query_are_refused_naming_what() {
    let Some(fleet) = common::fleet(1).await else {
        return;
    };
    let slum = Slum::start(|_| {}).await;
    let (_, token) = slum.db().create_api_token("tests").await.expect("token");
    slum.add_fleet(&fleet).await;
    let (code, _, stderr) = run(&slum, &token, &["logs", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("nobody"), "{stderr}");
    let (code, _, stderr) = run(&slum, &token, &["logs", "acme", "--since", "yesterday"]);
    assert_eq!(code, Some(2), "a usage error, before any request: {stderr}");
    let api = format!("http://{}", slum.api);
    for (query, field) in [
        ("stream=both", "stream"),
        ("limit=0", "limit"),
        ("follow=maybe", "follow"),
    ] {
        let resp = common::http()
            .get(format!("{api}/v1/tenants/acme/logs?{query}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("logs");
        assert_eq!(resp.status(), 422, "{query}");
        let problem: Value = resp.json().await.expect("json");
        assert_eq!(problem["error"]["field"], field, "{query}");
    }
}
