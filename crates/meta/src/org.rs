//! The organisation: users, groups and user namespaces, projects, memberships, and
//! the credentials that act for them. Secrets arrive here already hashed.

use async_trait::async_trait;
use berth_core::{AccessLevel, RegistryAccess, Visibility};

use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    Active,
    Blocked,
}

impl UserState {
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Active => "active",
            UserState::Blocked => "blocked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub email: Option<String>,
    pub admin: bool,
    pub state: UserState,
    /// argon2 PHC string; `None` for users who sign in with tokens only.
    pub password_hash: Option<String>,
    /// The user's personal namespace (`/<username>`).
    pub namespace_id: i64,
    pub created_at: i64,
    /// Someone else chose the password (an administrator, or it was generated): the
    /// user is asked to set their own at the next sign-in.
    pub password_change_required: bool,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub name: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub admin: bool,
}

#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub name: Option<String>,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub admin: Option<bool>,
    pub state: Option<UserState>,
    pub password_change_required: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceKind {
    Group,
    User,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub id: i64,
    pub kind: NamespaceKind,
    pub name: String,
    pub path: String,
    /// `a/b/c`: the paths of every ancestor and this one.
    pub full_path: String,
    pub parent_id: Option<i64>,
    /// For a user namespace, its user.
    pub owner_id: Option<i64>,
    pub visibility: Visibility,
    pub description: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewGroup {
    pub name: String,
    pub path: String,
    pub parent_id: Option<i64>,
    pub visibility: Visibility,
    pub description: String,
}

#[derive(Debug, Clone, Default)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub visibility: Option<Visibility>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: i64,
    pub namespace_id: i64,
    pub name: String,
    pub path: String,
    pub full_path: String,
    pub description: String,
    pub visibility: Visibility,
    pub registry_access: RegistryAccess,
    pub creator_id: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub namespace_id: i64,
    pub name: String,
    pub path: String,
    pub description: String,
    pub visibility: Visibility,
    pub registry_access: RegistryAccess,
    pub creator_id: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub visibility: Option<Visibility>,
    pub registry_access: Option<RegistryAccess>,
}

/// What a membership or a deploy token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Namespace(i64),
    Project(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub source: Source,
    pub user: User,
    pub access_level: AccessLevel,
    /// `YYYY-MM-DD`; the membership ends when that day begins (UTC).
    pub expires_at: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
    /// `YYYY-MM-DD`; the token stops working when that day begins (UTC).
    pub expires_at: Option<String>,
    pub revoked: bool,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewPersonalToken {
    pub user_id: i64,
    pub name: String,
    pub description: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    /// SHA-256 of the secret, hex.
    pub digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployToken {
    pub id: i64,
    pub source: Source,
    pub name: String,
    pub username: String,
    pub scopes: Vec<String>,
    /// Unix ms; `None` never expires.
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewDeployToken {
    pub source: Source,
    pub name: String,
    /// `None`: `gitlab+deploy-token-<id>`, as GitLab names them.
    pub username: Option<String>,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiJob {
    pub id: i64,
    pub project_id: i64,
    /// The user the job runs as; the job acts with this user's permissions.
    pub user_id: i64,
    pub status: JobStatus,
    /// Unix ms: the job's timeout.
    pub expires_at: i64,
    pub created_at: i64,
}

/// Listing window for offset pagination: `(offset, limit)`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub offset: i64,
    pub limit: i64,
}

#[async_trait]
pub trait OrgMeta: Send + Sync {
    async fn count_users(&self) -> Result<i64>;
    /// Creates the user and its personal namespace in one transaction.
    /// `Conflict` when the username (case-insensitive) or namespace path is taken.
    async fn create_user(&self, user: &NewUser, now: i64) -> Result<User>;
    async fn user(&self, id: i64) -> Result<Option<User>>;
    async fn user_by_username(&self, username: &str) -> Result<Option<User>>;
    async fn users(&self, search: Option<&str>, window: Window) -> Result<(Vec<User>, i64)>;
    async fn update_user(&self, id: i64, update: &UserUpdate) -> Result<Option<User>>;

    /// `Conflict` when the full path is taken by a group, user namespace or project.
    async fn create_group(&self, group: &NewGroup, now: i64) -> Result<Namespace>;
    async fn namespace(&self, id: i64) -> Result<Option<Namespace>>;
    async fn namespace_by_path(&self, full_path: &str) -> Result<Option<Namespace>>;
    async fn groups(&self, search: Option<&str>, window: Window) -> Result<(Vec<Namespace>, i64)>;
    /// Direct subgroups.
    async fn subgroups(&self, id: i64) -> Result<Vec<Namespace>>;
    /// Every group below `id`, at any depth.
    async fn descendant_groups(&self, id: i64) -> Result<Vec<Namespace>>;
    async fn update_group(&self, id: i64, update: &GroupUpdate) -> Result<Option<Namespace>>;

    /// `Conflict` when the full path is taken.
    async fn create_project(&self, project: &NewProject, now: i64) -> Result<Project>;
    async fn project(&self, id: i64) -> Result<Option<Project>>;
    /// The projects of `ids` that exist, in no particular order.
    async fn projects_by_ids(&self, ids: &[i64]) -> Result<Vec<Project>>;
    async fn project_by_path(&self, full_path: &str) -> Result<Option<Project>>;
    /// The project among `candidates` (full paths, longest first) that exists,
    /// preferring the longest.
    async fn project_for_paths(&self, candidates: &[String]) -> Result<Option<Project>>;
    /// Projects in a namespace and, with `descendants`, in every group below it.
    async fn projects_in(&self, namespace_id: i64, descendants: bool) -> Result<Vec<Project>>;
    async fn projects(&self, search: Option<&str>) -> Result<Vec<Project>>;
    async fn update_project(&self, id: i64, update: &ProjectUpdate) -> Result<Option<Project>>;

    /// Add or replace a membership.
    async fn set_member(
        &self,
        source: Source,
        user_id: i64,
        level: AccessLevel,
        expires_at: Option<&str>,
        now: i64,
    ) -> Result<()>;
    async fn remove_member(&self, source: Source, user_id: i64) -> Result<bool>;
    /// Direct members of a project or group.
    async fn members(&self, source: Source) -> Result<Vec<Member>>;
    /// A user's effective level in a project: the highest of the project membership,
    /// memberships of the groups above it, and ownership of the user namespace it is
    /// in. Memberships that expired by `today` (`YYYY-MM-DD`) do not count.
    async fn project_role(
        &self,
        user_id: i64,
        project_id: i64,
        today: &str,
    ) -> Result<Option<AccessLevel>>;
    /// [`OrgMeta::project_role`] for many projects at once (one query per few hundred):
    /// the projects of `project_ids` where the user has a level, with that level.
    async fn project_roles(
        &self,
        user_id: i64,
        project_ids: &[i64],
        today: &str,
    ) -> Result<std::collections::HashMap<i64, AccessLevel>>;
    /// A user's effective level in a group (its own and inherited memberships).
    async fn group_role(
        &self,
        user_id: i64,
        namespace_id: i64,
        today: &str,
    ) -> Result<Option<AccessLevel>>;

    async fn create_personal_token(&self, t: &NewPersonalToken, now: i64) -> Result<PersonalToken>;
    async fn personal_token(&self, id: i64) -> Result<Option<PersonalToken>>;
    async fn personal_token_by_digest(&self, digest: &str) -> Result<Option<PersonalToken>>;
    async fn personal_tokens(&self, user_id: Option<i64>) -> Result<Vec<PersonalToken>>;
    async fn revoke_personal_token(&self, id: i64) -> Result<bool>;
    async fn touch_personal_token(&self, id: i64, now: i64) -> Result<()>;

    async fn create_deploy_token(&self, t: &NewDeployToken, now: i64) -> Result<DeployToken>;
    async fn deploy_token(&self, id: i64) -> Result<Option<DeployToken>>;
    async fn deploy_token_by_digest(&self, digest: &str) -> Result<Option<DeployToken>>;
    /// `None`: every deploy token of the instance.
    async fn deploy_tokens(&self, source: Option<Source>) -> Result<Vec<DeployToken>>;
    async fn revoke_deploy_token(&self, id: i64) -> Result<bool>;
    /// Whether a deploy token of `source` applies to `project_id` (its own project,
    /// or a project anywhere below its group).
    async fn deploy_token_covers(&self, source: Source, project_id: i64) -> Result<bool>;

    async fn create_job(
        &self,
        project_id: i64,
        user_id: i64,
        digest: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<CiJob>;
    async fn job(&self, id: i64) -> Result<Option<CiJob>>;
    async fn job_by_digest(&self, digest: &str) -> Result<Option<CiJob>>;
    async fn finish_job(&self, id: i64, now: i64) -> Result<bool>;
    /// Give a job a secret that acts as deploy token `deploy_token_id` while the job runs.
    async fn set_job_deploy_credential(
        &self,
        job_id: i64,
        deploy_token_id: i64,
        digest: &str,
    ) -> Result<()>;
    /// The job and deploy token id a per-job deploy secret belongs to.
    async fn job_deploy_credential(&self, digest: &str) -> Result<Option<(CiJob, i64)>>;

    /// Instance settings stored in the database (JSON values).
    async fn setting(&self, key: &str) -> Result<Option<String>>;
    async fn set_setting(&self, key: &str, value: &str) -> Result<()>;
}
