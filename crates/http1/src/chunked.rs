//! The chunked transfer coding (RFC 9112 §7.1), decoded one step at a time
//! off the front of a read buffer: request bodies on the server side,
//! response bodies on the client side.
//!
//! It is stricter than the RFC's grammar lets a recipient be, on purpose.
//! Size lines and trailer lines must end in CRLF and hold no control bytes: a
//! bare LF in an extension, taken for the line's end by one parser and not by
//! another, would split the body two ways (request smuggling). A size must
//! have a digit (httparse alone takes an empty line for 0), and the size line
//! and the trailers have bounds.

use bytes::{Buf, Bytes, BytesMut};
use hyper::header::HeaderName;

use crate::codec::is_control;

/// The longest chunk-size line taken (extensions included).
const MAX_SIZE_LINE: usize = 1024;
/// The most trailer bytes a chunked body may end with.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// A chunked body's end: the last chunk, without trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The decoder's place in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk, at a trailer line or the final CRLF; this many
    /// bytes of trailers passed.
    Trailers(usize),
}

/// What one step of decoding did.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Some of the body's data, and the place after it.
    Data(Bytes, Chunk),
    /// Framing consumed; the decoder moved on.
    Moved(Chunk),
    /// The body's end (its final CRLF) was taken off.
    End,
    /// Nothing can be taken before more bytes come.
    NeedMore,
}

/// A chunked body that breaks its own framing: what is wrong, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(String);

/// One step of decoding a chunked body at the start of `buf`, at `at`: what it
/// took off `buf`. `whose`: the message's side, for the errors ("request" or
/// "response").
pub fn decode_chunked(buf: &mut BytesMut, at: Chunk, whose: &str) -> Result<Decoded, Malformed> {
    match at {
        Chunk::Size => size_line(buf, whose),
        Chunk::Data(left) => {
            let n = left.min(buf.len() as u64);
            let data = buf.split_to(n as usize).freeze();
            let next = match left - n {
                0 => Chunk::DataEnd,
                more => Chunk::Data(more),
            };
            Ok(Decoded::Data(data, next))
        }
        Chunk::DataEnd => match buf.get(..2) {
            Some(b"\r\n") => {
                buf.advance(2);
                Ok(Decoded::Moved(Chunk::Size))
            }
            Some(_) => Err(Malformed("chunk data longer than its size".into())),
            None if buf.first().is_none_or(|b| *b == b'\r') => Ok(Decoded::NeedMore),
            None => Err(Malformed("chunk data longer than its size".into())),
        },
        Chunk::Trailers(seen) => trailer_line(buf, seen, whose),
    }
}

/// A chunk-size line: the size in hex, any extensions, CRLF.
fn size_line(buf: &mut BytesMut, whose: &str) -> Result<Decoded, Malformed> {
    let malformed = || Malformed(format!("malformed chunk size in the {whose} body"));
    // httparse takes an empty size line for 0: a size must have a digit.
    if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    let Some(end) = buf.iter().take(MAX_SIZE_LINE).position(|b| *b == b'\n') else {
        return match buf.len() < MAX_SIZE_LINE {
            true => Ok(Decoded::NeedMore),
            false => Err(malformed()),
        };
    };
    let clean = buf[..end]
        .strip_suffix(b"\r")
        .is_some_and(|line| !line.iter().any(|b| is_control(*b)));
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((len, 0))) if clean => {
            buf.advance(len);
            Ok(Decoded::Moved(Chunk::Trailers(0)))
        }
        Ok(httparse::Status::Complete((len, size))) if clean => {
            buf.advance(len);
            Ok(Decoded::Moved(Chunk::Data(size)))
        }
        _ => Err(malformed()),
    }
}

/// A trailer line, checked and passed over, or the empty line that ends the
/// body. Lines end in CRLF, as the size lines do.
fn trailer_line(buf: &mut BytesMut, seen: usize, whose: &str) -> Result<Decoded, Malformed> {
    let malformed = || Malformed(format!("malformed {whose} trailers"));
    let too_large = || Malformed(format!("{whose} trailers too large"));
    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
        return match seen + buf.len() < MAX_TRAILER_BYTES {
            true => Ok(Decoded::NeedMore),
            false => Err(too_large()),
        };
    };
    let line = buf[..end].strip_suffix(b"\r").ok_or_else(malformed)?;
    if line.is_empty() {
        buf.advance(end + 1);
        return Ok(Decoded::End);
    }
    let field = line.iter().position(|b| *b == b':').is_some_and(|colon| {
        HeaderName::from_bytes(&line[..colon]).is_ok()
            && !line[colon + 1..].iter().any(|b| is_control(*b))
    });
    if !field {
        return Err(malformed());
    }
    let seen = seen + end + 1;
    if seen >= MAX_TRAILER_BYTES {
        return Err(too_large());
    }
    buf.advance(end + 1);
    Ok(Decoded::Moved(Chunk::Trailers(seen)))
}

#[cfg(test)]
mod tests;
