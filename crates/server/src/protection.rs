//! Enforcing protection rules (decided by `berth_core::protection`) where tags and
//! repositories change: `/v2` manifest pushes and deletes, blob uploads into a
//! protected repository, the REST API's tag and repository deletion, and cleanup. Rules are read on each request, so a token
//! minted before a rule existed is held to it; the caller's role is looked up only
//! when a rule matches, so unprotected pushes pay one indexed query, and manifest
//! reads pay nothing.

use std::collections::HashMap;

use berth_core::protection::{compile_tag_pattern, Op, Refusal, RuleSet, Standing};
use berth_meta::{Meta, MetaError, TagExpect};
use regex::Regex;

use crate::auth::Principal;

/// Compiled tag patterns by pattern text: rules are read on every push and delete,
/// and compiling their patterns each time cost more than the rest of the check. A
/// pattern is immutable text, so a compiled one never goes stale; the map is emptied
/// when it grows past [`COMPILED_MAX`] (patterns of deleted rules).
static COMPILED: std::sync::Mutex<Option<HashMap<String, Option<Regex>>>> =
    std::sync::Mutex::new(None);
const COMPILED_MAX: usize = 10_000;

fn compiled(pattern: &str) -> Option<Regex> {
    let mut guard = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(re) = map.get(pattern) {
        return re.clone();
    }
    if map.len() >= COMPILED_MAX {
        map.clear();
    }
    let re = compile_tag_pattern(pattern).ok();
    map.insert(pattern.to_string(), re.clone());
    re
}

fn rule_set(rules: &[berth_meta::ProtectionRule]) -> RuleSet {
    RuleSet::new_with(rules.iter().map(|r| r.rule()).collect(), compiled)
}

/// The rules of the project that owns a repository.
pub struct Guard {
    pub rules: RuleSet,
    /// The project the rules belong to (`None` when there are none).
    pub project_id: Option<i64>,
}

impl Guard {
    /// The rules that apply to the repository at `path` (one query).
    pub async fn load(meta: &dyn Meta, path: &str) -> Result<Guard, MetaError> {
        let rules = meta.protection_rules_of_repository(path).await?;
        Ok(Guard {
            project_id: rules.first().map(|r| r.project_id),
            rules: rule_set(&rules),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether an action on these tags (`(name, exists)`) of the repository at
    /// `path` touches any rule at all, so the caller's standing must be looked up.
    pub fn matters(&self, path: &str, tags: &[(&str, bool)], op: Op) -> bool {
        !self.is_empty()
            && (self.rules.repository(path, op).is_some()
                || tags
                    .iter()
                    .any(|(t, e)| self.rules.tag(t, op, *e).is_some()))
    }

    /// Check an action on the repository itself, then on each of `tags`.
    pub fn check(
        &self,
        path: &str,
        tags: &[(&str, bool)],
        op: Op,
        who: Standing,
    ) -> Result<(), Refusal> {
        self.rules.check_repository(path, op, who)?;
        for (t, exists) in tags {
            self.rules.check_tag(path, t, op, *exists, who)?;
        }
        Ok(())
    }
}

/// How protection rules see a principal in a project: a user (or the user a CI job
/// runs as) by their role; deploy tokens and anonymous callers meet no level.
pub async fn standing(
    meta: &dyn Meta,
    principal: &Principal,
    project_id: i64,
) -> Result<Standing, MetaError> {
    Ok(match principal.user() {
        Some(user) => Standing {
            role: meta
                .project_role(user.id, project_id, &crate::auth::today())
                .await?,
            admin: user.admin,
        },
        None => Standing::NOBODY,
    })
}

/// What a `/v2` request is about to change.
pub(crate) enum V2Change<'a> {
    /// A manifest pushed, and tagged `tag` when given.
    Push {
        tag: Option<&'a str>,
        digest: &'a berth_oci::Digest,
    },
    /// A blob upload started, continued or finished (or a blob mounted) into the
    /// repository: governed by repository rules' push level only, as tag rules are
    /// about tags and a blob has none.
    Upload,
    DeleteTag(&'a str),
    /// A manifest deleted with every tag on it.
    DeleteManifest(&'a berth_oci::Digest),
}

/// What an allowed `/v2` change was decided on, for the write to make its condition:
/// checked and written in separate transactions, two pushes racing to create one
/// immutable tag would both pass and the second move it.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// The tag's state the decision depended on (see
    /// [`berth_meta::RegistryMeta::put_manifest_if`]). `Absent` for a tag delete: the
    /// tag was not there when checked, so the answer is that it is unknown, whatever
    /// a concurrent push did since.
    pub tag: Option<TagExpect>,
    /// A manifest delete: the tags on it that were checked (see
    /// [`berth_meta::RegistryMeta::delete_manifest_if`]).
    pub manifest_tags: Option<Vec<String>>,
}

/// Refuse a `/v2` change that a protection rule forbids the token's holder (looked
/// up now, not when the token was minted), with `DENIED` naming the rule and the
/// level needed.
///
/// Allowed, it returns what the decision assumed (see [`Checked`]).
pub(crate) async fn check_v2(
    state: &crate::state::AppState,
    headers: &axum::http::HeaderMap,
    repository: &str,
    change: V2Change<'_>,
) -> crate::error::RegistryResult<Checked> {
    use berth_meta::ManifestRef;
    let meta = state.meta.as_ref();
    let guard = Guard::load(meta, repository).await?;
    if guard.is_empty() {
        return Ok(Checked::default());
    }
    // An upload session may be continued with a token that expired meanwhile (its
    // holder was checked by `authorize_expired_session`).
    let upload = matches!(change, V2Change::Upload);
    let mut tags: Vec<(String, bool)> = Vec::new();
    let mut expect = None;
    let mut manifest_tags = None;
    let op = match change {
        V2Change::Push { tag, digest } => {
            // Whether the tag exists matters only when a tag rule names it.
            if let Some(t) = tag.filter(|t| guard.rules.tag(t, Op::Push, true).is_some()) {
                let current = meta.manifest(repository, ManifestRef::Tag(t)).await?;
                // The decision hangs on the tag's state only where an immutable rule
                // lets a tag be created but not moved.
                if guard.rules.tag(t, Op::Push, true) != guard.rules.tag(t, Op::Push, false) {
                    expect = Some(match &current {
                        Some(m) => TagExpect::At(m.digest.clone()),
                        None => TagExpect::Absent,
                    });
                }
                match current {
                    // Pushing what the tag already holds changes nothing.
                    Some(m) if &m.digest == digest => {}
                    Some(_) => tags.push((t.to_string(), true)),
                    None => tags.push((t.to_string(), false)),
                }
            }
            Op::Push
        }
        V2Change::Upload => Op::Push,
        V2Change::DeleteTag(t) => {
            // A tag that does not exist is not protected: the answer is that it is unknown.
            if meta
                .manifest(repository, ManifestRef::Tag(t))
                .await?
                .is_some()
            {
                tags.push((t.to_string(), true));
            } else {
                expect = Some(TagExpect::Absent);
            }
            Op::Delete
        }
        V2Change::DeleteManifest(digest) => {
            if let Some(r) = meta.repository(repository).await? {
                for t in meta.all_tags(r.id).await? {
                    if t.digest == digest.as_str() {
                        tags.push((t.name, true));
                    }
                }
            }
            manifest_tags = Some(tags.iter().map(|(t, _)| t.clone()).collect());
            Op::Delete
        }
    };
    let tags: Vec<(&str, bool)> = tags.iter().map(|(t, e)| (t.as_str(), *e)).collect();
    let checked = Checked {
        tag: expect,
        manifest_tags,
    };
    if !guard.matters(repository, &tags, op) {
        return Ok(checked);
    }
    let claims = match crate::access::claims(state, headers) {
        None if upload => crate::access::session_claims(state, headers),
        c => c,
    };
    let who = match (claims, guard.project_id) {
        (Some(c), Some(project_id)) => {
            let principal = crate::access::principal_from_claims(state, &c).await?;
            standing(meta, &principal, project_id).await?
        }
        _ => Standing::NOBODY,
    };
    guard.check(repository, &tags, op, who).map_err(|r| {
        crate::error::RegistryError::new(crate::error::Code::Denied, r.to_string())
            .detail(serde_json::json!({ "name": repository, "rule": r.protection.rule_id }))
            .because(format!("protection rule {}", r.protection.rule_id))
    })?;
    Ok(checked)
}
