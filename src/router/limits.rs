//! What clients may hold of the router: connections, in all and per client
//! address, and requests in flight, per client address and per server. What
//! is over a cap is refused at once, so that one client (or one hung server)
//! cannot take the descriptors, and the server connections, that everyone
//! else needs.
//!
//! Counting costs little where it sits. A connection is admitted by the
//! acceptor against a map of client addresses split into shards, each behind
//! its own lock, held for a few instructions and never across an await; its
//! [`ConnectionPermit`] gives the count back when the connection ends, on
//! whichever router thread. A request takes no lock: it counts on its
//! client's entry, which its connection's permit holds, and on its server's
//! counter, which the route table holds ([`ServerLoad`]); its [`InFlight`]
//! gives both back when dropped, whichever way the exchange ends (its answer
//! written, its client gone, its WebSocket closed).

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::header::{self, HeaderValue};
use hyper::StatusCode;
use tokio::time::Instant;

use super::answers::{made, Answer};
use super::route_table::ServerLoad;
use crate::lock;

/// A client address as the caps count it: an IPv4 address, or an IPv6 /64
/// (one host's or one site's: whoever has one IPv6 address has its /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ClientKey {
    V4(u32),
    V6(u64),
}

impl ClientKey {
    pub(super) fn of(ip: IpAddr) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4.to_bits()),
            IpAddr::V6(v6) => ClientKey::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

/// Shards of the client map: enough that the router threads giving counts
/// back seldom meet the acceptor on one lock.
const SHARDS: usize = 16;

/// One shard of the client map.
type Shard = Mutex<foldhash::HashMap<ClientKey, Arc<Client>>>;

/// The clients with connections open, and the connection caps.
pub(super) struct Clients {
    max_total: usize,
    max_per_client: usize,
    /// Connections open in all.
    open: AtomicUsize,
    hasher: foldhash::quality::RandomState,
    shards: Box<[Shard]>,
}

/// One client address's counts; in the map while it has connections open.
#[derive(Default)]
pub(super) struct Client {
    /// Its open connections: changed under its shard's lock only.
    connections: AtomicUsize,
    /// Its requests in flight.
    in_flight: AtomicUsize,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    Total,
    PerClient,
}

impl Refused {
    /// Its label in the refusals metric.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerClient => "per_client",
        }
    }

    /// The answer written to a refused connection before it is closed:
    /// written once without waiting (a socket that cannot take it at once
    /// is closed without it), and never read from.
    pub(super) fn answer(self) -> &'static [u8] {
        match self {
            Refused::Total => TOO_MANY_CONNECTIONS,
            Refused::PerClient => TOO_MANY_FROM_CLIENT,
        }
    }
}

const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections\n";
const TOO_MANY_FROM_CLIENT: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 39\r\nretry-after: 1\r\nconnection: close\r\n\r\ntoo many connections from this address\n";

impl Clients {
    /// At most `max_total` connections open, `max_per_client` from one
    /// client address (each at least one).
    pub(super) fn new(max_total: usize, max_per_client: usize) -> Arc<Clients> {
        Arc::new(Clients {
            max_total: max_total.max(1),
            max_per_client: max_per_client.max(1),
            open: AtomicUsize::new(0),
            hasher: foldhash::quality::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    fn shard(&self, key: &ClientKey) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) % SHARDS as u64) as usize]
    }

    /// Counts a connection from `ip`, or says which cap it is over. Asked by
    /// the acceptor alone: the total cannot go past its cap between the
    /// check and the count.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refused> {
        if self.open.load(Relaxed) >= self.max_total {
            return Err(Refused::Total);
        }
        let key = ClientKey::of(ip);
        let client = {
            let mut shard = lock(self.shard(&key));
            let client = shard.entry(key).or_default();
            if client.connections.load(Relaxed) >= self.max_per_client {
                return Err(Refused::PerClient);
            }
            client.connections.fetch_add(1, Relaxed);
            Arc::clone(client)
        };
        self.open.fetch_add(1, Relaxed);
        Ok(ConnectionPermit {
            clients: Arc::clone(self),
            key,
            client,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Client addresses with connections open now.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

/// An admitted connection's place in the counts, given back when dropped.
pub(super) struct ConnectionPermit {
    clients: Arc<Clients>,
    key: ClientKey,
    client: Arc<Client>,
}

impl ConnectionPermit {
    /// The connection's client, whose requests in flight are counted.
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// The connection's client, for requests that outlive a borrow of the
    /// permit (an HTTP/2 connection's streams, each a task of its own).
    pub(super) fn shared_client(&self) -> Arc<Client> {
        Arc::clone(&self.client)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut shard = lock(self.clients.shard(&self.key));
        // The last connection of its client: no request of the client is in
        // flight either, and the entry goes.
        if self.client.connections.fetch_sub(1, Relaxed) == 1 {
            shard.remove(&self.key);
        }
        drop(shard);
        self.clients.open.fetch_sub(1, Relaxed);
    }
}

/// Caps on requests in flight: sent on to a server and its answer not yet
/// passed whole (a WebSocket, for its life).
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlightCaps {
    pub(super) per_client: usize,
    pub(super) per_server: usize,
}

/// Which cap a request is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Busy {
    /// Its client's: 429.
    Client,
    /// Its server's: 503.
    Server,
}

/// How long a client told to wait is told to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Busy {
    /// Its label in the refusals metric.
    pub(super) fn reason(self) -> &'static str {
        match self {
            Busy::Client => "client_in_flight",
            Busy::Server => "server_in_flight",
        }
    }

    /// The router's answer: it says what, and names no server.
    pub(super) fn answer(self) -> Answer {
        let (status, reason) = match self {
            Busy::Client => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests in flight from this address; retry later",
            ),
            Busy::Server => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is busy; retry later",
            ),
        };
        let mut resp = made(status, reason.into());
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER.as_secs()),
        );
        Answer::Made(resp)
    }
}

/// A request's place among its client's and its server's requests in
/// flight, given back when dropped. It holds its client by reference (an
/// HTTP/1.1 connection's requests, answered in its task) or shared (an
/// HTTP/2 stream's, whose answer body carries it).
pub(super) struct InFlight<C: Deref<Target = Client>> {
    client: C,
    /// Counted on its client.
    counted: bool,
    server: Option<ServerLoad>,
}

impl<C: Deref<Target = Client>> InFlight<C> {
    /// A request of `client`, not counted yet.
    pub(super) fn new(client: C) -> InFlight<C> {
        InFlight {
            client,
            counted: false,
            server: None,
        }
    }

    /// Counts the request on its client and on `server`, unless either has
    /// reached its cap. Asked once per request.
    pub(super) fn take(&mut self, server: &ServerLoad, caps: InFlightCaps) -> Result<(), Busy> {
        debug_assert!(!self.counted, "a request is counted once");
        if self.client.in_flight.fetch_add(1, Relaxed) >= caps.per_client {
            self.client.in_flight.fetch_sub(1, Relaxed);
            return Err(Busy::Client);
        }
        self.counted = true;
        if server.0.fetch_add(1, Relaxed) >= caps.per_server {
            server.0.fetch_sub(1, Relaxed);
            return Err(Busy::Server);
        }
        self.server = Some(server.clone());
        Ok(())
    }
}

impl<C: Deref<Target = Client>> Drop for InFlight<C> {
    fn drop(&mut self) {
        if self.counted {
            self.client.in_flight.fetch_sub(1, Relaxed);
        }
        if let Some(server) = &self.server {
            server.0.fetch_sub(1, Relaxed);
        }
    }
}

/// A warning that can come in bursts (the acceptor's errors, every few
/// milliseconds while descriptors run out): let out at most once a period,
/// with the count of those held back since the last.
pub(super) struct Throttle {
    period: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub(super) fn new(period: Duration) -> Throttle {
        Throttle {
            period,
            last: None,
            held_back: 0,
        }
    }

    /// At `now`: `Some(held back since the last)` when this one goes out,
    /// `None` when it is held back.
    pub(super) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connections_are_capped_in_all_and_per_client_and_given_back_when_dropped() {
        let clients = Clients::new(5, 2);
        let a1 = clients.admit(ip("192.0.2.1")).unwrap();
        let a2 = clients.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            clients.admit(ip("192.0.2.1")).err(),
            Some(Refused::PerClient),
            "the IPv4-mapped address is the same client"
        );
        let _b = clients.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b2 = clients.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            clients.admit(ip("2001:db8:1:2::77")).err(),
            Some(Refused::PerClient),
            "one IPv6 /64 is one client"
        );
        let _c = clients.admit(ip("2001:db8:1:3::1")).unwrap();
        assert_eq!(clients.open(), 5);
        assert_eq!(
            clients.admit(ip("198.51.100.7")).err(),
            Some(Refused::Total)
        );
        drop(a1);
        assert_eq!(clients.open(), 4);
        let a3 = clients.admit(ip("192.0.2.1")).unwrap();
        drop((a2, a3));
        assert_eq!(
            clients.clients(),
            2,
            "a client without connections is forgotten"
        );
    }

    #[test]
    fn requests_in_flight_are_capped_per_client_and_per_server_and_given_back() {
        let clients = Clients::new(10, 10);
        let (a, b) = (
            clients.admit(ip("192.0.2.1")).unwrap(),
            clients.admit(ip("192.0.2.2")).unwrap(),
        );
        let server = ServerLoad::default();
        let caps = InFlightCaps {
            per_client: 2,
            per_server: 3,
        };
        let mut a1 = InFlight::new(a.client());
        a1.take(&server, caps).unwrap();
        let mut a2 = InFlight::new(a.client());
        a2.take(&server, caps).unwrap();
        let mut a3 = InFlight::new(a.client());
        assert_eq!(a3.take(&server, caps), Err(Busy::Client));
        let mut b1 = InFlight::new(b.client());
        b1.take(&server, caps).unwrap();
        let mut b2 = InFlight::new(b.client());
        assert_eq!(b2.take(&server, caps), Err(Busy::Server));
        assert_eq!(server.in_flight(), 3);
        drop((a3, b2));
        assert_eq!(
            (
                a.client().in_flight.load(Relaxed),
                b.client().in_flight.load(Relaxed)
            ),
            (2, 1),
            "a refused request holds nothing"
        );
        drop((a1, a2, b1));
        assert_eq!(server.in_flight(), 0);
        assert_eq!(a.client().in_flight.load(Relaxed), 0);
        let mut again = InFlight::new(b.client());
        again.take(&server, caps).unwrap();
    }

    #[test]
    fn refusals_are_whole_answers() {
        for refused in [Refused::Total, Refused::PerClient] {
            let text = std::str::from_utf8(refused.answer()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(length, body.len(), "{text}");
        }
    }

    #[test]
    fn a_burst_of_warnings_goes_out_once_a_second_with_the_count_held_back() {
        let mut throttle = Throttle::new(Duration::from_secs(1));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(throttle.allow(at(0)), Some(0));
        for n in 1..20 {
            assert_eq!(throttle.allow(at(n * 50)), None, "at {} ms", n * 50);
        }
        assert_eq!(throttle.allow(at(1000)), Some(19));
        assert_eq!(throttle.allow(at(1500)), None);
        assert_eq!(throttle.allow(at(7000)), Some(1));
        assert_eq!(throttle.allow(at(9000)), Some(0));
    }
}
