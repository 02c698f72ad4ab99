//! The PostgreSQL store's fleet events.

use super::*;
use crate::fleet::store::EventStore;

#[async_trait]
impl EventStore for PostgresStore {
    async fn insert_event(&self, e: &EventRow<'_>) -> Result<i64> {
        Ok(
            sqlx::query_scalar(&postgres_placeholders(event_sql::INSERT))
                .bind(millis(e.at))
                .bind(e.kind)
                .bind(e.server)
                .bind(e.tenant)
                .bind(e.instance)
                .bind(e.cause)
                .bind(e.router)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn events_after(
        &self,
        filter: EventFilter<'_>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>> {
        let sql = postgres_placeholders(&event_sql::select(filter, true, false, limit));
        sqlx::query(&sql)
            .bind_opt(filter.server)
            .bind_opt(filter.tenant)
            .bind(after)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn newest_events(&self, filter: EventFilter<'_>, limit: i64) -> Result<Vec<Event>> {
        let sql = postgres_placeholders(&event_sql::select(filter, false, true, limit));
        sqlx::query(&sql)
            .bind_opt(filter.server)
            .bind_opt(filter.tenant)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    }

    async fn first_event_since(&self, at: i64) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar(&postgres_placeholders(event_sql::FIRST_SINCE))
                .bind(at)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn delete_events_before(&self, before: i64, limit: i64) -> Result<u64> {
        let done = sqlx::query(&postgres_placeholders(&event_sql::delete_before(
            limit, true,
        )))
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn delete_events_beyond(&self, keep: i64, limit: i64) -> Result<u64> {
        let done = sqlx::query(&postgres_placeholders(&event_sql::delete_beyond(
            limit, true,
        )))
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
