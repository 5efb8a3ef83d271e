//! Organisation operations shared by the REST API and the `berth admin` commands:
//! input validation, secret generation, and the metadata calls, so both front ends
//! behave the same and neither repeats the rules.

use std::time::Duration;

use berth_core::paths::path_segment_problem;
use berth_core::{RegistryAccess, Visibility};
use berth_meta::{
    CiJob, DeployToken, Meta, MetaError, Namespace, NamespaceKind, NewDeployToken, NewGroup,
    NewPersonalToken, NewProject, NewUser, PersonalToken, Project, Source, User,
};

use crate::auth::secrets;
use crate::state::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// Bad input; the text says which field and why.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("metadata error: {0}")]
    Meta(MetaError),
}

impl From<MetaError> for OrgError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Conflict(m) => OrgError::Conflict(m),
            MetaError::NotFound(m) => OrgError::NotFound(m),
            other => OrgError::Meta(other),
        }
    }
}

pub type OrgResult<T> = Result<T, OrgError>;

/// Scopes a personal access token may carry (GitLab's names). Only the registry ones
/// change what the token can do here; the rest are kept so scripts written for
/// GitLab work unchanged.
pub const PAT_SCOPES: &[&str] = &[
    "api",
    "read_api",
    "read_user",
    "read_registry",
    "write_registry",
    "read_repository",
    "write_repository",
    "create_runner",
    "manage_runner",
    "k8s_proxy",
    "self_rotate",
    "read_virtual_registry",
    "write_virtual_registry",
    "read_observability",
    "write_observability",
    "ai_features",
    "sudo",
    "admin_mode",
    "read_service_ping",
];

pub const DEPLOY_SCOPES: &[&str] = &[
    "read_repository",
    "read_registry",
    "write_registry",
    "read_package_registry",
    "write_package_registry",
    "read_virtual_registry",
    "write_virtual_registry",
];

/// Refuse a group or project path that breaks the path rules, naming `field`.
pub fn check_path(field: &str, path: &str) -> OrgResult<()> {
    match path_segment_problem(path) {
        Some(p) => Err(OrgError::Invalid(format!("{field}: {p}"))),
        None => Ok(()),
    }
}

fn check_scopes(scopes: &[String], allowed: &[&str]) -> OrgResult<Vec<String>> {
    if scopes.is_empty() {
        return Err(OrgError::Invalid("scopes is missing".into()));
    }
    let mut out = Vec::new();
    for s in scopes {
        let s = s.trim();
        if !allowed.contains(&s) {
            return Err(OrgError::Invalid(format!(
                "scopes: {s:?} is not one of {}",
                allowed.join(", ")
            )));
        }
        if !out.iter().any(|x| x == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

/// `YYYY-MM-DD` (a calendar date), or the error naming `field`.
pub fn check_date(field: &str, date: &str) -> OrgResult<String> {
    let bad = || {
        OrgError::Invalid(format!(
            "{field}: {date:?} is not a date of the form YYYY-MM-DD"
        ))
    };
    let d = date.get(..10).unwrap_or(date);
    let parts: Vec<&str> = d.split('-').collect();
    // Digits only: `u32::from_str` would also take a sign ("+202-01-01").
    let digits = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() != 3 || !digits(parts[0], 4) || !digits(parts[1], 2) || !digits(parts[2], 2) {
        return Err(bad());
    }
    let y: u32 = parts[0].parse().map_err(|_| bad())?;
    let m: u32 = parts[1].parse().map_err(|_| bad())?;
    let day: u32 = parts[2].parse().map_err(|_| bad())?;
    // `is_multiple_of` is newer than the workspace's minimum Rust (1.85).
    #[allow(clippy::manual_is_multiple_of)]
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || day == 0 || day > days[(m - 1) as usize] {
        return Err(bad());
    }
    Ok(d.to_string())
}

pub async fn create_user(
    meta: &dyn Meta,
    username: &str,
    name: &str,
    email: Option<String>,
    password: Option<&str>,
    admin: bool,
) -> OrgResult<User> {
    check_path("username", username)?;
    if let Some(p) = password {
        if p.len() < 8 {
            return Err(OrgError::Invalid(
                "password is too short (minimum is 8 characters)".into(),
            ));
        }
    }
    let password_hash = match password {
        Some(p) => Some(secrets::hash_password(p).map_err(OrgError::Invalid)?),
        None => None,
    };
    let name = if name.is_empty() { username } else { name };
    Ok(meta
        .create_user(
            &NewUser {
                username: username.to_string(),
                name: name.to_string(),
                email,
                password_hash,
                admin,
            },
            now_ms(),
        )
        .await?)
}

pub async fn create_group(
    meta: &dyn Meta,
    name: &str,
    path: &str,
    parent_id: Option<i64>,
    visibility: Visibility,
    description: &str,
) -> OrgResult<Namespace> {
    check_path("path", path)?;
    if name.trim().is_empty() {
        return Err(OrgError::Invalid("name can't be blank".into()));
    }
    Ok(meta
        .create_group(
            &NewGroup {
                name: name.to_string(),
                path: path.to_string(),
                parent_id,
                visibility,
                description: description.to_string(),
            },
            now_ms(),
        )
        .await?)
}

/// The group at `full_path`, creating it and any missing ancestors (like `mkdir -p`).
pub async fn ensure_group(
    meta: &dyn Meta,
    full_path: &str,
    visibility: Visibility,
) -> OrgResult<Namespace> {
    let mut parent: Option<Namespace> = None;
    let mut so_far = String::new();
    for segment in full_path.split('/') {
        if !so_far.is_empty() {
            so_far.push('/');
        }
        so_far.push_str(segment);
        let existing = meta.namespace_by_path(&so_far).await?;
        let ns = match existing {
            Some(ns) => ns,
            None => {
                create_group(
                    meta,
                    segment,
                    segment,
                    parent.as_ref().map(|p| p.id),
                    visibility,
                    "",
                )
                .await?
            }
        };
        parent = Some(ns);
    }
    parent.ok_or_else(|| OrgError::Invalid("group path is empty".into()))
}

pub async fn create_project(
    meta: &dyn Meta,
    namespace_id: i64,
    name: &str,
    path: &str,
    visibility: Visibility,
    registry_access: RegistryAccess,
    creator_id: Option<i64>,
) -> OrgResult<Project> {
    check_path("path", path)?;
    let name = if name.trim().is_empty() { path } else { name };
    Ok(meta
        .create_project(
            &NewProject {
                namespace_id,
                name: name.to_string(),
                path: path.to_string(),
                description: String::new(),
                visibility,
                registry_access,
                creator_id,
            },
            now_ms(),
        )
        .await?)
}

/// A namespace (group or user) by full path.
pub async fn namespace(meta: &dyn Meta, full_path: &str) -> OrgResult<Namespace> {
    meta.namespace_by_path(full_path)
        .await?
        .ok_or_else(|| OrgError::NotFound(format!("Namespace {full_path} not found")))
}

pub async fn create_personal_token(
    meta: &dyn Meta,
    user_id: i64,
    name: &str,
    scopes: &[String],
    expires_at: Option<&str>,
    description: &str,
) -> OrgResult<(PersonalToken, String)> {
    if name.trim().is_empty() {
        return Err(OrgError::Invalid("name is missing".into()));
    }
    let scopes = check_scopes(scopes, PAT_SCOPES)?;
    let expires_at = expires_at
        .map(|d| check_date("expires_at", d))
        .transpose()?;
    let secret = secrets::generate(secrets::PAT_PREFIX);
    let token = meta
        .create_personal_token(
            &NewPersonalToken {
                user_id,
                name: name.to_string(),
                description: description.to_string(),
                scopes,
                expires_at,
                digest: secrets::digest(&secret),
            },
            now_ms(),
        )
        .await?;
    Ok((token, secret))
}

pub async fn create_deploy_token(
    meta: &dyn Meta,
    source: Source,
    name: &str,
    username: Option<&str>,
    scopes: &[String],
    expires_at_ms: Option<i64>,
) -> OrgResult<(DeployToken, String)> {
    if name.trim().is_empty() {
        return Err(OrgError::Invalid("name is missing".into()));
    }
    let scopes = check_scopes(scopes, DEPLOY_SCOPES)?;
    let secret = secrets::generate(secrets::DEPLOY_PREFIX);
    let token = meta
        .create_deploy_token(
            &NewDeployToken {
                source,
                name: name.to_string(),
                username: username.filter(|u| !u.is_empty()).map(str::to_string),
                scopes,
                expires_at: expires_at_ms,
                digest: secrets::digest(&secret),
            },
            now_ms(),
        )
        .await?;
    Ok((token, secret))
}

/// Mint credentials for one CI job of `project`, running as `user`, valid until the
/// job is finished or `timeout` passes.
pub async fn mint_job(
    meta: &dyn Meta,
    project: &Project,
    user: &User,
    timeout: Duration,
) -> OrgResult<(CiJob, String)> {
    let secret = secrets::generate(secrets::JOB_PREFIX);
    let now = now_ms();
    let job = meta
        .create_job(
            project.id,
            user.id,
            &secrets::digest(&secret),
            now + timeout.as_millis() as i64,
            now,
        )
        .await?;
    Ok((job, secret))
}

/// A secret that acts as deploy token `token` for as long as `job` runs (a job's
/// `CI_DEPLOY_PASSWORD`).
pub async fn mint_job_deploy_secret(
    meta: &dyn Meta,
    job: &CiJob,
    token: &DeployToken,
) -> OrgResult<String> {
    let secret = secrets::generate(secrets::DEPLOY_PREFIX);
    meta.set_job_deploy_credential(job.id, token.id, &secrets::digest(&secret))
        .await?;
    Ok(secret)
}

/// The owner a job runs as when none is named: the project's creator, else the
/// owner of its user namespace.
pub async fn default_job_user(meta: &dyn Meta, project: &Project) -> OrgResult<Option<User>> {
    if let Some(id) = project.creator_id {
        if let Some(u) = meta.user(id).await? {
            return Ok(Some(u));
        }
    }
    match meta.namespace(project.namespace_id).await? {
        Some(ns) if ns.kind == NamespaceKind::User => match ns.owner_id {
            Some(id) => Ok(meta.user(id).await?),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(check_date("x", "2026-02-28").unwrap(), "2026-02-28");
        assert_eq!(
            check_date("x", "2028-02-29T00:00:00Z").unwrap(),
            "2028-02-29"
        );
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "26-01-01",
            "tomorrow",
            "2026-1-01",
            "+202-01-01",
            "2026-+1-01",
            "2026-01-+1",
        ] {
            assert!(check_date("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes() {
        let ok = check_scopes(
            &["api".into(), "api".into(), "read_registry".into()],
            PAT_SCOPES,
        )
        .unwrap();
        assert_eq!(ok, vec!["api", "read_registry"]);
        assert!(check_scopes(&[], PAT_SCOPES).is_err());
        assert!(check_scopes(&["api".into()], DEPLOY_SCOPES).is_err());
    }
}
