//! The log lines of a test binary, captured for all its tests (`slum
//! serve`'s router threads log through the global subscriber), and the
//! request ids that tie a public error answer to its log line.

use std::sync::{Mutex, Once};

static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn captured() -> std::sync::MutexGuard<'static, Vec<u8>> {
    CAPTURED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        captured().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing (once for the binary; later calls do nothing).
pub fn capture() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// The captured lines that hold `needle`, joined.
pub fn lines_with(needle: &str) -> String {
    String::from_utf8_lossy(&captured())
        .lines()
        .filter(|l| l.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The request id a public error answer's body gives.
///
/// # Panics
/// If it gives none.
pub fn request_id(body: &str) -> String {
    body.rsplit_once("(request id ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no request id in {body:?}"))
}

/// Asserts that `body` is the public error answer `what` (a status line's
/// code and reason, and the general words), with a request id whose log
/// line holds each of `details`; returns the log line.
pub fn assert_public_error(body: &str, what: &str, details: &[&str]) -> String {
    let id = request_id(body);
    assert_eq!(body.trim_end(), format!("{what} (request id {id})"));
    let logged = lines_with(&id);
    for detail in details {
        assert!(
            logged.contains(detail),
            "{detail:?} is not in the log line of {id}: {logged:?}"
        );
    }
    logged
}
