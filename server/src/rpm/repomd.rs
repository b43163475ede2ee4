//! rpm-md repositories (what `createrepo_c` writes and dnf reads): `repodata/repomd.xml`
//! lists the metadata files with their SHA-256 and size; `primary.xml` describes every
//! package (name, EVR, arch, dependencies, the commonly needed files, where the `.rpm` is
//! and its SHA-256); `filelists.xml` lists every file, and is read only when a file
//! dependency is not met by what primary lists.
//!
//! `repomd.xml` is fetched with a conditional request and, with a keyring, checked
//! against `repomd.xml.asc`; each metadata file is checked against repomd's checksum and
//! size, unpacked (gzip, xz or zstd) and cached under its checksum, so an unchanged
//! repository costs one `304 Not Modified`.

mod packages;

use super::evr::Evr;
use crate::repo::fetch::{Fetched, Fetcher, Validators};
use crate::repo::signature::Keyring;
use crate::repo::{Archive, RepoConfig, RepoError, cache_dir, ensure_dir};
use crate::store::{Store, write_atomic};
use canopy_protocol::{Hasher, ObjectId};
use packages::{parse_filelists, parse_primary};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use url::Url;

/// Most repomd.xml may hold.
const REPOMD_LIMIT: u64 = 16 << 20;
/// Most a metadata file may unpack to (Fedora's primary is ~ 500 MiB unpacked,
/// filelists ~ 1 GiB).
const METADATA_LIMIT: u64 = 4 << 30;

/// A version relation of a dependency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=`
    Eq,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl Op {
    fn parse(flags: &str) -> Option<Op> {
        Some(match flags {
            "LT" => Op::Lt,
            "LE" => Op::Le,
            "EQ" => Op::Eq,
            "GE" => Op::Ge,
            "GT" => Op::Gt,
            _ => return None,
        })
    }

    /// Whether `version OP bound` holds.
    pub fn admits(self, version: &Evr, bound: &Evr) -> bool {
        let order = version.compare(bound);
        match self {
            Op::Lt => order.is_lt(),
            Op::Le => order.is_le(),
            Op::Eq => order.is_eq(),
            Op::Ge => order.is_ge(),
            Op::Gt => order.is_gt(),
        }
    }

    /// rpm's spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">",
        }
    }
}

/// A dependency: a name (a package, a virtual capability, a file path or a rich
/// dependency such as `(a or b)`) and maybe a version relation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dep {
    /// What is named.
    pub name: String,
    /// The relation, if versioned.
    pub constraint: Option<(Op, Evr)>,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some((op, evr)) = &self.constraint {
            write!(f, " {} {evr}", op.symbol())?;
        }
        Ok(())
    }
}

/// One package a repository offers.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Package name.
    pub name: String,
    /// Architecture (`x86_64`, `noarch`, `i686`…).
    pub arch: String,
    /// Epoch, version, release.
    pub evr: Evr,
    /// Requires (rpmlib() ones left out: rpm itself provides them).
    pub requires: Vec<Dep>,
    /// Provides (rpm adds the package's own name and EVR).
    pub provides: Vec<Dep>,
    /// Conflicts.
    pub conflicts: Vec<Dep>,
    /// Obsoletes.
    pub obsoletes: Vec<Dep>,
    /// Recommends.
    pub recommends: Vec<Dep>,
    /// Files it ships that some candidate requires by path.
    pub files: Vec<String>,
}

/// What is remembered of the last repomd.xml seen.
#[derive(Default, Serialize, Deserialize)]
struct State {
    validators: Validators,
}

/// A metadata file repomd lists: where, its checksum and size.
#[derive(Clone, Debug)]
struct Listed {
    href: String,
    sha256: ObjectId,
    size: u64,
}

fn meta_err(what: impl Into<String>, message: impl Into<String>) -> RepoError {
    RepoError::Metadata {
        what: what.into(),
        message: message.into(),
    }
}

fn base_url(config: &RepoConfig) -> Result<Url, RepoError> {
    Url::parse(&config.url).map_err(|e| RepoError::Config(format!("{}: {e}", config.url)))
}

fn join(base: &Url, path: &str) -> Result<Url, RepoError> {
    if path.split('/').any(|c| c == "..") || path.starts_with('/') || path.contains("://") {
        return Err(meta_err(
            base.as_str(),
            format!("path {path:?} leaves the repository"),
        ));
    }
    let url = base
        .join(path)
        .map_err(|e| meta_err(base.as_str(), format!("bad path {path:?}: {e}")))?;
    // URL resolution reads `%2e%2e` as `..`: what counts is where the path lands.
    let dir = &base.as_str()[..base.as_str().rfind('/').map_or(0, |i| i + 1)];
    if !url.as_str().starts_with(dir) || url.query().is_some() || url.fragment().is_some() {
        return Err(meta_err(
            base.as_str(),
            format!("path {path:?} leaves the repository"),
        ));
    }
    Ok(url)
}

/// Reads a repository's packages for `config.arch` (and `noarch`; i686 and other
/// architectures are left out): repomd.xml (signature checked with a keyring), primary,
/// and filelists when a file dependency needs it.
pub fn load(
    store: &Store,
    name: &str,
    config: &RepoConfig,
    fetcher: &Fetcher,
) -> Result<Vec<(Candidate, Archive)>, RepoError> {
    let dir = cache_dir(store, name);
    ensure_dir(&dir)?;
    let base = base_url(config)?;
    let repomd = repomd_text(store, name, config, fetcher, &base)?;
    let listed = parse_repomd(&repomd, &base)?;
    let primary = listed
        .get("primary")
        .ok_or_else(|| meta_err(format!("{base}repodata/repomd.xml"), "lists no primary"))?;
    let (primary_text, primary_cache) = metadata(store, name, fetcher, &base, "primary", primary)?;
    let mut keep = vec![primary_cache];
    let mut packages = parse_primary(&primary_text, &base, name, &config.arch)?;
    drop(primary_text);
    // File dependencies that neither a Provides nor a file in primary meets.
    let mut known: HashSet<&str> = HashSet::new();
    for (c, _, _) in &packages {
        known.extend(c.files.iter().map(String::as_str));
        known.extend(c.provides.iter().map(|p| p.name.as_str()));
    }
    let wanted: HashSet<String> = packages
        .iter()
        .flat_map(|(c, _, _)| c.requires.iter().chain(&c.recommends))
        .filter(|d| d.name.starts_with('/') && !known.contains(d.name.as_str()))
        .map(|d| d.name.clone())
        .collect();
    if !wanted.is_empty()
        && let Some(filelists) = listed.get("filelists")
    {
        let (text, cache) = metadata(store, name, fetcher, &base, "filelists", filelists)?;
        keep.push(cache);
        let found = parse_filelists(&text, &wanted, &base)?;
        for (c, _, pkgid) in &mut packages {
            if let Some(files) = found.get(pkgid.as_str()) {
                c.files.extend(files.iter().cloned());
            }
        }
    }
    prune(&dir, &keep);
    Ok(packages.into_iter().map(|(c, a, _)| (c, a)).collect())
}

/// The verified text of repomd.xml, from the cache when the server says it has not
/// changed.
fn repomd_text(
    store: &Store,
    name: &str,
    config: &RepoConfig,
    fetcher: &Fetcher,
    base: &Url,
) -> Result<String, RepoError> {
    let dir = cache_dir(store, name);
    let text_path = dir.join("repomd.xml");
    let state_path = dir.join("state.json");
    let cached = fs::read_to_string(&text_path).ok();
    let state: State = match &cached {
        Some(_) => fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default(),
        None => State::default(),
    };
    let url = join(base, "repodata/repomd.xml")?;
    let (bytes, validators) = match fetcher.fetch(&url, &state.validators, REPOMD_LIMIT)? {
        Fetched::NotModified if cached.is_some() => {
            return Ok(cached.expect("checked"));
        }
        Fetched::NotModified => fetch_fresh(fetcher, &url)?,
        Fetched::Missing => {
            return Err(meta_err(
                url.as_str(),
                "missing: this is not an rpm-md repository (check the URL: it should hold repodata/)",
            ));
        }
        Fetched::New(bytes, validators) => (bytes, validators),
    };
    if let Some(path) = &config.keyring {
        let keyring = Keyring::load(path).map_err(|error| RepoError::Signature {
            what: path.display().to_string(),
            error,
        })?;
        let sig_url = join(base, "repodata/repomd.xml.asc")?;
        let Fetched::New(signature, _) =
            fetcher.fetch(&sig_url, &Validators::default(), REPOMD_LIMIT)?
        else {
            return Err(meta_err(
                sig_url.as_str(),
                "missing: the repository's metadata is not signed (sign repomd.xml with gpg --detach-sign --armor, or add the repository with --no-verify-signature)",
            ));
        };
        keyring
            .verify_detached(&bytes, &signature)
            .map_err(|error| RepoError::Signature {
                what: url.to_string(),
                error,
            })?;
    }
    let text = String::from_utf8(bytes).map_err(|_| meta_err(url.as_str(), "not UTF-8"))?;
    write_atomic(&text_path, text.as_bytes(), 0o644)?;
    let state = State { validators };
    write_atomic(
        &state_path,
        &serde_json::to_vec(&state).expect("state serializes"),
        0o644,
    )?;
    Ok(text)
}

fn fetch_fresh(fetcher: &Fetcher, url: &Url) -> Result<(Vec<u8>, Validators), RepoError> {
    match fetcher.fetch(url, &Validators::default(), REPOMD_LIMIT)? {
        Fetched::New(bytes, validators) => Ok((bytes, validators)),
        _ => Err(meta_err(url.as_str(), "the server would not send it")),
    }
}

/// A reader over XML text that turns entity references back into characters.
struct Xml<'t> {
    reader: Reader<&'t [u8]>,
    buf: Vec<u8>,
    what: String,
}

impl<'t> Xml<'t> {
    fn new(text: &'t str, what: String) -> Self {
        Xml {
            reader: Reader::from_reader(text.as_bytes()),
            buf: Vec::new(),
            what,
        }
    }

    fn next(&mut self) -> Result<Event<'static>, RepoError> {
        self.buf.clear();
        self.reader
            .read_event_into(&mut self.buf)
            .map(|e| e.into_owned())
            .map_err(|e| meta_err(self.what.clone(), format!("bad XML: {e}")))
    }

    /// The text up to the end of the current element.
    fn text(&mut self) -> Result<String, RepoError> {
        let mut out = String::new();
        let mut depth = 0usize;
        loop {
            match self.next()? {
                Event::Text(t) => out.push_str(&t.xml10_content()),
                Event::CData(t) => out.push_str(&t.into_inner()),
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => c,
                        _ => match &*r.into_inner() {
                            "amp" => '&',
                            "lt" => '<',
                            "gt" => '>',
                            "quot" => '"',
                            "apos" => '\'',
                            other => {
                                return Err(meta_err(
                                    self.what.clone(),
                                    format!("unknown entity &{other};"),
                                ));
                            }
                        },
                    };
                    out.push(resolved);
                }
                Event::Start(_) => depth += 1,
                Event::End(_) if depth == 0 => return Ok(out),
                Event::End(_) => depth -= 1,
                Event::Eof => return Err(meta_err(self.what.clone(), "ends inside an element")),
                _ => {}
            }
        }
    }
}

/// An attribute's value, unescaped.
fn attr(e: &BytesStart, name: &str, what: &str) -> Result<Option<String>, RepoError> {
    for a in e.attributes() {
        let a = a.map_err(|err| meta_err(what, format!("bad attribute: {err}")))?;
        if a.key.as_ref() == name {
            let v = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| meta_err(what, format!("bad attribute {name}: {err}")))?;
            return Ok(Some(v.into_owned()));
        }
    }
    Ok(None)
}

fn sha256(text: &str, what: &str) -> Result<ObjectId, RepoError> {
    text.trim().parse::<ObjectId>().map_err(|_| {
        meta_err(
            what,
            format!("{text:?} is not a SHA-256 (canopy trusts no other checksum)"),
        )
    })
}

/// repomd.xml: each `data` element's type, location, checksum and size.
fn parse_repomd(text: &str, base: &Url) -> Result<HashMap<String, Listed>, RepoError> {
    let what = format!("{base}repodata/repomd.xml");
    let mut xml = Xml::new(text, what.clone());
    let mut out = HashMap::new();
    // The `data` element being read: type, href, checksum, size.
    type Data = (String, Option<String>, Option<ObjectId>, Option<u64>);
    let mut current: Option<Data> = None;
    loop {
        match xml.next()? {
            Event::Start(e) if e.local_name().as_ref() == "data" => {
                let kind = attr(&e, "type", &what)?.unwrap_or_default();
                current = Some((kind, None, None, None));
            }
            Event::Start(e) if current.is_some() => {
                let local = e.local_name().as_ref().to_string();
                let c = current.as_mut().expect("checked");
                match local.as_str() {
                    "checksum" => {
                        let kind = attr(&e, "type", &what)?.unwrap_or_default();
                        let value = xml.text()?;
                        if kind == "sha256" {
                            c.2 = Some(sha256(&value, &what)?);
                        }
                    }
                    "size" => {
                        let value = xml.text()?;
                        c.3 = Some(value.trim().parse().map_err(|_| {
                            meta_err(&what, format!("size {value:?} is not a number"))
                        })?);
                    }
                    _ => {}
                }
            }
            Event::Empty(e) if current.is_some() && e.local_name().as_ref() == "location" => {
                current.as_mut().expect("checked").1 = attr(&e, "href", &what)?;
            }
            Event::End(e) if e.local_name().as_ref() == "data" => {
                if let Some((kind, Some(href), Some(sha256), Some(size))) = current.take() {
                    out.insert(kind, Listed { href, sha256, size });
                }
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
    }
}

/// A metadata file's unpacked text, from the cache or downloaded and checked; and the
/// cache file's name.
fn metadata(
    store: &Store,
    name: &str,
    fetcher: &Fetcher,
    base: &Url,
    kind: &str,
    listed: &Listed,
) -> Result<(String, String), RepoError> {
    let cache_name = format!("{kind}-{}.xml", listed.sha256);
    let cache_path = cache_dir(store, name).join(&cache_name);
    if let Ok(text) = fs::read_to_string(&cache_path) {
        return Ok((text, cache_name));
    }
    let url = join(base, &listed.href)?;
    let Fetched::New(bytes, _) = fetcher.fetch(&url, &Validators::default(), listed.size)? else {
        return Err(meta_err(url.as_str(), "listed in repomd.xml but missing"));
    };
    let mut hasher = Hasher::new();
    hasher.write_all(&bytes).expect("hashing cannot fail");
    let got = hasher.finish();
    if got != listed.sha256 || bytes.len() as u64 != listed.size {
        return Err(RepoError::Mismatch {
            url: url.to_string(),
            expected: format!("{} bytes, sha256 {}", listed.size, listed.sha256),
            got: format!("{} bytes, sha256 {got}", bytes.len()),
        });
    }
    let reader = crate::import::decompress(&bytes, url.as_str())
        .map_err(|e| meta_err(url.as_str(), e.to_string()))?;
    let mut text = String::new();
    reader
        .take(METADATA_LIMIT + 1)
        .read_to_string(&mut text)
        .map_err(|e| meta_err(url.as_str(), format!("cannot decompress: {e}")))?;
    if text.len() as u64 > METADATA_LIMIT {
        return Err(meta_err(
            url.as_str(),
            format!("unpacks to more than {METADATA_LIMIT} bytes"),
        ));
    }
    write_atomic(&cache_path, text.as_bytes(), 0o644)?;
    Ok((text, cache_name))
}

/// Removes cached metadata the current repomd.xml no longer lists.
fn prune(dir: &std::path::Path, keep: &[String]) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("primary-") || name.starts_with("filelists-");
        if ours && !keep.contains(&name) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="2">
<package type="rpm">
  <name>greet</name>
  <arch>noarch</arch>
  <version epoch="0" ver="1.0" rel="1"/>
  <checksum type="sha256" pkgid="YES">aa00000000000000000000000000000000000000000000000000000000000000</checksum>
  <size package="7000" installed="300" archive="900"/>
  <location href="Packages/greet-1.0-1.noarch.rpm"/>
  <format>
    <rpm:provides><rpm:entry name="greet" flags="EQ" epoch="0" ver="1.0" rel="1"/></rpm:provides>
    <rpm:requires>
      <rpm:entry name="/bin/sh" pre="1"/>
      <rpm:entry name="libgreet.so.1()(64bit)"/>
      <rpm:entry name="rpmlib(CompressedFileNames)" flags="LE" epoch="0" ver="3.0.4" rel="1"/>
      <rpm:entry name="(sh or busybox)"/>
      <rpm:entry name="a&amp;b" flags="GE" epoch="1" ver="2"/>
    </rpm:requires>
    <rpm:recommends><rpm:entry name="greet-doc"/></rpm:recommends>
    <file>/usr/bin/greet</file>
  </format>
</package>
<package type="rpm">
  <name>greet32</name>
  <arch>i686</arch>
  <version epoch="0" ver="1.0" rel="1"/>
  <checksum type="sha256" pkgid="YES">bb00000000000000000000000000000000000000000000000000000000000000</checksum>
  <size package="1"/>
  <location href="Packages/x.rpm"/>
</package>
</metadata>"#;

    #[test]
    fn paths_stay_in_the_repository() {
        let base = Url::parse("http://mirror.example/fedora/os/").unwrap();
        assert_eq!(
            join(&base, "Packages/g/greet-1.0-1.noarch.rpm")
                .unwrap()
                .as_str(),
            "http://mirror.example/fedora/os/Packages/g/greet-1.0-1.noarch.rpm"
        );
        for bad in [
            "../x.rpm",
            "/etc/passwd",
            "http://elsewhere/x.rpm",
            "%2e%2e/%2e%2e/x.rpm",
            "Packages/%2E%2e/../x.rpm",
            ".%2e/x.rpm",
            "x.rpm?y",
        ] {
            assert!(join(&base, bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn reads_primary() {
        let base = Url::parse("http://mirror.example/os/").unwrap();
        let p = parse_primary(PRIMARY, &base, "r", "x86_64").unwrap();
        assert_eq!(p.len(), 1, "i686 is left out");
        let (c, a, _) = &p[0];
        assert_eq!(
            (c.name.as_str(), c.evr.to_string()),
            ("greet", "1.0-1".into())
        );
        assert_eq!(
            a.url.as_str(),
            "http://mirror.example/os/Packages/greet-1.0-1.noarch.rpm"
        );
        let requires: Vec<String> = c.requires.iter().map(ToString::to_string).collect();
        assert_eq!(
            requires,
            [
                "/bin/sh",
                "libgreet.so.1()(64bit)",
                "(sh or busybox)",
                "a&b >= 1:2"
            ]
        );
        assert_eq!(c.files, ["/usr/bin/greet"]);
        assert_eq!(c.recommends[0].name, "greet-doc");
    }

    #[test]
    fn refuses_paths_out_of_the_repository() {
        let base = Url::parse("http://mirror.example/os/").unwrap();
        let bad = PRIMARY.replace("Packages/greet-1.0-1.noarch.rpm", "../../etc/x.rpm");
        assert!(parse_primary(&bad, &base, "r", "x86_64").is_err());
        let bad = PRIMARY.replace("Packages/greet-1.0-1.noarch.rpm", "http://elsewhere/x.rpm");
        assert!(parse_primary(&bad, &base, "r", "x86_64").is_err());
    }
}
