//! `berth tag history|restore`: a tag's changes, and putting a deleted tag (or every
//! tag a cleanup run deleted) back, for administrators and scripts, on the data
//! directory directly (the server may be running). The same metadata operations as
//! the REST API; the undo window is `gc.review_delay`.

use anyhow::{bail, Context};
use berth_meta::{Actor, Meta, Restore, TagEvent};
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::CommonArgs;

#[derive(Args)]
pub struct TagArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    command: TagCommand,
}

#[derive(Subcommand)]
enum TagCommand {
    /// A tag's changes, newest first (tab-separated: time, action, digest, previous
    /// digest, actor, cleanup run).
    History {
        /// The repository's path, e.g. group/project/image.
        repository: String,
        tag: String,
        /// At most this many changes.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Put a deleted tag back on the digest it had (or `--digest`); with `--run`, every
    /// tag that cleanup run deleted.
    Restore {
        /// The repository's path (not with --run).
        #[arg(required_unless_present = "run")]
        repository: Option<String>,
        #[arg(required_unless_present = "run")]
        tag: Option<String>,
        /// One of the digests the tag had (default: the one before its last deletion).
        #[arg(long)]
        digest: Option<String>,
        /// Move the tag back even if it now points at another digest.
        #[arg(long)]
        force: bool,
        /// Undo this cleanup run (its id is in the cleanup log).
        #[arg(long, conflicts_with_all = ["repository", "tag", "digest", "force"])]
        run: Option<i64>,
    },
}

fn time(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn actor(a: &Option<Actor>) -> String {
    match a {
        Some(a) => match &a.username {
            Some(u) => format!("{u} ({})", a.kind),
            None => a.kind.clone(),
        },
        None => "-".into(),
    }
}

fn line(e: &TagEvent) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}",
        time(e.at),
        e.action,
        e.digest,
        e.previous_digest.as_deref().unwrap_or("-"),
        actor(&e.actor),
        e.cleanup_run_id
            .map(|r| r.to_string())
            .unwrap_or("-".into()),
    )
}

pub async fn run(cfg: Config, args: TagArgs) -> anyhow::Result<()> {
    let meta = crate::bootstrap::open_meta(&cfg).await?;
    let meta: &dyn Meta = &*meta;
    let now = berth_server::state::now_ms();
    let who = Actor::system("command");
    let repository_id = |path: String| async move {
        meta.repository(&path)
            .await?
            .map(|r| r.id)
            .with_context(|| format!("no repository at {path}"))
    };
    match args.command {
        TagCommand::History {
            repository,
            tag,
            limit,
        } => {
            let id = repository_id(repository).await?;
            let events = meta.tag_history(id, &tag, limit).await?;
            if events.is_empty() {
                bail!("tag {tag} has no history (never pushed, or pruned)");
            }
            for e in &events {
                println!("{}", line(e));
            }
        }
        TagCommand::Restore { run: Some(run), .. } => {
            meta.cleanup_run(run)
                .await?
                .with_context(|| format!("no cleanup run {run}"))?;
            let done = meta.restore_cleanup_run(run, &who, now).await?;
            println!(
                "cleanup run {run}: {} restored, {} gone, {} skipped (pushed again since)",
                done.restored, done.gone, done.skipped
            );
        }
        TagCommand::Restore {
            repository,
            tag,
            digest,
            force,
            run: None,
        } => {
            let (Some(repository), Some(tag)) = (repository, tag) else {
                bail!("give the repository and the tag, or --run");
            };
            let id = repository_id(repository.clone()).await?;
            match meta
                .restore_tag(id, &tag, digest.as_deref(), force, &who, now)
                .await?
            {
                Restore::Restored(d) => println!("{repository}:{tag} restored on {d}"),
                Restore::Unchanged(d) => println!("{repository}:{tag} already points at {d}"),
                Restore::Conflict { current } => {
                    bail!("{repository}:{tag} points at {current} now; --force moves it back")
                }
                Restore::Gone(d) => bail!("manifest {d} is gone; {tag} cannot be restored"),
                Restore::Unknown => bail!("{repository}:{tag} has no such deleted digest"),
            }
        }
    }
    Ok(())
}
