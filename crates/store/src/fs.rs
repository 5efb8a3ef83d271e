//! The filesystem store: `blobs/<alg>/<first two hex>/<hex>` for published blobs and
//! `uploads/<id>` for uploads in progress, on the same filesystem so publishing is a
//! rename.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, Hasher};
use bytes::Bytes;
use futures::StreamExt;

use crate::{BlobRead, BlobStore, ByteRange, ByteStream, PendingHash, Result, StoreError};

const READ_CHUNK: usize = 1024 * 1024;
const REHASH_BUFFER: usize = 1024 * 1024;
/// Received upload bytes waiting to be hashed and written, over all uploads at once.
/// One upload queues up to [`QUEUE_BATCHES`] batches of about [`BATCH`] bytes, so
/// this only binds when many run at once: 50 clients pushing at the same moment queued
/// 100-300 MiB before it (`bench/run.sh`, peak RSS), while the disk and the hashing
/// threads were the bottleneck anyway. A chunk waiting here holds the rest of its
/// request's body in the kernel's socket buffer and, beyond it, in the client.
const QUEUED_MAX: u32 = 32 * 1024 * 1024;
static QUEUED: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(QUEUED_MAX as usize);
/// Received chunks are handed to the hashing and the writing thread in batches of
/// about this many bytes. A body arrives in chunks of 64-400 KiB, and each hand-off
/// may wake a parked thread: handing them over one by one made a single-request
/// upload 2-3 % slower (`bench/put_ab.py`, medians of 7 and of 9 rounds).
const BATCH: usize = 1024 * 1024;
/// Batches waiting for each of the two threads of one upload (6 made single-request
/// uploads 3 % slower than 16, `bench/put_ab.py`, medians of 7 rounds, twice).
const QUEUE_BATCHES: usize = 16;
/// Received chunks on their way to the hashing and the writing thread, with their
/// share of [`QUEUED`] (given back when both have dropped it).
struct Batch {
    chunks: Vec<Bytes>,
    _held: tokio::sync::SemaphorePermit<'static>,
}
type Queued = Arc<Batch>;

/// The chunks of the next batch, gathered until it is full.
#[derive(Default)]
struct Gathering {
    chunks: Vec<Bytes>,
    len: usize,
    held: Option<tokio::sync::SemaphorePermit<'static>>,
}

impl Gathering {
    fn add(&mut self, chunk: Bytes, permit: tokio::sync::SemaphorePermit<'static>) {
        self.len += chunk.len();
        self.chunks.push(chunk);
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
    }

    /// The batch gathered so far, if any, leaving this empty.
    fn take(&mut self) -> Option<Batch> {
        let held = self.held.take()?;
        self.len = 0;
        Some(Batch {
            chunks: std::mem::take(&mut self.chunks),
            _held: held,
        })
    }
}

fn queue_closed() -> StoreError {
    StoreError::Io(std::io::Error::other("upload queue closed"))
}

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Open (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        Ok(FsStore { root })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &str) -> Result<PathBuf> {
        // Upload ids come from URLs: allow only what we generate, so no path tricks.
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(StoreError::UploadNotFound);
        }
        Ok(self.root.join("uploads").join(id))
    }
}

fn not_found_as(e: std::io::Error, err: StoreError) -> StoreError {
    if e.kind() == std::io::ErrorKind::NotFound {
        err
    } else {
        StoreError::Io(e)
    }
}

/// Stream `len` bytes of `file` from `start`, read on a blocking thread in large
/// chunks a few ahead of the network, each read straight into the buffer sent on.
fn read_in_background(mut file: std::fs::File, start: u64, len: u64) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            let want = left.min(READ_CHUNK as u64) as usize;
            let mut buf = bytes::BytesMut::zeroed(want);
            match file.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob is shorter than its recorded size",
                    )));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    Box::pin(receiver_stream(rx))
}

fn receiver_stream(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
}

impl FsStore {
    async fn lock(&self, exclusive: bool) -> Result<crate::StoreGuard> {
        let path = self.root.join("gc.lock");
        blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            if exclusive {
                file.lock()?;
            } else {
                file.lock_shared()?;
            }
            // The lock lives as long as the open file.
            Ok(Box::new(file) as crate::StoreGuard)
        })
        .await
    }
}

#[async_trait]
impl BlobStore for FsStore {
    async fn publish_guard(&self) -> Result<crate::StoreGuard> {
        self.lock(false).await
    }

    async fn sweep_guard(&self) -> Result<crate::StoreGuard> {
        self.lock(true).await
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead> {
        let path = self.blob_path(digest);
        let (file, size) = blocking(move || {
            let file =
                std::fs::File::open(&path).map_err(|e| not_found_as(e, StoreError::NotFound))?;
            let size = file.metadata()?.len();
            Ok((file, size))
        })
        .await?;
        let (start, len) = match range {
            Some(r) => (r.start, r.end.saturating_sub(r.start) + 1),
            None => (0, size),
        };
        Ok(BlobRead {
            size,
            body: read_in_background(file, start, len),
        })
    }

    async fn modified_at(&self, digest: &Digest) -> Result<Option<i64>> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(m) => Ok(m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn delete_many(&self, digests: &[Digest]) -> Result<()> {
        // One blocking task for all of them, not a task hop per file.
        let paths: Vec<_> = digests.iter().map(|d| self.blob_path(d)).collect();
        blocking(move || {
            for path in paths {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            Ok(())
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Digest>> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                let Ok(prefixes) = std::fs::read_dir(root.join(alg.as_str())) else {
                    continue;
                };
                for prefix in prefixes {
                    for entry in std::fs::read_dir(prefix?.path())? {
                        let name = entry?.file_name();
                        let text = format!("{}:{}", alg.as_str(), name.to_string_lossy());
                        // Anything that is not a digest is not ours to report.
                        if let Ok(d) = Digest::parse(&text) {
                            out.push(d);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn upload_create(&self, id: &str) -> Result<()> {
        let path = self.upload_path(id)?;
        tokio::fs::File::create(path).await?;
        Ok(())
    }

    async fn upload_size(&self, id: &str) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.upload_path(id)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
        mut body: ByteStream,
        hasher: PendingHash,
    ) -> Result<(u64, PendingHash)> {
        let path = self.upload_path(id)?;
        // Receiving runs here; hashing and writing each run on a blocking thread of
        // their own, so the three overlap: a write may wait for the disk, and
        // hashing in between writes would leave the CPU idle meanwhile, making an
        // upload as slow as hashing and writing one after the other. Chunks are shared
        // (reference-counted), not copied. Each waits in the channels holding its
        // share of [`QUEUED`], so memory stays bounded however many uploads run.
        //
        // The append returns once the writing is done; the hashing may still be at
        // its last batches (it is the slower of the two), and the caller gets it as
        // a pending hash. A client sending an upload as many requests, each its own
        // connection or process, thus starts its next request while this one's bytes
        // are hashed: on two cores, the hashing of one chunk overlaps the receiving of
        // the next. It starts on a hash that may still be pending the same way.
        let algorithm = hasher.algorithm();
        // A body that knows its length (a request's `Content-Length`) says so.
        let length = match body.size_hint() {
            (lower, Some(upper)) if lower == upper => Some(lower as u64),
            _ => None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Queued>(QUEUE_BATCHES);
        let (hash_tx, mut hash_rx) = tokio::sync::mpsc::channel::<Queued>(QUEUE_BATCHES);
        let (hashed_tx, hashed_rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let Some(mut hasher) = hasher.wait_blocking() else {
                // The hash before this append was lost: so is this one. The batches
                // are still taken, as the receiving side waits for room to send them.
                while hash_rx.blocking_recv().is_some() {}
                return;
            };
            while let Some(batch) = hash_rx.blocking_recv() {
                for chunk in &batch.chunks {
                    hasher.update(chunk);
                }
            }
            let _ = hashed_tx.send(hasher);
        });
        let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
            let (mut out, actual) = crate::append::Appender::open(&path, length)
                .map_err(|e| not_found_as(e, StoreError::UploadNotFound))?;
            if actual != offset {
                return Err(StoreError::OffsetMismatch {
                    expected: offset,
                    actual,
                });
            }
            let appended = move || -> std::io::Result<u64> {
                let mut size = actual;
                while let Some(batch) = rx.blocking_recv() {
                    out.write_parts(&batch.chunks)?;
                    size += batch.chunks.iter().map(|c| c.len() as u64).sum::<u64>();
                }
                out.finish()?;
                Ok(size)
            };
            appended().map_err(|e| {
                // A write that failed part-way (a full disk) leaves no part of this
                // chunk in the upload: the file is cut back to where the chunk began,
                // so the session stays at the size its client was last told and the
                // partial bytes give their space back.
                if let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) {
                    let _ = file.set_len(offset);
                }
                e.into()
            })
        });
        // The batch being gathered and its share of QUEUED. Nothing is waited for
        // while it holds permits: whoever waits ahead in the queue may need exactly
        // those, so a permit that is not free at once is waited for only after the
        // batch has gone (its permits then come back once it is hashed and written).
        let mut gathering = Gathering::default();
        // Sends the batch gathered so far, if any; false once a thread has stopped.
        let flush = |gathering: &mut Gathering| {
            let batch = gathering.take().map(Arc::new);
            let (tx, hash_tx) = (&tx, &hash_tx);
            async move {
                let Some(batch) = batch else { return true };
                // The hasher never stops early; the writer may (its result says why).
                hash_tx.send(batch.clone()).await.is_ok() && tx.send(batch).await.is_ok()
            }
        };
        let mut body_error = None;
        let mut sending = true;
        while sending {
            let chunk = match body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    body_error = Some(e);
                    break;
                }
                None => break,
            };
            if gathering.len + chunk.len() > BATCH && !flush(&mut gathering).await {
                sending = false;
                break;
            }
            let share = u32::try_from(chunk.len()).map_or(QUEUED_MAX, |n| n.min(QUEUED_MAX));
            let permit = match QUEUED.try_acquire_many(share) {
                Ok(permit) => permit,
                Err(tokio::sync::TryAcquireError::Closed) => return Err(queue_closed()),
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    if !flush(&mut gathering).await {
                        sending = false;
                        break;
                    }
                    QUEUED
                        .acquire_many(share)
                        .await
                        .map_err(|_| queue_closed())?
                }
            };
            gathering.add(chunk, permit);
            if gathering.len >= BATCH {
                sending = flush(&mut gathering).await;
            }
        }
        // What arrived before the end, or before the body broke off, is kept.
        if sending {
            flush(&mut gathering).await;
        }
        drop(tx);
        drop(hash_tx);
        let written = writer
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        let size = written?;
        match body_error {
            Some(e) => Err(StoreError::Body(e)),
            None => Ok((size, PendingHash::working(algorithm, hashed_rx))),
        }
    }

    async fn upload_rehash(&self, id: &str, hasher: Hasher) -> Result<(u64, Hasher)> {
        let path = self.upload_path(id)?;
        blocking(move || {
            let mut file = std::fs::File::open(&path)
                .map_err(|e| not_found_as(e, StoreError::UploadNotFound))?;
            let mut hasher = hasher;
            let mut buf = vec![0u8; REHASH_BUFFER];
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Ok((size, hasher))
        })
        .await
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<()> {
        let from = self.upload_path(id)?;
        let to = self.blob_path(digest);
        blocking(move || {
            let file = std::fs::File::open(&from)
                .map_err(|e| not_found_as(e, StoreError::UploadNotFound))?;
            // Always publish our own copy, even when the digest is already there: the
            // existing file may be on its way out (garbage collection), and a rename
            // over it is atomic, so readers see one complete copy or the other.
            file.sync_all()?;
            drop(file);
            let dir = to
                .parent()
                .ok_or_else(|| std::io::Error::other("blob path"))?;
            std::fs::create_dir_all(dir)?;
            std::fs::rename(&from, &to)?;
            sync_dir(dir)?;
            Ok(())
        })
        .await
    }

    async fn upload_delete(&self, id: &str) -> Result<()> {
        match tokio::fs::remove_file(self.upload_path(id)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    async fn upload_list(&self) -> Result<Vec<String>> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let mut out = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                out.push(entry?.file_name().to_string_lossy().into_owned());
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn body(parts: Vec<&'static [u8]>) -> ByteStream {
        Box::pin(stream::iter(
            parts.into_iter().map(|p| Ok(Bytes::from_static(p))),
        ))
    }

    /// Chunks larger than the whole queue budget, in uploads running at once, each
    /// take the budget in turn instead of waiting for it forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_beyond_the_queue_budget_go_through_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(FsStore::open(dir.path()).unwrap());
        let big = Bytes::from(vec![7u8; QUEUED_MAX as usize + 1024 * 1024]);
        let mut runs = Vec::new();
        for k in 0..3u8 {
            let (s, big) = (s.clone(), big.clone());
            runs.push(tokio::spawn(async move {
                let id = format!("big{k}");
                s.upload_create(&id).await.unwrap();
                let parts = vec![Ok(big.clone()), Ok(Bytes::from(vec![k; 10])), Ok(big)];
                let body: ByteStream = Box::pin(stream::iter(parts));
                let (n, h) = s
                    .upload_append(&id, 0, body, Hasher::new(Algorithm::Sha256).into())
                    .await
                    .unwrap();
                (k, n, h.wait().await.unwrap().finish())
            }));
        }
        for run in runs {
            let (k, n, d) = run.await.unwrap();
            let mut want = big.to_vec();
            want.extend_from_slice(&[k; 10]);
            want.extend_from_slice(&big);
            assert_eq!(n, want.len() as u64);
            assert_eq!(d, Digest::sha256_of(&want));
        }
    }

    /// An upload that has gathered part of a batch, and finds no queue budget free
    /// for its next chunk, sends what it gathered before it waits. Waiting while
    /// holding it deadlocked: a request queued ahead for the whole budget waited for
    /// those very bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_never_waits_for_budget_while_holding_unsent_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(FsStore::open(dir.path()).unwrap());
        s.upload_create("u").await.unwrap();
        // Nearly all of the budget is taken, as by other uploads.
        let others = QUEUED.acquire_many(QUEUED_MAX - 100).await.unwrap();
        let (feed, body) = futures::channel::mpsc::unbounded::<std::io::Result<Bytes>>();
        let upload = {
            let s = s.clone();
            tokio::spawn(async move {
                let h = Hasher::new(Algorithm::Sha256).into();
                s.upload_append("u", 0, Box::pin(body), h).await
            })
        };
        feed.unbounded_send(Ok(Bytes::from(vec![1u8; 50]))).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // Someone asks for the whole budget and waits in the queue.
        let whole = tokio::spawn(async { drop(QUEUED.acquire_many(QUEUED_MAX).await.unwrap()) });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // The next chunk does not fit in what is free.
        feed.unbounded_send(Ok(Bytes::from(vec![2u8; 60]))).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(others);
        drop(feed);
        let done = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            whole.await.unwrap();
            upload.await.unwrap()
        })
        .await
        .expect("the upload and the request for the whole budget waited for each other");
        let (n, h) = done.unwrap();
        assert_eq!(n, 110);
        let mut want = vec![1u8; 50];
        want.extend_from_slice(&[2u8; 60]);
        assert_eq!(h.wait().await.unwrap().finish(), Digest::sha256_of(&want));
    }

    /// A body that breaks off keeps every byte received before the break, whether
    /// they had filled a batch or not, and the hash covers exactly those bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broken_body_keeps_what_arrived_before_the_break() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        s.upload_create("u").await.unwrap();
        let part = Bytes::from(vec![3u8; BATCH * 2 / 3]);
        let parts = vec![
            Ok(part.clone()),
            Ok(part.clone()),
            Ok(part.clone()),
            Err(std::io::Error::other("connection reset")),
            Ok(part.clone()),
        ];
        let body: ByteStream = Box::pin(stream::iter(parts));
        let err = s
            .upload_append("u", 0, body, Hasher::new(Algorithm::Sha256).into())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Body(_)), "{err:?}");
        let kept = 3 * part.len() as u64;
        assert_eq!(s.upload_size("u").await.unwrap(), Some(kept));
        let (n, h) = s
            .upload_rehash("u", Hasher::new(Algorithm::Sha256))
            .await
            .unwrap();
        assert_eq!(n, kept);
        assert_eq!(h.finish(), Digest::sha256_of(&vec![3u8; kept as usize]));
    }

    /// An append handed a hash that never arrives (its hashing stopped) still writes
    /// every byte, and says its own hash is lost too, so the caller hashes the upload
    /// again from storage instead of finishing on a hash that misses bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_after_a_lost_hash_writes_and_loses_its_hash_too() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        s.upload_create("u").await.unwrap();
        let (n, _) = s
            .upload_append(
                "u",
                0,
                body(vec![b"abc"]),
                Hasher::new(Algorithm::Sha256).into(),
            )
            .await
            .unwrap();
        assert_eq!(n, 3);
        let (lost, never) = tokio::sync::oneshot::channel::<Hasher>();
        drop(lost);
        let pending = PendingHash::working(Algorithm::Sha256, never);
        let big = Bytes::from(vec![5u8; 3 * BATCH]);
        let parts: ByteStream = Box::pin(stream::iter([Ok(big.clone()), Ok(big)]));
        let (n, h) = s.upload_append("u", 3, parts, pending).await.unwrap();
        assert_eq!(n, 3 + 6 * BATCH as u64);
        assert!(h.wait().await.is_none());
        assert_eq!(s.upload_size("u").await.unwrap(), Some(n));
    }

    #[tokio::test]
    async fn upload_hash_publish_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        s.upload_create("u1").await.unwrap();
        let h = Hasher::new(Algorithm::Sha256).into();
        let (n, h) = s
            .upload_append("u1", 0, body(vec![b"hel", b"lo"]), h)
            .await
            .unwrap();
        assert_eq!(n, 5);
        let err = s
            .upload_append(
                "u1",
                2,
                body(vec![b"x"]),
                Hasher::new(Algorithm::Sha256).into(),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::OffsetMismatch {
                expected: 2,
                actual: 5
            }
        ));
        let (n, h) = s
            .upload_append("u1", 5, body(vec![b" world"]), h)
            .await
            .unwrap();
        assert_eq!(n, 11);
        // The second append took over the first one's hash, pending or not.
        let d = h.wait().await.unwrap().finish();
        assert_eq!(d, Digest::sha256_of(b"hello world"));
        let (_, again) = s
            .upload_rehash("u1", Hasher::new(Algorithm::Sha256))
            .await
            .unwrap();
        assert_eq!(again.finish(), d);
        assert_eq!(s.stat(&d).await.unwrap(), None);
        s.upload_commit("u1", &d).await.unwrap();
        assert_eq!(s.stat(&d).await.unwrap(), Some(11));
        assert_eq!(s.upload_size("u1").await.unwrap(), None);
        let r = s
            .open(&d, Some(ByteRange { start: 6, end: 10 }))
            .await
            .unwrap();
        let got: Vec<Bytes> = r.body.map(|b| b.unwrap()).collect().await;
        assert_eq!(got.concat(), b"world");
        assert_eq!(s.list().await.unwrap(), vec![d.clone()]);
        s.delete(&d).await.unwrap();
        assert!(matches!(s.open(&d, None).await, Err(StoreError::NotFound)));
    }

    /// Several blobs deleted at once; a digest that was never there is no error.
    #[tokio::test]
    async fn delete_many_removes_every_blob_given() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        let mut digests = Vec::new();
        for i in 0..4 {
            let id = format!("u{i}");
            s.upload_create(&id).await.unwrap();
            let bytes: &'static [u8] = format!("blob number {i}").into_bytes().leak();
            let (_, h) = s
                .upload_append(
                    &id,
                    0,
                    body(vec![bytes]),
                    Hasher::new(Algorithm::Sha256).into(),
                )
                .await
                .unwrap();
            let d = h.wait().await.unwrap().finish();
            s.upload_commit(&id, &d).await.unwrap();
            digests.push(d);
        }
        let kept = digests.pop().unwrap();
        digests.push(Digest::sha256_of(b"never stored"));
        s.delete_many(&digests).await.unwrap();
        assert_eq!(s.list().await.unwrap(), vec![kept]);
    }

    #[tokio::test]
    async fn sweep_waits_for_publishers() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(FsStore::open(dir.path()).unwrap());
        let a = s.publish_guard().await.unwrap();
        let b = s.publish_guard().await.unwrap(); // shared: both at once
        let s2 = s.clone();
        let sweeper = tokio::spawn(async move { s2.sweep_guard().await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!sweeper.is_finished());
        drop(a);
        drop(b);
        sweeper.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn refuses_path_tricks() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::open(dir.path()).unwrap();
        assert!(matches!(
            s.upload_create("../x").await,
            Err(StoreError::UploadNotFound)
        ));
    }
}
