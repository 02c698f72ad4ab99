//! slum's HTTP/1.1 core: what the router speaks to clients and to servers,
//! written by hand for a proxy's few needs (`docs/http1-core.md` says why,
//! with the measurements). It knows nothing of slum.
//!
//! # A map of the crate
//!
//! - `server/`: the clients' side. [`ClientConn`] reads request heads and
//!   their bodies ([`RequestBody`]) within [`Limits`], refuses a request whose
//!   framing is in doubt, and writes answers, over plain TCP or any other
//!   [`ClientStream`] (TLS, through [`Locked`]); [`BodyProgress`] tells a proxy
//!   whether a slow upload is the client's doing.
//! - `client/`: the servers' side. [`Conn`] sends a [`RequestHead`] and its
//!   body and reads the [`ResponseHead`]; [`Reader`] reads the response body
//!   and gives the connection back for reuse. It runs over any [`Transport`]
//!   (plain TCP, or TLS over it).
//! - `head.rs` and `codec.rs`: what both sides share. Heads keep their header
//!   lines as they came ([`RawHeaders`]), and the small readers of lengths
//!   and tokens.
//! - `chunked.rs`: the chunked coding, decoded a step at a time, the same for
//!   requests and responses.
//! - [`timer`]: a coarse timer, cheap to set and cancel, on tokio's clock
//!   (which tests can pause).
//!
//! Everything is read with httparse; nothing here is `unsafe`. The
//! `fuzzing` module (hidden) opens the parsers to the fuzz targets in
//! `fuzz/` and to the differential test in `tests/`.

#![forbid(unsafe_code)]

mod chunked;
mod client;
mod codec;
mod head;
mod server;
pub mod timer;

pub use client::{Conn, ExchangeError, Reader, Transport};
pub use codec::{tokens, RawHeaders, MAX_HEADERS};
pub use head::{RequestHead, ResponseHead};
pub use server::{
    BodyProgress, ClientConn, ClientStream, Ended, HeaderLines, Limits, Locked, MinRate,
    RequestBody,
};
pub use timer::{CoarseTimer, Elapsed};

/// Locks a mutex, also one a panicking thread left poisoned: every value
/// guarded in this crate stays consistent between statements.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The parsers, opened to the fuzz targets and the differential test; not
/// an API.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;
    pub use hyper::{StatusCode, Version};

    pub use crate::chunked::{decode_chunked, Chunk, Decoded, Malformed};
    use crate::head::{RequestHead, ResponseHead};

    /// How a message's body is framed, as a parser decided.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Framing {
        None,
        Length(u64),
        Chunked,
        /// Until the connection's end (responses only).
        Close,
    }

    /// A request head as the server side parsed it.
    #[derive(Debug)]
    pub struct Request {
        pub head: RequestHead,
        pub framing: Framing,
        pub keep_alive: bool,
        pub expects_continue: bool,
    }

    /// The most `Connection` options [`parse_request`] takes (slum's
    /// default).
    pub const MAX_CONNECTION_OPTIONS: usize = 32;

    /// The server side's parse of the request head at the start of `buf`,
    /// taken off when whole: `Ok(None)` when it is not all in, `Err` with the
    /// status and reason of a refusal.
    pub fn parse_request(
        buf: &mut BytesMut,
        max_bytes: usize,
    ) -> Result<Option<Request>, (StatusCode, String)> {
        use crate::server::In;
        let parsed = crate::server::parse_request(buf, max_bytes, MAX_CONNECTION_OPTIONS)?;
        Ok(
            parsed.map(|(head, framing, asked, expects_continue)| Request {
                head,
                framing: match framing {
                    None => Framing::None,
                    Some(In::Length(n)) => Framing::Length(n),
                    Some(In::Chunked(_)) => Framing::Chunked,
                },
                keep_alive: asked.keep_alive,
                expects_continue,
            }),
        )
    }

    /// A response head as the client side parsed it.
    #[derive(Debug)]
    pub enum Response {
        /// Not all in yet.
        Partial,
        /// An interim (1xx) head, taken off.
        Interim,
        Final {
            head: ResponseHead,
            framing: Framing,
            keep_alive: bool,
        },
    }

    /// The client side's parse of the response head at the start of `buf`
    /// (the answer to a HEAD request unless `expects_body`), taken off when
    /// whole; `Err` says why it is refused.
    pub fn parse_response(buf: &mut BytesMut, expects_body: bool) -> Result<Response, String> {
        use crate::client::Parsed;
        Ok(
            match crate::client::parse_head(buf, expects_body).map_err(|e| e.to_string())? {
                Parsed::Partial => Response::Partial,
                Parsed::Interim => Response::Interim,
                Parsed::Final(head) => Response::Final {
                    framing: head.framing(),
                    keep_alive: head.keep_alive(),
                    head: head.response,
                },
            },
        )
    }
}
