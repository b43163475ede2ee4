//! Package repositories: where roots are resolved from.
//!
//! A repository is configured once (`STORE/repos/NAME.json`); its metadata is read on
//! every assemble or upgrade by its format (`crate::format`: for Debian the signed
//! Release file, then each component's Packages index, checked against the hashes
//! Release lists and cached by them; for rpm-md the signed repomd.xml and what it
//! lists), the request is resolved against it by the format's resolver, and only the
//! archives the store has not imported yet are downloaded (`fetch`) and imported
//! (`provide`).
//!
//! ```text
//! STORE/repos/NAME.json                  the repository's configuration
//! STORE/cache/repos/NAME/                its verified Release and unpacked Packages
//! STORE/cache/downloads/SHA256.deb|rpm   archives being downloaded (resumed if cut)
//! ```

pub mod fetch;
pub mod provide;
pub mod signature;

use crate::debian::control::ControlError;
use crate::store::{Store, StoreError, write_atomic};
use canopy_protocol::ArchiveHash;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use url::Url;

/// Why a repository could not be used. Nothing in the store changes in any case.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No repository of that name is configured (`hint`: a near name that is, or empty).
    #[error(
        "no repository named {name}{hint} (see `canopy repo list`, or add one with `canopy repo add`)"
    )]
    Unknown {
        /// The name asked for.
        name: String,
        /// `; did you mean NAME?`, or empty.
        hint: String,
    },
    /// `repo add` of a name that exists.
    #[error(
        "a repository named {0} exists already (remove it first with `canopy repo remove {0}`)"
    )]
    Exists(String),
    /// The name is not usable.
    #[error("invalid repository name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// A download failed.
    #[error("fetching {url}: {message}")]
    Transfer {
        /// What was fetched.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// A file is not what the repository's metadata says.
    #[error(
        "{url} does not match the repository's metadata: expected {expected}, got {got} (the mirror may be mid-update or corrupted; nothing was imported)"
    )]
    Mismatch {
        /// What was fetched.
        url: String,
        /// What the metadata says.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// The metadata does not parse or lacks what is needed.
    #[error("{what}: {message}")]
    Metadata {
        /// Which file.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The Release signature does not check out.
    #[error(
        "{what}: {error} (pass --keyring with the repository's key, or --no-verify-signature to skip the check)"
    )]
    Signature {
        /// Which file.
        what: String,
        /// Why (not a `source`: the message already says it, before the hint).
        error: signature::SignatureError,
    },
    /// Local I/O failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// A control paragraph does not parse.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a package a repository offers is, and what it must hash to.
#[derive(Clone, Debug)]
pub struct Archive {
    /// The repository it comes from.
    pub repo: String,
    /// The archive's URL.
    pub url: Url,
    /// The archive's size, from the index.
    pub size: u64,
    /// The archive's SHA-256, from the index: also the key of its import in the store.
    pub sha256: ArchiveHash,
}

/// The format of a repository's metadata.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum RepoKind {
    /// A Debian archive: Release and Packages indexes.
    #[default]
    #[serde(rename = "deb")]
    Deb,
    /// An rpm-md repository: repodata/repomd.xml, primary and filelists.
    #[serde(rename = "rpm-md")]
    RpmMd,
}

impl RepoKind {
    /// Every kind.
    pub const ALL: [RepoKind; 2] = [RepoKind::Deb, RepoKind::RpmMd];

    /// The word used on the command line and in listings.
    pub fn label(self) -> &'static str {
        match self {
            RepoKind::Deb => "deb",
            RepoKind::RpmMd => "rpm-md",
        }
    }

    /// The kind a word names (`deb`, `rpm-md`).
    pub fn from_label(word: &str) -> Option<RepoKind> {
        RepoKind::ALL.into_iter().find(|k| k.label() == word)
    }
}

/// One configured repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoConfig {
    /// The metadata format (absent in configurations written before RPM: Debian).
    #[serde(default)]
    pub kind: RepoKind,
    /// Base URL (http, https or file), ending in `/`.
    pub url: String,
    /// The suites (`bookworm`, `bookworm-updates`…) under `dists/`, read together;
    /// none for a flat repository, whose `Release` and `Packages` sit at the base URL.
    /// (Configurations written before several suites were possible have `suite`.)
    #[serde(alias = "suite", deserialize_with = "one_or_many")]
    pub suites: Vec<String>,
    /// Components (`main`…); empty for a flat repository.
    pub components: Vec<String>,
    /// Architecture of the roots resolved from it (Debian's `amd64`…, with `all`
    /// packages always included; RPM's `x86_64`…, with `noarch`).
    pub arch: String,
    /// OpenPGP keyring the Release file (or repomd.xml) must be signed with; none only
    /// when the user chose `--no-verify-signature`.
    pub keyring: Option<PathBuf>,
    /// rpm-md: check every downloaded RPM's header signature with the keyring too.
    #[serde(default)]
    pub verify_package_signatures: bool,
}

/// `null`, `"a"` or `["a", "b"]` as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// The configuration file as written: versioned, so a later format can be told apart.
#[derive(Serialize, Deserialize)]
struct ConfigFile {
    format: u32,
    #[serde(flatten)]
    config: RepoConfig,
}

const CONFIG_FORMAT: u32 = 1;

fn check_name(name: &str) -> Result<(), RepoError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RepoError::BadName(name.to_string()))
    }
}

fn config_path(store: &Store, name: &str) -> PathBuf {
    store.path().join("repos").join(format!("{name}.json"))
}

/// The directory where a repository's verified metadata is cached.
pub(crate) fn cache_dir(store: &Store, name: &str) -> PathBuf {
    store.path().join("cache/repos").join(name)
}

/// Adds a repository. The caller has checked that the URL is one canopy can fetch.
pub fn add(store: &Store, name: &str, config: &RepoConfig) -> Result<(), RepoError> {
    check_name(name)?;
    let path = config_path(store, name);
    if path.exists() {
        return Err(RepoError::Exists(name.to_string()));
    }
    let dir = path.parent().expect("config files live in repos/");
    fs::create_dir_all(dir).map_err(|source| RepoError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let file = ConfigFile {
        format: CONFIG_FORMAT,
        config: config.clone(),
    };
    let json = serde_json::to_vec_pretty(&file).expect("a config serializes");
    write_atomic(&path, &json, 0o644)?;
    Ok(())
}

/// Removes a repository and its cached metadata. Packages imported from it stay.
pub fn remove(store: &Store, name: &str) -> Result<(), RepoError> {
    check_name(name)?;
    let path = config_path(store, name);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(unknown(store, name));
        }
        Err(source) => {
            return Err(RepoError::Io {
                what: format!("removing {}", path.display()),
                source,
            });
        }
    }
    let cache = cache_dir(store, name);
    match fs::remove_dir_all(&cache) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RepoError::Io {
            what: format!("removing {}", cache.display()),
            source,
        }),
    }
}

/// The error for a repository name that is not configured, with the nearest configured
/// name when one is close (`--from debain`).
fn unknown(store: &Store, name: &str) -> RepoError {
    let names = list(store).unwrap_or_default();
    let hint = crate::suggest::closest(name, names.iter().map(|(n, _)| n.as_str()))
        .map(|near| format!("; did you mean {near}?"))
        .unwrap_or_default();
    RepoError::Unknown {
        name: name.to_string(),
        hint,
    }
}

/// A repository's configuration.
pub fn get(store: &Store, name: &str) -> Result<RepoConfig, RepoError> {
    check_name(name)?;
    let path = config_path(store, name);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(unknown(store, name));
        }
        Err(source) => {
            return Err(RepoError::Io {
                what: format!("reading {}", path.display()),
                source,
            });
        }
    };
    let file: ConfigFile = serde_json::from_slice(&bytes).map_err(|e| {
        RepoError::Config(format!(
            "{} is not a repository configuration ({e}); remove it and add the repository again",
            path.display()
        ))
    })?;
    if file.format != CONFIG_FORMAT {
        return Err(RepoError::Config(format!(
            "{} has format {}, which this version of canopy does not read",
            path.display(),
            file.format
        )));
    }
    Ok(file.config)
}

/// Every configured repository, by name.
pub fn list(store: &Store) -> Result<Vec<(String, RepoConfig)>, RepoError> {
    let dir = store.path().join("repos");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RepoError::Io {
                what: format!("reading {}", dir.display()),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| RepoError::Io {
            what: format!("reading {}", dir.display()),
            source,
        })?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if check_name(name).is_ok() {
            out.push((name.to_string(), get(store, name)?));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Reads a repository's metadata now (checking it as an assemble would) and counts
/// the packages it offers for its architecture.
pub fn offered(
    store: &Store,
    name: &str,
    config: &RepoConfig,
    fetcher: &fetch::Fetcher,
) -> Result<usize, RepoError> {
    let repos = [(name.to_string(), config.clone())];
    let index = crate::format::of_repo(config.kind).read_index(store, &repos, fetcher, &|_| {})?;
    Ok(index.packages())
}

/// Every archive a repository offers for its architecture, with the URL, size and
/// SHA-256 its metadata gives (what `fsck --repair` looks archives up in).
pub fn archives(
    store: &Store,
    name: &str,
    config: &RepoConfig,
    fetcher: &fetch::Fetcher,
) -> Result<Vec<Archive>, RepoError> {
    let repos = [(name.to_string(), config.clone())];
    let index = crate::format::of_repo(config.kind).read_index(store, &repos, fetcher, &|_| {})?;
    Ok(index.archives())
}

/// Creates a directory (and its parents) for cache files.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), RepoError> {
    fs::create_dir_all(dir).map_err(|source| RepoError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })
}
