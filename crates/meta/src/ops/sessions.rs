//! [`crate::SessionMeta`], written once for both backends (see the crate doc).

use async_trait::async_trait;
use sqlx::Row;

use super::Db;
use crate::cache::Scope;
use crate::sessions::{RefreshToken, SessionMeta, WebSession};
use crate::Result;

#[async_trait]
impl SessionMeta for Db {
    async fn create_web_session(&self, id_digest: &str, s: &WebSession) -> Result<()> {
        sqlx::query(
            "INSERT INTO web_sessions (id_digest, user_id, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_digest)
        .bind(s.user_id)
        .bind(&s.csrf_token)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(self.writer_scoped(Scope::Nothing))
        .await?;
        Ok(())
    }

    async fn web_session(&self, id_digest: &str, now: i64) -> Result<Option<WebSession>> {
        Ok(sqlx::query(
            "SELECT user_id, csrf_token, created_at, expires_at FROM web_sessions \
             WHERE id_digest = $1 AND expires_at > $2",
        )
        .bind(id_digest)
        .bind(now)
        .fetch_optional(self.reader())
        .await?
        .map(|r| WebSession {
            user_id: r.get(0),
            csrf_token: r.get(1),
            created_at: r.get(2),
            expires_at: r.get(3),
        }))
    }

    async fn delete_web_session(&self, id_digest: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE id_digest = $1")
            .bind(id_digest)
            .execute(self.writer_scoped(Scope::Nothing))
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user_web_sessions(&self, user_id: i64, keep: Option<&str>) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM web_sessions WHERE user_id = $1 AND ($2 IS NULL OR id_digest <> $2)",
        )
        .bind(user_id)
        .bind(keep)
        .execute(self.writer_scoped(Scope::Nothing))
        .await?;
        Ok(done.rows_affected())
    }

    async fn delete_expired_web_sessions(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.writer_scoped(Scope::Nothing))
            .await?;
        Ok(done.rows_affected())
    }

    async fn create_refresh_token(&self, digest: &str, t: &RefreshToken) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO refresh_tokens (digest, kind, user_id, credential_id, fingerprint, \
             client_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             RETURNING id",
        )
        .bind(digest)
        .bind(&t.kind)
        .bind(t.user_id)
        .bind(t.credential_id)
        .bind(&t.fingerprint)
        .bind(&t.client_id)
        .bind(t.created_at)
        .bind(t.expires_at)
        .fetch_one(self.writer_scoped(Scope::Nothing))
        .await?)
    }

    async fn refresh_token(&self, digest: &str, now: i64) -> Result<Option<RefreshToken>> {
        Ok(sqlx::query(
            "SELECT id, kind, user_id, credential_id, fingerprint, client_id, created_at, \
             expires_at FROM refresh_tokens WHERE digest = $1 AND expires_at > $2",
        )
        .bind(digest)
        .bind(now)
        .fetch_optional(self.reader())
        .await?
        .map(|r| RefreshToken {
            id: r.get(0),
            kind: r.get(1),
            user_id: r.get(2),
            credential_id: r.get(3),
            fingerprint: r.get(4),
            client_id: r.get(5),
            created_at: r.get(6),
            expires_at: r.get(7),
        }))
    }

    async fn delete_expired_refresh_tokens(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(self.writer_scoped(Scope::Nothing))
            .await?;
        Ok(done.rows_affected())
    }
}
