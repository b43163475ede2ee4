//! Turning a recipe into imported packages: read the repositories, resolve the
//! request, download what the store lacks (in parallel, every archive checked
//! against its index before anything is imported), import it.

use super::Archive;
use super::fetch::Fetcher;
use super::signature::Keyring;
use super::{RepoConfig, RepoError, RepoKind, ensure_dir, get};
use crate::assemble::Recipe;
use crate::debian::release;
use crate::debian::resolve::{self, Candidate, ResolveError};
use crate::import::{ImportError, Limits};
use crate::store::Store;
use canopy_protocol::{Package, PackageId};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Downloads running at once: enough to hide latency, few enough not to hammer a mirror.
const PARALLEL_DOWNLOADS: usize = 4;

/// What [`provide`] reports as it goes.
pub trait Progress: Sync {
    /// A step starts (reading a repository, resolving…).
    fn step(&self, message: &str);
    /// Downloads start: how many archives, how many bytes in all.
    fn downloads(&self, archives: usize, bytes: u64);
    /// More bytes arrived (from any download).
    fn downloaded(&self, bytes: u64);
    /// An archive was imported.
    fn imported(&self, label: &str);
}

/// Why a recipe could not be provided. The store is unchanged unless imports began,
/// and then it holds only complete imports (no root moves).
#[derive(Debug, thiserror::Error)]
pub enum ProvideError {
    /// A repository failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The request cannot be resolved (Debian).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The request cannot be resolved (RPM).
    #[error(transparent)]
    RpmResolve(#[from] crate::rpm::resolve::ResolveError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// An archive could not be imported.
    #[error("importing {label} from {url}: {source}")]
    Import {
        /// Package name and version.
        label: String,
        /// Where it came from.
        url: String,
        /// Why (boxed: import errors are large, and rare here).
        source: Box<ImportError>,
    },
}

/// The packages a recipe resolved to, imported.
pub struct Provided {
    /// Every package of the resolution, in name order.
    pub packages: Vec<(PackageId, Package)>,
    /// Archives downloaded (not in the store before).
    pub downloaded: usize,
    /// Their bytes.
    pub downloaded_bytes: u64,
    /// Conflicts or Breaks the resolution could not avoid, for the user to see.
    pub problems: Vec<String>,
}

/// What a resolution chose: each archive with its label (`name version`) and name.
struct Plan {
    picks: Vec<(String, String, Archive)>,
    problems: Vec<String>,
}

/// Resolves `recipe` against its repositories and imports what the store lacks.
pub fn provide(
    store: &Store,
    recipe: &Recipe,
    fetcher: &Fetcher,
    progress: &dyn Progress,
) -> Result<Provided, ProvideError> {
    let mut configs = Vec::new();
    for name in &recipe.from {
        let config = get(store, name)?;
        if let Some((first, c)) = configs.first().map(|(n, c): &(String, RepoConfig)| (n, c)) {
            if c.kind != config.kind {
                return Err(RepoError::Config(format!(
                    "repositories {first} ({}) and {name} ({}) are of different kinds: one root is one ecosystem",
                    c.kind.label(),
                    config.kind.label()
                ))
                .into());
            }
            if c.arch != config.arch {
                return Err(RepoError::Config(format!(
                    "repositories {} mix architectures {} and {}",
                    recipe.from.join(", "),
                    c.arch,
                    config.arch
                ))
                .into());
            }
        }
        configs.push((name.clone(), config));
    }
    let Some((_, first)) = configs.first() else {
        return Err(RepoError::Config("no repository given".into()).into());
    };
    let kind = first.kind;
    let plan = match kind {
        RepoKind::Deb => plan_deb(store, recipe, &configs, fetcher, progress)?,
        RepoKind::RpmMd => plan_rpm(store, recipe, &configs, fetcher, progress)?,
    };
    // With --verify-package-signatures, each RPM downloaded must have a header that
    // verifies with its repository's keyring.
    let keyrings = configs
        .iter()
        .filter(|(_, c)| c.verify_package_signatures)
        .filter_map(|(n, c)| c.keyring.as_ref().map(|k| (n, k)))
        .map(|(n, k)| {
            Keyring::load(k)
                .map(|ring| (n.clone(), ring))
                .map_err(|error| RepoError::Signature {
                    what: k.display().to_string(),
                    error,
                })
        })
        .collect::<Result<std::collections::HashMap<_, _>, _>>()?;
    let mut to_fetch: Vec<&Archive> = Vec::new();
    for (_, _, a) in &plan.picks {
        if store.package_ref(&a.sha256)?.is_none() {
            to_fetch.push(a);
        }
    }
    let files = download_all(store, &to_fetch, fetcher, progress)?;
    for (a, file) in to_fetch.iter().zip(&files) {
        let (label, name, _) = plan
            .picks
            .iter()
            .find(|(_, _, p)| p.sha256 == a.sha256)
            .expect("every download was picked");
        let imported = match kind {
            RepoKind::Deb => crate::debian::deb::import(store, file, Limits::default()),
            RepoKind::RpmMd => {
                crate::rpm::import::import(store, file, Limits::default(), keyrings.get(&a.repo))
            }
        }
        .map_err(|source| ProvideError::Import {
            label: label.clone(),
            url: a.url.to_string(),
            source: Box::new(source),
        })?;
        // A downloaded copy has served its purpose; a file:// archive is the user's.
        if a.url.scheme() != "file" {
            let _ = std::fs::remove_file(file);
        }
        if imported.package.name != *name {
            tracing::warn!(
                "{name} from {} calls itself {}",
                a.url,
                imported.package.name
            );
        }
        progress.imported(label);
    }
    let mut packages = Vec::with_capacity(plan.picks.len());
    for (_, _, a) in &plan.picks {
        let id = store
            .package_ref(&a.sha256)?
            .expect("every chosen archive is imported by now");
        packages.push((id, store.package(&id)?));
    }
    Ok(Provided {
        packages,
        downloaded: to_fetch.len(),
        downloaded_bytes: to_fetch.iter().map(|a| a.size).sum(),
        problems: plan.problems,
    })
}

/// Debian: Release and Packages, then the Debian resolver.
fn plan_deb(
    store: &Store,
    recipe: &Recipe,
    configs: &[(String, RepoConfig)],
    fetcher: &Fetcher,
    progress: &dyn Progress,
) -> Result<Plan, ProvideError> {
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut archives: Vec<Archive> = Vec::new();
    for (name, config) in configs {
        progress.step(&format!("reading repository {name}"));
        for (candidate, archive) in release::load(store, name, config, fetcher)? {
            candidates.push(candidate);
            archives.push(archive);
        }
    }
    progress.step(&format!("resolving among {} packages", candidates.len()));
    let resolution = resolve::resolve(
        &candidates,
        &resolve::Request {
            packages: recipe.specs.clone(),
            arch: configs[0].1.arch.clone(),
            essential: recipe.essential,
            recommends: recipe.recommends,
        },
    )?;
    let picks = resolution
        .chosen
        .iter()
        .map(|&i| {
            let c = &candidates[i];
            (
                format!("{} {}", c.name, c.version),
                c.name.clone(),
                archives[i].clone(),
            )
        })
        .collect();
    Ok(Plan {
        picks,
        problems: resolution.problems,
    })
}

/// rpm-md: repomd.xml, primary (and filelists when needed), then the RPM resolver.
fn plan_rpm(
    store: &Store,
    recipe: &Recipe,
    configs: &[(String, RepoConfig)],
    fetcher: &Fetcher,
    progress: &dyn Progress,
) -> Result<Plan, ProvideError> {
    if recipe.essential {
        return Err(RepoError::Config(
            "--essential is for Debian repositories: RPM has no Essential packages (ask for them by name)".into(),
        )
        .into());
    }
    let mut candidates = Vec::new();
    let mut archives: Vec<Archive> = Vec::new();
    for (name, config) in configs {
        progress.step(&format!("reading repository {name}"));
        for (candidate, archive) in crate::rpm::repomd::load(store, name, config, fetcher)? {
            candidates.push(candidate);
            archives.push(archive);
        }
    }
    progress.step(&format!("resolving among {} packages", candidates.len()));
    let resolution = crate::rpm::resolve::resolve(
        &candidates,
        &crate::rpm::resolve::Request {
            packages: recipe.specs.clone(),
            arch: configs[0].1.arch.clone(),
            recommends: recipe.recommends,
        },
    )?;
    let picks = resolution
        .chosen
        .iter()
        .map(|&i| {
            let c = &candidates[i];
            (
                format!("{} {}.{}", c.name, c.evr, c.arch),
                c.name.clone(),
                archives[i].clone(),
            )
        })
        .collect();
    Ok(Plan {
        picks,
        problems: resolution.problems,
    })
}

/// Downloads every archive, a few at a time, each checked against its index; the
/// first failure stops the rest. Returns the local files, in order.
fn download_all(
    store: &Store,
    wanted: &[&Archive],
    fetcher: &Fetcher,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>, ProvideError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let dir = store.path().join("cache/downloads");
    ensure_dir(&dir)?;
    progress.downloads(wanted.len(), wanted.iter().map(|a| a.size).sum());
    let queue = Mutex::new((0..wanted.len()).collect::<VecDeque<_>>());
    let results = Mutex::new(vec![None; wanted.len()]);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_DOWNLOADS.min(wanted.len()) {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let Some(i) = queue.lock().expect("queue lock").pop_front() else {
                        return;
                    };
                    let a = wanted[i];
                    let dest = dir.join(format!("{}.deb", a.sha256));
                    match fetcher.download(&a.url, &dest, a.size, &a.sha256, &|n| {
                        progress.downloaded(n)
                    }) {
                        Ok(path) => results.lock().expect("results lock")[i] = Some(path),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().expect("error lock").get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().expect("error lock") {
        return Err(e.into());
    }
    Ok(results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|p| p.expect("every download finished"))
        .collect())
}
