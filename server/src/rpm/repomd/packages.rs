//! The package lists of a repository: `primary.xml` (packages, dependencies, archives)
//! and `filelists.xml` (every file, for file dependencies).

use super::{Candidate, Dep, Op, Xml, attr, join, meta_err, sha256};
use crate::repo::{Archive, RepoError};
use crate::rpm::evr::Evr;
use canopy_protocol::{ArchiveHash, ObjectId};
use quick_xml::events::{BytesStart, Event};
use std::collections::{HashMap, HashSet};
use url::Url;

/// A dependency from an `rpm:entry` element.
fn entry(e: &BytesStart, what: &str) -> Result<Dep, RepoError> {
    let name = attr(e, "name", what)?.ok_or_else(|| meta_err(what, "an entry has no name"))?;
    let constraint = match attr(e, "flags", what)? {
        None => None,
        Some(flags) => {
            let op = Op::parse(&flags)
                .ok_or_else(|| meta_err(what, format!("{name}: unknown flags {flags:?}")))?;
            let epoch = attr(e, "epoch", what)?;
            let version = attr(e, "ver", what)?.unwrap_or_default();
            let release = attr(e, "rel", what)?;
            let epoch = match epoch {
                Some(e) => e
                    .parse()
                    .map_err(|_| meta_err(what, format!("{name}: epoch {e:?} is not a number")))?,
                None => 0,
            };
            Some((
                op,
                Evr {
                    epoch,
                    version,
                    release,
                },
            ))
        }
    };
    Ok(Dep { name, constraint })
}

/// primary.xml: the packages of `arch` and `noarch`, with their archives and pkgids.
pub(super) fn parse_primary(
    text: &str,
    base: &Url,
    repo: &str,
    arch: &str,
) -> Result<Vec<(Candidate, Archive, String)>, RepoError> {
    let what = format!("{base} primary");
    let mut xml = Xml::new(text, what.clone());
    let mut out = Vec::new();
    let mut pkg: Option<Partial> = None;
    // Which dependency list `rpm:entry` elements belong to.
    let mut list: Option<&'static str> = None;
    loop {
        let event = xml.next()?;
        let (e, empty) = match &event {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = e {
            let local = e.local_name().as_ref().to_string();
            match (local.as_str(), pkg.as_mut()) {
                ("package", None) => pkg = Some(Partial::default()),
                ("name", Some(p)) if !empty => p.name = xml.text()?,
                ("arch", Some(p)) if !empty => p.arch = xml.text()?,
                ("version", Some(p)) => {
                    p.evr = Some(Evr {
                        epoch: attr(&e, "epoch", &what)?
                            .map(|v| v.parse().unwrap_or(u32::MAX))
                            .unwrap_or(0),
                        version: attr(&e, "ver", &what)?.unwrap_or_default(),
                        release: attr(&e, "rel", &what)?,
                    })
                }
                ("checksum", Some(p)) if !empty => {
                    let kind = attr(&e, "type", &what)?.unwrap_or_default();
                    let value = xml.text()?;
                    if kind == "sha256" {
                        p.sha256 = Some(sha256(&value, &what)?);
                    }
                }
                ("size", Some(p)) => {
                    p.size = attr(&e, "package", &what)?.and_then(|v| v.parse().ok())
                }
                ("location", Some(p)) => p.href = attr(&e, "href", &what)?,
                ("provides", Some(_)) => list = Some("provides"),
                ("requires", Some(_)) => list = Some("requires"),
                ("conflicts", Some(_)) => list = Some("conflicts"),
                ("obsoletes", Some(_)) => list = Some("obsoletes"),
                ("recommends", Some(_)) => list = Some("recommends"),
                ("suggests" | "supplements" | "enhances", Some(_)) => list = None,
                ("entry", Some(p)) => {
                    let dep = entry(&e, &what)?;
                    match list {
                        Some("provides") => p.c.provides.push(dep),
                        Some("requires") if !dep.name.starts_with("rpmlib(") => {
                            p.c.requires.push(dep)
                        }
                        Some("conflicts") => p.c.conflicts.push(dep),
                        Some("obsoletes") => p.c.obsoletes.push(dep),
                        Some("recommends") => p.c.recommends.push(dep),
                        _ => {}
                    }
                }
                ("file", Some(p)) if !empty => p.c.files.push(xml.text()?),
                _ => {}
            }
            if empty && local == "package" {
                pkg = None;
            }
            continue;
        }
        match event {
            Event::End(e) if e.local_name().as_ref() == "package" => {
                if let Some(p) = pkg.take()
                    && let Some(found) = p.finish(base, repo, arch, &what)?
                {
                    out.push(found);
                }
            }
            Event::End(e)
                if matches!(
                    e.local_name().as_ref(),
                    "provides" | "requires" | "conflicts" | "obsoletes" | "recommends"
                ) =>
            {
                list = None
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
    }
}

/// A package of primary.xml as it is being read.
#[derive(Default)]
struct Partial {
    name: String,
    arch: String,
    evr: Option<Evr>,
    sha256: Option<ObjectId>,
    size: Option<u64>,
    href: Option<String>,
    c: DepsAndFiles,
}

#[derive(Default)]
struct DepsAndFiles {
    requires: Vec<Dep>,
    provides: Vec<Dep>,
    conflicts: Vec<Dep>,
    obsoletes: Vec<Dep>,
    recommends: Vec<Dep>,
    files: Vec<String>,
}

impl Partial {
    fn finish(
        self,
        base: &Url,
        repo: &str,
        arch: &str,
        what: &str,
    ) -> Result<Option<(Candidate, Archive, String)>, RepoError> {
        if self.arch != arch && self.arch != "noarch" {
            return Ok(None);
        }
        let name = self.name;
        if name.is_empty() || name.contains(char::is_whitespace) || name.contains('/') {
            return Err(meta_err(
                what,
                format!("package name {name:?} is not valid"),
            ));
        }
        let missing = |field: &str| meta_err(what, format!("package {name} has no {field}"));
        let evr = self.evr.ok_or_else(|| missing("version"))?;
        let sha256 = self.sha256.ok_or_else(|| missing("sha256 checksum"))?;
        let size = self.size.ok_or_else(|| missing("package size"))?;
        let href = self.href.ok_or_else(|| missing("location"))?;
        let url = join(base, &href)?;
        Ok(Some((
            Candidate {
                name,
                arch: self.arch,
                evr,
                requires: self.c.requires,
                provides: self.c.provides,
                conflicts: self.c.conflicts,
                obsoletes: self.c.obsoletes,
                recommends: self.c.recommends,
                files: self.c.files,
            },
            Archive {
                repo: repo.to_string(),
                url,
                size,
                sha256: ArchiveHash(sha256),
            },
            sha256.to_string(),
        )))
    }
}

/// filelists.xml: for each package (by pkgid), those of its files that are `wanted`.
pub(super) fn parse_filelists(
    text: &str,
    wanted: &HashSet<String>,
    base: &Url,
) -> Result<HashMap<String, Vec<String>>, RepoError> {
    let what = format!("{base} filelists");
    let mut xml = Xml::new(text, what.clone());
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut pkgid: Option<String> = None;
    loop {
        match xml.next()? {
            Event::Start(e) if e.local_name().as_ref() == "package" => {
                pkgid = attr(&e, "pkgid", &what)?.map(|p| p.to_ascii_lowercase());
            }
            Event::Start(e) if e.local_name().as_ref() == "file" => {
                let file = xml.text()?;
                if let Some(id) = &pkgid
                    && wanted.contains(&file)
                {
                    out.entry(id.clone()).or_default().push(file);
                }
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
    }
}
