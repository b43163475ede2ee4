//! One image layer into the store, once: a layer is a package of kind `layer` keyed
//! by its `diff_id` (the SHA-256 of the uncompressed tar), kept as written, whiteouts
//! included. Its blob's digest is checked before it is decompressed, its `diff_id`
//! while it streams into the store; a layer already imported is only hashed.

use super::source::Source;
use super::spec::Digest;
use crate::import::compress::{Compression, decoder};
use crate::import::limit::Hashing;
use crate::import::tar::{Dialect, read};
use crate::import::{Class, ImportError, Limits, Outcome, now};
use crate::store::{Txn, TxnStats};
use canopy_protocol::{ArchiveHash, ObjectId, Package, PackageId, PackageKind, RootName};
use std::collections::HashMap;
use std::io;

/// Where a layer is and what it must be.
#[derive(Clone, Debug)]
pub(crate) struct LayerBlob {
    /// Its member in the image source.
    pub(crate) member: String,
    /// The digest of the blob as stored (compressed), when the image names it.
    pub(crate) digest: Option<Digest>,
    /// The blob's size, when a descriptor declares it.
    pub(crate) size: Option<u64>,
    /// The uncompressed tar's digest, from the image config.
    pub(crate) diff_id: Digest,
    /// The compression its media type declares; `None` to tell it from the content.
    pub(crate) compression: Option<Compression>,
}

/// What importing one layer did.
#[derive(Clone, Debug)]
pub struct Layer {
    /// `sha256:…` of the uncompressed layer: its key in the store.
    pub diff_id: String,
    /// `sha256:…` of the blob as the image stores it, when the image names it.
    pub digest: Option<String>,
    /// The layer's package record.
    pub package: PackageId,
    /// Imported now (entries, new objects) or already in the store.
    pub outcome: Outcome,
}

/// The layers one import has met so far, by `diff_id`: an image may repeat a layer
/// (empty layers often are), and this import's own are not yet in the store's refs.
pub(crate) type Seen = HashMap<Digest, (PackageId, Package)>;

/// Imports layer number `n` (from 1) of an image becoming root `root`.
pub(crate) fn import(
    txn: &mut Txn<'_>,
    source: &Source,
    blob: &LayerBlob,
    n: usize,
    root: &RootName,
    limits: Limits,
    seen: &mut Seen,
) -> Result<Layer, ImportError> {
    let what = format!("{}: layer {n} ({})", source.what, blob.diff_id);
    let opened = source.open_member(&blob.member)?;
    if let Some(size) = blob.size
        && opened.size != size
    {
        return Err(ImportError::refused(
            Class::BadDigest,
            format!(
                "{what}: the manifest says {size} bytes, the blob has {}",
                opened.size
            ),
        ));
    }
    let read_err = |e: io::Error| ImportError::from_read(e, &what, false);
    // The blob is checked before a byte of it is decompressed: decoders never see
    // content the image does not vouch for.
    let mut reader = opened.reader;
    if blob.digest.is_some() {
        let (digest, _) = Hashing::new(reader).finish().map_err(read_err)?;
        check(&what, "blob", digest, blob.digest)?;
        reader = source.open_member(&blob.member)?.reader;
    }
    let known = match seen.get(&blob.diff_id) {
        Some(found) => Some(found.clone()),
        None => match txn.store().package_ref(&ArchiveHash(blob.diff_id.0))? {
            Some(id) => Some((id, txn.store().package(&id)?)),
            None => None,
        },
    };
    let diff_id = Some(blob.diff_id);
    let (package, record, outcome) = match known {
        Some((package, record)) => {
            // The layer is known by its diff_id, which only the config claims: the
            // blob must really unpack to it, or a config that lies about a layer would
            // get another layer's files (the blob's digest vouches for the blob alone).
            let diff = Hashing::new(decoder(reader, blob.compression, &what)?);
            let (digest, _) = diff.finish().map_err(read_err)?;
            check(&what, "uncompressed content", digest, diff_id)?;
            (package, record, Outcome::AlreadyImported)
        }
        None => {
            let before = txn.stats();
            let mut diff = Hashing::new(decoder(reader, blob.compression, &what)?);
            let builder = read(txn, &mut diff, limits, Dialect::Layer, &what)?;
            let (digest, _) = diff.finish().map_err(read_err)?;
            check(&what, "uncompressed content", digest, diff_id)?;
            let entries = builder.entries();
            let record = Package {
                kind: PackageKind::Layer,
                name: format!("{root}-layer{n}"),
                version: blob.diff_id.0.short(),
                arch: String::new(),
                archive: ArchiveHash(blob.diff_id.0),
                tree: builder.write(txn)?,
                imported_at: now(),
                scripts: Vec::new(),
                control: None,
                extensions: Default::default(),
            };
            let package = txn.put_package(&record)?;
            txn.set_package(&record.archive, package);
            let after = txn.stats();
            let stats = TxnStats {
                new_objects: after.new_objects - before.new_objects,
                new_bytes: after.new_bytes - before.new_bytes,
                replaced: after.replaced - before.replaced,
            };
            (package, record, Outcome::New { entries, stats })
        }
    };
    seen.insert(blob.diff_id, (package, record));
    Ok(Layer {
        diff_id: blob.diff_id.to_string(),
        digest: blob.digest.map(|d| d.to_string()),
        package,
        outcome,
    })
}

/// Refuses content whose digest is not the expected one.
fn check(
    what: &str,
    part: &str,
    actual: ObjectId,
    expected: Option<Digest>,
) -> Result<(), ImportError> {
    match expected {
        Some(e) if e.0 != actual => Err(ImportError::refused(
            Class::BadDigest,
            format!("{what}: the {part} has digest sha256:{actual}, not {e}"),
        )),
        _ => Ok(()),
    }
}
