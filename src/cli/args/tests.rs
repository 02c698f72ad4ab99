//! The command line parses as documented, and turns into the request bodies
//! the API expects.

use clap::Parser;

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("slum").chain(args.iter().copied()))
}

#[test]
fn the_cli_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn global_token_goes_before_the_subcommand_and_server_token_after() {
    let cli = parse(&[
        "--token",
        "api-secret",
        "server",
        "add",
        "east",
        "--url",
        "http://east:8000",
        "--capacity-mb",
        "1024",
        "--token",
        "ten-secret",
    ])
    .expect("parses");
    assert_eq!(cli.global.token, Some(Secret("api-secret".into())));
    let Command::Server(ServerCommand::Add(a)) = cli.command else {
        panic!("not server add");
    };
    assert_eq!(a.token.token, Some(Secret("ten-secret".into())));
    assert_eq!(a.capacity_mb, 1024);
    assert!(!cli.global.json);
}

#[test]
fn json_and_api_are_accepted_after_the_subcommand() {
    let cli = parse(&["server", "list", "--json", "--api", "10.0.0.1:9090"]).expect("parses");
    assert!(cli.global.json);
    assert_eq!(cli.global.api.as_deref(), Some("10.0.0.1:9090"));
}

#[test]
fn server_add_needs_url_and_capacity() {
    let e = parse(&["server", "add", "east", "--capacity-mb", "1"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    let e = parse(&["server", "add", "east", "--url", "http://x"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    let e = parse(&[
        "server",
        "add",
        "east",
        "--url",
        "http://x",
        "--capacity-mb",
        "lots",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
}

#[test]
fn a_negative_capacity_reaches_the_api_which_names_the_field() {
    let cli = parse(&[
        "server",
        "add",
        "e",
        "--url",
        "http://x",
        "--capacity-mb",
        "-5",
    ])
    .expect("parses");
    let Command::Server(ServerCommand::Add(a)) = cli.command else {
        panic!("not server add");
    };
    assert_eq!(a.capacity_mb, -5);
}

#[test]
fn server_token_and_token_file_conflict() {
    let e = parse(&[
        "server",
        "add",
        "e",
        "--url",
        "http://x",
        "--capacity-mb",
        "1",
        "--token",
        "a",
        "--token-file",
        "/f",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn server_update_needs_a_change_and_a_known_status() {
    let e = parse(&["server", "update", "east"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    let e = parse(&["server", "update", "east", "--status", "sleepy"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
    let cli = parse(&["server", "update", "east", "--status", "draining"]).expect("parses");
    let Command::Server(ServerCommand::Update(a)) = cli.command else {
        panic!("not server update");
    };
    let patch = a.patch().expect("patch");
    assert_eq!(
        serde_json::to_value(&patch).expect("json"),
        serde_json::json!({"status": "draining"})
    );
}

#[test]
fn stop_takes_tenant_colon_instance() {
    assert!(parse(&["stop", "customer-1:prod"]).is_ok());
    for bad in ["customer-1", ":prod", "customer-1:"] {
        let e = parse(&["stop", bad]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
    }
}

/// The API request body `slum tenant add ARGS…` sends.
fn tenant_add_body(args: &[&str]) -> serde_json::Value {
    let cli = parse(args).expect("parses");
    let Command::Tenant(TenantCommand::Add(a)) = cli.command else {
        panic!("not tenant add");
    };
    serde_json::to_value(a.body()).expect("json")
}

#[test]
fn tenant_add_body_uses_the_api_field_names() {
    assert_eq!(
        tenant_add_body(&[
            "tenant",
            "add",
            "c1.example.com",
            "--server",
            "east",
            "--process",
            "api",
            "--instance",
            "prod",
        ]),
        serde_json::json!({"domain": "c1.example.com", "server_id": "east",
                           "process": "api", "instance_id": "prod"})
    );
}

#[test]
fn tenant_add_takes_a_server_or_auto_and_a_failover_policy() {
    let e = parse(&[
        "tenant",
        "add",
        "c1.test",
        "--process",
        "api",
        "--instance",
        "prod",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    let both = [
        "tenant",
        "add",
        "c1.test",
        "--server",
        "east",
        "--auto",
        "--process",
        "api",
        "--instance",
        "prod",
    ];
    assert_eq!(
        parse(&both).unwrap_err().kind(),
        clap::error::ErrorKind::ArgumentConflict
    );
    let region_alone = [
        "tenant",
        "add",
        "c1.test",
        "--server",
        "east",
        "--region",
        "eu",
        "--process",
        "api",
        "--instance",
        "prod",
    ];
    assert_eq!(
        parse(&region_alone).unwrap_err().kind(),
        clap::error::ErrorKind::ArgumentConflict
    );
    assert_eq!(
        tenant_add_body(&[
            "tenant",
            "add",
            "c1.test",
            "--auto",
            "--region",
            "eu",
            "--failover",
            "respawn",
            "--process",
            "api",
            "--instance",
            "prod",
        ]),
        serde_json::json!({"domain": "c1.test", "auto": true, "region": "eu",
                           "failover": "respawn", "process": "api", "instance_id": "prod"})
    );
    let cli = parse(&["tenant", "update", "c1.test", "--failover", "none"]).expect("parses");
    let Command::Tenant(TenantCommand::Update(u)) = cli.command else {
        panic!("not tenant update");
    };
    assert_eq!(
        serde_json::to_value(u.patch()).expect("json"),
        serde_json::json!({"failover": "none"})
    );
    let e = parse(&["tenant", "update", "c1.test"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    let e = parse(&["tenant", "update", "c1.test", "--failover", "pray"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
}

#[test]
fn spawn_auto_asks_for_another_region() {
    let cli = parse(&[
        "spawn",
        "c1",
        "--process",
        "api",
        "--instance",
        "backup",
        "--auto",
        "--other-region",
    ])
    .expect("parses");
    let Command::Spawn(a) = cli.command else {
        panic!("not spawn");
    };
    assert_eq!(
        serde_json::to_value(a.body()).expect("json"),
        serde_json::json!({"tenant": "c1", "process": "api", "instance_id": "backup",
                           "auto": true, "distinct_region": true})
    );
    let e = parse(&["spawn", "c1", "--process", "api", "--instance", "b"]).unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    let e = parse(&[
        "spawn",
        "c1",
        "--process",
        "api",
        "--instance",
        "b",
        "--server",
        "s1",
        "--other-region",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
}

#[test]
fn secrets_never_show_in_debug() {
    let cli = parse(&["--token", "hunter2", "status"]).expect("parses");
    assert!(!format!("{cli:?}").contains("hunter2"));
}

#[test]
fn top_takes_a_limit_within_range_and_once() {
    let cli = parse(&["top", "--once", "--limit", "5"]).expect("parses");
    match cli.command {
        Command::Top(args) => assert_eq!((args.once, args.limit, args.servers), (true, 5, false)),
        other => panic!("{other:?}"),
    }
    for bad in ["0", "1001"] {
        assert!(parse(&["top", "--limit", bad]).is_err(), "--limit {bad}");
    }
}
