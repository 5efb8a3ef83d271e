//! One test suite for every metadata backend. Each test is a function of
//! `&dyn TestMeta`; `meta_suite!` turns the whole list into `#[tokio::test]`s for one
//! backend, so SQLite and PostgreSQL are held to exactly the same behaviour.

pub(crate) mod cleanup;
pub(crate) mod history;
pub(crate) mod instance;
pub(crate) mod org;
mod postgres_nodes;
pub(crate) mod protection;
pub(crate) mod proxy;
pub(crate) mod registry;
pub(crate) mod repositories;
pub(crate) mod sessions;
mod sqlite_plans;

use async_trait::async_trait;
use sqlx::Row;

use crate::testing::TestDatabase;
use crate::{Meta, PgMeta, SqliteMeta};

/// A backend under test, with a little raw SQL for checks the traits do not expose.
/// The SQL uses `$1` for its one parameter, which both backends understand.
#[async_trait]
pub(crate) trait TestMeta: Meta {
    async fn sql_i64(&self, sql: &str, id: i64) -> i64;
    async fn sql_exec(&self, sql: &str, id: i64);
    /// Manifest lookups answered from the cache so far.
    fn cache_hits(&self) -> u64;
    /// Returns once manifest lookups can be cached (PostgreSQL: the listener is up).
    async fn cache_ready(&self);
}

#[async_trait]
impl TestMeta for SqliteMeta {
    async fn sql_i64(&self, sql: &str, id: i64) -> i64 {
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_one(&self.read)
            .await
            .unwrap();
        row.get(0)
    }

    async fn sql_exec(&self, sql: &str, id: i64) {
        sqlx::query(sql)
            .bind(id)
            .execute(self.writer())
            .await
            .unwrap();
    }

    fn cache_hits(&self) -> u64 {
        self.cache.hits()
    }

    async fn cache_ready(&self) {}
}

#[async_trait]
impl TestMeta for PgMeta {
    async fn sql_i64(&self, sql: &str, id: i64) -> i64 {
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        row.get(0)
    }

    async fn sql_exec(&self, sql: &str, id: i64) {
        sqlx::query(sql)
            .bind(id)
            .execute(self.writer())
            .await
            .unwrap();
    }

    fn cache_hits(&self) -> u64 {
        self.cache.hits()
    }

    async fn cache_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.cache_stamp("p/r").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the node never listened"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// A fresh backend for one test; what it holds goes when it is dropped.
pub(crate) struct TestDb {
    // Declared first so the pool closes before the database is dropped.
    meta: Box<dyn TestMeta>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

impl TestDb {
    pub(crate) fn meta(&self) -> &dyn TestMeta {
        &*self.meta
    }
}

pub(crate) async fn open_sqlite(_test: &str) -> Option<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let meta = SqliteMeta::open(&dir.path().join("m.db")).await.unwrap();
    Some(TestDb {
        meta: Box::new(meta),
        _dir: Some(dir),
        _database: None,
    })
}

/// `None` (the test is skipped, loudly) when PostgreSQL is unreachable and not
/// required; see [`crate::testing`].
pub(crate) async fn open_postgres(test: &str) -> Option<TestDb> {
    let database = TestDatabase::create(&format!("berth-meta {test}")).await?;
    let meta = PgMeta::connect(database.url(), 4).await.unwrap();
    Some(TestDb {
        meta: Box::new(meta),
        _dir: None,
        _database: Some(database),
    })
}

/// The whole suite as `#[tokio::test]`s against the backend `$open` makes.
macro_rules! meta_suite {
    ($open:path) => {
        $crate::suite::meta_suite!(@tests $open;
            registry::manifest_needs_reachable_blobs_and_tags_move,
            registry::conditional_tag_writes_hold_inside_the_transaction,
            registry::index_children_and_referrers,
            registry::uploads_expire,
            registry::publishing_an_upload_links_its_blob_and_ends_it,
            registry::manifest_lookups_follow_every_write,
            registry::own_pushes_leave_other_repositories_cached,
            registry::offline_sweep_and_pending_deletions_in_batches,
            org::user_gets_personal_namespace,
            org::username_conflicts_ignore_case,
            org::update_user_changes_only_given_fields,
            org::users_page_count_and_search,
            org::nested_groups_and_paths,
            org::group_nesting_is_limited_to_twenty_ancestors,
            org::update_group_changes_only_given_fields,
            org::groups_page_count_and_search,
            org::projects_paths_and_lookups,
            org::update_project_changes_only_given_fields,
            org::members_upsert_list_and_remove,
            org::roles_take_the_highest_inherited_level,
            org::expired_memberships_do_not_count,
            org::user_namespace_owner_is_owner,
            org::project_roles_agree_with_project_role,
            org::personal_tokens,
            org::deploy_tokens_and_coverage,
            org::jobs_run_then_finish,
            org::settings_upsert,
            repositories::repositories_of_pages_by_path_with_tag_counts,
            repositories::repositories_under_walk_a_group_by_path,
            repositories::search_repositories_filters_sorts_and_pages,
            repositories::repository_names_and_counts_follow_moves_and_deletions,
            repositories::scheduled_deletion_hides_repository,
            repositories::tag_pages_offset_and_keyset,
            repositories::tag_details,
            repositories::tag_search_filters_sorts_and_pages_in_the_database,
            repositories::repository_size_counts_shared_blobs_once,
            repositories::project_registry_sizes_count_each_projects_layers_once,
            repositories::delete_tags_keeps_manifests,
            repositories::delete_repository_removes_everything,
            repositories::leases,
            repositories::expiration_policy_upsert,
            repositories::move_project_moves_its_repositories,
            repositories::move_group_moves_everything_below,
            repositories::move_group_keeps_the_nesting_limit_and_repository_paths,
            repositories::delete_project_takes_everything_but_blobs,
            repositories::delete_group_takes_subgroups_projects_and_proxy_cache,
            sessions::sessions_expire_and_end,
            sessions::a_users_sessions_end_together_but_the_kept_one,
            sessions::refresh_tokens_are_found_by_digest_until_they_expire,
            cleanup::a_policy_run_from_due_to_done,
            cleanup::the_worker_capacity_bounds_all_claims_together,
            history::every_change_of_a_tag_is_recorded_with_its_actor,
            history::restore_puts_a_tag_back_or_says_why_not,
            history::gc_keeps_a_manifest_a_tag_left_within_the_window,
            history::a_batch_review_requeues_a_child_its_index_left,
            history::a_cleanup_run_is_undone_with_counts,
            history::history_is_pruned_after_the_retention,
            history::admin_sees_recent_runs_and_what_gc_freed,
            instance::first_stored_secret_wins,
            instance::blob_lock_shared_excludes_exclusive,
            instance::login_failures_are_counted_by_key_and_pruned,
            protection::rules_are_saved_limited_and_found_by_repository,
            proxy::proxy_cache_settings_manifests_blobs_and_purges,
        );
    };
    (@tests $open:path; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                if let Some(db) = $open(stringify!($name)).await {
                    $crate::suite::$module::$name(db.meta()).await;
                }
            }
        )*
    };
}
pub(crate) use meta_suite;
