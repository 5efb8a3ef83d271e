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

const SIGNUP_KEY: &str = "signup_enabled";

/// Whether anyone may create an account at `/users/sign_up` (off unless an
/// administrator turned it on, as GitLab recommends for private instances).
pub async fn signup_enabled(meta: &dyn Meta) -> Result<bool, MetaError> {
    Ok(meta.setting(SIGNUP_KEY).await?.as_deref() == Some("true"))
}

pub async fn set_signup_enabled(meta: &dyn Meta, on: bool) -> Result<(), MetaError> {
    meta.set_setting(SIGNUP_KEY, if on { "true" } else { "false" })
        .await
}
