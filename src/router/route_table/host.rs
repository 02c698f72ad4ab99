//! The Host a request names, as the route table is looked up by.

use super::BadHost;

/// Normalises a Host header value: lower-case, port and trailing dot removed.
/// IPv6 literals and anything that is not a host name are malformed.
pub fn normalize_host(raw: Option<&str>) -> Result<String, BadHost> {
    let raw = raw
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(BadHost::Missing)?;
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return Err(BadHost::Malformed),
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() || host.len() > 253 {
        return Err(BadHost::Malformed);
    }
    // The rule tenants' domains were checked with (lower-cased above).
    if !host
        .split('.')
        .all(|l| crate::fleet::validation::dns_label("host", l).is_ok())
    {
        return Err(BadHost::Malformed);
    }
    Ok(host)
}
