//! The WAL's checkpoints, by a task of the store's own (see the store's
//! module comment).

use super::*;

/// How often the store's task checkpoints the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Aborts a task when dropped.
#[derive(Debug)]
pub(super) struct AbortOnDrop(tokio::task::AbortHandle);

/// Starts checkpointing `pool`'s WAL, until the handle is dropped.
pub(super) fn start(pool: SqlitePool) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(checkpoint_in_background(pool)).abort_handle())
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Copies what the WAL holds into the database file, every
/// [`CHECKPOINT_EVERY`], without waiting for readers or writers (a passive
/// checkpoint: what a reader still needs is left for the next round). Cheap
/// when nothing was written.
async fn checkpoint_in_background(pool: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if pool.is_closed() {
            return;
        }
        let done: std::result::Result<(i64, i64, i64), _> =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await;
        if let Err(e) = done {
            tracing::debug!(error = %e, "WAL checkpoint failed; tried again in a second");
        }
    }
}
