//! `berth admin …`: set-up and maintenance from the shell, on the data directory
//! directly, through the same operations as the REST API.

use std::io::Read;

use anyhow::{bail, Context};
use berth_core::{AccessLevel, RegistryAccess, Visibility};
use berth_meta::{Meta, ProjectUpdate, Source, UserState, UserUpdate, Window};
use berth_server::org;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::CommonArgs;

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Users: create, list, block, unblock, set a password.
    #[command(subcommand)]
    User(UserCommand),
    /// Groups (nested with `/`).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Projects: create, and change visibility or registry access.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Memberships of projects and groups.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Personal access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Deploy tokens of projects and groups.
    #[command(subcommand)]
    DeployToken(DeployTokenCommand),
    /// Registry storage per project and repository, deduplicated (a blob shared by
    /// several repositories counts once in each, and once for the project), in bytes.
    Usage,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (and its personal namespace).
    Create {
        username: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
        /// Make the user an instance administrator.
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Block a user: every sign-in and token of theirs stops working.
    Block { username: String },
    /// Unblock a user.
    Unblock { username: String },
    /// Set a user's password, read from standard input.
    SetPassword { username: String },
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a group; `a/b/c` creates `c` inside `a/b`.
    Create {
        full_path: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "private")]
        visibility: Visibility,
        /// Create missing parent groups too.
        #[arg(long)]
        parents: bool,
    },
    /// List groups.
    List,
}

#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Create a project at `namespace/path`.
    Create {
        full_path: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "private")]
        visibility: Visibility,
        /// enabled, private or disabled.
        #[arg(long, default_value = "enabled")]
        registry_access: RegistryAccess,
        /// Create missing groups of the namespace path too.
        #[arg(long)]
        parents: bool,
        /// The project's creator (its first owner); defaults to none.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Change a project's visibility or registry access level.
    Update {
        full_path: String,
        #[arg(long)]
        visibility: Option<Visibility>,
        #[arg(long)]
        registry_access: Option<RegistryAccess>,
    },
    /// List projects.
    List,
}

#[derive(Args)]
pub struct Target {
    /// A project's full path.
    #[arg(long, conflicts_with = "group", required_unless_present = "group")]
    project: Option<String>,
    /// A group's full path.
    #[arg(long)]
    group: Option<String>,
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Add a member, or change their role.
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        user: String,
        /// guest, reporter, developer, maintainer, owner (or 10..50).
        #[arg(long, value_parser = parse_role)]
        role: AccessLevel,
        /// Last day of the membership: it ends when that day begins (YYYY-MM-DD).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Remove a member.
    Remove {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        user: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a personal access token; prints only the token.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        /// Comma-separated: api, read_api, read_registry, write_registry, …
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// The token stops working when this day begins (YYYY-MM-DD, UTC).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List personal access tokens (never their secrets).
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a personal access token by id.
    Revoke { id: i64 },
}

#[derive(Subcommand)]
pub enum DeployTokenCommand {
    /// Create a deploy token; prints its username and then the token, one per line.
    Create {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        name: String,
        /// Comma-separated: read_registry, write_registry.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Default: gitlab+deploy-token-<id>.
        #[arg(long)]
        username: Option<String>,
        /// The token stops working when this day begins (YYYY-MM-DD, UTC).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Revoke a deploy token by id.
    Revoke { id: i64 },
}

fn parse_role(s: &str) -> Result<AccessLevel, String> {
    let level = match s.to_ascii_lowercase().as_str() {
        "guest" => 10,
        "reporter" => 20,
        "developer" => 30,
        "maintainer" => 40,
        "owner" => 50,
        n => n.parse().map_err(|_| format!("unknown role {s:?}"))?,
    };
    AccessLevel::from_value(level).ok_or_else(|| format!("unknown access level {s:?}"))
}

fn read_secret() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    let line = s.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!("no password on standard input");
    }
    Ok(line)
}

/// Midnight UTC at the start of a `YYYY-MM-DD` day, in Unix ms.
pub fn day_start_ms(date: &str) -> anyhow::Result<i64> {
    let d = org::check_date("expires_at", date)?;
    let t = humantime::parse_rfc3339(&format!("{d}T00:00:00Z"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}

async fn user(meta: &dyn Meta, username: &str) -> anyhow::Result<berth_meta::User> {
    meta.user_by_username(username)
        .await?
        .with_context(|| format!("no user named {username}"))
}

async fn project(meta: &dyn Meta, path: &str) -> anyhow::Result<berth_meta::Project> {
    meta.project_by_path(path)
        .await?
        .with_context(|| format!("no project at {path}"))
}

async fn source(meta: &dyn Meta, target: &Target) -> anyhow::Result<Source> {
    match (&target.project, &target.group) {
        (Some(p), _) => Ok(Source::Project(project(meta, p).await?.id)),
        (None, Some(g)) => {
            let ns = meta
                .namespace_by_path(g)
                .await?
                .with_context(|| format!("no group at {g}"))?;
            Ok(Source::Namespace(ns.id))
        }
        (None, None) => bail!("name a --project or a --group"),
    }
}

fn split_path(full_path: &str) -> anyhow::Result<(&str, &str)> {
    full_path
        .rsplit_once('/')
        .with_context(|| format!("{full_path} has no namespace: write namespace/path"))
}

pub async fn run(cfg: Config, command: AdminCommand) -> anyhow::Result<()> {
    let meta = crate::bootstrap::open_meta(&cfg).await?;
    crate::bootstrap::ensure_root(&*meta, &cfg).await?;
    let meta: &dyn Meta = &*meta;
    match command {
        AdminCommand::User(c) => match c {
            UserCommand::Create {
                username,
                name,
                email,
                password_stdin,
                admin,
            } => {
                let password = if password_stdin {
                    Some(read_secret()?)
                } else {
                    None
                };
                let u = org::create_user(meta, &username, &name, email, password.as_deref(), admin)
                    .await?;
                println!("{}", u.id);
            }
            UserCommand::List => {
                let (users, _) = meta
                    .users(
                        None,
                        Window {
                            offset: 0,
                            limit: i64::MAX,
                        },
                    )
                    .await?;
                for u in users {
                    println!(
                        "{}\t{}\t{}{}",
                        u.id,
                        u.username,
                        u.state.as_str(),
                        if u.admin { "\tadmin" } else { "" }
                    );
                }
            }
            UserCommand::Block { username } => {
                set_state(meta, &username, UserState::Blocked).await?
            }
            UserCommand::Unblock { username } => {
                set_state(meta, &username, UserState::Active).await?
            }
            UserCommand::SetPassword { username } => {
                let u = user(meta, &username).await?;
                let hash = berth_server::auth::secrets::hash_password(&read_secret()?)
                    .map_err(anyhow::Error::msg)?;
                meta.update_user(
                    u.id,
                    &UserUpdate {
                        password_hash: Some(hash),
                        ..Default::default()
                    },
                )
                .await?;
                // Browsers signed in with the old password are signed out.
                meta.delete_user_web_sessions(u.id, None).await?;
            }
        },
        AdminCommand::Group(c) => match c {
            GroupCommand::Create {
                full_path,
                name,
                visibility,
                parents,
            } => {
                let ns = if parents {
                    org::ensure_group(meta, &full_path, visibility).await?
                } else {
                    let (parent, path) = match full_path.rsplit_once('/') {
                        Some((p, s)) => (Some(org::namespace(meta, p).await?.id), s),
                        None => (None, full_path.as_str()),
                    };
                    let name = if name.is_empty() { path } else { &name };
                    org::create_group(meta, name, path, parent, visibility, "").await?
                };
                println!("{}", ns.id);
            }
            GroupCommand::List => {
                let (groups, _) = meta
                    .groups(
                        None,
                        Window {
                            offset: 0,
                            limit: i64::MAX,
                        },
                    )
                    .await?;
                for g in groups {
                    println!("{}\t{}\t{}", g.id, g.full_path, g.visibility.as_str());
                }
            }
        },
        AdminCommand::Project(c) => match c {
            ProjectCommand::Create {
                full_path,
                name,
                visibility,
                registry_access,
                parents,
                owner,
            } => {
                let (ns_path, path) = split_path(&full_path)?;
                let ns = match meta.namespace_by_path(ns_path).await? {
                    Some(ns) => ns,
                    None if parents => org::ensure_group(meta, ns_path, visibility).await?,
                    None => bail!(
                        "no group or user namespace at {ns_path} (add --parents to create it)"
                    ),
                };
                let creator = match owner {
                    Some(o) => Some(user(meta, &o).await?),
                    None => None,
                };
                let p = org::create_project(
                    meta,
                    ns.id,
                    &name,
                    path,
                    visibility,
                    registry_access,
                    creator.as_ref().map(|u| u.id),
                )
                .await?;
                if let Some(u) = creator {
                    meta.set_member(
                        Source::Project(p.id),
                        u.id,
                        AccessLevel::Owner,
                        None,
                        berth_server::state::now_ms(),
                    )
                    .await?;
                }
                println!("{}", p.id);
            }
            ProjectCommand::Update {
                full_path,
                visibility,
                registry_access,
            } => {
                let p = project(meta, &full_path).await?;
                meta.update_project(
                    p.id,
                    &ProjectUpdate {
                        visibility,
                        registry_access,
                        ..Default::default()
                    },
                )
                .await?;
            }
            ProjectCommand::List => {
                for p in meta.projects(None).await? {
                    println!(
                        "{}\t{}\t{}\t{}",
                        p.id,
                        p.full_path,
                        p.visibility.as_str(),
                        p.registry_access.as_str()
                    );
                }
            }
        },
        AdminCommand::Member(c) => match c {
            MemberCommand::Add {
                target,
                user: username,
                role,
                expires_at,
            } => {
                let src = source(meta, &target).await?;
                let u = user(meta, &username).await?;
                let expires = expires_at
                    .map(|d| org::check_date("expires_at", &d))
                    .transpose()?;
                meta.set_member(
                    src,
                    u.id,
                    role,
                    expires.as_deref(),
                    berth_server::state::now_ms(),
                )
                .await?;
            }
            MemberCommand::Remove {
                target,
                user: username,
            } => {
                let src = source(meta, &target).await?;
                let u = user(meta, &username).await?;
                if !meta.remove_member(src, u.id).await? {
                    bail!("{username} is not a direct member there");
                }
            }
        },
        AdminCommand::Token(c) => match c {
            TokenCommand::Create {
                user: username,
                name,
                scopes,
                expires_at,
            } => {
                let u = user(meta, &username).await?;
                let (_, secret) = org::create_personal_token(
                    meta,
                    u.id,
                    &name,
                    &scopes,
                    expires_at.as_deref(),
                    "",
                )
                .await?;
                println!("{secret}");
            }
            TokenCommand::List { user: username } => {
                let uid = match username {
                    Some(n) => Some(user(meta, &n).await?.id),
                    None => None,
                };
                for t in meta.personal_tokens(uid).await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}{}",
                        t.id,
                        t.user_id,
                        t.name,
                        t.scopes.join(","),
                        t.expires_at.as_deref().unwrap_or("never"),
                        if t.revoked { "\trevoked" } else { "" }
                    );
                }
            }
            TokenCommand::Revoke { id } => {
                if !meta.revoke_personal_token(id).await? {
                    bail!("no active personal access token with id {id}");
                }
            }
        },
        AdminCommand::Usage => usage(meta).await?,
        AdminCommand::DeployToken(c) => match c {
            DeployTokenCommand::Create {
                target,
                name,
                scopes,
                username,
                expires_at,
            } => {
                let src = source(meta, &target).await?;
                let expires = expires_at.map(|d| day_start_ms(&d)).transpose()?;
                let (t, secret) = org::create_deploy_token(
                    meta,
                    src,
                    &name,
                    username.as_deref(),
                    &scopes,
                    expires,
                )
                .await?;
                println!("{}\n{secret}", t.username);
            }
            DeployTokenCommand::Revoke { id } => {
                if !meta.revoke_deploy_token(id).await? {
                    bail!("no active deploy token with id {id}");
                }
            }
        },
    }
    Ok(())
}

async fn usage(meta: &dyn Meta) -> anyhow::Result<()> {
    println!("project/repository\tbytes");
    for p in meta.projects(None).await? {
        let (repos, _) = meta
            .repositories_of(
                &[p.id],
                Window {
                    offset: 0,
                    limit: i64::MAX,
                },
            )
            .await?;
        println!(
            "{}\t{}",
            p.full_path,
            meta.project_registry_size(p.id).await?
        );
        for r in repos {
            println!("  {}\t{}", r.path, meta.repository_size(r.id).await?);
        }
    }
    Ok(())
}

async fn set_state(meta: &dyn Meta, username: &str, state: UserState) -> anyhow::Result<()> {
    let u = user(meta, username).await?;
    meta.update_user(
        u.id,
        &UserUpdate {
            state: Some(state),
            ..Default::default()
        },
    )
    .await?;
    if state == UserState::Blocked {
        // So that unblocking later does not revive sessions from before the block.
        meta.delete_user_web_sessions(u.id, None).await?;
    }
    Ok(())
}
