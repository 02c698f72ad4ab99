//! The fleet as a whole: `GET /v1/status` (a page of the servers' stats, asked
//! at once; the record counts; and the domains no server can serve now) and
//! `POST /v1/reconcile`.
//!
//! The status reads no more than a page of servers, three `COUNT`s, the
//! tenants of the servers that are down and the first certificates to expire
//! (on the index of their expiry): never every tenant, instance or
//! certificate.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::join_all;

use super::extract::ApiQuery;
use super::paging::{page_request, with_next};
use super::wire::{
    DownTenant, ExpiringCertificate, FleetStatus, PageQuery, EXPIRING_SHOWN, EXPIRY_WARNING_DAYS,
};
use super::ApiResult;
use crate::route_table::{Decision, RouteTable};
use crate::serve::AppState;

pub(super) async fn fleet_status(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let page = page_request(query.limit, query.after)?;
    let servers = state.db.list_servers_page(&page).await?;
    // The page's servers are asked at once, so one slow server costs one timeout.
    let asked = join_all(
        servers
            .items
            .iter()
            .map(|s| state.db.get_server_stats(&s.id)),
    )
    .await;
    let mut stats = Vec::with_capacity(asked.len());
    for result in asked {
        match result {
            Ok(mut s) => {
                s.last_seen = state.health.last_seen(&s.server_id, s.last_seen);
                stats.push(s)
            }
            // Deleted since it was listed: it is not part of the fleet any more.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    // Only a tenant homed on a down server, or with an instance on one, can be
    // down: the route table judges those alone.
    // Certificates near expiry: a count and the first few, on the index of
    // their expiry.
    let warn_before = chrono::Utc::now().timestamp() + EXPIRY_WARNING_DAYS * 86_400;
    let (counts, near_down, certificates_expiring, expiring) = tokio::try_join!(
        state.db.count_records(),
        state.db.list_tenants_near_down_servers(),
        state.db.certificates_expiring(warn_before),
        state.db.expiring_certificates(warn_before, EXPIRING_SHOWN),
    )?;
    let down_tenants = down_tenants(
        &state.routes.current(),
        near_down.iter().map(|t| t.domain.as_str()),
    );
    let mut resp = Json(FleetStatus {
        servers: stats,
        tenants: counts.tenants,
        instances: counts.instances,
        down_tenants,
        certificates_expiring,
        expiring_certificates: expiring
            .into_iter()
            .map(|(name, not_after)| ExpiringCertificate {
                name,
                not_after: chrono::DateTime::from_timestamp(not_after, 0).unwrap_or_default(),
            })
            .collect(),
    })
    .into_response();
    with_next(&mut resp, servers.next);
    Ok(resp)
}

/// Of `domains`, those the route table says are down, sorted by domain.
fn down_tenants<'a>(table: &RouteTable, domains: impl Iterator<Item = &'a str>) -> Vec<DownTenant> {
    let mut down: Vec<DownTenant> = domains
        .filter_map(|domain| match table.route(domain) {
            Decision::ServerDown(down) => Some(DownTenant {
                domain: domain.to_owned(),
                tenant: down.tenant().to_owned(),
                servers: down.servers(),
            }),
            _ => None,
        })
        .collect();
    down.sort_by(|a, b| a.domain.cmp(&b.domain));
    down
}

pub(super) async fn reconcile(State(state): State<AppState>) -> ApiResult<Response> {
    let report = state.db.reconcile().await?;
    state.fleet_changed().await;
    Ok(Json(report).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Instance, Server, ServerStatus, Tenant};

    #[test]
    fn down_tenants_are_the_domains_whose_servers_are_all_offline() {
        let server = |id: &str, status| Server {
            id: id.into(),
            url: format!("http://{id}.test"),
            status,
            ..Default::default()
        };
        let tenant = |domain: &str, home: &str| Tenant {
            domain: domain.into(),
            name: domain.split('.').next().unwrap_or_default().into(),
            server_id: home.into(),
            process: "api".into(),
            instance_id: "prod".into(),
            ..Default::default()
        };
        let inst = |tenant: &str, id: &str, server: &str| Instance {
            tenant: tenant.into(),
            instance_id: id.into(),
            process: "api".into(),
            server_id: server.into(),
            ..Default::default()
        };
        let table = RouteTable::build(
            1,
            &[
                server("east", ServerStatus::Offline),
                server("west", ServerStatus::Online),
            ],
            &[
                tenant("b.test", "east"),
                tenant("a.test", "east"),
                tenant("backed.test", "east"),
                tenant("fine.test", "west"),
            ],
            &[
                inst("a", "prod", "east"),
                inst("backed", "prod", "east"),
                inst("backed", "backup", "west"),
                inst("fine", "prod", "west"),
            ],
        );
        let domains = ["b.test", "fine.test", "a.test", "backed.test", "gone.test"];
        assert_eq!(
            down_tenants(&table, domains.into_iter()),
            vec![
                DownTenant {
                    domain: "a.test".into(),
                    tenant: "a".into(),
                    servers: vec!["east".into()],
                },
                DownTenant {
                    domain: "b.test".into(),
                    tenant: "b".into(),
                    servers: vec!["east".into()],
                },
            ]
        );
    }
}
