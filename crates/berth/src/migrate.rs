//! `berth migrate`: move a single node (SQLite metadata, blobs on its filesystem) onto
//! the stores several nodes can share: PostgreSQL and S3.
//!
//! Blobs first, then metadata, so the target never has metadata that points at
//! bytes it lacks. Each blob streams from the source store into the target through
//! the ordinary upload API, hashed on the way, and is published only when its bytes
//! match its digest; a blob the target already has (with the right size) is skipped,
//! so a run that was stopped continues where it was. The metadata goes in one
//! PostgreSQL transaction (see `berth_meta::transfer`), compared table by table with
//! the source before it commits. Last, every blob the target's metadata names is
//! checked in the target store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_meta::transfer::{self, Progress, TableCheck};
use berth_meta::{GcMeta, InstanceMeta, PgMeta, SqliteMeta};
use berth_oci::{Digest, Hasher};
use berth_store::{BlobStore, ByteStream, StoreError};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, StorageKind};
use crate::CommonArgs;

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The target: a berth.toml with `[database] url = "postgres://…"` and the blob
    /// storage to fill (usually `[storage] kind = "s3"` with `[storage.s3]`). Only the
    /// file counts, not BERTH_* variables or flags (those name the source), so the
    /// nodes can use the same file as their berth.toml.
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// Change nothing: compare every table (row counts and checksums) and check that
    /// every blob of the target's metadata is in the target store with its size.
    /// Exits with status 0 only when everything matches.
    #[arg(long)]
    verify: bool,
    /// Blobs copied at the same time.
    #[arg(long, value_name = "N", default_value_t = 4)]
    jobs: usize,
}

/// Test hooks that stop the process as a crash would, at a chosen point.
const EXIT_AFTER_BLOBS: &str = "BERTH_MIGRATE_TEST_EXIT_AFTER_BLOBS";
const EXIT_AFTER_TABLE: &str = "BERTH_MIGRATE_TEST_EXIT_AFTER_TABLE";
/// Prefix of the upload ids a migration uses in the target store.
const UPLOAD_PREFIX: &str = "migrate-";

fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

fn storage_name(cfg: &Config) -> String {
    match cfg.storage.kind {
        StorageKind::Filesystem => format!("files in {}", cfg.storage_path().display()),
        StorageKind::S3 => format!(
            "S3 bucket {}{}",
            cfg.storage.s3.bucket.as_deref().unwrap_or_default(),
            cfg.storage
                .s3
                .endpoint
                .as_deref()
                .map(|e| format!(" at {e}"))
                .unwrap_or_default()
        ),
    }
}

/// Processes other than this one that hold SQLite's locks on the database (every
/// open connection in WAL mode keeps a shared lock on the `-shm` file): a server or
/// an admin command still running. Linux's `/proc/locks` tells; elsewhere nothing.
fn database_users(db: &Path) -> Vec<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let inodes: Vec<u64> = [
            db.to_path_buf(),
            PathBuf::from(format!("{}-shm", db.display())),
        ]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.ino()))
        .collect();
        let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
            return Vec::new();
        };
        let me = std::process::id();
        let mut pids: Vec<u32> = locks
            .lines()
            .filter_map(|line| {
                // `1: POSIX  ADVISORY  READ 9594 fe:00:10036007 128 128`
                let mut fields = line.split_whitespace().skip(4);
                let pid: u32 = fields.next()?.parse().ok()?;
                let inode: u64 = fields.next()?.rsplit(':').next()?.parse().ok()?;
                (pid != me && inodes.contains(&inode)).then_some(pid)
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
    #[cfg(not(unix))]
    {
        let _ = db;
        Vec::new()
    }
}

/// A node last run by a Berth that kept the token signing key in a file has it
/// there only: store it in the source's database first, as `serve` would on its next
/// start, so that it moves with the rest and tokens stay valid.
async fn adopt_signing_key(meta: &SqliteMeta, cfg: &Config) -> anyhow::Result<()> {
    let path = cfg.signing_key_path();
    match std::fs::read_to_string(&path) {
        Ok(pem) => {
            meta.instance_secret(
                berth_meta::TOKEN_SIGNING_KEY,
                &pem,
                berth_server::state::now_ms(),
            )
            .await?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn print_tables(checks: &[TableCheck]) {
    for c in checks {
        if c.matches() {
            println!("  {:<28} {:>9} rows  ok", c.table, c.source.rows);
        } else {
            println!(
                "  {:<28} DIFFERS: source {}; target {}",
                c.table, c.source, c.target
            );
        }
    }
}

pub async fn run(cfg: Config, args: MigrateArgs) -> anyhow::Result<()> {
    if let Some(url) = cfg.database.redacted_url() {
        anyhow::bail!(
            "the source must be a single node with SQLite metadata, but this configuration uses {url}; \
             run berth migrate with the old node's configuration (its berth.toml or --data-dir)"
        );
    }
    let db_path = cfg.database_path();
    anyhow::ensure!(
        db_path.exists(),
        "there is no Berth instance here: {} does not exist (give the old node's --data-dir or --config)",
        db_path.display()
    );
    let target = Config::load_file(&args.to)?;
    let Some(url) = target.database.url.clone() else {
        anyhow::bail!(
            "{} has no [database] url: the target must be PostgreSQL (url = \"postgres://user:password@host/database\")",
            args.to.display()
        );
    };
    let users = database_users(&db_path);
    anyhow::ensure!(
        users.is_empty(),
        "{} is open in another process (pid {}): stop the server (and any berth admin command) first; \
         what it writes during the move would not be moved",
        db_path.display(),
        users
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );

    let source_meta = SqliteMeta::open(&db_path)
        .await
        .context("opening the source database")?;
    adopt_signing_key(&source_meta, &cfg).await?;
    let mut snapshot = source_meta.snapshot().await?;
    let source_store = cfg.open_store()?;
    let shown = target.database.redacted_url().unwrap_or_default();
    let target_meta = PgMeta::connect(&url, 4)
        .await
        .with_context(|| format!("opening the target database {shown}"))?;
    let target_store = target.open_store()?;
    println!(
        "from: {} (SQLite), {}",
        db_path.display(),
        storage_name(&cfg)
    );
    println!("to:   {shown} (PostgreSQL), {}", storage_name(&target));
    let plan = snapshot
        .plan(&target_meta)
        .await
        .context("matching the source's tables with the target's")?;

    if args.verify {
        return verify(&mut snapshot, &target_meta, &plan, target_store.as_ref()).await;
    }

    // A target that holds anything must hold exactly this source's metadata (a run
    // that finished before); anything else is someone else's data.
    let mut metadata_done = None;
    if transfer::target_rows(&target_meta, &plan).await? > 0 {
        let checks = transfer::compare(&mut snapshot, &target_meta, &plan).await?;
        if !checks.iter().all(TableCheck::matches) {
            println!("metadata: the target database already holds other data:");
            print_tables(&checks);
            anyhow::bail!(
                "the target database is not empty and does not hold exactly this source's metadata \
                 (it holds other data, or one side changed after an earlier migrate); berth migrate writes only \
                 into an empty database or one that a finished migrate of this same, unchanged source filled"
            );
        }
        println!("metadata: already in the target (a previous run finished it)");
        metadata_done = Some(checks);
    }

    // Uploads abandoned by an interrupted run.
    for id in target_store.upload_list().await? {
        if id.starts_with(UPLOAD_PREFIX) {
            target_store.upload_delete(&id).await?;
        }
    }

    let blobs = snapshot.blobs().await?;
    let report = copy_blobs(&source_store, &target_store, &blobs, args.jobs).await?;
    println!(
        "blobs: {} copied ({}), {} already in the target, {} damaged",
        report.copied,
        human(report.copied_bytes),
        report.present,
        report.failed.len()
    );
    if !report.failed.is_empty() {
        for (d, why) in &report.failed {
            println!("  damaged: {d}: {why}");
        }
        anyhow::bail!(
            "{} blob(s) could not be copied, so the metadata was not copied either; \
             restore them in the source storage (or delete the images that use them and let berth gc remove them), \
             then run berth migrate again",
            report.failed.len()
        );
    }

    let checks = match metadata_done {
        Some(checks) => checks,
        None => copy_metadata(&mut snapshot, &target_meta, &plan).await?,
    };
    let uploads = snapshot.count("uploads").await?;
    drop(snapshot);

    let missing = check_target_blobs(&target_meta, target_store.as_ref()).await?;
    println!(
        "metadata: {} tables, {} rows; row counts and checksums match the source",
        checks.len(),
        checks.iter().map(|c| c.source.rows).sum::<u64>()
    );
    println!(
        "uploads in progress: {uploads} not moved (clients start them again on the new stores)"
    );
    if !missing.is_empty() {
        for (d, why) in &missing {
            println!("  missing in the target store: {d}: {why}");
        }
        anyhow::bail!(
            "{} blob(s) of the target's metadata are not in the target store",
            missing.len()
        );
    }
    println!("blobs: every blob of the target's metadata is in the target store with its size");
    println!(
        "done: start the nodes with {} as their configuration",
        args.to.display()
    );
    Ok(())
}

async fn verify(
    snapshot: &mut transfer::Snapshot,
    target_meta: &PgMeta,
    plan: &transfer::Plan,
    target_store: &dyn BlobStore,
) -> anyhow::Result<()> {
    let checks = transfer::compare(snapshot, target_meta, plan).await?;
    println!("metadata:");
    print_tables(&checks);
    let missing = check_target_blobs(target_meta, target_store).await?;
    for (d, why) in &missing {
        println!("  missing in the target store: {d}: {why}");
    }
    let differ = checks.iter().filter(|c| !c.matches()).count();
    println!(
        "verify: {} of {} tables differ; {} blob(s) missing or of the wrong size in the target store",
        differ,
        checks.len(),
        missing.len()
    );
    anyhow::ensure!(
        differ == 0 && missing.is_empty(),
        "the target does not match the source"
    );
    println!("verify: the target matches the source");
    Ok(())
}

async fn copy_metadata(
    snapshot: &mut transfer::Snapshot,
    target_meta: &PgMeta,
    plan: &transfer::Plan,
) -> anyhow::Result<Vec<TableCheck>> {
    let bar = ProgressBar::new(plan.rows()).with_style(
        ProgressStyle::with_template("copying metadata [{bar:30}] {pos}/{len} rows ({msg})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let exit_after = std::env::var(EXIT_AFTER_TABLE).ok();
    let mut on_progress = |p: Progress<'_>| match p {
        Progress::Rows(n) => bar.inc(n),
        Progress::TableDone(t) => {
            bar.set_message(t.to_string());
            if exit_after.as_deref() == Some(t) {
                eprintln!("stopping after table {t} ({EXIT_AFTER_TABLE})");
                std::process::exit(3);
            }
        }
    };
    let outcome = transfer::copy(snapshot, target_meta, plan, &mut on_progress).await?;
    bar.finish_and_clear();
    if !outcome.committed {
        println!("metadata: the copy would not match the source, so nothing was committed:");
        print_tables(&outcome.tables);
        anyhow::bail!(
            "the target database holds rows that did not come from this source; \
             berth migrate writes only into an empty database"
        );
    }
    Ok(outcome.tables)
}

#[derive(Default)]
struct BlobReport {
    copied: u64,
    copied_bytes: u64,
    present: u64,
    failed: Vec<(Digest, String)>,
}

enum BlobOutcome {
    Present,
    Copied(u64),
    Damaged(String),
}

async fn copy_blobs(
    source: &Arc<dyn BlobStore>,
    target: &Arc<dyn BlobStore>,
    blobs: &[(Digest, u64)],
    jobs: usize,
) -> anyhow::Result<BlobReport> {
    let total: u64 = blobs.iter().map(|(_, s)| s).sum();
    // Drawn on stderr, and not at all when that is not a terminal.
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "copying blobs [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} ({msg})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let exit_after: Option<u64> = std::env::var(EXIT_AFTER_BLOBS)
        .ok()
        .and_then(|v| v.parse().ok());
    let done = AtomicU64::new(0);
    let copied_count = AtomicU64::new(0);
    let n = blobs.len();
    bar.set_message(format!("0/{n} blobs"));
    let mut results = futures::stream::iter(blobs.iter().enumerate())
        .map(|(seq, (digest, size))| {
            let (bar, done, copied_count) = (&bar, &done, &copied_count);
            async move {
                let r = copy_blob(source, target, digest, *size, seq, bar).await;
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_message(format!("{finished}/{n} blobs"));
                if matches!(r, Ok(BlobOutcome::Copied(_))) {
                    let c = copied_count.fetch_add(1, Ordering::Relaxed) + 1;
                    if exit_after == Some(c) {
                        eprintln!("stopping after {c} blobs copied ({EXIT_AFTER_BLOBS})");
                        std::process::exit(3);
                    }
                }
                r.map(|r| (digest, r))
                    .with_context(|| format!("copying blob {digest}"))
            }
        })
        .buffer_unordered(jobs.max(1));
    let mut report = BlobReport::default();
    while let Some((digest, r)) = results.try_next().await? {
        match r {
            BlobOutcome::Present => report.present += 1,
            BlobOutcome::Copied(bytes) => {
                report.copied += 1;
                report.copied_bytes += bytes;
            }
            BlobOutcome::Damaged(why) => report.failed.push((digest.clone(), why)),
        }
    }
    bar.finish_and_clear();
    report.failed.sort();
    Ok(report)
}

async fn copy_blob(
    source: &Arc<dyn BlobStore>,
    target: &Arc<dyn BlobStore>,
    digest: &Digest,
    size: u64,
    seq: usize,
    bar: &ProgressBar,
) -> anyhow::Result<BlobOutcome> {
    if target.stat(digest).await? == Some(size) {
        bar.inc(size);
        return Ok(BlobOutcome::Present);
    }
    let read = match source.open(digest, None).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => {
            bar.inc(size);
            return Ok(BlobOutcome::Damaged(
                "its bytes are missing from the source storage".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    if read.size != size {
        bar.inc(size);
        return Ok(BlobOutcome::Damaged(format!(
            "the source storage holds {} bytes, the metadata says {size}",
            read.size
        )));
    }
    let id = format!("{UPLOAD_PREFIX}{}-{seq}", std::process::id());
    target.upload_create(&id).await?;
    let counted = bar.clone();
    let body: ByteStream = Box::pin(
        read.body
            .inspect_ok(move |chunk| counted.inc(chunk.len() as u64)),
    );
    let (written, hasher) = match target
        .upload_append(&id, 0, body, Hasher::new(digest.algorithm()).into())
        .await
    {
        Ok(r) => r,
        Err(StoreError::Body(e)) => {
            target.upload_delete(&id).await?;
            return Ok(BlobOutcome::Damaged(format!("reading it failed: {e}")));
        }
        Err(e) => {
            let _ = target.upload_delete(&id).await;
            return Err(e.into());
        }
    };
    let Some(hasher) = hasher.wait().await else {
        target.upload_delete(&id).await?;
        anyhow::bail!("hashing the copy of {digest} stopped part-way");
    };
    let actual = hasher.finish();
    if written != size || actual != *digest {
        target.upload_delete(&id).await?;
        return Ok(BlobOutcome::Damaged(format!(
            "its bytes do not match its digest (they hash to {actual})"
        )));
    }
    target.upload_commit(&id, digest).await?;
    Ok(BlobOutcome::Copied(size))
}

/// Blobs of the target's metadata that the target store lacks or holds with another
/// size.
async fn check_target_blobs(
    meta: &PgMeta,
    store: &dyn BlobStore,
) -> anyhow::Result<Vec<(Digest, String)>> {
    let blobs = meta.all_blobs().await?;
    let bar = ProgressBar::new(blobs.len() as u64).with_style(
        ProgressStyle::with_template("checking the target store [{bar:30}] {pos}/{len} blobs")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut checks = futures::stream::iter(blobs)
        .map(|b| {
            let bar = &bar;
            async move {
                let found = store.stat(&b.digest).await?;
                bar.inc(1);
                Ok::<_, StoreError>((b, found))
            }
        })
        .buffer_unordered(16);
    let mut missing = Vec::new();
    while let Some((b, found)) = checks.try_next().await? {
        match found {
            None => missing.push((b.digest, "not there".to_string())),
            Some(s) if s != b.size.max(0) as u64 => {
                missing.push((b.digest, format!("{s} bytes, the metadata says {}", b.size)))
            }
            Some(_) => {}
        }
    }
    bar.finish_and_clear();
    missing.sort();
    Ok(missing)
}
