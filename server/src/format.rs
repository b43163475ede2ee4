//! Package formats as peers.
//!
//! Debian ([`crate::debian`]) and RPM ([`crate::rpm`]) each live in a folder of their
//! own and implement [`Format`]: read the indexes of repositories, resolve a request
//! against them, import an archive, order versions, configure a root. The code that
//! serves every format — `repo::provide` (assemble `--from`, upgrade), `packages`,
//! `repo`, `assemble`, `configure`, the commands — reaches one only through this
//! interface, so a new format is a new folder and one line in [`FORMATS`]. Fetching an
//! archive is the same for all (`repo::fetch`): an index says where it is, its size and
//! its SHA-256.
//!
//! One root is one ecosystem: a set of packages has at most one format
//! ([`of_packages`]); tarballs and directories have none and go with any.

use crate::configure::Configurer;
use crate::import::{ImportError, Imported, Limits, Prepared};
use crate::packages::PackageSpec;
use crate::repo::fetch::Fetcher;
use crate::repo::signature::Keyring;
use crate::repo::{Archive, RepoConfig, RepoError, RepoKind};
use crate::store::Store;
use canopy_protocol::{ArchiveHash, Package, PackageId, PackageKind};
use std::cmp::Ordering;
use std::path::Path;

/// A package format: what canopy needs to know of an ecosystem.
pub trait Format: Sync {
    /// The kind of package records its archives become.
    fn kind(&self) -> PackageKind;
    /// The kind of repository metadata it reads.
    fn repo_kind(&self) -> RepoKind;
    /// The architecture a repository is read for when none is given (`amd64`).
    fn default_arch(&self) -> &'static str;
    /// Refuses repository options that mean nothing for this format, saying why.
    fn check_repo(&self, config: &RepoConfig) -> Result<(), String>;
    /// Where in a repository its packages are, for `repo list` (`bookworm main`).
    fn describe_repo(&self, config: &RepoConfig) -> String;
    /// Reads the indexes of `repos` (all of this format and one architecture), each
    /// checked against its signed metadata and cached; `step` hears of each one.
    fn read_index(
        &self,
        store: &Store,
        repos: &[(String, RepoConfig)],
        fetcher: &Fetcher,
        step: &dyn Fn(&str),
    ) -> Result<Box<dyn Index>, RepoError>;
    /// Whether a file starting with `magic` (its first 8 bytes, fewer if it is
    /// shorter) is one of its archives: `!<arch>\n` for a .deb, the lead's `edabeedb`
    /// for an RPM.
    fn is_archive(&self, magic: &[u8]) -> bool;
    /// Reads one archive into the store, staged and not committed (see
    /// [`crate::import::batch`]). With a keyring, the archive's own signature must
    /// verify with it (a format whose archives carry none ignores it). `hash` is the
    /// archive's SHA-256 when the caller has checked it already.
    fn prepare<'s>(
        &self,
        store: &'s Store,
        path: &Path,
        hash: Option<ArchiveHash>,
        limits: Limits,
        keyring: Option<&Keyring>,
    ) -> Result<Prepared<'s>, ImportError>;
    /// Imports one archive and commits it (see [`Format::prepare`]).
    fn import(
        &self,
        store: &Store,
        path: &Path,
        limits: Limits,
        keyring: Option<&Keyring>,
    ) -> Result<Imported, ImportError> {
        self.prepare(store, path, None, limits, keyring)?.commit()
    }
    /// Orders two versions of its packages as its package manager does.
    fn compare_versions(&self, a: &str, b: &str) -> Ordering;
    /// How a root of its packages is configured (their scripts run), if canopy can.
    fn configurer(&self) -> Option<&dyn Configurer>;
}

/// What repositories offer, as their format read it.
pub trait Index {
    /// How many packages it offers (for the target architecture).
    fn packages(&self) -> usize;
    /// The packages a request needs: the request's, what they depend on, the highest
    /// versions that hold together.
    fn resolve(&self, request: &Request) -> Result<Resolution, ResolveError>;
    /// Every archive offered, with the URL, size and SHA-256 the metadata gives.
    fn archives(&self) -> Vec<Archive>;
}

/// What to resolve.
#[derive(Clone, Debug)]
pub struct Request {
    /// The packages asked for: `NAME[:ARCH][=VERSION]`.
    pub packages: Vec<PackageSpec>,
    /// Add the packages the format deems essential to any root (Debian's
    /// `Essential: yes`); a format without such packages refuses it.
    pub essential: bool,
    /// Follow weak dependencies (Recommends) where they fit.
    pub recommends: bool,
}

/// A resolved request.
#[derive(Clone, Debug)]
pub struct Resolution {
    /// One package per name, sorted by name.
    pub chosen: Vec<Offer>,
    /// What the user should know (conflicts no choice avoids, Recommends left out),
    /// one readable line each.
    pub problems: Vec<String>,
}

/// One package a repository offers.
#[derive(Clone, Debug)]
pub struct Offer {
    /// Package name.
    pub name: String,
    /// Its version, as the format writes it.
    pub version: String,
    /// Its architecture.
    pub arch: String,
    /// Where its archive is, its size and SHA-256.
    pub archive: Archive,
}

/// What a format's index holds: its own candidates, each with its archive, read from
/// several repositories of one architecture.
pub struct Listing<C> {
    /// The target architecture.
    pub arch: String,
    /// The candidates, in repository order.
    pub candidates: Vec<C>,
    /// Each candidate's archive.
    pub archives: Vec<Archive>,
}

impl<C> Listing<C> {
    /// Reads every repository with `load`, telling `step` of each.
    pub fn read(
        repos: &[(String, RepoConfig)],
        step: &dyn Fn(&str),
        load: impl Fn(&str, &RepoConfig) -> Result<Vec<(C, Archive)>, RepoError>,
    ) -> Result<Listing<C>, RepoError> {
        let mut listing = Listing {
            arch: repos
                .first()
                .map(|(_, c)| c.arch.clone())
                .unwrap_or_default(),
            candidates: Vec::new(),
            archives: Vec::new(),
        };
        for (name, config) in repos {
            step(&format!("reading repository {name}"));
            for (candidate, archive) in load(name, config)? {
                listing.candidates.push(candidate);
                listing.archives.push(archive);
            }
        }
        Ok(listing)
    }

    /// The offers of chosen candidates; `who` gives a candidate's name, version and
    /// architecture.
    pub fn offers(&self, chosen: &[usize], who: impl Fn(&C) -> [String; 3]) -> Vec<Offer> {
        chosen
            .iter()
            .map(|&i| {
                let [name, version, arch] = who(&self.candidates[i]);
                Offer {
                    name,
                    version,
                    arch,
                    archive: self.archives[i].clone(),
                }
            })
            .collect()
    }
}

/// Why a request cannot be resolved, in the format's own words (which name the
/// packages and the chain of dependencies at fault).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ResolveError(Box<dyn std::error::Error + Send + Sync>);

impl ResolveError {
    /// A format's resolution error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> ResolveError {
        ResolveError(Box::new(error))
    }

    /// A request the format cannot take at all, said in a sentence.
    pub fn refused(message: String) -> ResolveError {
        ResolveError(message.into())
    }
}

/// Every format canopy knows.
pub static FORMATS: [&dyn Format; 2] = [&crate::debian::Debian, &crate::rpm::Rpm];

/// The format of a kind of package record; tarballs, directories and image layers
/// have none.
pub fn of_kind(kind: PackageKind) -> Option<&'static dyn Format> {
    FORMATS.iter().copied().find(|f| f.kind() == kind)
}

/// The format whose archive `file` is, told by its first bytes; `None` when it is no
/// format's.
pub fn of_archive(file: &Path) -> std::io::Result<Option<&'static dyn Format>> {
    let mut magic = Vec::with_capacity(8);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open(file)?, 8),
        &mut magic,
    )?;
    Ok(FORMATS.iter().copied().find(|f| f.is_archive(&magic)))
}

/// The format that reads a kind of repository.
pub fn of_repo(kind: RepoKind) -> &'static dyn Format {
    FORMATS
        .iter()
        .copied()
        .find(|f| f.repo_kind() == kind)
        .expect("every repository kind has its format")
}

/// The format of a set of packages: `None` when none has one (tarballs, directories),
/// an error naming two packages when they are of two formats (one root is one
/// ecosystem).
pub fn of_packages(
    packages: &[(PackageId, Package)],
) -> Result<Option<&'static dyn Format>, String> {
    let mut found: Option<(&Package, &'static dyn Format)> = None;
    for (_, p) in packages {
        let Some(format) = of_kind(p.kind) else {
            continue;
        };
        match found {
            None => found = Some((p, format)),
            Some((first, f)) if f.kind() != format.kind() => {
                return Err(format!(
                    "{} {} is a {} package and {} {} a {} package: one root is one ecosystem (assemble them as two roots)",
                    first.name,
                    first.version,
                    first.kind.label(),
                    p.name,
                    p.version,
                    p.kind.label()
                ));
            }
            Some(_) => {}
        }
    }
    Ok(found.map(|(_, f)| f))
}

/// Orders two versions of packages: as their format does when both are of one
/// format, else as free-form versions ([`crate::packages::compare_versions`]).
pub fn compare_versions(a: &Package, b: &Package) -> Ordering {
    match of_kind(a.kind) {
        Some(format) if a.kind == b.kind => format.compare_versions(&a.version, &b.version),
        _ => crate::packages::compare_versions(&a.version, &b.version),
    }
}
