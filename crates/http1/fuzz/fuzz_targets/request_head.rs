//! The server side's request-head parser, on any bytes: it must not panic,
//! and a head it takes must be one it would have taken in pieces (a client's
//! head often comes in several reads): every shorter prefix of it is "not all
//! in yet", never a different answer.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use slum_http1::fuzzing::{parse_request, Framing, Version};

const MAX_HEAD: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let request = match parse_request(&mut buf, MAX_HEAD) {
        Ok(Some(request)) => request,
        Ok(None) => {
            assert_eq!(buf.len(), data.len(), "a partial head took bytes");
            return;
        }
        Err((status, reason)) => {
            assert!(status.is_client_error() || status.is_server_error());
            assert!(!reason.is_empty());
            return;
        }
    };
    let taken = data.len() - buf.len();
    assert!(
        taken > 0 && data[..taken].ends_with(b"\n"),
        "a head ends in a line end"
    );
    for (name, value) in request.head.headers.iter() {
        assert!(!name.is_empty());
        assert!(!name.iter().chain(value).any(|b| *b == b'\r' || *b == b'\n'));
    }
    // The framing is one the lines say, and only one.
    let lengths = request.head.headers.get_all("content-length").count();
    let codings = request.head.headers.get_all("transfer-encoding").count();
    match request.framing {
        Framing::Chunked => assert!(codings == 1 && lengths == 0),
        Framing::Length(n) => assert!(n > 0 && lengths > 0 && codings == 0),
        Framing::None => assert_eq!(codings, 0),
        Framing::Close => panic!("a request is never framed by the close"),
    }
    if request.head.version == Version::HTTP_10 {
        assert!(!request.expects_continue, "HTTP/1.0 has no 100 Continue");
    }
    for cut in [taken - 1, taken / 2] {
        let mut prefix = BytesMut::from(&data[..cut]);
        assert!(
            matches!(parse_request(&mut prefix, MAX_HEAD), Ok(None)),
            "a prefix of {cut} of a head of {taken} bytes was not partial"
        );
    }
});
