//! Where new instances go. Pure functions over a snapshot of the servers, so the
//! choice is tested without a database or a network; the store re-checks capacity
//! atomically when the reservation is written, so a stale snapshot can never
//! overbook a server.

use crate::fleet::model::{Instance, Server};

/// Of the usable servers (neither offline nor draining), in `region` when given,
/// the one with the most free capacity that still fits `needed_mb`. Ties go to the
/// lowest id, so the choice is deterministic.
pub fn most_free<'a>(
    servers: &'a [Server],
    region: Option<&str>,
    needed_mb: i64,
) -> Option<&'a Server> {
    servers
        .iter()
        .filter(|s| s.is_usable())
        .filter(|s| region.is_none_or(|r| s.region.as_deref() == Some(r)))
        .filter(|s| s.free_capacity_mb() >= needed_mb)
        .min_by(|a, b| {
            b.free_capacity_mb()
                .cmp(&a.free_capacity_mb())
                .then_with(|| a.id.cmp(&b.id))
        })
}

/// [`most_free`] in `region` when a server there fits, anywhere otherwise.
pub fn most_free_preferring<'a>(
    servers: &'a [Server],
    region: Option<&str>,
    needed_mb: i64,
) -> Option<&'a Server> {
    most_free(servers, region, needed_mb).or_else(|| most_free(servers, None, needed_mb))
}

/// Where an automatic placement may go.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PlacementRequest {
    /// Only servers of this region.
    pub region: Option<String>,
    /// Never a region that already holds an instance of the same tenant and
    /// process (a backup that survives the loss of a region).
    pub distinct_region: bool,
    /// Memory to reserve, in MB; the fleet default when `None`.
    pub memory_mb: Option<i64>,
}

/// The servers a new instance of `tenant`'s `process` may go to: not one that
/// already holds (or is receiving) an instance of it, nor, when asked, one in a
/// region that does.
pub fn candidates(
    servers: &[Server],
    instances: &[Instance],
    tenant: &str,
    process: &str,
    distinct_region: bool,
) -> Vec<Server> {
    let siblings: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.tenant == tenant && i.process == process)
        .collect();
    let taken: Vec<&str> = siblings
        .iter()
        .flat_map(|i| std::iter::once(i.server_id.as_str()).chain(i.moving_to.as_deref()))
        .collect();
    let taken_regions: Vec<&str> = servers
        .iter()
        .filter(|s| taken.contains(&s.id.as_str()))
        .filter_map(|s| s.region.as_deref())
        .collect();
    servers
        .iter()
        .filter(|s| !taken.contains(&s.id.as_str()))
        .filter(|s| {
            !distinct_region
                || s.region
                    .as_deref()
                    .is_none_or(|r| !taken_regions.contains(&r))
        })
        .cloned()
        .collect()
}

/// What a placement asks for, to explain a refusal: the instance, its size,
/// and the rules it was placed by.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub tenant: &'a str,
    pub process: &'a str,
    pub instance_id: &'a str,
    pub needed_mb: i64,
    /// Only servers of this region (a preferred region is no rule).
    pub region: Option<&'a str>,
    pub distinct_region: bool,
}

/// Why no server could take `ask`: for each server, the first rule that
/// excluded it, in the order they are applied (its state, the region asked,
/// the tenant's process already there or in its region, its free room), as
/// `"s1 already runs acme:prod (api)"`, `"s2 is offline"`, `"s3 has 64 MB free
/// of the 128 MB asked"`. At most [`REASONS_SHOWN`] servers are named, the
/// rest counted.
pub fn why_none(servers: &[Server], instances: &[Instance], ask: &Ask<'_>) -> Vec<String> {
    let siblings: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.tenant == ask.tenant && i.process == ask.process)
        .collect();
    let region_of = |id: &str| {
        servers
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.region.as_deref())
    };
    let reasons: Vec<String> = servers
        .iter()
        .filter_map(|s| {
            let why = if !s.status.is_usable() {
                format!("is {}", s.status)
            } else if s.cordoned {
                "is cordoned".to_owned()
            } else if let Some(r) = ask.region.filter(|r| s.region.as_deref() != Some(*r)) {
                match &s.region {
                    Some(own) => format!("is in region '{own}', not '{r}'"),
                    None => format!("has no region, not '{r}'"),
                }
            } else if let Some(i) = siblings.iter().find(|i| i.server_id == s.id) {
                format!("already runs {} ({})", i.key(), i.process)
            } else if let Some(i) = siblings
                .iter()
                .find(|i| i.moving_to.as_deref() == Some(s.id.as_str()))
            {
                format!("is receiving {} ({})", i.key(), i.process)
            } else if let Some(i) = siblings.iter().find(|i| {
                ask.distinct_region
                    && s.region.is_some()
                    && [Some(i.server_id.as_str()), i.moving_to.as_deref()]
                        .into_iter()
                        .flatten()
                        .any(|other| region_of(other) == s.region.as_deref())
            }) {
                format!(
                    "is in region '{}', which holds {} already",
                    s.region.as_deref().unwrap_or_default(),
                    i.key()
                )
            } else if s.free_capacity_mb() < ask.needed_mb {
                format!(
                    "has {} MB free of the {} MB asked",
                    s.free_capacity_mb(),
                    ask.needed_mb
                )
            } else {
                return None;
            };
            Some(format!("{} {why}", s.id))
        })
        .collect();
    if servers.is_empty() {
        return vec!["the fleet has no server".to_owned()];
    }
    let more = reasons.len().saturating_sub(REASONS_SHOWN);
    let mut shown: Vec<String> = reasons.into_iter().take(REASONS_SHOWN).collect();
    if more > 0 {
        shown.push(format!("and {more} more server(s)"));
    }
    shown
}

/// How many servers a refused placement names.
pub const REASONS_SHOWN: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::ServerStatus;

    fn server(id: &str, region: &str, capacity: i64, used: i64, status: ServerStatus) -> Server {
        Server {
            id: id.into(),
            url: format!("http://{id}.test"),
            region: Some(region.into()),
            capacity_mb: capacity,
            used_capacity_mb: used,
            status,
            ..Default::default()
        }
    }

    #[test]
    fn picks_most_free_usable_server_in_region() {
        use ServerStatus::*;
        let fleet = [
            server("a", "eu", 1000, 900, Online),
            server("b", "eu", 1000, 100, Offline),
            server("c", "eu", 1000, 300, Unknown),
            server("d", "eu", 4000, 0, Draining),
            server("e", "us", 8000, 0, Online),
        ];
        assert_eq!(most_free(&fleet, Some("eu"), 0).unwrap().id, "c");
        assert_eq!(most_free(&fleet, None, 0).unwrap().id, "e");
        assert_eq!(most_free(&fleet, Some("eu"), 700).unwrap().id, "c");
        assert!(most_free(&fleet, Some("eu"), 701).is_none());
        assert!(most_free(&fleet, Some("ap"), 0).is_none());
    }

    #[test]
    fn ties_go_to_lowest_id() {
        let fleet = [
            server("b", "eu", 100, 0, ServerStatus::Online),
            server("a", "eu", 100, 0, ServerStatus::Online),
        ];
        assert_eq!(most_free(&fleet, None, 0).unwrap().id, "a");
    }

    #[test]
    fn a_backup_never_shares_a_server_nor_when_asked_a_region() {
        let s = |id: &str, region: &str| Server {
            id: id.into(),
            region: Some(region.into()),
            capacity_mb: 1000,
            status: ServerStatus::Online,
            ..Default::default()
        };
        let fleet = [s("a", "eu"), s("b", "eu"), s("c", "us")];
        let primary = Instance {
            tenant: "acme".into(),
            instance_id: "prod".into(),
            process: "api".into(),
            server_id: "a".into(),
            ..Default::default()
        };
        let ids = |v: Vec<Server>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(candidates(
                &fleet,
                std::slice::from_ref(&primary),
                "acme",
                "api",
                false
            )),
            ["b", "c"]
        );
        assert_eq!(
            ids(candidates(
                &fleet,
                std::slice::from_ref(&primary),
                "acme",
                "api",
                true
            )),
            ["c"]
        );
        assert_eq!(
            ids(candidates(
                &fleet,
                std::slice::from_ref(&primary),
                "acme",
                "web",
                true
            )),
            ["a", "b", "c"],
            "another process is not a sibling"
        );
    }

    #[test]
    fn a_refused_placement_names_the_rule_that_excluded_each_server() {
        use ServerStatus::*;
        let mut fleet = vec![
            server("s1", "eu", 1000, 0, Online),
            server("s2", "eu", 1000, 0, Offline),
            server("s3", "eu", 1000, 936, Online),
            server("s4", "us", 1000, 0, Online),
            server("s5", "eu", 1000, 0, Online),
            server("s6", "eu", 1000, 0, Online),
        ];
        fleet[4].cordoned = true;
        let running = Instance {
            tenant: "umbrella".into(),
            instance_id: "prod".into(),
            process: "api".into(),
            server_id: "s1".into(),
            ..Default::default()
        };
        let arriving = Instance {
            instance_id: "backup".into(),
            server_id: "s4".into(),
            moving_to: Some("s6".into()),
            ..running.clone()
        };
        let ask = Ask {
            tenant: "umbrella",
            process: "api",
            instance_id: "extra",
            needed_mb: 128,
            region: None,
            distinct_region: false,
        };
        assert_eq!(
            why_none(&fleet, &[running.clone(), arriving.clone()], &ask),
            [
                "s1 already runs umbrella:prod (api)",
                "s2 is offline",
                "s3 has 64 MB free of the 128 MB asked",
                "s4 already runs umbrella:backup (api)",
                "s5 is cordoned",
                "s6 is receiving umbrella:backup (api)",
            ]
        );
        let in_us = Ask {
            region: Some("us"),
            ..ask
        };
        assert_eq!(
            why_none(&fleet, &[], &in_us)[0],
            "s1 is in region 'eu', not 'us'"
        );
        let apart = Ask {
            distinct_region: true,
            ..ask
        };
        let reasons = why_none(&fleet, std::slice::from_ref(&running), &apart);
        assert_eq!(
            reasons[2], "s3 is in region 'eu', which holds umbrella:prod already",
            "{reasons:?}"
        );
        assert!(
            !reasons.iter().any(|r| r.starts_with("s4 ")),
            "s4 could take it: {reasons:?}"
        );
        assert_eq!(why_none(&[], &[], &ask), ["the fleet has no server"]);
        let many: Vec<Server> = (0..12)
            .map(|i| server(&format!("d{i:02}"), "eu", 100, 100, Online))
            .collect();
        let reasons = why_none(&many, &[], &ask);
        assert_eq!(reasons.len(), REASONS_SHOWN + 1);
        assert_eq!(
            reasons.last().map(String::as_str),
            Some("and 2 more server(s)")
        );
    }
}
