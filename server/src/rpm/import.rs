//! Importing an `.rpm` into a package tree.
//!
//! The header is the authority on every file (type, mode, owner, link target, device,
//! capabilities, flags), as it is for rpm itself; the cpio payload supplies contents and
//! must agree with the header on which files exist and how long each is. Contents stream
//! from the decompressor into the store. Hard links are one inode with several names:
//! rpm writes the content once, with the group's last name, so the names before it are
//! added when it arrives. `%ghost` files are recorded, not materialised. Owners are
//! recorded by name and resolved when a root is assembled (see [`super::facts`]): the
//! package tree holds root (0) for them until then.

mod payload;

use super::caps;
use super::facts::{self, Facts, Owner};
use super::header;
use crate::import::builder::{ArchivePath, TreeBuilder};
use crate::import::compress::Compression;
use crate::import::limit::{Hashing, Limits};
use crate::import::{
    Class, Identity, ImportError, Imported, Prepared, already_imported, hash_file, open, prefix,
    stage,
};
use crate::repo::signature::Keyring;
use crate::store::{BlobError, Store, Txn};
use canopy_protocol::{ArchiveHash, EntryKind, Meta, PackageKind, TreeId};
use payload::read_payload;
use rpm::{FileFlags, IndexTag, PackageMetadata};
use std::collections::{BTreeMap, HashMap};
use std::io::BufReader;
use std::path::Path;

/// File type bits of a mode, as RPM headers (and `stat`) give them.
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const S_IFLNK: u16 = 0o120000;
const S_IFREG: u16 = 0o100000;
const S_IFBLK: u16 = 0o060000;
const S_IFDIR: u16 = 0o040000;
const S_IFCHR: u16 = 0o020000;
const S_IFIFO: u16 = 0o010000;

/// Scriptlets a header may carry, by the name canopy records them under.
const SCRIPTLETS: [(IndexTag, &str); 7] = [
    (IndexTag::RPMTAG_PRETRANS, "pretrans"),
    (IndexTag::RPMTAG_PREIN, "pre"),
    (IndexTag::RPMTAG_POSTIN, "post"),
    (IndexTag::RPMTAG_PREUN, "preun"),
    (IndexTag::RPMTAG_POSTUN, "postun"),
    (IndexTag::RPMTAG_POSTTRANS, "posttrans"),
    (IndexTag::RPMTAG_VERIFYSCRIPT, "verify"),
];

/// One file the header lists.
struct File {
    path: ArchivePath,
    /// The path as `/usr/bin/x`, for messages and facts.
    shown: String,
    /// File type and permission bits.
    mode: u16,
    size: u64,
    flags: FileFlags,
    link: String,
    rdev: u16,
    user: String,
    group_name: String,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The hard-link group, if the file shares its inode with others.
    group: Option<usize>,
    /// Whether the payload carries this file's content (for a hard-link group, only
    /// the last name does).
    carrier: bool,
    /// The content's SHA-256 as the header gives it (`FILEDIGESTS` with the SHA-256
    /// algorithm, what rpmbuild writes): the payload's bytes must have it, as `rpm -i`
    /// wants. Other algorithms (MD5 of old packages) are not checked.
    sha256: Option<String>,
}

impl File {
    fn ghost(&self) -> bool {
        self.flags.contains(FileFlags::GHOST)
    }

    fn meta(&self) -> Meta {
        Meta {
            mode: self.mode & 0o7777,
            uid: 0,
            gid: 0,
            xattrs: self.xattrs.clone(),
        }
    }

    /// How many content bytes the payload holds for this file.
    fn payload_size(&self) -> u64 {
        match self.mode & S_IFMT {
            S_IFREG if self.carrier => self.size,
            S_IFLNK => self.link.len() as u64,
            _ => 0,
        }
    }
}

/// Imports an `.rpm`. With a keyring, the header's OpenPGP signature must verify with
/// one of its keys. The header's SHA-256 and the payload's are checked whenever the
/// package carries them. Importing an archive that is already in the store reads only
/// its hash (and headers, to check the signature).
pub fn import(
    store: &Store,
    path: &Path,
    limits: Limits,
    keyring: Option<&Keyring>,
) -> Result<Imported, ImportError> {
    prepare(store, path, None, limits, keyring)?.commit()
}

/// As [`import`], staged and not committed (see [`crate::import::batch`]). `hash` is
/// the archive's SHA-256 when the caller has checked it already (a download checked
/// against its index), so the file is not read once more for it.
pub fn prepare<'s>(
    store: &'s Store,
    path: &Path,
    hash: Option<ArchiveHash>,
    limits: Limits,
    keyring: Option<&Keyring>,
) -> Result<Prepared<'s>, ImportError> {
    let what = path.display().to_string();
    let input = crate::import::input(store, path, limits.max_unpacked)?;
    let path = input.path();
    let archive = match hash {
        Some(hash) => hash,
        None => hash_file(path)?,
    };
    let file = open(path)?;
    let file_len = file
        .metadata()
        .map_err(|source| ImportError::Io {
            what: format!("reading {what}"),
            source,
        })?
        .len();
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let headers = header::read(&mut reader, file_len, &what)?;
    headers.check_header_digest(&what)?;
    if let Some(keyring) = keyring {
        headers.verify_signature(keyring, &what)?;
    }
    if let Some(done) = already_imported(store, &archive)? {
        return Ok(Prepared::Done(done));
    }
    let header_start = headers.payload_offset - headers.main.len() as u64;
    if let Some(declared) = headers.declared_size() {
        let actual = file_len - header_start;
        if actual > declared {
            return Err(ImportError::refused(
                Class::TooLarge,
                format!(
                    "{what}: holds {actual} bytes of header and payload, more than the {declared} its signature header declares"
                ),
            ));
        }
        if actual < declared {
            return Err(ImportError::refused(
                Class::Truncated,
                format!(
                    "{what}: holds {actual} of the {declared} bytes of header and payload its signature header declares"
                ),
            ));
        }
    }
    let meta = &headers.meta;
    let who = identity(meta, &what)?;
    let files = files(meta, &what)?;
    let mut txn = store.begin()?;
    let compression = compression(meta, &what)?;
    // The payload digest covers the compressed bytes, everything after the header.
    let mut hashing = Hashing::new(reader);
    let builder = read_payload(
        &mut txn,
        &mut hashing,
        compression,
        &files,
        &headers,
        limits,
        &what,
    )?;
    let (digest, _) = hashing.finish().map_err(|source| ImportError::Io {
        what: format!("reading {what}"),
        source,
    })?;
    if let Some(want) = headers.payload_sha256() {
        let got = digest.to_string();
        if got != want {
            return Err(ImportError::refused(
                Class::BadDigest,
                format!("{what}: the payload's SHA-256 is {got}, the header says {want}"),
            ));
        }
    }
    let entries = builder.entries();
    let tree = builder.write(&mut txn)?;
    let control = control_tree(&mut txn, &headers.main)?;
    let facts = facts(meta, &files, who.facts);
    let mut extensions = BTreeMap::new();
    extensions.insert(facts::KEY.to_string(), facts.encode());
    let identity = Identity {
        kind: PackageKind::Rpm,
        name: who.name,
        version: who.version,
        arch: who.arch,
        scripts: who.scripts,
        control: Some(control),
        extensions,
    };
    Ok(Prepared::Staged(stage(
        txn, tree, entries, identity, archive, archive,
    )?))
}

/// What the header says the package is.
struct Who {
    name: String,
    version: String,
    arch: String,
    scripts: Vec<String>,
    facts: Facts,
}

fn bad_header(what: &str, detail: impl std::fmt::Display) -> ImportError {
    ImportError::refused(Class::BadControl, format!("{what}: header: {detail}"))
}

/// A header string field that must be present and be one word.
fn word<'m>(
    meta: &'m PackageMetadata,
    tag: IndexTag,
    label: &str,
    what: &str,
) -> Result<&'m str, ImportError> {
    let value = meta
        .header
        .get_entry_data_as_string(tag)
        .map_err(|e| bad_header(what, format!("no usable {label} ({e})")))?;
    let ok = !value.is_empty()
        && value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"/\\'\"".contains(&b));
    if !ok {
        return Err(bad_header(what, format!("{label} {value:?} is not valid")));
    }
    Ok(value)
}

fn identity(meta: &PackageMetadata, what: &str) -> Result<Who, ImportError> {
    let name = word(meta, IndexTag::RPMTAG_NAME, "name", what)?;
    let version = word(meta, IndexTag::RPMTAG_VERSION, "version", what)?;
    let release = word(meta, IndexTag::RPMTAG_RELEASE, "release", what)?;
    if version.contains('-') || release.contains('-') {
        return Err(bad_header(
            what,
            format!("version {version:?} and release {release:?} may not contain '-'"),
        ));
    }
    let arch = word(meta, IndexTag::RPMTAG_ARCH, "architecture", what)?;
    let epoch = match meta.header.get_entry_data_as_u32(IndexTag::RPMTAG_EPOCH) {
        Ok(e) => Some(e),
        Err(rpm::Error::TagNotFound(_)) => None,
        Err(e) => return Err(bad_header(what, format!("epoch: {e}"))),
    };
    let scripts = SCRIPTLETS
        .iter()
        .filter(|(tag, _)| meta.header.entry_is_present(*tag))
        .map(|(_, name)| name.to_string())
        .collect();
    Ok(Who {
        name: name.to_string(),
        version: match epoch {
            Some(e) => format!("{e}:{version}-{release}"),
            None => format!("{version}-{release}"),
        },
        arch: arch.to_string(),
        scripts,
        facts: Facts {
            epoch,
            version: version.to_string(),
            release: release.to_string(),
            ..Facts::default()
        },
    })
}

/// The payload's compression, as the header declares it (gzip when it does not).
fn compression(meta: &PackageMetadata, what: &str) -> Result<Compression, ImportError> {
    let header = &meta.header;
    if let Ok(format) = header.get_entry_data_as_string(IndexTag::RPMTAG_PAYLOADFORMAT)
        && format != "cpio"
    {
        return Err(ImportError::refused(
            Class::NotAnRpm,
            format!("{what}: the payload is {format:?}, not a cpio archive"),
        ));
    }
    match header.get_entry_data_as_string(IndexTag::RPMTAG_PAYLOADCOMPRESSOR) {
        Err(_) | Ok("gzip") => Ok(Compression::Gzip),
        Ok("xz") => Ok(Compression::Xz),
        Ok("zstd") => Ok(Compression::Zstd),
        Ok("bzip2") => Ok(Compression::Bzip2),
        Ok(other) => Err(ImportError::refused(
            Class::BadCompression,
            format!("{what}: the payload is {other}-compressed, which canopy does not read"),
        )),
    }
}

/// The files the header lists, with hard-link groups worked out.
fn files(meta: &PackageMetadata, what: &str) -> Result<Vec<File>, ImportError> {
    let entries = meta
        .get_file_entries()
        .map_err(|e| ImportError::refused(Class::Malformed, format!("{what}: file list: {e}")))?;
    let inodes = meta
        .header
        .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEINODES)
        .unwrap_or_default();
    let devices = meta
        .header
        .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEDEVICES)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(entries.len());
    for e in &entries {
        let raw = format!("{}{}", e.dirname(), e.basename());
        let Some(relative) = raw.strip_prefix('/') else {
            return Err(ImportError::refused(
                Class::Malformed,
                format!("{what}: file {raw:?} is not an absolute path"),
            ));
        };
        let path = ArchivePath::parse(relative.as_bytes()).map_err(|e| prefix(e, what))?;
        let shown = path.display();
        let mut xattrs = Vec::new();
        if let Some(text) = e.caps().filter(|c| !c.is_empty()) {
            let value = caps::to_xattr(text).map_err(|reason| {
                ImportError::refused(
                    Class::Malformed,
                    format!("{what}: file {shown}: capabilities {text:?}: {reason}"),
                )
            })?;
            if let Some(value) = value {
                xattrs.push((b"security.capability".to_vec(), value));
            }
        }
        out.push(File {
            path,
            shown,
            mode: e.mode().raw_mode(),
            size: e.size() as u64,
            flags: e.flags(),
            link: e.linkto().unwrap_or_default().to_string(),
            rdev: e.rdev(),
            user: e.user().to_string(),
            group_name: e.group().to_string(),
            xattrs,
            group: None,
            carrier: true,
            sha256: e
                .digest()
                .filter(|d| d.algorithm() == rpm::DigestAlgorithm::Sha2_256)
                .map(|d| d.as_hex().to_ascii_lowercase()),
        });
    }
    // Regular files sharing (device, inode) are one inode; the last carries the content.
    let mut groups: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for (i, f) in out.iter().enumerate() {
        if f.mode & S_IFMT == S_IFREG
            && !f.ghost()
            && let (Some(&ino), Some(&dev)) = (inodes.get(i), devices.get(i))
        {
            groups.entry((dev, ino)).or_default().push(i);
        }
    }
    for (g, members) in groups.into_values().filter(|m| m.len() > 1).enumerate() {
        let last = *members.last().expect("groups are not empty");
        for i in members {
            out[i].group = Some(g);
            out[i].carrier = i == last;
        }
    }
    Ok(out)
}

/// The control tree: the main header, as the package database stores it.
fn control_tree(txn: &mut Txn<'_>, main: &[u8]) -> Result<TreeId, ImportError> {
    let (blob, size) = txn.put_blob(main).map_err(|e| match e {
        BlobError::Source(e) => ImportError::Io {
            what: "storing the header".into(),
            source: e,
        },
        BlobError::Store(e) => e.into(),
    })?;
    let mut builder = TreeBuilder::new(1);
    builder.add_leaf(
        &ArchivePath::parse(super::transaction::HEADER.as_bytes())?,
        Meta {
            mode: 0o644,
            ..Meta::default()
        },
        EntryKind::File { size, blob },
    )?;
    builder.write(txn)
}

/// The facts kept beside the tree: owners by name, %config and %ghost paths, and the
/// dependencies.
fn facts(meta: &PackageMetadata, files: &[File], mut facts: Facts) -> Facts {
    for f in files {
        if f.user != "root" || f.group_name != "root" {
            facts.owners.push(Owner {
                path: f.shown.clone(),
                user: f.user.clone(),
                group: f.group_name.clone(),
            });
        }
        if f.flags.contains(FileFlags::CONFIG) {
            facts.config.push(f.shown.clone());
        }
        if f.ghost() {
            facts.ghosts.push(f.shown.clone());
        }
    }
    let list = |deps: Result<Vec<rpm::Dependency>, rpm::Error>| -> Vec<String> {
        deps.unwrap_or_default()
            .iter()
            .filter(|d| !facts::is_rpm_internal(d))
            .map(facts::relation)
            .collect()
    };
    facts.requires = list(meta.get_requires());
    facts.provides = list(meta.get_provides());
    facts.conflicts = list(meta.get_conflicts());
    facts.obsoletes = list(meta.get_obsoletes());
    facts.recommends = list(meta.get_recommends());
    facts
}
