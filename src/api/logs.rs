//! `/v1/tenants/{tenant}/logs`: an instance's output, read from its
//! server's tenement with the server's token (the caller needs only the
//! API's). Without `follow`, a JSON array of the lines there are; with
//! `follow=true`, a stream of JSON lines (`application/x-ndjson`): the lines
//! there are, then each new one as it is written, and notices (the instance
//! moved, its server does not answer, it is gone), for as long as the client
//! reads, or until `slum serve` stops.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tokio::sync::mpsc;

use super::extract::{ApiPath, ApiQuery};
use super::wire::{parse_since, LogsQuery};
use super::{ApiResult, Stopping};
use crate::fleet::validation::quoted;
use crate::logs::{LogEvent, LogFilter, LogStream, DEFAULT_LOG_LINES};
use crate::serve::AppState;
use crate::Error;

/// Lines a follower may have ready before it waits for the client.
const FOLLOW_BUFFER: usize = 256;

pub(super) async fn instance_logs(
    State(state): State<AppState>,
    stopping: Option<Extension<Stopping>>,
    ApiPath(tenant): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let filter = LogFilter {
        since: query
            .since
            .as_deref()
            .map(|t| parse_since(t, chrono::Utc::now()).map_err(|e| Error::invalid("since", e)))
            .transpose()?,
        grep: query.grep.filter(|g| !g.is_empty()),
        stream: query
            .stream
            .as_deref()
            .map(str::parse::<LogStream>)
            .transpose()?,
        limit: match query.limit.as_deref() {
            None => DEFAULT_LOG_LINES,
            Some(text) => text.trim().parse().map_err(|_| {
                Error::invalid(
                    "limit",
                    format!("must be a whole number, not {}", quoted(text)),
                )
            })?,
        },
    };
    filter.check()?;
    let follow = match query.follow.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(Error::invalid(
                "follow",
                format!("must be true or false, not {}", quoted(other)),
            ))
        }
    };
    let instance = state
        .db
        .instance_for_logs(&tenant, query.instance.as_deref())
        .await?;
    if !follow {
        return Ok(Json(state.db.instance_logs(&instance, &filter).await?).into_response());
    }
    let (tx, rx) = mpsc::channel::<LogEvent>(FOLLOW_BUFFER);
    let db = state.db.clone();
    let key = instance.key();
    let mut stop = stopping.map(|Extension(Stopping(stop))| stop);
    tokio::spawn(async move {
        tokio::select! {
            _ = db.follow_logs(&key, &filter, tx) => {}
            _ = async {
                match stop.as_mut() {
                    Some(stop) => { let _ = stop.wait_for(|stopped| *stopped).await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    });
    let lines = futures::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(line), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
