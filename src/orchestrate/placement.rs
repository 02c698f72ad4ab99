//! Where new instances go. Pure functions over a snapshot of the servers, so the
//! choice is tested without a database or a network; the store re-checks capacity
//! atomically when the reservation is written, so a stale snapshot can never
//! overbook a server.

use crate::fleet::model::Server;

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
    instances: &[crate::fleet::model::Instance],
    tenant: &str,
    process: &str,
    distinct_region: bool,
) -> Vec<Server> {
    let siblings: Vec<&crate::fleet::model::Instance> = instances
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::model::{Instance, ServerStatus};

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
}
