//! The SQLite store's certificates, ACME challenges and the ACME account.

use super::*;
use crate::fleet::store::CertificateStore;

#[async_trait]
impl CertificateStore for SqliteStore {
    async fn put_certificate(&self, cert: &VerifiedCertificate) -> Result<()> {
        sqlx::query(&sqlite_placeholders(certificate_sql::PUT))
            .bind(&cert.name)
            .bind(&cert.chain_pem)
            .bind(cert.key_pem.expose())
            .bind(cert.not_before)
            .bind(cert.not_after)
            .bind(cert.redirect)
            .bind(millis(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_certificate(&self, name: &str) -> Result<Option<CertificateInfo>> {
        sqlx::query(&sqlite_placeholders(&certificate_sql::get()))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(certificate_from_row)
            .transpose()
    }

    async fn list_certificates_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CertificateInfo>> {
        let sql = sqlite_placeholders(&certificate_sql::page(after.is_some(), limit));
        sqlx::query(&sql)
            .bind_opt(after)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(certificate_from_row)
            .collect()
    }

    async fn delete_certificate(&self, name: &str) -> Result<bool> {
        let done = sqlx::query(&sqlite_placeholders(certificate_sql::DELETE))
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_certificates_expiring(&self, before: i64) -> Result<i64> {
        Ok(
            sqlx::query_scalar(&sqlite_placeholders(certificate_sql::COUNT_EXPIRING))
                .bind(before)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn certificates_expiring(&self, before: i64, limit: i64) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as(&sqlite_placeholders(&certificate_sql::expiring(limit)))
                .bind(before)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn certificate_material(&self, name: &str) -> Result<Option<CertificateMaterial>> {
        let row: Option<(Option<String>, Option<String>, Option<bool>)> =
            sqlx::query_as(&sqlite_placeholders(certificate_sql::MATERIAL))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(chain, key, redirect)| material(chain, key, redirect)))
    }

    async fn for_each_certificate_material(
        &self,
        each: &mut (dyn FnMut(String, CertificateMaterial) + Send),
    ) -> Result<()> {
        use futures::TryStreamExt;
        let sql = sqlite_placeholders(certificate_sql::ALL_MATERIAL);
        let mut rows =
            sqlx::query_as::<_, (String, Option<String>, Option<String>, Option<bool>)>(&sql)
                .fetch(&self.pool);
        while let Some((name, chain, key, redirect)) = rows.try_next().await? {
            if let Some(m) = material(chain, key, redirect) {
                each(name, m);
            }
        }
        Ok(())
    }

    async fn want_certificate(&self, domain: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(&sqlite_placeholders(certificate_sql::WANT))
            .bind(domain)
            .bind(now)
            .bind(millis(Utc::now()))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        let tenants: i64 = sqlx::query_scalar(&sqlite_placeholders(certificate_sql::IS_TENANT))
            .bind(domain)
            .fetch_one(&self.pool)
            .await?;
        if tenants == 0 {
            return Err(Error::not_found(Kind::Tenant, domain));
        }
        Ok(false)
    }

    async fn due_certificates(&self, now: i64, limit: i64) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar(&sqlite_placeholders(&certificate_sql::due(limit)))
                .bind(now)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn claim_certificate_order(
        &self,
        name: &str,
        router: &str,
        now: i64,
        until: i64,
    ) -> Result<bool> {
        let done = sqlx::query(&sqlite_placeholders(certificate_sql::CLAIM))
            .bind(name)
            .bind(router)
            .bind(until)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn certificate_issued(&self, cert: &VerifiedCertificate, next_try: i64) -> Result<bool> {
        let done = sqlx::query(&sqlite_placeholders(certificate_sql::ISSUED))
            .bind(&cert.name)
            .bind(&cert.chain_pem)
            .bind(cert.key_pem.expose())
            .bind(cert.not_before)
            .bind(cert.not_after)
            .bind(next_try)
            .bind(millis(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn certificate_failed(
        &self,
        name: &str,
        reason: &str,
        failures: i64,
        next_try: i64,
    ) -> Result<bool> {
        let done = sqlx::query(&sqlite_placeholders(certificate_sql::FAILED))
            .bind(name)
            .bind(reason)
            .bind(failures)
            .bind(next_try)
            .bind(millis(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_http01(&self, token: &str, domain: &str, key_authorization: &str) -> Result<()> {
        sqlx::query(&sqlite_placeholders(certificate_sql::PUT_HTTP01))
            .bind(token)
            .bind(domain)
            .bind(key_authorization)
            .bind(millis(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_http01(&self, token: &str) -> Result<()> {
        sqlx::query(&sqlite_placeholders(certificate_sql::DELETE_HTTP01))
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn put_alpn01(&self, domain: &str, cert_pem: &str, key_pem: &SecretPem) -> Result<()> {
        sqlx::query(&sqlite_placeholders(certificate_sql::PUT_ALPN01))
            .bind(domain)
            .bind(cert_pem)
            .bind(key_pem.expose())
            .bind(millis(Utc::now()))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_alpn01(&self, domain: &str) -> Result<()> {
        sqlx::query(&sqlite_placeholders(certificate_sql::DELETE_ALPN01))
            .bind(domain)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn challenges(&self, domain: &str) -> Result<Challenges> {
        let http01: Vec<(String, String)> =
            sqlx::query_as(&sqlite_placeholders(certificate_sql::HTTP01_OF))
                .bind(domain)
                .fetch_all(&self.pool)
                .await?;
        let alpn01: Option<(String, String)> =
            sqlx::query_as(&sqlite_placeholders(certificate_sql::ALPN01_OF))
                .bind(domain)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Challenges {
            http01,
            alpn01: alpn01.and_then(|(chain, key)| material(Some(chain), Some(key), None)),
        })
    }

    async fn challenge_domains(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar(&sqlite_placeholders(certificate_sql::CHALLENGE_DOMAINS))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn acme_account(&self) -> Result<Option<(String, SecretPem)>> {
        let row: Option<(String, String)> =
            sqlx::query_as(&sqlite_placeholders(certificate_sql::ACCOUNT))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(directory, credentials)| (directory, SecretPem::new(credentials))))
    }

    async fn put_acme_account(&self, directory: &str, credentials: &SecretPem) -> Result<()> {
        sqlx::query(&sqlite_placeholders(certificate_sql::PUT_ACCOUNT))
            .bind(directory)
            .bind(credentials.expose())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
