//! The message heads that pass through: a request as the server side reads it
//! and the client side sends it on, and a response head as the client side
//! reads it and the server side writes it on. Both keep their header lines as
//! they came ([`RawHeaders`]).

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri, Version};

use crate::codec::RawHeaders;

/// A request as it goes to a server: its request line, the client's header
/// lines passed on as they came, and the lines the router sets in place of
/// some of them (Host, the forwarding headers).
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    /// The client's header lines.
    pub headers: RawHeaders,
    /// Lines written after the client's.
    pub set: Vec<(HeaderName, HeaderValue)>,
}

impl RequestHead {
    /// Sets `name` among the router's lines, in place of any value it had
    /// there.
    #[inline]
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        match self.set.iter_mut().find(|(n, _)| *n == name) {
            Some(line) => line.1 = value,
            None => self.set.push((name, value)),
        }
    }

    /// All the lines, as a header map (for hyper's client, which carries
    /// upgrades). The error names a line that is not a valid header.
    pub fn header_map(&self) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::with_capacity(self.headers.len() + self.set.len());
        for (name, value) in self.headers.iter() {
            let name = HeaderName::from_bytes(name).map_err(|_| {
                format!("malformed header name '{}'", String::from_utf8_lossy(name))
            })?;
            let value = self
                .headers
                .shared(value)
                .ok_or_else(|| format!("malformed value of header '{name}'"))?;
            map.append(name, value);
        }
        for (name, value) in &self.set {
            map.append(name.clone(), value.clone());
        }
        Ok(map)
    }

    /// An HTTP/1.1 request with these header lines.
    ///
    /// # Panics
    /// If `uri` is not a URI.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_test(method: Method, uri: &str, lines: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method,
            uri: uri.parse().expect("a test URI"),
            version: Version::HTTP_11,
            headers: RawHeaders::from_lines(lines),
            set: Vec::new(),
        }
    }
}

/// A response head as the server sent it. Its headers stay the head's bytes
/// (see [`RawHeaders`]).
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: RawHeaders,
}

impl ResponseHead {
    /// The final head of `raw`, read as the answer to a GET.
    ///
    /// # Panics
    /// If `raw` does not hold a whole, valid final head.
    #[cfg(any(test, feature = "testing"))]
    pub fn parse(raw: &[u8]) -> ResponseHead {
        match crate::client::parse_head(&mut bytes::BytesMut::from(raw), true) {
            Ok(crate::client::Parsed::Final(head)) => head.response,
            Ok(_) => panic!("not a whole final head"),
            Err(e) => panic!("{e}"),
        }
    }
}
