//! `slum events`: the fleet's events, oldest first, as `kubectl get events`
//! shows a cluster's; with `-f`, new ones as they are recorded, by polling
//! the API with the last id seen as the cursor (`kubectl get events -w`).

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use super::args::EventsArgs;
use super::client::ApiClient;
use super::error::CliError;
use super::render::{events_header, render_event};
use super::Output;
use crate::api::wire::{Event, EventsQuery};

/// How often `slum events -f` asks for new events.
const POLL: Duration = Duration::from_secs(1);

/// Events one poll asks for at most.
const POLL_LIMIT: u32 = 1000;

/// How many ids behind its cursor a follower asks again. On PostgreSQL two
/// routers' events may commit a moment out of order: an id below the newest
/// seen may appear late; asking a little behind (and skipping what was
/// printed) still shows it.
const OVERLAP_IDS: i64 = 64;

/// Prints events as lines: JSON (with `--json`, the API's own objects) or
/// aligned text under a header. A reader that went away (`| head`) ends the
/// printing quietly.
struct Printer {
    json: bool,
    header: bool,
}

impl Printer {
    /// The header, once (none for JSON).
    fn header(&mut self) -> std::io::Result<()> {
        if self.json || self.header {
            return Ok(());
        }
        self.header = true;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", events_header())?;
        out.flush()
    }

    /// Prints one event; false when stdout is gone.
    fn print(&mut self, event: &Event, raw: Option<&Value>) -> bool {
        if self.header().is_err() {
            return false;
        }
        let line = match (self.json, raw) {
            (true, Some(raw)) => raw.to_string(),
            (true, None) => serde_json::to_string(event).unwrap_or_default(),
            (false, _) => render_event(event),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    }
}

/// `slum events`: the events asked for, then (with `-f`) new ones until
/// Ctrl-C.
pub(super) async fn events(
    client: &ApiClient,
    args: EventsArgs,
    json: bool,
) -> Result<Output, CliError> {
    let mut printer = Printer {
        json,
        header: false,
    };
    let mut query = EventsQuery {
        server: args.server.clone(),
        tenant: args.tenant.clone(),
        since: args.since.clone(),
        limit: args.limit.map(|n| n.to_string()),
        after: None,
    };
    let mut newest = 0;
    let mut more;
    loop {
        let page = client.events(&query).await?;
        let raw = page.json.as_array();
        for (i, event) in page.value.iter().enumerate() {
            if !printer.print(event, raw.and_then(|r| r.get(i))) {
                return Ok(Output::default());
            }
            newest = newest.max(event.id);
        }
        more = page.next.is_some();
        // Following from a time: every page of it first.
        match page.next {
            Some(next) if args.follow => {
                query.since = None;
                query.after = Some(next);
            }
            _ => break,
        }
    }
    if !args.follow {
        let mut output = Output::default();
        if newest == 0 && !json {
            output.text = "no events".to_owned();
        } else if more {
            output.note = Some(
                "more follow: run again with a larger --limit (at most 10000), or with -f to \
                 see them all and what comes next"
                    .to_owned(),
            );
        }
        return Ok(output);
    }
    if printer.header().is_err() {
        return Ok(Output::default());
    }
    follow(client, &args, &mut printer, newest).await
}

/// Polls for the events after `floor` (the newest printed) and prints each
/// once, in id order, until Ctrl-C or an error.
async fn follow(
    client: &ApiClient,
    args: &EventsArgs,
    printer: &mut Printer,
    floor: i64,
) -> Result<Output, CliError> {
    let mut cursor = floor;
    // The ids printed within OVERLAP_IDS of the cursor.
    let mut printed: BTreeSet<i64> = BTreeSet::new();
    let mut wait = true;
    loop {
        if wait {
            tokio::time::sleep(POLL).await;
        }
        let after = (cursor - OVERLAP_IDS).max(floor);
        let query = EventsQuery {
            server: args.server.clone(),
            tenant: args.tenant.clone(),
            after: Some(after.to_string()),
            since: None,
            limit: Some(POLL_LIMIT.to_string()),
        };
        let page = client.events(&query).await?;
        let raw = page.json.as_array();
        for (i, event) in page.value.iter().enumerate() {
            if event.id <= floor || !printed.insert(event.id) {
                continue;
            }
            if !printer.print(event, raw.and_then(|r| r.get(i))) {
                return Ok(Output::default());
            }
            cursor = cursor.max(event.id);
        }
        printed = printed.split_off(&(cursor - OVERLAP_IDS));
        // A full page: more are there already.
        wait = page.next.is_none();
    }
}
