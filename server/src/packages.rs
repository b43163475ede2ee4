//! The packages in a store and how a spec like `bash`, `libc6=2.36-9` or `zlib1g:amd64`
//! picks one of them.

use crate::store::{Store, StoreError};
use canopy_protocol::{Package, PackageId, PackageKind};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A request for a package: `NAME[:ARCH][=VERSION]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageSpec {
    /// Package name.
    pub name: String,
    /// Architecture, when pinned.
    pub arch: Option<String>,
    /// Exact version, when pinned.
    pub version: Option<String>,
}

/// Why a spec is malformed or matches nothing.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The spec does not parse.
    #[error("invalid package spec {0:?}: use NAME, NAME=VERSION, NAME:ARCH or NAME:ARCH=VERSION")]
    BadSpec(String),
    /// Nothing matches.
    #[error("no imported package matches {spec}{hint}")]
    NotFound {
        /// The spec.
        spec: String,
        /// What exists under that name, or how to import it.
        hint: String,
    },
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FromStr for PackageSpec {
    type Err = LookupError;

    fn from_str(s: &str) -> Result<Self, LookupError> {
        let bad = || LookupError::BadSpec(s.to_string());
        let (rest, version) = match s.split_once('=') {
            Some((r, v)) if !v.is_empty() => (r, Some(v.to_string())),
            Some(_) => return Err(bad()),
            None => (s, None),
        };
        let (name, arch) = match rest.split_once(':') {
            Some((n, a)) if !a.is_empty() => (n, Some(a.to_string())),
            Some(_) => return Err(bad()),
            None => (rest, None),
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(PackageSpec {
            name: name.to_string(),
            arch,
            version,
        })
    }
}

impl fmt::Display for PackageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(a) = &self.arch {
            write!(f, ":{a}")?;
        }
        if let Some(v) = &self.version {
            write!(f, "={v}")?;
        }
        Ok(())
    }
}

/// Orders free-form versions (`--version` of tar and directory imports; Debian's own):
/// as dpkg does where both parse as Debian versions, else in byte order.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (
        a.parse::<debversion::Version>(),
        b.parse::<debversion::Version>(),
    ) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Every package record in a store.
pub struct PackageIndex {
    packages: Vec<(PackageId, Package)>,
}

impl PackageIndex {
    /// Reads every package record, sorted by name, then version.
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        let mut packages = Vec::new();
        for (_, id) in store.package_refs()? {
            packages.push((id, store.package(&id)?));
        }
        packages.sort_by(|a, b| {
            a.1.name
                .cmp(&b.1.name)
                .then_with(|| crate::format::compare_versions(&a.1, &b.1))
        });
        Ok(PackageIndex { packages })
    }

    /// All packages, sorted by name, then version.
    pub fn all(&self) -> &[(PackageId, Package)] {
        &self.packages
    }

    /// The package a spec means: among those matching name, arch and version, the
    /// highest version, and of equal versions the latest imported.
    pub fn find(&self, spec: &PackageSpec) -> Result<&(PackageId, Package), LookupError> {
        let named: Vec<_> = self
            .packages
            .iter()
            .filter(|(_, p)| p.name == spec.name)
            // Image layers hold whiteouts: only applying an image's layers in order
            // makes sense of them (`canopy import oci`), never assembling one.
            .filter(|(_, p)| p.kind != PackageKind::Layer)
            .collect();
        let best = named
            .iter()
            .filter(|(_, p)| spec.arch.as_ref().is_none_or(|a| *a == p.arch))
            .filter(|(_, p)| spec.version.as_ref().is_none_or(|v| *v == p.version))
            .max_by(|a, b| {
                crate::format::compare_versions(&a.1, &b.1)
                    .then(a.1.imported_at.cmp(&b.1.imported_at))
            });
        best.copied().ok_or_else(|| {
            let names = self.packages.iter().map(|(_, p)| p.name.as_str());
            let hint = if let (true, Some(near)) =
                (named.is_empty(), crate::suggest::closest(&spec.name, names))
            {
                format!("; did you mean {near}?")
            } else if named.is_empty() {
                "; `canopy packages list` shows what is imported (`canopy import deb|rpm FILE` adds more)"
                    .to_string()
            } else {
                let have: Vec<String> = named
                    .iter()
                    .map(|(_, p)| format!("{}:{}={}", p.name, p.arch, p.version))
                    .collect();
                format!("; the store has {}", have.join(", "))
            };
            LookupError::NotFound {
                spec: spec.to_string(),
                hint,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: PackageSpec = "libc6:amd64=2.36-9".parse().unwrap();
        assert_eq!(
            (s.name.as_str(), s.arch.as_deref(), s.version.as_deref()),
            ("libc6", Some("amd64"), Some("2.36-9"))
        );
        assert!("=1".parse::<PackageSpec>().is_err());
        assert!("bash=".parse::<PackageSpec>().is_err());
    }

    #[test]
    fn orders_debian_versions() {
        assert_eq!(compare_versions("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(compare_versions("1:0.9", "2.0"), Ordering::Greater);
        assert_eq!(
            compare_versions("5.2.15-2+b7", "5.2.15-2"),
            Ordering::Greater
        );
    }
}
