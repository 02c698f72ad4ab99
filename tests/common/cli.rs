//! The `slum` binary run against a test's `slum serve`, and the lines of a
//! command that keeps printing (`-f`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::serve::Slum;

const SLUM: &str = env!("CARGO_BIN_EXE_slum");

/// `slum ARGS...` against `slum`'s API with `token`, its environment
/// scrubbed of the caller's settings.
pub fn slum_cli(slum: &Slum, token: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(SLUM);
    for var in ["SLUM_TOKEN", "SLUM_TOKEN_FILE", "SLUM_CONFIG", "NO_COLOR"] {
        cmd.env_remove(var);
    }
    cmd.env("SLUM_API", format!("http://{}", slum.api))
        .arg("--token")
        .arg(token)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// What one run of the CLI printed: exit code, stdout, stderr.
pub fn run(slum: &Slum, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = slum_cli(slum, token, args).output().expect("run slum");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// stdout of a run that must succeed.
pub fn run_ok(slum: &Slum, token: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = run(slum, token, args);
    assert_eq!(code, Some(0), "slum {args:?}: {stderr}");
    stdout
}

/// A child's stdout or stderr, line by line, as it comes.
pub fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads `lines` until one passes `wanted`, within `within`; returns it and
/// the lines that came before it.
pub fn wait_line(
    lines: &mpsc::Receiver<String>,
    within: Duration,
    wanted: impl Fn(&str) -> bool,
) -> (String, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return (line, seen),
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no such line within {within:?}; saw: {seen:#?}");
}
