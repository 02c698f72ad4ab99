//! The `slum` binary: sets up logging and the runtime, and hands over to
//! [`slum::cli`].

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = slum::cli::Cli::parse_args();
    // The server logs what it does; client commands print their answer and only
    // log warnings, so that their output stays clean.
    let default = if cli.is_serve() { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colour only for a person at a terminal: a log written to a file or a
    // pipe (systemd's journal, `2> slum.log`) gets no escape sequences, nor
    // does anyone who set NO_COLOR.
    let ansi = slum::cli::log_colours(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    // The control plane's runtime; `slum serve`'s router threads run their own.
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(slum::cli::run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
