//! `slum server drain`: starts a drain through the API and follows it with a
//! progress bar (on a terminal, and not with `--json`) until it is done or
//! stopped by an undrain, then sums up what moved and what failed. Ctrl-C stops
//! watching, not the drain, which runs inside `slum serve`.

use std::time::Duration;

use super::client::ApiClient;
use super::error::CliError;
use super::render::render_drain;
use super::Output;
use crate::api::wire::DrainProgress;

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
    // Followed until the drain itself says it ended: the server's status is
    // no guide, as a dead server turns offline while its drain goes on.
    while !reply.value.done {
        let p = &reply.value;
        let handled = (p.moved.len() + p.failed.len()).min(p.total);
        bar.set_length(p.total as u64);
        bar.set_position(handled as u64);
        if !p.failed.is_empty() {
            bar.set_message(format!("({} failed)", p.failed.len()));
        }
        tokio::time::sleep(DRAIN_POLL).await;
        reply = client.drain_progress(id).await?;
    }
    bar.finish_and_clear();
    let failure = drain_failure(&reply.value);
    Ok(Output {
        text: render_drain(&reply.value),
        json: reply.json,
        note: None,
        failure,
    })
}

/// Why a drain that ended fails the command, from its own progress: an
/// undrain stopped it, or something could not be moved.
fn drain_failure(p: &DrainProgress) -> Option<CliError> {
    // An older `slum serve` says so only among the failures.
    let stopped = p.stopped || p.failed.iter().any(|f| f == "drain stopped by undrain");
    let failed = p.failed.len();
    if stopped {
        Some(CliError::Local(format!(
            "the drain of server {} was stopped (undrained) before it finished",
            p.server
        )))
    } else if failed > 0 {
        Some(CliError::Local(format!(
            "{failed} instance(s) or domain(s) could not be moved off server {}; \
             they stay there (run the drain again to retry)",
            p.server
        )))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_progress_bar_template_is_valid() {
        assert!(drain_bar_style().is_ok());
    }

    #[test]
    fn a_drain_is_judged_by_its_own_progress() {
        let done = DrainProgress {
            server: "s1".into(),
            moved: vec!["a:prod -> s2".into()],
            done: true,
            ..Default::default()
        };
        assert!(drain_failure(&done).is_none(), "finished, all moved");
        let failed = DrainProgress {
            failed: vec!["b:prod: no room".into()],
            ..done.clone()
        };
        let e = drain_failure(&failed).map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("1 instance(s)")));
        let undrained = DrainProgress {
            failed: vec!["drain stopped by undrain".into()],
            stopped: true,
            ..done.clone()
        };
        let e = drain_failure(&undrained).map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("stopped (undrained)")));
        let older = DrainProgress {
            stopped: false,
            ..undrained
        };
        assert!(drain_failure(&older).is_some_and(|e| e.to_string().contains("undrained")));
    }
}
