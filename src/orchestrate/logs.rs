//! An instance's output, wherever it runs: read from its server's tenement
//! (which keeps the last lines each process wrote, and streams new ones),
//! with the server's own token, so that an operator needs neither.
//!
//! [`SlumDb::instance_logs`] reads the lines there are; [`SlumDb::follow_logs`]
//! follows the instance as `tail -f` would, and across servers: when the
//! instance moves (a tenant move, a drain, a failover) it says so and goes on
//! with the new copy's lines, and a server that stops answering is said once,
//! then waited for.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::{Error, Kind, Result};
use crate::fleet::model::Instance;
use crate::fleet::store::RouteScope;
use crate::fleet::validation;
use crate::orchestrate::slum_db::SlumDb;
use crate::orchestrate::tenement::{LogEntry, LogQuery};

/// Lines a read returns when the caller does not say.
pub const DEFAULT_LOG_LINES: usize = 100;

/// The most lines a read returns: all tenement keeps.
pub const MAX_LOG_LINES: usize = 10_000;

/// How often a follower looks whether its instance moved.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How long a follower waits for a line or a keep-alive (tenement sends one
/// every 15 s) before it opens the stream again.
const STREAM_IDLE: Duration = Duration::from_secs(45);

/// An instance's standard output or standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl std::str::FromStr for LogStream {
    type Err = Error;

    fn from_str(s: &str) -> Result<LogStream> {
        match s {
            "stdout" => Ok(LogStream::Stdout),
            "stderr" => Ok(LogStream::Stderr),
            other => Err(Error::invalid(
                "stream",
                format!(
                    "must be stdout or stderr, not {}",
                    validation::quoted(other)
                ),
            )),
        }
    }
}

/// One line an instance wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When its server read it.
    pub at: DateTime<Utc>,
    pub stream: LogStream,
    pub message: String,
    /// The server the instance ran on.
    pub server: String,
    /// The instance (`tenant:instance_id`).
    pub instance: String,
}

/// What a follower says: a line, or a notice (the instance moved, its server
/// does not answer, it is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogEvent {
    Line(LogLine),
    Notice { at: DateTime<Utc>, notice: String },
}

impl LogEvent {
    fn notice(text: impl Into<String>) -> LogEvent {
        LogEvent::Notice {
            at: Utc::now(),
            notice: text.into(),
        }
    }
}

/// Which lines: since a time, containing a text, of one stream, the newest
/// `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter {
    pub since: Option<DateTime<Utc>>,
    /// Only lines containing this text (as it is, case-sensitive).
    pub grep: Option<String>,
    pub stream: Option<LogStream>,
    /// At most this many (1 to [`MAX_LOG_LINES`]): the newest.
    pub limit: usize,
}

impl Default for LogFilter {
    fn default() -> Self {
        LogFilter {
            since: None,
            grep: None,
            stream: None,
            limit: DEFAULT_LOG_LINES,
        }
    }
}

impl LogFilter {
    /// Refuses a limit out of range or a text with control characters,
    /// naming the field.
    pub fn check(&self) -> Result<()> {
        if !(1..=MAX_LOG_LINES).contains(&self.limit) {
            return Err(Error::invalid(
                "limit",
                format!("must be 1 to {MAX_LOG_LINES}, not {}", self.limit),
            ));
        }
        if let Some(grep) = &self.grep {
            validation::text("grep", grep)?;
        }
        Ok(())
    }

    /// Whether a line passes the filter (tenement's stream filters by stream
    /// only).
    fn passes(&self, entry: &LogEntry) -> bool {
        self.grep
            .as_deref()
            .is_none_or(|g| entry.message.contains(g))
            && self.stream.is_none_or(|s| s.as_str() == entry.level)
            && self.since.is_none_or(|t| entry.timestamp >= millis(t))
    }
}

fn millis(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// An entry of `server`'s tenement as a line of `instance`.
fn line(entry: LogEntry, server: &str, instance: &str) -> LogLine {
    LogLine {
        at: i64::try_from(entry.timestamp)
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_default(),
        stream: if entry.level == "stderr" {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        },
        message: entry.message,
        server: server.to_owned(),
        instance: instance.to_owned(),
    }
}

/// The lines of one server a follower has given: the newest time, and the
/// messages given at that time (a stream and a read may both hold them).
#[derive(Debug, Default)]
struct Given {
    newest: u64,
    at_newest: HashSet<String>,
}

impl Given {
    /// Whether `entry` is new, noting it when it is.
    fn take(&mut self, entry: &LogEntry) -> bool {
        if entry.timestamp < self.newest
            || (entry.timestamp == self.newest && self.at_newest.contains(&entry.message))
        {
            return false;
        }
        if entry.timestamp > self.newest {
            self.newest = entry.timestamp;
            self.at_newest.clear();
        }
        self.at_newest.insert(entry.message.clone());
        true
    }
}

impl SlumDb {
    /// The instance `slum logs TENANT[:INSTANCE]` means: `tenant` is a
    /// tenant's name or one of its domains; without `instance`, the tenant's
    /// own instance (that of its domains), or its only one.
    pub async fn instance_for_logs(
        &self,
        tenant: &str,
        instance: Option<&str>,
    ) -> Result<Instance> {
        let (name, own) = if tenant.contains('.') {
            let t = self.get_tenant_by_domain(tenant).await?;
            (t.name, Some(t.instance_id))
        } else {
            validation::dns_label("tenant", tenant)?;
            let mut ids: Vec<String> = self
                .store
                .route_rows(RouteScope::Tenant(tenant))
                .await?
                .into_iter()
                .map(|r| r.instance_id)
                .collect();
            ids.sort();
            ids.dedup();
            let own = match ids.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            };
            (tenant.to_owned(), own)
        };
        if let Some(id) = instance.or(own.as_deref()) {
            validation::dns_label("instance", id)?;
            return self.store.get_instance(&name, id).await;
        }
        let instances = self.store.list_instances_of_tenant(&name).await?;
        match instances.as_slice() {
            [] => Err(Error::not_found(Kind::Tenant, name)),
            [one] => Ok(one.clone()),
            many => Err(Error::invalid(
                "instance",
                format!(
                    "tenant '{name}' has {} instances ({}): name one as {name}:INSTANCE",
                    many.len(),
                    many.iter()
                        .map(|i| i.instance_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    /// The lines `instance` wrote that pass `filter`, oldest first, read
    /// from its server now: [`Error::ServerUnreachable`] when it does not
    /// answer.
    pub async fn instance_logs(
        &self,
        instance: &Instance,
        filter: &LogFilter,
    ) -> Result<Vec<LogLine>> {
        filter.check()?;
        let server = self.store.get_server(&instance.server_id).await?;
        let entries = self
            .client(&server)
            .query_logs(
                &instance.process,
                &instance.tenant,
                &LogQuery {
                    level: filter.stream.map(LogStream::as_str),
                    search: filter.grep.as_deref(),
                    // A time is filtered here: all there is, then the newest.
                    limit: if filter.since.is_some() {
                        MAX_LOG_LINES
                    } else {
                        filter.limit
                    },
                },
            )
            .await?;
        let key = instance.key();
        let mut lines: Vec<LogLine> = entries
            .into_iter()
            .filter(|e| filter.passes(e))
            .map(|e| line(e, &server.id, &key))
            .collect();
        let extra = lines.len().saturating_sub(filter.limit);
        lines.drain(..extra);
        Ok(lines)
    }

    /// Follows the output of `"{tenant}:{instance_id}"` into `out`: first the
    /// lines there are (as [`SlumDb::instance_logs`]), then each new one, on
    /// whichever server the instance runs, with a notice when it moves, when
    /// its server stops answering (once) and when it is gone. Returns when
    /// `out` is closed (the reader left) or the instance is gone.
    pub async fn follow_logs(&self, key: &str, filter: &LogFilter, out: mpsc::Sender<LogEvent>) {
        if let Err(e) = filter.check() {
            let _ = out.send(LogEvent::notice(e.to_string())).await;
            return;
        }
        let mut follower = Follower {
            db: self,
            key: key.to_owned(),
            filter: filter.clone(),
            out,
            started: Utc::now(),
            given: HashMap::new(),
            read_before: false,
            server: None,
            said: None,
        };
        follower.run().await;
    }
}

/// A follower's state: which server it reads, what it gave of each.
struct Follower<'a> {
    db: &'a SlumDb,
    key: String,
    filter: LogFilter,
    out: mpsc::Sender<LogEvent>,
    started: DateTime<Utc>,
    given: HashMap<String, Given>,
    /// Whether the lines there were have been read once (the first read
    /// gives the newest `limit`, later ones what is new).
    read_before: bool,
    /// The server followed now.
    server: Option<String>,
    /// What the last problem said was of (a server, the database), not to
    /// say it every second.
    said: Option<String>,
}

/// Why a follower left a server's stream.
enum Left {
    /// The reader left: stop.
    Closed,
    /// The instance is on another server now, or gone: look again.
    Moved,
    /// The stream broke, ended or went quiet: open it again (if the server
    /// does not answer then, that is said).
    Lost,
    /// The server did not answer (the problem, said once for the server).
    Down(String),
}

impl Follower<'_> {
    async fn run(&mut self) {
        let (tenant, id) = match validation::instance_key(&self.key) {
            Ok(parts) => parts,
            Err(e) => {
                let _ = self.out.send(LogEvent::notice(e.to_string())).await;
                return;
            }
        };
        loop {
            if self.out.is_closed() {
                return;
            }
            let instance = match self.db.store.get_instance(&tenant, &id).await {
                Ok(i) => i,
                Err(e) if e.is_not_found() => {
                    let _ = self
                        .out
                        .send(LogEvent::notice(format!(
                            "{} is gone (stopped or removed); nothing more to follow",
                            self.key
                        )))
                        .await;
                    return;
                }
                Err(e) => {
                    let problem = format!("cannot read {} from the fleet database: {e}", self.key);
                    if !self.say("database", problem).await {
                        return;
                    }
                    tokio::time::sleep(LOOK_EVERY).await;
                    continue;
                }
            };
            if let Some(previous) = self.server.as_deref() {
                if previous != instance.server_id {
                    let moved = format!(
                        "{} moved from server {previous} to server {}; following it there",
                        self.key, instance.server_id
                    );
                    if self.out.send(LogEvent::notice(moved)).await.is_err() {
                        return;
                    }
                    self.said = None;
                }
            }
            self.server = Some(instance.server_id.clone());
            match self.follow_on(&instance).await {
                Left::Closed => return,
                Left::Moved => {}
                Left::Lost => tokio::time::sleep(LOOK_EVERY / 4).await,
                Left::Down(problem) => {
                    if !self.say(&instance.server_id, problem).await {
                        return;
                    }
                    tokio::time::sleep(LOOK_EVERY).await;
                }
            }
        }
    }

    /// Says a problem of `what` (a server, the database) unless one of it was
    /// the last said; false when the reader left.
    async fn say(&mut self, what: &str, problem: String) -> bool {
        if self.said.as_deref() == Some(what) {
            return true;
        }
        self.said = Some(what.to_owned());
        self.out.send(LogEvent::notice(problem)).await.is_ok()
    }

    /// Follows the instance on its server until it moves, the stream breaks
    /// or the reader leaves.
    async fn follow_on(&mut self, instance: &Instance) -> Left {
        let server = match self.db.store.get_server(&instance.server_id).await {
            Ok(s) => s,
            Err(e) => return Left::Down(format!("cannot read server {}: {e}", instance.server_id)),
        };
        let client = self.db.client(&server);
        let level = self.filter.stream.map(LogStream::as_str);
        let key = self.key.clone();
        let waiting = |e: &Error| format!("{e}; waiting for it to answer, or for {key} to move");
        // Subscribed first, then the lines before: none falls in between.
        let mut stream = match client
            .stream_logs(&instance.process, &instance.tenant, level)
            .await
        {
            Ok(s) => s,
            Err(e) => return Left::Down(waiting(&e)),
        };
        let first = !self.read_before;
        let query = LogQuery {
            level,
            search: self.filter.grep.as_deref(),
            limit: if first && self.filter.since.is_none() {
                self.filter.limit
            } else {
                MAX_LOG_LINES
            },
        };
        let before = match client
            .query_logs(&instance.process, &instance.tenant, &query)
            .await
        {
            Ok(lines) => lines,
            Err(e) => return Left::Down(waiting(&e)),
        };
        if self.said.take().is_some() {
            let back = format!("server {} answers again; following {}", server.id, self.key);
            if self.out.send(LogEvent::notice(back)).await.is_err() {
                return Left::Closed;
            }
        }
        // The first read gives the newest `limit` lines that pass; later
        // ones only what is new: on a server followed before, what came
        // after its last line given; on another, what came since the follow
        // started (the new copy's own lines).
        let mut before: Vec<LogEntry> = before
            .into_iter()
            .filter(|e| first || e.timestamp >= millis(self.started))
            .filter(|e| self.filter.passes(e))
            .collect();
        if first {
            let extra = before.len().saturating_sub(self.filter.limit);
            before.drain(..extra);
        }
        self.read_before = true;
        for entry in before {
            if !self.give(&server.id, entry).await {
                return Left::Closed;
            }
        }
        let mut look = tokio::time::interval(LOOK_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle = Box::pin(tokio::time::sleep(STREAM_IDLE));
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    Ok(Some(entry)) => {
                        idle.as_mut().reset(tokio::time::Instant::now() + STREAM_IDLE);
                        if !self.give(&server.id, entry).await {
                            return Left::Closed;
                        }
                    }
                    Ok(None) | Err(_) => return Left::Lost,
                },
                _ = look.tick() => {
                    if self.out.is_closed() {
                        return Left::Closed;
                    }
                    match self.db.store.get_instance(&instance.tenant, &instance.instance_id).await {
                        Ok(now) if now.server_id == instance.server_id => {}
                        Ok(_) => return Left::Moved,
                        Err(e) if e.is_not_found() => return Left::Moved,
                        // The database is said by the next look, if it lasts.
                        Err(_) => {}
                    }
                }
                _ = &mut idle => return Left::Lost,
            }
        }
    }

    /// Gives a line of `server` that passes the filter and was not given yet;
    /// false when the reader left.
    async fn give(&mut self, server: &str, entry: LogEntry) -> bool {
        if !self.filter.passes(&entry) {
            return true;
        }
        if !self
            .given
            .entry(server.to_owned())
            .or_default()
            .take(&entry)
        {
            return true;
        }
        let line = line(entry, server, &self.key);
        self.out.send(LogEvent::Line(line)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(timestamp: u64, level: &str, message: &str) -> LogEntry {
        LogEntry {
            timestamp,
            level: level.into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_line_read_twice_is_given_once() {
        let mut given = Given::default();
        assert!(given.take(&entry(10, "stdout", "a")));
        assert!(
            given.take(&entry(10, "stdout", "b")),
            "same time, other line"
        );
        assert!(!given.take(&entry(10, "stdout", "a")), "again");
        assert!(!given.take(&entry(9, "stdout", "c")), "older");
        assert!(given.take(&entry(11, "stdout", "a")), "later");
    }

    #[test]
    fn the_filter_takes_a_text_a_stream_and_a_time() {
        let filter = LogFilter {
            since: DateTime::from_timestamp_millis(100),
            grep: Some("GET".into()),
            stream: Some(LogStream::Stderr),
            limit: 10,
        };
        assert!(filter.passes(&entry(100, "stderr", "GET /")));
        assert!(!filter.passes(&entry(99, "stderr", "GET /")), "too old");
        assert!(!filter.passes(&entry(100, "stdout", "GET /")), "stdout");
        assert!(!filter.passes(&entry(100, "stderr", "get /")), "case");
        assert!(LogFilter::default().passes(&entry(0, "stdout", "")));
        let none = LogFilter {
            limit: 0,
            ..Default::default()
        };
        assert!(none.check().is_err());
    }

    #[test]
    fn a_line_keeps_its_time_stream_and_where_it_ran() {
        let l = line(
            entry(1_700_000_000_123, "stderr", "boom"),
            "s1",
            "acme:prod",
        );
        assert_eq!(l.at.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(l.stream, LogStream::Stderr);
        assert_eq!(
            (l.server.as_str(), l.instance.as_str()),
            ("s1", "acme:prod")
        );
        let json = serde_json::to_value(LogEvent::Line(l.clone())).unwrap();
        assert_eq!(json["stream"], "stderr");
        assert_eq!(
            serde_json::from_value::<LogEvent>(json).unwrap(),
            LogEvent::Line(l)
        );
        let notice = serde_json::to_value(LogEvent::notice("moved")).unwrap();
        assert_eq!(notice["notice"], "moved");
        assert!(matches!(
            serde_json::from_value::<LogEvent>(notice).unwrap(),
            LogEvent::Notice { .. }
        ));
    }
}
