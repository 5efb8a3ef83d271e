//! Opening the metadata store, and the first administrator of a new instance.

use std::io::Write;

use anyhow::Context;
use berth_meta::{NewUser, OrgMeta, SqliteMeta};
use berth_server::auth::secrets;

use crate::config::Config;

pub async fn open_meta(cfg: &Config) -> anyhow::Result<SqliteMeta> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    SqliteMeta::open(&cfg.database_path())
        .await
        .context("opening the metadata database")
}

/// On an empty instance, create the `root` administrator. Its password is
/// `BERTH_INITIAL_ROOT_PASSWORD` when set; otherwise a random one, written once to
/// `<data dir>/initial_root_password` (mode 0600) and printed.
pub async fn ensure_root(meta: &SqliteMeta, cfg: &Config) -> anyhow::Result<()> {
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
