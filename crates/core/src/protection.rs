//! Protection rules (GitLab's protected container repositories, protected container
//! tags and immutable tags): which rule covers a repository or a tag, what level an
//! action on it needs, and whether a caller has it.
//!
//! A repository rule names repositories by their full path with `*` wildcards; a
//! tag rule names tags by an RE2 pattern anchored at both ends (as cleanup
//! patterns). Each rule sets the minimum level to push and to delete (`maintainer`,
//! `owner`, `admin`); an immutable tag rule sets neither: anyone who may push may
//! create a matching tag, and nobody may move or delete it afterwards. When several
//! rules match, the most restrictive wins, and a refusal names that rule.

use std::fmt;

use regex::Regex;

use crate::AccessLevel;

/// At most this many tag rules per project (GitLab's limit).
pub const MAX_TAG_RULES: usize = 5;
/// Longest tag name pattern (GitLab's limit).
pub const MAX_TAG_PATTERN: usize = 100;
/// Longest repository path pattern (GitLab's limit).
pub const MAX_REPOSITORY_PATTERN: usize = 255;

/// The minimum level a protection rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtectionLevel {
    Maintainer,
    Owner,
    /// Instance administrators only.
    Admin,
}

impl ProtectionLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtectionLevel::Maintainer => "maintainer",
            ProtectionLevel::Owner => "owner",
            ProtectionLevel::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<ProtectionLevel> {
        Some(match text {
            "maintainer" => ProtectionLevel::Maintainer,
            "owner" => ProtectionLevel::Owner,
            "admin" => ProtectionLevel::Admin,
            _ => return None,
        })
    }
}

impl fmt::Display for ProtectionLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleKind {
    Repository,
    Tag,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Repository => "repository",
            RuleKind::Tag => "tag",
        }
    }
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: i64,
    pub kind: RuleKind,
    /// A repository path with `*` wildcards, or a tag name RE2 pattern.
    pub pattern: String,
    pub push: Option<ProtectionLevel>,
    pub delete: Option<ProtectionLevel>,
    /// Tag rules only: nobody may move or delete a matching tag once it exists.
    pub immutable: bool,
}

/// Who is acting, as protection rules see it: their effective role in the project
/// and whether they are an instance administrator (who meets every level but
/// immutability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    pub role: Option<AccessLevel>,
    pub admin: bool,
}

impl Standing {
    /// Nobody in particular: a background job (cleanup policy), which meets no level.
    pub const NOBODY: Standing = Standing {
        role: None,
        admin: false,
    };

    pub fn meets(self, level: ProtectionLevel) -> bool {
        if self.admin {
            return true;
        }
        match level {
            ProtectionLevel::Maintainer => self.role >= Some(AccessLevel::Maintainer),
            ProtectionLevel::Owner => self.role >= Some(AccessLevel::Owner),
            ProtectionLevel::Admin => false,
        }
    }
}

/// An action a rule governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create a tag, move one, or push into a repository.
    Push,
    Delete,
}

/// What an action on something protected needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    Level(ProtectionLevel),
    /// Immutable: nobody, administrators included.
    Nobody,
}

/// The rule that decides an action, and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protection {
    pub rule_id: i64,
    pub kind: RuleKind,
    pub need: Need,
}

impl Protection {
    /// Whether `who` may act despite this protection.
    pub fn allows(&self, who: Standing) -> bool {
        match self.need {
            Need::Level(l) => who.meets(l),
            Need::Nobody => false,
        }
    }
}

/// A refused action: what was protected, by which rule, and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub op: Op,
    /// `repository a/b` or `tag v1`.
    pub subject: String,
    pub protection: Protection,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.protection;
        let verb = match self.op {
            Op::Push => "pushing to",
            Op::Delete => "deleting",
        };
        match p.need {
            Need::Level(l) => write!(
                f,
                "{} is protected by {} protection rule {}: {verb} it needs the {l} role or higher",
                self.subject,
                p.kind.as_str(),
                p.rule_id
            ),
            Need::Nobody => write!(
                f,
                "{} is immutable by tag protection rule {}: nobody may overwrite or delete it",
                self.subject, p.rule_id
            ),
        }
    }
}

/// Why a rule's fields are refused: the field and the problem, for the API's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct RuleError {
    pub field: &'static str,
    pub message: String,
}

fn rule_err(field: &'static str, message: impl Into<String>) -> RuleError {
    RuleError {
        field,
        message: message.into(),
    }
}

/// Compile a tag name pattern: RE2, anchored at both ends, at most 100 characters.
pub fn compile_tag_pattern(pattern: &str) -> Result<Regex, RuleError> {
    if pattern.is_empty() {
        return Err(rule_err("tag_name_pattern", "can't be blank"));
    }
    if pattern.chars().count() > MAX_TAG_PATTERN {
        return Err(rule_err(
            "tag_name_pattern",
            format!("is too long (maximum is {MAX_TAG_PATTERN} characters)"),
        ));
    }
    crate::re2::compile(pattern, true).map_err(|e| {
        rule_err(
            "tag_name_pattern",
            format!("is not a valid RE2 regular expression: {e}"),
        )
    })
}

/// Check a repository path pattern for project `project_path`: it must name
/// repositories of that project (start with its full path), use registry path
/// characters and `*` only, and be at most 255 characters. Returns it lower-cased.
pub fn check_repository_pattern(pattern: &str, project_path: &str) -> Result<String, RuleError> {
    const F: &str = "repository_path_pattern";
    if pattern.is_empty() {
        return Err(rule_err(F, "can't be blank"));
    }
    if pattern.len() > MAX_REPOSITORY_PATTERN {
        return Err(rule_err(
            F,
            format!("is too long (maximum is {MAX_REPOSITORY_PATTERN} characters)"),
        ));
    }
    let lower = pattern.to_ascii_lowercase();
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '*');
    if let Some(bad) = lower.chars().find(|c| !ok(*c)) {
        return Err(rule_err(
            F,
            format!("should be a valid container repository path with optional wildcard characters; {bad:?} is not allowed"),
        ));
    }
    let project = project_path.to_ascii_lowercase();
    let under = lower == project
        || lower
            .strip_prefix(&project)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('*'));
    if !under {
        return Err(rule_err(
            F,
            format!("should start with the project's full path {project}"),
        ));
    }
    Ok(lower)
}

/// Whether `path` matches a repository pattern (`*` matches any run of characters,
/// `/` included, as GitLab's `LIKE` does). Case-insensitive.
pub fn repository_matches(pattern: &str, path: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let s = path.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A project's rules, compiled once per request.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    repositories: Vec<Rule>,
    /// `None`: a stored pattern that no longer compiles, which matches every tag.
    tags: Vec<(Rule, Option<Regex>)>,
}

fn tag_matches(re: &Option<Regex>, tag: &str) -> bool {
    re.as_ref().is_none_or(|re| re.is_match(tag))
}

impl RuleSet {
    /// Compile stored rules; a stored tag pattern that no longer compiles (it was
    /// checked when saved) protects every tag rather than none.
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        RuleSet::new_with(rules, |p| compile_tag_pattern(p).ok())
    }

    /// [`RuleSet::new`] with tag patterns compiled by `compile` (a caller that checks
    /// rules on every request keeps the compiled patterns).
    pub fn new_with(rules: Vec<Rule>, mut compile: impl FnMut(&str) -> Option<Regex>) -> RuleSet {
        let mut set = RuleSet::default();
        for r in rules {
            match r.kind {
                RuleKind::Repository => set.repositories.push(r),
                RuleKind::Tag => {
                    let re = compile(&r.pattern);
                    set.tags.push((r, re));
                }
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.repositories.is_empty() && self.tags.is_empty()
    }

    /// The most restrictive of the repository rules matching `path` for `op`.
    pub fn repository(&self, path: &str, op: Op) -> Option<Protection> {
        self.repositories
            .iter()
            .filter(|r| repository_matches(&r.pattern, path))
            .filter_map(|r| {
                let level = match op {
                    Op::Push => r.push,
                    Op::Delete => r.delete,
                }?;
                Some(Protection {
                    rule_id: r.id,
                    kind: RuleKind::Repository,
                    need: Need::Level(level),
                })
            })
            .max_by(|a, b| a.need.cmp(&b.need).then(b.rule_id.cmp(&a.rule_id)))
    }

    /// The most restrictive of the tag rules matching `tag` for `op`. `exists`: the
    /// tag is live now (an immutable rule lets anyone who may push create it, but
    /// nobody move or delete it).
    pub fn tag(&self, tag: &str, op: Op, exists: bool) -> Option<Protection> {
        self.tags
            .iter()
            .filter(|(_, re)| tag_matches(re, tag))
            .filter_map(|(r, _)| {
                let need = if r.immutable {
                    if op == Op::Push && !exists {
                        return None;
                    }
                    Need::Nobody
                } else {
                    Need::Level(match op {
                        Op::Push => r.push,
                        Op::Delete => r.delete,
                    }?)
                };
                Some(Protection {
                    rule_id: r.id,
                    kind: RuleKind::Tag,
                    need,
                })
            })
            .max_by(|a, b| a.need.cmp(&b.need).then(b.rule_id.cmp(&a.rule_id)))
    }

    /// Whether `who` may `op` the repository at `path` as a whole (push into it
    /// without a tag, delete it).
    pub fn check_repository(&self, path: &str, op: Op, who: Standing) -> Result<(), Refusal> {
        match self.repository(path, op) {
            Some(p) if !p.allows(who) => Err(Refusal {
                op,
                subject: format!("repository {path}"),
                protection: p,
            }),
            _ => Ok(()),
        }
    }

    /// Whether `who` may `op` tag `tag` of the repository at `path`: the repository's
    /// rules first, then the tag's.
    pub fn check_tag(
        &self,
        path: &str,
        tag: &str,
        op: Op,
        exists: bool,
        who: Standing,
    ) -> Result<(), Refusal> {
        self.check_repository(path, op, who)?;
        match self.tag(tag, op, exists) {
            Some(p) if !p.allows(who) => Err(Refusal {
                op,
                subject: format!("tag {tag}"),
                protection: p,
            }),
            _ => Ok(()),
        }
    }

    /// Whether any tag rule matches `tag` (for the UI's badge): `Some(true)` when an
    /// immutable one does.
    pub fn tag_badge(&self, tag: &str) -> Option<bool> {
        let matching: Vec<&Rule> = self
            .tags
            .iter()
            .filter(|(_, re)| tag_matches(re, tag))
            .map(|(r, _)| r)
            .collect();
        if matching.is_empty() {
            None
        } else {
            Some(matching.iter().any(|r| r.immutable))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessLevel::*;
    use ProtectionLevel as L;

    fn repo_rule(id: i64, pattern: &str, push: Option<L>, delete: Option<L>) -> Rule {
        Rule {
            id,
            kind: RuleKind::Repository,
            pattern: pattern.into(),
            push,
            delete,
            immutable: false,
        }
    }

    fn tag_rule(id: i64, pattern: &str, push: Option<L>, delete: Option<L>) -> Rule {
        Rule {
            id,
            kind: RuleKind::Tag,
            pattern: pattern.into(),
            push,
            delete,
            immutable: false,
        }
    }

    fn immutable(id: i64, pattern: &str) -> Rule {
        Rule {
            immutable: true,
            ..tag_rule(id, pattern, None, None)
        }
    }

    fn who(role: Option<AccessLevel>) -> Standing {
        Standing { role, admin: false }
    }

    const ADMIN: Standing = Standing {
        role: None,
        admin: true,
    };

    #[test]
    fn standing_meets_levels() {
        assert!(!who(Some(Developer)).meets(L::Maintainer));
        assert!(who(Some(Maintainer)).meets(L::Maintainer));
        assert!(!who(Some(Maintainer)).meets(L::Owner));
        assert!(who(Some(Owner)).meets(L::Owner));
        assert!(!who(Some(Owner)).meets(L::Admin));
        assert!(ADMIN.meets(L::Admin));
        assert!(!Standing::NOBODY.meets(L::Maintainer));
    }

    #[test]
    fn wildcards_match_repository_paths() {
        assert!(repository_matches("g/p", "g/p"));
        assert!(!repository_matches("g/p", "g/p/a"));
        assert!(repository_matches("g/p/*", "g/p/a"));
        assert!(repository_matches("g/p/*", "g/p/a/b"));
        assert!(!repository_matches("g/p/*", "g/p"));
        assert!(repository_matches("g/p*", "g/p"));
        assert!(repository_matches("g/p/img-*-prod", "g/p/img-x-prod"));
        assert!(!repository_matches("g/p/img-*-prod", "g/p/img-x-dev"));
        assert!(repository_matches("G/P/*", "g/p/x"));
        assert!(repository_matches("g/*/a*", "g/p/aa"));
        assert!(!repository_matches("g/p/ab*ba", "g/p/aba"));
    }

    #[test]
    fn repository_patterns_stay_in_their_project() {
        assert_eq!(
            check_repository_pattern("G/P/*", "g/p").as_deref(),
            Ok("g/p/*")
        );
        assert!(check_repository_pattern("g/p", "g/p").is_ok());
        assert!(check_repository_pattern("g/p*", "g/p").is_ok());
        assert!(check_repository_pattern("g/px", "g/p").is_err());
        assert!(check_repository_pattern("g/*", "g/p").is_err());
        assert!(check_repository_pattern("", "g/p").is_err());
        assert!(check_repository_pattern("g/p/a b", "g/p").is_err());
        let long = format!("g/p/{}", "a".repeat(300));
        assert!(check_repository_pattern(&long, "g/p").is_err());
    }

    #[test]
    fn tag_patterns_are_anchored_re2_of_at_most_100_chars() {
        let re = compile_tag_pattern("v[0-9]+").unwrap();
        assert!(re.is_match("v12"));
        assert!(!re.is_match("xv12"));
        assert!(!re.is_match("v12-rc"));
        assert_eq!(
            compile_tag_pattern(&"a".repeat(101)).unwrap_err().field,
            "tag_name_pattern"
        );
        assert!(compile_tag_pattern(&"a".repeat(100)).is_ok());
        assert!(compile_tag_pattern("(").is_err());
        assert!(compile_tag_pattern("").is_err());
    }

    #[test]
    fn the_most_restrictive_rule_wins_and_is_named() {
        let set = RuleSet::new(vec![
            tag_rule(1, "v.*", Some(L::Maintainer), Some(L::Maintainer)),
            tag_rule(2, "v1.*", Some(L::Owner), Some(L::Maintainer)),
            tag_rule(3, "v1\\.2", Some(L::Maintainer), Some(L::Admin)),
        ]);
        let m = who(Some(Maintainer));
        assert!(set.check_tag("g/p", "v2", Op::Push, true, m).is_ok());
        let refused = set.check_tag("g/p", "v1.0", Op::Push, true, m).unwrap_err();
        assert_eq!(refused.protection.rule_id, 2);
        assert_eq!(refused.protection.need, Need::Level(L::Owner));
        assert_eq!(
            refused.to_string(),
            "tag v1.0 is protected by tag protection rule 2: pushing to it needs the owner role or higher"
        );
        let o = who(Some(Owner));
        assert!(set.check_tag("g/p", "v1.0", Op::Push, true, o).is_ok());
        let del = set
            .check_tag("g/p", "v1.2", Op::Delete, true, o)
            .unwrap_err();
        assert_eq!(del.protection.rule_id, 3);
        assert!(set
            .check_tag("g/p", "v1.2", Op::Delete, true, ADMIN)
            .is_ok());
        assert!(set
            .check_tag("g/p", "dev", Op::Delete, true, who(Some(Developer)))
            .is_ok());
    }

    #[test]
    fn immutable_tags_are_created_by_pushers_and_then_never_changed() {
        let set = RuleSet::new(vec![
            immutable(7, "release-.*"),
            tag_rule(8, "release-.*", Some(L::Maintainer), Some(L::Maintainer)),
        ]);
        let dev = who(Some(Developer));
        let m = who(Some(Maintainer));
        // Creating needs what the other matching rules need.
        assert_eq!(
            set.check_tag("g/p", "release-1", Op::Push, false, dev)
                .unwrap_err()
                .protection
                .rule_id,
            8
        );
        assert!(set
            .check_tag("g/p", "release-1", Op::Push, false, m)
            .is_ok());
        for op in [Op::Push, Op::Delete] {
            let r = set
                .check_tag("g/p", "release-1", op, true, ADMIN)
                .unwrap_err();
            assert_eq!(r.protection.need, Need::Nobody);
            assert_eq!(r.protection.rule_id, 7);
        }
        let alone = RuleSet::new(vec![immutable(9, "v.*")]);
        assert!(alone.check_tag("g/p", "v1", Op::Push, false, dev).is_ok());
        assert_eq!(
            alone
                .check_tag("g/p", "v1", Op::Delete, true, ADMIN)
                .unwrap_err()
                .to_string(),
            "tag v1 is immutable by tag protection rule 9: nobody may overwrite or delete it"
        );
    }

    #[test]
    fn repository_rules_cover_pushes_and_deletes_of_matching_paths() {
        let set = RuleSet::new(vec![
            repo_rule(4, "g/p/prod*", Some(L::Owner), None),
            repo_rule(5, "g/p/*", None, Some(L::Maintainer)),
        ]);
        let dev = who(Some(Developer));
        let m = who(Some(Maintainer));
        assert!(set.check_repository("g/p/dev", Op::Push, dev).is_ok());
        assert_eq!(
            set.check_repository("g/p/prod", Op::Push, m)
                .unwrap_err()
                .to_string(),
            "repository g/p/prod is protected by repository protection rule 4: pushing to it needs the maintainer role or higher"
                .replace("maintainer", "owner")
        );
        assert!(set
            .check_tag("g/p/dev", "x", Op::Delete, true, dev)
            .is_err());
        assert!(set.check_tag("g/p/dev", "x", Op::Delete, true, m).is_ok());
        assert!(set.check_repository("g/p", Op::Delete, dev).is_ok());
    }

    #[test]
    fn cleanup_keeps_whatever_any_rule_protects() {
        let set = RuleSet::new(vec![
            immutable(1, "v.*"),
            tag_rule(2, "stable", Some(L::Maintainer), Some(L::Maintainer)),
            repo_rule(3, "g/p/keep", Some(L::Maintainer), None),
            repo_rule(4, "g/p/safe", None, Some(L::Owner)),
        ]);
        // Cleanup acts for nobody: whatever needs a level to delete stays.
        let kept = |path: &str, tag: &str| {
            set.check_tag(path, tag, Op::Delete, true, Standing::NOBODY)
                .err()
                .map(|r| r.protection.rule_id)
        };
        assert_eq!(kept("g/p", "v1"), Some(1));
        assert_eq!(kept("g/p", "stable"), Some(2));
        assert_eq!(kept("g/p", "dev"), None);
        assert_eq!(kept("g/p/keep", "dev"), None);
        assert_eq!(kept("g/p/safe", "dev"), Some(4));
        assert_eq!(set.tag_badge("v1"), Some(true));
        assert_eq!(set.tag_badge("stable"), Some(false));
        assert_eq!(set.tag_badge("dev"), None);
    }
}
