//! `berth serve`: open the stores, make sure an administrator exists, listen.

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let meta = crate::bootstrap::open_meta(&cfg).await?;
    crate::bootstrap::ensure_root(&*meta, &cfg).await?;
    let store = cfg.open_store()?;
    store.check_access().await?;
    let signer = signing_key(&*meta, &cfg).await?;
    let state = Arc::new(berth_server::AppState {
        meta,
        store,
        settings: berth_server::Settings {
            external_url: cfg.external_url.clone(),
            upload_expiry: cfg.upload_expiry,
            token_ttl: cfg.token_expiry,
            token_issuer: cfg.token_issuer.clone(),
            bulk_delete_interval: cfg.bulk_delete_interval,
            refuse_moves_with_tags: cfg.refuse_moves_with_tags,
            cleanup: cfg.cleanup_limits(),
            gc_review_delay: cfg.gc.review_delay,
            gc_delete_untagged: cfg.gc.delete_untagged,
            tag_history_retention: cfg.tag_history.retention,
            trusted_proxies: cfg.trusted_proxies()?,
        },
        uploads: Default::default(),
        signer,
        login: Default::default(),
        jobs: Default::default(),
        metrics: berth_server::metrics::install(),
        proxy: berth_server::proxy::Proxy::new(cfg.proxy_config())
            .map_err(|e| anyhow::anyhow!("dependency_proxy: {e}"))?,
    });
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "berth started");
    // Tests and scripts wait for this exact line.
    println!("berth listening on http://{addr}");
    berth_server::serve(listener, state, cfg.serving_limits(), shutdown_signal()).await?;
    tracing::info!("berth stopped");
    Ok(())
}

/// The token signing key every node shares, from the database. The first node to
/// start stores it: the key file of an install from before keys moved into the
/// database (`<data dir>/jwt-signing-key.pem`), or a new key.
async fn signing_key(
    meta: &dyn berth_meta::Meta,
    cfg: &Config,
) -> anyhow::Result<berth_server::auth::jwt::Signer> {
    use berth_server::auth::jwt::Signer;
    let legacy = cfg.signing_key_path();
    let candidate = match std::fs::read_to_string(&legacy) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Signer::generate_pem()?,
        Err(e) => {
            return Err(e).with_context(|| format!("reading the signing key {}", legacy.display()))
        }
    };
    let pem = meta
        .instance_secret(
            berth_meta::TOKEN_SIGNING_KEY,
            &candidate,
            berth_server::state::now_ms(),
        )
        .await
        .context("storing the token signing key")?;
    Signer::from_pem(&pem, &cfg.token_issuer, "container_registry")
        .context("loading the token signing key")
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
