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
fn token_is_the_api_token_everywhere_and_ten_token_the_servers() {
    let cli = parse(&[
        "server",
        "add",
        "east",
        "--url",
        "http://east:8000",
        "--capacity-mb",
        "1024",
        "--token",
        "api-secret",
        "--ten-token",
        "ten-secret",
    ])
    .expect("parses");
    assert_eq!(cli.global.token, Some(Secret("api-secret".into())));
    let Command::Server(ServerCommand::Add(a)) = cli.command else {
        panic!("not server add");
    };
    assert_eq!(a.token.ten_token, Some(Secret("ten-secret".into())));
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
        "--ten-token",
        "a",
        "--ten-token-file",
        "/f",
    ])
    .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
}

/// `slum serve --help` lists serve's own flags, each with its default, and
/// none of the client's.
#[test]
fn serve_help_shows_its_own_flags_with_their_defaults() {
    let mut cmd = command();
    let serve = cmd.find_subcommand_mut("serve").expect("serve");
    let help = serve.render_long_help().to_string();
    for client_flag in ["--api ", "--json", "--token "] {
        assert!(!help.contains(client_flag), "{client_flag} in:\n{help}");
    }
    let c = crate::serve::ServeConfig::resolve(&ServeArgs::default()).expect("defaults");
    let secs = |d: std::time::Duration| d.as_secs_f64().to_string();
    let rate = c.min_body_rate.expect("a lowest body rate by default");
    // The defaults a flag's help shows, as `slum serve` resolves them.
    let resolved: Vec<(&str, String)> = vec![
        ("database", c.database.to_string()),
        ("listen", c.listen.to_string()),
        ("api_listen", c.api_listen.to_string()),
        ("default_memory_mb", c.fleet.default_memory_mb.to_string()),
        ("header_timeout", secs(c.header_timeout)),
        ("connect_timeout", secs(c.fleet.connect_timeout)),
        ("upstream_timeout", secs(c.upstream_timeout)),
        ("body_timeout", secs(c.body_timeout)),
        ("body_min_rate", rate.bytes_per_second.to_string()),
        ("body_rate_grace", secs(rate.grace)),
        ("whole_response_bytes", c.whole_response_bytes.to_string()),
        ("max_header_bytes", c.max_header_bytes.to_string()),
        (
            "max_connection_options",
            c.max_connection_options.to_string(),
        ),
        ("spawn_timeout", secs(c.fleet.spawn_timeout)),
        ("route_poll", secs(c.route_poll)),
        ("shutdown_grace", secs(c.shutdown_grace)),
        ("health_interval", secs(c.health.interval)),
        ("health_timeout", secs(c.health.timeout)),
        ("fail_after", c.health.fail_after.to_string()),
        ("recover_after", c.health.recover_after.to_string()),
        ("reconcile_interval", secs(c.reconcile_interval)),
        ("move_grace", secs(c.fleet.move_grace)),
    ];
    let mut checked = 0;
    for arg in serve.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || ["help", "version"].contains(&id) {
            continue;
        }
        let text = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let shown = text
            .split_once("[default: ")
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(value, _)| value.to_owned())
            .unwrap_or_else(|| panic!("--{id} shows no default: {text:?}"));
        if let Some((_, want)) = resolved.iter().find(|(name, _)| *name == id) {
            assert_eq!(
                &shown, want,
                "--{id}'s help says {shown}, slum serve uses {want}"
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        resolved.len(),
        "every resolved default has its flag"
    );
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
fn serve_parses_with_its_help_and_its_flags() {
    let e = command()
        .try_get_matches_from(["slum", "serve", "--help"])
        .unwrap_err();
    assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{e}");
    command().debug_assert();
    let matches = command()
        .try_get_matches_from(["slum", "serve", "--listen", "127.0.0.1:1"])
        .expect("parses");
    use clap::FromArgMatches;
    let cli = Cli::from_arg_matches(&matches).expect("a Cli");
    assert!(cli.is_serve());
    let matches = command()
        .try_get_matches_from(["slum", "--json", "server", "list", "--token", "t"])
        .expect("parses");
    let cli = Cli::from_arg_matches(&matches).expect("a Cli");
    assert!(cli.global.json);
    assert_eq!(cli.global.token, Some(Secret("t".into())));
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
