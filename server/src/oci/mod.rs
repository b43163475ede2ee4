//! Container images in: OCI image layouts (a directory, or a tar of one, as `skopeo
//! copy … oci-archive:` and Docker 25+'s `docker save` write) and `docker save`
//! archives, imported as a root.
//!
//! - [`source`]: the image's files, from a directory or a tar (stdin and compressed
//!   archives spooled);
//! - [`spec`]: the JSON documents, digests, media types and size bounds;
//! - [`layout`] and [`docker`]: from the index (or `manifest.json`) to one image's
//!   config and layers, every blob checked against its digest;
//! - [`layer`]: each layer imported once as a package of kind `layer`, keyed by its
//!   `diff_id`, so images sharing layers — and layers sharing files with packages —
//!   share objects;
//! - [`apply`]: the layers applied in order, with whiteouts and opaque directories,
//!   into the root's tree.
//!
//! The root's commit lists the layers as its packages and records the image's runtime
//! configuration under the [`IMAGE_EXTENSION`] key. An import is one transaction:
//! a refused image (a bad digest, a hostile layer, an oversized manifest) changes
//! nothing in the store.

mod apply;
mod docker;
mod layer;
mod layout;
mod source;
mod spec;

pub use layer::Layer;

use crate::assemble::package_refs;
use crate::import::{Class, ImportError, Limits, now};
use crate::store::{Store, TxnStats};
use canopy_protocol::{CommitBody, CommitId, IMAGE_EXTENSION, ImageConfig, RootName};
use layer::LayerBlob;
use spec::Digest;
use std::collections::BTreeMap;
use std::path::Path;

/// The two kinds of image input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout, as a directory or a tar archive.
    Layout,
    /// A `docker save` archive.
    DockerArchive,
}

/// What to import, and as which root.
pub struct Request<'a> {
    /// The root to point at the image.
    pub root: RootName,
    /// The layout directory or archive; `-` reads an archive from standard input.
    pub path: &'a Path,
    /// Which kind of input it is.
    pub format: Format,
    /// The image to pick when the input holds several: a layout's
    /// `org.opencontainers.image.ref.name` (or containerd's image name), or a `docker
    /// save` repository tag.
    pub reference: Option<&'a str>,
    /// `os/arch[/variant]` to pick from multi-platform images; the running machine's
    /// by default.
    pub platform: Option<&'a str>,
    /// Bounds on each layer.
    pub limits: Limits,
    /// The commit's subject; a default names the input.
    pub subject: Option<String>,
}

/// An image's config and layers, found but not yet imported.
pub(crate) struct Image {
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<LayerBlob>,
}

/// What an image import did.
pub struct ImportedImage {
    /// The root's commit for this image.
    pub commit: CommitId,
    /// False when the root already was exactly this image: nothing was written.
    pub new_commit: bool,
    /// The image's runtime configuration, as recorded in the commit.
    pub image: ImageConfig,
    /// Each layer, in order.
    pub layers: Vec<Layer>,
    /// Objects and bytes the store did not have.
    pub stats: TxnStats,
}

/// Imports the image at `req.path` as a new commit of `req.root`. `on_layer` hears of
/// each layer as it is done (its number from 1, the count, what happened).
pub fn import(
    store: &Store,
    req: &Request<'_>,
    on_layer: &mut dyn FnMut(usize, usize, &Layer),
) -> Result<ImportedImage, ImportError> {
    let source =
        source::Source::open(req.path, &store.path().join("tmp"), req.limits.max_unpacked)?;
    let image = match req.format {
        Format::Layout => {
            let platform = match req.platform {
                Some(p) => parse_platform(p)?,
                None => spec::host_platform(),
            };
            let image = layout::read(&source, req.reference, &platform)?;
            // An index that names no platform says nothing until the config does: an
            // image of another platform than the one asked for is refused, not
            // imported as if it were that one.
            if req.platform.is_some()
                && let Ok(have) = parse_platform(&image.config.platform)
                && !layout::matches(&have, &platform)
            {
                return Err(ImportError::refused(
                    Class::Malformed,
                    format!(
                        "{}: the image is for {}, not {} (--platform)",
                        source.what,
                        image.config.platform,
                        platform.label()
                    ),
                ));
            }
            image
        }
        Format::DockerArchive => docker::read(&source, req.reference)?,
    };
    let mut txn = store.begin()?;
    let mut seen = layer::Seen::new();
    let mut root = apply::Root::default();
    let mut layers = Vec::with_capacity(image.layers.len());
    let mut chosen = Vec::with_capacity(image.layers.len());
    let count = image.layers.len();
    for (i, blob) in image.layers.iter().enumerate() {
        let n = i + 1;
        let done = layer::import(&mut txn, &source, blob, n, &req.root, req.limits, &mut seen)?;
        let (id, package) = seen[&blob.diff_id].clone();
        root.apply(
            &txn,
            &package.tree,
            &format!("{}: layer {n} ({})", source.what, blob.diff_id),
        )?;
        on_layer(n, count, &done);
        layers.push(done);
        chosen.push((id, package));
    }
    let tree = root.write(&mut txn)?;
    let extension = image.config.to_json();
    let packages = package_refs(&chosen);
    let parent = store.root_ref(&req.root)?;
    let mut generation = 1;
    if let Some(p) = &parent {
        let head = store.commit(p)?.body;
        if head.tree == tree
            && head.packages == packages
            && head.extensions.get(IMAGE_EXTENSION) == Some(&extension)
        {
            return Ok(ImportedImage {
                commit: *p,
                new_commit: false,
                image: image.config,
                layers,
                stats: TxnStats::default(),
            });
        }
        generation = head.generation + 1;
    }
    let body = CommitBody {
        root: req.root.clone(),
        generation,
        tree,
        parent,
        timestamp: now(),
        subject: req.subject.clone().unwrap_or_else(|| {
            format!(
                "import image {} from {}",
                short(&image.config.manifest),
                source.what
            )
        }),
        requested: Vec::new(),
        options: Vec::new(),
        packages,
        extensions: BTreeMap::from([(IMAGE_EXTENSION.to_string(), extension)]),
    };
    let commit = body.sign(&store.signing_key()?);
    let id = txn.put_commit(&commit)?;
    txn.operation("import");
    txn.set_root(&req.root, parent, id);
    let stats = txn.commit()?;
    Ok(ImportedImage {
        commit: id,
        new_commit: true,
        image: image.config,
        layers,
        stats,
    })
}

/// `sha256:` and the first 12 hex digits.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// Parses `os/arch[/variant]`.
fn parse_platform(s: &str) -> Result<spec::Platform, ImportError> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(spec::Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        }),
        _ => Err(ImportError::refused(
            Class::Malformed,
            format!("platform {s:?} is not OS/ARCH[/VARIANT], e.g. linux/amd64"),
        )),
    }
}

/// The config's `diff_ids`, one per layer of the manifest.
pub(crate) fn diff_ids(
    config: &spec::ConfigFile,
    layers: usize,
    what: &str,
) -> Result<Vec<Digest>, ImportError> {
    if config.rootfs.kind != "layers" {
        return Err(ImportError::refused(
            Class::NotAnImage,
            format!(
                "{what}: rootfs type {:?} is not \"layers\"",
                config.rootfs.kind
            ),
        ));
    }
    if config.rootfs.diff_ids.len() != layers {
        return Err(ImportError::refused(
            Class::NotAnImage,
            format!(
                "{what}: {layers} layers, but the config lists {} diff_ids",
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d, &format!("{what}: diff_id")))
        .collect()
}

/// What a root keeps of an image config.
pub(crate) fn config_of(manifest: Digest, config: Digest, file: &spec::ConfigFile) -> ImageConfig {
    let run = file.config.as_ref();
    let platform = spec::Platform {
        os: file.os.clone(),
        architecture: file.architecture.clone(),
        variant: file.variant.clone(),
    };
    ImageConfig {
        manifest: manifest.to_string(),
        config: config.to_string(),
        platform: platform.label(),
        env: run.and_then(|r| r.env.clone()).unwrap_or_default(),
        entrypoint: run.and_then(|r| r.entrypoint.clone()),
        cmd: run.and_then(|r| r.cmd.clone()),
        working_dir: run.and_then(|r| r.working_dir.clone()).unwrap_or_default(),
        user: run.and_then(|r| r.user.clone()).unwrap_or_default(),
        labels: run.and_then(|r| r.labels.clone()).unwrap_or_default(),
        exposed_ports: run
            .and_then(|r| r.exposed_ports.as_ref())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default(),
    }
}
