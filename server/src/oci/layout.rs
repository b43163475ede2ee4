//! OCI image layouts: `oci-layout`, `index.json` → (image index →) manifest → config
//! → layers, each blob read from `blobs/sha256/HEX` and checked against its
//! descriptor's digest and size before it is used.

use super::source::Source;
use super::spec::{
    self, DOCKER_LIST, DOCKER_MANIFEST, Descriptor, Digest, Index, MAX_CONFIG, MAX_MANIFEST,
    Manifest, OCI_INDEX, OCI_MANIFEST, Platform,
};
use super::{Image, LayerBlob, config_of};
use crate::import::{Class, ImportError};
use canopy_protocol::ObjectId;
use serde::Deserialize;

/// Nested indexes followed (a layout's index naming a multi-platform image is two).
const MAX_DEPTH: usize = 4;
/// Descriptors considered across all indexes.
const MAX_DESCRIPTORS: usize = 4096;

/// Annotations that name an image in a layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutFile {
    image_layout_version: String,
}

/// Reads the image that `reference` (or the only image) and `platform` pick.
pub(crate) fn read(
    source: &Source,
    reference: Option<&str>,
    platform: &Platform,
) -> Result<Image, ImportError> {
    let what = &source.what;
    let refuse = |class, detail: String| ImportError::refused(class, format!("{what}: {detail}"));
    if !source.has("oci-layout") {
        return Err(refuse(
            Class::NotAnImage,
            "not an OCI image layout: there is no oci-layout file (for `docker save` archives of older Docker versions, use `canopy import docker-archive`)".into(),
        ));
    }
    let layout: LayoutFile = spec::parse(
        &source.read_small("oci-layout", 4096)?,
        &format!("{what}: oci-layout"),
    )?;
    if !layout.image_layout_version.starts_with("1.") {
        return Err(refuse(
            Class::NotAnImage,
            format!(
                "image layout version {} is not 1.x",
                layout.image_layout_version
            ),
        ));
    }
    let index: Index = spec::parse(
        &source.read_small("index.json", MAX_MANIFEST)?,
        &format!("{what}: index.json"),
    )?;
    check_index(&index, "index.json", what)?;
    let mut top = index.manifests;
    if let Some(r) = reference {
        let names = |d: &Descriptor| -> Vec<String> {
            [REF_NAME, CONTAINERD_NAME]
                .iter()
                .filter_map(|k| d.annotations.get(*k).cloned())
                .collect()
        };
        let available: Vec<String> = top.iter().flat_map(names).collect();
        top.retain(|d| names(d).iter().any(|n| n == r));
        if top.is_empty() {
            return Err(refuse(
                Class::NotAnImage,
                format!(
                    "no image is named {r:?} in index.json (names: {})",
                    if available.is_empty() {
                        "none".to_string()
                    } else {
                        available.join(", ")
                    }
                ),
            ));
        }
    }
    let mut found = Vec::new();
    let mut budget = MAX_DESCRIPTORS;
    for d in top {
        manifests(source, d, platform, 0, &mut budget, &mut found)?;
    }
    let chosen = match found.len() {
        1 => found.pop().expect("one"),
        0 => {
            return Err(refuse(
                Class::NotAnImage,
                format!(
                    "no image for platform {} (pick another with --platform)",
                    platform.label()
                ),
            ));
        }
        n => {
            return Err(refuse(
                Class::NotAnImage,
                format!(
                    "{n} images match; pick one with --ref NAME (see index.json's {REF_NAME} annotations) or --platform"
                ),
            ));
        }
    };
    let manifest_digest = Digest::parse(&chosen.digest, &format!("{what}: index.json"))?;
    let manifest: Manifest = spec::parse(
        &blob(source, &chosen, MAX_MANIFEST, "manifest")?,
        &format!("{what}: manifest {manifest_digest}"),
    )?;
    let mwhat = format!("{what}: manifest {manifest_digest}");
    if manifest.schema_version != 2 {
        return Err(ImportError::refused(
            Class::NotAnImage,
            format!(
                "{mwhat}: schema version {} is not 2",
                manifest.schema_version
            ),
        ));
    }
    if let Some(t) = &manifest.media_type
        && *t != chosen.media_type
    {
        return Err(ImportError::refused(
            Class::NotAnImage,
            format!(
                "{mwhat}: its media type is {t:?}, but index.json says {:?}",
                chosen.media_type
            ),
        ));
    }
    spec::check_config_type(&manifest.config.media_type, &mwhat)?;
    let config_digest = Digest::parse(&manifest.config.digest, &mwhat)?;
    let config_bytes = blob(source, &manifest.config, MAX_CONFIG, "config")?;
    let config: spec::ConfigFile =
        spec::parse(&config_bytes, &format!("{what}: config {config_digest}"))?;
    let diff_ids = super::diff_ids(&config, manifest.layers.len(), &mwhat)?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (i, (d, diff_id)) in manifest.layers.iter().zip(diff_ids).enumerate() {
        let compression = spec::layer_compression(&d.media_type).ok_or_else(|| {
            ImportError::refused(
                Class::NotAnImage,
                format!(
                    "{mwhat}: layer {} has media type {:?}, which is not a layer canopy applies",
                    i + 1,
                    d.media_type
                ),
            )
        })?;
        let digest = Digest::parse(&d.digest, &format!("{mwhat}: layer {}", i + 1))?;
        layers.push(LayerBlob {
            member: digest.blob_path(),
            digest: Some(digest),
            size: Some(d.size),
            diff_id,
            compression: Some(compression),
        });
    }
    Ok(Image {
        config: config_of(manifest_digest, config_digest, &config),
        layers,
    })
}

fn check_index(index: &Index, name: &str, what: &str) -> Result<(), ImportError> {
    if index.schema_version != 2 {
        return Err(ImportError::refused(
            Class::NotAnImage,
            format!(
                "{what}: {name} has schema version {}, not 2",
                index.schema_version
            ),
        ));
    }
    match index.media_type.as_deref() {
        None | Some(OCI_INDEX) | Some(DOCKER_LIST) => Ok(()),
        Some(other) => Err(ImportError::refused(
            Class::NotAnImage,
            format!("{what}: {name} has media type {other:?}, not an image index"),
        )),
    }
}

/// Collects the image manifests under descriptor `d` that run on `platform`.
fn manifests(
    source: &Source,
    d: Descriptor,
    platform: &Platform,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<Descriptor>,
) -> Result<(), ImportError> {
    let what = &source.what;
    *budget = budget.checked_sub(1).ok_or_else(|| {
        ImportError::refused(
            Class::TooLarge,
            format!("{what}: the image indexes list more than {MAX_DESCRIPTORS} entries"),
        )
    })?;
    if let Some(p) = &d.platform
        && !matches(p, platform)
    {
        return Ok(());
    }
    match d.media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => out.push(d),
        OCI_INDEX | DOCKER_LIST => {
            if depth >= MAX_DEPTH {
                return Err(ImportError::refused(
                    Class::TooLarge,
                    format!("{what}: image indexes nest more than {MAX_DEPTH} deep"),
                ));
            }
            let digest = Digest::parse(&d.digest, &format!("{what}: index"))?;
            let index: Index = spec::parse(
                &blob(source, &d, MAX_MANIFEST, "image index")?,
                &format!("{what}: index {digest}"),
            )?;
            check_index(&index, &format!("index {digest}"), what)?;
            for child in index.manifests {
                manifests(source, child, platform, depth + 1, budget, out)?;
            }
        }
        // Anything else an index may list (artifacts, signatures) is not an image.
        _ => {}
    }
    Ok(())
}

/// Whether platform `have` is what `want` asks for (its variant only if `want` names one).
pub(crate) fn matches(have: &Platform, want: &Platform) -> bool {
    have.os == want.os
        && have.architecture == want.architecture
        && (want.variant.is_none() || have.variant == want.variant)
}

/// Reads the blob `d` names, at most `max` bytes, checked against its size and digest.
pub(crate) fn blob(
    source: &Source,
    d: &Descriptor,
    max: u64,
    kind: &str,
) -> Result<Vec<u8>, ImportError> {
    let what = &source.what;
    let digest = Digest::parse(&d.digest, &format!("{what}: {kind}"))?;
    if d.size > max {
        return Err(ImportError::refused(
            Class::TooLarge,
            format!(
                "{what}: {kind} {digest} is {} bytes, over the {max}-byte bound",
                d.size
            ),
        ));
    }
    let bytes = source.read_small(&digest.blob_path(), max)?;
    if bytes.len() as u64 != d.size {
        return Err(ImportError::refused(
            Class::BadDigest,
            format!(
                "{what}: {kind} {digest} has {} bytes, its descriptor says {}",
                bytes.len(),
                d.size
            ),
        ));
    }
    let actual = ObjectId::of(&bytes);
    if actual != digest.0 {
        return Err(ImportError::refused(
            Class::BadDigest,
            format!("{what}: {kind} {digest} has digest sha256:{actual}"),
        ));
    }
    Ok(bytes)
}
