//! SQLite implementation of [`crate::SessionMeta`].

use async_trait::async_trait;
use sqlx::Row;

use crate::sessions::{SessionMeta, WebSession};
use crate::{Result, SqliteMeta};

#[async_trait]
impl SessionMeta for SqliteMeta {
    async fn create_web_session(&self, id_digest: &str, s: &WebSession) -> Result<()> {
        sqlx::query(
            "INSERT INTO web_sessions (id_digest, user_id, csrf_token, created_at, expires_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id_digest)
        .bind(s.user_id)
        .bind(&s.csrf_token)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn web_session(&self, id_digest: &str, now: i64) -> Result<Option<WebSession>> {
        Ok(sqlx::query(
            "SELECT user_id, csrf_token, created_at, expires_at FROM web_sessions \
             WHERE id_digest = ? AND expires_at > ?",
        )
        .bind(id_digest)
        .bind(now)
        .fetch_optional(&self.read)
        .await?
        .map(|r| WebSession {
            user_id: r.get(0),
            csrf_token: r.get(1),
            created_at: r.get(2),
            expires_at: r.get(3),
        }))
    }

    async fn delete_web_session(&self, id_digest: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE id_digest = ?")
            .bind(id_digest)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_expired_web_sessions(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    async fn delete_user_web_sessions(&self, user_id: i64, keep: Option<&str>) -> Result<u64> {
        // Not `<>`: with nothing to keep (NULL) that would spare every row. The same
        // statement on both backends (sqlx-sqlite reads `$n` as the n-th argument).
        let done = sqlx::query(
            "DELETE FROM web_sessions WHERE user_id = $1 AND id_digest IS DISTINCT FROM $2",
        )
        .bind(user_id)
        .bind(keep)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_expire_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let m = SqliteMeta::open(&dir.path().join("meta.db")).await.unwrap();
        let user = crate::OrgMeta::create_user(
            &m,
            &crate::NewUser {
                username: "alice".into(),
                name: "Alice".into(),
                email: None,
                password_hash: None,
                admin: false,
            },
            1,
        )
        .await
        .unwrap()
        .id;
        let s = WebSession {
            user_id: user,
            csrf_token: "csrf".into(),
            created_at: 10,
            expires_at: 100,
        };
        m.create_web_session("d1", &s).await.unwrap();
        assert_eq!(m.web_session("d1", 50).await.unwrap(), Some(s.clone()));
        assert_eq!(m.web_session("d1", 100).await.unwrap(), None);
        assert_eq!(m.web_session("other", 50).await.unwrap(), None);
        m.create_web_session(
            "d2",
            &WebSession {
                expires_at: 1000,
                ..s.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(m.delete_expired_web_sessions(100).await.unwrap(), 1);
        assert!(m.delete_web_session("d2").await.unwrap());
        assert!(!m.delete_web_session("d2").await.unwrap());
        assert_eq!(m.web_session("d2", 50).await.unwrap(), None);

        // A user's sessions end together, but for the one kept.
        for d in ["a1", "a2", "a3"] {
            m.create_web_session(d, &s).await.unwrap();
        }
        assert_eq!(
            m.delete_user_web_sessions(user, Some("a2")).await.unwrap(),
            2
        );
        assert_eq!(m.web_session("a1", 50).await.unwrap(), None);
        assert!(m.web_session("a2", 50).await.unwrap().is_some());
        assert_eq!(m.delete_user_web_sessions(user, None).await.unwrap(), 1);
        assert_eq!(m.web_session("a2", 50).await.unwrap(), None);
        assert_eq!(m.delete_user_web_sessions(user + 1, None).await.unwrap(), 0);
    }
}
