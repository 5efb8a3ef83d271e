//! `berth`: the registry binary. Loads the layered configuration and runs a command:
//! the server, administration of users, groups, projects and tokens, and CI credentials.

mod admin;
mod bootstrap;
mod ci_env;
mod cleanup;
mod config;
mod gc;
mod migrate;
mod serve;
mod tag;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use config::{Config, DatabaseOverrides, LogFormat, Overrides};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: a self-hosted container image registry with per-project image spaces",
    long_about = "Berth serves the OCI Distribution API that docker, podman, skopeo, oras and \
containerd speak, with GitLab's model of groups, projects, members and tokens.\n\n\
With no configuration at all, `berth serve` listens on 127.0.0.1:5000 and keeps \
everything under ./berth-data (SQLite metadata and content-addressed blob files).\n\n\
Settings are layered: built-in defaults, then berth.toml (or --config FILE), then BERTH_* \
environment variables, then command-line flags."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    Serve(ServeArgs),
    /// Manage users, groups, projects, members and tokens directly on the data directory
    /// (works while the server runs).
    Admin(admin::AdminArgs),
    /// Mint CI job credentials for a project and print the CI/CD variables a runner
    /// `eval`s; or end a job so its credentials stop working.
    CiEnv(ci_env::CiEnvArgs),
    /// Run a project's cleanup policy now, with a progress bar and a summary
    /// (`--dry-run` only lists what it would delete).
    Cleanup(cleanup::CleanupArgs),
    /// Offline garbage collection: mark and sweep metadata and storage, report bytes
    /// freed, orphaned files and missing bytes. Safe while the server runs.
    Gc(gc::GcArgs),
    /// Move this single node (SQLite metadata, blob files) onto PostgreSQL and S3.
    ///
    /// Stop the server first: what it writes during the move is not moved. Blobs are
    /// copied first (verified against their digests, with a progress bar), then the
    /// metadata in one transaction, compared table by table with the source. Run it
    /// again after an interruption to continue; `--verify` compares both sides.
    Migrate(migrate::MigrateArgs),
    /// A tag's history, and restoring deleted tags or a whole cleanup run, within the
    /// undo window (`gc.review_delay`). For administrators; works while the server runs.
    Tag(tag::TagArgs),
    /// Print the effective configuration (after all layers) as TOML.
    Config(CommonArgs),
}

#[derive(Args, Clone)]
pub struct CommonArgs {
    /// Read settings from this TOML file instead of ./berth.toml.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Where metadata and blobs live [env: BERTH_DATA_DIR] [default: ./berth-data]
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Log level or tracing filter, e.g. `info` or `berth_server=debug` [env: BERTH_LOG_LEVEL] [default: info]
    #[arg(long, value_name = "LEVEL", global = true)]
    log_level: Option<String>,
    /// Log format [env: BERTH_LOG_FORMAT] [default: text]
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    /// Keep metadata in PostgreSQL, e.g. postgres://berth@db/berth [env: BERTH_DATABASE_URL] [default: SQLite in the data directory]
    #[arg(long, value_name = "URL", global = true)]
    database_url: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on; port 0 picks a free port [env: BERTH_LISTEN] [default: 127.0.0.1:5000]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Public base URL for Location and Link headers and the token realm, e.g.
    /// https://registry.example.com [env: BERTH_EXTERNAL_URL] [default: taken from each request's Host]
    #[arg(long, value_name = "URL")]
    external_url: Option<String>,
    /// Remove upload sessions idle for this long, e.g. 24h or 30m [env: BERTH_UPLOAD_EXPIRY] [default: 24h]
    #[arg(long, value_name = "DURATION")]
    upload_expiry: Option<String>,
}

impl CommonArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            database: self
                .database_url
                .clone()
                .map(|url| DatabaseOverrides { url: Some(url) }),
            ..Default::default()
        }
    }

    /// The configuration for commands other than `serve`.
    pub fn load(&self) -> anyhow::Result<Config> {
        Config::load(self.config.as_deref(), &self.overrides())
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// glibc raises its mmap threshold each time a large block is freed (up to 32 MiB);
/// from then on multi-megabyte buffers (4 MiB manifests read or pushed, big pages)
/// come from the per-thread heap arenas, and what they leave there stays resident
/// (bench/huge_manifest.py, 38,000 layers: 149 MiB idle after the push, 37 at
/// start). A fixed 128 KiB threshold gave that back but made every 1 MiB chunk of a
/// blob GET a fresh mapping and trimmed the heap at every free (bench/run.sh --quick,
/// blob GET 64 MiB: 2942 -> 1499 MiB/s). So: a fixed 2 MiB threshold, a high trim
/// threshold, and free pages handed back every few seconds. Measured: blob GET
/// 3334 MiB/s; huge manifest 20.5 MiB at start, 30.5 idle after the push, 42.6 at
/// the peak of the page loads, 38.7 after.
///
/// glibc also gives each thread that allocates under contention an arena of its own,
/// up to eight per CPU, and freed memory scattered over many arenas stays resident:
/// 50 clients pushing 20 MiB each at once (upload writers on as many blocking
/// threads) left 96 MiB resident afterwards where one arena per CPU left 40
/// (idle: 23), at the same peak and push rate. Hence one arena per CPU.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_free_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before the runtime
    // starts its threads. Buffers of 2 MiB and more are mapped (and so unmapped at
    // free); below that the heap serves them, and it is not trimmed at every free
    // (which made each 1 MiB blob chunk fault its pages in again).
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 * 1024 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, i32::try_from(cpus).unwrap_or(i32::MAX));
    }
    std::thread::spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        // SAFETY: malloc_trim only returns free pages of the allocator's arenas to
        // the system; it is safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_free_memory() {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let overrides = Overrides {
                listen: args.listen.clone(),
                external_url: args.external_url.clone(),
                upload_expiry: args.upload_expiry.clone(),
                ..args.common.overrides()
            };
            let cfg = Config::load(args.common.config.as_deref(), &overrides)?;
            init_logging(&cfg);
            give_back_free_memory();
            runtime()?.block_on(serve::run(cfg))
        }
        Command::Admin(args) => {
            let cfg = args.common.load()?;
            runtime()?.block_on(admin::run(cfg, args.command))
        }
        Command::CiEnv(args) => {
            let cfg = args.common.load()?;
            runtime()?.block_on(ci_env::run(cfg, args))
        }
        Command::Cleanup(args) => {
            let cfg = args.common.load()?;
            runtime()?.block_on(cleanup::run(cfg, args))
        }
        Command::Gc(args) => {
            let cfg = args.common.load()?;
            runtime()?.block_on(gc::run(cfg, args))
        }
        Command::Migrate(args) => {
            let cfg = args.common.load()?;
            runtime()?.block_on(migrate::run(cfg, args))
        }
        Command::Tag(args) => {
            let cfg = args.common.load()?;
            runtime()?.block_on(tag::run(cfg, args))
        }
        Command::Config(args) => {
            let cfg = args.load()?;
            print!("{}", toml::to_string(&cfg.redacted())?);
            Ok(())
        }
    }
}
