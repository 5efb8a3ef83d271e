//! Fetching an uncached blob from upstream: once per blob however many clients ask
//! at the same time (single flight), each client getting the bytes while they
//! arrive. The fetch runs in a task of its own, so a client hanging up does not stop
//! it; it writes every chunk to a local spool file that the waiting clients read
//! behind it, and to an upload in the blob store, which is published under the
//! digest only once the bytes hash to it. A node that dies half-way leaves an
//! unfinished upload (expired later), never a blob.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::http::Method;
use berth_oci::{Digest, Hasher};
use berth_store::ByteStream;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use super::upstream::{Target, UpstreamError};
use crate::state::{now_ms, Shared};

/// How far a fetch got.
#[derive(Debug, Clone)]
enum Progress {
    /// Waiting for the upstream's answer.
    Starting,
    /// Bytes arriving: `written` are in the spool file; `size` when announced.
    Streaming {
        written: u64,
        size: Option<u64>,
    },
    /// Every byte is in the spool file and in the store, and they hash to the digest;
    /// publishing may still be under way.
    Verified {
        size: u64,
    },
    /// Verified and published in the blob store.
    Done {
        size: u64,
    },
    Failed(Failure),
}

/// Why a fetch failed.
#[derive(Debug, Clone)]
pub enum Failure {
    Upstream(UpstreamError),
    /// The upstream's bytes were wrong, or storing them failed.
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Upstream(e) => e.fmt(f),
            Failure::Other(e) => f.write_str(e),
        }
    }
}

struct Inflight {
    spool: PathBuf,
    progress: watch::Sender<Progress>,
    /// Groups whose caches get the blob once it is published.
    groups: Mutex<Vec<i64>>,
}

/// The fetches in progress on this node, by digest.
#[derive(Default)]
pub struct Fetches {
    inflight: Mutex<HashMap<Digest, Arc<Inflight>>>,
}

/// A blob on its way to a client.
pub struct Joined {
    /// `None` when the upstream did not say (chunked).
    pub size: Option<u64>,
    pub body: ByteStream,
}

/// Join the fetch of `digest` for group `namespace_id`, starting it if none runs.
/// Returns once the upstream has answered: with the bytes as they come, or with
/// why not.
pub async fn join(
    state: &Shared,
    namespace_id: i64,
    target: &Target,
    digest: &Digest,
) -> Result<Joined, Failure> {
    let inflight = {
        let mut map = state
            .proxy
            .fetches
            .inflight
            .lock()
            .map_err(|_| Failure::Other("fetch table poisoned".into()))?;
        match map.get(digest) {
            Some(f) => {
                if let Ok(mut g) = f.groups.lock() {
                    if !g.contains(&namespace_id) {
                        g.push(namespace_id);
                    }
                }
                f.clone()
            }
            None => {
                let f = Arc::new(Inflight {
                    spool: state.proxy.config.spool_dir.join(format!(
                        "{}-{}",
                        digest.hex(),
                        uuid::Uuid::new_v4()
                    )),
                    progress: watch::Sender::new(Progress::Starting),
                    groups: Mutex::new(vec![namespace_id]),
                });
                map.insert(digest.clone(), f.clone());
                tokio::spawn(run(
                    state.clone(),
                    target.clone(),
                    digest.clone(),
                    f.clone(),
                ));
                f
            }
        }
    };
    let mut rx = inflight.progress.subscribe();
    let now = rx
        .wait_for(|p| !matches!(p, Progress::Starting))
        .await
        .map_err(|_| Failure::Other("the fetch ended without a word".into()))?
        .clone();
    match now {
        Progress::Starting => Err(Failure::Other("the fetch did not start".into())),
        Progress::Failed(f) => Err(f),
        Progress::Done { size } => from_store(state, digest, size).await,
        Progress::Verified { size } => match tokio::fs::File::open(&inflight.spool).await {
            Ok(file) => Ok(Joined {
                size: Some(size),
                body: tail(file, rx),
            }),
            Err(_) => from_store_when_done(state, digest, &rx).await,
        },
        Progress::Streaming { size, .. } => match tokio::fs::File::open(&inflight.spool).await {
            Ok(file) => Ok(Joined {
                size,
                body: tail(file, rx),
            }),
            Err(_) => from_store_when_done(state, digest, &rx).await,
        },
    }
}

/// The spool file could not be opened: finished and cleaned up meanwhile, so it is in
/// the store now (or the fetch failed).
async fn from_store_when_done(
    state: &Shared,
    digest: &Digest,
    rx: &watch::Receiver<Progress>,
) -> Result<Joined, Failure> {
    let now = rx.borrow().clone();
    match now {
        Progress::Done { size } => from_store(state, digest, size).await,
        Progress::Failed(f) => Err(f),
        _ => Err(Failure::Other(
            "the spool file of the fetch vanished".into(),
        )),
    }
}

async fn from_store(state: &Shared, digest: &Digest, size: u64) -> Result<Joined, Failure> {
    let read = state
        .store
        .open(digest, None)
        .await
        .map_err(|e| Failure::Other(e.to_string()))?;
    Ok(Joined {
        size: Some(size),
        body: read.body,
    })
}

/// Read the spool file behind the fetch: what is written, then wait for more. The
/// last byte is held back until the whole blob is verified (a client that knows the
/// length would take the blob as complete with it), so no client ever gets the whole
/// of an unverified blob: a fetch that fails, or a node that dies, leaves its clients
/// with a broken connection short of the end. The stream ends once the fetch is
/// verified, and fails if the fetch does.
fn tail(file: tokio::fs::File, rx: watch::Receiver<Progress>) -> ByteStream {
    const CHUNK: usize = 256 * 1024;
    let stream = futures::stream::unfold(
        (file, rx, 0u64, false),
        |(mut file, mut rx, offset, over)| async move {
            if over {
                return None;
            }
            loop {
                let state = rx.borrow_and_update().clone();
                let available = match &state {
                    Progress::Streaming { written, size } => match size {
                        Some(size) => (*written).min(size.saturating_sub(1)),
                        None => *written,
                    },
                    Progress::Verified { size } | Progress::Done { size } => *size,
                    Progress::Failed(f) => {
                        let e = std::io::Error::other(format!("the upstream fetch failed: {f}"));
                        return Some((Err(e), (file, rx, offset, true)));
                    }
                    Progress::Starting => 0,
                };
                if available > offset {
                    let want = (available - offset).min(CHUNK as u64) as usize;
                    let mut buf = vec![0u8; want];
                    let read = async {
                        file.seek(std::io::SeekFrom::Start(offset)).await?;
                        file.read_exact(&mut buf).await
                    }
                    .await;
                    return match read {
                        Ok(_) => Some((
                            Ok(Bytes::from(buf)),
                            (file, rx, offset + want as u64, false),
                        )),
                        Err(e) => Some((Err(e), (file, rx, offset, true))),
                    };
                }
                if matches!(state, Progress::Verified { .. } | Progress::Done { .. }) {
                    return None;
                }
                if rx.changed().await.is_err() {
                    let e = std::io::Error::other("the upstream fetch stopped");
                    return Some((Err(e), (file, rx, offset, true)));
                }
            }
        },
    );
    Box::pin(stream)
}

/// Remove spool files nothing has written to for longer than `idle`: what a node
/// that died in the middle of fetches left in its spool directory (run at start,
/// before this node fetches anything). The age rule spares the files of another
/// process that shares the directory by mistake: its fetches write whenever the
/// upstream sends bytes, and are cut once the upstream stays silent for the upstream
/// timeout.
pub fn sweep_spool(dir: &std::path::Path, idle: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > idle);
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The fetch task: fetch, verify, publish, then tell the waiting clients.
async fn run(state: Shared, target: Target, digest: Digest, inflight: Arc<Inflight>) {
    let outcome = fetch(&state, &target, &digest, &inflight).await;
    let outcome = match outcome {
        Ok(size) => link_groups(&state, &digest, size, &inflight, false)
            .await
            .map(|()| size),
        Err(f) => Err(f),
    };
    // From here on, new requests find the blob in the cache (or start afresh).
    if let Ok(mut map) = state.proxy.fetches.inflight.lock() {
        map.remove(&digest);
    }
    let outcome = match outcome {
        // Groups that joined after the first links.
        Ok(size) => link_groups(&state, &digest, size, &inflight, true)
            .await
            .map(|()| size),
        Err(f) => Err(f),
    };
    match outcome {
        Ok(size) => {
            tracing::info!(%digest, size, image = %target.image, "dependency proxy cached a blob");
            inflight.progress.send_replace(Progress::Done { size });
        }
        Err(f) => {
            tracing::warn!(%digest, image = %target.image, error = %f, "dependency proxy blob fetch failed");
            inflight.progress.send_replace(Progress::Failed(f));
        }
    }
    // Clients reading it keep their open handles.
    let _ = tokio::fs::remove_file(&inflight.spool).await;
}

async fn link_groups(
    state: &Shared,
    digest: &Digest,
    size: u64,
    inflight: &Inflight,
    rest: bool,
) -> Result<(), Failure> {
    let groups: Vec<i64> = match inflight.groups.lock() {
        Ok(mut g) => {
            if rest {
                std::mem::take(&mut *g)
            } else {
                g.clone()
            }
        }
        Err(_) => Vec::new(),
    };
    for ns in groups {
        state
            .meta
            .link_proxy_blob(ns, digest, size, now_ms())
            .await
            .map_err(|e| Failure::Other(e.to_string()))?;
    }
    Ok(())
}

/// Fetch into a store upload and the spool file; publish once verified.
async fn fetch(
    state: &Shared,
    target: &Target,
    digest: &Digest,
    inflight: &Inflight,
) -> Result<u64, Failure> {
    let other = |e: &dyn std::fmt::Display| Failure::Other(e.to_string());
    let resp = state
        .proxy
        .client
        .send(target, Method::GET, &format!("blobs/{digest}"), None)
        .await
        .map_err(Failure::Upstream)?;
    let size = resp.content_length();
    tokio::fs::create_dir_all(&state.proxy.config.spool_dir)
        .await
        .map_err(|e| other(&e))?;
    let mut spool = tokio::fs::File::create(&inflight.spool)
        .await
        .map_err(|e| other(&e))?;
    // A session row first, as pushes do: upload data without one is swept away.
    let id = format!("proxy-{}", uuid::Uuid::new_v4());
    let now = now_ms();
    state
        .meta
        .create_upload(&berth_meta::Upload {
            id: id.clone(),
            repository_path: format!("dependency_proxy/{}", target.image),
            created_at: now,
            updated_at: now,
            created_by: Some("dependency_proxy".into()),
        })
        .await
        .map_err(|e| other(&e))?;
    let result = async {
        state
            .store
            .upload_create(&id)
            .await
            .map_err(|e| other(&e))?;
        inflight
            .progress
            .send_replace(Progress::Streaming { written: 0, size });
        let (mut tx, rx) = futures::channel::mpsc::channel::<std::io::Result<Bytes>>(8);
        let upload = id.as_str();
        let feed = async move {
            let mut body = resp.bytes_stream();
            let mut written = 0u64;
            // The upload's recorded activity, moved on as bytes come, so that a fetch
            // from a slow upstream is not expired while it still makes progress.
            let every = crate::jobs::touch_interval(state).as_millis() as i64;
            let mut touched = now;
            while let Some(chunk) = body.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        let why = format!("reading the blob from upstream: {e}");
                        let _ = tx.send(Err(std::io::Error::other(why.clone()))).await;
                        return Err(Failure::Upstream(UpstreamError::Unreachable(why)));
                    }
                };
                if size.is_some_and(|s| written + chunk.len() as u64 > s) {
                    let why = "the upstream sent more bytes than it announced".to_string();
                    let _ = tx.send(Err(std::io::Error::other(why.clone()))).await;
                    return Err(Failure::Other(why));
                }
                let spooled = async {
                    spool.write_all(&chunk).await?;
                    spool.flush().await
                }
                .await;
                if let Err(e) = spooled {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return Err(Failure::Other(format!("writing the spool file: {e}")));
                }
                written += chunk.len() as u64;
                if tx.send(Ok(chunk)).await.is_err() {
                    return Err(Failure::Other("the blob store stopped taking bytes".into()));
                }
                inflight
                    .progress
                    .send_replace(Progress::Streaming { written, size });
                let at = now_ms();
                if at - touched >= every {
                    touched = at;
                    if let Err(e) = state.meta.touch_upload(upload, at).await {
                        // Not fatal: the fetch goes on, and may yet finish in time.
                        tracing::warn!(error = %e, upload, "recording the fetch's progress failed");
                    }
                }
            }
            Ok(written)
        };
        let store = state.store.upload_append(
            &id,
            0,
            Box::pin(rx) as ByteStream,
            Hasher::new(digest.algorithm()).into(),
        );
        let (fed, stored) = tokio::join!(feed, store);
        let written = fed?;
        let (stored, hasher) = stored.map_err(|e| other(&e))?;
        if stored != written || size.is_some_and(|s| s != written) {
            return Err(Failure::Other(format!(
                "the upstream sent {written} bytes of {} announced",
                size.map_or("an unknown number".into(), |s| s.to_string())
            )));
        }
        let hasher = hasher
            .wait()
            .await
            .ok_or_else(|| Failure::Other("hashing the blob stopped".into()))?;
        let actual = hasher.finish();
        if &actual != digest {
            return Err(Failure::Other(format!(
                "the upstream sent content with digest {actual}, not {digest}"
            )));
        }
        // The waiting clients get their last byte now, while the blob is published.
        inflight
            .progress
            .send_replace(Progress::Verified { size: written });
        {
            let _publishing = crate::gc::blob_guard(&*state.meta, &*state.store, false)
                .await
                .map_err(|e| other(&e))?;
            state
                .store
                .upload_commit(&id, digest)
                .await
                .map_err(|e| other(&e))?;
            // The first group links under the lock, so GC cannot take the bytes first.
            let first = inflight.groups.lock().ok().and_then(|g| g.first().copied());
            if let Some(ns) = first {
                state
                    .meta
                    .link_proxy_blob(ns, digest, written, now_ms())
                    .await
                    .map_err(|e| other(&e))?;
            }
        }
        Ok(written)
    }
    .await;
    if result.is_err() {
        let _ = state.store.upload_delete(&id).await;
    }
    let _ = state.meta.delete_upload(&id).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn the_spool_sweep_removes_only_what_no_live_fetch_writes() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("left-by-a-dead-node");
        let live = dir.path().join("being-written");
        std::fs::write(&old, b"half a blob").unwrap();
        std::fs::write(&live, b"the first bytes").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        assert_eq!(sweep_spool(dir.path(), Duration::from_secs(60)), 1);
        assert!(!old.exists());
        assert!(live.exists());
        // A spool directory not made yet is nothing to sweep.
        assert_eq!(sweep_spool(&dir.path().join("none"), Duration::ZERO), 0);
    }
}
