//! Running the cleanup engine of `berth-core` against a repository: plan (which tags
//! go and which step decided each), and apply (delete them in batches, each batch one
//! transaction). Used by bulk tag deletion, cleanup policies and the preview.

use berth_core::cleanup::{evaluate, Rules, Step, TagFacts};
use berth_core::protection::{Op, Standing};
use berth_meta::{Actor, Meta, MetaError, TagInfo};

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

/// Decide every live tag of repository `id` under `rules` at time `now`, as a
/// cleanup run does: protected and immutable tags stay ([`Step::Protected`]).
pub async fn plan(meta: &dyn Meta, id: i64, rules: &Rules, now: i64) -> Result<Plan, MetaError> {
    plan_as(meta, id, rules, now, Standing::NOBODY).await
}

/// [`plan`] for someone: the tags protection rules forbid `who` to delete stay.
pub async fn plan_as(
    meta: &dyn Meta,
    id: i64,
    rules: &Rules,
    now: i64,
    who: Standing,
) -> Result<Plan, MetaError> {
    let tags = meta.all_tags(id).await?;
    let facts: Vec<TagFacts> = tags
        .iter()
        .map(|t| TagFacts {
            name: t.name.clone(),
            // Live tags always point at a manifest of the repository (the listing
            // joins them); a dangling one would not be listed at all.
            has_manifest: !t.digest.is_empty(),
            // The tag's push time, as GitLab's registry orders and ages tags: an
            // image's `created` is 1970 or 1980 in reproducible builds.
            created_at: t.pushed_at,
        })
        .collect();
    let mut steps = evaluate(&facts, rules, now);
    if let Some(repo) = meta.repository_info(id).await? {
        let guard = crate::protection::Guard::load(meta, &repo.path).await?;
        if !guard.is_empty() {
            for (t, step) in tags.iter().zip(steps.iter_mut()) {
                if !step.deletes() {
                    continue;
                }
                let one = [(t.name.as_str(), true)];
                if let Err(refused) = guard.check(&repo.path, &one, Op::Delete, who) {
                    *step = Step::Protected(refused.protection.rule_id);
                }
            }
        }
    }
    Ok(Plan { tags, steps })
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

/// Instance limits on cleanup work (GitLab's application settings of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Concurrent cleanup workers (`container_registry_expiration_policies_worker_capacity`).
    pub worker_capacity: usize,
    /// Seconds one worker turn may spend deleting (`container_registry_delete_tags_service_timeout`).
    pub delete_timeout_secs: u64,
    /// Tags one turn may delete (`container_registry_cleanup_tags_service_max_list_size`).
    pub max_list_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            worker_capacity: 4,
            delete_timeout_secs: 250,
            max_list_size: 200,
        }
    }
}

/// Which cleanup run a turn belongs to, and who runs it.
#[derive(Debug, Clone, Copy)]
pub struct RunBy<'a> {
    /// `policy`, `bulk_delete` or `command` (the cleanup log's reason).
    pub reason: &'a str,
    /// The run's id; `None`: the policy run the repository was scheduled by.
    pub run: Option<i64>,
    pub actor: &'a Actor,
    /// Whose standing protection rules are checked against: [`Standing::NOBODY`]
    /// for policies and `berth cleanup` (every protected tag stays), the caller's
    /// for a bulk deletion (protected tags they may delete go too).
    pub who: Standing,
}

/// What one turn over one repository did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Tags the policy wants gone at the start of the turn.
    pub doomed: usize,
    pub deleted: u64,
    /// False when a limit stopped the turn before every doomed tag was deleted.
    pub finished: bool,
    /// Tags the rules select that protection rules kept.
    pub protected: usize,
}

/// One turn of `rules` over a repository: delete at most `limits.max_list_size` of the
/// doomed tags, in batches, until `limits.delete_timeout_secs` has passed. Every
/// deletion is logged with `by`'s reason and run. `progress` is told after each batch.
pub async fn run_turn(
    meta: &dyn Meta,
    repository_id: i64,
    rules: &Rules,
    limits: Limits,
    by: RunBy<'_>,
    mut progress: impl FnMut(u64, usize),
) -> Result<Outcome, MetaError> {
    let started = std::time::Instant::now();
    let deadline = std::time::Duration::from_secs(limits.delete_timeout_secs);
    let plan = plan_as(meta, repository_id, rules, crate::state::now_ms(), by.who).await?;
    let mut kept = Vec::new();
    for (t, step) in plan.tags.iter().zip(&plan.steps) {
        if let Step::Protected(rule_id) = step {
            tracing::info!(repository_id, tag = %t.name, reason = by.reason, "cleanup kept the tag: {}", step.describe());
            kept.push(berth_meta::KeptTag {
                tag: t.name.clone(),
                digest: t.digest.clone(),
                rule_id: *rule_id,
            });
        }
    }
    let protected = kept.len();
    // The cleanup log says which rule kept each tag, as the preview does.
    meta.log_kept_tags(
        repository_id,
        &kept,
        by.reason,
        by.run,
        crate::state::now_ms(),
    )
    .await?;
    let doomed: Vec<String> = plan.doomed().map(|t| t.name.clone()).collect();
    // Every tag's facts go before the deleting starts: at 100,000 tags they are most
    // of what a run holds.
    drop(plan);
    let turn = &doomed[..doomed.len().min(limits.max_list_size)];
    let mut deleted = 0;
    let mut stopped = false;
    for batch in turn.chunks(DELETE_BATCH) {
        if started.elapsed() >= deadline {
            stopped = true;
            break;
        }
        deleted += meta
            .delete_tags_logged(
                repository_id,
                batch,
                by.reason,
                by.run,
                by.actor,
                crate::state::now_ms(),
            )
            .await?;
        progress(deleted, doomed.len());
    }
    Ok(Outcome {
        doomed: doomed.len(),
        deleted,
        finished: !stopped && turn.len() == doomed.len(),
        protected,
    })
}
