//! The sidebar of project and group pages, as GitLab's: overview, container registry,
//! members, settings. Settings links are shown to those who may use them
//! (maintainers and owners); the pages refuse everyone else anyway.

use berth_core::AccessLevel;
use berth_meta::{Namespace, Project};
use minijinja::{context, Value};

use super::Viewer;
use crate::state::Shared;

/// A project or a group, as the pages around it name it.
#[derive(Clone)]
pub enum Place {
    Project(Project),
    Group(Namespace),
}

impl Place {
    pub fn full_path(&self) -> &str {
        match self {
            Place::Project(p) => &p.full_path,
            Place::Group(g) => &g.full_path,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Place::Project(p) => &p.name,
            Place::Group(g) => &g.name,
        }
    }
}

/// The viewer's level in a place (`None`: no membership).
pub async fn level(state: &Shared, viewer: &Viewer, place: &Place) -> Option<AccessLevel> {
    match place {
        Place::Project(p) => viewer.caller.project_level(state, p).await.ok().flatten(),
        Place::Group(g) => viewer.caller.namespace_level(state, g).await.ok().flatten(),
    }
}

/// The sidebar's context; `current` names the active entry.
pub async fn context(state: &Shared, viewer: &Viewer, place: &Place, current: &str) -> Value {
    let mine = level(state, viewer, place).await;
    let maintainer = mine.is_some_and(|l| l >= AccessLevel::Maintainer);
    match place {
        Place::Project(p) => {
            let base = format!("/{}", p.full_path);
            let registry = matches!(
                crate::api::registry::registry_actions(state, &viewer.caller, p).await,
                Ok(a) if a.pull
            );
            context! {
                kind => "project",
                name => p.name.clone(),
                full_path => p.full_path.clone(),
                current => current,
                overview_url => base.clone(),
                registry_url => registry.then(|| format!("{base}/container_registry")),
                members_url => format!("{base}/-/project_members"),
                general_url => maintainer.then(|| format!("{base}/edit")),
                repository_url => maintainer.then(|| format!("{base}/-/settings/repository")),
                registry_settings_url => maintainer.then(|| format!("{base}/-/settings/packages_and_registries")),
            }
        }
        Place::Group(g) => {
            let base = format!("/groups/{}", g.full_path);
            context! {
                kind => "group",
                name => g.name.clone(),
                full_path => g.full_path.clone(),
                current => current,
                overview_url => base.clone(),
                registry_url => format!("{base}/-/container_registries"),
                members_url => format!("{base}/-/group_members"),
                general_url => maintainer.then(|| format!("{base}/-/edit")),
                repository_url => maintainer.then(|| format!("{base}/-/settings/repository")),
                registry_settings_url => Value::from(()),
            }
        }
    }
}
