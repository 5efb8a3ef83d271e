//! Opening the metadata store, and the first administrator of a new instance.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use berth_meta::{Meta, NewUser, PgMeta, SqliteMeta};
use berth_server::auth::secrets;

use crate::config::Config;

/// The metadata store the configuration names: PostgreSQL when `database.url` is
/// set, else SQLite in the data directory. The rest of Berth sees only `Meta`.
pub async fn open_meta(cfg: &Config) -> anyhow::Result<Arc<dyn Meta>> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    match &cfg.database.url {
        Some(url) => {
            let shown = cfg.database.redacted_url().unwrap_or_default();
            let meta = PgMeta::connect(url, cfg.database.max_connections)
                .await
                .with_context(|| format!("opening the metadata database {shown}"))?;
            tracing::info!(database = %shown, "metadata in PostgreSQL");
            Ok(Arc::new(meta))
        }
        None => {
            let meta = SqliteMeta::open(&cfg.database_path())
                .await
                .context("opening the metadata database")?;
            Ok(Arc::new(meta))
        }
    }
}

/// On an empty instance, create the `root` administrator. Its password is
/// `BERTH_INITIAL_ROOT_PASSWORD` when set; otherwise a random one, written once to
/// `<data dir>/initial_root_password` (mode 0600) and printed.
pub async fn ensure_root(meta: &dyn Meta, cfg: &Config) -> anyhow::Result<()> {
    if meta.count_users().await? > 0 {
        return Ok(());
    }
    let (password, generated) = match std::env::var("BERTH_INITIAL_ROOT_PASSWORD") {
        Ok(p) if !p.is_empty() => (p, false),
        _ => (secrets::generate_password(), true),
    };
    let hash = secrets::hash_password(&password).map_err(anyhow::Error::msg)?;
    meta.create_user(
        &NewUser {
            username: "root".into(),
            name: "Administrator".into(),
            email: None,
            password_hash: Some(hash),
            admin: true,
        },
        berth_server::state::now_ms(),
    )
    .await
    .context("creating the root user")?;
    if generated {
        let path = cfg.data_dir.join("initial_root_password");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(f, "{password}")?;
        eprintln!(
            "Created the administrator 'root' with password {password}\n(also written to {}; change it and delete that file)",
            path.display()
        );
    } else {
        eprintln!(
            "Created the administrator 'root' with the password from BERTH_INITIAL_ROOT_PASSWORD"
        );
    }
    Ok(())
}
