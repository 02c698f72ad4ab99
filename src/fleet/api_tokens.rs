//! Management API tokens: random 256-bit secrets, shown once at creation and
//! stored only as SHA-256 hashes; a presented token is checked against every stored
//! hash in constant time.

use chrono::{SubsecRound, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::fleet::db::FleetDb;
use crate::fleet::model::ApiToken;

/// Prefix of every token, so that a leaked one is recognisable.
const PREFIX: &str = "slum_";

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl FleetDb {
    /// Creates a management API token named `name`. Returns the record and the
    /// secret, which is not stored and cannot be shown again.
    pub async fn create_api_token(&self, name: &str) -> Result<(ApiToken, String)> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "token.name",
                "must be 1 to 100 printable characters",
            ));
        }
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = format!("{PREFIX}{}", hex::encode(bytes));
        let hashed = hash(&secret);
        let token = ApiToken {
            // The first 48 bits of the hash: shown, never enough to find the secret.
            id: hashed[..12].to_owned(),
            name: name.to_owned(),
            // The database keeps milliseconds.
            created_at: Utc::now().trunc_subsecs(3),
        };
        self.store.insert_api_token(&token, &hashed).await?;
        Ok((token, secret))
    }

    /// The token a presented secret belongs to, if any. Every stored hash is
    /// compared, in constant time, whatever matches.
    pub async fn verify_api_token(&self, secret: &str) -> Result<Option<ApiToken>> {
        let presented = hash(secret);
        let mut found = None;
        for (token, stored) in self.store.list_api_tokens().await? {
            if bool::from(stored.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(token);
            }
        }
        Ok(found)
    }

    /// All tokens (without their secrets).
    pub async fn list_api_tokens(&self) -> Result<Vec<ApiToken>> {
        Ok(self
            .store
            .list_api_tokens()
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect())
    }

    /// Revokes a token by its id.
    pub async fn revoke_api_token(&self, id: &str) -> Result<()> {
        self.store.delete_api_token(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_random_hashed_and_verifiable() {
        let (_test_db, db) = crate::test_db::temp_db().await;
        let (a, secret_a) = db.create_api_token("ci").await.unwrap();
        let (_, secret_b) = db.create_api_token("ops").await.unwrap();
        assert_ne!(secret_a, secret_b);
        assert_eq!(secret_a.len(), PREFIX.len() + 64, "256 bits, hex");
        assert_eq!(
            db.verify_api_token(&secret_a).await.unwrap(),
            Some(a.clone())
        );
        assert_eq!(db.verify_api_token("slum_nope").await.unwrap(), None);
        assert_eq!(db.verify_api_token("").await.unwrap(), None);
        // Only the hash is stored.
        let stored = db.store.list_api_tokens().await.unwrap();
        assert!(stored.iter().all(|(_, h)| h != &secret_a && h.len() == 64));
        db.revoke_api_token(&a.id).await.unwrap();
        assert_eq!(db.verify_api_token(&secret_a).await.unwrap(), None);
        assert!(db.revoke_api_token(&a.id).await.unwrap_err().is_not_found());
        assert!(db.create_api_token(" ").await.is_err());
    }
}
