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

/// Who a principal is, as tag history records it: the token kind (GitLab's
/// `auth_type`, `user` for a password), the user's id and name (a deploy token's).
pub fn actor_of(p: &Principal) -> berth_meta::Actor {
    use berth_meta::Actor;
    match p {
        Principal::Anonymous => Actor::system("anonymous"),
        Principal::User { user, via } => Actor::new(
            match via {
                Via::Password => "user",
                Via::PersonalToken(_) => "personal_access_token",
            },
            Some(user.id),
            Some(&user.username),
        ),
        Principal::Deploy(t) => Actor::new("deploy_token", Some(t.id), Some(&t.username)),
        Principal::Job { user, .. } => Actor::new("build", Some(user.id), Some(&user.username)),
    }
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

impl Principal {
    /// Who this is, for the log: kind and ids, never a secret.
    pub fn describe(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User {
                user,
                via: Via::Password,
            } => format!("user {} (id {}) by password", user.username, user.id),
            Principal::User {
                user,
                via: Via::PersonalToken(t),
            } => format!(
                "user {} (id {}) by personal access token {}",
                user.username, user.id, t.id
            ),
            Principal::Deploy(t) => format!("deploy token {} ({})", t.id, t.username),
            Principal::Job { job, user } => format!(
                "CI job {} of project {} as user {} (id {})",
                job.id, job.project_id, user.username, user.id
            ),
        }
    }
}

/// Name the caller on the current request's log lines (the `principal` field of
/// the request span), so a refusal logged later says for whom.
pub fn note_caller(p: &Principal) {
    tracing::Span::current().record("principal", p.describe());
}

/// Today's date (UTC) as `YYYY-MM-DD`, for expiry dates.
pub fn today() -> String {
    let now = std::time::SystemTime::now();
    humantime::format_rfc3339_seconds(now).to_string()[..10].to_string()
}

pub(crate) fn parse_scopes(list: &[String]) -> Vec<Scope> {
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
    let role = match role_holder(principal) {
        Some(user_id) => meta.project_role(user_id, project.id, &today()).await?,
        None => None,
    };
    credential_with(meta, principal, project, role).await
}

/// The principal's roles in many projects at once (one query per few hundred
/// projects instead of one per project, for lists over a group's or the instance's
/// projects), keyed by project id; see [`credential_with`].
pub async fn project_roles_for(
    meta: &dyn Meta,
    principal: &Principal,
    project_ids: &[i64],
) -> Result<std::collections::HashMap<i64, AccessLevel>, berth_meta::MetaError> {
    match role_holder(principal) {
        Some(user_id) => meta.project_roles(user_id, project_ids, &today()).await,
        None => Ok(std::collections::HashMap::new()),
    }
}

/// The user whose project role a principal's credential carries.
fn role_holder(principal: &Principal) -> Option<i64> {
    principal.user().map(|u| u.id)
}

/// The credential, given the role in the project of the principal's user (`None`
/// for principals without one), as [`project_roles_for`] gives it.
pub async fn credential_with(
    meta: &dyn Meta,
    principal: &Principal,
    project: &Project,
    role: Option<AccessLevel>,
) -> Result<Credential, berth_meta::MetaError> {
    Ok(match principal {
        Principal::Anonymous => Credential::Anonymous,
        Principal::User {
            user,
            via: Via::Password,
        } => Credential::Password {
            admin: user.admin,
            role,
        },
        Principal::User {
            user,
            via: Via::PersonalToken(t),
        } => Credential::PersonalToken {
            admin: user.admin,
            role,
            scopes: parse_scopes(&t.scopes),
        },
        Principal::Deploy(t) => Credential::DeployToken {
            covers: meta.deploy_token_covers(t.source, project.id).await?,
            scopes: parse_scopes(&t.scopes),
        },
        Principal::Job { job, user } => Credential::JobToken {
            own_project: job.project_id == project.id,
            admin: user.admin,
            role,
        },
    })
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    Invalid,
    #[error("too many failed sign-in attempts; try again in {0} seconds")]
    RateLimited(u64),
    /// The password was right, but its owner must choose a new one first (an
    /// administrator set it): as GitLab, an expired password signs in nowhere but
    /// the browser's password form. Tokens keep working.
    #[error("{}", PASSWORD_EXPIRED_MESSAGE)]
    PasswordExpired,
    #[error("metadata error: {0}")]
    Meta(#[from] berth_meta::MetaError),
}

/// Why a right password is refused while its owner must change it.
pub const PASSWORD_EXPIRED_MESSAGE: &str = "Your password expired: an administrator set it, \
so sign in to the web UI and choose a new password first, or use a personal access token.";

/// Failed sign-ins allowed per client address and per username in one window.
const MAX_FAILURES: usize = 10;
const WINDOW_SECS: i64 = 60;

/// The username every CI job signs in with: shared by all jobs, so never a key of
/// its own (ten bad attempts would otherwise stop every pipeline's `docker login`).
pub const JOB_USERNAME: &str = "gitlab-ci-token";

/// Counts failed sign-ins and refuses (429) further attempts past the limit until
/// the window passes, without checking the secret. CI job logins are never limited
/// ([`authenticate`] says why). Two keys, as GitLab:
///
/// - the client's address (behind trusted proxies, the address they forwarded),
///   for every failed attempt, so one client cannot guess on and on;
/// - the username, only for password sign-ins (never for tokens):
///   it stops a password being guessed from many addresses, while the user's own
///   tokens keep working, since tokens are checked before the lock is.
///
/// The counts live in the metadata database, so with several nodes the limit holds
/// for the installation, not for each node. A database error neither blocks nor
/// records anything (it is logged): the sign-in itself needs the database anyway.
#[derive(Default)]
pub struct LoginLimiter;

impl LoginLimiter {
    fn ip_key(ip: &str) -> String {
        format!("ip:{ip}")
    }

    fn user_key(username: &str) -> String {
        format!("user:{}", username.to_ascii_lowercase())
    }

    /// Seconds to wait, if `key` is over the limit (`now` in Unix seconds).
    async fn over(&self, meta: &dyn Meta, key: &str, now: i64) -> Option<u64> {
        let recent = match meta.login_failures(key, now - WINDOW_SECS).await {
            Ok(times) => times,
            Err(e) => {
                tracing::warn!(error = %e, "reading failed sign-ins");
                return None;
            }
        };
        (recent.len() >= MAX_FAILURES).then(|| {
            let oldest = recent.iter().copied().min().unwrap_or(now);
            (oldest + WINDOW_SECS - now).max(1) as u64
        })
    }

    /// Seconds to wait before this client address may try anything again.
    pub async fn address_blocked(&self, meta: &dyn Meta, ip: &str, now: i64) -> Option<u64> {
        self.over(meta, &Self::ip_key(ip), now).await
    }

    /// Seconds to wait before anyone may try a password for `username` again.
    pub async fn password_blocked(&self, meta: &dyn Meta, username: &str, now: i64) -> Option<u64> {
        if username == JOB_USERNAME {
            return None;
        }
        self.over(meta, &Self::user_key(username), now).await
    }

    /// Count a failed attempt from `ip`; `password_for` names the user when a
    /// password was what failed.
    pub async fn failed(&self, meta: &dyn Meta, ip: &str, password_for: Option<&str>, now: i64) {
        let mut keys = vec![Self::ip_key(ip)];
        if let Some(user) = password_for.filter(|u| *u != JOB_USERNAME) {
            keys.push(Self::user_key(user));
        }
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
/// deploy token (its username), then the user's password. `ip` is the client's
/// address ([`crate::client_addr::ClientAddr`]).
pub async fn authenticate(
    meta: &dyn Meta,
    guard: &LoginGuard,
    ip: &str,
    username: &str,
    secret: &str,
) -> Result<Principal, AuthError> {
    let now = now_ms();
    let now_s = now / 1000;
    // CI job logins are not limited at all (GitLab skips them too): job tokens are
    // long random secrets nobody guesses, and a runner host starts many jobs, some
    // with tokens of jobs that just ended; counting those would stop its next jobs.
    if username == JOB_USERNAME {
        return match job_principal(meta, &secrets::digest(secret), now).await? {
            Some(p) => Ok(p),
            None => {
                tracing::warn!(%ip, username, kind = "CI job token", "failed sign-in");
                Err(AuthError::Invalid)
            }
        };
    }
    if let Some(wait) = guard.limiter.address_blocked(meta, ip, now_s).await {
        tracing::warn!(%ip, username, wait, "sign-in refused: too many failed attempts from this address");
        return Err(AuthError::RateLimited(wait));
    }
    let digest = secrets::digest(secret);
    let (found, password_for) = match token_check(meta, username, &digest, now).await? {
        Some(found) => (found, None),
        None => {
            if let Some(wait) = guard.limiter.password_blocked(meta, username, now_s).await {
                tracing::warn!(%ip, username, wait, "password sign-in refused: too many failed attempts for this user");
                return Err(AuthError::RateLimited(wait));
            }
            let found = password_check(meta, &guard.passwords, username, secret, now).await?;
            (found, Some(username))
        }
    };
    match found {
        Some(Principal::User {
            user,
            via: Via::Password,
        }) if user.password_change_required => {
            tracing::info!(%ip, username, "password sign-in refused: the password must be changed in the web UI first");
            Err(AuthError::PasswordExpired)
        }
        Some(p) => Ok(p),
        None => {
            guard.limiter.failed(meta, ip, password_for, now_s).await;
            let kind = if password_for.is_some() {
                "password or token"
            } else {
                "unusable token"
            };
            tracing::warn!(%ip, username, kind, "failed sign-in");
            Err(AuthError::Invalid)
        }
    }
}

fn active(u: &User) -> bool {
    u.state == UserState::Active
}

/// Whether a principal rebuilt from an older token may still act: its user active,
/// its token not revoked or expired, its job still running.
pub fn still_valid(p: &Principal, now: i64) -> bool {
    match p {
        Principal::Anonymous => false,
        Principal::User {
            user,
            via: Via::Password,
        } => active(user) && !user.password_change_required,
        Principal::User {
            user,
            via: Via::PersonalToken(t),
        } => active(user) && !t.revoked && !date_expired(t.expires_at.as_deref(), &today()),
        Principal::Deploy(t) => !t.revoked && t.expires_at.is_none_or(|e| e > now),
        Principal::Job { job, user } => {
            active(user) && job.status == JobStatus::Running && job.expires_at > now
        }
    }
}

/// The principal a token or a refresh token stands for, rebuilt from the ids it
/// carries (`kind` as a token's `TokenUser` names it); `None` when one of
/// them is gone. Whether it may still act is [`still_valid`]'s question.
pub async fn principal_from_ids(
    meta: &dyn Meta,
    kind: &str,
    user_id: Option<i64>,
    credential_id: Option<i64>,
) -> Result<Option<Principal>, berth_meta::MetaError> {
    let user = match user_id {
        Some(id) => meta.user(id).await?,
        None => None,
    };
    Ok(match (kind, user, credential_id) {
        ("user", Some(user), _) => Some(Principal::User {
            user,
            via: Via::Password,
        }),
        ("personal_access_token", Some(user), Some(id)) => {
            let token = meta.personal_token(id).await?;
            token
                .filter(|t| t.user_id == user.id)
                .map(|t| Principal::User {
                    user,
                    via: Via::PersonalToken(t),
                })
        }
        ("deploy_token", _, Some(id)) => meta.deploy_token(id).await?.map(Principal::Deploy),
        ("build", Some(user), Some(id)) => {
            let job = meta.job(id).await?;
            job.map(|job| Principal::Job { job, user })
        }
        _ => None,
    })
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
            // A failed write (a full disk, say) must not fail the request it serves:
            // the time is a convenience, the sign-in is not.
            if t.last_used_at.is_none_or(|at| now - at > 60_000) {
                if let Err(e) = meta.touch_personal_token(t.id, now).await {
                    tracing::warn!(error = %e, token = t.id, "recording when a token was last used");
                }
            }
            Some(Principal::User {
                user,
                via: Via::PersonalToken(t),
            })
        }
        _ => None,
    }))
}

/// The principal of a token secret: `None` when the secret is no token at all (it
/// may be a password), `Some(None)` when it is one that may not be used (revoked,
/// expired, another username, a job that ended).
async fn token_check(
    meta: &dyn Meta,
    username: &str,
    digest: &str,
    now: i64,
) -> Result<Option<Option<Principal>>, berth_meta::MetaError> {
    if let Some(p) = personal_token_principal(meta, digest, now).await? {
        return Ok(Some(p));
    }
    if let Some(t) = meta.deploy_token_by_digest(digest).await? {
        let expired = t.expires_at.is_some_and(|e| e <= now);
        return Ok(Some(
            (t.username == username && !t.revoked && !expired).then_some(Principal::Deploy(t)),
        ));
    }
    // A job's CI_DEPLOY_PASSWORD acts as its deploy token while the job runs.
    if let Some((job, token_id)) = meta.job_deploy_credential(digest).await? {
        if job.status != JobStatus::Running || job.expires_at <= now {
            return Ok(Some(None));
        }
        return Ok(Some(match meta.deploy_token(token_id).await? {
            Some(t)
                if t.username == username && !t.revoked && t.expires_at.is_none_or(|e| e > now) =>
            {
                Some(Principal::Deploy(t))
            }
            _ => None,
        }));
    }
    Ok(None)
}

async fn password_check(
    meta: &dyn Meta,
    passwords: &secrets::PasswordChecker,
    username: &str,
    secret: &str,
    now: i64,
) -> Result<Option<Principal>, berth_meta::MetaError> {
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
    async fn limiter_keys_addresses_and_password_users() {
        let dir = tempfile::tempdir().unwrap();
        let meta = berth_meta::SqliteMeta::open(&dir.path().join("m.db"))
            .await
            .unwrap();
        let l = LoginLimiter;
        for i in 0..MAX_FAILURES {
            assert!(
                l.address_blocked(&meta, "1.2.3.4", 100).await.is_none(),
                "attempt {i}"
            );
            assert!(l.password_blocked(&meta, "bob", 100).await.is_none());
            l.failed(&meta, "1.2.3.4", Some("bob"), 100).await;
        }
        assert!(l.address_blocked(&meta, "1.2.3.4", 100).await.is_some());
        // Passwords for the same user are refused from elsewhere too...
        assert!(l.password_blocked(&meta, "Bob", 100).await.is_some());
        // ...but that address is free, and so are other users.
        assert!(l.address_blocked(&meta, "5.6.7.8", 100).await.is_none());
        assert!(l.password_blocked(&meta, "carol", 100).await.is_none());
        // The window passes.
        assert!(l
            .address_blocked(&meta, "1.2.3.4", 100 + WINDOW_SECS)
            .await
            .is_none());
        // Old failures are forgotten as new ones come.
        l.failed(&meta, "9.9.9.9", Some("dave"), 101 + WINDOW_SECS)
            .await;
        use berth_meta::InstanceMeta;
        assert!(meta.login_failures("user:bob", 0).await.unwrap().is_empty());

        // The CI job name and failed tokens never lock a name.
        for _ in 0..MAX_FAILURES * 2 {
            l.failed(&meta, "7.7.7.7", Some(JOB_USERNAME), 200).await;
            l.failed(&meta, "7.7.7.8", None, 200).await;
        }
        assert!(l.password_blocked(&meta, JOB_USERNAME, 200).await.is_none());
        assert!(l.address_blocked(&meta, "7.7.7.7", 200).await.is_some());
        assert!(l.address_blocked(&meta, "7.7.7.8", 200).await.is_some());
    }

    #[test]
    fn day_expiry() {
        assert!(!date_expired(None, "2026-01-01"));
        assert!(date_expired(Some("2026-01-01"), "2026-01-01"));
        assert!(!date_expired(Some("2026-01-02"), "2026-01-01"));
    }
}
