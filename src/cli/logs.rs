//! `slum logs`: an instance's output through the management API, which reads
//! it from the instance's server with that server's token. With `-f`, the
//! API's stream of JSON lines is printed as it comes: the instance's lines on
//! stdout, and its notices (the instance moved, its server does not answer)
//! on stderr, prefixed `slum:`.

use std::io::Write;

use super::args::LogsArgs;
use super::client::ApiClient;
use super::error::CliError;
use super::render::{printable, render_log_line};
use super::Output;
use crate::api::wire::LogEvent;

/// `slum logs`: the lines there are, or (with `-f`) those and each new one
/// until Ctrl-C.
pub(super) async fn logs(
    client: &ApiClient,
    args: LogsArgs,
    json: bool,
) -> Result<Output, CliError> {
    let (tenant, _) = args.tenant_and_instance();
    if !args.follow {
        let reply = client.logs(tenant, &args.query(false)).await?;
        let raw = reply.json.as_array();
        let mut out = std::io::stdout().lock();
        for (i, line) in reply.value.iter().enumerate() {
            let text = match (json, raw.and_then(|r| r.get(i))) {
                (true, Some(raw)) => raw.to_string(),
                _ => render_log_line(line),
            };
            if writeln!(out, "{text}").is_err() {
                break;
            }
        }
        return Ok(Output::default());
    }
    let mut resp = client.follow_logs(tenant, &args.query(true)).await?;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = resp.chunk().await.map_err(|e| client.stream_error(&e))?;
        let Some(chunk) = chunk else {
            return Err(CliError::Unexpected(format!(
                "the slum API ended the stream of {}'s output (is slum serve stopping?)",
                args.target
            )));
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if !print(&line, json) {
                return Ok(Output::default());
            }
        }
    }
}

/// Prints one line of the API's stream; false when stdout is gone.
fn print(line: &[u8], json: bool) -> bool {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return true;
    }
    let mut out = std::io::stdout().lock();
    if json {
        return writeln!(out, "{text}").and_then(|()| out.flush()).is_ok();
    }
    match serde_json::from_str::<LogEvent>(text) {
        Ok(LogEvent::Line(line)) => writeln!(out, "{}", render_log_line(&line))
            .and_then(|()| out.flush())
            .is_ok(),
        Ok(LogEvent::Notice { notice, .. }) => {
            eprintln!("slum: {}", printable(&notice));
            true
        }
        Err(_) => {
            eprintln!("slum: an unexpected line from the API: {}", printable(text));
            true
        }
    }
}
