//! Registry content as the REST API and cleanup policies see it: repositories of
//! projects, tags with their image's details, background repository deletion, cleanup
//! policies, leases, and moving projects and groups with their repositories.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::org::{Namespace, Project, Window};
use crate::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryInfo {
    pub id: i64,
    /// Full registry path, e.g. `group/project/image`.
    pub path: String,
    pub project_id: Option<i64>,
    pub created_at: i64,
    /// `None`, or `delete_scheduled`, `delete_ongoing`, `delete_failed`.
    pub status: Option<String>,
    pub cleanup_status: String,
    pub cleanup_started_at: Option<i64>,
    pub tags_count: i64,
    /// When content was last pushed to it.
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub config_digest: Option<String>,
    /// When the image was created (its config's `created`), else when the tag was pushed.
    pub created_at: i64,
    /// When this tag was pushed (last moved to its manifest, or restored): what
    /// cleanup policies order and age tags by, as GitLab does.
    pub pushed_at: i64,
    pub total_size: i64,
}

/// How a tag list is paged: offset pages, or keyset pages by name.
#[derive(Debug, Clone)]
pub enum TagPage {
    Offset(Window),
    /// Names strictly after (or, descending, before) `last`.
    After {
        last: Option<String>,
        limit: i64,
        descending: bool,
    },
}

/// How a tag search orders its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOrder {
    Name,
    /// By [`TagInfo::created_at`], ties by name.
    Created,
}

/// Where `search_repositories` looks.
#[derive(Debug, Clone, Copy)]
pub enum RepoScope<'a> {
    /// The repositories of these projects.
    Projects(&'a [i64]),
    /// The repositories under a group's path (lower case: its projects' and its
    /// subgroups'), but for those of the projects `except`.
    Under {
        group_path: &'a str,
        except: &'a [i64],
    },
}

/// The order of a repository listing; ties (and `Path`) go by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoOrder {
    Path,
    /// The name shown for it: its path below its project's (GitLab's repository
    /// name), or the whole path for a project's root repository.
    Name,
    Created,
    /// When content was last pushed.
    Updated,
}

/// Which repositories a listing shows, in what order, and which page of them.
#[derive(Debug, Clone)]
pub struct RepoQuery {
    /// Case-insensitive (ASCII) substring of the path; `None` or empty: every one.
    pub path_contains: Option<String>,
    /// `Some(true)`: only those with live tags; `Some(false)`: only those without.
    pub tagged: Option<bool>,
    pub order: RepoOrder,
    pub descending: bool,
    pub window: Window,
    /// Count at most this many (plus one, to tell that there are more).
    pub count_up_to: i64,
}

impl RepoQuery {
    /// Every repository, by path.
    pub fn by_path(window: Window, count_up_to: i64) -> RepoQuery {
        RepoQuery {
            path_contains: None,
            tagged: None,
            order: RepoOrder::Path,
            descending: false,
            window,
            count_up_to,
        }
    }
}

/// A page of a repository's live tags whose names contain a text, in an order.
#[derive(Debug, Clone)]
pub struct TagQuery {
    /// Case-insensitive (ASCII) substring of the name; `None` or empty: every tag.
    pub name_contains: Option<String>,
    pub order: TagOrder,
    pub descending: bool,
    pub window: Window,
}

impl TagQuery {
    /// Whether `name` passes the query's filter.
    pub fn matches(&self, name: &str) -> bool {
        match self.name_contains.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => name.to_ascii_lowercase().contains(&s.to_ascii_lowercase()),
            None => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpirationPolicy {
    pub enabled: bool,
    pub cadence: String,
    pub keep_n: Option<i64>,
    pub older_than: Option<String>,
    pub name_regex: Option<String>,
    pub name_regex_keep: Option<String>,
    pub next_run_at: Option<i64>,
}

#[async_trait]
pub trait RepositoryMeta: Send + Sync {
    /// A page of the repositories `query` selects in `scope` (never those being
    /// deleted), in its order; with how many it selects: exact when the page ends the
    /// list, else counted up to `query.count_up_to` + 1 at most. Filtered, sorted and
    /// paged in the database: a group may hold a hundred thousand repositories.
    async fn search_repositories(
        &self,
        scope: RepoScope<'_>,
        query: &RepoQuery,
    ) -> Result<(Vec<RepositoryInfo>, i64)>;
    /// Repositories of these projects that are not being deleted, by path, paged,
    /// with the total.
    async fn repositories_of(
        &self,
        project_ids: &[i64],
        window: Window,
    ) -> Result<(Vec<RepositoryInfo>, i64)> {
        self.search_repositories(
            RepoScope::Projects(project_ids),
            &RepoQuery::by_path(window, i64::MAX),
        )
        .await
    }
    /// Repositories whose path is under `group_path` (those of the projects in the
    /// group and its subgroups) that are not being deleted, leaving out the projects
    /// `except`, by path, paged; with how many there are, as `search_repositories`
    /// counts. Reads the index of live paths alone up to the page, so a deep page
    /// costs a walk of that index, never a count of every row.
    async fn repositories_under(
        &self,
        group_path: &str,
        except: &[i64],
        window: Window,
        count_up_to: i64,
    ) -> Result<(Vec<RepositoryInfo>, i64)> {
        self.search_repositories(
            RepoScope::Under { group_path, except },
            &RepoQuery::by_path(window, count_up_to),
        )
        .await
    }
    async fn repository_info(&self, id: i64) -> Result<Option<RepositoryInfo>>;
    /// Deduplicated bytes, GitLab's way: the unique layers of manifests reachable from
    /// live tags (directly or as index children).
    async fn repository_size(&self, id: i64) -> Result<i64> {
        Ok(self
            .repository_sizes(&[id])
            .await?
            .get(&id)
            .copied()
            .unwrap_or(0))
    }
    /// [`Self::repository_size`] of each of `ids` (a page of a list), in one query.
    async fn repository_sizes(&self, ids: &[i64]) -> Result<HashMap<i64, i64>>;
    /// Live tags, by name, with the total number of live tags for offset pages
    /// (keyset pages are not counted: the total is 0).
    async fn repository_tags(&self, id: i64, page: TagPage) -> Result<(Vec<TagInfo>, i64)>;
    async fn repository_tag(&self, id: i64, name: &str) -> Result<Option<TagInfo>>;
    /// A page of the tags `query` selects, with how many it selects in all (for the
    /// web UI). The default reads every tag; a backend overrides it to page in the
    /// database.
    async fn search_tags(&self, id: i64, query: &TagQuery) -> Result<(Vec<TagInfo>, i64)> {
        let mut tags: Vec<TagInfo> = self
            .all_tags(id)
            .await?
            .into_iter()
            .filter(|t| query.matches(&t.name))
            .collect();
        if query.order == TagOrder::Created {
            tags.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        }
        if query.descending {
            tags.reverse();
        }
        let total = tags.len() as i64;
        let page = tags
            .into_iter()
            .skip(query.window.offset.max(0) as usize)
            .take(query.window.limit.max(0) as usize)
            .collect();
        Ok((page, total))
    }
    /// Every live tag (for the cleanup engine).
    async fn all_tags(&self, id: i64) -> Result<Vec<TagInfo>>;
    /// End these tags (manifests stay) in one transaction; returns how many ended.
    async fn delete_tags(&self, id: i64, names: &[String], now: i64) -> Result<u64> {
        self.delete_tags_by(id, names, now, &crate::Actor::default())
            .await
    }
    /// [`RepositoryMeta::delete_tags`], recording `actor` in the tags' history.
    async fn delete_tags_by(
        &self,
        id: i64,
        names: &[String],
        now: i64,
        actor: &crate::Actor,
    ) -> Result<u64>;

    /// Hide a repository and queue it for deletion. False if it is unknown or already queued.
    async fn schedule_repository_delete(&self, id: i64) -> Result<bool>;
    /// Repositories queued for deletion.
    async fn scheduled_repository_deletes(&self) -> Result<Vec<i64>>;
    /// Remove a repository: its tags end, its manifests and blob links go, then the
    /// repository itself. One transaction.
    async fn delete_repository(&self, id: i64, now: i64) -> Result<()>;

    /// Take the lease `key` until `until` if it is free or expired; false if held.
    async fn try_lease(&self, key: &str, until: i64, now: i64) -> Result<bool>;
    async fn release_lease(&self, key: &str) -> Result<()>;

    /// A project's cleanup policy (`None`: never set; callers use the defaults).
    async fn expiration_policy(&self, project_id: i64) -> Result<Option<ExpirationPolicy>>;
    async fn set_expiration_policy(
        &self,
        project_id: i64,
        policy: &ExpirationPolicy,
        now: i64,
    ) -> Result<()>;

    /// Live tags in all repositories of a project.
    async fn project_tags_count(&self, project_id: i64) -> Result<i64>;
    /// Move and/or rename a project, its registry paths moving with it, atomically.
    /// `Conflict` when the new full path is taken.
    async fn move_project(
        &self,
        project_id: i64,
        namespace_id: i64,
        path: &str,
        name: &str,
    ) -> Result<Project>;
    /// Change a group's path and/or parent (`Some(None)`: make it top-level); every
    /// group, project and repository path below it follows, atomically.
    async fn move_group(
        &self,
        namespace_id: i64,
        parent_id: Option<Option<i64>>,
        path: &str,
    ) -> Result<Namespace>;
    /// Delete a project and everything of it, in one transaction: its repositories
    /// (live tags end, manifests and blob links go, and the tag history goes with each
    /// repository: there is nothing left to restore into), memberships, deploy tokens,
    /// cleanup policy, log and runs, protection rules and CI jobs. Blobs are left to
    /// garbage collection (the unlinks queue them for review). False if there was no
    /// such project.
    async fn delete_project(&self, project_id: i64, now: i64) -> Result<bool>;
    /// Delete a group, its subgroups and all their projects (as
    /// [`RepositoryMeta::delete_project`]), with the groups' memberships, deploy tokens
    /// and dependency-proxy caches, in one transaction. False if there was no such
    /// group (a user namespace is not one).
    async fn delete_group(&self, namespace_id: i64, now: i64) -> Result<bool>;
}
