//! The pages: home, a project's and a group's container registry, a repository's
//! tags, one tag's manifest, and the project's registry settings. Each reads what
//! the viewer may see through the REST API's own checks and deletes or saves through
//! the REST API's own functions.

use std::collections::HashMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use berth_core::protection::{Op as ProtectionOp, RuleKind, Standing};
use berth_core::{AccessLevel, ActionSet, RegistryAccess};
use berth_meta::{
    ExpirationPolicy, ManifestRef, Project, ProjectUpdate, RepoOrder, RepoQuery, RepoScope,
    RepositoryInfo, TagOrder, TagQuery, Window,
};
use minijinja::{context, Value};
use serde::Serialize;

use super::i18n::Lang;
use super::{field, policy_errors, Viewer};
use crate::api::{self, ApiError, Caller, Params};
use crate::protection::{standing, Guard};
use crate::state::{now_ms, AppState, Shared};

const PER_PAGE_CHOICES: [i64; 4] = [10, 20, 50, 100];

/// A list's state, all of it in the URL so a view can be shared and reloaded.
#[derive(Debug, Clone)]
struct ListState {
    search: String,
    sort: String,
    order: String,
    filter: String,
    page: i64,
    per_page: i64,
    notice: Option<String>,
    count: Option<i64>,
    /// Tags a bulk deletion left because protection rules keep them.
    protected: Option<i64>,
}

impl ListState {
    fn parse(query: &str, sorts: &[&str], filters: &[&str]) -> ListState {
        let mut s = ListState {
            search: String::new(),
            sort: sorts[0].to_string(),
            order: "asc".into(),
            filter: filters.first().unwrap_or(&"").to_string(),
            page: 1,
            per_page: 20,
            notice: None,
            count: None,
            protected: None,
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "search" => s.search = v.trim().chars().take(200).collect(),
                "sort" if sorts.contains(&v.as_ref()) => s.sort = v.into_owned(),
                "order" if v == "asc" || v == "desc" => s.order = v.into_owned(),
                "filter" if filters.contains(&v.as_ref()) => s.filter = v.into_owned(),
                "page" => s.page = v.parse().unwrap_or(1).clamp(1, 1_000_000),
                "per_page" => {
                    s.per_page = v
                        .parse()
                        .ok()
                        .filter(|n| PER_PAGE_CHOICES.contains(n))
                        .unwrap_or(20)
                }
                "notice" => {
                    s.notice = Some(
                        v.chars()
                            .filter(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect(),
                    )
                }
                "count" => s.count = v.parse().ok(),
                "protected" => s.protected = v.parse().ok(),
                _ => {}
            }
        }
        s
    }

    fn descending(&self) -> bool {
        self.order == "desc"
    }

    /// This state's URL at `path` with `page` instead.
    fn url(&self, path: &str, page: i64) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if !self.search.is_empty() {
            q.append_pair("search", &self.search);
        }
        q.append_pair("sort", &self.sort);
        q.append_pair("order", &self.order);
        if !self.filter.is_empty() {
            q.append_pair("filter", &self.filter);
        }
        if self.per_page != 20 {
            q.append_pair("per_page", &self.per_page.to_string());
        }
        if page > 1 {
            q.append_pair("page", &page.to_string());
        }
        format!("{path}?{}", q.finish())
    }

    fn window(&self) -> Window {
        Window {
            offset: (self.page - 1) * self.per_page,
            limit: self.per_page,
        }
    }

    fn context(&self, path: &str, total: i64) -> Value {
        let pages = ((total + self.per_page - 1) / self.per_page).max(1);
        context! {
            search => self.search.clone(),
            sort => self.sort.clone(),
            order => self.order.clone(),
            filter => self.filter.clone(),
            page => self.page,
            pages => pages,
            per_page => self.per_page,
            per_page_choices => PER_PAGE_CHOICES.to_vec(),
            total => total,
            prev_url => (self.page > 1).then(|| self.url(path, self.page - 1)),
            next_url => (self.page < pages).then(|| self.url(path, self.page + 1)),
            first_url => (self.page > 2).then(|| self.url(path, 1)),
            last_url => (self.page + 1 < pages).then(|| self.url(path, pages)),
            notice => self.notice.clone(),
            count => self.count,
            protected => self.protected,
        }
    }
}

/// `1.4 MiB`, as registries show sizes.
pub fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes.max(0) as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The last millisecond of year 9999: humantime formats no later time (it fails, and
/// `to_string` would panic), and an image config may claim any `created` time.
const LAST_FORMATTABLE_MS: i64 = 253_402_300_799_999;

/// `2026-11-27 23:19 UTC`.
pub fn when(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, LAST_FORMATTABLE_MS) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} {} UTC", &s[..10], &s[11..16])
}

fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// `host[:port]` of the registry, for image paths and commands.
pub(crate) fn registry_host(viewer: &Viewer) -> String {
    let b = viewer.base.as_str();
    b.split_once("://").map(|(_, h)| h).unwrap_or(b).to_string()
}

fn fail(viewer: &Viewer, e: ApiError) -> Response {
    viewer.error(e.status())
}

/// The project at `path` and what the viewer may do in its registry; 404 when the
/// viewer may not read the registry (disabled registries included), as GitLab.
async fn registry_project(
    state: &AppState,
    viewer: &Viewer,
    path: &str,
) -> Result<(Project, ActionSet), Response> {
    let p = api::find_project(state, &viewer.caller, path)
        .await
        .map_err(|e| fail(viewer, e))?;
    let actions = api::registry::registry_actions(state, &viewer.caller, &p)
        .await
        .map_err(|e| fail(viewer, e))?;
    if !actions.pull {
        return Err(viewer.error(StatusCode::NOT_FOUND));
    }
    Ok((p, actions))
}

/// [`registry_project`] and repository `rid` of it (404 when it is another
/// project's, unknown, or being deleted).
async fn registry_repository(
    state: &AppState,
    viewer: &Viewer,
    path: &str,
    rid: &str,
) -> Result<(Project, ActionSet, RepositoryInfo), Response> {
    let (p, actions) = registry_project(state, viewer, path).await?;
    let r = api::registry::repository_of(state, &p, rid)
        .await
        .map_err(|e| fail(viewer, e))?;
    Ok((p, actions, r))
}

async fn is_maintainer(state: &AppState, caller: &Caller, p: &Project) -> bool {
    matches!(caller.project_level(state, p).await, Ok(Some(l)) if l >= AccessLevel::Maintainer)
}

fn project_url(p: &Project) -> String {
    format!("/{}", p.full_path)
}

#[derive(Serialize)]
struct RepoRow {
    id: i64,
    name: String,
    path: String,
    location: String,
    project: String,
    tags_count: i64,
    size: String,
    created: String,
    updated: String,
    url: String,
    delete_url: Option<String>,
}

/// A row of a registry list; `sizes` holds the page's repository sizes.
fn repo_row(
    viewer: &Viewer,
    r: &RepositoryInfo,
    p: &Project,
    can_delete: bool,
    sizes: &HashMap<i64, i64>,
) -> RepoRow {
    let size = sizes.get(&r.id).copied().unwrap_or(0);
    let name = api::registry::repository_name(r, p);
    let url = format!("{}/container_registry/{}", project_url(p), r.id);
    RepoRow {
        id: r.id,
        name: if name.is_empty() {
            r.path.clone()
        } else {
            name
        },
        path: r.path.clone(),
        location: format!("{}/{}", registry_host(viewer), r.path),
        project: p.full_path.clone(),
        tags_count: r.tags_count,
        size: human_size(size),
        created: when(r.created_at),
        updated: when(r.updated_at),
        delete_url: can_delete.then(|| format!("{url}/delete")),
        url,
    }
}

/// The sizes of a page's repositories, in one query.
async fn page_sizes(
    state: &AppState,
    page: &[RepositoryInfo],
) -> Result<HashMap<i64, i64>, ApiError> {
    let ids: Vec<i64> = page.iter().map(|r| r.id).collect();
    Ok(state.meta.repository_sizes(&ids).await?)
}

/// The repositories a list state asks for: `name` orders by the name shown, which on a
/// project's page is its path (the root repository shows its whole path).
fn repo_query(s: &ListState, name: RepoOrder, count_up_to: i64) -> RepoQuery {
    RepoQuery {
        path_contains: Some(s.search.clone()).filter(|x| !x.is_empty()),
        tagged: match s.filter.as_str() {
            "tagged" => Some(true),
            "empty" => Some(false),
            _ => None,
        },
        order: match s.sort.as_str() {
            "created" => RepoOrder::Created,
            "updated" => RepoOrder::Updated,
            _ => name,
        },
        descending: s.descending(),
        window: s.window(),
        count_up_to,
    }
}

/// Whether `scope` holds any repository at all (the page shows how to push the first
/// one when not), given how many `query` found there.
async fn any_repository(
    state: &AppState,
    scope: RepoScope<'_>,
    query: &RepoQuery,
    found: i64,
) -> Result<bool, ApiError> {
    if found > 0 || (query.path_contains.is_none() && query.tagged.is_none()) {
        return Ok(found > 0);
    }
    let first = RepoQuery::by_path(
        Window {
            offset: 0,
            limit: 1,
        },
        0,
    );
    let (page, _) = state.meta.search_repositories(scope, &first).await?;
    Ok(!page.is_empty())
}

/// Groups with more projects than this show no storage total on their registry
/// page: it is a walk of every project's live manifests.
const STORAGE_PROJECTS: usize = 100;

const ALL: Window = Window {
    offset: 0,
    limit: i64::MAX,
};

pub async fn home(State(state): State<Shared>, viewer: Viewer, RawQuery(q): RawQuery) -> Response {
    let search: String = form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "search")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let term = (!search.is_empty()).then_some(search.as_str());
    let projects = match state.meta.projects(term).await {
        Ok(p) => p,
        Err(e) => return fail(&viewer, e.into()),
    };
    let mut rows = Vec::new();
    for p in projects {
        if !matches!(viewer.caller.can_read_project(&state, &p).await, Ok(true)) {
            continue;
        }
        let registry = matches!(
            api::registry::registry_actions(&state, &viewer.caller, &p).await,
            Ok(a) if a.pull
        );
        rows.push(context! {
            name => p.name.clone(),
            full_path => p.full_path.clone(),
            description => p.description.clone(),
            visibility => p.visibility.as_str(),
            registry_url => registry.then(|| format!("{}/container_registry", project_url(&p))),
        });
    }
    let groups = match state.meta.groups(term, ALL).await {
        Ok((g, _)) => g,
        Err(e) => return fail(&viewer, e.into()),
    };
    let mut group_rows = Vec::new();
    for g in groups {
        if matches!(viewer.caller.can_read_group(&state, &g).await, Ok(true)) {
            group_rows.push(context! {
                name => g.name.clone(),
                full_path => g.full_path.clone(),
                visibility => g.visibility.as_str(),
                url => format!("/groups/{}/-/container_registries", g.full_path),
            });
        }
    }
    viewer.render(
        StatusCode::OK,
        "home.html",
        context! {
            title => viewer.lang.text("home_title"),
            search => search,
            projects => rows,
            groups => group_rows,
            notice => viewer.notice(),
        },
    )
}

pub async fn project_registry(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    query: &str,
) -> Response {
    let (p, actions) = match registry_project(state, viewer, path).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let s = ListState::parse(
        query,
        &["name", "created", "updated"],
        &["all", "tagged", "empty"],
    );
    let query = repo_query(&s, RepoOrder::Path, i64::MAX);
    let (page, total) = match state
        .meta
        .search_repositories(RepoScope::Projects(&[p.id]), &query)
        .await
    {
        Ok(x) => x,
        Err(e) => return fail(viewer, e.into()),
    };
    let any = match any_repository(state, RepoScope::Projects(&[p.id]), &query, total).await {
        Ok(any) => any,
        Err(e) => return fail(viewer, e),
    };
    let sizes = match page_sizes(state, &page).await {
        Ok(x) => x,
        Err(e) => return fail(viewer, e),
    };
    let rows: Vec<RepoRow> = page
        .iter()
        .map(|r| repo_row(viewer, r, &p, actions.delete, &sizes))
        .collect();
    let here = format!("{}/container_registry", project_url(&p));
    let host = registry_host(viewer);
    let image = format!("{host}/{}", p.full_path.to_ascii_lowercase());
    let storage = match state.meta.project_registry_size(p.id).await {
        Ok(n) => n,
        Err(e) => return fail(viewer, e.into()),
    };
    let nav = super::nav::context(
        state,
        viewer,
        &super::nav::Place::Project(p.clone()),
        "registry",
    )
    .await;
    viewer.render(
        StatusCode::OK,
        "registry.html",
        context! {
            title => format!("{} · {}", viewer.lang.text("container_registry"), p.name),
            scope => "project",
            project => context! {
                name => p.name.clone(),
                full_path => p.full_path.clone(),
                url => project_url(&p),
                settings_url => is_maintainer(state, &viewer.caller, &p).await
                    .then(|| format!("{}/-/settings/packages_and_registries", project_url(&p))),
            },
            group => Value::from(()),
            list => s.context(&here, total),
            base_url => here,
            any => any,
            repositories => rows,
            cli => context! {
                login => format!(
                    "docker login {host} -u {} -p <token>",
                    viewer.user.as_ref().map(|u| u.username.as_str()).unwrap_or("<username>")
                ),
                build => format!("docker build -t {image} ."),
                push => format!("docker push {image}"),
            },
            can_push => actions.push,
            nav => nav,
            storage_total => human_size(storage),
        },
    )
}

pub async fn group_registry(state: &Shared, viewer: &Viewer, path: &str, query: &str) -> Response {
    let g = match api::find_group(state, &viewer.caller, path).await {
        Ok(g) => g,
        Err(e) => return fail(viewer, e),
    };
    let s = ListState::parse(
        query,
        &["name", "created", "updated"],
        &["all", "tagged", "empty"],
    );
    let (projects, hidden) =
        match api::registry::group_registry_projects(state, &viewer.caller, g.id).await {
            Ok(x) => x,
            Err(e) => return fail(viewer, e),
        };
    let ids: Vec<i64> = projects.keys().copied().collect();
    let path = g.full_path.to_ascii_lowercase();
    let scope = api::registry::group_scope(&path, &ids, &hidden);
    let query = repo_query(&s, RepoOrder::Name, i64::MAX);
    let (page, total) = match state.meta.search_repositories(scope, &query).await {
        Ok(x) => x,
        Err(e) => return fail(viewer, e.into()),
    };
    let any = match any_repository(state, scope, &query, total).await {
        Ok(any) => any,
        Err(e) => return fail(viewer, e),
    };
    let sizes = match page_sizes(state, &page).await {
        Ok(x) => x,
        Err(e) => return fail(viewer, e),
    };
    let rows: Vec<RepoRow> = page
        .iter()
        .filter_map(|r| {
            let (p, a) = r.project_id.and_then(|id| projects.get(&id))?;
            Some(repo_row(viewer, r, p, a.delete, &sizes))
        })
        .collect();
    let here = format!("/groups/{}/-/container_registries", g.full_path);
    // Deduplicated per project, as GitLab sums a group's registry: a walk of each
    // project's live manifests, so not for a group of more than STORAGE_PROJECTS.
    let mut storage = None;
    if ids.len() <= STORAGE_PROJECTS {
        match state.meta.project_registry_sizes(&ids).await {
            Ok(sizes) => storage = Some(sizes.values().sum::<i64>()),
            Err(e) => return fail(viewer, e.into()),
        }
    }
    let nav = super::nav::context(
        state,
        viewer,
        &super::nav::Place::Group(g.clone()),
        "registry",
    )
    .await;
    viewer.render(
        StatusCode::OK,
        "registry.html",
        context! {
            title => format!("{} · {}", viewer.lang.text("container_registry"), g.name),
            scope => "group",
            project => Value::from(()),
            group => context! { name => g.name.clone(), full_path => g.full_path.clone() },
            list => s.context(&here, total),
            base_url => here,
            any => any,
            repositories => rows,
            cli => Value::from(()),
            can_push => false,
            nav => nav,
            storage_total => storage.map(human_size),
            storage_projects => STORAGE_PROJECTS,
        },
    )
}

/// `os/arch[/variant]` of each child of an index, from its stored payload. Typed and
/// borrowed: an image manifest's payload may list tens of thousands of layers, which
/// as a serde_json::Value tree cost some 60 MB only to find it has no `manifests`.
fn platforms(payload: &[u8]) -> Vec<(String, String, i64)> {
    use std::borrow::Cow;

    #[derive(serde::Deserialize)]
    struct Index<'a> {
        #[serde(borrow, default)]
        manifests: Option<Vec<Child<'a>>>,
    }
    #[derive(serde::Deserialize)]
    struct Child<'a> {
        #[serde(borrow, default)]
        digest: Cow<'a, str>,
        #[serde(default)]
        size: i64,
        #[serde(borrow, default)]
        platform: Option<Platform<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Platform<'a> {
        #[serde(borrow, default)]
        os: Cow<'a, str>,
        #[serde(borrow, default)]
        architecture: Cow<'a, str>,
        #[serde(borrow, default)]
        variant: Option<Cow<'a, str>>,
    }

    let Ok(Index {
        manifests: Some(children),
    }) = serde_json::from_slice::<Index>(payload)
    else {
        return Vec::new();
    };
    children
        .into_iter()
        .map(|c| {
            let (os, arch, variant) = c
                .platform
                .map(|p| (p.os, p.architecture, p.variant.unwrap_or_default()))
                .unwrap_or_default();
            let mut name = format!("{os}/{arch}");
            if !variant.is_empty() {
                name = format!("{name}/{variant}");
            }
            if name == "/" {
                name = "unknown/unknown".into();
            }
            (name, c.digest.into_owned(), c.size)
        })
        .collect()
}

pub async fn repository(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    rid: &str,
    query: &str,
) -> Response {
    let started = Instant::now();
    let (p, actions, r) = match registry_repository(state, viewer, path, rid).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let s = ListState::parse(query, &["name", "created"], &[]);
    let q = TagQuery {
        name_contains: Some(s.search.clone()).filter(|x| !x.is_empty()),
        order: if s.sort == "created" {
            TagOrder::Created
        } else {
            TagOrder::Name
        },
        descending: s.descending(),
        window: s.window(),
    };
    let (tags, total) = match state.meta.search_tags(r.id, &q).await {
        Ok(x) => x,
        Err(e) => return fail(viewer, e.into()),
    };
    let host = registry_host(viewer);
    let here = format!("{}/container_registry/{}", project_url(&p), r.id);
    // Protection: a badge on protected and immutable tags, and no delete control
    // where the viewer lacks the level.
    let guard = match Guard::load(state.meta.as_ref(), &r.path).await {
        Ok(g) => g,
        Err(e) => return fail(viewer, e.into()),
    };
    let who = if guard.is_empty() {
        Standing::NOBODY
    } else {
        match standing(state.meta.as_ref(), &viewer.caller.principal, p.id).await {
            Ok(w) => w,
            Err(e) => return fail(viewer, e.into()),
        }
    };
    let may_delete = |name: &str| {
        guard
            .check(&r.path, &[(name, true)], ProtectionOp::Delete, who)
            .is_ok()
    };
    let repository_deletable = guard.is_empty()
        || match state.meta.all_tags(r.id).await {
            Ok(all) => {
                let all: Vec<(&str, bool)> = all.iter().map(|t| (t.name.as_str(), true)).collect();
                guard
                    .check(&r.path, &all, ProtectionOp::Delete, who)
                    .is_ok()
            }
            Err(e) => return fail(viewer, e.into()),
        };
    let repository_protected = guard
        .rules
        .repository(&r.path, ProtectionOp::Push)
        .is_some()
        || guard
            .rules
            .repository(&r.path, ProtectionOp::Delete)
            .is_some();
    let mut rows = Vec::with_capacity(tags.len());
    for tag in &tags {
        let multi = berth_oci::media::is_index(&tag.media_type);
        let mut plats = Vec::new();
        if multi {
            if let Ok(d) = berth_oci::Digest::parse(&tag.digest) {
                if let Ok(Some(m)) = state.meta.manifest(&r.path, ManifestRef::Digest(&d)).await {
                    plats = platforms(&m.payload)
                        .into_iter()
                        .map(|(n, _, _)| n)
                        .collect();
                }
            }
        }
        rows.push(context! {
            name => tag.name.clone(),
            location => format!("{host}/{}:{}", r.path, tag.name),
            digest => tag.digest.clone(),
            short_digest => short_digest(&tag.digest),
            size => human_size(tag.total_size),
            created => when(tag.created_at),
            pushed => when(tag.pushed_at),
            multi_arch => multi,
            platforms => plats,
            url => format!("{here}/-/tags/{}", tag.name),
            protection => match guard.rules.tag_badge(&tag.name) {
                Some(true) => "immutable",
                Some(false) => "protected",
                None => "",
            },
            can_delete => actions.push && may_delete(&tag.name),
        });
    }
    let name = api::registry::repository_name(&r, &p);
    let mut resp = viewer.render(
        StatusCode::OK,
        "repository.html",
        context! {
            title => format!("{} · {}", r.path, viewer.lang.text("container_registry")),
            project => context! {
                name => p.name.clone(),
                full_path => p.full_path.clone(),
                url => project_url(&p),
                registry_url => format!("{}/container_registry", project_url(&p)),
            },
            repository => context! {
                id => r.id,
                name => if name.is_empty() { r.path.clone() } else { name },
                path => r.path.clone(),
                location => format!("{host}/{}", r.path),
                tags_count => r.tags_count,
                created => when(r.created_at),
                url => here.clone(),
            },
            list => s.context(&here, total),
            base_url => here.clone(),
            tags => rows,
            can_delete_tag => actions.push,
            can_bulk_delete => actions.push,
            can_delete_repository => actions.delete && repository_deletable,
            repository_protected => repository_protected,
            delete_tags_url => format!("{here}/delete_tags"),
            delete_repository_url => format!("{here}/delete"),
            deleted_url => format!("{here}/deleted"),
        },
    );
    // Server time of the page, for `bench/ui_page.sh` and browsers' dev tools.
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = format!("app;dur={ms:.2}").parse() {
        resp.headers_mut().insert("server-timing", v);
    }
    resp
}

/// Bytes of an image manifest's config and layers, read typed and borrowed; `None`
/// for what is not an image manifest.
/// The config digest of an image manifest (none for an index or an unreadable payload).
fn config_digest(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Config {
        digest: String,
    }
    #[derive(serde::Deserialize)]
    struct Image {
        config: Config,
    }
    serde_json::from_slice::<Image>(payload)
        .ok()
        .map(|m| m.config.digest)
}

fn image_size(payload: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Sized {
        #[serde(default)]
        size: i64,
    }
    #[derive(serde::Deserialize)]
    struct Image {
        config: Sized,
        #[serde(default)]
        layers: Vec<Sized>,
    }
    let m: Image = serde_json::from_slice(payload).ok()?;
    Some(m.config.size + m.layers.iter().map(|l| l.size).sum::<i64>())
}

/// Layers shown on one page of a tag's page. A manifest may list tens of thousands
/// (the 4 MiB limit holds about 38,000): rendering them all made a 6.6 MB page and
/// took the server's memory from 19 MB to nearly 500 MB.
pub const LAYERS_PER_PAGE: usize = 100;

/// One layer of a stored manifest, borrowed from its payload.
#[derive(Debug, serde::Deserialize)]
struct LayerRow<'a> {
    #[serde(borrow, default, rename = "mediaType")]
    media_type: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    digest: std::borrow::Cow<'a, str>,
    #[serde(default)]
    size: i64,
}

/// One page of a manifest's layers: the rows of page `page` (1-based) and how many
/// layers there are in all.
#[derive(Debug)]
struct LayerPage<'a> {
    rows: Vec<LayerRow<'a>>,
    /// The page shown: the one asked for, or the last one when that is past the end.
    page: usize,
    /// Index of the first row among all layers.
    first: usize,
    total: usize,
}

impl LayerPage<'_> {
    fn pages(&self) -> usize {
        self.total.div_ceil(LAYERS_PER_PAGE).max(1)
    }
}

/// `?layers_page=` of a tag page: a page number from 1, anything else is page 1.
fn layers_page_param(query: &str) -> usize {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "layers_page")
        .and_then(|(_, v)| crate::registry::digits(v.trim()))
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX).max(1))
        .unwrap_or(1)
}

/// Page `page` of the layers of a stored manifest payload. Only that page's rows are
/// kept, borrowed from the payload: the rest are counted and dropped as they are
/// read, so a page costs the same for 10 layers as for 38,000. A payload that is
/// not an image manifest has no layers.
fn layer_page(payload: &[u8], page: usize) -> LayerPage<'_> {
    use serde::de::{Deserializer as _, SeqAccess, Visitor};

    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow, default)]
        layers: Option<&'a serde_json::value::RawValue>,
    }

    /// Counts every element, keeps those in `skip..skip + LAYERS_PER_PAGE`.
    struct Window {
        skip: usize,
    }
    impl<'de> Visitor<'de> for Window {
        type Value = (Vec<LayerRow<'de>>, usize);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of descriptors")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut rows = Vec::new();
            let mut total = 0;
            while let Some(row) = seq.next_element::<LayerRow<'de>>()? {
                if total >= self.skip && rows.len() < LAYERS_PER_PAGE {
                    rows.push(row);
                }
                total += 1;
            }
            Ok((rows, total))
        }
    }

    let read = |skip: usize| -> Option<(Vec<LayerRow<'_>>, usize)> {
        let top: Top = serde_json::from_slice(payload).ok()?;
        let raw = top.layers?;
        let mut de = serde_json::Deserializer::from_str(raw.get());
        de.deserialize_seq(Window { skip }).ok()
    };
    let skip = |page: usize| (page - 1).saturating_mul(LAYERS_PER_PAGE);
    let Some((rows, total)) = read(skip(page)) else {
        return LayerPage {
            rows: Vec::new(),
            page: 1,
            first: 0,
            total: 0,
        };
    };
    let last = total.div_ceil(LAYERS_PER_PAGE).max(1);
    if page <= last {
        return LayerPage {
            rows,
            page,
            first: skip(page),
            total,
        };
    }
    // Past the end (an old link, a hand-edited URL): the last page.
    let rows = read(skip(last)).map(|(rows, _)| rows).unwrap_or_default();
    LayerPage {
        rows,
        page: last,
        first: skip(last),
        total,
    }
}

/// Whether protection rules let the viewer delete tag `name` of the repository at
/// `path` (the viewer's role is only looked up when a rule exists).
async fn tag_deletable(
    state: &AppState,
    viewer: &Viewer,
    p: &Project,
    path: &str,
    name: &str,
) -> Result<bool, ApiError> {
    let guard = Guard::load(state.meta.as_ref(), path).await?;
    if !guard.matters(path, &[(name, true)], ProtectionOp::Delete) {
        return Ok(true);
    }
    let who = standing(state.meta.as_ref(), &viewer.caller.principal, p.id).await?;
    Ok(guard
        .check(path, &[(name, true)], ProtectionOp::Delete, who)
        .is_ok())
}

pub async fn tag(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    rid: &str,
    name: &str,
    query: &str,
) -> Response {
    let (p, actions, r) = match registry_repository(state, viewer, path, rid).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let tag = match state.meta.repository_tag(r.id, name).await {
        Ok(Some(t)) => t,
        Ok(None) => return viewer.error(StatusCode::NOT_FOUND),
        Err(e) => return fail(viewer, e.into()),
    };
    let Ok(digest) = berth_oci::Digest::parse(&tag.digest) else {
        return viewer.error(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let deletable = match tag_deletable(state, viewer, &p, &r.path, &tag.name).await {
        Ok(d) => actions.push && d,
        Err(e) => return fail(viewer, e),
    };
    let manifest = match state
        .meta
        .manifest(&r.path, ManifestRef::Digest(&digest))
        .await
    {
        Ok(Some(m)) => m,
        Ok(None) => return viewer.error(StatusCode::NOT_FOUND),
        Err(e) => return fail(viewer, e.into()),
    };
    let requested = layers_page_param(query);
    let page = layer_page(&manifest.payload, requested);
    let here = format!(
        "{}/container_registry/{}/-/tags/{}",
        project_url(&p),
        r.id,
        tag.name
    );
    let layer_url = |n: usize| format!("{here}?layers_page={n}#layers");
    let (first, pages, total) = (page.first, page.pages(), page.total);
    let layers: Vec<Value> = page
        .rows
        .iter()
        .map(|l| {
            context! {
                digest => l.digest.as_ref(),
                media_type => l.media_type.as_ref(),
                size => human_size(l.size),
            }
        })
        .collect();
    let layer_list = context! {
        page => page.page,
        pages => pages,
        total => total,
        from => first + 1,
        to => first + page.rows.len(),
        more => total - (first + page.rows.len()),
        prev_url => (page.page > 1).then(|| layer_url(page.page - 1)),
        next_url => (page.page < pages).then(|| layer_url(page.page + 1)),
        first_url => (page.page > 2).then(|| layer_url(1)),
        last_url => (page.page + 1 < pages).then(|| layer_url(pages)),
    };
    drop(page);
    // Each platform's image size (config and layers), not its manifest's own bytes,
    // and its details (config, layers) in a section of its own the row links to.
    let host = registry_host(viewer);
    let mut plats: Vec<Value> = Vec::new();
    for (i, (n, d, s)) in platforms(&manifest.payload).into_iter().enumerate() {
        let mut size = s;
        let mut detail = Value::from(());
        if let Ok(child) = berth_oci::Digest::parse(&d) {
            if let Ok(Some(m)) = state
                .meta
                .manifest(&r.path, ManifestRef::Digest(&child))
                .await
            {
                size = image_size(&m.payload).unwrap_or(s);
                let page = layer_page(&m.payload, 1);
                let layers: Vec<Value> = page
                    .rows
                    .iter()
                    .map(|l| {
                        context! {
                            digest => l.digest.as_ref(),
                            media_type => l.media_type.as_ref(),
                            size => human_size(l.size),
                        }
                    })
                    .collect();
                detail = context! {
                    media_type => m.media_type.clone(),
                    config => config_digest(&m.payload),
                    layers => layers,
                    more => page.total - page.rows.len(),
                };
            }
        }
        plats.push(context! {
            name => n,
            anchor => format!("platform-{}", i + 1),
            by_digest => format!("{host}/{}@{d}", r.path),
            digest => d,
            size => human_size(size),
            detail => detail,
        });
    }
    let referrers: Vec<Value> = match state.meta.referrers(&r.path, &digest, None).await {
        Ok(list) => list
            .into_iter()
            .map(|x| {
                context! {
                    digest => x.digest.as_str().to_string(),
                    artifact_type => x.artifact_type.unwrap_or_else(|| x.media_type.clone()),
                    size => human_size(x.size),
                }
            })
            .collect(),
        Err(e) => return fail(viewer, e.into()),
    };
    let history: Vec<Value> = match state.meta.tag_history(r.id, &tag.name, 100).await {
        Ok(events) => events
            .into_iter()
            .map(|e| {
                context! {
                    action => e.action,
                    digest => short_digest(&e.digest),
                    full_digest => e.digest,
                    previous => e.previous_digest.as_deref().map(short_digest),
                    when => when(e.at),
                    actor => actor_text(e.actor.as_ref()),
                    run => e.cleanup_run_id,
                }
            })
            .collect(),
        Err(e) => return fail(viewer, e.into()),
    };
    let repo_url = format!("{}/container_registry/{}", project_url(&p), r.id);
    viewer.render(
        StatusCode::OK,
        "tag.html",
        context! {
            title => format!("{}:{}", r.path, tag.name),
            project => context! {
                name => p.name.clone(),
                url => project_url(&p),
                registry_url => format!("{}/container_registry", project_url(&p)),
            },
            repository => context! { path => r.path.clone(), url => repo_url.clone() },
            tag => context! {
                name => tag.name.clone(),
                location => format!("{host}/{}:{}", r.path, tag.name),
                by_digest => format!("{host}/{}@{}", r.path, tag.digest),
                digest => tag.digest.clone(),
                media_type => tag.media_type.clone(),
                config => tag.config_digest.clone(),
                size => human_size(tag.total_size),
                created => when(tag.created_at),
                pushed => when(tag.pushed_at),
            },
            layers => layers,
            layer_list => layer_list,
            platforms => plats,
            referrers => referrers,
            history => history,
            can_delete_tag => deletable,
            delete_tags_url => format!("{repo_url}/delete_tags"),
        },
    )
}

/// Who changed a tag, for a page: the user's name and the credential kind.
fn actor_text(a: Option<&berth_meta::Actor>) -> String {
    match a {
        Some(a) => match &a.username {
            Some(u) => format!("{u} ({})", a.kind),
            None => a.kind.clone(),
        },
        None => "—".into(),
    }
}

/// The "Recently deleted" tab of a repository: tags deleted whose manifests are still
/// there, each with a Restore button for those who may push.
pub async fn deleted_tags(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    rid: &str,
    query: &str,
) -> Response {
    let (p, actions, r) = match registry_repository(state, viewer, path, rid).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let s = ListState::parse(query, &["name"], &[]);
    let (tags, total) = match state.meta.deleted_tags(r.id, s.window()).await {
        Ok(x) => x,
        Err(e) => return fail(viewer, e.into()),
    };
    let window = state.settings.gc_review_delay.as_millis() as i64;
    let here = format!("{}/container_registry/{}", project_url(&p), r.id);
    let rows: Vec<Value> = tags
        .into_iter()
        .map(|t| {
            context! {
                name => t.name,
                digest => t.digest.clone(),
                short_digest => short_digest(&t.digest),
                deleted => when(t.deleted_at),
                deleted_by => actor_text(t.deleted_by.as_ref()),
                run => t.cleanup_run_id,
                until => when(t.deleted_at.saturating_add(window)),
            }
        })
        .collect();
    let name = api::registry::repository_name(&r, &p);
    viewer.render(
        StatusCode::OK,
        "deleted.html",
        context! {
            title => format!("{} · {}", r.path, viewer.lang.text("tab_recently_deleted")),
            project => context! {
                full_path => p.full_path.clone(),
                registry_url => format!("{}/container_registry", project_url(&p)),
            },
            repository => context! {
                name => if name.is_empty() { r.path.clone() } else { name },
                url => here.clone(),
            },
            list => s.context(&format!("{here}/deleted"), total),
            tags => rows,
            can_restore => actions.push,
            restore_url => format!("{here}/restore"),
            deleted_url => format!("{here}/deleted"),
        },
    )
}

pub async fn restore_tag(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    rid: &str,
    fields: &[(String, String)],
) -> Response {
    let back = format!("/{path}/container_registry/{rid}/deleted");
    let Some(tag) = field(fields, "tag").filter(|t| !t.is_empty()) else {
        return viewer.redirect(&back);
    };
    let digest = field(fields, "digest")
        .filter(|d| !d.is_empty())
        .map(str::to_string);
    match api::history::restore(state, &viewer.caller, path, rid, tag, digest, false).await {
        Ok(_) => {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("notice", "tag_restored");
            q.append_pair("tag", tag);
            viewer.redirect(&format!("{back}?{}", q.finish()))
        }
        Err(e) => fail(viewer, e),
    }
}

pub async fn restore_run(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    fields: &[(String, String)],
) -> Response {
    let back = format!("/{path}/-/settings/packages_and_registries");
    let run = field(fields, "run_id").unwrap_or("");
    match api::history::undo_run(state, &viewer.caller, path, run).await {
        Ok((run, done)) => viewer.redirect(&format!(
            "{back}?notice=run_restored&run={run}&restored={}&gone={}&skipped={}#log",
            done.restored, done.gone, done.skipped
        )),
        Err(e) => fail(viewer, e),
    }
}

pub async fn delete_repository(state: &Shared, viewer: &Viewer, path: &str, rid: &str) -> Response {
    match api::registry::schedule_repository_delete(state, &viewer.caller, path, rid).await {
        Ok(_) => viewer.redirect(&format!(
            "/{path}/container_registry?notice=repository_deleted"
        )),
        Err(e) => fail(viewer, e),
    }
}

pub async fn delete_tags(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    rid: &str,
    fields: &[(String, String)],
) -> Response {
    let names: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "tags")
        .map(|(_, v)| v.clone())
        .collect();
    let back = format!("/{path}/container_registry/{rid}");
    if names.is_empty() {
        return viewer.redirect(&back);
    }
    match api::registry::delete_tags(state, &viewer.caller, path, rid, &names).await {
        Ok(d) if d.protected > 0 => viewer.redirect(&format!(
            "{back}?notice=tags_deleted_some_protected&count={}&protected={}",
            d.deleted, d.protected
        )),
        Ok(d) => viewer.redirect(&format!("{back}?notice=tags_deleted&count={}", d.deleted)),
        Err(e) => fail(viewer, e),
    }
}

/// The project at `path` if the viewer maintains it (settings are maintainer+).
async fn maintained_project(
    state: &AppState,
    viewer: &Viewer,
    path: &str,
) -> Result<Project, Response> {
    let p = api::find_project(state, &viewer.caller, path)
        .await
        .map_err(|e| fail(viewer, e))?;
    viewer
        .caller
        .require_project_level(state, &p, AccessLevel::Maintainer)
        .await
        .map_err(|e| fail(viewer, e))?;
    Ok(p)
}

/// A refusal, with the form field it is about (if any).
type Problem = (Option<String>, String);

const CADENCES: [&str; 5] = ["1d", "7d", "14d", "1month", "3month"];
const KEEP_N: [i64; 6] = [1, 5, 10, 25, 50, 100];
const OLDER_THAN: [&str; 4] = ["7d", "14d", "30d", "90d"];

fn policy_values(p: &ExpirationPolicy) -> Value {
    context! {
        enabled => p.enabled,
        cadence => p.cadence.clone(),
        keep_n => p.keep_n.map(|n| n.to_string()).unwrap_or_default(),
        older_than => p.older_than.clone().unwrap_or_default(),
        name_regex => p.name_regex.clone().unwrap_or_default(),
        name_regex_keep => p.name_regex_keep.clone().unwrap_or_default(),
        next_run => p.next_run_at.map(when),
    }
}

/// Rendered preview of what a cleanup under `rules` deletes now, or the rule error.
async fn preview_context(state: &AppState, lang: Lang, p: &Project, params: &Params) -> Value {
    let rules = match api::cleanup::rules_for(state, p.id, params).await {
        Ok(r) => r,
        Err(e) => {
            return context! {
                error => e.problems().into_iter().map(|(f, _)| {
                    let f = f.unwrap_or_default();
                    let value = params.string(&f).ok().flatten().unwrap_or_default();
                    policy_errors::field_problem(lang, &f, &value)
                }).collect::<Vec<_>>().join(" "),
                repositories => Vec::<Value>::new(),
                delete_total => 0,
            }
        }
    };
    match api::cleanup::preview_of(state, p, &rules).await {
        Ok(preview) => {
            let mut total = 0;
            let repos: Vec<Value> = preview
                .repositories
                .iter()
                .map(|r| {
                    total += r.delete.len();
                    context! {
                        path => r.path.clone(),
                        delete => r.delete.iter().take(200).map(|t| context! {
                            name => t.name.clone(), step => t.step.clone(),
                        }).collect::<Vec<_>>(),
                        delete_count => r.delete.len(),
                        more => r.delete.len().saturating_sub(200),
                        keep_count => r.keep.len(),
                    }
                })
                .collect();
            context! { error => Value::from(()), repositories => repos, delete_total => total }
        }
        Err(e) => context! {
            error => e.problems().into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; "),
            repositories => Vec::<Value>::new(),
            delete_total => 0,
        },
    }
}

/// The settings page; `submitted` carries a refused policy form back with its errors.
pub async fn settings(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    submitted: Option<(Value, Vec<Problem>)>,
) -> Response {
    let p = match maintained_project(state, viewer, path).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let saved = match api::policy::current(state, &p).await {
        Ok(x) => x,
        Err(e) => return fail(viewer, e),
    };
    let entries = match state.meta.cleanup_log(p.id, 100).await {
        Ok(entries) => entries,
        Err(e) => return fail(viewer, e.into()),
    };
    // The runs the log shows, newest first, each undoable in one click.
    let mut runs: Vec<(i64, String, i64, u64)> = Vec::new();
    for e in entries.iter().filter(|e| e.kept_by_rule.is_none()) {
        let Some(id) = e.run_id else { continue };
        match runs.iter_mut().find(|r| r.0 == id) {
            Some(r) => r.3 += 1,
            None => runs.push((id, e.reason.clone(), e.deleted_at, 1)),
        }
    }
    let runs: Vec<Value> = runs
        .into_iter()
        .map(|(id, reason, at, shown)| {
            context! { id => id, reason => reason, deleted => when(at), shown => shown }
        })
        .collect();
    let log: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            context! {
                repository => e.repository_path,
                tag => e.tag,
                digest => short_digest(&e.digest),
                reason => e.reason,
                deleted => when(e.deleted_at),
                run => e.run_id,
                kept_by => e.kept_by_rule,
            }
        })
        .collect();
    // After a refused save the preview shows the policy as typed, like the form.
    let mut typed = Params::default();
    if let Some((values, _)) = &submitted {
        for key in [
            "cadence",
            "keep_n",
            "older_than",
            "name_regex",
            "name_regex_keep",
        ] {
            if let Ok(v) = values.get_attr(key) {
                if let Some(text) = v.as_str() {
                    typed.set(key, text);
                }
            }
        }
    }
    let preview = preview_context(state, viewer.lang, &p, &typed).await;
    let (repository_rules, tag_rules) = match protection_rules_context(state, &p).await {
        Ok(x) => x,
        Err(e) => return fail(viewer, e),
    };
    let (status, values, errors) = match submitted {
        Some((values, errors)) => (StatusCode::BAD_REQUEST, values, errors),
        None => (StatusCode::OK, policy_values(&saved), Vec::new()),
    };
    let field_errors: std::collections::BTreeMap<String, String> = errors
        .iter()
        .map(|(f, m)| (f.clone().unwrap_or_else(|| "form".into()), m.clone()))
        .collect();
    let query: Vec<(String, String)> = form_urlencoded::parse(
        viewer
            .here
            .split_once('?')
            .map(|x| x.1)
            .unwrap_or("")
            .as_bytes(),
    )
    .into_owned()
    .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let notice = param("notice");
    let count = |name: &str| param(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let run_restored = context! {
        run => count("run"),
        restored => count("restored"),
        gone => count("gone"),
        skipped => count("skipped"),
    };
    let url = format!("{}/-/settings/packages_and_registries", project_url(&p));
    viewer.render(
        status,
        "settings.html",
        context! {
            title => format!("{} · {}", viewer.lang.text("settings_title"), p.name),
            project => context! {
                name => p.name.clone(),
                full_path => p.full_path.clone(),
                url => project_url(&p),
                registry_url => (p.registry_access != RegistryAccess::Disabled)
                    .then(|| format!("{}/container_registry", project_url(&p))),
                visibility => p.visibility.as_str(),
            },
            access => p.registry_access.as_str(),
            policy => values,
            saved_next_run => saved.next_run_at.map(when),
            errors => field_errors,
            cadences => CADENCES.to_vec(),
            keep_ns => KEEP_N.to_vec(),
            older_thans => OLDER_THAN.to_vec(),
            preview => preview,
            log => log,
            runs => runs,
            run_restored => run_restored,
            restore_run_url => format!("{url}/restore_run"),
            settings_url => url.clone(),
            preview_url => format!("{url}/preview"),
            matches_url => format!("{url}/protection_matches"),
            repository_rules => repository_rules,
            tag_rules => tag_rules,
            notice => notice,
        },
    )
}

/// The project's protection rules for the settings page, each with how many
/// existing tags it covers.
async fn protection_rules_context(
    state: &AppState,
    p: &Project,
) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let mut out = (Vec::new(), Vec::new());
    for kind in [RuleKind::Repository, RuleKind::Tag] {
        for r in state.meta.protection_rules(p.id, kind).await? {
            let matches = api::protection::matching_tags(state, p, kind, &r.pattern).await?;
            let row = context! {
                id => r.id,
                pattern => r.pattern.clone(),
                push => r.push.map(|l| l.as_str()).unwrap_or(""),
                delete => r.delete.map(|l| l.as_str()).unwrap_or(""),
                immutable => r.immutable,
                matches => matches.unwrap_or(0),
            };
            match kind {
                RuleKind::Repository => out.0.push(row),
                RuleKind::Tag => out.1.push(row),
            }
        }
    }
    Ok(out)
}

/// `GET …/-/settings/packages_and_registries/protection_matches?kind=&pattern=`:
/// how many existing tags a rule pattern would cover (`null` when it is invalid),
/// for the settings page's live count.
pub async fn protection_matches(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    query: &str,
) -> Response {
    let p = match maintained_project(state, viewer, path).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let params = match Params::parse(query, "", b"") {
        Ok(x) => x,
        Err(e) => return fail(viewer, e),
    };
    let get = |k: &str| params.string(k).ok().flatten().unwrap_or_default();
    let kind = if get("kind") == "repository" {
        RuleKind::Repository
    } else {
        RuleKind::Tag
    };
    match api::protection::matching_tags(state, &p, kind, &get("pattern")).await {
        Ok(n) => axum::response::IntoResponse::into_response(axum::Json(
            serde_json::json!({ "matches": n }),
        )),
        Err(e) => fail(viewer, e),
    }
}

/// A protection rule form of the settings page: add, change (`id` given) or delete.
async fn save_protection_rule(
    state: &Shared,
    viewer: &Viewer,
    p: &Project,
    path: &str,
    form: &str,
    fields: &[(String, String)],
    body: &[u8],
) -> Response {
    let kind = if form.starts_with("repository") {
        RuleKind::Repository
    } else {
        RuleKind::Tag
    };
    let back = format!("/{path}/-/settings/packages_and_registries");
    let mut params = match Params::parse("", "application/x-www-form-urlencoded", body) {
        Ok(x) => x,
        Err(e) => return fail(viewer, e),
    };
    // An immutable rule has no levels, whatever the (hidden) selects still say.
    if field(fields, "immutable") == Some("true") {
        params.set("minimum_access_level_for_push", "");
        params.set("minimum_access_level_for_delete", "");
    }
    let id = field(fields, "id").filter(|i| !i.is_empty());
    let caller = &viewer.caller;
    let result = match (form.ends_with("_delete"), id) {
        (true, Some(id)) => api::protection::delete_rule(state, caller, path, kind, id)
            .await
            .map(|_| ()),
        (true, None) => return viewer.error(StatusCode::BAD_REQUEST),
        (false, Some(id)) => api::protection::update_rule(state, caller, path, kind, id, &params)
            .await
            .map(|_| ()),
        (false, None) => api::protection::create_rule(state, caller, path, kind, &params)
            .await
            .map(|_| ()),
    };
    let anchor = format!("protection-{}", kind.as_str());
    match result {
        Ok(()) => viewer.redirect(&format!("{back}?notice=rules_saved#{anchor}")),
        Err(e) if e.status().is_client_error() && e.status() != StatusCode::NOT_FOUND => {
            let why = e
                .problems()
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
                .join(" ");
            let saved = match api::policy::current(state, p).await {
                Ok(x) => x,
                Err(e) => return fail(viewer, e),
            };
            settings(
                state,
                viewer,
                path,
                Some((policy_values(&saved), vec![(Some(anchor), why)])),
            )
            .await
        }
        Err(e) => fail(viewer, e),
    }
}

pub async fn settings_preview(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    query: &str,
) -> Response {
    let p = match maintained_project(state, viewer, path).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let params = match Params::parse(query, "", b"") {
        Ok(x) => x,
        Err(e) => return fail(viewer, e),
    };
    let preview = preview_context(state, viewer.lang, &p, &params).await;
    viewer.render(
        StatusCode::OK,
        "preview.html",
        context! { preview => preview },
    )
}

pub async fn save_settings(
    state: &Shared,
    viewer: &Viewer,
    path: &str,
    fields: &[(String, String)],
    body: &[u8],
) -> Response {
    let p = match maintained_project(state, viewer, path).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let back = format!("/{path}/-/settings/packages_and_registries");
    match field(fields, "form") {
        Some(
            form @ ("repository_rule" | "repository_rule_delete" | "tag_rule" | "tag_rule_delete"),
        ) => save_protection_rule(state, viewer, &p, path, form, fields, body).await,
        Some("visibility") => {
            let Some(access) = field(fields, "container_registry_access_level")
                .and_then(|a| a.parse::<RegistryAccess>().ok())
            else {
                return viewer.error(StatusCode::BAD_REQUEST);
            };
            let update = ProjectUpdate {
                registry_access: Some(access),
                ..ProjectUpdate::default()
            };
            match state.meta.update_project(p.id, &update).await {
                Ok(_) => viewer.redirect(&format!("{back}?notice=visibility_saved#visibility")),
                Err(e) => fail(viewer, e.into()),
            }
        }
        Some("policy") => {
            let mut attrs = match Params::parse("", "application/x-www-form-urlencoded", body) {
                Ok(a) => a,
                Err(e) => return fail(viewer, e),
            };
            // An unticked checkbox sends nothing; it means "off".
            let enabled = field(fields, "enabled").is_some();
            attrs.set("enabled", if enabled { "true" } else { "false" });
            let current = match api::policy::current(state, &p).await {
                Ok(x) => x,
                Err(e) => return fail(viewer, e),
            };
            match api::policy::apply(current, &attrs) {
                Ok(policy) => match state
                    .meta
                    .set_expiration_policy(p.id, &policy, now_ms())
                    .await
                {
                    Ok(()) => viewer.redirect(&format!("{back}?notice=policy_saved#policy")),
                    Err(e) => fail(viewer, e.into()),
                },
                Err(e) => {
                    let values = context! {
                        enabled => enabled,
                        cadence => field(fields, "cadence").unwrap_or(""),
                        keep_n => field(fields, "keep_n").unwrap_or(""),
                        older_than => field(fields, "older_than").unwrap_or(""),
                        name_regex => field(fields, "name_regex").unwrap_or(""),
                        name_regex_keep => field(fields, "name_regex_keep").unwrap_or(""),
                        next_run => Value::from(()),
                    };
                    let problems = e
                        .problems()
                        .into_iter()
                        .map(|(f, _)| {
                            let value = f.as_deref().and_then(|f| field(fields, f)).unwrap_or("");
                            let why = policy_errors::field_problem(
                                viewer.lang,
                                f.as_deref().unwrap_or(""),
                                value,
                            );
                            (f, why)
                        })
                        .collect::<Vec<Problem>>();
                    // The policy check stops at its first problem; the other pattern
                    // is checked too, so every bad field shows its error at once.
                    let mut problems = problems;
                    for f in ["name_regex", "name_regex_keep"] {
                        let value = field(fields, f).unwrap_or("");
                        if problems.iter().any(|(p, _)| p.as_deref() == Some(f)) || value.is_empty()
                        {
                            continue;
                        }
                        if let Some(why) = policy_errors::regex_problem(viewer.lang, value) {
                            problems.push((Some(f.to_string()), why));
                        }
                    }
                    settings(state, viewer, path, Some((values, problems))).await
                }
            }
        }
        _ => viewer.error(StatusCode::BAD_REQUEST),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
    }

    #[test]
    fn list_state_round_trips_through_the_url() {
        let s = ListState::parse(
            "search=app&sort=updated&order=desc&filter=tagged&page=3&per_page=50&junk=1",
            &["name", "created", "updated"],
            &["all", "tagged", "empty"],
        );
        assert_eq!(s.url("/g/p/container_registry", 3),
            "/g/p/container_registry?search=app&sort=updated&order=desc&filter=tagged&per_page=50&page=3");
        let bad = ListState::parse("sort=evil&order=up&per_page=7&page=-4", &["name"], &[]);
        assert_eq!(
            (
                bad.sort.as_str(),
                bad.order.as_str(),
                bad.per_page,
                bad.page
            ),
            ("name", "asc", 20, 1)
        );
    }

    #[test]
    fn config_digests_of_images_only() {
        let m = br#"{"config":{"digest":"sha256:c","size":10},"layers":[]}"#;
        assert_eq!(config_digest(m).as_deref(), Some("sha256:c"));
        assert_eq!(config_digest(br#"{"manifests":[]}"#), None);
        assert_eq!(config_digest(b"not json"), None);
    }

    #[test]
    fn image_sizes_add_config_and_layers() {
        let m = br#"{"config":{"size":10},"layers":[{"size":100},{"size":1000}]}"#;
        assert_eq!(image_size(m), Some(1110));
        assert_eq!(image_size(br#"{"manifests":[]}"#), None);
    }

    #[test]
    fn index_platforms_are_listed() {
        let index = br#"{"manifests":[
            {"digest":"sha256:a","size":10,"platform":{"os":"linux","architecture":"amd64"}},
            {"digest":"sha256:b","size":20,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"digest":"sha256:c","size":30}]}"#;
        let names: Vec<String> = platforms(index).into_iter().map(|p| p.0).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]);
    }

    fn manifest_with_layers(n: usize) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": berth_oci::Digest::sha256_of(&i.to_le_bytes()),
                    "size": i,
                    "annotations": {"n": i.to_string()},
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "x", "digest": berth_oci::Digest::sha256_of(b""), "size": 0},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn layers_are_shown_a_page_at_a_time() {
        let payload = manifest_with_layers(250);
        let p = layer_page(&payload, 1);
        assert_eq!((p.page, p.first, p.total, p.pages()), (1, 0, 250, 3));
        assert_eq!(p.rows.len(), LAYERS_PER_PAGE);
        assert_eq!(p.rows[0].size, 0);
        let p = layer_page(&payload, 3);
        assert_eq!((p.page, p.first, p.rows.len()), (3, 200, 50));
        assert_eq!(p.rows[0].size, 200);
        // Past the end: the last page.
        let p = layer_page(&payload, 99);
        assert_eq!((p.page, p.first, p.rows.len()), (3, 200, 50));
        // An index, or anything else, has no layers.
        let none = layer_page(br#"{"manifests":[]}"#, 1);
        assert_eq!((none.total, none.pages(), none.rows.len()), (0, 1, 0));
        assert_eq!(layer_page(b"garbage", 2).total, 0);
        assert_eq!(layers_page_param("layers_page=3&x=1"), 3);
        for bad in [
            "",
            "layers_page=0",
            "layers_page=-2",
            "layers_page=x",
            "layers_page=%2B2",
        ] {
            assert_eq!(layers_page_param(bad), 1, "{bad}");
        }
    }

    #[test]
    fn times_past_year_9999_are_shown_not_panicked_on() {
        // An image config may claim `created` 9999-12-31T23:59:59-23:59, past what
        // humantime formats: the repository and tag pages must still render.
        assert_eq!(when(i64::MAX), "9999-12-31 23:59 UTC");
        assert_eq!(when(253_402_300_800_000), "9999-12-31 23:59 UTC");
        assert_eq!(when(i64::MIN), "1970-01-01 00:00 UTC");
    }

    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::registry::fuzz::{cases, check, check_n};

        const SORTS: [&str; 3] = ["name", "created", "updated"];
        const FILTERS: [&str; 3] = ["all", "tagged", "empty"];

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                2 => prop::sample::select(vec![
                    "name", "created", "updated", "asc", "desc", "all", "tagged", "empty", "10",
                    "20", "50", "100", "7", "-1", "0", "99999999999999999999", "repository_deleted",
                    "<script>", " app ",
                ]).prop_map(String::from),
                1 => any::<i64>().prop_map(|n| n.to_string()),
                1 => any::<String>(),
            ]
        }

        fn query() -> impl Strategy<Value = String> {
            let key = prop_oneof![
                4 => prop::sample::select(vec![
                    "search", "sort", "order", "filter", "page", "per_page", "notice", "count",
                    "layers_page",
                ]).prop_map(String::from),
                1 => any::<String>(),
            ];
            prop_oneof![
                4 => prop::collection::vec((key, value()), 0..8).prop_map(|kv| {
                    let mut q = form_urlencoded::Serializer::new(String::new());
                    for (k, v) in kv {
                        q.append_pair(&k, &v);
                    }
                    q.finish()
                }),
                1 => any::<String>(),
            ]
        }

        #[test]
        fn fuzz_list_state_is_bounded_and_round_trips() {
            check("UI list state", (query(), any::<i64>()), |(q, total)| {
                let s = ListState::parse(&q, &SORTS, &FILTERS);
                prop_assert!(SORTS.contains(&s.sort.as_str()));
                prop_assert!(s.order == "asc" || s.order == "desc");
                prop_assert!(FILTERS.contains(&s.filter.as_str()));
                prop_assert!((1..=1_000_000).contains(&s.page));
                prop_assert!(PER_PAGE_CHOICES.contains(&s.per_page));
                prop_assert!(s.search.chars().count() <= 200);
                let w = s.window();
                prop_assert!(w.offset >= 0);
                let here = "/g/p/container_registry";
                let _ = s.context(here, total.clamp(0, i64::MAX / 2));
                // The state survives its own URL.
                let url = s.url(here, s.page);
                let again = ListState::parse(url.split_once('?').unwrap().1, &SORTS, &FILTERS);
                prop_assert_eq!(
                    (
                        &again.search,
                        &again.sort,
                        &again.order,
                        &again.filter,
                        again.page,
                        again.per_page
                    ),
                    (&s.search, &s.sort, &s.order, &s.filter, s.page, s.per_page)
                );
                Ok(())
            });
        }

        #[test]
        fn fuzz_times_and_sizes_render() {
            check("UI times and sizes", any::<i64>(), |n| {
                let w = when(n);
                prop_assert!(w.ends_with(" UTC") && w.len() == 20, "{}", w);
                let h = human_size(n);
                prop_assert!(!h.is_empty());
                Ok(())
            });
        }

        #[test]
        fn fuzz_layer_pages() {
            // Large manifests cost milliseconds each: fewer cases.
            let few = (cases() / 8).max(32);
            let input = (
                0usize..1200,
                prop_oneof![0usize..20, any::<usize>()],
                query(),
            );
            check_n("UI layer pages", few, input, |(n, page, q)| {
                let payload = manifest_with_layers(n);
                let p = layer_page(&payload, page.max(1));
                prop_assert_eq!(p.total, n);
                prop_assert!(p.page >= 1 && p.page <= p.pages());
                prop_assert_eq!(p.first, (p.page - 1) * LAYERS_PER_PAGE);
                prop_assert_eq!(p.rows.len(), n.saturating_sub(p.first).min(LAYERS_PER_PAGE));
                for (i, row) in p.rows.iter().enumerate() {
                    prop_assert_eq!(row.size as usize, p.first + i);
                }
                let _ = layers_page_param(&q);
                Ok(())
            });
        }

        #[test]
        fn fuzz_layer_page_of_arbitrary_payloads() {
            let payloads = prop_oneof![
                prop::collection::vec(any::<u8>(), 0..200),
                any::<String>().prop_map(String::into_bytes),
                (any::<String>(), any::<i64>(), 0usize..4).prop_map(|(s, n, shape)| {
                    let layer = match shape {
                        0 => serde_json::json!({"digest": s, "size": n}),
                        1 => serde_json::json!({"mediaType": n, "digest": [s]}),
                        2 => serde_json::json!(s),
                        _ => serde_json::json!({"size": s}),
                    };
                    serde_json::to_vec(&serde_json::json!({"layers": [layer.clone(), layer]}))
                        .unwrap()
                }),
            ];
            check(
                "UI layer page, arbitrary payload",
                (payloads, 1usize..5),
                |(payload, page)| {
                    let p = layer_page(&payload, page);
                    prop_assert!(p.rows.len() <= p.total && p.page <= p.pages());
                    let _ = platforms(&payload);
                    Ok(())
                },
            );
        }
    }
}
