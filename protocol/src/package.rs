//! Package records: what one imported archive was, and the tree it unpacked to.
//!
//! ```text
//! "CNPP" 0x02
//! u8 kind                          1 deb, 2 tar, 3 dir, 4 rpm, 5 layer
//! string name, version, arch       u32 length + UTF-8 each
//! 32-byte archive hash             SHA-256 of the archive file (for dir: see PackageKind::Dir)
//! 32-byte tree id
//! i64 imported_at                  unix seconds
//! u32 count, strings               maintainer scripts the archive carried
//! u8 has_control, [32-byte tree id]  the archive's own metadata, kept as a tree
//! u32 count, per extension:        further facts, sorted by key, keys unique
//!   string key; u32 length + bytes value
//! ```
//!
//! The **control** tree keeps what a package manager reads of an archive beside its
//! files, so that configuring a root can run its scripts and write its package
//! database: a `.deb`'s control members, an RPM's header. **Extensions** hold facts a
//! format needs that the common fields cannot (an RPM's epoch, version and release, its
//! files' owners by name…), as a key (`rpm`…) and a value that format defines (JSON by
//! convention, as for commits).

use crate::codec::{DecodeError, Reader, Writer};
use crate::id::{ArchiveHash, PackageId, TreeId};
use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"CNPP";
const VERSION: u8 = 2;

/// Where a package came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PackageKind {
    /// A Debian binary package (`.deb`).
    Deb,
    /// A tar archive (plain, gzip, xz or zstd).
    Tar,
    /// A directory on the importing machine. Its "archive hash" is the SHA-256 of the
    /// name, version and tree id, so the same content under the same name imports once.
    Dir,
    /// An RPM package (`.rpm`).
    Rpm,
    /// One layer of a container image (`canopy import oci|docker-archive`), kept as
    /// written, whiteouts (`.wh.NAME`, `.wh..wh..opq`) included: only applying the
    /// image's layers in order gives a root. Its "archive hash" is the layer's
    /// `diff_id`, the SHA-256 of the uncompressed tar, so one layer compressed two ways
    /// (a registry's gzip, `docker save`'s plain tar) is imported once.
    Layer,
}

impl PackageKind {
    fn code(self) -> u8 {
        match self {
            PackageKind::Deb => 1,
            PackageKind::Tar => 2,
            PackageKind::Dir => 3,
            PackageKind::Rpm => 4,
            PackageKind::Layer => 5,
        }
    }

    /// The lowercase word used on the command line and in listings.
    pub fn label(self) -> &'static str {
        match self {
            PackageKind::Deb => "deb",
            PackageKind::Tar => "tar",
            PackageKind::Dir => "dir",
            PackageKind::Rpm => "rpm",
            PackageKind::Layer => "layer",
        }
    }
}

/// One imported archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// Deb, RPM, tar or directory.
    pub kind: PackageKind,
    /// Package name (`Package:` for a deb, the header's name for an RPM, `--name`
    /// otherwise).
    pub name: String,
    /// Version (`Version:` for a deb, `[EPOCH:]VERSION-RELEASE` for an RPM, `--version`
    /// otherwise).
    pub version: String,
    /// Architecture (`Architecture:` for a deb, the header's arch for an RPM; empty
    /// otherwise).
    pub arch: String,
    /// SHA-256 of the archive as imported.
    pub archive: ArchiveHash,
    /// The unpacked content.
    pub tree: TreeId,
    /// When it was imported, unix seconds.
    pub imported_at: i64,
    /// Maintainer scripts the archive carried (`preinst`, `postinst`…; an RPM's
    /// `%pre`, `%post`… as `pre`, `post`…).
    pub scripts: Vec<String>,
    /// The archive's own metadata as a tree (see the module docs), if the format has any.
    pub control: Option<TreeId>,
    /// Further facts by key (see the module docs); keys are 1 to
    /// [`crate::EXTENSION_KEY_MAX`] characters of `a-z 0-9 . -`.
    pub extensions: BTreeMap<String, Vec<u8>>,
}

impl Package {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_header(MAGIC, VERSION);
        w.u8(self.kind.code());
        w.string(&self.name);
        w.string(&self.version);
        w.string(&self.arch);
        w.id(&self.archive.0);
        w.id(&self.tree.0);
        w.i64(self.imported_at);
        w.strings(&self.scripts);
        match &self.control {
            Some(tree) => {
                w.u8(1);
                w.id(&tree.0);
            }
            None => w.u8(0),
        }
        w.extensions(&self.extensions);
        w.into_bytes()
    }

    /// The id: SHA-256 of the canonical encoding.
    pub fn id(&self) -> PackageId {
        PackageId::of(&self.encode())
    }

    /// Decodes a canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::with_header(bytes, MAGIC, VERSION, "package")?;
        let kind = match r.u8()? {
            1 => PackageKind::Deb,
            2 => PackageKind::Tar,
            3 => PackageKind::Dir,
            4 => PackageKind::Rpm,
            5 => PackageKind::Layer,
            other => {
                return Err(DecodeError::invalid(
                    "package kind",
                    format!("unknown kind {other}"),
                ));
            }
        };
        let p = Package {
            kind,
            name: r.string("package name")?,
            version: r.string("package version")?,
            arch: r.string("package architecture")?,
            archive: ArchiveHash(r.id()?),
            tree: TreeId(r.id()?),
            imported_at: r.i64()?,
            scripts: r.strings("maintainer script")?,
            control: match r.flag("control flag")? {
                true => Some(TreeId(r.id()?)),
                false => None,
            },
            extensions: r.extensions()?,
        };
        r.finish()?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ObjectId;
    use proptest::prelude::*;

    fn arb_package() -> impl Strategy<Value = Package> {
        (
            prop_oneof![
                Just(PackageKind::Deb),
                Just(PackageKind::Tar),
                Just(PackageKind::Dir),
                Just(PackageKind::Rpm)
            ],
            ".{0,12}",
            ".{0,12}",
            "[a-z0-9]{0,6}",
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<i64>(),
            proptest::collection::vec("[a-z]{1,8}", 0..3),
            proptest::option::of(any::<[u8; 32]>()),
            proptest::collection::btree_map(
                "[a-z][a-z0-9.-]{0,8}",
                proptest::collection::vec(any::<u8>(), 0..6),
                0..3,
            ),
        )
            .prop_map(
                |(kind, name, version, arch, a, t, imported_at, scripts, control, extensions)| {
                    Package {
                        kind,
                        name,
                        version,
                        arch,
                        archive: ArchiveHash(ObjectId::from_bytes(a)),
                        tree: TreeId(ObjectId::from_bytes(t)),
                        imported_at,
                        scripts,
                        control: control.map(|c| TreeId(ObjectId::from_bytes(c))),
                        extensions,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn round_trip_and_canonical(p in arb_package(), pos in any::<usize>(), byte in any::<u8>()) {
            let bytes = p.encode();
            prop_assert_eq!(Package::decode(&bytes).unwrap(), p.clone());
            let mut m = bytes.clone();
            let i = pos % m.len();
            prop_assume!(m[i] != byte);
            m[i] = byte;
            if let Ok(d) = Package::decode(&m) {
                prop_assert_eq!(d.encode(), m);
                prop_assert_ne!(d.id(), p.id());
            }
        }
    }
}
