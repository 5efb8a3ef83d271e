//! Who is calling: credentials (passwords, personal access tokens, deploy tokens, CI
//! job tokens) turned into a principal, the rate limit on failed logins, and the
//! facts the permission rules of `berth-core` need about a principal and a project.

pub mod jwt;
pub mod secrets;
pub mod token;

use berth_core::{AccessLevel, Credential, Scope};
use berth_meta::{
    CiJob, DeployToken, JobStatus, Meta, PersonalToken, Project, Source, User, UserState,
};

use crate::state::now_ms;

/// How a signed-in user proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    Password,
    PersonalToken(PersonalToken),
}

#[derive(Debug, Clone)]
pub enum Principal {
    Anonymous,
    User { user: User, via: Via },
    Deploy(DeployToken),
    Job { job: CiJob, user: User },
}

impl Principal {
    /// GitLab's `auth_type` claim.
    pub fn auth_type(&self) -> &'static str {
        match self {
            Principal::Anonymous => "none",
            Principal::User {
                via: Via::Password, ..
            } => "gitlab_or_ldap",
            Principal::User {
                via: Via::PersonalToken(_),
                ..
            } => "personal_access_token",
            Principal::Deploy(_) => "deploy_token",
            Principal::Job { .. } => "build",
        }
    }

    /// The name put in the token's `sub` (none for anonymous and deploy tokens, as GitLab).
    pub fn subject(&self) -> Option<String> {
        match self {
            Principal::User { user, .. } | Principal::Job { user, .. } => {
                Some(user.username.clone())
            }
            _ => None,
        }
    }

    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::User { user, .. } | Principal::Job { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Whether the credential can do anything in a registry at all (a token without a
    /// registry scope cannot, and is refused by the token service).
    pub fn has_registry_ability(&self) -> bool {
        let any = |scopes: &[String], wanted: &[&str]| {
            scopes.iter().any(|s| wanted.contains(&s.as_str()))
        };
        match self {
            Principal::User {
                via: Via::PersonalToken(t),
                ..
            } => any(
                &t.scopes,
                &["api", "read_api", "read_registry", "write_registry"],
            ),
            Principal::Deploy(t) => any(&t.scopes, &["read_registry", "write_registry"]),
            _ => true,
        }
    }

    pub fn is_admin(&self) -> bool {
        match self {
            Principal::User { user, via } => {
                user.admin
                    && match via {
                        Via::Password => true,
                        Via::PersonalToken(t) => t.scopes.iter().any(|s| s == "api"),
                    }
            }
            _ => false,
        }
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`, for expiry dates.
pub fn today() -> String {
    let now = std::time::SystemTime::now();
    humantime::format_rfc3339_seconds(now).to_string()[..10].to_string()
}

fn parse_scopes(list: &[String]) -> Vec<Scope> {
    list.iter().filter_map(|s| s.parse().ok()).collect()
}

/// Whether a day-dated expiry has passed (a token expires when its day begins).
pub fn date_expired(expires_at: Option<&str>, today: &str) -> bool {
    expires_at.is_some_and(|d| d <= today)
}

/// The facts `berth_core::allowed_actions` needs about this principal and project.
pub async fn credential_for(
    meta: &dyn Meta,
    principal: &Principal,
    project: &Project,
) -> Result<Credential, berth_meta::MetaError> {
    let today = today();
    let role = |user_id: i64| {
        let today = today.clone();
        async move { meta.project_role(user_id, project.id, &today).await }
    };
    Ok(match principal {
        Principal::Anonymous => Credential::Anonymous,
        Principal::User {
            user,
            via: Via::Password,
        } => Credential::Password {
            admin: user.admin,
            role: role(user.id).await?,
        },
        Principal::User {
            user,
            via: Via::PersonalToken(t),
        } => Credential::PersonalToken {
            admin: user.admin,
            role: role(user.id).await?,
            scopes: parse_scopes(&t.scopes),
        },
        Principal::Deploy(t) => Credential::DeployToken {
            covers: meta.deploy_token_covers(t.source, project.id).await?,
            scopes: parse_scopes(&t.scopes),
        },
        Principal::Job { job, user } => Credential::JobToken {
            own_project: job.project_id == project.id,
            admin: user.admin,
            role: role(user.id).await?,
        },
    })
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    Invalid,
    #[error("too many failed sign-in attempts; try again in {0} seconds")]
    RateLimited(u64),
    #[error("metadata error: {0}")]
    Meta(#[from] berth_meta::MetaError),
}

/// Failed sign-ins allowed per client address and per username in one window.
const MAX_FAILURES: usize = 10;
const WINDOW_SECS: i64 = 60;

/// Counts failed sign-ins per client address and per username; past the limit, further
/// attempts are refused (429) until the window passes, without checking the secret.
/// The counts live in the metadata database, so with several nodes the limit holds
/// for the installation, not for each node. A database error neither blocks nor
/// records anything (it is logged): the sign-in itself needs the database anyway.
#[derive(Default)]
pub struct LoginLimiter;

impl LoginLimiter {
    fn keys(ip: &str, username: &str) -> [String; 2] {
        [
            format!("ip:{ip}"),
            format!("user:{}", username.to_ascii_lowercase()),
        ]
    }

    /// Seconds to wait, if either key is over the limit (`now` in Unix seconds).
    pub async fn blocked(
        &self,
        meta: &dyn Meta,
        ip: &str,
        username: &str,
        now: i64,
    ) -> Option<u64> {
        let mut wait = None;
        for key in Self::keys(ip, username) {
            let recent = match meta.login_failures(&key, now - WINDOW_SECS).await {
                Ok(times) => times,
                Err(e) => {
                    tracing::warn!(error = %e, "reading failed sign-ins");
                    continue;
                }
            };
            if recent.len() >= MAX_FAILURES {
                let oldest = recent.iter().copied().min().unwrap_or(now);
                wait = wait.max(Some((oldest + WINDOW_SECS - now).max(1) as u64));
            }
        }
        wait
    }

    pub async fn failed(&self, meta: &dyn Meta, ip: &str, username: &str, now: i64) {
        let keys = Self::keys(ip, username);
        if let Err(e) = meta
            .record_login_failure(&keys, now, now - WINDOW_SECS)
            .await
        {
            tracing::warn!(error = %e, "recording a failed sign-in");
        }
    }
}

/// What guards sign-ins: the failed-attempt limiter and the password checker.
#[derive(Default)]
pub struct LoginGuard {
    pub limiter: LoginLimiter,
    pub passwords: secrets::PasswordChecker,
}

/// Check a username and secret the way GitLab's `/jwt/auth` does: a CI job token
/// (username `gitlab-ci-token`), then a personal access token (any username), then a
/// deploy token (its username), then the user's password.
pub async fn authenticate(
    meta: &dyn Meta,
    guard: &LoginGuard,
    ip: &str,
    username: &str,
    secret: &str,
) -> Result<Principal, AuthError> {
    let now = now_ms();
    let now_s = now / 1000;
    if let Some(wait) = guard.limiter.blocked(meta, ip, username, now_s).await {
        return Err(AuthError::RateLimited(wait));
    }
    match check(meta, &guard.passwords, username, secret, now).await? {
        Some(p) => Ok(p),
        None => {
            guard.limiter.failed(meta, ip, username, now_s).await;
            tracing::warn!(%ip, username, "failed sign-in");
            Err(AuthError::Invalid)
        }
    }
}

fn active(u: &User) -> bool {
    u.state == UserState::Active
}

/// The running job whose token has this digest.
async fn job_principal(
    meta: &dyn Meta,
    digest: &str,
    now: i64,
) -> Result<Option<Principal>, berth_meta::MetaError> {
    let Some(job) = meta.job_by_digest(digest).await? else {
        return Ok(None);
    };
    if job.status != JobStatus::Running || job.expires_at <= now {
        return Ok(None);
    }
    Ok(match meta.user(job.user_id).await? {
        Some(user) if active(&user) => Some(Principal::Job { job, user }),
        _ => None,
    })
}

/// `Some(None)`: a personal access token with this digest exists but is unusable.
async fn personal_token_principal(
    meta: &dyn Meta,
    digest: &str,
    now: i64,
) -> Result<Option<Option<Principal>>, berth_meta::MetaError> {
    let Some(t) = meta.personal_token_by_digest(digest).await? else {
        return Ok(None);
    };
    if t.revoked || date_expired(t.expires_at.as_deref(), &today()) {
        return Ok(Some(None));
    }
    Ok(Some(match meta.user(t.user_id).await? {
        Some(user) if active(&user) => {
            // Recorded at most once a minute: a write per API call would cost every
            // request a transaction for a value nobody needs to the millisecond.
            if t.last_used_at.is_none_or(|at| now - at > 60_000) {
                meta.touch_personal_token(t.id, now).await?;
            }
            Some(Principal::User {
                user,
                via: Via::PersonalToken(t),
            })
        }
        _ => None,
    }))
}

async fn check(
    meta: &dyn Meta,
    passwords: &secrets::PasswordChecker,
    username: &str,
    secret: &str,
    now: i64,
) -> Result<Option<Principal>, berth_meta::MetaError> {
    let digest = secrets::digest(secret);
    if username == "gitlab-ci-token" {
        return job_principal(meta, &digest, now).await;
    }
    if let Some(p) = personal_token_principal(meta, &digest, now).await? {
        return Ok(p);
    }
    if let Some(t) = meta.deploy_token_by_digest(&digest).await? {
        let expired = t.expires_at.is_some_and(|e| e <= now);
        return Ok(
            (t.username == username && !t.revoked && !expired).then_some(Principal::Deploy(t))
        );
    }
    // A job's CI_DEPLOY_PASSWORD acts as its deploy token while the job runs.
    if let Some((job, token_id)) = meta.job_deploy_credential(&digest).await? {
        if job.status != JobStatus::Running || job.expires_at <= now {
            return Ok(None);
        }
        return Ok(match meta.deploy_token(token_id).await? {
            Some(t)
                if t.username == username && !t.revoked && t.expires_at.is_none_or(|e| e > now) =>
            {
                Some(Principal::Deploy(t))
            }
            _ => None,
        });
    }
    let Some(user) = meta.user_by_username(username).await? else {
        // Same work as a real check, so timing does not reveal which usernames exist.
        passwords.verify(secret, secrets::DUMMY_HASH, now).await;
        return Ok(None);
    };
    let ok = match &user.password_hash {
        Some(hash) => passwords.verify(secret, hash, now).await,
        None => false,
    };
    Ok((ok && active(&user)).then_some(Principal::User {
        user,
        via: Via::Password,
    }))
}

/// A principal from an API token header (`PRIVATE-TOKEN`, `Authorization: Bearer`,
/// `JOB-TOKEN`): personal access tokens and job tokens.
pub async fn from_api_token(
    meta: &dyn Meta,
    token: &str,
    job: bool,
) -> Result<Option<Principal>, berth_meta::MetaError> {
    let digest = secrets::digest(token);
    let now = now_ms();
    if job {
        return job_principal(meta, &digest, now).await;
    }
    Ok(personal_token_principal(meta, &digest, now)
        .await?
        .flatten())
}

/// Group-level role of a signed-in user (for the REST API's group permissions).
pub async fn group_role(
    meta: &dyn Meta,
    principal: &Principal,
    namespace_id: i64,
) -> Result<Option<AccessLevel>, berth_meta::MetaError> {
    match principal.user() {
        Some(u) if u.admin => Ok(Some(AccessLevel::Owner)),
        Some(u) => meta.group_role(u.id, namespace_id, &today()).await,
        None => Ok(None),
    }
}

pub fn source_label(s: Source) -> &'static str {
    match s {
        Source::Namespace(_) => "group",
        Source::Project(_) => "project",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limiter_blocks_after_repeated_failures() {
        let dir = tempfile::tempdir().unwrap();
        let meta = berth_meta::SqliteMeta::open(&dir.path().join("m.db"))
            .await
            .unwrap();
        let l = LoginLimiter;
        for i in 0..MAX_FAILURES {
            assert!(
                l.blocked(&meta, "1.2.3.4", "bob", 100).await.is_none(),
                "attempt {i}"
            );
            l.failed(&meta, "1.2.3.4", "bob", 100).await;
        }
        assert!(l.blocked(&meta, "1.2.3.4", "bob", 100).await.is_some());
        // Another address is blocked too when it targets the same user...
        assert!(l.blocked(&meta, "5.6.7.8", "Bob", 100).await.is_some());
        // ...but not for other users.
        assert!(l.blocked(&meta, "5.6.7.8", "carol", 100).await.is_none());
        // The window passes.
        assert!(l
            .blocked(&meta, "1.2.3.4", "bob", 100 + WINDOW_SECS)
            .await
            .is_none());
        // Old failures are forgotten as new ones come.
        l.failed(&meta, "9.9.9.9", "dave", 101 + WINDOW_SECS).await;
        use berth_meta::InstanceMeta;
        assert!(meta.login_failures("user:bob", 0).await.unwrap().is_empty());
    }

    #[test]
    fn day_expiry() {
        assert!(!date_expired(None, "2026-01-01"));
        assert!(date_expired(Some("2026-01-01"), "2026-01-01"));
        assert!(!date_expired(Some("2026-01-02"), "2026-01-01"));
    }
}
