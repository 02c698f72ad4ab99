//! Management API tokens: random 256-bit secrets, shown once at creation and
//! stored only as SHA-256 hashes.
//!
//! A presented token is checked against the hashes this process keeps in
//! memory ([`TokenCache`]), not against the table: each check reads one row,
//! the table's version (moved by triggers whenever a token is created or
//! revoked, by any process), and reads the hashes again only when it moved.
//! So a token revoked through another router, or by `slum token reset` on the
//! database, is refused by the very next call here: there is no revocation
//! delay beyond the revoking transaction's commit. This process's own creates
//! and revokes change the memory at once as well.
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

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::fleet::db::FleetDb;
use crate::fleet::events::{EventKind, NewEvent};
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

/// The token hashes of the database, as of a version of its token table.
///
/// Tokens are looked up by the hash of the presented secret in a hash map,
/// which is not a constant-time comparison, and need not be: the hash is
/// SHA-256 of a 256-bit random secret, so what the timing of a lookup could
/// tell (how much of a guessed hash matches a stored one) is no help in
/// finding a secret whose hash matches: that is a preimage of SHA-256.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    /// `None` until first read; then the version read before the hashes.
    known: tokio::sync::RwLock<Option<Known>>,
}

#[derive(Debug)]
struct Known {
    version: i64,
    by_hash: HashMap<String, ApiToken>,
}

impl TokenCache {
    pub(crate) fn new() -> Arc<TokenCache> {
        Arc::new(TokenCache::default())
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
        // Valid here at once; the version it moved makes the next check read
        // the hashes again all the same.
        if let Some(known) = self.tokens.known.write().await.as_mut() {
            known
                .by_hash
                .insert(minted.hashed.clone(), minted.token.clone());
        }
        self.record_event(NewEvent::new(
            EventKind::TokenCreated,
            format!(
                "management API token {} ('{}') created",
                minted.token.id, minted.token.name
            ),
        ))
        .await;
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
                match self.revoke_api_token(&token.id).await {
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

    /// Replaces the local admin tokens (named `bootstrap` or `admin`), or
    /// with `all` every token, with `minted`, in one transaction: the new one
    /// is valid and the old ones revoked together, or nothing changed. Says
    /// what it revoked and what it kept.
    pub async fn reset_admin_token(&self, minted: &MintedToken, all: bool) -> Result<Revoked> {
        let mut done = Revoked::default();
        for token in self.list_api_tokens().await? {
            if all || token.name == BOOTSTRAP || token.name == ADMIN {
                done.revoked.push(token);
            } else {
                done.kept.push(token);
            }
        }
        let ids: Vec<String> = done.revoked.iter().map(|t| t.id.clone()).collect();
        self.store
            .replace_api_tokens(&minted.token, &minted.hashed, &ids)
            .await?;
        if let Some(known) = self.tokens.known.write().await.as_mut() {
            known.by_hash.retain(|_, token| !ids.contains(&token.id));
            known
                .by_hash
                .insert(minted.hashed.clone(), minted.token.clone());
        }
        Ok(done)
    }

    /// The token a presented secret belongs to, if any: looked up by its hash
    /// among the hashes kept in memory (see `TokenCache` for why a lookup
    /// by hash is safe), after one read of the token table's version; the
    /// hashes are read again only when it moved.
    pub async fn verify_api_token(&self, secret: &str) -> Result<Option<ApiToken>> {
        let presented = hash(secret);
        self.with_known_tokens(|k| k.by_hash.get(&presented).cloned())
            .await
    }

    /// The token of id `id` while it is valid (not revoked), checked as
    /// [`verify_api_token`](Self::verify_api_token) checks a secret: for a
    /// dashboard session, which keeps the id of the token it was opened with
    /// and never its secret.
    pub async fn valid_api_token(&self, id: &str) -> Result<Option<ApiToken>> {
        self.with_known_tokens(|k| k.by_hash.values().find(|t| t.id == id).cloned())
            .await
    }

    /// `find` over the tokens as of the table's version now.
    async fn with_known_tokens<T>(&self, find: impl Fn(&Known) -> Option<T>) -> Result<Option<T>> {
        let version = self.store.api_token_version().await?;
        {
            let known = self.tokens.known.read().await;
            if let Some(known) = known.as_ref().filter(|k| k.version == version) {
                return Ok(find(known));
            }
        }
        let mut known = self.tokens.known.write().await;
        // Another call may have read them meanwhile, as of this version or later.
        if known.as_ref().is_none_or(|k| k.version < version) {
            // The version is read before the hashes: a change that commits in
            // between moves it past the one kept, and the next call reads again.
            let version = self.store.api_token_version().await?;
            let by_hash = self
                .store
                .list_api_tokens()
                .await?
                .into_iter()
                .map(|(token, hash)| (hash, token))
                .collect();
            *known = Some(Known { version, by_hash });
        }
        Ok(known.as_ref().and_then(find))
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
        let deleted = self.store.delete_api_token(id).await;
        // Refused here at once, even by a check that read the version before
        // the revoke committed; and if the revoke failed half-way, forgetting
        // the token only costs a read of the hashes.
        if let Some(known) = self.tokens.known.write().await.as_mut() {
            known.by_hash.retain(|_, token| token.id != id);
        }
        deleted?;
        self.record_event(NewEvent::new(
            EventKind::TokenRevoked,
            format!("management API token {id} revoked"),
        ))
        .await;
        Ok(())
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
        assert_eq!(db.valid_api_token(&a.id).await.unwrap(), Some(a.clone()));
        db.revoke_api_token(&a.id).await.unwrap();
        assert_eq!(db.verify_api_token(&secret_a).await.unwrap(), None);
        assert_eq!(db.valid_api_token(&a.id).await.unwrap(), None);
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
        let new = MintedToken::new(ADMIN).unwrap();
        let done = db.reset_admin_token(&new, false).await.unwrap();
        assert_eq!(done.revoked, [boot]);
        assert_eq!(done.kept, std::slice::from_ref(&ci));
        assert_eq!(db.verify_api_token(&boot_secret).await.unwrap(), None);
        assert!(db.verify_api_token(new.secret()).await.unwrap().is_some());
        assert!(db.verify_api_token(&ci_secret).await.unwrap().is_some());
        // A second reset replaces the first one's token too (same name).
        let newer = MintedToken::new(ADMIN).unwrap();
        let done = db.reset_admin_token(&newer, false).await.unwrap();
        assert_eq!(done.revoked, [new.token().clone()]);
        assert_eq!(db.verify_api_token(new.secret()).await.unwrap(), None);
        let newest = MintedToken::new(ADMIN).unwrap();
        let done = db.reset_admin_token(&newest, true).await.unwrap();
        assert_eq!(
            (done.revoked, done.kept),
            (vec![ci, newer.token().clone()], vec![])
        );
        assert_eq!(
            db.list_api_tokens().await.unwrap(),
            [newest.token().clone()]
        );
        // Names are labels: a second `ci` is refused, naming it.
        db.create_api_token("ci").await.unwrap();
        let e = db.create_api_token("ci").await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with("token 'ci' already exists: token names are unique"),
            "{e}"
        );
    }
}
