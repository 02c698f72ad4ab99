//! `slum server drain`: starts a drain through the API and follows it with a
//! progress bar (on a terminal, and not with `--json`) until it is done or
//! stopped by an undrain, then sums up what moved and what failed. Ctrl-C stops
//! watching, not the drain, which runs inside `slum serve`.

use std::time::Duration;

use super::client::ApiClient;
use super::error::CliError;
use super::render::render_drain;
use super::Output;
use crate::api::wire::ServerStatus;

/// How often `server drain` asks how far the drain is.
const DRAIN_POLL: Duration = Duration::from_millis(400);

/// The progress bar of `slum server drain`, on stderr.
fn drain_bar_style() -> Result<indicatif::ProgressStyle, CliError> {
    Ok(indicatif::ProgressStyle::with_template(
        "draining {prefix} [{bar:30}] {pos}/{len} instances {msg}",
    )
    .map_err(|e| CliError::Local(format!("progress bar: {e}")))?
    .progress_chars("=> "))
}

/// `slum server drain`: starts the drain, follows it with a progress bar (on a
/// terminal, and not with --json) until it is done, then sums it up.
pub(super) async fn follow(client: &ApiClient, id: &str, json: bool) -> Result<Output, CliError> {
    use std::io::IsTerminal;
    let mut reply = client.drain(id).await?;
    let bar = if json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
            .with_style(drain_bar_style()?)
            .with_prefix(id.to_owned())
    };
    let stopped = loop {
        let p = &reply.value;
        let handled = (p.moved.len() + p.failed.len()).min(p.total);
        bar.set_length(p.total as u64);
        bar.set_position(handled as u64);
        if !p.failed.is_empty() {
            bar.set_message(format!("({} failed)", p.failed.len()));
        }
        if p.done {
            break false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
        let (progress, server) = tokio::try_join!(client.drain_progress(id), client.server(id))?;
        reply = progress;
        // An undrain stops the drain where it is; it will never say done.
        if !reply.value.done && server.value.status != ServerStatus::Draining {
            break true;
        }
    };
    bar.finish_and_clear();
    let failed = reply.value.failed.len();
    let failure = if stopped {
        Some(CliError::Local(format!(
            "the drain of server {id} was stopped (undrained) before it finished"
        )))
    } else if failed > 0 {
        Some(CliError::Local(format!(
            "{failed} instance(s) or domain(s) could not be moved off server {id}; \
             they stay there (run the drain again to retry)"
        )))
    } else {
        None
    };
    Ok(Output {
        text: render_drain(&reply.value),
        json: reply.json,
        note: None,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_progress_bar_template_is_valid() {
        assert!(drain_bar_style().is_ok());
    }
}
