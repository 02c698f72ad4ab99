//! The dashboard's sessions: signing in with an API token opens one, and the
//! browser holds only its random id, in an `HttpOnly`, `SameSite=Strict`
//! cookie. This process keeps the SHA-256 of each id, never the id itself nor
//! the token's secret: what it keeps of a session is the id of the token it was
//! opened with, which each request checks is still valid (a revoked token
//! ends its sessions at once), and when the session ends.
//!
//! Sessions live in this process's memory: a restart signs everyone out, and
//! with several routers a session is good on the one it was opened on. They are
//! bounded: a session ends after [`SESSION_TTL`], and past
//! [`MAX_SESSIONS`] the oldest goes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::lock;

/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept at once.
pub const MAX_SESSIONS: usize = 10_000;

/// The cookie a session's id travels in.
pub const COOKIE: &str = "slum_session";

/// What is kept of a session.
#[derive(Debug, Clone)]
struct Session {
    token_id: String,
    ends: Instant,
    /// The order sessions were opened in, for those that end at the same
    /// instant.
    seq: u64,
}

/// The open sessions of one `slum serve`.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    opened: std::sync::atomic::AtomicU64,
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Opens a session for the token of id `token_id`; returns the session's
    /// id, for the cookie (256 random bits, hex).
    pub fn open(&self, token_id: &str) -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let id = hex::encode(bytes);
        let now = Instant::now();
        let mut sessions = lock(&self.by_hash);
        sessions.retain(|_, s| s.ends > now);
        if sessions.len() >= MAX_SESSIONS {
            // Full of live sessions: the one that ends first goes.
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| (s.ends, s.seq))
                .map(|(k, _)| *k)
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            hash(&id),
            Session {
                token_id: token_id.to_owned(),
                ends: now + SESSION_TTL,
                seq: self
                    .opened
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            },
        );
        id
    }

    /// The id of the token session `id` was opened with, while it lasts.
    pub fn token_of(&self, id: &str) -> Option<String> {
        let key = hash(id);
        let mut sessions = lock(&self.by_hash);
        match sessions.get(&key) {
            Some(s) if s.ends > Instant::now() => Some(s.token_id.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends session `id` (signing out).
    pub fn close(&self, id: &str) {
        lock(&self.by_hash).remove(&hash(id));
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        lock(&self.by_hash).len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_names_its_token_until_closed_and_keeps_no_id() {
        let sessions = Sessions::default();
        let id = sessions.open("abc123");
        assert_eq!(id.len(), 64);
        assert_eq!(sessions.token_of(&id), Some("abc123".into()));
        assert_eq!(sessions.token_of("not-a-session"), None);
        let kept = format!("{:?}", sessions);
        assert!(!kept.contains(&id), "only a hash is kept: {kept}");
        sessions.close(&id);
        assert_eq!(sessions.token_of(&id), None);
        assert!(sessions.is_empty());
    }

    #[test]
    fn sessions_are_bounded_the_first_to_end_going_first() {
        let sessions = Sessions::default();
        let first = sessions.open("t");
        for _ in 1..MAX_SESSIONS {
            sessions.open("t");
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        let last = sessions.open("t");
        assert_eq!(sessions.len(), MAX_SESSIONS);
        assert_eq!(sessions.token_of(&last), Some("t".into()));
        assert_eq!(sessions.token_of(&first), None, "the oldest went");
    }
}
