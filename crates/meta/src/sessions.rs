//! Sessions of the web UI: a browser signed in as a user until it signs out or the
//! session expires. Stored server-side so signing out revokes the session.

use async_trait::async_trait;

use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSession {
    pub user_id: i64,
    /// Sent back with every form of this session; checked on every change.
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
}

#[async_trait]
pub trait SessionMeta: Send + Sync {
    /// Record a session under the digest of its id (the id itself is never stored).
    async fn create_web_session(&self, id_digest: &str, session: &WebSession) -> Result<()>;
    /// The session, unless unknown or expired at `now`.
    async fn web_session(&self, id_digest: &str, now: i64) -> Result<Option<WebSession>>;
    /// End a session; false when it did not exist.
    async fn delete_web_session(&self, id_digest: &str) -> Result<bool>;
    /// End every web session of `user_id` except the one whose id digest is `keep`
    /// (the session that made the change); returns how many ended.
    async fn delete_user_web_sessions(&self, user_id: i64, keep: Option<&str>) -> Result<u64>;
    /// Forget sessions expired at `now`; returns how many.
    async fn delete_expired_web_sessions(&self, now: i64) -> Result<u64>;
}
