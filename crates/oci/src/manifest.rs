//! Manifest parsing and validation: what a manifest says it is, and which blobs and
//! manifests it references. The payload itself is stored byte-exact elsewhere; this
//! only reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::media;

/// Manifests above this size are refused (the spec lets registries set a limit;
/// distribution and GitLab use 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

impl Descriptor {
    /// Foreign layers (with `urls`) live outside the registry and need not be pushed.
    pub fn is_foreign(&self) -> bool {
        self.urls.as_ref().is_some_and(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image or artifact manifest: one config and a list of layers.
    Image,
    /// A manifest list / image index: a list of child manifests.
    Index,
}

/// What the registry needs to know about a manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub kind: ManifestKind,
    /// The effective media type, served back as `Content-Type`.
    pub media_type: String,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Manifest {
    /// The type the referrers API reports: `artifactType`, else the config's media type.
    pub fn referrer_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error("manifest is {0} bytes; the limit is {MAX_MANIFEST_BYTES}")]
    TooLarge(usize),
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("Docker image manifest schema 1 is not supported; push with a current client (schema 2 or OCI)")]
    Schema1,
    #[error("manifest schemaVersion must be 2, got {0}")]
    SchemaVersion(i64),
    #[error("manifest media type {0:?} is not supported")]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} disagrees with the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
    /// Only schema 1 has this; used to recognise it.
    fs_layers: Option<serde_json::Value>,
}

/// Parse and validate a manifest body. `content_type` is the request's header, if any.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, ManifestError> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge(body.len()));
    }
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
        .filter(|c| !c.is_empty());
    if let Some(h) = &header {
        if h == media::DOCKER_SCHEMA1 || h == media::DOCKER_SCHEMA1_SIGNED {
            return Err(ManifestError::Schema1);
        }
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
    if raw.schema_version == Some(1) || raw.fs_layers.is_some() {
        return Err(ManifestError::Schema1);
    }
    match raw.schema_version {
        Some(2) => {}
        Some(v) => return Err(ManifestError::SchemaVersion(v)),
        None => {
            return Err(ManifestError::Invalid(
                "manifest has no schemaVersion".into(),
            ))
        }
    }

    // A generic or missing Content-Type defers to the body; a manifest type in the
    // header must agree with the body's mediaType when the body has one.
    let header_manifest_type = header
        .as_deref()
        .filter(|h| media::MANIFEST_TYPES.contains(h) || h.starts_with("application/vnd."));
    let media_type = match (header_manifest_type, raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(ManifestError::MediaTypeMismatch {
                header: h.to_string(),
                body: b.to_string(),
            })
        }
        (Some(h), _) => h.to_string(),
        (None, Some(b)) => b.to_string(),
        (None, None) if raw.manifests.is_some() => media::OCI_INDEX.to_string(),
        (None, None) => media::OCI_MANIFEST.to_string(),
    };
    if !media::MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(ManifestError::UnsupportedMediaType(media_type));
    }

    if media::is_index(&media_type) {
        if raw.config.is_some() || raw.layers.is_some() {
            return Err(ManifestError::Invalid(
                "an image index must not have config or layers".into(),
            ));
        }
        let children = raw.manifests.ok_or_else(|| {
            ManifestError::Invalid("an image index needs a manifests array".into())
        })?;
        if media_type == media::DOCKER_MANIFEST_LIST && raw.subject.is_some() {
            return Err(ManifestError::Invalid(
                "a Docker manifest list cannot carry a subject".into(),
            ));
        }
        Ok(Manifest {
            kind: ManifestKind::Index,
            media_type,
            config: None,
            layers: Vec::new(),
            children,
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        })
    } else {
        if raw.manifests.is_some() {
            return Err(ManifestError::Invalid(
                "an image manifest must not have a manifests array".into(),
            ));
        }
        let config = raw
            .config
            .ok_or_else(|| ManifestError::Invalid("an image manifest needs a config".into()))?;
        let layers = raw.layers.ok_or_else(|| {
            ManifestError::Invalid("an image manifest needs a layers array".into())
        })?;
        if media_type == media::OCI_MANIFEST
            && config.media_type == media::OCI_EMPTY
            && raw.artifact_type.is_none()
        {
            return Err(ManifestError::Invalid(
                "an artifact manifest with an empty config must set artifactType".into(),
            ));
        }
        if let Some(d) = std::iter::once(&config).chain(&layers).find(|d| d.size < 0) {
            return Err(ManifestError::Invalid(format!(
                "descriptor {} has a negative size",
                d.digest
            )));
        }
        Ok(Manifest {
            kind: ManifestKind::Image,
            media_type,
            config: Some(config),
            layers,
            children: Vec::new(),
            subject: raw.subject,
            artifact_type: raw.artifact_type,
            annotations: raw.annotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn image(mt: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{EMPTY}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{EMPTY}","size":2}}]}}"#
        )
    }

    #[test]
    fn parses_oci_image() {
        let m = parse(
            Some(media::OCI_MANIFEST),
            image(media::OCI_MANIFEST).as_bytes(),
        )
        .unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(
            m.referrer_artifact_type().as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn header_and_body_must_agree() {
        let err = parse(
            Some(media::DOCKER_MANIFEST_V2),
            image(media::OCI_MANIFEST).as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, ManifestError::MediaTypeMismatch { .. }));
        // generic header defers to the body
        let m = parse(
            Some("application/json"),
            image(media::DOCKER_MANIFEST_V2).as_bytes(),
        )
        .unwrap();
        assert_eq!(m.media_type, media::DOCKER_MANIFEST_V2);
    }

    #[test]
    fn refuses_schema1_and_garbage() {
        assert_eq!(
            parse(None, br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err(),
            ManifestError::Schema1
        );
        assert_eq!(
            parse(Some(media::DOCKER_SCHEMA1_SIGNED), b"{}").unwrap_err(),
            ManifestError::Schema1
        );
        assert!(matches!(
            parse(None, b"not json"),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            parse(None, br#"{"schemaVersion":3}"#),
            Err(ManifestError::SchemaVersion(3))
        ));
        assert!(matches!(
            parse(Some(media::OCI_INDEX), image(media::OCI_INDEX).as_bytes()),
            Err(ManifestError::Invalid(_))
        ));
        let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(matches!(parse(None, &big), Err(ManifestError::TooLarge(_))));
    }

    #[test]
    fn parses_index_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{EMPTY}","size":2,"platform":{{"architecture":"amd64","os":"linux"}}}}],"subject":{{"mediaType":"{}","digest":"{EMPTY}","size":2}}}}"#,
            media::OCI_INDEX,
            media::OCI_MANIFEST,
            media::OCI_MANIFEST
        );
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(
            m.children[0].platform.as_ref().unwrap().architecture,
            "amd64"
        );
        assert!(m.subject.is_some());
    }

    #[test]
    fn artifact_with_empty_config_needs_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{EMPTY}","size":2}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            media::OCI_EMPTY
        );
        assert!(parse(None, body.as_bytes()).is_err());
        let with_type = body.replacen('{', r#"{"artifactType":"application/x.sig","#, 1);
        let m = parse(None, with_type.as_bytes()).unwrap();
        assert_eq!(
            m.referrer_artifact_type().as_deref(),
            Some("application/x.sig")
        );
    }
}
