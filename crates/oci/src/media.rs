//! Media types the registry understands.

pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Media types accepted as manifests (the body of `PUT /v2/<name>/manifests/<ref>`).
pub const MANIFEST_TYPES: [&str; 4] = [
    DOCKER_MANIFEST_V2,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    OCI_INDEX,
];

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}
