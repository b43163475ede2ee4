//! RPM as a [`Format`]: rpm-md repositories, the RPM resolver, `.rpm` archives, rpm's
//! EVR order.

use super::repomd::Candidate;
use super::resolve;
use super::{evr, import, repomd};
use crate::configure::Configurer;
use crate::format::{Format, Index, Listing, Request, Resolution, ResolveError};
use crate::import::{ImportError, Limits, Prepared};
use crate::repo::fetch::Fetcher;
use crate::repo::signature::Keyring;
use crate::repo::{Archive, RepoConfig, RepoError, RepoKind};
use crate::store::Store;
use canopy_protocol::{ArchiveHash, PackageKind};
use std::cmp::Ordering;
use std::path::Path;

/// RPM packages and rpm-md repositories.
pub struct Rpm;

impl Format for Rpm {
    fn kind(&self) -> PackageKind {
        PackageKind::Rpm
    }

    fn repo_kind(&self) -> RepoKind {
        RepoKind::RpmMd
    }

    fn default_arch(&self) -> &'static str {
        "x86_64"
    }

    fn check_repo(&self, config: &RepoConfig) -> Result<(), String> {
        if !config.suites.is_empty() || !config.components.is_empty() {
            return Err("--suite is for Debian repositories: an rpm-md URL is the directory holding repodata/".into());
        }
        Ok(())
    }

    fn describe_repo(&self, _config: &RepoConfig) -> String {
        "(rpm-md)".into()
    }

    fn read_index(
        &self,
        store: &Store,
        repos: &[(String, RepoConfig)],
        fetcher: &Fetcher,
        step: &dyn Fn(&str),
    ) -> Result<Box<dyn Index>, RepoError> {
        let listing = Listing::read(repos, step, |name, config| {
            repomd::load(store, name, config, fetcher)
        })?;
        Ok(Box::new(Primary(listing)))
    }

    fn is_archive(&self, magic: &[u8]) -> bool {
        magic.starts_with(&[0xed, 0xab, 0xee, 0xdb])
    }

    fn prepare<'s>(
        &self,
        store: &'s Store,
        path: &Path,
        hash: Option<ArchiveHash>,
        limits: Limits,
        keyring: Option<&Keyring>,
    ) -> Result<Prepared<'s>, ImportError> {
        import::prepare(store, path, hash, limits, keyring)
    }

    fn compare_versions(&self, a: &str, b: &str) -> Ordering {
        evr::compare(a, b)
    }

    fn configurer(&self) -> Option<&dyn Configurer> {
        Some(&super::configure::Scriptlets)
    }
}

/// The packages of rpm-md repositories for one architecture (and `noarch`), each with
/// its archive.
struct Primary(Listing<Candidate>);

impl Index for Primary {
    fn packages(&self) -> usize {
        self.0.candidates.len()
    }

    fn resolve(&self, request: &Request) -> Result<Resolution, ResolveError> {
        if request.essential {
            return Err(ResolveError::refused(
                "--essential is for Debian repositories: RPM has no Essential packages (ask for them by name)".into(),
            ));
        }
        let resolution = resolve::resolve(
            &self.0.candidates,
            &resolve::Request {
                packages: request.packages.clone(),
                arch: self.0.arch.clone(),
                recommends: request.recommends,
            },
        )
        .map_err(ResolveError::new)?;
        let chosen = self.0.offers(&resolution.chosen, |c| {
            [c.name.clone(), c.evr.to_string(), c.arch.clone()]
        });
        Ok(Resolution {
            chosen,
            problems: resolution.problems,
        })
    }

    fn archives(&self) -> Vec<Archive> {
        self.0.archives.clone()
    }
}
