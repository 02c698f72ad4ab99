//! `/v1/certificates`: the fleet's TLS certificates. An operator's are put
//! under their name (checked: chain, key, names, expiry); ACME ones are
//! ordered for a tenant domain. No answer ever carries a key or a PEM: the
//! records are [`CertificateInfo`]s.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;

use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::paging::{page_request, paged};
use super::wire::{CertificateInfo, PageQuery, PutCertificate, EXPIRY_WARNING_DAYS};
use super::ApiResult;
use crate::metrics::CERTIFICATE_SERIES;
use crate::serve::AppState;
use crate::{Error, Kind, SecretPem, UploadedCertificate};

/// A page of the certificates, by name.
pub(super) async fn list_certificates(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Response> {
    let page = page_request(query.limit, query.after)?;
    Ok(paged(state.db.list_certificates(&page).await?))
}

pub(super) async fn get_certificate(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<CertificateInfo>> {
    match state.db.certificate(&name).await? {
        Some(info) => Ok(Json(info)),
        None => Err(Error::NotFound {
            kind: Kind::Certificate,
            key: name.trim_end_matches('.').to_ascii_lowercase(),
        }),
    }
}

/// Stores an operator's certificate, replacing any of that name: 200 with
/// what was stored.
pub(super) async fn put_certificate(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PutCertificate>,
) -> ApiResult<Json<CertificateInfo>> {
    let upload = UploadedCertificate {
        name,
        cert_pem: body.cert_pem,
        key_pem: SecretPem::new(body.key_pem),
        redirect: body.redirect,
    };
    let stored = state.db.put_certificate(&upload).await?;
    tracing::info!(certificate = %stored.name, "certificate uploaded");
    state.fleet_changed().await;
    Ok(Json(stored))
}

pub(super) async fn delete_certificate(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.db.remove_certificate(&name).await?;
    state.fleet_changed().await;
    Ok(StatusCode::NO_CONTENT)
}

/// Wants an ACME certificate for a tenant domain: 202 with the pending row
/// (the leading router orders it), or 200 with the row already there.
pub(super) async fn order_certificate(
    State(state): State<AppState>,
    ApiPath(domain): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<CertificateInfo>)> {
    let added = state.db.want_certificate(&domain).await?;
    state.fleet_changed().await;
    let info = state
        .db
        .certificate(&domain)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: Kind::Certificate,
            key: domain.clone(),
        })?;
    let status = if added {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)))
}

/// How long a scrape waits for the certificates' two reads before it shows
/// the values of the last one.
const METRICS_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sets the certificates' expiry metrics from the database, as a scrape asks
/// for them: a count and the first [`CERTIFICATE_SERIES`] to expire, both on
/// the index of their expiry, whatever the number of certificates. Should the
/// database fail or be slow, the scrape shows the last values.
pub(super) async fn refresh_metrics(state: &AppState) {
    let now = chrono::Utc::now().timestamp();
    let before = now + EXPIRY_WARNING_DAYS * 86_400;
    let read = async {
        tokio::try_join!(
            state.db.certificates_expiring(before),
            state.db.expiring_certificates(before, CERTIFICATE_SERIES),
        )
    };
    match tokio::time::timeout(METRICS_READ_TIMEOUT, read).await {
        Ok(Ok((count, first))) => state.metrics.set_expiring_certificates(count, &first, now),
        Ok(Err(e)) => tracing::warn!(error = %e, "reading the certificates near expiry failed"),
        Err(_) => tracing::warn!("reading the certificates near expiry timed out"),
    }
}
