//! Where the client sends its requests, which token it sends, and how it reads
//! the API's errors.

use super::*;

#[test]
fn api_base_defaults_and_adds_a_scheme() {
    assert_eq!(
        api_base(None).expect("ok").as_str(),
        "http://127.0.0.1:9090/"
    );
    assert_eq!(
        api_base(Some("10.1.2.3:9")).expect("ok").as_str(),
        "http://10.1.2.3:9/"
    );
    assert_eq!(
        api_base(Some("https://slum.example.com/x"))
            .expect("ok")
            .as_str(),
        "https://slum.example.com/x"
    );
    assert!(api_base(Some("ftp://x")).is_err());
}

#[test]
fn endpoints_keep_a_base_path_and_escape_segments() {
    let c = ApiClient::new(
        api_base(Some("http://h:1/slum/")).expect("ok"),
        None,
        PathBuf::new(),
    )
    .expect("client");
    assert_eq!(
        c.endpoint(&["instances", "a:b"]).as_str(),
        "http://h:1/slum/v1/instances/a:b"
    );
    assert_eq!(
        c.endpoint(&["tenants", "a/b"]).as_str(),
        "http://h:1/slum/v1/tenants/a%2Fb"
    );
}

#[test]
fn token_comes_from_the_flag_then_the_file_trimmed() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("token");
    assert_eq!(resolve_token(None, &file).expect("ok"), None);
    std::fs::write(&file, "  slum_abc\n").expect("write");
    assert_eq!(
        resolve_token(None, &file).expect("ok"),
        Some(Secret::from("slum_abc".to_owned()))
    );
    assert_eq!(
        resolve_token(Some(Secret::from("flag".to_owned())), &file).expect("ok"),
        Some(Secret::from("flag".to_owned()))
    );
    // An empty SLUM_TOKEN counts as unset.
    assert_eq!(
        resolve_token(Some(Secret::from(String::new())), &file).expect("ok"),
        Some(Secret::from("slum_abc".to_owned()))
    );
    std::fs::write(&file, "\n").expect("write");
    assert_eq!(resolve_token(None, &file).expect("ok"), None);
}

#[test]
fn api_errors_become_their_message() {
    let body =
        br#"{"error":{"kind":"not_found","message":"server 'east' not found","server":"east"}}"#;
    let e = api_error(StatusCode::NOT_FOUND, body);
    assert_eq!(e.to_string(), "server 'east' not found");
    assert!(matches!(e, CliError::Api { status: 404, ref kind, .. } if kind == "not_found"));
    let e = api_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
    assert_eq!(
        e.to_string(),
        "the API answered 502 Bad Gateway: <html>bad gateway</html>"
    );
    let e = api_error(StatusCode::INTERNAL_SERVER_ERROR, b"");
    assert_eq!(e.to_string(), "the API answered 500 Internal Server Error");
}
