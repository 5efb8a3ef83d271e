//! Instance settings an administrator can change at run time (GitLab's application
//! settings). The configuration file gives their starting values; a value set through
//! the API is stored in the metadata database and wins, on every node.

use berth_meta::{Meta, MetaError};

use crate::cleanup::Limits;

const CLEANUP_LIMITS_KEY: &str = "cleanup_limits";

/// The cleanup limits in force: stored ones, else the configured defaults.
pub async fn cleanup_limits(meta: &dyn Meta, configured: Limits) -> Result<Limits, MetaError> {
    Ok(match meta.setting(CLEANUP_LIMITS_KEY).await? {
        Some(json) => serde_json::from_str(&json).unwrap_or(configured),
        None => configured,
    })
}

pub async fn set_cleanup_limits(meta: &dyn Meta, limits: Limits) -> Result<(), MetaError> {
    let json = serde_json::to_string(&limits).map_err(|e| MetaError::Corrupt(e.to_string()))?;
    meta.set_setting(CLEANUP_LIMITS_KEY, &json).await
}

const TOKEN_EXPIRY_KEY: &str = "token_expire_delay_minutes";

/// The longest registry token lifetime an administrator may set: a week. (A token
/// is a bearer credential; whoever holds it keeps its rights that long.)
pub const MAX_TOKEN_MINUTES: u64 = 7 * 24 * 60;

/// How long a registry token lasts: GitLab's `container_registry_token_expire_delay`
/// (whole minutes) where an administrator set it, else `token_expiry` from the
/// configuration.
pub async fn token_ttl(
    meta: &dyn Meta,
    configured: std::time::Duration,
) -> Result<std::time::Duration, MetaError> {
    Ok(match meta.setting(TOKEN_EXPIRY_KEY).await? {
        Some(m) => m
            .parse::<u64>()
            .ok()
            .filter(|m| (1..=MAX_TOKEN_MINUTES).contains(m))
            .map_or(configured, |m| std::time::Duration::from_secs(m * 60)),
        None => configured,
    })
}

pub async fn set_token_ttl_minutes(meta: &dyn Meta, minutes: u64) -> Result<(), MetaError> {
    meta.set_setting(TOKEN_EXPIRY_KEY, &minutes.to_string())
        .await
}

const CREATE_GROUP_KEY: &str = "can_create_group";

/// Whether users who are not administrators may create top-level groups (GitLab's
/// `can_create_group` application setting; on unless an administrator turned it
/// off). Subgroups follow the parent's roles either way.
pub async fn can_create_group(meta: &dyn Meta) -> Result<bool, MetaError> {
    flag(meta, CREATE_GROUP_KEY, true).await
}

pub async fn set_can_create_group(meta: &dyn Meta, on: bool) -> Result<(), MetaError> {
    set_flag(meta, CREATE_GROUP_KEY, on).await
}

const SIGNUP_KEY: &str = "signup_enabled";

/// Whether anyone may create an account at `/users/sign_up` (off unless an
/// administrator turned it on, as GitLab recommends for private instances).
pub async fn signup_enabled(meta: &dyn Meta) -> Result<bool, MetaError> {
    flag(meta, SIGNUP_KEY, false).await
}

pub async fn set_signup_enabled(meta: &dyn Meta, on: bool) -> Result<(), MetaError> {
    set_flag(meta, SIGNUP_KEY, on).await
}

/// An on/off setting stored as `true` / `false`; `default` until one is stored.
async fn flag(meta: &dyn Meta, key: &str, default: bool) -> Result<bool, MetaError> {
    Ok(match meta.setting(key).await?.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => default,
    })
}

async fn set_flag(meta: &dyn Meta, key: &str, on: bool) -> Result<(), MetaError> {
    meta.set_setting(key, if on { "true" } else { "false" })
        .await
}
