//! The API's entities rendered for one request, as the typed shapes of `schemas`
//! (GitLab's field names and order): absolute URLs use the request's external base
//! URL, and names of namespaces above a group or project are looked up once per
//! request.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use super::{schemas, ApiError, ApiResult, Caller};
use crate::state::{now_ms, Shared};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use berth_core::AccessLevel;
use berth_meta::{
    DeployToken, Member, Namespace, NamespaceKind, PersonalToken, Project, User, UserState,
};

/// ISO-8601 UTC with milliseconds, as GitLab writes times: `2019-01-10T13:38:57.391Z`.
pub fn timestamp(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// GitLab's name of an access level.
pub fn level_name(level: AccessLevel) -> &'static str {
    match level {
        AccessLevel::Guest => "Guest",
        AccessLevel::Reporter => "Reporter",
        AccessLevel::Developer => "Developer",
        AccessLevel::Maintainer => "Maintainer",
        AccessLevel::Owner => "Owner",
    }
}

pub struct View {
    state: Shared,
    /// `http(s)://host[:port]` (or the configured external URL).
    pub base: String,
    namespaces: HashMap<i64, Namespace>,
    /// The `can_create_group` application setting, read once per request when needed.
    groups_creatable: Option<bool>,
}

impl FromRequestParts<Shared> for View {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> ApiResult<Self> {
        Ok(View {
            base: state.base_url(&parts.headers),
            state: state.clone(),
            namespaces: HashMap::new(),
            groups_creatable: None,
        })
    }
}

impl View {
    /// `host[:port]` of the registry: the external URL without its scheme.
    pub fn registry_host(&self) -> String {
        let b = self.base.as_str();
        let host = b.split_once("://").map(|(_, h)| h).unwrap_or(b);
        host.trim_end_matches('/').to_string()
    }

    async fn namespace(&mut self, id: i64) -> ApiResult<Option<Namespace>> {
        if let Some(ns) = self.namespaces.get(&id) {
            return Ok(Some(ns.clone()));
        }
        let ns = self.state.meta.namespace(id).await?;
        if let Some(ns) = &ns {
            self.namespaces.insert(id, ns.clone());
        }
        Ok(ns)
    }

    /// `Top / Middle / Name`: the names of a namespace and every namespace above it.
    pub async fn full_name(&mut self, ns: &Namespace) -> ApiResult<String> {
        let mut names = vec![ns.name.clone()];
        let mut next = ns.parent_id;
        while let Some(id) = next {
            if names.len() > 64 {
                break;
            }
            match self.namespace(id).await? {
                Some(parent) => {
                    names.push(parent.name.clone());
                    next = parent.parent_id;
                }
                None => break,
            }
        }
        names.reverse();
        Ok(names.join(" / "))
    }

    pub fn namespace_web_url(&self, ns: &Namespace) -> String {
        match ns.kind {
            NamespaceKind::Group => format!("{}/groups/{}", self.base, ns.full_path),
            NamespaceKind::User => format!("{}/{}", self.base, ns.full_path),
        }
    }

    pub fn user_web_url(&self, username: &str) -> String {
        format!("{}/{}", self.base, username)
    }

    /// A user. `full` adds what only administrators and the user themself see.
    /// `can_create_group` follows the application setting of that name, which binds
    /// everyone but administrators.
    pub async fn user(&mut self, u: &User, full: bool) -> ApiResult<schemas::User> {
        let active = u.state == UserState::Active;
        let creates_groups = if full && active && !u.admin {
            match self.groups_creatable {
                Some(on) => on,
                None => {
                    let on = crate::instance::can_create_group(self.state.meta.as_ref()).await?;
                    *self.groups_creatable.insert(on)
                }
            }
        } else {
            active
        };
        let private = |v| full.then_some(v);
        Ok(schemas::User {
            id: u.id,
            username: u.username.clone(),
            name: u.name.clone(),
            state: u.state.into(),
            locked: false,
            avatar_url: None,
            web_url: self.user_web_url(&u.username),
            created_at: timestamp(u.created_at),
            email: full.then(|| u.email.clone()),
            is_admin: private(u.admin),
            bot: private(false),
            external: private(false),
            can_create_group: private(creates_groups),
            can_create_project: private(active),
            two_factor_enabled: private(false),
            namespace_id: full.then_some(u.namespace_id),
        })
    }

    /// A group (`Entities::Group`).
    pub async fn group(&mut self, g: &Namespace) -> ApiResult<schemas::Group> {
        let full_name = self.full_name(g).await?;
        Ok(schemas::Group {
            id: g.id,
            web_url: self.namespace_web_url(g),
            name: g.name.clone(),
            path: g.path.clone(),
            description: g.description.clone(),
            visibility: g.visibility.into(),
            avatar_url: None,
            full_name,
            full_path: g.full_path.clone(),
            parent_id: g.parent_id,
            created_at: timestamp(g.created_at),
            statistics: None,
        })
    }

    /// The `namespace` object inside a project.
    fn namespace_summary(&self, ns: &Namespace) -> schemas::ProjectNamespace {
        schemas::ProjectNamespace {
            id: ns.id,
            name: ns.name.clone(),
            path: ns.path.clone(),
            kind: ns.kind.into(),
            full_path: ns.full_path.clone(),
            parent_id: ns.parent_id,
            avatar_url: None,
            web_url: self.namespace_web_url(ns),
        }
    }

    /// A project (`Entities::Project`); `permissions` only for signed-in callers.
    pub async fn project(&mut self, p: &Project, caller: &Caller) -> ApiResult<schemas::Project> {
        let ns = self
            .namespace(p.namespace_id)
            .await?
            .ok_or_else(|| ApiError::internal(format!("project {} has no namespace", p.id)))?;
        let ns_full_name = self.full_name(&ns).await?;
        let namespace = self.namespace_summary(&ns);
        let created = timestamp(p.created_at);
        let policy = super::policy::current(&self.state, p).await?;
        let permissions = match caller.user() {
            Some(user) => {
                let today = crate::auth::today();
                let meta = &self.state.meta;
                let project_role = meta.project_role(user.id, p.id, &today).await?;
                let group_role = match ns.kind {
                    NamespaceKind::Group => meta.group_role(user.id, ns.id, &today).await?,
                    NamespaceKind::User => None,
                };
                let access = |l: Option<AccessLevel>| {
                    l.map(|l| schemas::ProjectAccess {
                        access_level: l.value(),
                        notification_level: 3,
                    })
                };
                Some(schemas::ProjectPermissions {
                    project_access: access(project_role),
                    group_access: access(group_role),
                })
            }
            None => None,
        };
        Ok(schemas::Project {
            id: p.id,
            description: p.description.clone(),
            name: p.name.clone(),
            name_with_namespace: format!("{ns_full_name} / {}", p.name),
            path: p.path.clone(),
            path_with_namespace: p.full_path.clone(),
            created_at: created.clone(),
            default_branch: None,
            tag_list: Vec::new(),
            topics: Vec::new(),
            web_url: format!("{}/{}", self.base, p.full_path),
            readme_url: None,
            avatar_url: None,
            last_activity_at: created,
            namespace,
            archived: false,
            visibility: p.visibility.into(),
            container_registry_enabled: p.registry_access != berth_core::RegistryAccess::Disabled,
            container_registry_access_level: p.registry_access.into(),
            container_registry_image_prefix: format!(
                "{}/{}",
                self.registry_host(),
                p.full_path.to_ascii_lowercase()
            ),
            creator_id: p.creator_id,
            container_expiration_policy: super::policy::to_schema(&policy),
            permissions,
            statistics: None,
        })
    }

    /// A member (`Entities::Member`).
    pub fn member(&self, m: &Member) -> schemas::Member {
        schemas::Member {
            id: m.user.id,
            username: m.user.username.clone(),
            name: m.user.name.clone(),
            state: m.user.state.into(),
            avatar_url: None,
            web_url: self.user_web_url(&m.user.username),
            access_level: m.access_level.value(),
            created_at: timestamp(m.created_at),
            expires_at: m.expires_at.clone(),
            membership_state: "active".to_string(),
        }
    }

    /// A personal access token; `secret` only when it was just created or rotated.
    pub fn personal_token(
        &self,
        t: &PersonalToken,
        secret: Option<&str>,
    ) -> schemas::PersonalAccessToken {
        let expired = crate::auth::date_expired(t.expires_at.as_deref(), &crate::auth::today());
        schemas::PersonalAccessToken {
            id: t.id,
            name: t.name.clone(),
            revoked: t.revoked,
            created_at: timestamp(t.created_at),
            description: t.description.clone(),
            scopes: t.scopes.clone(),
            user_id: t.user_id,
            last_used_at: t.last_used_at.map(timestamp),
            active: !t.revoked && !expired,
            expires_at: t.expires_at.clone(),
            token: secret.map(str::to_string),
        }
    }

    /// A deploy token; `secret` only when it was just created.
    pub fn deploy_token(&self, t: &DeployToken, secret: Option<&str>) -> schemas::DeployToken {
        schemas::DeployToken {
            id: t.id,
            name: t.name.clone(),
            username: t.username.clone(),
            expires_at: t.expires_at.map(timestamp),
            scopes: t.scopes.clone(),
            revoked: t.revoked,
            expired: t.expires_at.is_some_and(|e| e <= now_ms()),
            token: secret.map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds() {
        assert_eq!(timestamp(1_547_127_537_391), "2019-01-10T13:38:57.391Z");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
    }
}
