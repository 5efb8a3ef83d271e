//! `berth gc`: offline garbage collection — a full mark and sweep of metadata, then of
//! storage: bytes no metadata knows (orphans from crashes) are removed, and metadata
//! whose bytes are missing is reported. Safe while the server runs: it takes the
//! same locks and re-checks metadata before deleting any bytes.

use std::time::Duration;

use berth_meta::{BlobRecord, Meta};
use berth_oci::Digest;
use berth_store::BlobStore;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::CommonArgs;

#[derive(Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Report what would be freed without deleting anything.
    #[arg(long)]
    dry_run: bool,
    /// Also delete untagged manifests (children of tagged indexes, referrers of kept
    /// manifests and manifests a tag left within `gc.review_delay` stay); the default
    /// already does unless `gc.delete_untagged` is off.
    #[arg(long, short = 'm')]
    delete_untagged: bool,
    /// Leave blobs and files younger than this alone, so pushes in flight keep theirs.
    #[arg(long, default_value = "1h")]
    grace: humantime::Duration,
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

pub async fn run(cfg: Config, args: GcArgs) -> anyhow::Result<()> {
    let meta = crate::bootstrap::open_meta(&cfg).await?;
    let meta: &dyn Meta = &*meta;
    let store = cfg.open_store()?;
    let store: &dyn BlobStore = store.as_ref();
    let grace: Duration = args.grace.into();
    let now = berth_server::state::now_ms();
    let cutoff = now - grace.as_millis() as i64;
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("marking and sweeping metadata");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let report = meta
        .sweep(
            args.delete_untagged || cfg.gc.delete_untagged,
            cutoff,
            // A tag deleted within the review delay can still be restored.
            now - cfg.gc.review_delay.as_millis() as i64,
            args.dry_run,
        )
        .await?;
    spinner.finish_and_clear();

    // Bytes of the blobs just removed from metadata.
    let freed_blobs: u64 = report
        .blobs_deleted
        .iter()
        .map(|b| b.size.max(0) as u64)
        .sum();
    let (deleted, deleted_bytes) = if args.dry_run {
        (report.blobs_deleted.len() as u64, freed_blobs)
    } else {
        berth_server::gc::delete_bytes(meta, store, &report.blobs_deleted, true).await?
    };

    // Storage against metadata: orphans and missing bytes. Both lists sorted and walked
    // side by side: at a million blobs, a hash set of each (and a copy of the file
    // list) took hundreds of MiB.
    let mut files = store.list().await?;
    sort_if_needed(&mut files);
    let mut known: Vec<Digest> = meta
        .all_blobs()
        .await?
        .into_iter()
        .map(|b| b.digest)
        .collect();
    sort_if_needed(&mut known);
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template("checking storage [{bar:30}] {pos}/{len} files")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut orphans = Vec::new();
    let mut missing = Vec::new();
    let mut k = known.iter().peekable();
    for d in &files {
        bar.inc(1);
        // Metadata's blobs before this file that no file has.
        while let Some(m) = k.next_if(|m| *m < d) {
            missing.push(m.clone());
        }
        if k.next_if(|m| *m == d).is_some() {
            continue;
        }
        // Young files may belong to a push that is linking them right now.
        let young = store.modified_at(d).await?.is_some_and(|m| m > cutoff);
        if !young {
            let size = store.stat(d).await?.unwrap_or(0) as i64;
            orphans.push(BlobRecord {
                digest: d.clone(),
                size,
            });
        }
    }
    missing.extend(k.cloned());
    drop(known);
    drop(files);
    bar.finish_and_clear();
    let orphan_bytes: u64 = orphans.iter().map(|b| b.size as u64).sum();
    let (orphans_deleted, orphan_bytes_deleted) = if args.dry_run {
        (orphans.len() as u64, orphan_bytes)
    } else {
        berth_server::gc::delete_bytes(meta, store, &orphans, false).await?
    };

    if !args.dry_run {
        // Counted with online GC's, so the admin area shows what was given back.
        let freed = berth_meta::GcFreed {
            manifests: report.manifests_deleted as i64,
            blobs: (deleted + orphans_deleted) as i64,
            bytes: (deleted_bytes + orphan_bytes_deleted) as i64,
        };
        meta.record_gc_freed(&freed, berth_server::state::now_ms())
            .await?;
    }
    let verb = if args.dry_run { "would free" } else { "freed" };
    println!(
        "garbage collection {}:",
        if args.dry_run { "(dry run)" } else { "done" }
    );
    println!("  manifests deleted:        {}", report.manifests_deleted);
    println!(
        "  blobs deleted:            {deleted} ({verb} {})",
        human(deleted_bytes)
    );
    println!(
        "  orphaned files deleted:   {orphans_deleted} ({verb} {})",
        human(orphan_bytes_deleted)
    );
    println!(
        "  total {verb}:{}{}",
        " ".repeat(28usize.saturating_sub(9 + verb.len())),
        human(deleted_bytes + orphan_bytes_deleted)
    );
    if missing.is_empty() {
        println!("  blobs with missing bytes: 0");
    } else {
        println!(
            "  blobs with missing bytes: {} (metadata refers to bytes storage does not have):",
            missing.len()
        );
        for d in missing {
            println!("    {d}");
        }
        anyhow::bail!("storage is missing bytes that metadata refers to");
    }
    Ok(())
}

/// Sort `xs` unless it already is (both lists usually come sorted).
fn sort_if_needed(xs: &mut [Digest]) {
    if !xs.is_sorted() {
        xs.sort_unstable();
    }
}
