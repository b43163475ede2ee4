//! Turning a recipe into imported packages: read the repositories, resolve the
//! request, download what the store lacks (in parallel, every archive checked
//! against its index before anything is imported), import it.

use super::fetch::Fetcher;
use super::signature::Keyring;
use super::{Archive, RepoConfig, RepoError, ensure_dir, get};
use crate::assemble::Recipe;
use crate::format::{self, Format, Offer, ResolveError};
use crate::import::{ImportError, Limits};
use crate::store::Store;
use canopy_protocol::{ArchiveHash, Package, PackageId};
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
    /// The request cannot be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
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

/// One package a recipe resolved to, before anything is downloaded.
#[derive(Clone, Debug)]
pub struct Planned {
    /// Package name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its architecture.
    pub arch: String,
    /// Where its archive is, its size and SHA-256, from the repository's index.
    pub archive: Archive,
    /// The package record, when the store has imported this archive already.
    pub imported: Option<PackageId>,
}

impl<'a> From<&'a Planned> for crate::diff::Listed<'a> {
    fn from(p: &'a Planned) -> Self {
        crate::diff::Listed {
            name: &p.name,
            arch: &p.arch,
            version: &p.version,
            archive: &p.archive.sha256,
        }
    }
}

/// What a recipe resolves to now: read and resolved, nothing downloaded or written.
pub struct Resolution {
    /// Every package of the resolution, in name order.
    pub packages: Vec<Planned>,
    /// Conflicts or Breaks the resolution could not avoid, for the user to see.
    pub problems: Vec<String>,
}

impl Resolution {
    /// The packages the store lacks: what [`provide`] would download.
    pub fn missing(&self) -> impl Iterator<Item = &Planned> {
        self.packages.iter().filter(|p| p.imported.is_none())
    }
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

/// Reads `recipe`'s repositories (their metadata only) and resolves it. Nothing is
/// downloaded beyond the indexes, and the store is not written.
pub fn resolve(
    store: &Store,
    recipe: &Recipe,
    fetcher: &Fetcher,
    progress: &dyn Progress,
) -> Result<Resolution, ProvideError> {
    let configs = configs(store, recipe)?;
    resolve_with(store, recipe, &configs, fetcher, progress)
}

fn resolve_with(
    store: &Store,
    recipe: &Recipe,
    configs: &[(String, RepoConfig)],
    fetcher: &Fetcher,
    progress: &dyn Progress,
) -> Result<Resolution, ProvideError> {
    let format = format::of_repo(configs[0].1.kind);
    let index = format.read_index(store, configs, fetcher, &|step| progress.step(step))?;
    progress.step(&format!("resolving among {} packages", index.packages()));
    let resolution = index.resolve(&format::Request {
        packages: recipe.specs.clone(),
        essential: recipe.essential,
        recommends: recipe.recommends,
    })?;
    let mut packages = Vec::with_capacity(resolution.chosen.len());
    for Offer {
        name,
        version,
        arch,
        archive,
    } in resolution.chosen
    {
        packages.push(Planned {
            imported: store.package_ref(&archive.sha256)?,
            name,
            version,
            arch,
            archive,
        });
    }
    Ok(Resolution {
        packages,
        problems: resolution.problems,
    })
}

/// The recipe's repositories: at least one, all of one kind and one architecture (one
/// root is one ecosystem).
fn configs(store: &Store, recipe: &Recipe) -> Result<Vec<(String, RepoConfig)>, ProvideError> {
    let mut configs: Vec<(String, RepoConfig)> = Vec::new();
    for name in &recipe.from {
        let config = get(store, name)?;
        if let Some((first, c)) = configs.first() {
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
    if configs.is_empty() {
        return Err(RepoError::Config("no repository given".into()).into());
    }
    Ok(configs)
}

/// Resolves `recipe` against its repositories and imports what the store lacks.
pub fn provide(
    store: &Store,
    recipe: &Recipe,
    fetcher: &Fetcher,
    progress: &dyn Progress,
) -> Result<Provided, ProvideError> {
    let configs = configs(store, recipe)?;
    let format = format::of_repo(configs[0].1.kind);
    // With --verify-package-signatures, each archive downloaded must carry a signature
    // that verifies with its repository's keyring.
    let mut keyrings = std::collections::HashMap::new();
    for (name, config) in &configs {
        if let (true, Some(path)) = (config.verify_package_signatures, &config.keyring) {
            let ring = Keyring::load(path).map_err(|error| RepoError::Signature {
                what: path.display().to_string(),
                error,
            })?;
            keyrings.insert(name.clone(), ring);
        }
    }
    let resolution = resolve_with(store, recipe, &configs, fetcher, progress)?;
    let mut wanted: Vec<&Planned> = resolution.missing().collect();
    if !recipe.no_configure {
        // Imported before records kept control data: importing again adds it.
        for p in &resolution.packages {
            if let Some(id) = p.imported
                && store.package(&id)?.control.is_none()
            {
                wanted.push(p);
            }
        }
    }
    let archives: Vec<&Archive> = wanted.iter().map(|p| &p.archive).collect();
    let files = download_all(store, format, &archives, fetcher, progress)?;
    // Several archives at once, committed together; each is hashed once (while it
    // downloaded, checked against its index).
    let mut first_error = None;
    crate::import::batch::import(
        store,
        wanted.len(),
        crate::import::batch::threads(),
        |i| std::fs::metadata(&files[i]).map_or(0, |m| m.len()),
        |i| {
            let (p, file) = (wanted[i], &files[i]);
            let hash = Some(p.archive.sha256);
            format.prepare(
                store,
                file,
                hash,
                Limits::default(),
                keyrings.get(&p.archive.repo),
            )
        },
        |i, result| {
            let (p, file) = (wanted[i], &files[i]);
            let label = format!("{} {}", p.name, p.version);
            match result {
                Ok(imported) => {
                    // A downloaded copy has served its purpose; a file:// archive is
                    // the user's.
                    if p.archive.url.scheme() != "file" {
                        let _ = std::fs::remove_file(file);
                    }
                    if imported.package.name != p.name {
                        tracing::warn!(
                            "{} from {} calls itself {}",
                            p.name,
                            p.archive.url,
                            imported.package.name
                        );
                    }
                    progress.imported(&label);
                }
                Err(source) => {
                    first_error.get_or_insert(ProvideError::Import {
                        label,
                        url: p.archive.url.to_string(),
                        source: Box::new(source),
                    });
                }
            }
        },
    )?;
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut packages = Vec::with_capacity(resolution.packages.len());
    for p in &resolution.packages {
        let id = store
            .package_ref(&p.archive.sha256)?
            .expect("every chosen archive is imported by now");
        packages.push((id, store.package(&id)?));
    }
    Ok(Provided {
        packages,
        downloaded: wanted.len(),
        downloaded_bytes: archives.iter().map(|a| a.size).sum(),
        problems: resolution.problems,
    })
}

/// Gives packages imported before records kept control data their control data, from
/// the archive in the download cache (`cache/downloads/SHA256.deb`) where it is still
/// there; the others are left as they are (configuring them says to import them
/// again).
pub fn control_from_cache(
    store: &Store,
    packages: Vec<(PackageId, Package)>,
) -> Result<Vec<(PackageId, Package)>, ProvideError> {
    let mut out = Vec::with_capacity(packages.len());
    for (id, p) in packages {
        let Some(format) = format::of_kind(p.kind) else {
            out.push((id, p));
            continue;
        };
        let cached = downloaded(store, format, &p.archive);
        if p.control.is_some() || !cached.exists() {
            out.push((id, p));
            continue;
        }
        let imported = format
            .import(store, &cached, Limits::default(), None)
            .map_err(|source| ProvideError::Import {
                label: format!("{} {}", p.name, p.version),
                url: cached.display().to_string(),
                source: Box::new(source),
            })?;
        // A cached file that is not the archive imported before is left alone.
        if imported.package.archive == p.archive {
            out.push((imported.id, imported.package));
        } else {
            out.push((id, p));
        }
    }
    Ok(out)
}

/// Downloads every archive, a few at a time, each checked against its index; the
/// first failure stops the rest. Returns the local files, in order.
fn download_all(
    store: &Store,
    format: &dyn Format,
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
                    let dest = downloaded(store, format, &a.sha256);
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

/// Where an archive is downloaded to: `cache/downloads/SHA256.deb` (`.rpm`…).
fn downloaded(store: &Store, format: &dyn Format, archive: &ArchiveHash) -> PathBuf {
    store
        .path()
        .join("cache/downloads")
        .join(format!("{archive}.{}", format.kind().label()))
}
