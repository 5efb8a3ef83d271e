//! Sessions of the web UI: a browser signed in as a user until it signs out or the
//! session expires. Stored server-side so signing out revokes the session. And the
//! registry token service's refresh tokens, which keep a client (docker's identity
//! token) signed in without its secret.

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

/// A refresh token as stored: what it was issued for (see the migration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: i64,
    /// `password`, `personal_access_token` or `deploy_token`.
    pub kind: String,
    pub user_id: Option<i64>,
    /// The personal access token's or deploy token's id.
    pub credential_id: Option<i64>,
    /// For `password`: a fingerprint of the password hash it was issued under.
    pub fingerprint: Option<String>,
    pub client_id: String,
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

    /// Record a refresh token under the digest of its secret (`id` is ignored);
    /// returns its id.
    async fn create_refresh_token(&self, digest: &str, token: &RefreshToken) -> Result<i64>;
    /// The refresh token with this digest, unless unknown or expired at `now`.
    async fn refresh_token(&self, digest: &str, now: i64) -> Result<Option<RefreshToken>>;
    /// Forget refresh tokens expired at `now`; returns how many.
    async fn delete_expired_refresh_tokens(&self, now: i64) -> Result<u64>;
}
