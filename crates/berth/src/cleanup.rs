//! `berth cleanup`: run a project's cleanup policy now, from the shell, on the data
//! directory directly (the server may be running). With `--dry-run` it only reports.

use std::io::Write;

use anyhow::{bail, Context};
use berth_meta::{Meta, Window};
use berth_server::cleanup::{plan, rules_of, run_turn, Limits, RunBy};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::CommonArgs;

#[derive(Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The project whose policy to run (full path).
    #[arg(long)]
    project: String,
    /// Show what would be deleted without deleting anything.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(cfg: Config, args: CleanupArgs) -> anyhow::Result<()> {
    let meta = crate::bootstrap::open_meta(&cfg).await?;
    let meta: &dyn Meta = &*meta;
    let project = meta
        .project_by_path(&args.project)
        .await?
        .with_context(|| format!("no project at {}", args.project))?;
    let policy = meta
        .expiration_policy(project.id)
        .await?
        .unwrap_or_else(berth_server::cleanup::default_policy);
    let rules =
        rules_of(&policy).map_err(|e| anyhow::anyhow!("the saved policy is invalid: {e}"))?;
    if !policy.enabled {
        eprintln!("note: the policy is disabled; running it anyway because you asked");
    }
    let (repos, _) = meta
        .repositories_of(
            &[project.id],
            Window {
                offset: 0,
                limit: i64::MAX,
            },
        )
        .await?;
    if repos.is_empty() {
        println!("{} has no repositories", project.full_path);
        return Ok(());
    }
    // One cleanup run for the whole command, so it can be undone in one call.
    let actor = berth_meta::Actor::system("command");
    let run = if args.dry_run {
        None
    } else {
        let id = meta
            .start_cleanup_run(project.id, "command", &actor, berth_server::state::now_ms())
            .await?;
        println!("cleanup run {id}");
        Some(id)
    };
    let style = ProgressStyle::with_template("{prefix:30!} [{bar:30}] {pos}/{len} tags {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let (mut total_doomed, mut total_deleted, mut total_kept) = (0usize, 0u64, 0usize);
    for repo in &repos {
        let now = berth_server::state::now_ms();
        let p = plan(meta, repo.id, &rules, now).await?;
        let doomed: Vec<String> = p.doomed().map(|t| t.name.clone()).collect();
        total_kept += p.tags.len() - doomed.len();
        total_doomed += doomed.len();
        if args.dry_run {
            // Buffered: a repository may list 100,000 tags, a write each unbuffered.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            writeln!(
                out,
                "{}: would delete {} of {} tags",
                repo.path,
                doomed.len(),
                p.tags.len()
            )?;
            for name in &doomed {
                writeln!(out, "  {name}")?;
            }
            out.flush()?;
            continue;
        }
        let bar = ProgressBar::new(doomed.len() as u64).with_style(style.clone());
        bar.set_prefix(repo.path.clone());
        let limits = Limits {
            worker_capacity: 1,
            delete_timeout_secs: u64::MAX / 2,
            max_list_size: usize::MAX,
        };
        let by = RunBy {
            reason: "command",
            run,
            actor: &actor,
            who: berth_core::protection::Standing::NOBODY,
        };
        let outcome = run_turn(meta, repo.id, &rules, limits, by, |done, _| {
            bar.set_position(done)
        })
        .await?;
        bar.finish_with_message("done");
        total_deleted += outcome.deleted;
    }
    if args.dry_run {
        println!(
            "dry run: {total_doomed} tags would be deleted, {total_kept} kept, in {} repositories",
            repos.len()
        );
    } else {
        println!(
            "deleted {total_deleted} tags, kept {total_kept}, in {} repositories (storage is freed by garbage collection)",
            repos.len()
        );
        if total_deleted < total_doomed as u64 {
            bail!(
                "{} tags could not be deleted",
                total_doomed as u64 - total_deleted
            );
        }
    }
    Ok(())
}
