//! Where new instances go. Pure functions over a snapshot of the servers, so the
//! choice is tested without a database or a network; the store re-checks capacity
//! atomically when the reservation is written, so a stale snapshot can never
//! overbook a server.

use crate::model::Server;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServerStatus;

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
}
