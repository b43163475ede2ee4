//! Debian as a [`Format`]: Release and Packages indexes, the Debian resolver, `.deb`
//! archives, dpkg's version order, configuring with dpkg.

use super::resolve::{self, Candidate};
use super::{configure, deb, release};
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

/// Debian packages and repositories.
pub struct Debian;

impl Format for Debian {
    fn kind(&self) -> PackageKind {
        PackageKind::Deb
    }

    fn repo_kind(&self) -> RepoKind {
        RepoKind::Deb
    }

    fn default_arch(&self) -> &'static str {
        "amd64"
    }

    fn check_repo(&self, config: &RepoConfig) -> Result<(), String> {
        if config.verify_package_signatures {
            return Err("--verify-package-signatures is for rpm-md repositories (Debian packages are checked by the signed Release's hashes)".into());
        }
        Ok(())
    }

    fn describe_repo(&self, config: &RepoConfig) -> String {
        if config.suites.is_empty() {
            "(flat)".into()
        } else {
            format!(
                "{} {}",
                config.suites.join(","),
                config.components.join(",")
            )
        }
    }

    fn read_index(
        &self,
        store: &Store,
        repos: &[(String, RepoConfig)],
        fetcher: &Fetcher,
        step: &dyn Fn(&str),
    ) -> Result<Box<dyn Index>, RepoError> {
        let listing = Listing::read(repos, step, |name, config| {
            release::load(store, name, config, fetcher)
        })?;
        Ok(Box::new(Packages(listing)))
    }

    fn is_archive(&self, magic: &[u8]) -> bool {
        magic.starts_with(b"!<arch>\n")
    }

    fn prepare<'s>(
        &self,
        store: &'s Store,
        path: &Path,
        hash: Option<ArchiveHash>,
        limits: Limits,
        _keyring: Option<&Keyring>,
    ) -> Result<Prepared<'s>, ImportError> {
        deb::prepare(store, path, hash, limits)
    }

    fn compare_versions(&self, a: &str, b: &str) -> Ordering {
        crate::packages::compare_versions(a, b)
    }

    fn configurer(&self) -> Option<&dyn Configurer> {
        Some(&configure::Dpkg)
    }
}

/// The packages of Debian repositories for one architecture, each with its archive.
struct Packages(Listing<Candidate>);

impl Index for Packages {
    fn packages(&self) -> usize {
        self.0.candidates.len()
    }

    fn resolve(&self, request: &Request) -> Result<Resolution, ResolveError> {
        let resolution = resolve::resolve(
            &self.0.candidates,
            &resolve::Request {
                packages: request.packages.clone(),
                arch: self.0.arch.clone(),
                essential: request.essential,
                recommends: request.recommends,
            },
        )
        .map_err(ResolveError::new)?;
        let chosen = self.0.offers(&resolution.chosen, |c| {
            [c.name.clone(), c.version.to_string(), c.arch.clone()]
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
