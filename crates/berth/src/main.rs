//! `berth`: the registry binary. Loads the layered configuration and runs a command.

mod config;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use config::{Config, LogFormat, Overrides};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Berth: a self-hosted container image registry with per-project image spaces",
    long_about = "Berth serves the OCI Distribution API that docker, podman, skopeo, oras and \
containerd speak.\n\nWith no configuration at all, `berth serve` listens on 127.0.0.1:5000 and keeps \
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
    /// Print the effective configuration (after all layers) as TOML.
    Config(CommonArgs),
}

#[derive(Args)]
struct CommonArgs {
    /// Read settings from this TOML file instead of ./berth.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where metadata and blobs live [env: BERTH_DATA_DIR] [default: ./berth-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log level or tracing filter, e.g. `info` or `berth_server=debug` [env: BERTH_LOG_LEVEL] [default: info]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format [env: BERTH_LOG_FORMAT] [default: text]
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Address to listen on; port 0 picks a free port [env: BERTH_LISTEN] [default: 127.0.0.1:5000]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Public base URL for Location and Link headers, e.g. https://registry.example.com
    /// [env: BERTH_EXTERNAL_URL] [default: taken from each request's Host]
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
            ..Default::default()
        }
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
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(cfg))
        }
        Command::Config(args) => {
            let cfg = Config::load(args.config.as_deref(), &args.overrides())?;
            print!("{}", toml::to_string(&cfg)?);
            Ok(())
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let meta = berth_meta::SqliteMeta::open(&cfg.data_dir.join("berth.db"))
        .await
        .context("opening the metadata database")?;
    let store =
        berth_store::FsStore::open(cfg.data_dir.join("storage")).context("opening blob storage")?;
    let state = Arc::new(berth_server::AppState {
        meta: Arc::new(meta),
        store: Arc::new(store),
        settings: berth_server::Settings {
            external_url: cfg.external_url.clone(),
            upload_expiry: cfg.upload_expiry,
        },
        uploads: Default::default(),
        metrics: berth_server::metrics::install(),
    });
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "berth started");
    // Tests and scripts wait for this exact line.
    println!("berth listening on http://{addr}");
    berth_server::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("berth stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
