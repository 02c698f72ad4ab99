//! The chunked decoder alone: the same body in any pieces, and framing that
//! could be read two ways refused.

use super::*;

/// How decoding all of `input`, given in pieces of `piece` bytes, ended: the
/// data, and whether the body's end was reached (with how many bytes were left
/// after it), or the error. The decoder is asked as both sides ask it: only
/// with bytes in the buffer.
fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, Option<usize>), Malformed> {
    let mut buf = BytesMut::new();
    let mut at = Chunk::Size;
    let mut data = Vec::new();
    let mut pieces = input.chunks(piece.max(1));
    loop {
        if !buf.is_empty() {
            match decode_chunked(&mut buf, at, "request")? {
                Decoded::Data(d, next) => {
                    data.extend_from_slice(&d);
                    at = next;
                    continue;
                }
                Decoded::Moved(next) => {
                    at = next;
                    continue;
                }
                Decoded::End => {
                    let left = buf.len() + pieces.map(<[u8]>::len).sum::<usize>();
                    return Ok((data, Some(left)));
                }
                Decoded::NeedMore => {}
            }
        }
        match pieces.next() {
            Some(p) => buf.extend_from_slice(p),
            None => return Ok((data, None)),
        }
    }
}

#[test]
fn a_chunked_body_decodes_the_same_in_any_pieces() {
    let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\nNEXT";
    for piece in 1..body.len() {
        assert_eq!(
            decode(body, piece),
            Ok((b"hello world".to_vec(), Some(4))),
            "in pieces of {piece}"
        );
    }
}

#[test]
fn chunk_framing_that_could_be_read_two_ways_is_refused() {
    for (body, error) in [
        (
            &b"3;\nabc\r\n0\r\n\r\n"[..],
            "malformed chunk size in the request body",
        ),
        (
            b"\r\n3\r\nabc\r\n0\r\n\r\n",
            "malformed chunk size in the request body",
        ),
        (
            b"3;x=\x01\r\nabc\r\n0\r\n\r\n",
            "malformed chunk size in the request body",
        ),
        (b"2\r\nabc\r\n0\r\n\r\n", "chunk data longer than its size"),
        (
            b"3\r\nabc\r\n0\r\nX-Ok: 1\n\n",
            "malformed request trailers",
        ),
        (
            b"3\r\nabc\r\n0\r\nno colon\r\n\r\n",
            "malformed request trailers",
        ),
    ] {
        assert_eq!(
            decode(body, body.len()),
            Err(Malformed(error.into())),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}
