//! Who may pull through a group's dependency proxy: the token service asks here for
//! scopes on `<group>/dependency_proxy/containers/…`, which belong to a group, not
//! to a project. The rule itself is `berth_core::dependency_proxy_may_pull`.

use berth_core::{dependency_proxy_may_pull, ActionSet, Credential};
use berth_meta::{Meta, MetaError, Namespace, NamespaceKind, Source};
use serde_json::json;

use crate::auth::jwt::ResourceAccess;
use crate::auth::{parse_scopes, Principal, Via};
use crate::state::AppState;

/// What the token service grants `principal` of `requested` on the proxy path
/// `name` of group `group_path`: pull at most; `None` when nothing (no such group
/// counts as no permission, so outsiders learn nothing).
pub async fn grant(
    state: &AppState,
    principal: &Principal,
    name: &str,
    group_path: &str,
    requested: ActionSet,
) -> Result<Option<ResourceAccess>, MetaError> {
    if !requested.pull {
        return Ok(None);
    }
    let meta = state.meta.as_ref();
    let Some(group) = meta
        .namespace_by_path(group_path)
        .await?
        .filter(|n| n.kind == NamespaceKind::Group)
    else {
        return Ok(None);
    };
    let credential = credential(meta, principal, &group).await?;
    if !dependency_proxy_may_pull(&credential) {
        return Ok(None);
    }
    Ok(Some(ResourceAccess {
        kind: "repository".into(),
        name: name.to_string(),
        actions: vec!["pull".into()],
        meta: Some(json!({ "group_path": group.full_path, "group_id": group.id })),
    }))
}

/// The credential's facts for a group (see `dependency_proxy_may_pull`).
async fn credential(
    meta: &dyn Meta,
    principal: &Principal,
    group: &Namespace,
) -> Result<Credential, MetaError> {
    let today = crate::auth::today();
    Ok(match principal {
        Principal::Anonymous => Credential::Anonymous,
        Principal::User {
            user,
            via: Via::Password,
        } => Credential::Password {
            admin: user.admin,
            role: meta.group_role(user.id, group.id, &today).await?,
        },
        Principal::User {
            user,
            via: Via::PersonalToken(t),
        } => Credential::PersonalToken {
            admin: user.admin,
            role: meta.group_role(user.id, group.id, &today).await?,
            scopes: parse_scopes(&t.scopes),
        },
        Principal::Deploy(t) => Credential::DeployToken {
            covers: match t.source {
                Source::Namespace(id) => is_at_or_above(meta, id, group).await?,
                Source::Project(_) => false,
            },
            scopes: parse_scopes(&t.scopes),
        },
        Principal::Job { job, user } => {
            let project = meta.project(job.project_id).await?;
            let prefix = format!("{}/", group.full_path.to_ascii_lowercase());
            Credential::JobToken {
                own_project: project
                    .is_some_and(|p| p.full_path.to_ascii_lowercase().starts_with(&prefix)),
                admin: user.admin,
                role: meta.group_role(user.id, group.id, &today).await?,
            }
        }
    })
}

/// Whether namespace `id` is `group` or one of its ancestors.
async fn is_at_or_above(meta: &dyn Meta, id: i64, group: &Namespace) -> Result<bool, MetaError> {
    let mut at = Some(group.clone());
    // The nesting limit bounds the walk; the counter guards against a corrupt cycle.
    for _ in 0..32 {
        let Some(n) = at else {
            return Ok(false);
        };
        if n.id == id {
            return Ok(true);
        }
        at = match n.parent_id {
            Some(p) => meta.namespace(p).await?,
            None => None,
        };
    }
    Ok(false)
}
