//! Debian binary packages: an `ar` archive of `debian-binary`, `control.tar[.gz|.xz|.zst]`
//! and `data.tar[.gz|.xz|.zst]`.
//!
//! Members are read as `dpkg-deb` reads them (checked against dpkg 1.21): `debian-binary`
//! first, then one control member, then the first data member, which is the package;
//! members named `_…` are skipped anywhere before it, and nothing after it is read. Two
//! control members, a data member before the control member, or any other member
//! before the data member is refused, as dpkg refuses it.

use super::control::{parse_paragraphs, valid_package_name};
use crate::import::builder::{ArchivePath, TreeBuilder};
use crate::import::compress::{Compression, decoder};
use crate::import::limit::{Counted, Limits};
use crate::import::{
    Class, Identity, ImportError, Imported, Prepared, already_imported, hash_file, open, stage,
};
use crate::store::{Store, Txn};
use canopy_protocol::{ArchiveHash, EntryKind, Meta, PackageKind, TreeId};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;

/// Maintainer scripts a package may carry, which configuring a root runs.
pub const SCRIPTS: [&str; 5] = ["preinst", "postinst", "prerm", "postrm", "config"];

/// The entry of a `.deb`'s control tree that is not a control member: the data
/// archive's paths in archive order, one per line, as dpkg lists a package's files in
/// `info/PKG.list` (`/.` first). An archive whose control member has this name is
/// refused as a duplicate.
pub const FILES: &str = "canopy:files";

/// The package record extension of a `.deb`: JSON of [`DebFacts`].
pub const EXTENSION: &str = "deb";

/// What a `.deb`'s record keeps beyond the common fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DebFacts {
    /// When the archive was built (its data member's time, unix seconds): configuring
    /// takes the newest of a root's packages as `SOURCE_DATE_EPOCH`.
    pub built_at: i64,
}

/// Largest control file read (real ones are a few KiB).
const CONTROL_MAX: u64 = 1 << 20;

/// What the control file says about a package.
#[derive(Debug)]
struct Control {
    name: String,
    version: String,
    arch: String,
}

/// Imports a `.deb`. Importing an archive that is already in the store reads only its
/// hash and returns the existing package — unless its record predates kept control
/// data, which importing it again adds (the record is replaced; its tree is the same).
pub fn import(store: &Store, path: &Path, limits: Limits) -> Result<Imported, ImportError> {
    prepare(store, path, None, limits)?.commit()
}

/// As [`import`], staged and not committed (see [`crate::import::batch`]). `hash` is
/// the archive's SHA-256 when the caller has checked it already (a download checked
/// against its index), so the file is not read once more for it.
pub fn prepare<'s>(
    store: &'s Store,
    path: &Path,
    hash: Option<ArchiveHash>,
    limits: Limits,
) -> Result<Prepared<'s>, ImportError> {
    let input = crate::import::input(store, path, limits.max_unpacked)?;
    let path = input.path();
    let archive = match hash {
        Some(hash) => hash,
        None => hash_file(path)?,
    };
    if let Some(done) = already_imported(store, &archive)?
        && done.package.control.is_some()
    {
        return Ok(Prepared::Done(done));
    }
    let mut txn = store.begin()?;
    let mut ar = ar::Archive::new(open(path)?);
    let mut control: Option<ControlArchive> = None;
    let mut data: Option<(TreeBuilder, i64)> = None;
    let mut index = 0;
    while let Some(member) = ar.next_entry() {
        let mut member = member.map_err(|e| ar_error(e, index))?;
        let id = String::from_utf8_lossy(member.header().identifier())
            .trim_end_matches('/')
            .to_string();
        if index == 0 {
            if id != "debian-binary" {
                return Err(not_a_deb(format!(
                    "first member is {id:?}, not debian-binary"
                )));
            }
            let mut version = String::new();
            (&mut member)
                .take(64)
                .read_to_string(&mut version)
                .map_err(|e| ImportError::from_read(e, "debian-binary", false))?;
            if !version.starts_with("2.") {
                return Err(not_a_deb(format!(
                    "format version {:?} is not 2.x",
                    version.trim()
                )));
            }
        } else if id.starts_with('_') {
            // dpkg reserves names starting with '_' for additions it skips.
        } else if let Some(suffix) = id.strip_prefix("control.tar") {
            if control.is_some() {
                return Err(not_a_deb("it holds two control members".into()));
            }
            let compression = member_compression(&id, suffix)?;
            let declared = member.header().size();
            let mut counted = Counted::new(&mut member);
            control = Some(read_control(
                &mut txn,
                decoder(&mut counted, Some(compression), &id)?,
                &id,
            )?);
            complete(&id, &counted, declared)?;
        } else if let Some(suffix) = id.strip_prefix("data.tar") {
            if control.is_none() {
                return Err(not_a_deb(format!("member {id:?} comes before control.tar")));
            }
            let compression = member_compression(&id, suffix)?;
            let declared = member.header().size();
            let built_at = member.header().mtime() as i64;
            let mut counted = Counted::new(&mut member);
            let reader = decoder(&mut counted, Some(compression), &id)?;
            let mut builder = TreeBuilder::new(limits.max_entries);
            builder.record_order();
            let tree = crate::import::tar::read_into(
                &mut txn,
                reader,
                limits,
                crate::import::tar::Dialect::Package,
                &id,
                builder,
            )?;
            data = Some((tree, built_at));
            complete(&id, &counted, declared)?;
            // As dpkg: the first data member is the package; what follows is never read.
            break;
        } else {
            let before = if control.is_none() {
                "control.tar"
            } else {
                "data.tar"
            };
            return Err(not_a_deb(format!(
                "unexpected member {id:?} before {before}"
            )));
        }
        index += 1;
    }
    if index == 0 {
        return Err(not_a_deb("the archive is empty".into()));
    }
    let control = control.ok_or_else(|| not_a_deb("no control.tar member".into()))?;
    let (mut builder, built_at) = data.ok_or_else(|| not_a_deb("no data.tar member".into()))?;
    let entries = builder.entries();
    let order = builder.take_order().unwrap_or_default();
    let tree = builder.write(&mut txn)?;
    let ControlArchive {
        fields,
        scripts,
        members,
    } = control;
    let control_tree = write_control(members, &mut txn, &order)?;
    let facts = serde_json::to_vec(&DebFacts { built_at }).expect("a plain struct serializes");
    let who = Identity {
        kind: PackageKind::Deb,
        name: fields.name,
        version: fields.version,
        arch: fields.arch,
        scripts,
        control: Some(control_tree),
        extensions: BTreeMap::from([(EXTENSION.to_string(), facts)]),
    };
    Ok(Prepared::Staged(stage(
        txn, tree, entries, who, archive, archive,
    )?))
}

/// A member whose content stopped before its declared size was cut short.
fn complete<R>(id: &str, counted: &Counted<R>, declared: u64) -> Result<(), ImportError> {
    match counted.read_bytes() {
        n if n < declared => Err(ImportError::refused(
            Class::Truncated,
            format!("member {id} holds {n} of its {declared} bytes: the archive is cut short"),
        )),
        _ => Ok(()),
    }
}

fn not_a_deb(detail: String) -> ImportError {
    ImportError::refused(Class::NotADeb, format!("not a Debian package: {detail}"))
}

fn ar_error(e: io::Error, index: usize) -> ImportError {
    if index == 0 {
        return not_a_deb(format!("not an ar archive ({e})"));
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            ImportError::refused(Class::Truncated, format!("ar archive ends early ({e})"))
        }
        _ => ImportError::refused(Class::Malformed, format!("ar archive is damaged: {e}")),
    }
}

fn member_compression(id: &str, suffix: &str) -> Result<Compression, ImportError> {
    Compression::from_suffix(suffix).ok_or_else(|| {
        ImportError::refused(
            Class::BadCompression,
            format!("member {id} uses a compression canopy does not read"),
        )
    })
}

/// Most a control.tar may unpack to (big packages carry multi-megabyte md5sums).
const CONTROL_TAR_MAX: u64 = 64 << 20;

/// What control.tar held: the fields canopy reads, the maintainer scripts present, and
/// every member, stored (with the same checks as any archive) in a builder.
struct ControlArchive {
    fields: Control,
    scripts: Vec<String>,
    members: TreeBuilder,
}

/// Writes the control tree: the members and [`FILES`].
fn write_control(
    mut members: TreeBuilder,
    txn: &mut Txn<'_>,
    order: &[u8],
) -> Result<TreeId, ImportError> {
    let (blob, size) = txn
        .put_blob(order)
        .map_err(|e| ImportError::from_blob(e, "the file list"))?;
    let path = ArchivePath::parse(FILES.as_bytes())?;
    members.add_leaf(
        &path,
        Meta {
            mode: 0o644,
            ..Meta::default()
        },
        EntryKind::File { size, blob },
    )?;
    members.write(txn)
}

/// Stores control.tar's members, then reads the control file from them and notes the
/// maintainer scripts.
fn read_control(
    txn: &mut Txn<'_>,
    reader: impl Read,
    what: &str,
) -> Result<ControlArchive, ImportError> {
    let limits = Limits {
        max_unpacked: CONTROL_TAR_MAX,
        ..Limits::default()
    };
    let members = crate::import::tar::read(
        txn,
        reader,
        limits,
        crate::import::tar::Dialect::Package,
        what,
    )?;
    let member = |name: &str| {
        ArchivePath::parse(name.as_bytes())
            .ok()
            .and_then(|p| members.file(&p))
    };
    let Some((_, EntryKind::File { size, blob })) = member("control") else {
        return Err(ImportError::refused(
            Class::BadControl,
            format!("{what} has no control file"),
        ));
    };
    if size > CONTROL_MAX {
        return Err(ImportError::refused(
            Class::TooLarge,
            format!("{what}: the control file is {size} bytes, more than {CONTROL_MAX}"),
        ));
    }
    let fields = parse_control(&txn.blob(&blob)?)?;
    let mut scripts: Vec<String> = SCRIPTS
        .iter()
        .filter(|s| member(s).is_some())
        .map(|s| s.to_string())
        .collect();
    scripts.sort();
    Ok(ControlArchive {
        fields,
        scripts,
        members,
    })
}

fn bad_control(detail: impl Into<String>) -> ImportError {
    ImportError::refused(
        Class::BadControl,
        format!("control file: {}", detail.into()),
    )
}

/// The fields canopy needs from the control file: one deb822 paragraph, read by the
/// same parser as repository indexes.
fn parse_control(text: &[u8]) -> Result<Control, ImportError> {
    let text = std::str::from_utf8(text).map_err(|_| bad_control("not UTF-8"))?;
    let paragraphs = parse_paragraphs(text).map_err(|e| bad_control(e.to_string()))?;
    let paragraph = match paragraphs.as_slice() {
        [one] => one,
        [] => return Err(bad_control("it is empty")),
        _ => return Err(bad_control("it holds more than one paragraph")),
    };
    let field = |name: &str| paragraph.get(name).filter(|v| !v.is_empty());
    let name = field("Package").ok_or_else(|| bad_control("no Package field"))?;
    if !valid_package_name(name) {
        return Err(bad_control(format!("package name {name:?} is not valid")));
    }
    let version = field("Version").ok_or_else(|| bad_control("no Version field"))?;
    if version.contains(char::is_whitespace) || version.parse::<debversion::Version>().is_err() {
        return Err(bad_control(format!(
            "version {version:?} is not a valid Debian version"
        )));
    }
    let arch = field("Architecture").unwrap_or_default();
    if !arch.is_empty() && !crate::debian::control::valid_arch_name(arch) {
        return Err(bad_control(format!(
            "architecture {arch:?} is not valid (one word of a-z, 0-9 and -, as dpkg wants)"
        )));
    }
    Ok(Control {
        name: name.to_string(),
        version: version.to_string(),
        arch: arch.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_control_fields() {
        let c = parse_control(
            b"Package: bash\nVersion: 5.2.15-2+b7\nArchitecture: amd64\nDescription: x\n more\n",
        )
        .unwrap();
        assert_eq!(
            (c.name.as_str(), c.version.as_str(), c.arch.as_str()),
            ("bash", "5.2.15-2+b7", "amd64")
        );
        assert_eq!(
            parse_control(b"Version: 1\n").unwrap_err().class(),
            Some(Class::BadControl)
        );
        assert_eq!(
            parse_control(b"Package: Bad_Name\nVersion: 1\n")
                .unwrap_err()
                .class(),
            Some(Class::BadControl)
        );
        // One paragraph, as dpkg-deb reads it.
        assert_eq!(
            parse_control(b"Package: a1\nVersion: 1\n\nPackage: b1\nVersion: 1\n")
                .unwrap_err()
                .class(),
            Some(Class::BadControl)
        );
    }
}
