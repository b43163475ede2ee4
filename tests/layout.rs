//! Writes OCI image layouts at test time: what `umoci` cannot make (zstd and plain
//! layers, opaque directories, layers written with `corpus::Tar` byte by byte) and the
//! flawed images of the hostile tests. Every digest and `diff_id` is computed here, so
//! an image differs from a well-formed one only where a test says.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::Path;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Comp {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Comp::None => "application/vnd.oci.image.layer.v1.tar",
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// `tar` compressed this way.
    pub fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Comp::None => tar.to_vec(),
            Comp::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Comp::Zstd => zstd::encode_all(tar, 3).unwrap(),
        }
    }
}

/// `sha256:HEX` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A layer blob's tar, whatever its compression.
pub fn decompress(blob: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    if blob.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .unwrap();
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        out = zstd::decode_all(blob).unwrap();
    } else {
        out = blob.to_vec();
    }
    out
}

/// One layer as the manifest describes it.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The blob's bytes.
    pub blob: Vec<u8>,
    /// The media type the manifest gives it.
    pub media_type: String,
    /// The `diff_id` the config gives it.
    pub diff_id: String,
}

impl Layer {
    /// A layer of `tar`, compressed with `comp`, described truthfully.
    pub fn new(tar: &[u8], comp: Comp) -> Layer {
        Layer {
            blob: comp.compress(tar),
            media_type: comp.media_type().to_string(),
            diff_id: digest(tar),
        }
    }
}

/// An image to write as a layout.
#[derive(Clone, Debug)]
pub struct Image {
    /// Its layers, bottom first.
    pub layers: Vec<Layer>,
    /// The `config` section of the image config (Env, Cmd, Labels…).
    pub run: Value,
}

impl Image {
    /// An image of `layers` with an empty runtime config.
    pub fn new(layers: Vec<Layer>) -> Image {
        Image {
            layers,
            run: json!({}),
        }
    }

    /// The image config document.
    pub fn config(&self) -> Vec<u8> {
        let diff_ids: Vec<&str> = self.layers.iter().map(|l| l.diff_id.as_str()).collect();
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux", "config": self.run,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }

    /// The manifest document, for a config of these bytes.
    pub fn manifest(&self, config: &[u8]) -> Vec<u8> {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| json!({"mediaType": l.media_type, "digest": digest(&l.blob), "size": l.blob.len()}))
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": config.len()},
            "layers": layers,
        }))
        .unwrap()
    }

    /// Writes the image into layout `dir` (created if needed) under ref name
    /// `reference`, keeping the images already there. Returns the manifest's digest.
    pub fn write(&self, dir: &Path, reference: &str) -> String {
        let config = self.config();
        let manifest = self.manifest(&config);
        put_blob(dir, &config);
        for l in &self.layers {
            put_blob(dir, &l.blob);
        }
        let d = put_blob(dir, &manifest);
        add_to_index(
            dir,
            json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": reference},
            }),
        );
        d
    }
}

/// Stores `bytes` as a blob of layout `dir`; returns its digest.
pub fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let d = digest(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(&d[7..]), bytes).unwrap();
    d
}

/// The path of blob `digest` in layout `dir`.
pub fn blob_path(dir: &Path, digest: &str) -> std::path::PathBuf {
    dir.join("blobs/sha256").join(&digest[7..])
}

/// Adds a descriptor to `dir/index.json`, writing `oci-layout` and the index if new.
pub fn add_to_index(dir: &Path, descriptor: Value) {
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let path = dir.join("index.json");
    let mut index: Value = match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).unwrap(),
        Err(_) => json!({"schemaVersion": 2, "manifests": []}),
    };
    index["manifests"].as_array_mut().unwrap().push(descriptor);
    fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// The image a layout's index names `reference`, read back (as `umoci` wrote it).
pub fn read(dir: &Path, reference: &str) -> Image {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .unwrap_or_else(|| panic!("no {reference} in {}", dir.display()));
    let load = |d: &Value| fs::read(blob_path(dir, d.as_str().unwrap())).unwrap();
    let manifest: Value = serde_json::from_slice(&load(&entry["digest"])).unwrap();
    let config: Value = serde_json::from_slice(&load(&manifest["config"]["digest"])).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
        .map(|(l, diff_id)| Layer {
            blob: load(&l["digest"]),
            media_type: l["mediaType"].as_str().unwrap().to_string(),
            diff_id: diff_id.as_str().unwrap().to_string(),
        })
        .collect();
    Image {
        layers,
        run: config["config"].clone(),
    }
}
