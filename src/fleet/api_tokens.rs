//! Management API tokens: random 256-bit secrets, shown once at creation and
//! stored only as SHA-256 hashes; a presented token is checked against every stored
//! hash in constant time.
//!
//! A token is made in two steps when its secret must be kept somewhere first:
//! [`MintedToken::new`] draws it, the caller stores the secret (the admin token
//! file of `slum serve`), and only then [`FleetDb::record_api_token`] makes it
//! valid, so that no valid token exists that nobody holds.
//!
//! The local admin token is the one `slum serve` writes to its token file
//! (named [`BOOTSTRAP`]) or `slum token reset` makes (named [`ADMIN`]); a reset
//! replaces those and keeps the tokens made for other uses (`slum token
//! create ci`), unless it is told to revoke every token.

use chrono::{SubsecRound, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::fleet::db::FleetDb;
use crate::fleet::model::ApiToken;

/// Prefix of every token, so that a leaked one is recognisable.
const PREFIX: &str = "slum_";

/// Name of the admin token `slum serve` writes when the database has none.
pub const BOOTSTRAP: &str = "bootstrap";
/// Name of the admin token `slum token reset` makes.
pub const ADMIN: &str = "admin";

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A token drawn but not recorded yet: not valid until
/// [`FleetDb::record_api_token`]. `Debug` never shows the secret.
pub struct MintedToken {
    token: ApiToken,
    secret: String,
    hashed: String,
}

impl MintedToken {
    /// Draws a token named `name` (1 to 100 printable characters).
    pub fn new(name: &str) -> Result<MintedToken> {
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
        Ok(MintedToken {
            token,
            secret,
            hashed,
        })
    }

    /// The token's record (id, name, creation time).
    pub fn token(&self) -> &ApiToken {
        &self.token
    }

    /// The secret, to store before the token is recorded.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// What [`FleetDb::revoke_admin_tokens`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    /// The tokens revoked.
    pub revoked: Vec<ApiToken>,
    /// The tokens left valid (besides the one kept on purpose).
    pub kept: Vec<ApiToken>,
}

impl FleetDb {
    /// Creates a management API token named `name`. Returns the record and the
    /// secret, which is not stored and cannot be shown again.
    pub async fn create_api_token(&self, name: &str) -> Result<(ApiToken, String)> {
        let minted = MintedToken::new(name)?;
        let token = self.record_api_token(&minted).await?;
        Ok((token, minted.secret))
    }

    /// Makes a minted token valid.
    pub async fn record_api_token(&self, minted: &MintedToken) -> Result<ApiToken> {
        self.store
            .insert_api_token(&minted.token, &minted.hashed)
            .await?;
        Ok(minted.token.clone())
    }

    /// Revokes the local admin tokens (named `bootstrap` or `admin`), or
    /// with `all` every token, except the one whose id is `keep` (the new
    /// admin token of a reset). Says what it revoked and what it kept.
    pub async fn revoke_admin_tokens(&self, keep: &str, all: bool) -> Result<Revoked> {
        let mut done = Revoked::default();
        for token in self.list_api_tokens().await? {
            if token.id == keep {
                continue;
            }
            if all || token.name == BOOTSTRAP || token.name == ADMIN {
                match self.store.delete_api_token(&token.id).await {
                    // Revoked meanwhile by someone else: gone all the same.
                    Err(e) if e.is_not_found() => {}
                    other => other?,
                }
                done.revoked.push(token);
            } else {
                done.kept.push(token);
            }
        }
        Ok(done)
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

    #[tokio::test]
    async fn a_minted_token_is_valid_only_once_recorded() {
        let (_test_db, db) = crate::test_db::temp_db().await;
        let minted = MintedToken::new(BOOTSTRAP).unwrap();
        assert!(
            !format!("{minted:?}").contains(minted.secret()),
            "{minted:?}"
        );
        assert_eq!(db.verify_api_token(minted.secret()).await.unwrap(), None);
        let token = db.record_api_token(&minted).await.unwrap();
        assert_eq!(&token, minted.token());
        assert_eq!(
            db.verify_api_token(minted.secret()).await.unwrap(),
            Some(token)
        );
        assert!(MintedToken::new("\u{1b}[31m").is_err());
    }

    #[tokio::test]
    async fn a_reset_revokes_the_admin_tokens_and_keeps_the_others_unless_told() {
        let (_test_db, db) = crate::test_db::temp_db().await;
        let (boot, boot_secret) = db.create_api_token(BOOTSTRAP).await.unwrap();
        let (ci, ci_secret) = db.create_api_token("ci").await.unwrap();
        let (new, new_secret) = db.create_api_token(ADMIN).await.unwrap();
        let done = db.revoke_admin_tokens(&new.id, false).await.unwrap();
        assert_eq!(done.revoked, [boot]);
        assert_eq!(done.kept, std::slice::from_ref(&ci));
        assert_eq!(db.verify_api_token(&boot_secret).await.unwrap(), None);
        assert!(db.verify_api_token(&ci_secret).await.unwrap().is_some());
        // A second reset replaces the first one's token too.
        let (newer, _) = db.create_api_token(ADMIN).await.unwrap();
        let done = db.revoke_admin_tokens(&newer.id, false).await.unwrap();
        assert_eq!(done.revoked, [new]);
        assert_eq!(db.verify_api_token(&new_secret).await.unwrap(), None);
        let done = db.revoke_admin_tokens(&newer.id, true).await.unwrap();
        assert_eq!((done.revoked, done.kept), (vec![ci], vec![]));
        assert_eq!(db.list_api_tokens().await.unwrap(), [newer]);
    }
}
