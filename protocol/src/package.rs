//! Package records: what one imported archive was, and the tree it unpacked to.
//!
//! ```text
//! "CNPP" 0x01 or 0x02
//! u8 kind                          1 deb, 2 tar, 3 dir
//! string name, version, arch       u32 length + UTF-8 each
//! 32-byte archive hash             SHA-256 of the archive file (for dir: see PackageKind::Dir)
//! 32-byte tree id
//! i64 imported_at                  unix seconds
//! u32 count, strings               maintainer scripts the archive carried
//! version 2 only (a package with control data):
//!   32-byte control tree id        the control archive's members (control, md5sums,
//!                                  conffiles, maintainer scripts…) as a tree
//!   32-byte files blob id          the data archive's paths, in archive order
//!   i64 built_at                   when the archive was built (its data member's time)
//! ```
//!
//! A record without control data is written as version 1, so records imported before
//! version 2 existed keep their ids; version 2 always carries it.

use crate::codec::{DecodeError, Reader, Writer};
use crate::id::{ArchiveHash, BlobId, PackageId, TreeId};

const MAGIC: &[u8; 4] = b"CNPP";
const PLAIN: u8 = 1;
const WITH_CONTROL: u8 = 2;

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
}

impl PackageKind {
    fn code(self) -> u8 {
        match self {
            PackageKind::Deb => 1,
            PackageKind::Tar => 2,
            PackageKind::Dir => 3,
        }
    }

    /// The lowercase word used on the command line and in listings.
    pub fn label(self) -> &'static str {
        match self {
            PackageKind::Deb => "deb",
            PackageKind::Tar => "tar",
            PackageKind::Dir => "dir",
        }
    }
}

/// What a package archive held besides its files: what installing it needs (for a
/// `.deb`, dpkg's database entries and the maintainer scripts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    /// The control archive's members as a tree (`control`, `md5sums`, `conffiles`,
    /// `preinst`, `postinst`, `triggers`…), each a file with its mode.
    pub tree: TreeId,
    /// The data archive's paths in archive order, one per line, as dpkg lists a
    /// package's files (`/.` first, then `/usr`, `/usr/bin/…`).
    pub files: BlobId,
    /// When the archive was built (unix seconds; its data member's timestamp).
    pub built_at: i64,
}

/// One imported archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// Deb, tar or directory.
    pub kind: PackageKind,
    /// Package name (`Package:` for a deb, `--name` otherwise).
    pub name: String,
    /// Version (`Version:` for a deb, `--version` otherwise).
    pub version: String,
    /// Architecture (`Architecture:` for a deb; empty otherwise).
    pub arch: String,
    /// SHA-256 of the archive as imported.
    pub archive: ArchiveHash,
    /// The unpacked content.
    pub tree: TreeId,
    /// When it was imported, unix seconds.
    pub imported_at: i64,
    /// Maintainer scripts the archive carried (`preinst`, `postinst`…).
    pub scripts: Vec<String>,
    /// The archive's control data, kept since version 2 of the record (`None` for
    /// tarballs, directories and packages imported before).
    pub control: Option<Control>,
}

impl Package {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let version = if self.control.is_some() {
            WITH_CONTROL
        } else {
            PLAIN
        };
        let mut w = Writer::with_header(MAGIC, version);
        w.u8(self.kind.code());
        w.string(&self.name);
        w.string(&self.version);
        w.string(&self.arch);
        w.id(&self.archive.0);
        w.id(&self.tree.0);
        w.i64(self.imported_at);
        w.strings(&self.scripts);
        if let Some(c) = &self.control {
            w.id(&c.tree.0);
            w.id(&c.files.0);
            w.i64(c.built_at);
        }
        w.into_bytes()
    }

    /// The id: SHA-256 of the canonical encoding.
    pub fn id(&self) -> PackageId {
        PackageId::of(&self.encode())
    }

    /// Decodes a canonical encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (mut r, version) =
            Reader::with_header_versions(bytes, MAGIC, &[PLAIN, WITH_CONTROL], "package")?;
        let kind = match r.u8()? {
            1 => PackageKind::Deb,
            2 => PackageKind::Tar,
            3 => PackageKind::Dir,
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
            control: None,
        };
        let p = Package {
            control: match version {
                WITH_CONTROL => Some(Control {
                    tree: TreeId(r.id()?),
                    files: BlobId(r.id()?),
                    built_at: r.i64()?,
                }),
                _ => None,
            },
            ..p
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
                Just(PackageKind::Dir)
            ],
            ".{0,12}",
            ".{0,12}",
            "[a-z0-9]{0,6}",
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<i64>(),
            proptest::collection::vec("[a-z]{1,8}", 0..3),
            proptest::option::of((any::<[u8; 32]>(), any::<[u8; 32]>(), any::<i64>())),
        )
            .prop_map(
                |(kind, name, version, arch, a, t, imported_at, scripts, control)| Package {
                    kind,
                    name,
                    version,
                    arch,
                    archive: ArchiveHash(ObjectId::from_bytes(a)),
                    tree: TreeId(ObjectId::from_bytes(t)),
                    imported_at,
                    scripts,
                    control: control.map(|(c, f, built_at)| Control {
                        tree: TreeId(ObjectId::from_bytes(c)),
                        files: BlobId(ObjectId::from_bytes(f)),
                        built_at,
                    }),
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
