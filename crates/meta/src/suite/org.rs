//! The organisation: users, groups, projects, members, tokens, jobs, settings.

use berth_core::{AccessLevel, RegistryAccess, Visibility};
use AccessLevel::*;

use super::TestMeta;
use crate::org::*;
use crate::{MetaError, Result};

/// GitLab's `Group::NUMBER_OF_ANCESTORS_ALLOWED`.
const MAX_ANCESTORS: usize = 20;

fn all() -> Window {
    Window {
        offset: 0,
        limit: 100,
    }
}

async fn user(m: &dyn TestMeta, username: &str) -> User {
    m.create_user(
        &NewUser {
            username: username.into(),
            name: format!("{username} name"),
            email: None,
            password_hash: None,
            admin: false,
        },
        1,
    )
    .await
    .unwrap()
}

fn new_group(path: &str, parent_id: Option<i64>) -> NewGroup {
    NewGroup {
        name: path.to_uppercase(),
        path: path.into(),
        parent_id,
        visibility: Visibility::Private,
        description: String::new(),
    }
}

pub(crate) async fn group(m: &dyn TestMeta, path: &str, parent_id: Option<i64>) -> Namespace {
    m.create_group(&new_group(path, parent_id), 2)
        .await
        .unwrap()
}

fn new_project(namespace_id: i64, path: &str) -> NewProject {
    NewProject {
        namespace_id,
        name: path.to_uppercase(),
        path: path.into(),
        description: String::new(),
        visibility: Visibility::Private,
        registry_access: RegistryAccess::Enabled,
        creator_id: None,
    }
}

async fn project(m: &dyn TestMeta, namespace_id: i64, path: &str) -> Project {
    m.create_project(&new_project(namespace_id, path), 3)
        .await
        .unwrap()
}

fn conflict<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(MetaError::Conflict(msg)) => msg,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

fn not_found<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(MetaError::NotFound(msg)) => msg,
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub(crate) async fn user_gets_personal_namespace(m: &dyn TestMeta) {
    assert_eq!(m.count_users().await.unwrap(), 0);
    let u = m
        .create_user(
            &NewUser {
                username: "Alice".into(),
                name: "Alice A".into(),
                email: Some("a@example.com".into()),
                password_hash: Some("$argon2id$x".into()),
                admin: true,
            },
            7,
        )
        .await
        .unwrap();
    assert_eq!(u.username, "Alice");
    assert!(u.admin);
    assert_eq!(u.state, UserState::Active);
    assert_eq!(u.created_at, 7);
    assert_eq!(m.count_users().await.unwrap(), 1);
    assert_eq!(m.user(u.id).await.unwrap(), Some(u.clone()));
    assert_eq!(m.user(999).await.unwrap(), None);

    let ns = m.namespace(u.namespace_id).await.unwrap().unwrap();
    assert_eq!(ns.kind, NamespaceKind::User);
    assert_eq!(ns.path, "Alice");
    assert_eq!(ns.full_path, "Alice");
    assert_eq!(ns.name, "Alice A");
    assert_eq!(ns.owner_id, Some(u.id));
    assert_eq!(ns.parent_id, None);
    assert_eq!(
        m.namespace_by_path("alice").await.unwrap().map(|n| n.id),
        Some(u.namespace_id)
    );
    // A user namespace is not a group.
    assert!(m.groups(None, all()).await.unwrap().0.is_empty());
}

pub(crate) async fn username_conflicts_ignore_case(m: &dyn TestMeta) {
    let alice = user(m, "alice").await;
    assert_eq!(
        m.user_by_username("ALICE").await.unwrap().map(|u| u.id),
        Some(alice.id)
    );
    assert_eq!(m.user_by_username("bob").await.unwrap(), None);

    let dup = NewUser {
        username: "AlIcE".into(),
        name: "other".into(),
        email: None,
        password_hash: None,
        admin: false,
    };
    assert_eq!(
        conflict(m.create_user(&dup, 2).await),
        "Username has already been taken"
    );
    // A group's path is a namespace path too.
    group(m, "Ops", None).await;
    let clash = NewUser {
        username: "ops".into(),
        ..dup.clone()
    };
    assert_eq!(
        conflict(m.create_user(&clash, 2).await),
        "Username has already been taken"
    );
    // Nothing was left behind by the refused creations.
    assert_eq!(m.count_users().await.unwrap(), 1);
    assert_eq!(m.users(None, all()).await.unwrap().1, 1);
}

pub(crate) async fn update_user_changes_only_given_fields(m: &dyn TestMeta) {
    let u = m
        .create_user(
            &NewUser {
                username: "carol".into(),
                name: "Carol".into(),
                email: Some("c@example.com".into()),
                password_hash: Some("h1".into()),
                admin: false,
            },
            1,
        )
        .await
        .unwrap();
    let got = m
        .update_user(
            u.id,
            &UserUpdate {
                name: Some("Carol C".into()),
                state: Some(UserState::Blocked),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.name, "Carol C");
    assert_eq!(got.state, UserState::Blocked);
    assert!(!got.password_change_required, "off unless asked for");
    assert_eq!(got.email.as_deref(), Some("c@example.com"));
    assert_eq!(got.password_hash.as_deref(), Some("h1"));
    assert!(!got.admin);
    // The personal namespace follows the user's name.
    assert_eq!(
        m.namespace(u.namespace_id).await.unwrap().unwrap().name,
        "Carol C"
    );

    let got = m
        .update_user(
            u.id,
            &UserUpdate {
                email: Some("new@example.com".into()),
                password_hash: Some("h2".into()),
                admin: Some(true),
                state: Some(UserState::Active),
                password_change_required: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.name, "Carol C");
    assert_eq!(got.email.as_deref(), Some("new@example.com"));
    assert_eq!(got.password_hash.as_deref(), Some("h2"));
    assert!(got.admin);
    assert_eq!(got.state, UserState::Active);
    assert!(got.password_change_required);
    assert_eq!(m.user(u.id).await.unwrap(), Some(got));
    assert_eq!(
        m.update_user(999, &UserUpdate::default()).await.unwrap(),
        None
    );
}

pub(crate) async fn users_page_count_and_search(m: &dyn TestMeta) {
    for name in ["ann", "bob", "anna", "dan", "zed"] {
        user(m, name).await;
    }
    let (page, total) = m
        .users(
            None,
            Window {
                offset: 1,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 5);
    let names: Vec<_> = page.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["bob", "anna"]);
    // Past the end: an empty page, the total still right.
    let (page, total) = m
        .users(
            None,
            Window {
                offset: 10,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 5);

    // Substring of the username or the name, any case; "an" is in ann, anna, dan.
    let (page, total) = m
        .users(
            Some("AN"),
            Window {
                offset: 0,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 3);
    let names: Vec<_> = page.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["ann", "anna"]);
    let (page, _) = m.users(Some("ZED NAME"), all()).await.unwrap();
    assert_eq!(page.len(), 1);
    // LIKE wildcards in the search are literal.
    assert_eq!(m.users(Some("%"), all()).await.unwrap().1, 0);
    assert_eq!(m.users(Some("_"), all()).await.unwrap().1, 0);
}

pub(crate) async fn nested_groups_and_paths(m: &dyn TestMeta) {
    let top = group(m, "Acme", None).await;
    assert_eq!(top.full_path, "Acme");
    assert_eq!(top.kind, NamespaceKind::Group);
    assert_eq!(top.owner_id, None);
    let web = group(m, "web", Some(top.id)).await;
    assert_eq!(web.full_path, "Acme/web");
    assert_eq!(web.parent_id, Some(top.id));
    let ui = group(m, "ui", Some(web.id)).await;
    assert_eq!(ui.full_path, "Acme/web/ui");
    let api = group(m, "api", Some(top.id)).await;
    assert_eq!(m.namespace(ui.id).await.unwrap(), Some(ui.clone()));
    assert_eq!(
        m.namespace_by_path("acme/WEB/ui").await.unwrap(),
        Some(ui.clone())
    );
    assert_eq!(m.namespace_by_path("acme/nope").await.unwrap(), None);

    // Direct subgroups only, and every depth, both by full path.
    let ids = |v: Vec<Namespace>| v.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(m.subgroups(top.id).await.unwrap()), [api.id, web.id]);
    assert_eq!(
        ids(m.descendant_groups(top.id).await.unwrap()),
        [api.id, web.id, ui.id]
    );
    assert_eq!(ids(m.descendant_groups(web.id).await.unwrap()), [ui.id]);
    assert!(m.subgroups(ui.id).await.unwrap().is_empty());

    // Taken paths, whatever their case; the same path elsewhere is fine.
    assert_eq!(
        conflict(m.create_group(&new_group("WEB", Some(top.id)), 2).await),
        "Path has already been taken"
    );
    assert_eq!(
        conflict(m.create_group(&new_group("acme", None), 2).await),
        "Path has already been taken"
    );
    group(m, "web", Some(api.id)).await;
    // A project's path is taken for groups as well.
    project(m, top.id, "site").await;
    assert_eq!(
        conflict(m.create_group(&new_group("Site", Some(top.id)), 2).await),
        "Path has already been taken"
    );
    // A username is a top-level path.
    user(m, "dora").await;
    assert_eq!(
        conflict(m.create_group(&new_group("DORA", None), 2).await),
        "Path has already been taken"
    );

    // The parent must exist and be a group.
    assert_eq!(
        not_found(m.create_group(&new_group("x", Some(999)), 2).await),
        "Parent group not found"
    );
    let dora = m.user_by_username("dora").await.unwrap().unwrap();
    assert_eq!(
        not_found(
            m.create_group(&new_group("x", Some(dora.namespace_id)), 2)
                .await
        ),
        "Parent group not found"
    );
}

pub(crate) async fn group_nesting_is_limited_to_twenty_ancestors(m: &dyn TestMeta) {
    let mut parent = group(m, "g0", None).await;
    // g1 .. g20: the last has exactly 20 ancestors, which is allowed.
    for i in 1..=MAX_ANCESTORS {
        parent = group(m, &format!("g{i}"), Some(parent.id)).await;
    }
    assert_eq!(parent.full_path.split('/').count(), MAX_ANCESTORS + 1);
    let msg = conflict(m.create_group(&new_group("deep", Some(parent.id)), 2).await);
    assert!(msg.contains("20 ancestors"), "{msg}");
    // A project still fits at the deepest level.
    project(m, parent.id, "p").await;
}

pub(crate) async fn update_group_changes_only_given_fields(m: &dyn TestMeta) {
    let g = group(m, "team", None).await;
    let got = m
        .update_group(
            g.id,
            &GroupUpdate {
                visibility: Some(Visibility::Public),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.visibility, Visibility::Public);
    assert_eq!(got.name, g.name);
    let got = m
        .update_group(
            g.id,
            &GroupUpdate {
                name: Some("The Team".into()),
                description: Some("d".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.name, "The Team");
    assert_eq!(got.description, "d");
    assert_eq!(got.visibility, Visibility::Public);
    assert_eq!(got.path, "team");
    assert_eq!(m.namespace(g.id).await.unwrap(), Some(got));
    assert_eq!(
        m.update_group(999, &GroupUpdate::default()).await.unwrap(),
        None
    );
    // A user namespace is not a group to update.
    let u = user(m, "erin").await;
    assert_eq!(
        m.update_group(u.namespace_id, &GroupUpdate::default())
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn groups_page_count_and_search(m: &dyn TestMeta) {
    user(m, "infra-person").await;
    let infra = group(m, "infra", None).await;
    group(m, "apps", None).await;
    group(m, "db", Some(infra.id)).await;
    group(m, "web", None).await;
    let (page, total) = m
        .groups(
            None,
            Window {
                offset: 0,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 4);
    let paths: Vec<_> = page.iter().map(|g| g.full_path.as_str()).collect();
    assert_eq!(paths, ["infra", "apps"]);
    // By full path ("infra/db") or name, any case; never the user namespace.
    let (page, total) = m.groups(Some("INFRA"), all()).await.unwrap();
    assert_eq!(total, 2);
    let paths: Vec<_> = page.iter().map(|g| g.full_path.as_str()).collect();
    assert_eq!(paths, ["infra", "infra/db"]);
    // Names are the upper-cased paths here.
    assert_eq!(m.groups(Some("we"), all()).await.unwrap().1, 1);
}

pub(crate) async fn projects_paths_and_lookups(m: &dyn TestMeta) {
    let u = user(m, "fay").await;
    let g = group(m, "Grp", None).await;
    let sub = group(m, "sub", Some(g.id)).await;
    let subsub = group(m, "deep", Some(sub.id)).await;
    let other = group(m, "other", None).await;

    let p = m
        .create_project(
            &NewProject {
                creator_id: Some(u.id),
                registry_access: RegistryAccess::Private,
                visibility: Visibility::Internal,
                description: "desc".into(),
                ..new_project(g.id, "App")
            },
            9,
        )
        .await
        .unwrap();
    assert_eq!(p.full_path, "Grp/App");
    assert_eq!(p.creator_id, Some(u.id));
    assert_eq!(p.registry_access, RegistryAccess::Private);
    assert_eq!(p.visibility, Visibility::Internal);
    assert_eq!(p.created_at, 9);
    assert_eq!(m.project(p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(m.project(999).await.unwrap(), None);
    assert_eq!(m.project_by_path("grp/app").await.unwrap(), Some(p.clone()));
    assert_eq!(m.project_by_path("grp").await.unwrap(), None);

    let personal = project(m, u.namespace_id, "dots").await;
    assert_eq!(personal.full_path, "fay/dots");
    let in_sub = project(m, sub.id, "svc").await;
    let in_deep = project(m, subsub.id, "lib").await;
    let elsewhere = project(m, other.id, "x").await;

    // Taken paths, any case, by projects or groups.
    assert_eq!(
        conflict(m.create_project(&new_project(g.id, "APP"), 3).await),
        "Path has already been taken"
    );
    assert_eq!(
        conflict(m.create_project(&new_project(g.id, "SUB"), 3).await),
        "Path has already been taken"
    );
    assert_eq!(
        not_found(m.create_project(&new_project(999, "p"), 3).await),
        "Namespace not found"
    );

    // The first existing candidate wins (callers pass the longest first).
    let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        m.project_for_paths(&c(&["grp/app/img/x", "grp/app/img", "grp/app"]))
            .await
            .unwrap()
            .map(|p| p.id),
        Some(p.id)
    );
    assert_eq!(
        m.project_for_paths(&c(&["grp/sub/svc", "grp/sub"]))
            .await
            .unwrap()
            .map(|p| p.id),
        Some(in_sub.id)
    );
    // With two existing candidates, the caller's first.
    project(m, g.id, "a").await;
    let ab = project(m, g.id, "a-b").await;
    let two = m
        .project_for_paths(&c(&["grp/a-b", "grp/a"]))
        .await
        .unwrap();
    assert_eq!(two.map(|p| p.id), Some(ab.id));
    assert_eq!(m.project_for_paths(&c(&["nope/x"])).await.unwrap(), None);
    assert_eq!(m.project_for_paths(&[]).await.unwrap(), None);

    // Namespace listings, ordered by full path.
    let ids = |v: Vec<Project>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(m.projects_in(sub.id, false).await.unwrap()),
        [in_sub.id]
    );
    assert_eq!(
        ids(m.projects_in(sub.id, true).await.unwrap()),
        [in_deep.id, in_sub.id]
    );
    let all_g: Vec<_> = m
        .projects_in(g.id, true)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.full_path)
        .collect();
    assert_eq!(
        all_g,
        [
            "Grp/App",
            "Grp/a",
            "Grp/a-b",
            "Grp/sub/deep/lib",
            "Grp/sub/svc"
        ]
    );
    assert_eq!(m.projects_in(g.id, false).await.unwrap().len(), 3);
    assert_eq!(
        ids(m.projects_in(other.id, true).await.unwrap()),
        [elsewhere.id]
    );

    // Every project by id, optionally searched by name or path.
    let every = m.projects(None).await.unwrap();
    assert_eq!(every.len(), 7);
    assert!(every.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        ids(m.projects(Some("SUB/")).await.unwrap()),
        [in_sub.id, in_deep.id]
    );
    // Names are the upper-cased paths here.
    assert_eq!(ids(m.projects(Some("dOtS")).await.unwrap()), [personal.id]);
    assert!(m.projects(Some("zzz")).await.unwrap().is_empty());
}

pub(crate) async fn update_project_changes_only_given_fields(m: &dyn TestMeta) {
    let g = group(m, "g", None).await;
    let p = project(m, g.id, "p").await;
    let got = m
        .update_project(
            p.id,
            &ProjectUpdate {
                registry_access: Some(RegistryAccess::Disabled),
                visibility: Some(Visibility::Public),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.registry_access, RegistryAccess::Disabled);
    assert_eq!(got.visibility, Visibility::Public);
    assert_eq!(got.name, p.name);
    assert_eq!(got.description, p.description);
    let got = m
        .update_project(
            p.id,
            &ProjectUpdate {
                name: Some("New".into()),
                description: Some("about".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.name, "New");
    assert_eq!(got.description, "about");
    assert_eq!(got.registry_access, RegistryAccess::Disabled);
    assert_eq!(got.full_path, "g/p");
    assert_eq!(m.project(p.id).await.unwrap(), Some(got));
    assert_eq!(
        m.update_project(999, &ProjectUpdate::default())
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn members_upsert_list_and_remove(m: &dyn TestMeta) {
    let a = user(m, "a").await;
    let b = user(m, "b").await;
    let g = group(m, "g", None).await;
    let p = project(m, g.id, "p").await;

    m.set_member(Source::Project(p.id), b.id, Developer, None, 5)
        .await
        .unwrap();
    m.set_member(Source::Project(p.id), a.id, Guest, Some("2030-01-01"), 6)
        .await
        .unwrap();
    let list = m.members(Source::Project(p.id)).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].user, a);
    assert_eq!(list[0].access_level, Guest);
    assert_eq!(list[0].expires_at.as_deref(), Some("2030-01-01"));
    assert_eq!(list[0].source, Source::Project(p.id));
    assert_eq!(list[1].user, b);
    assert_eq!(list[1].access_level, Developer);

    // Replacing changes the level and expiry, not when membership began.
    m.set_member(Source::Project(p.id), a.id, Maintainer, None, 9)
        .await
        .unwrap();
    let list = m.members(Source::Project(p.id)).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].access_level, Maintainer);
    assert_eq!(list[0].expires_at, None);
    assert_eq!(list[0].created_at, 6);

    // Group members are separate from project members with the same id.
    m.set_member(Source::Namespace(g.id), a.id, Owner, None, 1)
        .await
        .unwrap();
    let gl = m.members(Source::Namespace(g.id)).await.unwrap();
    assert_eq!(gl.len(), 1);
    assert_eq!(gl[0].access_level, Owner);

    assert!(m.remove_member(Source::Project(p.id), a.id).await.unwrap());
    assert!(!m.remove_member(Source::Project(p.id), a.id).await.unwrap());
    assert_eq!(m.members(Source::Project(p.id)).await.unwrap().len(), 1);
    assert_eq!(m.members(Source::Namespace(g.id)).await.unwrap().len(), 1);

    // Memberships need a real project or group and a real user.
    not_found(
        m.set_member(Source::Project(999), a.id, Guest, None, 1)
            .await,
    );
    not_found(
        m.set_member(Source::Namespace(999), a.id, Guest, None, 1)
            .await,
    );
    not_found(
        m.set_member(Source::Namespace(b.namespace_id), a.id, Guest, None, 1)
            .await,
    );
    not_found(
        m.set_member(Source::Project(p.id), 999, Guest, None, 1)
            .await,
    );
}

pub(crate) async fn roles_take_the_highest_inherited_level(m: &dyn TestMeta) {
    let u = user(m, "u").await;
    let top = group(m, "top", None).await;
    let mid = group(m, "mid", Some(top.id)).await;
    let low = group(m, "low", Some(mid.id)).await;
    let p = project(m, low.id, "p").await;
    let today = "2024-06-15";

    assert_eq!(m.project_role(u.id, p.id, today).await.unwrap(), None);
    assert_eq!(m.group_role(u.id, low.id, today).await.unwrap(), None);

    // Each level of the chain counts; the highest wins wherever it sits.
    m.set_member(Source::Namespace(low.id), u.id, Guest, None, 1)
        .await
        .unwrap();
    m.set_member(Source::Namespace(top.id), u.id, Maintainer, None, 1)
        .await
        .unwrap();
    m.set_member(Source::Namespace(mid.id), u.id, Reporter, None, 1)
        .await
        .unwrap();
    m.set_member(Source::Project(p.id), u.id, Developer, None, 1)
        .await
        .unwrap();
    assert_eq!(
        m.project_role(u.id, p.id, today).await.unwrap(),
        Some(Maintainer)
    );
    assert_eq!(
        m.group_role(u.id, low.id, today).await.unwrap(),
        Some(Maintainer)
    );
    assert_eq!(
        m.group_role(u.id, top.id, today).await.unwrap(),
        Some(Maintainer)
    );

    // Without the top membership, the direct project one is the highest.
    assert!(m
        .remove_member(Source::Namespace(top.id), u.id)
        .await
        .unwrap());
    assert_eq!(
        m.project_role(u.id, p.id, today).await.unwrap(),
        Some(Developer)
    );
    assert_eq!(
        m.group_role(u.id, low.id, today).await.unwrap(),
        Some(Reporter)
    );
    // Roles flow down, never up.
    assert_eq!(m.group_role(u.id, top.id, today).await.unwrap(), None);

    // A direct project membership above every group one.
    m.set_member(Source::Project(p.id), u.id, Owner, None, 1)
        .await
        .unwrap();
    assert_eq!(
        m.project_role(u.id, p.id, today).await.unwrap(),
        Some(Owner)
    );

    // Someone else has nothing; a missing project or group gives nothing.
    let v = user(m, "v").await;
    assert_eq!(m.project_role(v.id, p.id, today).await.unwrap(), None);
    assert_eq!(m.project_role(u.id, 999, today).await.unwrap(), None);
    assert_eq!(m.group_role(u.id, 999, today).await.unwrap(), None);
}

pub(crate) async fn expired_memberships_do_not_count(m: &dyn TestMeta) {
    let u = user(m, "u").await;
    let top = group(m, "top", None).await;
    let sub = group(m, "sub", Some(top.id)).await;
    let p = project(m, sub.id, "p").await;
    let today = "2024-06-15";

    // Expires when the day begins: today's date is already expired.
    m.set_member(Source::Namespace(top.id), u.id, Owner, Some(today), 1)
        .await
        .unwrap();
    m.set_member(
        Source::Project(p.id),
        u.id,
        Maintainer,
        Some("2024-06-14"),
        1,
    )
    .await
    .unwrap();
    m.set_member(
        Source::Namespace(sub.id),
        u.id,
        Reporter,
        Some("2024-06-16"),
        1,
    )
    .await
    .unwrap();
    assert_eq!(
        m.project_role(u.id, p.id, today).await.unwrap(),
        Some(Reporter)
    );
    assert_eq!(
        m.group_role(u.id, sub.id, today).await.unwrap(),
        Some(Reporter)
    );
    assert_eq!(m.group_role(u.id, top.id, today).await.unwrap(), None);
    // The day before, all three still count.
    assert_eq!(
        m.project_role(u.id, p.id, "2024-06-13").await.unwrap(),
        Some(Owner)
    );
    // The day the last one ends, nothing is left.
    assert_eq!(
        m.project_role(u.id, p.id, "2024-06-16").await.unwrap(),
        None
    );
}

pub(crate) async fn project_roles_agree_with_project_role(m: &dyn TestMeta) {
    let u = user(m, "u").await;
    let v = user(m, "v").await;
    let top = group(m, "top", None).await;
    let mid = group(m, "mid", Some(top.id)).await;
    let other = group(m, "other", None).await;
    let p1 = project(m, top.id, "p1").await;
    let p2 = project(m, mid.id, "p2").await;
    let p3 = project(m, mid.id, "p3").await;
    let p4 = project(m, other.id, "p4").await;
    let mine = project(m, u.namespace_id, "mine").await;
    let today = "2024-06-15";
    m.set_member(Source::Namespace(mid.id), u.id, Reporter, None, 1)
        .await
        .unwrap();
    m.set_member(Source::Project(p3.id), u.id, Maintainer, None, 1)
        .await
        .unwrap();
    m.set_member(Source::Project(p1.id), u.id, Developer, Some(today), 1)
        .await
        .unwrap();
    m.set_member(Source::Namespace(top.id), v.id, Guest, None, 1)
        .await
        .unwrap();
    m.set_member(Source::Project(p2.id), v.id, Owner, None, 1)
        .await
        .unwrap();
    let ids = [p1.id, p2.id, p3.id, p4.id, mine.id, 999];
    for who in [&u, &v] {
        let batch = m.project_roles(who.id, &ids, today).await.unwrap();
        for id in ids {
            assert_eq!(
                batch.get(&id).copied(),
                m.project_role(who.id, id, today).await.unwrap(),
                "{} in project {id}",
                who.username
            );
        }
    }
    // Spot checks, so that agreeing on nothing cannot pass.
    let roles = m.project_roles(u.id, &ids, today).await.unwrap();
    assert_eq!(roles.get(&p2.id), Some(&Reporter));
    assert_eq!(roles.get(&p3.id), Some(&Maintainer));
    assert_eq!(roles.get(&mine.id), Some(&Owner));
    assert_eq!(roles.get(&p1.id), None, "expired today");
    assert!(m.project_roles(u.id, &[], today).await.unwrap().is_empty());

    let mut found: Vec<i64> = m
        .projects_by_ids(&[p4.id, 999, p2.id])
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    found.sort_unstable();
    let mut want = vec![p2.id, p4.id];
    want.sort_unstable();
    assert_eq!(found, want);
    assert!(m.projects_by_ids(&[]).await.unwrap().is_empty());
}

pub(crate) async fn user_namespace_owner_is_owner(m: &dyn TestMeta) {
    let u = user(m, "owner").await;
    let other = user(m, "other").await;
    let p = project(m, u.namespace_id, "mine").await;
    let today = "2024-01-01";
    assert_eq!(
        m.project_role(u.id, p.id, today).await.unwrap(),
        Some(Owner)
    );
    assert_eq!(
        m.group_role(u.id, u.namespace_id, today).await.unwrap(),
        Some(Owner)
    );
    assert_eq!(m.project_role(other.id, p.id, today).await.unwrap(), None);
    assert_eq!(
        m.group_role(other.id, u.namespace_id, today).await.unwrap(),
        None
    );
    m.set_member(Source::Project(p.id), other.id, Reporter, None, 1)
        .await
        .unwrap();
    assert_eq!(
        m.project_role(other.id, p.id, today).await.unwrap(),
        Some(Reporter)
    );
    // Ownership of a personal namespace reaches only its own projects.
    let g = group(m, "g", None).await;
    let gp = project(m, g.id, "p").await;
    assert_eq!(m.project_role(u.id, gp.id, today).await.unwrap(), None);
}

pub(crate) async fn personal_tokens(m: &dyn TestMeta) {
    let a = user(m, "a").await;
    let b = user(m, "b").await;
    let new = |user_id, digest: &str| NewPersonalToken {
        user_id,
        name: "ci".into(),
        description: "for ci".into(),
        scopes: vec!["read_registry".into(), "write_registry".into()],
        expires_at: Some("2030-01-01".into()),
        digest: digest.into(),
    };
    let t1 = m.create_personal_token(&new(a.id, "d1"), 10).await.unwrap();
    assert_eq!(t1.scopes, ["read_registry", "write_registry"]);
    assert_eq!(t1.expires_at.as_deref(), Some("2030-01-01"));
    assert!(!t1.revoked);
    assert_eq!(t1.created_at, 10);
    assert_eq!(t1.last_used_at, None);
    assert_eq!(m.personal_token(t1.id).await.unwrap(), Some(t1.clone()));
    assert_eq!(
        m.personal_token_by_digest("d1").await.unwrap(),
        Some(t1.clone())
    );
    assert_eq!(m.personal_token_by_digest("nope").await.unwrap(), None);

    let t2 = m
        .create_personal_token(
            &NewPersonalToken {
                scopes: vec![],
                expires_at: None,
                ..new(b.id, "d2")
            },
            11,
        )
        .await
        .unwrap();
    assert_eq!(m.personal_token(t2.id).await.unwrap(), Some(t2.clone()));
    let t3 = m.create_personal_token(&new(a.id, "d3"), 12).await.unwrap();
    let ids = |v: Vec<PersonalToken>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(m.personal_tokens(None).await.unwrap()),
        [t1.id, t2.id, t3.id]
    );
    assert_eq!(
        ids(m.personal_tokens(Some(a.id)).await.unwrap()),
        [t1.id, t3.id]
    );
    assert_eq!(ids(m.personal_tokens(Some(b.id)).await.unwrap()), [t2.id]);

    m.touch_personal_token(t1.id, 99).await.unwrap();
    assert_eq!(
        m.personal_token(t1.id).await.unwrap().unwrap().last_used_at,
        Some(99)
    );
    assert!(m.revoke_personal_token(t1.id).await.unwrap());
    assert!(!m.revoke_personal_token(t1.id).await.unwrap());
    assert!(!m.revoke_personal_token(999).await.unwrap());
    assert!(m.personal_token(t1.id).await.unwrap().unwrap().revoked);
    assert!(!m.personal_token(t3.id).await.unwrap().unwrap().revoked);

    not_found(m.create_personal_token(&new(999, "d4"), 1).await);
}

pub(crate) async fn deploy_tokens_and_coverage(m: &dyn TestMeta) {
    let top = group(m, "top", None).await;
    let sub = group(m, "sub", Some(top.id)).await;
    let subsub = group(m, "subsub", Some(sub.id)).await;
    let sibling = group(m, "sibling", None).await;
    let deep = project(m, subsub.id, "deep").await;
    let near = project(m, top.id, "near").await;
    let away = project(m, sibling.id, "away").await;

    let new = |source, digest: &str| NewDeployToken {
        source,
        name: "gitlab-deploy-token".into(),
        username: None,
        scopes: vec!["read_registry".into()],
        expires_at: Some(5000),
        digest: digest.into(),
    };
    let gt = m
        .create_deploy_token(&new(Source::Namespace(top.id), "g1"), 10)
        .await
        .unwrap();
    assert_eq!(gt.username, format!("gitlab+deploy-token-{}", gt.id));
    assert_eq!(gt.source, Source::Namespace(top.id));
    assert_eq!(gt.expires_at, Some(5000));
    assert_eq!(gt.scopes, ["read_registry"]);
    assert!(!gt.revoked);
    assert_eq!(m.deploy_token(gt.id).await.unwrap(), Some(gt.clone()));
    assert_eq!(
        m.deploy_token_by_digest("g1").await.unwrap(),
        Some(gt.clone())
    );
    assert_eq!(m.deploy_token_by_digest("zz").await.unwrap(), None);

    let pt = m
        .create_deploy_token(
            &NewDeployToken {
                username: Some("robot".into()),
                expires_at: None,
                ..new(Source::Project(deep.id), "p1")
            },
            11,
        )
        .await
        .unwrap();
    assert_eq!(pt.username, "robot");
    assert_eq!(m.deploy_token(pt.id).await.unwrap(), Some(pt.clone()));
    let st = m
        .create_deploy_token(&new(Source::Namespace(subsub.id), "s1"), 12)
        .await
        .unwrap();

    let ids = |v: Vec<DeployToken>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(m.deploy_tokens(None).await.unwrap()),
        [gt.id, pt.id, st.id]
    );
    assert_eq!(
        ids(m
            .deploy_tokens(Some(Source::Namespace(top.id)))
            .await
            .unwrap()),
        [gt.id]
    );
    assert_eq!(
        ids(m
            .deploy_tokens(Some(Source::Project(deep.id)))
            .await
            .unwrap()),
        [pt.id]
    );
    // A project and a namespace with the same id are different sources.
    assert!(m
        .deploy_tokens(Some(Source::Project(top.id)))
        .await
        .unwrap()
        .iter()
        .all(|t| t.source == Source::Project(top.id)));

    // A group token reaches every project below it, at any depth, and no further.
    let covers = |s, p| m.deploy_token_covers(s, p);
    assert!(covers(Source::Namespace(top.id), deep.id).await.unwrap());
    assert!(covers(Source::Namespace(top.id), near.id).await.unwrap());
    assert!(!covers(Source::Namespace(top.id), away.id).await.unwrap());
    assert!(covers(Source::Namespace(subsub.id), deep.id).await.unwrap());
    assert!(!covers(Source::Namespace(subsub.id), near.id).await.unwrap());
    assert!(!covers(Source::Namespace(sibling.id), deep.id)
        .await
        .unwrap());
    assert!(!covers(Source::Namespace(top.id), 999).await.unwrap());
    // A project token reaches its project only.
    assert!(covers(Source::Project(deep.id), deep.id).await.unwrap());
    assert!(!covers(Source::Project(deep.id), near.id).await.unwrap());

    assert!(m.revoke_deploy_token(gt.id).await.unwrap());
    assert!(!m.revoke_deploy_token(gt.id).await.unwrap());
    assert!(m.deploy_token(gt.id).await.unwrap().unwrap().revoked);
    assert!(!m.deploy_token(pt.id).await.unwrap().unwrap().revoked);

    // The source must exist, and a namespace source must be a group.
    not_found(
        m.create_deploy_token(&new(Source::Project(999), "x1"), 1)
            .await,
    );
    not_found(
        m.create_deploy_token(&new(Source::Namespace(999), "x2"), 1)
            .await,
    );
    let u = user(m, "u").await;
    not_found(
        m.create_deploy_token(&new(Source::Namespace(u.namespace_id), "x3"), 1)
            .await,
    );
    assert_eq!(m.deploy_tokens(None).await.unwrap().len(), 3);
}

pub(crate) async fn jobs_run_then_finish(m: &dyn TestMeta) {
    let u = user(m, "u").await;
    let g = group(m, "g", None).await;
    let p = project(m, g.id, "p").await;
    let j = m.create_job(p.id, u.id, "jd", 5000, 10).await.unwrap();
    assert_eq!(j.status, JobStatus::Running);
    assert_eq!(j.project_id, p.id);
    assert_eq!(j.user_id, u.id);
    assert_eq!(j.expires_at, 5000);
    assert_eq!(j.created_at, 10);
    assert_eq!(m.job(j.id).await.unwrap(), Some(j.clone()));
    assert_eq!(m.job_by_digest("jd").await.unwrap(), Some(j.clone()));
    assert_eq!(m.job_by_digest("nope").await.unwrap(), None);
    assert!(m.finish_job(j.id, 20).await.unwrap());
    assert!(!m.finish_job(j.id, 21).await.unwrap());
    assert!(!m.finish_job(999, 21).await.unwrap());
    assert_eq!(
        m.job(j.id).await.unwrap().unwrap().status,
        JobStatus::Finished
    );
    not_found(m.create_job(999, u.id, "x", 1, 1).await);
    not_found(m.create_job(p.id, 999, "y", 1, 1).await);
}

pub(crate) async fn settings_upsert(m: &dyn TestMeta) {
    assert_eq!(m.setting("jwt_ttl").await.unwrap(), None);
    m.set_setting("jwt_ttl", "300").await.unwrap();
    assert_eq!(m.setting("jwt_ttl").await.unwrap().as_deref(), Some("300"));
    m.set_setting("jwt_ttl", "600").await.unwrap();
    assert_eq!(m.setting("jwt_ttl").await.unwrap().as_deref(), Some("600"));
    assert_eq!(m.setting("other").await.unwrap(), None);
}
