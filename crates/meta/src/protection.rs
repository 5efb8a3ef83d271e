//! Protection rules of a project's registry: protected repositories, protected tags
//! and immutable tags (the decisions are `berth_core::protection`'s).

use async_trait::async_trait;
use berth_core::protection::{ProtectionLevel, Rule, RuleKind};

use crate::Result;

/// A stored rule as the API shows it: a repository rule's pattern carries its
/// project's current full path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionRule {
    pub id: i64,
    pub project_id: i64,
    pub kind: RuleKind,
    pub pattern: String,
    pub push: Option<ProtectionLevel>,
    pub delete: Option<ProtectionLevel>,
    pub immutable: bool,
}

impl ProtectionRule {
    pub fn rule(&self) -> Rule {
        Rule {
            id: self.id,
            kind: self.kind,
            pattern: self.pattern.clone(),
            push: self.push,
            delete: self.delete,
            immutable: self.immutable,
        }
    }
}

/// A rule's fields as saved. A repository rule's `pattern` is relative to its
/// project's full path (what follows it: `""`, `/image`, `/*`), so it follows the
/// project when it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFields {
    pub pattern: String,
    pub push: Option<ProtectionLevel>,
    pub delete: Option<ProtectionLevel>,
    pub immutable: bool,
}

#[async_trait]
pub trait ProtectionMeta: Send + Sync {
    /// A project's rules of one kind, by id.
    async fn protection_rules(
        &self,
        project_id: i64,
        kind: RuleKind,
    ) -> Result<Vec<ProtectionRule>>;
    /// Every rule of the project that owns the repository at `path` (one indexed
    /// query: pushes and deletes ask it on each request). Empty for an unknown path.
    async fn protection_rules_of_repository(&self, path: &str) -> Result<Vec<ProtectionRule>>;
    /// Save a new rule. Refused with `Conflict` when the project has a rule of this
    /// kind with the same pattern, or already `max_of_kind` rules of this kind.
    async fn create_protection_rule(
        &self,
        project_id: i64,
        kind: RuleKind,
        fields: &RuleFields,
        max_of_kind: Option<usize>,
        now: i64,
    ) -> Result<ProtectionRule>;
    /// Replace a rule's fields; `None` when the project has no such rule of this kind.
    async fn update_protection_rule(
        &self,
        project_id: i64,
        kind: RuleKind,
        id: i64,
        fields: &RuleFields,
    ) -> Result<Option<ProtectionRule>>;
    /// Whether the rule existed.
    async fn delete_protection_rule(
        &self,
        project_id: i64,
        kind: RuleKind,
        id: i64,
    ) -> Result<bool>;
}
