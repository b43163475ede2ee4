//! `docker save` archives: `manifest.json` lists each image's config and layer files.
//! The config is named by its digest (`HEX.json`, or `blobs/sha256/HEX` since Docker
//! 25), which is checked; layers are checked against the config's `diff_ids` (and
//! against their own name when that is a digest).

use super::source::Source;
use super::spec::{self, Digest, DockerEntry, MAX_CONFIG, MAX_MANIFEST};
use super::{Image, LayerBlob, config_of};
use crate::import::{Class, ImportError};
use canopy_protocol::ObjectId;

/// Reads the image that `reference` (a repository tag such as `app:1`) or the only
/// image of the archive picks.
pub(crate) fn read(source: &Source, reference: Option<&str>) -> Result<Image, ImportError> {
    let what = &source.what;
    let refuse = |class, detail: String| ImportError::refused(class, format!("{what}: {detail}"));
    if !source.has("manifest.json") {
        return Err(refuse(
            Class::NotAnImage,
            "not a `docker save` archive: there is no manifest.json (for an OCI image layout, use `canopy import oci`)".into(),
        ));
    }
    let mut entries: Vec<DockerEntry> = spec::parse(
        &source.read_small("manifest.json", MAX_MANIFEST)?,
        &format!("{what}: manifest.json"),
    )?;
    let tags = |e: &DockerEntry| e.repo_tags.clone().unwrap_or_default();
    if let Some(r) = reference {
        let available: Vec<String> = entries.iter().flat_map(tags).collect();
        // `app` means `app:latest`, as for `docker run`.
        let full = if r.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            r.to_string()
        } else {
            format!("{r}:latest")
        };
        entries.retain(|e| tags(e).iter().any(|t| *t == r || *t == full));
        if entries.is_empty() {
            return Err(refuse(
                Class::NotAnImage,
                format!(
                    "no image is tagged {r:?} (tags: {})",
                    if available.is_empty() {
                        "none".to_string()
                    } else {
                        available.join(", ")
                    }
                ),
            ));
        }
    }
    let entry = match entries.len() {
        1 => entries.pop().expect("one"),
        0 => {
            return Err(refuse(
                Class::NotAnImage,
                "manifest.json lists no image".into(),
            ));
        }
        n => {
            return Err(refuse(
                Class::NotAnImage,
                format!("manifest.json lists {n} images; pick one with --ref REPO:TAG"),
            ));
        }
    };
    let config_digest = named_digest(&entry.config).ok_or_else(|| {
        refuse(
            Class::NotAnImage,
            format!(
                "config {} is not named by its digest, so it cannot be checked",
                entry.config
            ),
        )
    })?;
    let bytes = source.read_small(&entry.config, MAX_CONFIG)?;
    let actual = ObjectId::of(&bytes);
    if actual != config_digest.0 {
        return Err(refuse(
            Class::BadDigest,
            format!("config {} has digest sha256:{actual}", entry.config),
        ));
    }
    let config: spec::ConfigFile = spec::parse(&bytes, &format!("{what}: config {config_digest}"))?;
    let cwhat = format!("{what}: config {config_digest}");
    let diff_ids = super::diff_ids(&config, entry.layers.len(), &cwhat)?;
    let layers = entry
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(member, diff_id)| LayerBlob {
            member: member.clone(),
            digest: named_digest(member),
            size: None,
            diff_id,
            compression: None,
        })
        .collect();
    Ok(Image {
        // Docker names an image by its config's digest.
        config: config_of(config_digest, config_digest, &config),
        layers,
    })
}

/// The digest a member's name carries: `blobs/sha256/HEX` or `HEX.json`.
fn named_digest(member: &str) -> Option<Digest> {
    let hex = match member.strip_prefix("blobs/sha256/") {
        Some(hex) => hex,
        None => member.strip_suffix(".json").filter(|h| !h.contains('/'))?,
    };
    hex.parse().ok().map(Digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_from_names() {
        let hex = "b".repeat(64);
        assert!(named_digest(&format!("blobs/sha256/{hex}")).is_some());
        assert!(named_digest(&format!("{hex}.json")).is_some());
        assert!(named_digest(&format!("{hex}/layer.tar")).is_none());
        assert!(named_digest("config.json").is_none());
    }
}
