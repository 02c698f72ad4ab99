//! The client side's response-head parser, on any bytes (the first says
//! whether the request was a HEAD): it must not panic, its framing must follow
//! RFC 9112 §6.3, and a head it takes must be one it would have taken in
//! pieces: every shorter prefix of it is "not all in yet".
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slum_http1::fuzzing::{parse_response, Framing, Response, StatusCode};

fuzz_target!(|input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    let expects_body = flags & 1 == 0;
    let mut buf = BytesMut::from(data);
    // Interim heads are taken off one by one; each takes bytes, so this ends.
    let (head, framing, keep_alive) = loop {
        let before = buf.len();
        match parse_response(&mut buf, expects_body) {
            Ok(Response::Interim) => assert!(buf.len() < before, "an interim head took nothing"),
            Ok(Response::Partial) => {
                assert_eq!(buf.len(), before, "a partial head took bytes");
                return;
            }
            Ok(Response::Final {
                head,
                framing,
                keep_alive,
            }) => break (head, framing, keep_alive),
            Err(reason) => {
                assert!(!reason.is_empty());
                return;
            }
        }
    };
    let status = head.status;
    assert!(!status.is_informational());
    if !expects_body || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        assert_eq!(framing, Framing::None);
    }
    match framing {
        Framing::Close => assert!(!keep_alive, "a body to the close leaves nothing to reuse"),
        // A length it frames by is the one the head still says.
        Framing::Length(n) => assert_eq!(head.headers.content_length(), Some(n)),
        // A transfer coding overrides a length, which is not passed on.
        Framing::Chunked => assert!(!head.headers.contains("content-length")),
        Framing::None => {}
    }
    let taken = data.len() - buf.len();
    for cut in [taken - 1, taken / 2] {
        let mut prefix = BytesMut::from(&data[..cut]);
        loop {
            match parse_response(&mut prefix, expects_body) {
                Ok(Response::Interim) => continue,
                Ok(Response::Partial) => break,
                other => panic!("a prefix of {cut} of heads of {taken} bytes gave {other:?}"),
            }
        }
    }
});
