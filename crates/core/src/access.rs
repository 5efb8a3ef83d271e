//! The permission matrix (MISSION.md §3) and the credential grant table (GitLab's
//! `/jwt/auth` rules): which registry actions a caller gets on a project.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// GitLab's access levels; the numbers are GitLab's and appear in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AccessLevel {
    Guest = 10,
    Reporter = 20,
    Developer = 30,
    Maintainer = 40,
    Owner = 50,
}

impl AccessLevel {
    pub fn from_value(v: i64) -> Option<AccessLevel> {
        Some(match v {
            10 => AccessLevel::Guest,
            20 => AccessLevel::Reporter,
            30 => AccessLevel::Developer,
            40 => AccessLevel::Maintainer,
            50 => AccessLevel::Owner,
            _ => return None,
        })
    }

    pub fn value(self) -> i64 {
        self as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Private,
    Internal,
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Internal => "internal",
            Visibility::Public => "public",
        }
    }

    /// GitLab's `visibility_level` numbers.
    pub fn level(self) -> i64 {
        match self {
            Visibility::Private => 0,
            Visibility::Internal => 10,
            Visibility::Public => 20,
        }
    }
}

impl FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "private" => Ok(Visibility::Private),
            "internal" => Ok(Visibility::Internal),
            "public" => Ok(Visibility::Public),
            _ => Err(format!(
                "visibility must be private, internal or public, not {s:?}"
            )),
        }
    }
}

/// A project's `container_registry_access_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryAccess {
    /// Everyone who can see the project.
    Enabled,
    /// Members with reporter or higher only.
    Private,
    /// No registry operations at all, for anyone.
    Disabled,
}

impl RegistryAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryAccess::Enabled => "enabled",
            RegistryAccess::Private => "private",
            RegistryAccess::Disabled => "disabled",
        }
    }
}

impl FromStr for RegistryAccess {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enabled" => Ok(RegistryAccess::Enabled),
            "private" => Ok(RegistryAccess::Private),
            "disabled" => Ok(RegistryAccess::Disabled),
            _ => Err(format!(
                "container_registry_access_level must be enabled, private or disabled, not {s:?}"
            )),
        }
    }
}

/// Token scopes that matter to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Api,
    ReadApi,
    ReadRegistry,
    WriteRegistry,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Api => "api",
            Scope::ReadApi => "read_api",
            Scope::ReadRegistry => "read_registry",
            Scope::WriteRegistry => "write_registry",
        }
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "api" => Ok(Scope::Api),
            "read_api" => Ok(Scope::ReadApi),
            "read_registry" => Ok(Scope::ReadRegistry),
            "write_registry" => Ok(Scope::WriteRegistry),
            _ => Err(format!(
                "scope {s:?} is not one of api, read_api, read_registry, write_registry"
            )),
        }
    }
}

/// A registry action, as in a token scope `repository:<path>:<actions>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A small set of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ActionSet {
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
}

impl ActionSet {
    pub const NONE: ActionSet = ActionSet {
        pull: false,
        push: false,
        delete: false,
    };
    pub const ALL: ActionSet = ActionSet {
        pull: true,
        push: true,
        delete: true,
    };

    pub fn contains(self, a: Action) -> bool {
        match a {
            Action::Pull => self.pull,
            Action::Push => self.push,
            Action::Delete => self.delete,
        }
    }

    pub fn insert(&mut self, a: Action) {
        match a {
            Action::Pull => self.pull = true,
            Action::Push => self.push = true,
            Action::Delete => self.delete = true,
        }
    }

    pub fn intersect(self, other: ActionSet) -> ActionSet {
        ActionSet {
            pull: self.pull && other.pull,
            push: self.push && other.push,
            delete: self.delete && other.delete,
        }
    }

    pub fn is_empty(self) -> bool {
        !(self.pull || self.push || self.delete)
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        [Action::Pull, Action::Push, Action::Delete]
            .into_iter()
            .filter(move |a| self.contains(*a))
    }

    /// Parse the actions of a scope (`pull,push`, `*`); unknown actions are ignored,
    /// as the token spec says.
    pub fn parse(list: &str) -> ActionSet {
        let mut set = ActionSet::NONE;
        for a in list.split(',') {
            match a.trim() {
                "pull" => set.pull = true,
                "push" => set.push = true,
                "delete" => set.delete = true,
                "*" => set = ActionSet::ALL,
                _ => {}
            }
        }
        set
    }
}

/// What the registry needs to know about a project to decide access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectFacts {
    pub visibility: Visibility,
    pub registry_access: RegistryAccess,
}

/// Who is asking, and through which kind of credential. `role` is the user's
/// effective access level in the project (the highest of direct and inherited
/// memberships), `None` for a non-member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    /// A password (or a web session).
    Password {
        admin: bool,
        role: Option<AccessLevel>,
    },
    PersonalToken {
        admin: bool,
        role: Option<AccessLevel>,
        scopes: Vec<Scope>,
    },
    /// A deploy token; `covers` says whether it belongs to this project or to a
    /// group above it.
    DeployToken {
        covers: bool,
        scopes: Vec<Scope>,
    },
    /// A CI job token. `own_project`: the project is the job's own. `role`: the role
    /// of the user the job runs as.
    JobToken {
        own_project: bool,
        admin: bool,
        role: Option<AccessLevel>,
    },
}

/// What a signed-in user may do to a project's registry, by role alone.
fn user_actions(facts: ProjectFacts, admin: bool, role: Option<AccessLevel>) -> ActionSet {
    // Instance admins act as owners everywhere.
    let role = if admin {
        Some(AccessLevel::Owner)
    } else {
        role
    };
    let at_least = |l: AccessLevel| role.is_some_and(|r| r >= l);
    let read = match facts.registry_access {
        RegistryAccess::Disabled => false,
        RegistryAccess::Private => at_least(AccessLevel::Reporter),
        RegistryAccess::Enabled => match facts.visibility {
            // Anyone signed in sees public and internal projects (a non-member
            // counts as a guest there).
            Visibility::Public | Visibility::Internal => true,
            Visibility::Private => at_least(AccessLevel::Reporter),
        },
    };
    ActionSet {
        pull: read,
        push: at_least(AccessLevel::Developer),
        delete: at_least(AccessLevel::Maintainer),
    }
}

/// The registry actions `cred` may perform on a project with these facts. A
/// `disabled` registry allows nothing to anyone.
pub fn allowed_actions(facts: ProjectFacts, cred: &Credential) -> ActionSet {
    if facts.registry_access == RegistryAccess::Disabled {
        return ActionSet::NONE;
    }
    let has = |scopes: &[Scope], s: Scope| scopes.contains(&s);
    match cred {
        Credential::Anonymous => ActionSet {
            pull: facts.visibility == Visibility::Public
                && facts.registry_access == RegistryAccess::Enabled,
            push: false,
            delete: false,
        },
        Credential::Password { admin, role } => user_actions(facts, *admin, *role),
        Credential::PersonalToken {
            admin,
            role,
            scopes,
        } => {
            let by_role = user_actions(facts, *admin, *role);
            if has(scopes, Scope::Api) {
                return by_role;
            }
            let read = has(scopes, Scope::ReadRegistry) || has(scopes, Scope::ReadApi);
            ActionSet {
                pull: by_role.pull && read,
                push: by_role.push && has(scopes, Scope::WriteRegistry),
                delete: false,
            }
        }
        Credential::DeployToken { covers, scopes } => ActionSet {
            pull: *covers && has(scopes, Scope::ReadRegistry),
            push: *covers && has(scopes, Scope::WriteRegistry),
            delete: false,
        },
        Credential::JobToken {
            own_project,
            admin,
            role,
        } => {
            let by_role = user_actions(facts, *admin, *role);
            if *own_project {
                ActionSet {
                    // The job may always read its own project's registry.
                    pull: true,
                    push: by_role.push,
                    delete: by_role.delete,
                }
            } else {
                ActionSet {
                    pull: by_role.pull,
                    push: false,
                    delete: false,
                }
            }
        }
    }
}

/// Whether a caller may pull through a group's dependency proxy, as GitLab decides:
/// at least Reporter in the group (inherited memberships count; administrators may),
/// by password or a token that may read the registry; a deploy token of the group (or
/// of one above it) with `read_registry`; a CI job of a project in the group. Nobody
/// anonymous. Read the credential's fields for the group: `role` is the group role,
/// `covers` whether the deploy token reaches the group, `own_project` whether the
/// job's project is in the group.
pub fn dependency_proxy_may_pull(cred: &Credential) -> bool {
    let reporter = |admin: bool, role: Option<AccessLevel>| {
        admin || role.is_some_and(|r| r >= AccessLevel::Reporter)
    };
    let reads = |scopes: &[Scope]| {
        scopes
            .iter()
            .any(|s| matches!(s, Scope::Api | Scope::ReadRegistry | Scope::WriteRegistry))
    };
    match cred {
        Credential::Anonymous => false,
        Credential::Password { admin, role } => reporter(*admin, *role),
        Credential::PersonalToken {
            admin,
            role,
            scopes,
        } => reporter(*admin, *role) && reads(scopes),
        Credential::DeployToken { covers, scopes } => {
            *covers && scopes.contains(&Scope::ReadRegistry)
        }
        Credential::JobToken {
            own_project,
            admin,
            role,
        } => *own_project || reporter(*admin, *role),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessLevel::*;
    use RegistryAccess as R;
    use Visibility as V;

    fn facts(v: Visibility, r: RegistryAccess) -> ProjectFacts {
        ProjectFacts {
            visibility: v,
            registry_access: r,
        }
    }

    fn user(role: Option<AccessLevel>) -> Credential {
        Credential::Password { admin: false, role }
    }

    /// MISSION.md §3's view/pull table, all 27 cells.
    #[test]
    fn pull_matrix() {
        // (visibility, registry access, anonymous, guest, reporter)
        let table = [
            (V::Public, R::Enabled, true, true, true),
            (V::Public, R::Private, false, false, true),
            (V::Internal, R::Enabled, false, true, true),
            (V::Internal, R::Private, false, false, true),
            (V::Private, R::Enabled, false, false, true),
            (V::Private, R::Private, false, false, true),
            (V::Public, R::Disabled, false, false, false),
            (V::Internal, R::Disabled, false, false, false),
            (V::Private, R::Disabled, false, false, false),
        ];
        for (v, r, anon, guest, reporter) in table {
            let f = facts(v, r);
            assert_eq!(
                allowed_actions(f, &Credential::Anonymous).pull,
                anon,
                "{v:?}/{r:?} anon"
            );
            assert_eq!(
                allowed_actions(f, &user(Some(Guest))).pull,
                guest,
                "{v:?}/{r:?} guest"
            );
            assert_eq!(
                allowed_actions(f, &user(Some(Reporter))).pull,
                reporter,
                "{v:?}/{r:?} reporter"
            );
        }
        // A signed-in non-member of an internal project counts as a guest.
        assert!(allowed_actions(facts(V::Internal, R::Enabled), &user(None)).pull);
        assert!(!allowed_actions(facts(V::Private, R::Enabled), &user(None)).pull);
    }

    #[test]
    fn push_and_delete_by_role() {
        let f = facts(V::Private, R::Enabled);
        let a = |r| allowed_actions(f, &user(Some(r)));
        assert!(!a(Reporter).push);
        assert!(a(Developer).push && !a(Developer).delete);
        assert!(a(Maintainer).push && a(Maintainer).delete);
        assert!(a(Owner).delete);
        let admin = Credential::Password {
            admin: true,
            role: None,
        };
        assert_eq!(allowed_actions(f, &admin), ActionSet::ALL);
        // Disabled means nobody, admins included.
        assert_eq!(
            allowed_actions(facts(V::Public, R::Disabled), &admin),
            ActionSet::NONE
        );
    }

    #[test]
    fn token_scopes() {
        let f = facts(V::Private, R::Enabled);
        let pat = |scopes: Vec<Scope>| Credential::PersonalToken {
            admin: false,
            role: Some(Maintainer),
            scopes,
        };
        assert_eq!(allowed_actions(f, &pat(vec![Scope::Api])), ActionSet::ALL);
        let read = allowed_actions(f, &pat(vec![Scope::ReadRegistry]));
        assert!(read.pull && !read.push && !read.delete);
        // write_registry alone pushes but does not pull.
        let write = allowed_actions(f, &pat(vec![Scope::WriteRegistry]));
        assert!(!write.pull && write.push && !write.delete);
        assert!(allowed_actions(f, &pat(vec![Scope::ReadApi])).pull);
        // Scopes never exceed the role.
        let weak = Credential::PersonalToken {
            admin: false,
            role: Some(Reporter),
            scopes: vec![Scope::WriteRegistry, Scope::ReadRegistry],
        };
        assert!(!allowed_actions(f, &weak).push);

        let deploy = Credential::DeployToken {
            covers: true,
            scopes: vec![Scope::ReadRegistry, Scope::WriteRegistry],
        };
        let d = allowed_actions(f, &deploy);
        assert!(d.pull && d.push && !d.delete);
        let elsewhere = Credential::DeployToken {
            covers: false,
            scopes: vec![Scope::ReadRegistry],
        };
        assert_eq!(allowed_actions(f, &elsewhere), ActionSet::NONE);
    }

    #[test]
    fn job_tokens() {
        let f = facts(V::Private, R::Enabled);
        let own = Credential::JobToken {
            own_project: true,
            admin: false,
            role: Some(Developer),
        };
        let o = allowed_actions(f, &own);
        assert!(o.pull && o.push && !o.delete);
        let other = Credential::JobToken {
            own_project: false,
            admin: false,
            role: Some(Maintainer),
        };
        let x = allowed_actions(f, &other);
        assert!(x.pull && !x.push && !x.delete);
        let stranger = Credential::JobToken {
            own_project: false,
            admin: false,
            role: None,
        };
        assert!(!allowed_actions(f, &stranger).pull);
    }

    #[test]
    fn action_sets() {
        assert_eq!(
            ActionSet::parse("pull,push"),
            ActionSet {
                pull: true,
                push: true,
                delete: false
            }
        );
        assert_eq!(ActionSet::parse("*"), ActionSet::ALL);
        assert_eq!(ActionSet::parse("bogus"), ActionSet::NONE);
        assert_eq!(
            ActionSet::ALL
                .intersect(ActionSet::parse("pull"))
                .iter()
                .collect::<Vec<_>>(),
            vec![Action::Pull]
        );
    }

    #[test]
    fn dependency_proxy_pulls() {
        use AccessLevel::*;
        let pw = |role| Credential::Password { admin: false, role };
        assert!(!dependency_proxy_may_pull(&Credential::Anonymous));
        assert!(!dependency_proxy_may_pull(&pw(None)));
        assert!(!dependency_proxy_may_pull(&pw(Some(Guest))));
        assert!(dependency_proxy_may_pull(&pw(Some(Reporter))));
        let pat = |scopes: Vec<Scope>| Credential::PersonalToken {
            admin: false,
            role: Some(Developer),
            scopes,
        };
        assert!(dependency_proxy_may_pull(&pat(vec![Scope::ReadRegistry])));
        assert!(!dependency_proxy_may_pull(&pat(vec![Scope::ReadApi])));
        let deploy = |covers, scopes| Credential::DeployToken { covers, scopes };
        assert!(dependency_proxy_may_pull(&deploy(
            true,
            vec![Scope::ReadRegistry]
        )));
        assert!(!dependency_proxy_may_pull(&deploy(
            false,
            vec![Scope::ReadRegistry]
        )));
        assert!(!dependency_proxy_may_pull(&deploy(
            true,
            vec![Scope::WriteRegistry]
        )));
        let job = |own_project| Credential::JobToken {
            own_project,
            admin: false,
            role: None,
        };
        assert!(dependency_proxy_may_pull(&job(true)));
        assert!(!dependency_proxy_may_pull(&job(false)));
    }
}
