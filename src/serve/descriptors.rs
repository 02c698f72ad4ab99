//! `slum serve`'s file descriptors: the soft limit it inherits raised to the
//! hard one at start (1,024 is the usual soft limit, far below what a router
//! needs), and the router's caps derived from the limit, so that client
//! connections can never take the descriptors that server connections, the
//! fleet database and the management API need.

/// Descriptors kept for everything but clients' connections and the server
/// connections they use: the fleet database's connections and files, the
/// management API's connections, health checks and calls to tenement's API,
/// the listeners, the runtimes' own and the log.
pub(crate) const RESERVED: u64 = 128;

/// Raises the soft limit on open descriptors to the hard one; the soft limit
/// in force after (the one before when it cannot be raised, with the error).
pub(crate) fn raise_limit() -> (u64, Option<std::io::Error>) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limits to `limit`, which it may.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return (1024, Some(std::io::Error::last_os_error()));
    }
    // rlim_t is u64 on the systems slum runs on.
    let before: u64 = limit.rlim_cur;
    if limit.rlim_cur >= limit.rlim_max {
        return (before, None);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads `raised`, a valid rlimit.
    match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } {
        0 => (raised.rlim_cur, None),
        _ => (before, Some(std::io::Error::last_os_error())),
    }
}

/// The router's caps when the settings do not give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DefaultCaps {
    pub(crate) connections: usize,
    pub(crate) connections_per_client: usize,
    pub(crate) in_flight_per_server: usize,
    pub(crate) in_flight_per_client: usize,
}

impl DefaultCaps {
    /// The caps for a process that may open `limit` descriptors:
    ///
    /// - connections: half of what is left after [`RESERVED`], since every
    ///   client connection may hold a server connection too (at least 16);
    /// - per client address: an eighth of those, at least 32 (or all, when
    ///   fewer), so that one address cannot shut the others out;
    /// - requests in flight to one server: half the connections, so that
    ///   one server (hung, or flooded) cannot hold every one;
    /// - requests in flight from one client address: a quarter of one
    ///   server's share.
    pub(crate) fn for_limit(limit: u64) -> DefaultCaps {
        let connections = usize::try_from(limit.saturating_sub(RESERVED) / 2)
            .unwrap_or(usize::MAX)
            .max(16);
        let in_flight_per_server = (connections / 2).max(1);
        DefaultCaps {
            connections,
            connections_per_client: (connections / 8).max(connections.min(32)),
            in_flight_per_server,
            in_flight_per_client: (in_flight_per_server / 4).max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_leave_descriptors_for_servers_the_database_and_the_api() {
        let caps = |limit| {
            let c = DefaultCaps::for_limit(limit);
            (
                c.connections,
                c.connections_per_client,
                c.in_flight_per_server,
                c.in_flight_per_client,
            )
        };
        assert_eq!(caps(256), (64, 32, 32, 8));
        assert_eq!(caps(1024), (448, 56, 224, 56));
        assert_eq!(caps(1 << 20), (524_224, 65_528, 262_112, 65_528));
        assert_eq!(caps(100), (16, 16, 8, 2), "a limit below the reserve");
        assert_eq!(caps(u64::MAX).0, (u64::MAX - RESERVED) as usize / 2);
        for limit in [256, 1024, 65_536] {
            let c = DefaultCaps::for_limit(limit);
            // A client connection and its server connection each.
            assert!(2 * c.connections as u64 + RESERVED <= limit, "{limit}");
        }
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (soft, error) = raise_limit();
        assert!(error.is_none(), "{error:?}");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_limit.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!((soft, limit.rlim_cur), (limit.rlim_max, limit.rlim_max));
    }
}
