//! A project's cleanup policy in the REST API: `container_expiration_policy` in project
//! responses and `container_expiration_policy_attributes` in `PUT /projects/:id`.

use berth_core::cleanup::{next_run_at, validate_policy_values};
use berth_meta::{ExpirationPolicy, Project};

use super::entities::timestamp;
use super::schemas::ContainerExpirationPolicy;
use super::{ApiError, ApiResult, Params};
use crate::cleanup::{default_policy, rules_of};
use crate::state::{now_ms, AppState};

/// The stored policy, or the defaults of a new project.
pub async fn current(state: &AppState, project: &Project) -> ApiResult<ExpirationPolicy> {
    Ok(state
        .meta
        .expiration_policy(project.id)
        .await?
        .unwrap_or_else(default_policy))
}

pub fn to_schema(p: &ExpirationPolicy) -> ContainerExpirationPolicy {
    ContainerExpirationPolicy {
        cadence: p.cadence.clone(),
        enabled: p.enabled,
        keep_n: p.keep_n,
        older_than: p.older_than.clone(),
        name_regex: p.name_regex.clone(),
        name_regex_delete: p.name_regex.clone(),
        name_regex_keep: p.name_regex_keep.clone(),
        next_run_at: p.next_run_at.map(timestamp),
    }
}

/// Apply `container_expiration_policy_attributes` to `policy`; refusals name the field.
pub fn apply(mut policy: ExpirationPolicy, attrs: &Params) -> ApiResult<ExpirationPolicy> {
    let was_enabled = policy.enabled;
    let old_cadence = policy.cadence.clone();
    if let Some(e) = attrs.bool("enabled")? {
        policy.enabled = e;
    }
    if let Some(c) = attrs.string("cadence")? {
        policy.cadence = c;
    }
    // Sent as `null` (python-gitlab's None) or empty, these optional fields clear.
    if attrs.given("keep_n") {
        policy.keep_n = attrs.int("keep_n")?;
    }
    if attrs.given("older_than") {
        policy.older_than = attrs.string("older_than")?.filter(|s| !s.is_empty());
    }
    if attrs.given("name_regex_keep") {
        policy.name_regex_keep = attrs.string("name_regex_keep")?.filter(|s| !s.is_empty());
    }
    // `name_regex_delete` is the newer name of `name_regex`; clients send either or
    // both (GitLab's own example sends an empty `name_regex` beside a real
    // `name_regex_delete`). The first non-empty one wins; sent but all empty is refused.
    let sent: Vec<Option<String>> = ["name_regex_delete", "name_regex"]
        .iter()
        .filter(|k| attrs.given(k))
        .map(|k| attrs.string(k))
        .collect::<ApiResult<_>>()?;
    if !sent.is_empty() {
        match sent.into_iter().flatten().find(|v| !v.is_empty()) {
            Some(v) => policy.name_regex = Some(v),
            None => {
                return Err(ApiError::validation(
                    "name_regex",
                    "can't be blank (use .* to match every tag)",
                ))
            }
        }
    }
    validate_policy_values(&policy.cadence, policy.keep_n, policy.older_than.as_deref())
        .map_err(|e| ApiError::validation(e.field, e.message))?;
    rules_of(&policy).map_err(|e| ApiError::validation(e.field, e.message))?;
    if policy.enabled
        && (!was_enabled || policy.cadence != old_cadence || policy.next_run_at.is_none())
    {
        policy.next_run_at = Some(next_run_at(&policy.cadence, now_ms()));
    }
    if !policy.enabled {
        policy.next_run_at = None;
    }
    Ok(policy)
}
