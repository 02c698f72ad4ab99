//! Input rules for fleet records. Every check runs before the database is touched,
//! so a rejected call changes nothing; every error names the field and the reason.
//!
//! No field takes control characters: what is stored is listed later on some
//! operator's terminal, where an escape sequence would act instead of showing
//! (and a newline would forge a row). Identifiers are DNS labels and host names,
//! which exclude them anyway; free text (a region, a URL, a token's name) is
//! checked by [`text`]. Messages quote a refused value with its control
//! characters escaped, never raw.

use crate::error::{Error, Result};
use crate::fleet::model::{Server, Tenant};

/// Free text: anything printable, no control character (C0, DEL or C1; the
/// first one found is named, escaped).
pub fn text(field: &str, value: &str) -> Result<()> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(Error::invalid(
            field,
            format!(
                "{} contains the control character {}; control characters are not allowed",
                quoted(value),
                c.escape_default()
            ),
        )),
        None => Ok(()),
    }
}

/// `value` in single quotes, its control characters escaped (`\u{1b}`), for
/// a message that may be printed on a terminal.
pub fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// A DNS label: a-z, 0-9 and '-', 1 to 63 characters, no '-' at either end.
pub fn dns_label(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(Error::invalid(
            field,
            format!(
                "{} is {} characters long; at most 63",
                quoted(value),
                value.len()
            ),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(Error::invalid(
            field,
            format!(
                "{} contains {}; only a-z, 0-9 and '-' are allowed",
                quoted(value),
                quoted(&c.to_string())
            ),
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(Error::invalid(
            field,
            format!("{} must not start or end with '-'", quoted(value)),
        ));
    }
    Ok(())
}

/// Normalises a host name (lower-case, no trailing dot) and checks it: labels of
/// letters, digits and '-', each 1 to 63 characters, at most 253 in all.
pub fn domain(field: &str, value: &str) -> Result<String> {
    let d = value.trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if d.len() > 253 {
        return Err(Error::invalid(
            field,
            format!("is {} characters long; at most 253", d.len()),
        ));
    }
    for label in d.split('.') {
        dns_label(field, label).map_err(|e| match e {
            Error::Invalid { reason, .. } => Error::invalid(
                field,
                format!("{} is not a valid host name: label {reason}", quoted(value)),
            ),
            other => other,
        })?;
    }
    Ok(d)
}

/// An http or https URL with a host. The string itself is checked for control
/// characters: the URL parser would drop tabs and newlines and accept it.
pub fn server_url(field: &str, value: &str) -> Result<()> {
    text(field, value)?;
    let u = url::Url::parse(value)
        .map_err(|e| Error::invalid(field, format!("'{value}' is not a URL: {e}")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(Error::invalid(
            field,
            format!("'{value}' must use http or https, not {}", u.scheme()),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(field, format!("'{value}' has no host")));
    }
    Ok(())
}

/// Checks a server and returns it normalised (domain lower-case, region trimmed).
pub fn server(s: &Server) -> Result<Server> {
    dns_label("server.id", &s.id)?;
    server_url("server.url", &s.url)?;
    if s.capacity_mb < 0 {
        return Err(Error::invalid(
            "server.capacity_mb",
            format!("{} is negative", s.capacity_mb),
        ));
    }
    let mut out = s.clone();
    out.url = s.url.trim_end_matches('/').to_owned();
    out.domain = match &s.domain {
        Some(d) => Some(domain("server.domain", d)?),
        None => None,
    };
    out.region = match &s.region {
        Some(r) if r.trim().is_empty() => {
            return Err(Error::invalid(
                "server.region",
                "must not be empty when given",
            ))
        }
        Some(r) => {
            text("server.region", r)?;
            Some(r.trim().to_owned())
        }
        None => None,
    };
    if let Some(t) = &s.token {
        if t.is_empty() || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
            // The token itself never appears in the message.
            return Err(Error::invalid(
                "server.token",
                "must be non-empty and free of spaces and control characters",
            ));
        }
    }
    Ok(out)
}

/// Checks a tenant and returns it normalised: domain lower-case without trailing
/// dot, `name` filled in from the domain's first label when empty.
pub fn tenant(t: &Tenant) -> Result<Tenant> {
    checked_tenant(t, true)
}

/// [`tenant`] for a tenant whose server is yet to be chosen: `server_id` is
/// not looked at.
pub fn tenant_to_place(t: &Tenant) -> Result<Tenant> {
    checked_tenant(t, false)
}

fn checked_tenant(t: &Tenant, with_server: bool) -> Result<Tenant> {
    let mut out = t.clone();
    out.domain = domain("tenant.domain", &t.domain)?;
    if out.name.is_empty() {
        out.name = out.domain.split('.').next().unwrap_or_default().to_owned();
    }
    dns_label("tenant.name", &out.name)?;
    if with_server {
        dns_label("tenant.server_id", &out.server_id)?;
    }
    dns_label("tenant.process", &out.process)?;
    dns_label("tenant.instance_id", &out.instance_id)?;
    Ok(out)
}

/// Splits an instance key `"{tenant}:{instance_id}"` and checks both halves.
pub fn instance_key(key: &str) -> Result<(String, String)> {
    let (tenant, id) = key.split_once(':').ok_or_else(|| {
        Error::invalid(
            "instance",
            format!("{} is not of the form tenant:instance_id", quoted(key)),
        )
    })?;
    dns_label("instance.tenant", tenant)?;
    dns_label("instance.instance_id", id)?;
    Ok((tenant.to_owned(), id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(dns_label("f", "a").is_ok());
        assert!(dns_label("f", "east-1").is_ok());
        assert!(dns_label("f", &"a".repeat(63)).is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "é", &"a".repeat(64)] {
            let e = dns_label("server.id", bad).unwrap_err();
            assert!(
                e.to_string().starts_with("invalid server.id:"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn domains_are_normalised() {
        assert_eq!(
            domain("d", "Customer-1.Example.COM.").unwrap(),
            "customer-1.example.com"
        );
        for bad in ["", ".", "a..b", "-a.com", "a b.com", "a_b.com", "x.-y"] {
            assert!(domain("tenant.domain", bad).is_err(), "{bad:?}");
        }
        assert!(domain("d", &format!("{}.com", "a.".repeat(130))).is_err());
    }

    #[test]
    fn urls() {
        assert!(server_url("u", "http://east.example.com").is_ok());
        assert!(server_url("u", "https://10.0.0.1:8000/").is_ok());
        for bad in ["", "east.example.com", "ftp://x", "http://", "unix:/tmp/x"] {
            assert!(server_url("server.url", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tenant_name_defaults_to_first_label() {
        let t = tenant(&Tenant {
            domain: "Customer-1.example.com".into(),
            server_id: "east".into(),
            process: "api".into(),
            instance_id: "prod".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.name, "customer-1");
        assert_eq!(t.domain, "customer-1.example.com");
    }

    #[test]
    fn control_characters_are_refused_in_free_text_naming_the_field() {
        let east = Server {
            id: "east".into(),
            url: "http://east.example.com".into(),
            capacity_mb: 1,
            ..Default::default()
        };
        let refused = |s: Server| match server(&s) {
            Err(Error::Invalid { field, reason }) => {
                assert!(
                    !reason.chars().any(char::is_control),
                    "the reason shows a raw control character: {reason:?}"
                );
                field
            }
            other => panic!("expected Invalid, got {other:?}"),
        };
        for region in [
            "\u{1b}[31mx",
            "us\neast",
            "us\teast",
            "eu\u{9b}2J",
            "x\u{7f}",
        ] {
            let s = Server {
                region: Some(region.into()),
                ..east.clone()
            };
            assert_eq!(refused(s), "server.region", "{region:?}");
        }
        // The url crate drops tabs and newlines and escapes the rest, so the
        // raw string is checked, not the parsed URL.
        for url in [
            "http://east.example.com/\u{1b}[31m",
            "http://east.example.com/a\nb",
            "http://east.\texample.com",
        ] {
            let s = Server {
                url: url.into(),
                ..east.clone()
            };
            assert_eq!(refused(s), "server.url", "{url:?}");
        }
        let s = Server {
            id: "e\u{1b}[2Jast".into(),
            ..east.clone()
        };
        assert_eq!(refused(s), "server.id");
        let s = Server {
            domain: Some("east\u{1b}.example.com".into()),
            ..east.clone()
        };
        assert_eq!(refused(s), "server.domain");
        assert!(server(&east).is_ok());

        let t = Tenant {
            domain: "acme.example.com".into(),
            server_id: "east".into(),
            process: "api".into(),
            instance_id: "prod".into(),
            ..Default::default()
        };
        for (field, bad) in [
            (
                "tenant.domain",
                Tenant {
                    domain: "ac\u{1b}me.example.com".into(),
                    ..t.clone()
                },
            ),
            (
                "tenant.name",
                Tenant {
                    name: "a\u{7}".into(),
                    ..t.clone()
                },
            ),
            (
                "tenant.process",
                Tenant {
                    process: "api\r".into(),
                    ..t.clone()
                },
            ),
        ] {
            match tenant(&bad) {
                Err(Error::Invalid { field: f, reason }) => {
                    assert_eq!(f, field);
                    assert!(!reason.chars().any(char::is_control), "{reason:?}");
                }
                other => panic!("{field}: expected Invalid, got {other:?}"),
            }
        }
        match text("region", "\u{1b}]0;owned\u{7}") {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!(field, "region");
                assert!(reason.contains("\\u{1b}"), "names the character: {reason}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert!(text("region", "eu-west (Paris)").is_ok());
    }

    #[test]
    fn instance_keys() {
        assert_eq!(
            instance_key("customer-2:prod").unwrap(),
            ("customer-2".to_owned(), "prod".to_owned())
        );
        assert!(instance_key("customer-2").is_err());
        assert!(instance_key("a:b:c").is_err());
        assert!(instance_key(":prod").is_err());
    }
}
