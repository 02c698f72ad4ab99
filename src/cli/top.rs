//! `slum top`: the busiest tenants now (or, with `--servers`, the servers),
//! as the router of the `slum serve` asked counts them over the last minute.
//! On a terminal the table is redrawn every `--interval` until Ctrl-C;
//! `--once` (and `--json`, which prints the API's answer) prints it once.
//! Written to a pipe, each refresh follows the last, and a closed pipe ends
//! the command quietly.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::args::TopArgs;
use super::client::ApiClient;
use super::error::CliError;
use super::render::{render_top, render_top_servers};
use super::{printable_lines, Output};

/// Clears a terminal and puts the cursor at its top left.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// One look: the API's JSON and the table for people.
async fn look(client: &ApiClient, args: &TopArgs) -> Result<Output, CliError> {
    Ok(match args.servers {
        true => {
            let r = client.traffic_servers().await?;
            Output::new(r.json, render_top_servers(&r.value))
        }
        false => {
            let r = client.traffic_top(args.limit).await?;
            Output::new(r.json, render_top(&r.value))
        }
    })
}

/// Runs `slum top`.
pub(super) async fn run(client: &ApiClient, args: &TopArgs, json: bool) -> Result<(), CliError> {
    if args.once || json {
        return look(client, args).await?.finish(json);
    }
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        return Err(CliError::Local(format!(
            "--interval must be at least 0.1 seconds, not {}",
            args.interval
        )));
    }
    let interval = Duration::from_secs_f64(args.interval);
    let terminal = std::io::stdout().is_terminal();
    loop {
        let output = look(client, args).await?;
        let now = chrono::Local::now().format("%H:%M:%S");
        let frame = format!(
            "{}slum top, {now} (every {}s; Ctrl-C stops)\n\n{}\n",
            if terminal { CLEAR } else { "" },
            args.interval,
            printable_lines(output.text.trim_end())
        );
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(frame.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            // The reader went away (`slum top | head`): nothing more to do.
            return Ok(());
        }
        drop(stdout);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
