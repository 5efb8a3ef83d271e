//! The S3-compatible store: `[<prefix>/]blobs/<alg>/<first two hex>/<hex>` for published
//! blobs, as the filesystem store lays them out, and `[<prefix>/]uploads/<id>/…` for
//! uploads in progress.
//!
//! Every piece of an upload's state lives in the bucket, so any node can continue an
//! upload another node started: `uploads/<id>/state` (JSON: size, the S3 multipart
//! upload id and its parts' ETags, the running hash's midstate), the multipart upload
//! itself (assembling at `uploads/<id>/data`), and a small `uploads/<id>/tail.<n>` with
//! the bytes that did not fill a part yet (S3 wants every part but the last to be at
//! least 5 MiB, and a chunk of a chunked upload may be any size). A request buffers at
//! most one part.
//!
//! Publishing completes the multipart upload at `uploads/<id>/data` and copies it to
//! its content-addressed key: a multipart upload's key is fixed when it starts, before
//! the digest is known, and a copy appears under `blobs/` complete or not at all, and
//! only after the caller verified the digest.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use berth_oci::{Algorithm, Digest, Hasher};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::{BlobRead, BlobStore, ByteRange, ByteStream, PendingHash, Result, StoreError};

/// S3 refuses parts below this size, except the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts of this size allow blobs up to ~97 GiB (S3 allows 10,000 parts), and bound
/// what one request buffers.
pub const DEFAULT_PART_SIZE: usize = 10 * 1024 * 1024;
/// The largest object one CopyObject may copy on AWS; larger blobs are published by a
/// streamed multipart copy instead.
pub const COPY_OBJECT_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `http://127.0.0.1:9000`; empty for AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `http://endpoint/bucket/key` instead of `http://bucket.endpoint/key`; what most
    /// self-hosted S3 servers want.
    pub path_style: bool,
    /// Keys are placed under this prefix, so one bucket can hold more than Berth.
    pub prefix: Option<String>,
    /// Answer blob GETs with a redirect to a pre-signed URL of the object.
    pub redirect_blobs: bool,
    /// Bytes per multipart part; at least [`MIN_PART_SIZE`].
    pub part_size: Option<usize>,
    /// Blobs larger than this are published by a streamed multipart copy rather than
    /// one CopyObject (default [`COPY_OBJECT_LIMIT`]; smaller in tests).
    pub copy_limit: Option<u64>,
}

/// The persisted state of one upload. `size` bytes have been received: the recorded
/// parts, then `tail` bytes in the tail object named after the number of parts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UploadState {
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    multipart: Option<String>,
    #[serde(default)]
    parts: Vec<String>,
    #[serde(default)]
    tail: u64,
    /// Algorithm and hex midstate of the hash of all `size` bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<(String, String)>,
    /// The multipart upload was completed at `uploads/<id>/data` (a commit that
    /// stopped half-way resumes from there).
    #[serde(default)]
    assembled: bool,
}

pub struct S3Store {
    s3: Arc<AmazonS3>,
    prefix: String,
    part_size: usize,
    copy_limit: u64,
    redirect_blobs: bool,
    /// The settings that decide where requests go, named for an operator who must
    /// fix them (see [`BlobStore::check_access`]).
    settings_hint: String,
    // There is no shared lock in S3 itself. This one orders publishing and sweeping
    // within one process only; several nodes need a lock they all see (a database
    // advisory lock), which the multi-node set-up provides.
    gc_lock: Arc<tokio::sync::RwLock<()>>,
}

fn backend(e: object_store::Error) -> StoreError {
    StoreError::Unavailable(format!("object storage: {e}"))
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

fn saved_hash(h: &Hasher) -> (String, String) {
    (h.algorithm().as_str().to_string(), hex::encode(h.save()))
}

fn bad_state(why: impl std::fmt::Display) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "upload state in object storage is damaged: {why}"
    )))
}

/// What an operator checks when the bucket cannot be reached, with today's values.
fn settings_hint(config: &S3Config) -> String {
    let endpoint = config.endpoint.as_deref().unwrap_or("AWS");
    let addressing = if config.path_style {
        format!("true: requests go to {endpoint}/{}/…", config.bucket)
    } else {
        format!(
            "false: requests go to the bucket's own host name ({}.<endpoint host>); most \
             self-hosted S3 servers need true",
            config.bucket
        )
    };
    format!(
        "Check storage.s3.bucket (BERTH_S3_BUCKET, now {:?}: the bucket must exist), \
         storage.s3.endpoint (BERTH_S3_ENDPOINT, now {endpoint}), storage.s3.path_style \
         (BERTH_S3_PATH_STYLE, now {addressing}), and the credentials \
         (storage.s3.access_key_id / secret_access_key, or AWS_* in the environment)",
        config.bucket
    )
}

/// Whether an endpoint is an address or `localhost`: such a host has no per-bucket
/// names (`bucket.127.0.0.1` resolves nowhere), so path-style addressing is the only
/// one that can work there.
pub fn endpoint_needs_path_style(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        // [v6]:port
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok()
}

impl S3Store {
    pub fn open(config: &S3Config) -> Result<Self> {
        // Credentials not configured here come from the usual AWS_* environment or
        // the instance's role, as for any AWS client.
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_retry(RetryConfig {
                max_retries: 5,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            });
        if let Some(e) = &config.endpoint {
            let options = ClientOptions::new()
                .with_allow_http(e.starts_with("http://"))
                // Part uploads of a slow link may take a while; the default is 30s.
                .with_timeout(Duration::from_secs(300));
            b = b.with_endpoint(e).with_client_options(options);
        }
        if let Some(k) = &config.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &config.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let s3 = b.build().map_err(backend)?;
        let prefix = config
            .prefix
            .as_deref()
            .map(|p| p.trim_matches('/'))
            .filter(|p| !p.is_empty())
            .map(|p| format!("{p}/"))
            .unwrap_or_default();
        Ok(S3Store {
            s3: Arc::new(s3),
            prefix,
            part_size: config
                .part_size
                .unwrap_or(DEFAULT_PART_SIZE)
                .max(MIN_PART_SIZE),
            copy_limit: config.copy_limit.unwrap_or(COPY_OBJECT_LIMIT),
            redirect_blobs: config.redirect_blobs,
            settings_hint: settings_hint(config),
            gc_lock: Arc::default(),
        })
    }

    /// Write, read back and delete a probe object: what every push will need.
    async fn probe(&self) -> std::result::Result<(), String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let key = self.key(&format!("probe/{}-{nanos}", std::process::id()));
        let payload = b"berth start-up check".to_vec();
        self.s3
            .put(&key, PutPayload::from(payload.clone()))
            .await
            .map_err(|e| format!("writing a probe object failed: {e}"))?;
        let read = async {
            let back = self.s3.get(&key).await?.bytes().await?;
            Ok::<_, object_store::Error>(back)
        }
        .await;
        let deleted = self.s3.delete(&key).await;
        match read {
            Ok(back) if back.as_ref() == payload.as_slice() => {}
            Ok(_) => return Err("the probe object read back differs from what was written".into()),
            Err(e) => return Err(format!("reading the probe object back failed: {e}")),
        }
        deleted.map_err(|e| format!("deleting the probe object failed: {e}"))
    }

    fn key(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.prefix))
    }

    fn blob_key(&self, d: &Digest) -> Path {
        let hex = d.hex();
        self.key(&format!(
            "blobs/{}/{}/{}",
            d.algorithm().as_str(),
            &hex[..2],
            hex
        ))
    }

    fn upload_dir(&self, id: &str) -> Result<String> {
        // Upload ids come from URLs: allow only what we generate.
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(StoreError::UploadNotFound);
        }
        Ok(format!("uploads/{id}"))
    }

    fn state_key(&self, id: &str) -> Result<Path> {
        Ok(self.key(&format!("{}/state", self.upload_dir(id)?)))
    }

    fn data_key(&self, id: &str) -> Result<Path> {
        Ok(self.key(&format!("{}/data", self.upload_dir(id)?)))
    }

    /// The tail is named after the number of parts before it, so writing the tail that
    /// follows new parts never overwrites the one the saved state still refers to.
    fn tail_key(&self, id: &str, parts: usize) -> Result<Path> {
        Ok(self.key(&format!("{}/tail.{parts}", self.upload_dir(id)?)))
    }

    async fn load(&self, id: &str) -> Result<Option<UploadState>> {
        let key = self.state_key(id)?;
        match self.s3.get(&key).await {
            Ok(r) => {
                let raw = r.bytes().await.map_err(backend)?;
                serde_json::from_slice(&raw).map(Some).map_err(bad_state)
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn save(&self, id: &str, state: &UploadState) -> Result<()> {
        let raw = serde_json::to_vec(state).map_err(bad_state)?;
        self.s3
            .put(&self.state_key(id)?, PutPayload::from(raw))
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// The tail bytes the state refers to. A tail object may be longer than recorded
    /// (a request that rewrote it stopped before saving the state); what it recorded
    /// is always its beginning.
    async fn read_tail(&self, id: &str, state: &UploadState) -> Result<Bytes> {
        if state.tail == 0 {
            return Ok(Bytes::new());
        }
        let key = self.tail_key(id, state.parts.len())?;
        let raw = self
            .s3
            .get(&key)
            .await
            .map_err(backend)?
            .bytes()
            .await
            .map_err(backend)?;
        if (raw.len() as u64) < state.tail {
            return Err(bad_state("the tail is shorter than recorded"));
        }
        Ok(raw.slice(..state.tail as usize))
    }

    async fn ensure_multipart(&self, id: &str, state: &mut UploadState) -> Result<String> {
        if let Some(m) = &state.multipart {
            return Ok(m.clone());
        }
        let m = self
            .s3
            .create_multipart(&self.data_key(id)?)
            .await
            .map_err(backend)?;
        state.multipart = Some(m.clone());
        // Saved at once, so that the multipart upload can be aborted whatever happens.
        self.save(id, state).await?;
        Ok(m)
    }

    async fn put_part(&self, id: &str, state: &mut UploadState, part: Bytes) -> Result<()> {
        let m = self.ensure_multipart(id, state).await?;
        let PartId { content_id } = self
            .s3
            .put_part(&self.data_key(id)?, &m, state.parts.len(), part.into())
            .await
            .map_err(backend)?;
        state.parts.push(content_id);
        Ok(())
    }

    fn restore_hash(state: &UploadState) -> Result<Option<Hasher>> {
        let Some((alg, hex_state)) = &state.hash else {
            return Ok(None);
        };
        let alg: Algorithm = alg.parse().map_err(bad_state)?;
        let raw = hex::decode(hex_state).map_err(bad_state)?;
        Hasher::restore(alg, &raw).map(Some).map_err(bad_state)
    }

    /// Remove every object of an upload (state, tails, assembled data).
    /// Copy an object too large for CopyObject through this node, part by part: a
    /// multipart upload of the destination, which appears only once it completes.
    async fn copy_streamed(&self, from: &Path, to: &Path) -> Result<()> {
        let upload = self.s3.put_multipart(to).await.map_err(backend)?;
        let mut out = object_store::WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut source = self.s3.get(from).await.map_err(backend)?.into_stream();
        while let Some(chunk) = source.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    out.abort().await.map_err(backend)?;
                    return Err(backend(e));
                }
            };
            // At most a couple of parts in flight: memory stays bounded.
            out.wait_for_capacity(2).await.map_err(backend)?;
            out.write(&chunk);
        }
        out.finish().await.map_err(backend)?;
        Ok(())
    }

    async fn remove_upload_objects(&self, id: &str) -> Result<()> {
        let dir = self.key(&format!("{}/", self.upload_dir(id)?));
        let keys: Vec<Path> = self
            .s3
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(backend)?;
        let deleted = futures::future::join_all(keys.iter().map(|k| self.s3.delete(k))).await;
        for r in deleted {
            match r {
                Err(e) if !is_not_found(&e) => return Err(backend(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn check_access(&self) -> Result<()> {
        self.probe().await.map_err(|why| {
            StoreError::Io(std::io::Error::other(format!(
                "S3 blob storage is not usable: {why}. {}",
                self.settings_hint
            )))
        })
    }

    async fn publish_guard(&self) -> Result<crate::StoreGuard> {
        Ok(Box::new(self.gc_lock.clone().read_owned().await))
    }

    async fn sweep_guard(&self) -> Result<crate::StoreGuard> {
        Ok(Box::new(self.gc_lock.clone().write_owned().await))
    }

    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.s3.head(&self.blob_key(digest)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<BlobRead> {
        let options = GetOptions {
            range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)),
            ..GetOptions::default()
        };
        let r = match self.s3.get_opts(&self.blob_key(digest), options).await {
            Ok(r) => r,
            Err(e) if is_not_found(&e) => return Err(StoreError::NotFound),
            Err(e) => return Err(backend(e)),
        };
        let size = r.meta.size;
        let body = r
            .into_stream()
            .map_err(|e| std::io::Error::other(format!("object storage: {e}")));
        Ok(BlobRead {
            size,
            body: Box::pin(body),
        })
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match self.s3.delete(&self.blob_key(digest)).await {
            Err(e) if !is_not_found(&e) => Err(backend(e)),
            _ => Ok(()),
        }
    }

    async fn delete_many(&self, digests: &[Digest]) -> Result<()> {
        let keys: Vec<Path> = digests.iter().map(|d| self.blob_key(d)).collect();
        let mut deleted = self
            .s3
            .delete_stream(futures::stream::iter(keys.into_iter().map(Ok)).boxed());
        while let Some(done) = deleted.next().await {
            match done {
                Err(e) if !is_not_found(&e) => return Err(backend(e)),
                _ => {}
            }
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Digest>> {
        let root = self.key("blobs/");
        let mut objects = self.s3.list(Some(&root));
        let mut out = Vec::new();
        while let Some(m) = objects.next().await {
            let m = m.map_err(backend)?;
            let parts: Vec<_> = m.location.parts().collect();
            let n = parts.len();
            if n < 3 {
                continue;
            }
            let text = format!("{}:{}", parts[n - 3].as_ref(), parts[n - 1].as_ref());
            // Anything that is not a digest is not ours to report.
            if let Ok(d) = Digest::parse(&text) {
                if m.location == self.blob_key(&d) {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn modified_at(&self, digest: &Digest) -> Result<Option<i64>> {
        match self.s3.head(&self.blob_key(digest)).await {
            Ok(m) => Ok(Some(m.last_modified.timestamp_millis())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    async fn presigned_get(&self, digest: &Digest) -> Result<Option<String>> {
        if !self.redirect_blobs {
            return Ok(None);
        }
        let url = self
            .s3
            .signed_url(
                http::Method::GET,
                &self.blob_key(digest),
                Duration::from_secs(20 * 60),
            )
            .await
            .map_err(backend)?;
        Ok(Some(url.to_string()))
    }

    async fn upload_create(&self, id: &str) -> Result<()> {
        self.save(id, &UploadState::default()).await
    }

    async fn upload_size(&self, id: &str) -> Result<Option<u64>> {
        Ok(self.load(id).await?.map(|s| s.size))
    }

    async fn upload_append(
        &self,
        id: &str,
        offset: u64,
        mut body: ByteStream,
        hasher: PendingHash,
    ) -> Result<(u64, PendingHash)> {
        let algorithm = hasher.algorithm();
        let mut state = self.load(id).await?.ok_or(StoreError::UploadNotFound)?;
        if state.size != offset {
            return Err(StoreError::OffsetMismatch {
                expected: offset,
                actual: state.size,
            });
        }
        if state.assembled {
            return Err(bad_state("the upload is already being published"));
        }
        let old_parts = state.parts.len();
        let mut buf = BytesMut::with_capacity(self.part_size);
        buf.extend_from_slice(&self.read_tail(id, &state).await?);
        // `hasher` covers the saved bytes, the tail at the front of `buf` included.
        // Bytes are hashed as they leave the buffer, so that the hash saved after
        // each part covers exactly what is stored: a node that dies mid-request
        // leaves a state that another node can continue from.
        let mut hashed = buf.len();
        // This store hashes as it stores (the hash is saved with every part), so a
        // pending hash is waited for first; one that was lost is the saved one.
        let mut hasher = match hasher.wait().await {
            Some(h) => h,
            None if state.size == 0 => Hasher::new(algorithm),
            None => Self::restore_hash(&state)?
                .ok_or_else(|| bad_state("the running hash is missing"))?,
        };
        let mut stored = state.size - state.tail;
        let mut body_error = None;
        while let Some(item) = body.next().await {
            let chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    body_error = Some(e);
                    break;
                }
            };
            buf.extend_from_slice(&chunk);
            while buf.len() >= self.part_size {
                let part = buf.split_to(self.part_size).freeze();
                hasher.update(&part[hashed.min(part.len())..]);
                hashed = hashed.saturating_sub(part.len());
                stored += part.len() as u64;
                self.put_part(id, &mut state, part).await?;
                state.size = stored;
                state.tail = 0;
                state.hash = Some(saved_hash(&hasher));
                self.save(id, &state).await?;
            }
        }
        // What did not fill a part: a part of its own when S3 accepts that size,
        // otherwise the tail that the next request (on any node) starts from.
        let rest = buf.freeze();
        hasher.update(&rest[hashed.min(rest.len())..]);
        if rest.len() >= MIN_PART_SIZE {
            self.put_part(id, &mut state, rest.clone()).await?;
            state.tail = 0;
        } else {
            if !rest.is_empty() {
                self.s3
                    .put(&self.tail_key(id, state.parts.len())?, rest.clone().into())
                    .await
                    .map_err(backend)?;
            }
            state.tail = rest.len() as u64;
        }
        state.size = stored + rest.len() as u64;
        state.hash = Some(saved_hash(&hasher));
        self.save(id, &state).await?;
        if state.parts.len() != old_parts {
            // The tail that the previous state named is now inside a part.
            let _ = self.s3.delete(&self.tail_key(id, old_parts)?).await;
        }
        match body_error {
            Some(e) => Err(StoreError::Body(e)),
            None => Ok((state.size, hasher.into())),
        }
    }

    /// The running hash is saved with the upload (the bytes of an unfinished
    /// multipart upload cannot be read back), so it is returned in the algorithm the
    /// upload was hashed with; the caller checks that this is the one it needs.
    async fn upload_rehash(&self, id: &str, hasher: Hasher) -> Result<(u64, Hasher)> {
        let state = self.load(id).await?.ok_or(StoreError::UploadNotFound)?;
        if state.size == 0 {
            return Ok((0, hasher));
        }
        match Self::restore_hash(&state)? {
            Some(h) => Ok((state.size, h)),
            None => Err(bad_state("the running hash is missing")),
        }
    }

    async fn upload_commit(&self, id: &str, digest: &Digest) -> Result<()> {
        let mut state = self.load(id).await?.ok_or(StoreError::UploadNotFound)?;
        let to = self.blob_key(digest);
        let data = self.data_key(id)?;
        if !state.assembled && (state.multipart.is_none() || state.parts.is_empty()) {
            // Small enough to have stayed a tail: one PUT publishes it.
            let tail = self.read_tail(id, &state).await?;
            if tail.len() as u64 != state.size {
                return Err(bad_state("stored bytes and received bytes differ in size"));
            }
            self.s3.put(&to, tail.into()).await.map_err(backend)?;
            if let Some(m) = &state.multipart {
                let _ = self.s3.abort_multipart(&data, m).await;
            }
        } else {
            if !state.assembled {
                let m = state
                    .multipart
                    .clone()
                    .ok_or_else(|| bad_state("no multipart upload"))?;
                if state.tail > 0 {
                    let tail = self.read_tail(id, &state).await?;
                    self.put_part(id, &mut state, tail).await?;
                }
                let parts = state
                    .parts
                    .iter()
                    .map(|p| PartId {
                        content_id: p.clone(),
                    })
                    .collect();
                self.s3
                    .complete_multipart(&data, &m, parts)
                    .await
                    .map_err(backend)?;
                state.assembled = true;
                state.multipart = None;
                self.save(id, &state).await?;
            }
            // The digest was checked against what was received; make sure that is
            // also what was assembled before it becomes visible.
            let assembled = self.s3.head(&data).await.map_err(backend)?;
            if assembled.size != state.size {
                return Err(bad_state("stored bytes and received bytes differ in size"));
            }
            // Either copy is atomic: readers see no object or the whole one.
            if assembled.size <= self.copy_limit {
                self.s3.copy(&data, &to).await.map_err(backend)?;
            } else {
                self.copy_streamed(&data, &to).await?;
            }
        }
        self.remove_upload_objects(id).await
    }

    async fn upload_delete(&self, id: &str) -> Result<()> {
        if let Some(state) = self.load(id).await? {
            if let Some(m) = &state.multipart {
                match self.s3.abort_multipart(&self.data_key(id)?, m).await {
                    Err(e) if !is_not_found(&e) => return Err(backend(e)),
                    _ => {}
                }
            }
        }
        self.remove_upload_objects(id).await
    }

    async fn upload_list(&self) -> Result<Vec<String>> {
        let root = self.key("uploads");
        let listed = self
            .s3
            .list_with_delimiter(Some(&root))
            .await
            .map_err(backend)?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Moto;
    use std::sync::OnceLock;

    /// One moto per test process (it stops when the process ends); a fresh bucket
    /// per test.
    fn store_pair() -> Option<(S3Store, S3Store, S3Config)> {
        static MOTO: OnceLock<Option<Moto>> = OnceLock::new();
        let moto = MOTO.get_or_init(Moto::start).as_ref()?;
        let bucket = moto.fresh_bucket().unwrap();
        let mut config = moto.config(&bucket);
        config.prefix = Some("reg".to_string());
        config.part_size = Some(MIN_PART_SIZE);
        // Two stores on one bucket: two nodes.
        let a = S3Store::open(&config).unwrap();
        let b = S3Store::open(&config).unwrap();
        Some((a, b, config))
    }

    fn data(len: usize) -> Vec<u8> {
        // Not all zeros, so that misplaced bytes change the digest.
        let mut x = 0x9e37_79b9_u32;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// A body in chunks of `chunk` bytes, like a network stream.
    fn body(bytes: &[u8], chunk: usize) -> ByteStream {
        let parts: Vec<std::io::Result<Bytes>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(parts))
    }

    async fn read_all(s: &S3Store, d: &Digest, range: Option<ByteRange>) -> (u64, Vec<u8>) {
        let r = s.open(d, range).await.unwrap();
        let got: Vec<Bytes> = r.body.try_collect().await.unwrap();
        (r.size, got.concat())
    }

    #[tokio::test]
    async fn chunked_upload_moves_between_nodes() {
        let Some((a, b, _)) = store_pair() else {
            return;
        };
        let blob = data(13 * 1024 * 1024 + 12345);
        // Chunk sizes below and above the 5 MiB part minimum, each sent by the node
        // that did not send the one before, which has only the saved state to go on.
        let cuts = [1000, 3 * 1024 * 1024 + 7, 6 * 1024 * 1024 + 1, 77];
        a.upload_create("up1").await.unwrap();
        let mut offset = 0usize;
        for (i, len) in cuts.iter().enumerate() {
            let node = if i % 2 == 0 { &a } else { &b };
            let (at, h) = node
                .upload_rehash("up1", Hasher::new(Algorithm::Sha256))
                .await
                .unwrap();
            assert_eq!(at, offset as u64);
            let chunk = &blob[offset..offset + len];
            let (size, _) = node
                .upload_append("up1", at, body(chunk, 64 * 1024), h.into())
                .await
                .unwrap();
            offset += len;
            assert_eq!(size, offset as u64);
            assert_eq!(a.upload_size("up1").await.unwrap(), Some(size));
        }
        // The last chunk finishes the blob on the first node.
        let (at, h) = a
            .upload_rehash("up1", Hasher::new(Algorithm::Sha256))
            .await
            .unwrap();
        let (size, h) = a
            .upload_append("up1", at, body(&blob[offset..], 1 << 20), h.into())
            .await
            .unwrap();
        assert_eq!(size, blob.len() as u64);
        let digest = h.wait().await.unwrap().finish();
        assert_eq!(digest, Digest::sha256_of(&blob));
        // Wrong offsets are refused, as on the filesystem.
        let err = b
            .upload_append(
                "up1",
                5,
                body(b"x", 1),
                Hasher::new(Algorithm::Sha256).into(),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::OffsetMismatch { expected: 5, .. }
        ));
        assert!(a.list().await.unwrap().is_empty(), "nothing published yet");
        assert_eq!(b.upload_list().await.unwrap(), vec!["up1".to_string()]);

        b.upload_commit("up1", &digest).await.unwrap();
        assert_eq!(a.stat(&digest).await.unwrap(), Some(blob.len() as u64));
        assert_eq!(a.upload_size("up1").await.unwrap(), None);
        assert!(a.upload_list().await.unwrap().is_empty());
        let (total, whole) = read_all(&a, &digest, None).await;
        assert_eq!(total, blob.len() as u64);
        assert!(whole == blob, "published bytes differ from the upload");
        let start = 5 * 1024 * 1024 - 3;
        let (total, part) = read_all(
            &b,
            &digest,
            Some(ByteRange {
                start,
                end: start + 9,
            }),
        )
        .await;
        assert_eq!(total, blob.len() as u64);
        assert_eq!(part, &blob[start as usize..start as usize + 10]);
        assert_eq!(a.list().await.unwrap(), vec![digest.clone()]);
        assert!(a.modified_at(&digest).await.unwrap().is_some());
        a.delete(&digest).await.unwrap();
        a.delete(&digest).await.unwrap(); // missing is fine
        assert!(matches!(
            b.open(&digest, None).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(b.modified_at(&digest).await.unwrap(), None);
        assert!(b.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn blobs_over_the_copy_limit_are_copied_part_by_part() {
        let Some((_, _, config)) = store_pair() else {
            return;
        };
        let store = S3Store::open(&S3Config {
            copy_limit: Some(6 * 1024 * 1024),
            ..config
        })
        .unwrap();
        let blob = data(12 * 1024 * 1024 + 5);
        let digest = Digest::sha256_of(&blob);
        store.upload_create("big").await.unwrap();
        let (size, h) = store
            .upload_append(
                "big",
                0,
                body(&blob, 1 << 20),
                Hasher::new(Algorithm::Sha256).into(),
            )
            .await
            .unwrap();
        assert_eq!(size, blob.len() as u64);
        assert_eq!(h.wait().await.unwrap().finish(), digest);
        store.upload_commit("big", &digest).await.unwrap();
        let (total, whole) = read_all(&store, &digest, None).await;
        assert_eq!(total, blob.len() as u64);
        assert!(whole == blob, "published bytes differ from the upload");
        assert!(store.upload_list().await.unwrap().is_empty());
    }

    /// Many blobs deleted in one request; a digest that was never there is no error.
    #[tokio::test]
    async fn delete_many_removes_every_blob_given() {
        let Some((a, b, _)) = store_pair() else {
            return;
        };
        let mut digests = Vec::new();
        for i in 0..5 {
            let id = format!("many{i}");
            a.upload_create(&id).await.unwrap();
            let bytes = format!("blob number {i}").into_bytes();
            let (_, h) = a
                .upload_append(
                    &id,
                    0,
                    body(&bytes, 4),
                    Hasher::new(Algorithm::Sha256).into(),
                )
                .await
                .unwrap();
            let d = h.wait().await.unwrap().finish();
            a.upload_commit(&id, &d).await.unwrap();
            digests.push(d);
        }
        let kept = digests.pop().unwrap();
        digests.push(Digest::sha256_of(b"never stored"));
        b.delete_many(&digests).await.unwrap();
        assert_eq!(a.list().await.unwrap(), vec![kept]);
        b.delete_many(&[]).await.unwrap();
    }

    #[tokio::test]
    async fn small_blob_and_wrong_digest() {
        let Some((a, b, config)) = store_pair() else {
            return;
        };
        // A blob small enough never to need a multipart upload.
        a.upload_create("small").await.unwrap();
        let (n, h) = a
            .upload_append(
                "small",
                0,
                body(b"hello world", 3),
                Hasher::new(Algorithm::Sha256).into(),
            )
            .await
            .unwrap();
        assert_eq!(n, 11);
        let d = h.wait().await.unwrap().finish();
        b.upload_commit("small", &d).await.unwrap();
        assert_eq!(read_all(&b, &d, None).await.1, b"hello world");
        assert_eq!(
            read_all(&b, &d, Some(ByteRange { start: 6, end: 10 }))
                .await
                .1,
            b"world"
        );

        // A multipart upload whose digest turns out wrong: the server discards it,
        // and nothing of it is visible or left over.
        let blob = data(7 * 1024 * 1024);
        a.upload_create("bad").await.unwrap();
        let (n, h) = a
            .upload_append(
                "bad",
                0,
                body(&blob, 100_000),
                Hasher::new(Algorithm::Sha256).into(),
            )
            .await
            .unwrap();
        assert_eq!(n, blob.len() as u64);
        let claimed = Digest::sha256_of(b"something else");
        assert_ne!(h.wait().await.unwrap().finish(), claimed);
        b.upload_delete("bad").await.unwrap();
        assert_eq!(a.upload_size("bad").await.unwrap(), None);
        assert_eq!(a.list().await.unwrap(), vec![d.clone()]);
        assert_eq!(a.stat(&claimed).await.unwrap(), None);
        // Not even an upload object is left (a store without a prefix sees all keys).
        let raw = S3Store::open(&S3Config {
            prefix: None,
            ..config.clone()
        })
        .unwrap();
        let keys: Vec<String> = raw
            .s3
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        let want = format!("reg/blobs/sha256/{}/{}", &d.hex()[..2], d.hex());
        assert_eq!(keys, vec![want]);
    }

    #[tokio::test]
    async fn interrupted_body_keeps_what_arrived_and_sha512() {
        let Some((a, b, _)) = store_pair() else {
            return;
        };
        let blob = data(6 * 1024 * 1024 + 5);
        a.upload_create("cut").await.unwrap();
        // The body breaks after 5.5 MiB; those bytes stay and the hash covers them.
        let cut = 5 * 1024 * 1024 + 512 * 1024;
        let mut items: Vec<std::io::Result<Bytes>> = blob[..cut]
            .chunks(300_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        items.push(Err(std::io::Error::other("client went away")));
        let err = a
            .upload_append(
                "cut",
                0,
                Box::pin(futures::stream::iter(items)),
                Hasher::new(Algorithm::Sha512).into(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Body(_)));
        assert_eq!(b.upload_size("cut").await.unwrap(), Some(cut as u64));
        // The saved hash is the upload's own algorithm, whatever the caller offers.
        let (at, h) = b
            .upload_rehash("cut", Hasher::new(Algorithm::Sha256))
            .await
            .unwrap();
        assert_eq!((at, h.algorithm()), (cut as u64, Algorithm::Sha512));
        let (_, h) = b
            .upload_append("cut", at, body(&blob[cut..], 4096), h.into())
            .await
            .unwrap();
        let d = h.wait().await.unwrap().finish();
        assert_eq!(d, Digest::of(Algorithm::Sha512, &blob));
        a.upload_commit("cut", &d).await.unwrap();
        assert!(read_all(&b, &d, None).await.1 == blob);
    }

    #[tokio::test]
    async fn node_dying_mid_request_keeps_whole_parts() {
        let Some((a, b, _)) = store_pair() else {
            return;
        };
        let a = Arc::new(a);
        let blob = data(12 * 1024 * 1024 + 99);
        a.upload_create("dies").await.unwrap();
        // 7 MiB arrive, then the body stalls and the node dies.
        let first: Vec<std::io::Result<Bytes>> = blob[..7 * 1024 * 1024]
            .chunks(256 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let stalled: ByteStream =
            Box::pin(futures::stream::iter(first).chain(futures::stream::pending()));
        let a2 = a.clone();
        let request = tokio::spawn(async move {
            a2.upload_append("dies", 0, stalled, Hasher::new(Algorithm::Sha256).into())
                .await
        });
        // The first whole part is saved with its hash while the request still runs.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let saved = loop {
            let n = b.upload_size("dies").await.unwrap().unwrap();
            if n > 0 {
                break n;
            }
            assert!(tokio::time::Instant::now() < deadline, "no part was saved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        request.abort();
        assert_eq!(saved, MIN_PART_SIZE as u64);
        let (at, h) = b
            .upload_rehash("dies", Hasher::new(Algorithm::Sha256))
            .await
            .unwrap();
        assert_eq!(at, saved);
        let (size, h) = b
            .upload_append("dies", at, body(&blob[at as usize..], 1 << 20), h.into())
            .await
            .unwrap();
        assert_eq!(size, blob.len() as u64);
        let d = h.wait().await.unwrap().finish();
        assert_eq!(d, Digest::sha256_of(&blob));
        b.upload_commit("dies", &d).await.unwrap();
        assert!(read_all(&a, &d, None).await.1 == blob);
    }

    #[tokio::test]
    async fn sweep_waits_for_publishers_and_presigned_urls() {
        let Some((a, _, mut config)) = store_pair() else {
            return;
        };
        let a = Arc::new(a);
        let p = a.publish_guard().await.unwrap();
        let q = a.publish_guard().await.unwrap(); // shared: both at once
        let a2 = a.clone();
        let sweeper = tokio::spawn(async move { a2.sweep_guard().await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!sweeper.is_finished());
        drop((p, q));
        sweeper.await.unwrap().unwrap();

        let d = Digest::sha256_of(b"x");
        assert_eq!(a.presigned_get(&d).await.unwrap(), None);
        config.redirect_blobs = true;
        let s = S3Store::open(&config).unwrap();
        let url = s.presigned_get(&d).await.unwrap().unwrap();
        assert!(
            url.starts_with(&format!(
                "{}/{}/reg/blobs/sha256/",
                config.endpoint.unwrap(),
                config.bucket
            )),
            "{url}"
        );
        assert!(url.contains("X-Amz-Signature="), "{url}");
    }

    #[test]
    fn ip_and_localhost_endpoints_need_path_style() {
        for e in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "https://LOCALHOST",
            "http://10.1.2.3",
            "http://[::1]:9000",
            "127.0.0.1:9000",
        ] {
            assert!(endpoint_needs_path_style(e), "{e}");
        }
        for e in [
            "https://s3.eu-west-1.amazonaws.com",
            "https://minio.example.com:9000",
            "http://localhost.example.com",
        ] {
            assert!(!endpoint_needs_path_style(e), "{e}");
        }
    }
}
