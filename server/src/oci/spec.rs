//! The JSON documents of container images, as far as canopy reads them: OCI image
//! indexes, manifests and configs (and Docker's v2 equivalents, which have the same
//! shape under other media types), `docker save`'s `manifest.json`; digests, media
//! types and the size bounds every document is read under.

use crate::import::compress::Compression;
use crate::import::{Class, ImportError};
use canopy_protocol::ObjectId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// Largest index or manifest read (as containerd bounds them).
pub(crate) const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config read: configs carry history and labels, still far below this.
pub(crate) const MAX_CONFIG: u64 = 8 << 20;

/// OCI image index (`index.json` of a layout, a multi-platform image).
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker's multi-platform manifest list.
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's image manifest.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPES: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// The compression a layer's media type declares, or `None` for a type that is not a
/// layer canopy applies (foreign or non-container layers, artifacts).
pub(crate) fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// A SHA-256 digest as images write it: `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Digest(pub(crate) ObjectId);

impl Digest {
    /// Parses `sha256:HEX`; anything else (other algorithms, uppercase, stray
    /// characters) is refused, naming `what`.
    pub(crate) fn parse(s: &str, what: &str) -> Result<Digest, ImportError> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            let algorithm = s.split_once(':').map_or(s, |(a, _)| a);
            ImportError::refused(
                Class::NotAnImage,
                format!("{what}: digest {s:?} is not sha256 (canopy reads sha256 digests, not {algorithm:?})"),
            )
        })?;
        hex.parse().map(Digest).map_err(|_| {
            ImportError::refused(
                Class::Malformed,
                format!("{what}: {s:?} is not a sha256 digest (64 lowercase hex digits)"),
            )
        })
    }

    /// The path of this blob in an OCI layout.
    pub(crate) fn blob_path(&self) -> String {
        format!("blobs/sha256/{}", self.0.to_hex())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0.to_hex())
    }
}

/// A reference from one document to a blob.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`.
    pub(crate) fn label(&self) -> String {
        let mut s = format!("{}/{}", self.os, self.architecture);
        if let Some(v) = &self.variant {
            s.push('/');
            s.push_str(v);
        }
        s
    }
}

/// An image index: `index.json`, or a multi-platform image.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub(crate) schema_version: u32,
    #[serde(default)]
    pub(crate) media_type: Option<String>,
    pub(crate) manifests: Vec<Descriptor>,
}

/// An image manifest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub(crate) schema_version: u32,
    #[serde(default)]
    pub(crate) media_type: Option<String>,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

/// An image config: the parts canopy keeps.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
    #[serde(default)]
    pub(crate) config: Option<RunConfig>,
    pub(crate) rootfs: RootFs,
}

/// `config` of an image config: how to run it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RunConfig {
    #[serde(rename = "Env", default)]
    pub(crate) env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    pub(crate) entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub(crate) cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub(crate) working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub(crate) user: Option<String>,
    #[serde(rename = "Labels", default)]
    pub(crate) labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "ExposedPorts", default)]
    pub(crate) exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// `rootfs` of an image config: the uncompressed digest of every layer, in order.
#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) diff_ids: Vec<String>,
}

/// One image of `docker save`'s `manifest.json`.
#[derive(Debug, Deserialize)]
pub(crate) struct DockerEntry {
    #[serde(rename = "Config")]
    pub(crate) config: String,
    #[serde(rename = "RepoTags", default)]
    pub(crate) repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub(crate) layers: Vec<String>,
}

/// Parses a JSON document, naming it in the error.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImportError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ImportError::refused(Class::Malformed, format!("{what} is not valid: {e}")))
}

/// Checks that a config descriptor names an image config.
pub(crate) fn check_config_type(media_type: &str, what: &str) -> Result<(), ImportError> {
    if CONFIG_TYPES.contains(&media_type) {
        return Ok(());
    }
    Err(ImportError::refused(
        Class::NotAnImage,
        format!("{what}: config media type {media_type:?} is not a container image config"),
    ))
}

/// The platform of the running machine in OCI terms (`linux/amd64`).
pub(crate) fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: architecture.to_string(),
        os: std::env::consts::OS.to_string(),
        variant: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        let d = Digest::parse(&format!("sha256:{hex}"), "x").unwrap();
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        assert_eq!(d.blob_path(), format!("blobs/sha256/{hex}"));
        for bad in [
            format!("sha512:{hex}"),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{hex}/../x"),
            "sha256:".to_string(),
            hex.clone(),
        ] {
            assert!(Digest::parse(&bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(
            layer_compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            layer_compression("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
            None
        );
    }
}
