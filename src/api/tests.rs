//! Tests of the API's own decisions: authentication and the error mapping.
//! The routes themselves are exercised end to end by `tests/api.rs`.

use super::*;

#[test]
fn bearer_tokens_are_read_from_the_authorization_header() {
    let mut h = HeaderMap::new();
    assert_eq!(bearer(&h), None);
    for (value, want) in [
        ("Bearer slum_abc", Some("slum_abc")),
        ("bearer  slum_abc ", Some("slum_abc")),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("slum_abc", None),
    ] {
        h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        assert_eq!(bearer(&h), want, "{value:?}");
    }
}
