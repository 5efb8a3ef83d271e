//! Errors of the distribution API, rendered as the spec's
//! `{"errors":[{"code","message","detail"}]}` with the status distribution uses.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_meta::MetaError;
use berth_store::StoreError;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    ManifestReferenced,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    RangeInvalid,
    PaginationNumberInvalid,
    Unauthorized,
    Denied,
    TooManyRequests,
    Unsupported,
    Unknown,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::ManifestReferenced => "MANIFEST_REFERENCED",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::TagInvalid => "TAG_INVALID",
            Code::RangeInvalid => "RANGE_INVALID",
            Code::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
            Code::Unsupported => "UNSUPPORTED",
            Code::Unknown => "UNKNOWN",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::BlobUploadInvalid
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::ManifestReferenced => StatusCode::CONFLICT,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

#[derive(Debug)]
pub struct RegistryError {
    pub code: Code,
    pub status: StatusCode,
    pub message: String,
    pub detail: Value,
    pub headers: Vec<(&'static str, String)>,
    /// Why a 401/403 was answered, for the log line that says so (not sent).
    pub reason: Option<String>,
    /// The challenge that starts every client's token exchange (a request with no
    /// credentials): logged at debug, not as a refusal.
    pub routine: bool,
}

impl RegistryError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            status: code.status(),
            message: message.into(),
            detail: Value::Null,
            headers: Vec::new(),
            reason: None,
            routine: false,
        }
    }

    /// Mark the first-leg challenge of a token exchange (see [`RegistryError::routine`]).
    pub fn routine(mut self) -> Self {
        self.routine = true;
        self
    }

    /// Why the request is refused, for the operator's log (the client sees `message`).
    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        RegistryError::new(Code::Unknown, "internal server error; see the server log")
    }
}

/// The message every refusal for lack of space carries, on /v2 and /api/v4 alike.
/// ("no space left on device" is also the phrase docker looks for to stop retrying.)
pub const STORAGE_FULL_MESSAGE: &str = "the registry's storage is full (no space left on \
     device); nothing was stored. Try again once an administrator has freed space";

/// Whether an I/O error means the disk (or the quota) is full.
pub fn io_is_storage_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Whether a metadata error means the database's disk is full: SQLite's SQLITE_FULL
/// (13, "database or disk is full"), PostgreSQL's `disk_full` (53100), or an I/O
/// error that says so.
pub fn meta_is_storage_full(e: &MetaError) -> bool {
    let MetaError::Db(e) = e else {
        return false;
    };
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => code == "53100" || code.parse::<i64>().is_ok_and(|c| c & 0xff == 13),
            None => false,
        },
        sqlx::Error::Io(io) => io_is_storage_full(io),
        _ => false,
    }
}

/// A full disk is not a bug of ours: it is logged as a warning (with the error, so an
/// operator sees which store filled up) and answered with 507 Insufficient Storage.
/// Why 507 and not 503 with Retry-After: nothing gets better by retrying until an
/// operator frees space. containers/image (skopeo, podman, buildah) retries only
/// 502-504 among 5xx answers, so 507 makes it stop at once and show the status;
/// containerd retries no 5xx; docker retries every 5xx a few times with a backoff
/// whatever the status, and ignores Retry-After, so 503 would buy nothing there.
fn storage_full(e: &dyn std::fmt::Display) -> RegistryError {
    tracing::warn!(error = %e, "refused a write: storage is full");
    RegistryError::new(Code::Unknown, STORAGE_FULL_MESSAGE).status(StatusCode::INSUFFICIENT_STORAGE)
}

impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> Self {
        if meta_is_storage_full(&e) {
            return storage_full(&e);
        }
        match e {
            MetaError::BlobUnknown(d) => RegistryError::new(
                Code::ManifestBlobUnknown,
                format!("manifest references blob {d}, which this repository does not have"),
            )
            .detail(json!({ "digest": d })),
            MetaError::ManifestUnknown(d) => RegistryError::new(
                Code::ManifestBlobUnknown,
                format!("manifest references manifest {d}, which this repository does not have"),
            )
            .detail(json!({ "digest": d })),
            MetaError::ManifestReferenced(parent) => RegistryError::new(
                Code::ManifestReferenced,
                format!("manifest is referenced by image index {parent}; delete the index first"),
            )
            .detail(serde_json::json!({ "index": parent })),
            other => RegistryError::internal(other),
        }
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => {
                RegistryError::new(Code::BlobUnknown, "blob unknown to registry")
            }
            StoreError::UploadNotFound => {
                RegistryError::new(Code::BlobUploadUnknown, "blob upload unknown to registry")
            }
            StoreError::OffsetMismatch { actual, .. } => RegistryError::new(
                Code::RangeInvalid,
                format!("chunk does not start where the upload ends (offset {actual})"),
            )
            .header("Range", crate::registry::range_header(actual)),
            StoreError::Body(err) => RegistryError::new(
                Code::BlobUploadInvalid,
                format!("reading the upload body failed: {err}; resume from the upload's Range"),
            )
            .status(StatusCode::BAD_REQUEST),
            StoreError::Io(e) if io_is_storage_full(&e) => storage_full(&e),
            // The object store is down or failing: unlike a full disk this passes by
            // itself, so clients are asked to come back (containers/image retries 503
            // with a backoff, docker retries every 5xx).
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "blob storage is unavailable");
                RegistryError::new(
                    Code::Unknown,
                    "the registry's blob storage is not answering; try again shortly",
                )
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header("Retry-After", "10".to_string())
            }
            other => RegistryError::internal(other),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if matches!(
            self.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            // The request's span names the client and the caller; this names the check.
            let reason = self.reason.as_deref().unwrap_or(&self.message);
            if self.routine {
                tracing::debug!(reason, "credentials asked for");
            } else {
                tracing::info!(
                    status = self.status.as_u16(),
                    code = self.code.as_str(),
                    reason,
                    "registry request refused"
                );
            }
        }
        let body = json!({
            "errors": [{
                "code": self.code.as_str(),
                "message": self.message,
                "detail": self.detail,
            }]
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp
    }
}

pub type RegistryResult<T> = Result<T, RegistryError>;
