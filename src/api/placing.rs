//! Where a new tenant or instance goes, as its body asked: on the server it
//! names, or (`"auto": true`) where slum chooses. The check is shared by
//! `POST /v1/tenants` and `POST /v1/instances`, so both refuse the same
//! mixtures with the same field named.

use crate::Error;
use crate::PlacementRequest;

/// Where a new tenant or instance goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Placing {
    On(String),
    Auto(PlacementRequest),
}

/// Checks that a body names exactly one way to place: a `server_id`, or
/// `"auto": true` (which alone may carry the placement hints).
pub(super) fn placing(
    server_id: Option<String>,
    auto: bool,
    request: PlacementRequest,
) -> Result<Placing, Error> {
    match (server_id, auto) {
        (Some(_), true) => Err(Error::invalid(
            "server_id",
            "give either server_id or \"auto\": true, not both",
        )),
        (None, true) => Ok(Placing::Auto(request)),
        (None, false) => Err(Error::invalid(
            "server_id",
            "is required unless \"auto\": true lets slum choose the server",
        )),
        (Some(id), false) => {
            if request.region.is_some() {
                return Err(Error::invalid("region", "only applies with \"auto\": true"));
            }
            if request.distinct_region {
                return Err(Error::invalid(
                    "distinct_region",
                    "only applies with \"auto\": true",
                ));
            }
            Ok(Placing::On(id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_places_on_a_server_or_automatically_never_both() {
        let hints = PlacementRequest {
            region: Some("eu".into()),
            ..Default::default()
        };
        assert_eq!(
            placing(None, true, hints.clone()).ok(),
            Some(Placing::Auto(hints.clone()))
        );
        assert_eq!(
            placing(Some("east".into()), false, PlacementRequest::default()).ok(),
            Some(Placing::On("east".into()))
        );
        let field = |r: Result<Placing, Error>| match r {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(
            field(placing(None, false, PlacementRequest::default())),
            "server_id"
        );
        assert_eq!(
            field(placing(
                Some("east".into()),
                true,
                PlacementRequest::default()
            )),
            "server_id"
        );
        assert_eq!(field(placing(Some("east".into()), false, hints)), "region");
        let apart = PlacementRequest {
            distinct_region: true,
            ..Default::default()
        };
        assert_eq!(
            field(placing(Some("east".into()), false, apart)),
            "distinct_region"
        );
    }
}
