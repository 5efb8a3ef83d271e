//! The OCI distribution vocabulary, with no I/O: digests, repository names and tags
//! (including Berth's project-path rules), media types, and manifest parsing.
//!
//! Everything here is pure so that the server, the metadata store and the offline
//! tools agree on what a valid name or manifest is without sharing any state.
#![forbid(unsafe_code)]

pub mod digest;
pub mod manifest;
pub mod media;
pub mod name;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, Manifest, ManifestError, ManifestKind};
pub use name::{NameError, RepoName, Tag};
