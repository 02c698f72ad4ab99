//! `slum`, the command line: `slum serve` runs the router and the management API;
//! every other command is a client of that API (see `docs/management-api.md`).
//!
//! The pieces: `args` (the clap definitions), `client` (one typed method per
//! API route, all going through one request function that turns every failure
//! into one `CliError`), `render` (pure functions, records and "now" in, text
//! out, tested without a server), `drain` (following a drain with a progress
//! bar), `events` (the fleet's events, and following them), `logs` (an
//! instance's output, and following it) and `top` (the busiest tenants,
//! redrawn). This module runs a parsed command: people get aligned tables; `--json`
//! prints the API's own JSON for scripts. Request and answer bodies are the
//! management API's `api::wire` types, the ones its handlers use.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::api::wire::{FleetStatus, Instance, ListQuery};
use crate::serve::ServeArgs;

mod args;
mod client;
mod drain;
mod error;
mod events;
mod logs;
mod render;
mod top;

pub use args::{command, Cli};
use args::{
    CertCommand, Command, GlobalArgs, PagingArgs, ServerCommand, TenantCommand, TokenCommand,
    TokenResetArgs,
};
use client::{api_base, resolve_token, token_file_path, ApiClient, Stop};
use error::CliError;
use render::{
    printable, render_certificate, render_certificates, render_instances, render_reconcile,
    render_server, render_servers, render_spawned, render_status, render_tenant,
    render_tenant_traffic, render_tenants, render_tokens,
};

/// Whether the log on stderr is coloured: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Runs the parsed command line and returns the process's exit code: 0 on
/// success, 1 after printing `error: ...` on stderr. (clap already exits with 2
/// on usage errors.)
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(args) => serve(&args).await,
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man_page(dir.as_deref()),
        Command::Token(TokenCommand::Reset(args)) => reset_token(&args)
            .await
            .and_then(|output| output.finish(cli.global.json)),
        command => client_command(&cli.global, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the API's message quotes.
            eprintln!("error: {}", printable(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

/// `slum completions SHELL`: the shell's completion script, on stdout.
fn completions(shell: clap_complete::Shell) -> Result<(), CliError> {
    let mut cmd = command();
    clap_complete::generate(shell, &mut cmd, "slum", &mut std::io::stdout());
    Ok(())
}

/// `slum man`: the man page, made from the command line's definition, on
/// stdout; with a directory, it and a page per subcommand written there.
fn man_page(dir: Option<&std::path::Path>) -> Result<(), CliError> {
    use std::io::Write;
    if let Some(dir) = dir {
        return clap_mangen::generate_to(command(), dir).map_err(|e| {
            CliError::Local(format!(
                "cannot write the man pages to {}: {e}",
                dir.display()
            ))
        });
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(command())
        .render(&mut page)
        .map_err(|e| CliError::Local(format!("cannot render the man page: {e}")))?;
    std::io::stdout()
        .write_all(&page)
        .map_err(|e| CliError::Local(format!("cannot print the man page: {e}")))
}

async fn serve(args: &ServeArgs) -> Result<(), CliError> {
    let config = crate::serve::ServeConfig::resolve(args).map_err(CliError::local)?;
    let shutdown = shutdown_signal().map_err(CliError::local)?;
    crate::serve::run(config, shutdown)
        .await
        .map_err(CliError::local)
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). Both handlers are installed before
/// `serve` starts, so a signal that arrives during start-up is not lost.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

async fn client_command(global: &GlobalArgs, command: Command) -> Result<(), CliError> {
    let base = api_base(global.api.as_deref())?;
    let token_file = token_file_path();
    let token = resolve_token(global.token.clone(), &token_file)?;
    let client = ApiClient::new(base, token, token_file)?;
    if let Command::Top(args) = &command {
        return top::run(&client, args, global.json).await;
    }
    execute(&client, command, global.json)
        .await?
        .finish(global.json)
}

/// `slum token reset`: opens the fleet database itself (no API), draws a new
/// admin token, writes it to `--token-file` when given (before it is
/// recorded, taken back if recording fails), and records it in the same
/// transaction that revokes the previous admin tokens (or, with
/// `--revoke-all`, every other).
async fn reset_token(args: &TokenResetArgs) -> Result<Output, CliError> {
    use crate::fleet::api_tokens::{MintedToken, ADMIN};
    use crate::serve::token_file::{self, Existing};
    let database = &args.database;
    let is_url = database
        .as_path()
        .to_str()
        .is_some_and(crate::fleet::store::postgres::is_postgres_url);
    // Opening a missing SQLite file would create an empty fleet.
    if !is_url && !database.as_path().is_file() {
        return Err(CliError::Local(format!(
            "no fleet database at {database} (give the --database of `slum serve`)"
        )));
    }
    let db = crate::FleetDb::open(database.as_path(), Default::default())
        .await
        .map_err(|e| CliError::Local(format!("cannot open the fleet database {database}: {e}")))?;
    let minted = MintedToken::new(ADMIN).map_err(|e| CliError::Local(e.to_string()))?;
    let written = match &args.token_file {
        Some(path) => Some(
            token_file::write(path, minted.secret(), Existing::Replace).map_err(CliError::local)?,
        ),
        None => None,
    };
    let token = minted.token().clone();
    let revoked = match db.reset_admin_token(&minted, args.revoke_all).await {
        Ok(revoked) => revoked,
        Err(e) => {
            let undone = match written.map(token_file::Written::undo) {
                Some(Err(u)) => format!(" ({u:#})"),
                _ => String::new(),
            };
            return Err(CliError::Local(format!(
                "cannot record a new admin token in {database}: {e}{undone}"
            )));
        }
    };
    let listed = |tokens: &[crate::ApiToken]| {
        if tokens.is_empty() {
            "none".to_owned()
        } else {
            tokens
                .iter()
                .map(|t| format!("{} ({})", t.id, t.name))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let made = format!("new admin token {} ({})", token.id, token.name);
    let kept_where = match &args.token_file {
        Some(path) => format!("written to {} (mode 0600)", path.display()),
        None => {
            "shown once: store it now (e.g. in the token file the CLI reads, mode 0600)".to_owned()
        }
    };
    let note = format!(
        "{made}, {kept_where}; revoked: {}; kept: {}",
        listed(&revoked.revoked),
        listed(&revoked.kept)
    );
    let json_lists = serde_json::json!({ "revoked": revoked.revoked, "kept": revoked.kept });
    let mut json = serde_json::json!({ "token": token });
    if args.token_file.is_none() {
        json["secret"] = Value::from(minted.secret());
    }
    if let (Some(out), Some(lists)) = (json.as_object_mut(), json_lists.as_object()) {
        out.extend(lists.clone());
    }
    Ok(Output {
        json,
        // The secret alone on stdout, like `token create`.
        text: match &args.token_file {
            Some(_) => String::new(),
            None => minted.secret().to_owned(),
        },
        note: Some(note),
        failure: None,
    })
}

/// The query of the page `paging` asks for first.
fn first_query(paging: &PagingArgs, server: Option<String>) -> ListQuery {
    ListQuery {
        server,
        limit: paging.limit.map(|n| n.to_string()),
        after: paging.after.clone(),
    }
}

/// A paged list: the page asked for, or with `--all` every page, walked in
/// key order (the records as one list, their JSON as one array). `next` is
/// the key after which more follow, when only a page was asked for.
async fn paged<T, F, Fut>(
    paging: &PagingArgs,
    server: Option<String>,
    fetch: F,
) -> Result<client::Reply<Vec<T>>, CliError>
where
    F: Fn(ListQuery) -> Fut,
    Fut: std::future::Future<Output = Result<client::Reply<Vec<T>>, CliError>>,
{
    let mut query = first_query(paging, server);
    let mut value = Vec::new();
    let mut json = Vec::new();
    loop {
        let page = fetch(query.clone()).await?;
        value.extend(page.value);
        match page.json {
            Value::Array(records) => json.extend(records),
            other => json.push(other),
        }
        match page.next {
            Some(next) if paging.all => query.after = Some(next_key(&query, next)?),
            next => {
                return Ok(client::Reply {
                    value,
                    json: Value::Array(json),
                    next,
                })
            }
        }
    }
}

/// `GET /v1/status`, with a page of the servers or (`--all`) every server.
async fn paged_status(
    client: &ApiClient,
    paging: &PagingArgs,
) -> Result<client::Reply<FleetStatus>, CliError> {
    let mut query = first_query(paging, None);
    let mut status = client.status(&query).await?;
    while let (true, Some(next)) = (paging.all, status.next.take()) {
        query.after = Some(next_key(&query, next)?);
        let page = client.status(&query).await?;
        if let (Some(all), Some(more)) = (
            status.json.get_mut("servers").and_then(Value::as_array_mut),
            page.json.get("servers").and_then(Value::as_array),
        ) {
            all.extend(more.iter().cloned());
        }
        status.value.servers.extend(page.value.servers);
        status.next = page.next;
    }
    Ok(status)
}

/// The next page's key, refused when it does not move on (an API that would
/// send the walk round in circles).
fn next_key(query: &ListQuery, next: String) -> Result<String, CliError> {
    if query
        .after
        .as_deref()
        .is_some_and(|after| next.as_str() <= after)
    {
        return Err(CliError::Unexpected(format!(
            "the API's next page starts after '{next}', not after '{}'",
            query.after.as_deref().unwrap_or_default()
        )));
    }
    Ok(next)
}

/// What a command prints: the API's JSON for `--json`, text for people, and a
/// note for stderr in both cases; `failure` makes the command fail after its
/// output is printed (a drain that could not move everything).
#[derive(Debug, Default)]
struct Output {
    json: Value,
    text: String,
    note: Option<String>,
    failure: Option<CliError>,
}

impl Output {
    fn new(json: Value, text: String) -> Self {
        Output {
            json,
            text,
            ..Default::default()
        }
    }

    /// Says, on stderr, how to get the page after this one, if more follow.
    fn with_next(mut self, next: Option<String>) -> Self {
        if let Some(key) = next {
            self.note = Some(format!(
                "more follow: run again with --after {key} for the next page, or --all for \
                 every page"
            ));
        }
        self
    }

    /// Prints the output, then fails with its `failure` if it has one.
    fn finish(self, json: bool) -> Result<(), CliError> {
        self.print(json)?;
        match self.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn print(&self, json: bool) -> Result<(), CliError> {
        if json && self.json.is_null() {
            // A command that streams (events, logs) printed its JSON lines
            // itself: nothing more, not even a `null` after them.
        } else if json {
            // Every command prints a document with --json, so that a script
            // can parse whatever it ran.
            let pretty = serde_json::to_string_pretty(&self.json)
                .map_err(|e| CliError::Local(format!("cannot print JSON: {e}")))?;
            println!("{pretty}");
        } else if !self.text.is_empty() {
            println!("{}", printable_lines(self.text.trim_end()));
        }
        if let Some(note) = &self.note {
            eprintln!("{}", printable_lines(note));
        }
        Ok(())
    }
}

/// Text for people, its lines kept and every other control character escaped:
/// the renderers escape each value already, this catches what they compose.
fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs one client command; `json` says whether the output is for a script
/// (no progress bar then).
async fn execute(client: &ApiClient, command: Command, json: bool) -> Result<Output, CliError> {
    let now = Utc::now();
    Ok(match command {
        Command::Serve(_) | Command::Completions { .. } | Command::Man { .. } => {
            return Err(CliError::Local(
                "`slum serve`, `slum completions` and `slum man` are no client commands".into(),
            ))
        }
        Command::Server(cmd) => server_command(client, cmd, now, json).await?,
        Command::Tenant(cmd) => tenant_command(client, cmd, now).await?,
        Command::Spawn(args) => {
            let r = client.spawn(&args.body()).await?;
            let mut out = Output::new(r.json, render_spawned(&r.value));
            out.note = unrouted_warning(client, &r.value).await;
            out
        }
        Command::Stop { key } => match client.stop(&key).await? {
            Stop::Done => Output::new(
                serde_json::json!({ "key": key, "stopped": true }),
                format!("stopped {key}"),
            ),
            Stop::Pending { mut json, message } => {
                json["stopped"] = Value::from(false);
                Output {
                    json,
                    note: Some(format!("warning: {message}")),
                    ..Default::default()
                }
            }
        },
        Command::Ps { server, paging } => {
            let r = paged(&paging, server.clone(), |q| async move {
                client.list_instances(&q).await
            })
            .await?;
            let text = match server {
                Some(id) if r.value.is_empty() => format!("no instances on server {id}"),
                _ => render_instances(&r.value),
            };
            Output::new(r.json, text).with_next(r.next)
        }
        Command::Status { paging } => {
            let status = paged_status(client, &paging).await?;
            Output::new(status.json, render_status(&status.value, now)).with_next(status.next)
        }
        Command::Token(cmd) => token_command(client, cmd, now).await?,
        Command::Cert(cmd) => cert_command(client, cmd, now).await?,
        Command::Reconcile => {
            let r = client.reconcile().await?;
            Output::new(r.json, render_reconcile(&r.value))
        }
        Command::Events(args) => events::events(client, args, json).await?,
        Command::Logs(args) => logs::logs(client, args, json).await?,
        Command::Top(args) => {
            return Err(CliError::Local(format!(
                "`slum top` redraws itself; it is not run here ({args:?})"
            )))
        }
    })
}

async fn server_command(
    client: &ApiClient,
    cmd: ServerCommand,
    now: DateTime<Utc>,
    json: bool,
) -> Result<Output, CliError> {
    Ok(match cmd {
        ServerCommand::Add(args) => {
            let r = client.add_server(&args.body()?).await?;
            let text = format!(
                "added server {}\n{}",
                r.value.id,
                render_server(&r.value, None, now)
            );
            Output::new(r.json, text)
        }
        ServerCommand::List { paging } => {
            let r = paged(
                &paging,
                None,
                |q| async move { client.list_servers(&q).await },
            )
            .await?;
            Output::new(r.json, render_servers(&r.value, now)).with_next(r.next)
        }
        ServerCommand::Show { id } => {
            let (server, stats) = tokio::try_join!(client.server(&id), client.server_stats(&id))?;
            let text = render_server(&server.value, Some(&stats.value), now);
            let json = serde_json::json!({ "server": server.json, "stats": stats.json });
            Output::new(json, text)
        }
        ServerCommand::Update(args) => {
            let r = client.update_server(&args.id, &args.patch()?).await?;
            let text = format!(
                "updated server {}\n{}",
                r.value.id,
                render_server(&r.value, None, now)
            );
            let mut out = Output::new(r.json, text);
            out.note = args.status.and_then(|s| status_note(&args.id, s));
            out
        }
        ServerCommand::Remove { id } => {
            client.remove_server(&id).await?;
            Output::new(
                serde_json::json!({ "removed": id }),
                format!("removed server {id}"),
            )
        }
        ServerCommand::Drain { id } => drain::follow(client, &id, json).await?,
        ServerCommand::Cordon { id } => {
            let r = client.cordon(&id, true).await?;
            let text = format!(
                "server {} is cordoned (status {}): it takes no new placements; what runs \
                 there keeps running and routed (`slum server uncordon {}` lifts it)",
                r.value.id, r.value.status, r.value.id
            );
            Output::new(r.json, text)
        }
        ServerCommand::Uncordon { id } => {
            let r = client.cordon(&id, false).await?;
            let text = format!(
                "server {} takes placements again (status {})",
                r.value.id,
                r.value.state_text()
            );
            Output::new(r.json, text)
        }
        ServerCommand::Undrain { id } => {
            let r = client.undrain(&id).await?;
            let text = format!(
                "server {} takes placements again (status {})",
                r.value.id, r.value.status
            );
            Output::new(r.json, text)
        }
    })
}

/// What `server update --status` does beyond the change itself: health
/// checks own online and offline, and decide again from the next checks.
fn status_note(id: &str, status: args::StatusArg) -> Option<String> {
    use args::StatusArg;
    match status {
        StatusArg::Draining => None,
        StatusArg::Online | StatusArg::Offline | StatusArg::Unknown => Some(format!(
            "note: health checks decide server {id}'s status from here (an offline server \
             that answers is back online after two good checks); to keep new placements off \
             it, `slum server cordon {id}`; to move its tenants away, `slum server drain {id}`"
        )),
    }
}

async fn tenant_command(
    client: &ApiClient,
    cmd: TenantCommand,
    now: DateTime<Utc>,
) -> Result<Output, CliError> {
    Ok(match cmd {
        TenantCommand::Add(args) => {
            let r = client.add_tenant(&args.body()).await?;
            let text = format!(
                "added tenant {}\n{}",
                r.value.domain,
                render_tenant(&r.value, now)
            );
            Output::new(r.json, text)
        }
        TenantCommand::List { server, paging } => {
            let r = paged(
                &paging,
                server,
                |q| async move { client.list_tenants(&q).await },
            )
            .await?;
            Output::new(r.json, render_tenants(&r.value)).with_next(r.next)
        }
        TenantCommand::Show { domain } => {
            let r = client.tenant(&domain).await?;
            let mut json = r.json;
            let mut text = render_tenant(&r.value, now);
            // The router's figures for the tenant; an older `slum serve`
            // has none, and the record is shown all the same.
            match client.tenant_traffic(&r.value.name).await {
                Ok(traffic) => {
                    text.push('\n');
                    text.push_str(&render_tenant_traffic(&traffic.value));
                    if let Some(record) = json.as_object_mut() {
                        record.insert("traffic".into(), traffic.json);
                    }
                }
                Err(CliError::Api { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
            Output::new(json, text)
        }
        TenantCommand::Update(args) => {
            let r = client.update_tenant(&args.domain, &args.patch()).await?;
            let text = format!(
                "updated tenant {}\n{}",
                r.value.domain,
                render_tenant(&r.value, now)
            );
            Output::new(r.json, text)
        }
        TenantCommand::Move { domain, to } => {
            let r = client.move_tenant(&domain, &to).await?;
            let t = &r.value.tenant;
            let text = if r.value.moved {
                format!("moved {} to server {}", t.domain, t.server_id)
            } else {
                format!(
                    "{} is on server {} already: nothing moved",
                    t.domain, t.server_id
                )
            };
            Output::new(r.json, text)
        }
        TenantCommand::Remove { domain, stop } => remove_tenant(client, &domain, stop).await?,
    })
}

/// `slum tenant remove`: removes the domain, then says what became of its
/// instance: stopped (with `--stop`, when no other domain of its tenant's
/// process routes to it), still serving other domains, or left running with
/// its memory reserved (a warning naming how to stop it).
async fn remove_tenant(client: &ApiClient, domain: &str, stop: bool) -> Result<Output, CliError> {
    let tenant = client.tenant(domain).await?.value;
    client.remove_tenant(domain).await?;
    let key = tenant.instance_key();
    let mut out = Output::new(
        serde_json::json!({ "removed": tenant.domain, "instance": key }),
        format!("removed tenant {}", tenant.domain),
    );
    let Some(left) = client.instance(&key).await? else {
        // Never started, or stopped already: nothing holds memory.
        out.json["instance"] = Value::Null;
        return Ok(out);
    };
    let inst = &left.value.instance;
    let others = &left.value.domains;
    out.json["still_routed_by"] = serde_json::json!(others);
    if !others.is_empty() {
        if stop {
            out.note = Some(format!(
                "note: {key} not stopped: {} still route(s) to it",
                others.join(", ")
            ));
        }
        return Ok(out);
    }
    if !stop {
        out.json["left_running"] = left.json.clone();
        out.note = Some(format!(
            "warning: instance {key} keeps running on server {} with {} MB reserved, and no \
             domain routes to it: `slum stop {key}` stops it (`tenant remove --stop` does both)",
            inst.server_id, inst.memory_mb
        ));
        return Ok(out);
    }
    match client.stop(&key).await? {
        Stop::Done => {
            out.json["stopped"] = Value::from(true);
            out.text.push_str(&format!(
                "\nstopped {key} on server {} ({} MB freed)",
                inst.server_id, inst.memory_mb
            ));
        }
        Stop::Pending { json, message } => {
            out.json["stopped"] = Value::from(false);
            out.json["stop_pending"] = json;
            out.note = Some(format!("warning: {message}"));
        }
    }
    Ok(out)
}

/// The warning of a spawn for a tenant no domain reaches (a typo of its
/// name starts an orphan), or nothing.
async fn unrouted_warning(client: &ApiClient, spawned: &Instance) -> Option<String> {
    let key = spawned.key();
    // Only a warning: a failure to ask is no failure of the spawn.
    let domains = match client.instance(&key).await {
        Ok(Some(r)) => r.value.domains,
        _ => return None,
    };
    domains.is_empty().then(|| {
        format!(
            "warning: no domain routes to tenant '{}' (process {}): nothing reaches {key}; \
             route one with `slum tenant add DOMAIN --server {} --process {} --instance {} \
             --name {}`, or, if the name is a typo, `slum stop {key}`",
            spawned.tenant,
            spawned.process,
            spawned.server_id,
            spawned.process,
            spawned.instance_id,
            spawned.tenant
        )
    })
}

async fn cert_command(
    client: &ApiClient,
    cmd: CertCommand,
    now: DateTime<Utc>,
) -> Result<Output, CliError> {
    Ok(match cmd {
        CertCommand::Add(args) => {
            let r = client.put_certificate(&args.name, &args.body()?).await?;
            let text = format!(
                "stored certificate {}\n{}",
                r.value.name,
                render_certificate(&r.value, now)
            );
            Output::new(r.json, text)
        }
        CertCommand::List { paging } => {
            let r = paged(&paging, None, |q| async move {
                client.list_certificates(&q).await
            })
            .await?;
            Output::new(r.json, render_certificates(&r.value, now)).with_next(r.next)
        }
        CertCommand::Show { name } => {
            let r = client.certificate(&name).await?;
            Output::new(r.json, render_certificate(&r.value, now))
        }
        CertCommand::Remove { name } => {
            client.remove_certificate(&name).await?;
            Output::new(
                serde_json::json!({ "removed": name }),
                format!("removed certificate {name}"),
            )
        }
        CertCommand::Order { domain } => {
            let r = client.order_certificate(&domain).await?;
            let text = format!(
                "certificate {} wanted: the leading router orders it\n{}",
                r.value.name,
                render_certificate(&r.value, now)
            );
            Output::new(r.json, text)
        }
    })
}

async fn token_command(
    client: &ApiClient,
    cmd: TokenCommand,
    now: DateTime<Utc>,
) -> Result<Output, CliError> {
    Ok(match cmd {
        TokenCommand::Create { name } => {
            let r = client.create_token(&name).await?;
            // The secret alone on stdout, so that `TOKEN=$(slum token create ci)`
            // works; the explanation goes to stderr.
            Output {
                json: r.json,
                text: r.value.secret.clone(),
                note: Some(format!(
                    "created token {} ({}); this secret is shown once and cannot be shown again: store it now",
                    r.value.token.id, r.value.token.name
                )),
                failure: None,
            }
        }
        TokenCommand::List => {
            let r = client.list_tokens().await?;
            Output::new(r.json, render_tokens(&r.value, now))
        }
        TokenCommand::Revoke { id } => {
            client.revoke_token(&id).await?;
            Output::new(
                serde_json::json!({ "revoked": id }),
                format!("revoked token {id}"),
            )
        }
        TokenCommand::Reset(_) => {
            return Err(CliError::Local(
                "`slum token reset` opens the database itself, not the API".into(),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(log_colours(true, None));
        assert!(!log_colours(false, None), "a file or a pipe");
        assert!(!log_colours(true, Some(OsStr::new("1"))), "NO_COLOR=1");
        assert!(
            log_colours(true, Some(OsStr::new(""))),
            "an empty NO_COLOR is no request"
        );
    }
}
