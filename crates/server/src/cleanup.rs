//! Running the cleanup engine of `berth-core` against a repository: plan (which tags
//! go and which step decided each), and apply (delete them in batches, each batch one
//! transaction). Used by bulk tag deletion, cleanup policies and the preview.

use berth_core::cleanup::{evaluate, Rules, Step, TagFacts};
use berth_meta::{Meta, MetaError, TagInfo};

/// Tags ended per transaction, so readers never wait long behind a big run.
pub const DELETE_BATCH: usize = 100;

pub struct Plan {
    pub tags: Vec<TagInfo>,
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn doomed(&self) -> impl Iterator<Item = &TagInfo> {
        self.tags
            .iter()
            .zip(&self.steps)
            .filter(|(_, s)| s.deletes())
            .map(|(t, _)| t)
    }
}

/// Decide every live tag of repository `id` under `rules` at time `now`.
pub async fn plan(meta: &dyn Meta, id: i64, rules: &Rules, now: i64) -> Result<Plan, MetaError> {
    let tags = meta.all_tags(id).await?;
    let facts: Vec<TagFacts> = tags
        .iter()
        .map(|t| TagFacts {
            name: t.name.clone(),
            // Live tags always point at a manifest of the repository (the listing
            // joins them); a dangling one would not be listed at all.
            has_manifest: !t.digest.is_empty(),
            created_at: t.created_at,
        })
        .collect();
    let steps = evaluate(&facts, rules, now);
    Ok(Plan { tags, steps })
}

/// Delete `names` from repository `id` in batches; returns how many tags ended.
/// `keep_going` is asked before each batch (time limits stop a run part-way).
pub async fn delete_in_batches(
    meta: &dyn Meta,
    id: i64,
    names: &[String],
    now: impl Fn() -> i64,
    mut keep_going: impl FnMut() -> bool,
) -> Result<u64, MetaError> {
    let mut deleted = 0;
    for batch in names.chunks(DELETE_BATCH) {
        if !keep_going() {
            break;
        }
        deleted += meta.delete_tags(id, batch, now()).await?;
    }
    Ok(deleted)
}

/// A new project's cleanup policy (GitLab's defaults): disabled, daily, keep 10,
/// older than 90 days, every tag (`.*`) a candidate, none kept by regex.
pub fn default_policy() -> berth_meta::ExpirationPolicy {
    berth_meta::ExpirationPolicy {
        enabled: false,
        cadence: "1d".into(),
        keep_n: Some(10),
        older_than: Some("90d".into()),
        name_regex: Some(".*".into()),
        name_regex_keep: None,
        next_run_at: None,
    }
}

/// The policy rules of a stored policy, checked as they would be when saved.
pub fn rules_of(
    p: &berth_meta::ExpirationPolicy,
) -> Result<Rules, berth_core::cleanup::PolicyError> {
    Rules::new(
        p.name_regex.as_deref(),
        p.name_regex_keep.as_deref(),
        p.keep_n,
        p.older_than.as_deref(),
    )
}
