//! The typed shapes of `/api/v4`: every JSON object the API answers with is one of
//! these structs, serialised by serde, and the same structs derive the OpenAPI
//! schemas (`utoipa::ToSchema`), so the document cannot drift from the responses.
//! Field order is GitLab's; `Option` fields that are always present (as `null`
//! when empty) are marked `required`, and those that only some responses carry are
//! skipped when absent and marked not nullable.
//!
//! Request bodies and query parameters are read from a map (see `params`), so their
//! types here only describe them; the handlers' own checks are the authority.

use std::collections::BTreeMap;

use berth_core::{AccessLevel, RegistryAccess, Visibility};
use berth_meta::{NamespaceKind, UserState};
use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::{Object, Schema};
use utoipa::{IntoParams, ToSchema};

use crate::org::{DEPLOY_SCOPES, PAT_SCOPES};

// ---------------------------------------------------------------------------
// Enumerations (each mirrors a domain type; `From` keeps them exhaustive)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VisibilityLevel {
    Private,
    Internal,
    Public,
}

impl From<Visibility> for VisibilityLevel {
    fn from(v: Visibility) -> Self {
        match v {
            Visibility::Private => VisibilityLevel::Private,
            Visibility::Internal => VisibilityLevel::Internal,
            Visibility::Public => VisibilityLevel::Public,
        }
    }
}

/// Who may use a project's container registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegistryAccessLevel {
    Enabled,
    Private,
    Disabled,
}

impl From<RegistryAccess> for RegistryAccessLevel {
    fn from(a: RegistryAccess) -> Self {
        match a {
            RegistryAccess::Enabled => RegistryAccessLevel::Enabled,
            RegistryAccess::Private => RegistryAccessLevel::Private,
            RegistryAccess::Disabled => RegistryAccessLevel::Disabled,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStateName {
    Active,
    Blocked,
}

impl From<UserState> for UserStateName {
    fn from(s: UserState) -> Self {
        match s {
            UserState::Active => UserStateName::Active,
            UserState::Blocked => UserStateName::Blocked,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKindName {
    Group,
    User,
}

impl From<NamespaceKind> for NamespaceKindName {
    fn from(k: NamespaceKind) -> Self {
        match k {
            NamespaceKind::Group => NamespaceKindName::Group,
            NamespaceKind::User => NamespaceKindName::User,
        }
    }
}

/// GitLab's access levels (10 guest … 50 owner), from the domain's own list.
pub fn access_levels() -> Vec<i64> {
    (0..=100)
        .filter_map(AccessLevel::from_value)
        .map(AccessLevel::value)
        .collect()
}

fn access_level_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .enum_values(Some(access_levels()))
        .description(Some(
            "10 Guest, 20 Reporter, 30 Developer, 40 Maintainer, 50 Owner",
        ))
        .build()
}

fn string_enum(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

fn scope_list(values: &[&str]) -> Schema {
    Schema::Array(ArrayBuilder::new().items(string_enum(values)).build())
}

fn pat_scopes_schema() -> Schema {
    scope_list(PAT_SCOPES)
}

fn deploy_scopes_schema() -> Schema {
    scope_list(DEPLOY_SCOPES)
}

fn cadence_schema() -> Object {
    string_enum(berth_core::cleanup::CADENCES)
}

fn older_than_schema() -> Object {
    string_enum(berth_core::cleanup::OLDER_THAN_VALUES)
}

fn keep_n_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .enum_values(Some(berth_core::cleanup::KEEP_N_VALUES.iter().copied()))
        .build()
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Every refusal of the API: `{"message": …}` for most, `{"error": …}` for
/// parameter validation and token scopes (as GitLab's Grape API answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ApiErrorBody {
    Message(MessageError),
    Error(ParamError),
}

/// The refusals the endpoints share, each set documented once and listed in an
/// endpoint's `responses` after its own answers: 400 for invalid parameters, 401 for a
/// missing or bad credential, 403 for a caller or token not allowed, 404 for what does
/// not exist or is not visible to the caller.
macro_rules! refusals {
    ($(#[$doc:meta])* $name:ident: $($variant:ident $status:literal $description:literal),+) => {
        $(#[$doc])*
        #[derive(utoipa::IntoResponses)]
        #[allow(dead_code)]
        pub enum $name {
            $(#[response(status = $status, description = $description)] $variant(ApiErrorBody),)+
        }
    };
}
refusals!(
    /// 401 and 403.
    Refused:
    Unauthorized 401 "Not signed in, or a bad token",
    Forbidden 403 "Not allowed, or the token lacks the scope"
);
refusals!(
    /// 401, 403 and 404.
    RefusedOrMissing:
    Unauthorized 401 "Not signed in, or a bad token",
    Forbidden 403 "Not allowed, or the token lacks the scope",
    NotFound 404 "Not found, or not visible to the caller"
);
refusals!(
    /// 400, 401 and 403.
    InvalidOrRefused:
    Invalid 400 "Invalid parameters",
    Unauthorized 401 "Not signed in, or a bad token",
    Forbidden 403 "Not allowed, or the token lacks the scope"
);
refusals!(
    /// 400, 401, 403 and 404.
    InvalidRefusedOrMissing:
    Invalid 400 "Invalid parameters",
    Unauthorized 401 "Not signed in, or a bad token",
    Forbidden 403 "Not allowed, or the token lacks the scope",
    NotFound 404 "Not found, or not visible to the caller"
);

/// `{"message": "404 Project Not Found"}`, or a validation hash
/// `{"message": {"path": ["has already been taken"]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MessageError {
    pub message: MessageValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MessageValue {
    Text(String),
    /// Problems by field name.
    Fields(BTreeMap<String, Vec<String>>),
}

/// `{"error": "name is missing"}`; a token without the needed scope also gets
/// `error_description` and `scope`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ParamError {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error_description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scope: Option<String>,
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// `GET /version`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Version {
    pub version: String,
    pub revision: String,
}

/// A user. The fields after `created_at` are shown only to administrators and to
/// the user themself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub state: UserStateName,
    pub locked: bool,
    #[schema(required = true)]
    pub avatar_url: Option<String>,
    pub web_url: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub is_admin: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub bot: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub external: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub can_create_group: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub can_create_project: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub two_factor_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub namespace_id: Option<i64>,
}

/// A group (`Entities::Group`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Group {
    pub id: i64,
    pub web_url: String,
    pub name: String,
    pub path: String,
    pub description: String,
    pub visibility: VisibilityLevel,
    #[schema(required = true)]
    pub avatar_url: Option<String>,
    /// `Top / Middle / Name`.
    pub full_name: String,
    pub full_path: String,
    #[schema(required = true)]
    pub parent_id: Option<i64>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Only with `statistics=true` (Reporter or higher in the group).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub statistics: Option<GroupStatistics>,
}

/// Storage figures of a group (GitLab's root storage statistics, proxy part).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupStatistics {
    /// Bytes the dependency proxy caches of this group and the groups below it.
    pub dependency_proxy_size: i64,
}

/// The namespace a project is in.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectNamespace {
    pub id: i64,
    pub name: String,
    pub path: String,
    pub kind: NamespaceKindName,
    pub full_path: String,
    #[schema(required = true)]
    pub parent_id: Option<i64>,
    #[schema(required = true)]
    pub avatar_url: Option<String>,
    pub web_url: String,
}

/// The caller's membership in a project or its group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectAccess {
    #[schema(schema_with = access_level_schema)]
    pub access_level: i64,
    pub notification_level: i64,
}

/// The caller's access to a project: directly, and through its group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectPermissions {
    #[schema(required = true)]
    pub project_access: Option<ProjectAccess>,
    #[schema(required = true)]
    pub group_access: Option<ProjectAccess>,
}

/// A project's container registry cleanup policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContainerExpirationPolicy {
    pub cadence: String,
    pub enabled: bool,
    #[schema(required = true)]
    pub keep_n: Option<i64>,
    #[schema(required = true)]
    pub older_than: Option<String>,
    #[schema(required = true)]
    pub name_regex: Option<String>,
    /// The newer name of `name_regex` (the same value).
    #[schema(required = true)]
    pub name_regex_delete: Option<String>,
    #[schema(required = true)]
    pub name_regex_keep: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub next_run_at: Option<String>,
}

/// A project (`Entities::Project`); `permissions` only for signed-in callers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Project {
    pub id: i64,
    pub description: String,
    pub name: String,
    pub name_with_namespace: String,
    pub path: String,
    pub path_with_namespace: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(required = true)]
    pub default_branch: Option<String>,
    pub tag_list: Vec<String>,
    pub topics: Vec<String>,
    pub web_url: String,
    #[schema(required = true)]
    pub readme_url: Option<String>,
    #[schema(required = true)]
    pub avatar_url: Option<String>,
    #[schema(format = DateTime)]
    pub last_activity_at: String,
    pub namespace: ProjectNamespace,
    pub archived: bool,
    pub visibility: VisibilityLevel,
    pub container_registry_enabled: bool,
    pub container_registry_access_level: RegistryAccessLevel,
    /// `host[:port]/<project path>`: where the project's images are pushed.
    pub container_registry_image_prefix: String,
    #[schema(required = true)]
    pub creator_id: Option<i64>,
    pub container_expiration_policy: ContainerExpirationPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub permissions: Option<ProjectPermissions>,
    /// Only with `statistics=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub statistics: Option<ProjectStatistics>,
}

/// Storage figures of a project (GitLab's `statistics`, registry part).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProjectStatistics {
    /// Deduplicated bytes of the project's container registry: the unique layers of
    /// images reachable from its tags.
    pub container_registry_size: i64,
}

/// A member of a project or group (`Entities::Member`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Member {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub state: UserStateName,
    #[schema(required = true)]
    pub avatar_url: Option<String>,
    pub web_url: String,
    #[schema(schema_with = access_level_schema)]
    pub access_level: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `YYYY-MM-DD`.
    #[schema(required = true, format = Date)]
    pub expires_at: Option<String>,
    pub membership_state: String,
}

/// A personal access token; `token` (the secret) only when it was just created or
/// rotated.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PersonalAccessToken {
    pub id: i64,
    pub name: String,
    pub revoked: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub description: String,
    #[schema(schema_with = pat_scopes_schema)]
    pub scopes: Vec<String>,
    pub user_id: i64,
    #[schema(required = true, format = DateTime)]
    pub last_used_at: Option<String>,
    pub active: bool,
    /// `YYYY-MM-DD`.
    #[schema(required = true, format = Date)]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub token: Option<String>,
}

/// A deploy token; `token` (the secret) only when it was just created.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeployToken {
    pub id: i64,
    pub name: String,
    pub username: String,
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(schema_with = deploy_scopes_schema)]
    pub scopes: Vec<String>,
    pub revoked: bool,
    pub expired: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub token: Option<String>,
}

/// A tag as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tag {
    pub name: String,
    /// `<repository path>:<tag>`.
    pub path: String,
    /// `host[:port]/<repository path>:<tag>`.
    pub location: String,
}

/// One tag with its image's details.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagDetails {
    pub name: String,
    pub path: String,
    pub location: String,
    /// The config digest's hex (`null` for an index).
    #[schema(required = true)]
    pub revision: Option<String>,
    #[schema(required = true)]
    pub short_revision: Option<String>,
    pub digest: String,
    /// When the image was built (its config's `created`; the push time when it has
    /// none). Reproducible builds set it to 1970 or 1980.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the tag was pushed (or restored): what cleanup policies order and age
    /// tags by (Berth's field).
    #[schema(format = DateTime)]
    pub pushed_at: String,
    pub total_size: i64,
}

/// A container repository; the optional fields appear when asked for (`tags`,
/// `tags_count`, `size`) or when the caller may delete it (`delete_api_path`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Repository {
    pub id: i64,
    /// The repository's name inside its project (`""` for the project's own image).
    pub name: String,
    pub path: String,
    pub project_id: i64,
    pub location: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(required = true, format = DateTime)]
    pub cleanup_policy_started_at: Option<String>,
    /// `null`, or `delete_scheduled`, `delete_ongoing`, `delete_failed`.
    #[schema(required = true)]
    pub status: Option<String>,
    pub expiration_policy_cleanup_status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tags_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub tags: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub delete_api_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub size: Option<i64>,
}

/// The container registry's instance settings (`/application/settings`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationSettings {
    /// Concurrent cleanup workers.
    pub container_registry_expiration_policies_worker_capacity: u64,
    /// Seconds one cleanup turn may spend deleting.
    pub container_registry_delete_tags_service_timeout: u64,
    /// Tags one cleanup turn may delete.
    pub container_registry_cleanup_tags_service_max_list_size: u64,
    /// Minutes a registry token lasts.
    pub container_registry_token_expire_delay: u64,
    /// Whether anyone may create an account at `/users/sign_up`.
    pub signup_enabled: bool,
    /// Whether users other than administrators may create top-level groups.
    pub can_create_group: bool,
}

/// A tag in a cleanup preview, with the step of the policy that decided it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CleanupPreviewTag {
    pub name: String,
    pub digest: String,
    /// The image's build time (its config's `created`).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// The tag's push time, by which `keep_n` and `older_than` decide.
    #[schema(format = DateTime)]
    pub pushed_at: String,
    /// `latest`, `name_regex`, `name_regex_keep`, `no_manifest`, `keep_n`,
    /// `older_than`, `delete`, or `protected by rule N` (a protected or immutable
    /// tag, which cleanup never deletes).
    pub step: String,
}

/// GitLab's answer to a deletion it has accepted: `{"message": "202 Accepted"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Accepted {
    #[schema(example = "202 Accepted")]
    pub message: String,
}

impl Accepted {
    pub fn response() -> axum::response::Response {
        use axum::response::IntoResponse;
        (
            axum::http::StatusCode::ACCEPTED,
            axum::Json(Accepted {
                message: "202 Accepted".into(),
            }),
        )
            .into_response()
    }
}

/// The answer to a bulk tag deletion (beyond GitLab, whose answer is empty).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BulkDeleteAccepted {
    /// Tags the rules select that stay because a protection rule forbids the caller
    /// to delete them (immutable tags always).
    pub protected_tags_skipped: u64,
}

/// What a cleanup run would do to one repository.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CleanupPreviewRepository {
    pub id: i64,
    pub path: String,
    pub delete: Vec<CleanupPreviewTag>,
    pub keep: Vec<CleanupPreviewTag>,
}

/// What a cleanup run would do now (beyond GitLab).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CleanupPreview {
    pub name_regex: String,
    pub repositories: Vec<CleanupPreviewRepository>,
}

/// A tag that cleanup (a policy, a bulk delete or `berth cleanup`) deleted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CleanupLogEntry {
    pub repository_id: i64,
    pub repository_path: String,
    pub tag: String,
    pub digest: String,
    /// `policy`, `bulk_delete` or `command`.
    pub reason: String,
    #[schema(format = DateTime)]
    pub deleted_at: String,
    /// The cleanup run that deleted it (`POST /projects/:id/registry/cleanup_runs/:run_id/restore`
    /// undoes the run).
    #[schema(required = true)]
    pub cleanup_run_id: Option<i64>,
    /// `deleted`, or `kept`: the run selected the tag but a protection rule forbids
    /// deleting it (`deleted_at` is then when the run kept it).
    pub outcome: String,
    /// Why a kept tag stayed, as the cleanup preview says it: `protected by rule N`.
    #[schema(required = true)]
    pub step: Option<String>,
    /// The protection rule that kept the tag.
    #[schema(required = true)]
    pub protected_by_rule: Option<i64>,
}

/// Who changed a tag: `kind` is the credential (`user`, `personal_access_token`,
/// `deploy_token`, `build`, `anonymous`) or Berth itself (`cleanup_policy`, `command`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagActor {
    pub kind: String,
    #[schema(required = true)]
    pub id: Option<i64>,
    #[schema(required = true)]
    pub username: Option<String>,
}

/// One change of a tag (Berth's extension).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagHistoryEvent {
    /// `pushed` (new, or moved from `previous_digest`), `deleted` or `restored`.
    pub action: String,
    pub digest: String,
    #[schema(required = true)]
    pub previous_digest: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// `null` for changes recorded before Berth kept who made them.
    #[schema(required = true)]
    pub actor: Option<TagActor>,
    /// The cleanup run that deleted the tag, when one did.
    #[schema(required = true)]
    pub cleanup_run_id: Option<i64>,
}

/// A deleted tag that can still be restored (Berth's extension).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeletedTag {
    pub name: String,
    pub digest: String,
    #[schema(format = DateTime)]
    pub deleted_at: String,
    #[schema(required = true)]
    pub deleted_by: Option<TagActor>,
    #[schema(required = true)]
    pub cleanup_run_id: Option<i64>,
    /// Until when garbage collection keeps its manifest for sure (the deletion plus
    /// the review delay); later only while something else keeps it.
    #[schema(format = DateTime)]
    pub restorable_until: String,
}

/// What undoing a cleanup run did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CleanupRunRestore {
    pub run_id: i64,
    pub restored: u64,
    /// Their manifests are gone (garbage collected).
    pub gone: u64,
    /// Pushed again or restored since the run deleted them: left as they are.
    pub skipped: u64,
}

/// Restoring a tag.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RestoreTagParams {
    /// The digest to put the tag back on (default: the one it had before its last
    /// deletion); one the tag had.
    pub digest: Option<String>,
    /// Move the tag back even when it now points at another digest.
    pub force: Option<bool>,
}

// ---------------------------------------------------------------------------
// Request bodies (JSON; forms and query strings are read the same way)
// ---------------------------------------------------------------------------

// Group, project and user paths carry the pattern of `berth_core::paths`: letters and
// digits, single `.`, `_` or `-` between (the handlers also refuse `.git`/`.atom` ends).

/// A group or project: its id or its URL-encoded full path.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum IdOrPath {
    Id(i64),
    Path(String),
}

// Parameters that take a boolean also accept `"true"`, `1` and the like.

/// A new user (administrators).
#[derive(Serialize, ToSchema)]
pub struct CreateUser {
    #[schema(pattern = r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$", max_length = 255)]
    pub username: String,
    #[schema(min_length = 1)]
    pub name: String,
    pub email: Option<String>,
    #[schema(min_length = 8)]
    pub password: Option<String>,
    pub force_random_password: Option<bool>,
    pub reset_password: Option<bool>,
    pub admin: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct UpdateUser {
    /// Must be the current username (renames are not supported).
    pub username: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    #[schema(min_length = 8)]
    pub password: Option<String>,
    pub admin: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct CreateGroup {
    #[schema(min_length = 1)]
    pub name: String,
    #[schema(pattern = r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$", max_length = 255)]
    pub path: String,
    #[schema(inline)]
    pub visibility: Option<VisibilityLevel>,
    pub description: Option<String>,
    /// Create a subgroup of this group.
    pub parent_id: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct UpdateGroup {
    pub name: Option<String>,
    /// A new path moves the group and everything below it.
    #[schema(pattern = r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$", max_length = 255)]
    pub path: Option<String>,
    #[schema(inline)]
    pub visibility: Option<VisibilityLevel>,
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TransferGroup {
    /// The new parent group; none makes the group top-level.
    pub group_id: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CreateProject {
    /// At least one of `name` and `path`.
    pub name: Option<String>,
    #[schema(pattern = r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$", max_length = 255)]
    pub path: Option<String>,
    /// Defaults to the caller's own namespace.
    #[schema(inline)]
    pub namespace_id: Option<IdOrPath>,
    #[schema(inline)]
    pub visibility: Option<VisibilityLevel>,
    pub description: Option<String>,
    #[schema(inline)]
    pub container_registry_access_level: Option<RegistryAccessLevel>,
    /// Deprecated alias of `container_registry_access_level`.
    pub container_registry_enabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct ExpirationPolicyAttributes {
    pub enabled: Option<bool>,
    #[schema(schema_with = cadence_schema)]
    pub cadence: Option<String>,
    #[schema(schema_with = keep_n_schema)]
    pub keep_n: Option<i64>,
    #[schema(schema_with = older_than_schema)]
    pub older_than: Option<String>,
    pub name_regex: Option<String>,
    pub name_regex_delete: Option<String>,
    pub name_regex_keep: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UpdateProject {
    pub name: Option<String>,
    /// A new path moves the project's registry with it.
    #[schema(pattern = r"^[A-Za-z0-9]+([._-][A-Za-z0-9]+)*$", max_length = 255)]
    pub path: Option<String>,
    pub description: Option<String>,
    #[schema(inline)]
    pub visibility: Option<VisibilityLevel>,
    #[schema(inline)]
    pub container_registry_access_level: Option<RegistryAccessLevel>,
    pub container_registry_enabled: Option<bool>,
    pub container_expiration_policy_attributes: Option<ExpirationPolicyAttributes>,
}

#[derive(Serialize, ToSchema)]
pub struct TransferProject {
    /// The target namespace: an id or a full path.
    #[schema(inline)]
    pub namespace: IdOrPath,
}

#[derive(Serialize, ToSchema)]
pub struct AddMember {
    /// `user_id` or `username`.
    pub user_id: Option<i64>,
    pub username: Option<String>,
    #[schema(schema_with = access_level_schema)]
    pub access_level: i64,
    /// `YYYY-MM-DD`, after today.
    #[schema(format = Date)]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UpdateMember {
    #[schema(schema_with = access_level_schema)]
    pub access_level: i64,
    #[schema(format = Date)]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatePersonalAccessToken {
    pub name: String,
    #[schema(schema_with = pat_scopes_schema)]
    pub scopes: Vec<String>,
    /// `YYYY-MM-DD`, after today.
    #[schema(format = Date)]
    pub expires_at: Option<String>,
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RotatePersonalAccessToken {
    /// `YYYY-MM-DD`, after today; defaults to a week from today.
    #[schema(format = Date)]
    pub expires_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreateDeployToken {
    pub name: String,
    #[schema(schema_with = deploy_scopes_schema)]
    pub scopes: Vec<String>,
    /// An ISO-8601 date or date-time.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// Defaults to `gitlab+deploy-token-<id>`.
    pub username: Option<String>,
}

/// New instance settings (administrators); each number at least 1.
#[derive(Serialize, ToSchema)]
pub struct UpdateApplicationSettings {
    #[schema(minimum = 1)]
    pub container_registry_expiration_policies_worker_capacity: Option<i64>,
    #[schema(minimum = 1)]
    pub container_registry_delete_tags_service_timeout: Option<i64>,
    #[schema(minimum = 1)]
    pub container_registry_cleanup_tags_service_max_list_size: Option<i64>,
    /// Minutes a registry token lasts (default: `token_expiry` of the configuration;
    /// at most a week).
    #[schema(minimum = 1, maximum = 10080)]
    pub container_registry_token_expire_delay: Option<i64>,
    /// Whether anyone may create an account at `/users/sign_up` (off by default).
    pub signup_enabled: Option<bool>,
    /// Whether users other than administrators may create top-level groups (on by
    /// default).
    pub can_create_group: Option<bool>,
}

// ---------------------------------------------------------------------------
// Query parameters
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    Desc,
}

/// GitLab's offset pagination.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page number (default 1).
    pub page: Option<i64>,
    /// Items per page (default 20, at most 100).
    pub per_page: Option<i64>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserOrderBy {
    Id,
    Username,
    Name,
    CreatedAt,
    UpdatedAt,
    LastActivityOn,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListParams {
    pub search: Option<String>,
    pub username: Option<String>,
    pub active: Option<bool>,
    pub blocked: Option<bool>,
    pub admins: Option<bool>,
    #[param(inline)]
    pub order_by: Option<UserOrderBy>,
    /// Default `desc`.
    #[param(inline)]
    pub sort: Option<SortOrder>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupOrderBy {
    Name,
    Path,
    Id,
    Similarity,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GroupListParams {
    pub search: Option<String>,
    pub owned: Option<bool>,
    #[param(schema_with = access_level_schema)]
    pub min_access_level: Option<i64>,
    pub all_available: Option<bool>,
    pub top_level_only: Option<bool>,
    #[param(inline)]
    pub order_by: Option<GroupOrderBy>,
    /// Default `asc`.
    #[param(inline)]
    pub sort: Option<SortOrder>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectOrderBy {
    Id,
    Name,
    Path,
    CreatedAt,
    UpdatedAt,
    LastActivityAt,
    Similarity,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectListParams {
    pub search: Option<String>,
    #[param(inline)]
    pub visibility: Option<VisibilityLevel>,
    pub owned: Option<bool>,
    pub membership: Option<bool>,
    #[param(schema_with = access_level_schema)]
    pub min_access_level: Option<i64>,
    #[param(inline)]
    pub order_by: Option<ProjectOrderBy>,
    /// Default `desc`.
    #[param(inline)]
    pub sort: Option<SortOrder>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberListParams {
    /// Name or username contains.
    pub query: Option<String>,
    pub user_ids: Option<Vec<i64>>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepositoryListParams {
    /// Include each repository's tags.
    pub tags: Option<bool>,
    pub tags_count: Option<bool>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepositoryParams {
    pub tags: Option<bool>,
    pub tags_count: Option<bool>,
    /// Include the deduplicated size of the repository's images.
    pub size: Option<bool>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TagPagination {
    Keyset,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TagOrderBy {
    Name,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TagListParams {
    /// `keyset` pages by name and links only the next page (signed-in callers).
    #[param(inline)]
    pub pagination: Option<TagPagination>,
    #[param(inline)]
    pub order_by: Option<TagOrderBy>,
    #[param(inline)]
    pub sort: Option<SortOrder>,
    /// Keyset pagination: the name after which the page starts.
    pub last: Option<String>,
}

/// Cleanup rules: for a bulk delete, or to preview a policy before saving it.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BulkDeleteParams {
    /// Tags to delete (`name_regex` is the older name); one of them is required.
    pub name_regex_delete: Option<String>,
    pub name_regex: Option<String>,
    /// Tags to keep, even if they match `name_regex_delete`.
    pub name_regex_keep: Option<String>,
    /// Keep this many newest matching tags.
    pub keep_n: Option<i64>,
    /// Delete only tags older than this (e.g. `7d`, `1month`).
    pub older_than: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Active,
    Inactive,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PersonalTokenListParams {
    /// Administrators: whose tokens (default: everyone's); others: only their own.
    pub user_id: Option<i64>,
    #[param(inline)]
    pub state: Option<TokenState>,
    pub revoked: Option<bool>,
    pub search: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeployTokenListParams {
    /// Leave out expired tokens.
    pub active: Option<bool>,
    /// Keep tokens with any of these scopes.
    #[param(schema_with = deploy_scopes_schema)]
    pub scopes: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mirrored enums serialise exactly as the domain names them.
    #[test]
    fn enum_names_match_the_domain() {
        let name = |v: serde_json::Value| v.as_str().unwrap().to_string();
        for v in [
            Visibility::Private,
            Visibility::Internal,
            Visibility::Public,
        ] {
            let mirrored = serde_json::to_value(VisibilityLevel::from(v)).unwrap();
            assert_eq!(name(mirrored), v.as_str());
        }
        for a in [
            RegistryAccess::Enabled,
            RegistryAccess::Private,
            RegistryAccess::Disabled,
        ] {
            let mirrored = serde_json::to_value(RegistryAccessLevel::from(a)).unwrap();
            assert_eq!(name(mirrored), a.as_str());
        }
        for s in [UserState::Active, UserState::Blocked] {
            let mirrored = serde_json::to_value(UserStateName::from(s)).unwrap();
            assert_eq!(name(mirrored), s.as_str());
        }
        assert_eq!(access_levels(), vec![10, 20, 30, 40, 50]);
    }
}
