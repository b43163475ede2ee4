//! A repository's metadata: the signed Release file and the Packages indexes whose
//! hashes it lists. Each index is checked against Release before it is used and
//! cached under its hash, so an unchanged index is neither downloaded nor checked
//! again; Release itself is asked for with a conditional request.

use super::control::{Paragraph, parse_paragraphs};
use super::resolve::Candidate;
use crate::repo::fetch::{Fetched, Fetcher, Validators};
use crate::repo::signature::{self, Keyring};
use crate::repo::{Archive, RepoConfig, RepoError, cache_dir, ensure_dir};
use crate::store::{Store, write_atomic};
use canopy_protocol::{ArchiveHash, Hasher, ObjectId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use url::Url;

/// Most a Release file may hold (Debian's main archive lists ~600 files in ~200 KiB).
const RELEASE_LIMIT: u64 = 64 << 20;
/// Most a Packages index may unpack to (Debian's main amd64 index is ~100 MiB).
const PACKAGES_LIMIT: u64 = 2 << 30;

/// What is remembered of the last Release seen.
#[derive(Default, Serialize, Deserialize)]
struct State {
    /// Validators of the file the verified text came from.
    validators: Validators,
    /// `InRelease` or `Release`.
    file: String,
}

/// Index files listed in Release: path → (sha256, size).
type Listing = HashMap<String, (ObjectId, u64)>;

/// One place a repository's metadata is read from: `dists/SUITE/` for each suite, or
/// the base URL itself for a flat repository; each has its own cache directory.
struct Source<'a> {
    /// The suite, or `None` (flat).
    suite: Option<&'a str>,
    /// The base URL of its metadata.
    dist: Url,
    /// Where its verified Release and Packages are cached.
    dir: PathBuf,
}

/// The sources of a repository: one per suite.
fn sources<'a>(
    store: &Store,
    name: &str,
    config: &'a RepoConfig,
) -> Result<Vec<Source<'a>>, RepoError> {
    let base =
        Url::parse(&config.url).map_err(|e| RepoError::Config(format!("{}: {e}", config.url)))?;
    let bad = |e: url::ParseError| RepoError::Config(format!("{}: {e}", config.url));
    if config.suites.is_empty() {
        return Ok(vec![Source {
            suite: None,
            dist: base,
            dir: cache_dir(store, name),
        }]);
    }
    config
        .suites
        .iter()
        .map(|suite| {
            Ok(Source {
                suite: Some(suite),
                dist: base.join(&format!("dists/{suite}/")).map_err(bad)?,
                // A suite such as `bookworm/updates` is one directory level here.
                dir: cache_dir(store, name).join(suite.replace('/', "_")),
            })
        })
        .collect()
}

fn join(base: &Url, path: &str) -> Result<Url, RepoError> {
    base.join(path).map_err(|e| RepoError::Metadata {
        what: base.to_string(),
        message: format!("bad path {path:?}: {e}"),
    })
}

/// Reads a repository's packages, from every suite: Release (signature checked unless
/// the repository was added with `--no-verify-signature`), then every component's
/// Packages index, each checked against Release.
pub fn load(
    store: &Store,
    name: &str,
    config: &RepoConfig,
    fetcher: &Fetcher,
) -> Result<Vec<(Candidate, Archive)>, RepoError> {
    let mut out = Vec::new();
    for source in sources(store, name, config)? {
        out.extend(load_source(name, config, &source, fetcher)?);
    }
    Ok(out)
}

/// Reads the packages of one suite (or of a flat repository).
fn load_source(
    name: &str,
    config: &RepoConfig,
    source: &Source,
    fetcher: &Fetcher,
) -> Result<Vec<(Candidate, Archive)>, RepoError> {
    let (dir, dist) = (&source.dir, &source.dist);
    ensure_dir(dir)?;
    let release = release_text(dir, config, source.suite, fetcher, dist)?;
    let listing = match &release {
        Some(text) => listing(text, dist)?,
        None => Listing::new(),
    };
    let base =
        Url::parse(&config.url).map_err(|e| RepoError::Config(format!("{}: {e}", config.url)))?;
    let prefixes: Vec<String> = if config.components.is_empty() {
        vec![String::new()]
    } else {
        config
            .components
            .iter()
            .map(|c| format!("{c}/binary-{}/", config.arch))
            .collect()
    };
    let mut keep = Vec::new();
    let mut out = Vec::new();
    for prefix in prefixes {
        let (text, cached) =
            packages_text(dir, fetcher, dist, &listing, &prefix, release.is_some())?;
        keep.extend(cached);
        let what = format!("{}{prefix}Packages", dist);
        for paragraph in parse_paragraphs(&text).map_err(|e| RepoError::Metadata {
            what: what.clone(),
            message: e.to_string(),
        })? {
            if let Some(a) = available(&paragraph, name, &base, &config.arch, &what)? {
                out.push(a);
            }
        }
    }
    prune(dir, &keep);
    Ok(out)
}

/// The URL of a file a Packages index names. `Filename` is a plain path, so characters
/// such as the `%` of `1%3a2.5` (an epoch, as `apt-get download` writes it) are
/// escaped, as apt does, not read as escapes.
fn file_url(base: &Url, filename: &str) -> Result<Url, RepoError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| RepoError::Config(format!("{base} cannot hold paths")))?
        .pop_if_empty()
        .extend(filename.split('/').filter(|c| !c.is_empty() && *c != "."));
    Ok(url)
}

/// The package a Packages paragraph describes, unless it is for another architecture.
fn available(
    p: &Paragraph,
    repo: &str,
    base: &Url,
    arch: &str,
    what: &str,
) -> Result<Option<(Candidate, Archive)>, RepoError> {
    let field = |f: &str| {
        p.get(f).ok_or_else(|| RepoError::Metadata {
            what: what.to_string(),
            message: format!(
                "package {} has no {f} field",
                p.get("Package").unwrap_or("(unnamed)")
            ),
        })
    };
    let package_arch = field("Architecture")?;
    if package_arch != arch && package_arch != "all" {
        return Ok(None);
    }
    let bad = |message: String| RepoError::Metadata {
        what: what.to_string(),
        message,
    };
    let name = field("Package")?;
    let sha256 = field("SHA256")?
        .parse::<ObjectId>()
        .map_err(|_| bad(format!("package {name}: SHA256 is not a SHA-256")))?;
    let size = field("Size")?
        .parse::<u64>()
        .map_err(|_| bad(format!("package {name}: Size is not a number")))?;
    let filename = field("Filename")?;
    if filename.split('/').any(|c| c == "..") || filename.starts_with('/') {
        return Err(bad(format!(
            "package {name}: Filename {filename:?} leaves the repository"
        )));
    }
    Ok(Some((
        Candidate::from_paragraph(p)?,
        Archive {
            repo: repo.to_string(),
            url: file_url(base, filename)?,
            size,
            sha256: ArchiveHash(sha256),
        },
    )))
}

/// The verified text of the repository's Release file, or `None` for a flat
/// repository without one (accepted only when signatures are not checked).
fn release_text(
    dir: &Path,
    config: &RepoConfig,
    suite: Option<&str>,
    fetcher: &Fetcher,
    dist: &Url,
) -> Result<Option<String>, RepoError> {
    let text_path = dir.join("Release");
    let state_path = dir.join("state.json");
    let cached_text = fs::read_to_string(&text_path).ok();
    let state: State = fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let keyring = match &config.keyring {
        Some(path) => Some(Keyring::load(path).map_err(|error| RepoError::Signature {
            what: path.display().to_string(),
            error,
        })?),
        None => None,
    };
    let seen = |file: &str| match &cached_text {
        Some(_) if state.file == file => state.validators.clone(),
        _ => Validators::default(),
    };
    let sig_error = |url: &Url| {
        let what = url.to_string();
        move |error| RepoError::Signature { what, error }
    };
    let inrelease = join(dist, "InRelease")?;
    let (text, validators, file) =
        match fetcher.fetch(&inrelease, &seen("InRelease"), RELEASE_LIMIT)? {
            Fetched::NotModified => return Ok(cached_text),
            Fetched::New(bytes, validators) => {
                let text = match &keyring {
                    Some(k) => k.verify_cleartext(&bytes),
                    None => signature::cleartext_unverified(&bytes),
                }
                .map_err(sig_error(&inrelease))?;
                (text, validators, "InRelease")
            }
            Fetched::Missing => {
                let url = join(dist, "Release")?;
                match fetcher.fetch(&url, &seen("Release"), RELEASE_LIMIT)? {
                    Fetched::NotModified => return Ok(cached_text),
                    Fetched::Missing if keyring.is_none() && suite.is_none() => {
                        return Ok(None);
                    }
                    Fetched::Missing => {
                        return Err(RepoError::Metadata {
                        what: dist.to_string(),
                        message:
                            "neither InRelease nor Release exists there (check the URL and --suite)"
                                .into(),
                    });
                    }
                    Fetched::New(bytes, validators) => {
                        if let Some(k) = &keyring {
                            let sig_url = join(dist, "Release.gpg")?;
                            let Fetched::New(sig, _) =
                                fetcher.fetch(&sig_url, &Validators::default(), RELEASE_LIMIT)?
                            else {
                                return Err(RepoError::Metadata {
                                what: sig_url.to_string(),
                                message:
                                    "missing: the repository has no signature for its Release file"
                                        .into(),
                            });
                            };
                            k.verify_detached(&bytes, &sig).map_err(sig_error(&url))?;
                        }
                        let text = String::from_utf8(bytes).map_err(|_| RepoError::Metadata {
                            what: url.to_string(),
                            message: "not UTF-8 text".into(),
                        })?;
                        (text, validators, "Release")
                    }
                }
            }
        };
    write_atomic(&text_path, text.as_bytes(), 0o644)?;
    let state = State {
        validators,
        file: file.to_string(),
    };
    write_atomic(
        &state_path,
        &serde_json::to_vec(&state).expect("state serializes"),
        0o644,
    )?;
    Ok(Some(text))
}

/// The SHA256 listing of a Release file.
fn listing(text: &str, dist: &Url) -> Result<Listing, RepoError> {
    let what = format!("{dist}Release");
    let bad = |message: String| RepoError::Metadata {
        what: what.clone(),
        message,
    };
    let paragraphs = parse_paragraphs(text).map_err(|e| bad(e.to_string()))?;
    let field = paragraphs
        .first()
        .and_then(|p| p.get("SHA256"))
        .ok_or_else(|| {
            bad("no SHA256 list (canopy does not trust MD5 or SHA-1 listings)".into())
        })?;
    let mut out = Listing::new();
    for line in field.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [hash, size, path] = parts[..] else {
            return Err(bad(format!("malformed SHA256 line {line:?}")));
        };
        let hash = hash
            .parse::<ObjectId>()
            .map_err(|_| bad(format!("malformed hash in {line:?}")))?;
        let size = size
            .parse::<u64>()
            .map_err(|_| bad(format!("malformed size in {line:?}")))?;
        out.insert(path.to_string(), (hash, size));
    }
    Ok(out)
}

/// The text of the Packages index under `prefix` (`main/binary-amd64/`, or empty for
/// a flat repository), from the cache when Release lists the same hash, else
/// downloaded, checked and cached. Returns the cache file names it used.
fn packages_text(
    dir: &Path,
    fetcher: &Fetcher,
    dist: &Url,
    listing: &Listing,
    prefix: &str,
    verified: bool,
) -> Result<(String, Vec<String>), RepoError> {
    // Smallest download first; canopy reads all three.
    let choices = ["Packages.xz", "Packages.gz", "Packages"];
    let listed = choices
        .iter()
        .map(|f| format!("{prefix}{f}"))
        .find_map(|path| listing.get(&path).map(|e| (path, *e)));
    let (path, expected) = match (listed, verified) {
        (Some((path, entry)), _) => (path, Some(entry)),
        (None, true) => {
            return Err(RepoError::Metadata {
                what: format!("{dist}Release"),
                message: format!("lists no {prefix}Packages index (check --components and --arch)"),
            });
        }
        // A flat repository without Release: the index cannot be checked.
        (None, false) => {
            let found = choices.iter().find_map(|f| {
                let url = join(dist, f).ok()?;
                match fetcher.fetch(&url, &Validators::default(), PACKAGES_LIMIT) {
                    Ok(Fetched::New(bytes, _)) => Some(Ok((url, bytes))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
            let Some(found) = found else {
                return Err(RepoError::Metadata {
                    what: dist.to_string(),
                    message: "has no Release and no Packages index".into(),
                });
            };
            let (url, bytes) = found?;
            tracing::warn!("{url}: no Release file, so the index is not checked");
            return Ok((unpack(&bytes, &url)?, Vec::new()));
        }
    };
    let (hash, size) = expected.expect("set above");
    let cached = format!("Packages-{hash}");
    let cache_path = dir.join(&cached);
    if let Ok(text) = fs::read_to_string(&cache_path) {
        return Ok((text, vec![cached]));
    }
    let url = join(dist, &path)?;
    let Fetched::New(bytes, _) = fetcher.fetch(&url, &Validators::default(), size)? else {
        return Err(RepoError::Metadata {
            what: url.to_string(),
            message: "listed in Release but missing".into(),
        });
    };
    let mut hasher = Hasher::new();
    io::Write::write_all(&mut hasher, &bytes).expect("hashing cannot fail");
    let got = hasher.finish();
    if got != hash || bytes.len() as u64 != size {
        return Err(RepoError::Mismatch {
            url: url.to_string(),
            expected: format!("{size} bytes, sha256 {hash}"),
            got: format!("{} bytes, sha256 {got}", bytes.len()),
        });
    }
    let text = unpack(&bytes, &url)?;
    write_atomic(&cache_path, text.as_bytes(), 0o644)?;
    Ok((text, vec![cached]))
}

/// Decompresses an index (by its magic bytes) into text, bounded.
fn unpack(bytes: &[u8], url: &Url) -> Result<String, RepoError> {
    let bad = |message: String| RepoError::Metadata {
        what: url.to_string(),
        message,
    };
    let reader = crate::import::decompress(bytes, url.as_str()).map_err(|e| bad(e.to_string()))?;
    let mut text = String::new();
    reader
        .take(PACKAGES_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("cannot decompress: {e}")))?;
    if text.len() as u64 > PACKAGES_LIMIT {
        return Err(bad(format!("unpacks to more than {PACKAGES_LIMIT} bytes")));
    }
    Ok(text)
}

/// Removes cached indexes that the current Release no longer lists.
fn prune(dir: &Path, keep: &[String]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("Packages-") && !keep.contains(&name) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_paths_not_escapes() {
        let base = Url::parse("http://mirror.example/debian/").unwrap();
        let url = file_url(&base, "pool/main/a/attr/libattr1_1%3a2.5.1-4_amd64.deb").unwrap();
        assert_eq!(
            url.as_str(),
            "http://mirror.example/debian/pool/main/a/attr/libattr1_1%253a2.5.1-4_amd64.deb"
        );
        let flat = Url::parse("file:///srv/debs/").unwrap();
        let url = file_url(&flat, "./libattr1_1%3a2.5.1-4_amd64.deb").unwrap();
        assert_eq!(
            url.to_file_path().unwrap(),
            std::path::Path::new("/srv/debs/libattr1_1%3a2.5.1-4_amd64.deb")
        );
    }
}
