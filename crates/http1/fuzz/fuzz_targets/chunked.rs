//! The chunked decoder, on any bytes (the first gives the size of the pieces
//! they come in): it must not panic, and a body must decode the same however
//! it is cut into reads: the same data, and the same end (the body's end at
//! the same byte, more wanted, or refused).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slum_http1::fuzzing::{decode_chunked, Chunk, Decoded};

/// How decoding ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The body's end, with this many bytes after it.
    Whole(usize),
    NeedMore,
    Refused,
}

/// Decodes `input` given in pieces of `piece` bytes, as both sides ask the
/// decoder: only with bytes in the buffer.
fn decode(input: &[u8], piece: usize) -> (Vec<u8>, End) {
    let mut buf = BytesMut::new();
    let mut at = Chunk::Size;
    let mut data = Vec::new();
    let mut pieces = input.chunks(piece.max(1));
    loop {
        if !buf.is_empty() {
            match decode_chunked(&mut buf, at, "request") {
                Err(_) => return (data, End::Refused),
                Ok(Decoded::Data(d, next)) => {
                    assert!(!d.is_empty() || matches!(at, Chunk::Data(0)));
                    data.extend_from_slice(&d);
                    at = next;
                    continue;
                }
                Ok(Decoded::Moved(next)) => {
                    at = next;
                    continue;
                }
                Ok(Decoded::End) => {
                    let left = buf.len() + pieces.map(<[u8]>::len).sum::<usize>();
                    return (data, End::Whole(left));
                }
                Ok(Decoded::NeedMore) => {}
            }
        }
        match pieces.next() {
            Some(p) => buf.extend_from_slice(p),
            None => return (data, End::NeedMore),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&piece, data)) = input.split_first() else {
        return;
    };
    let whole = decode(data, data.len());
    let cut = decode(data, usize::from(piece % 16) + 1);
    assert_eq!(
        whole,
        cut,
        "decoded differently in pieces of {}",
        piece % 16 + 1
    );
});
