//! The SQLite store's API tokens.

use super::*;
use crate::fleet::store::TokenStore;

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_api_token(&self, token: &ApiToken, hash: &str) -> Result<()> {
        let res =
            sqlx::query("INSERT INTO api_tokens (id, name, hash, created_at) VALUES (?, ?, ?, ?)")
                .bind(&token.id)
                .bind(&token.name)
                .bind(hash)
                .bind(millis(token.created_at))
                .execute(&self.pool)
                .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if violation(&e) == Some(ErrorKind::UniqueViolation) => {
                Err(crate::fleet::store::token_name_taken(token))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn list_api_tokens(&self) -> Result<Vec<(ApiToken, String)>> {
        sqlx::query("SELECT id, name, hash, created_at FROM api_tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    ApiToken {
                        id: row.try_get("id")?,
                        name: row.try_get("name")?,
                        created_at: from_millis(row.try_get("created_at")?),
                    },
                    row.try_get("hash")?,
                ))
            })
            .collect()
    }

    async fn api_token_version(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT version FROM api_token_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn replace_api_tokens(
        &self,
        token: &ApiToken,
        hash: &str,
        revoke: &[String],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for id in revoke {
            sqlx::query("DELETE FROM api_tokens WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let res =
            sqlx::query("INSERT INTO api_tokens (id, name, hash, created_at) VALUES (?, ?, ?, ?)")
                .bind(&token.id)
                .bind(&token.name)
                .bind(hash)
                .bind(millis(token.created_at))
                .execute(&mut *tx)
                .await;
        match res {
            Ok(_) => {}
            Err(e) if violation(&e) == Some(ErrorKind::UniqueViolation) => {
                return Err(crate::fleet::store::token_name_taken(token))
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_api_token(&self, id: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM api_tokens WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(Error::not_found(Kind::Token, id));
        }
        Ok(())
    }
}
