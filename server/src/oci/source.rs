//! Where an image's files are: a directory (an OCI layout), or a tar archive of one
//! (an OCI layout tar, a `docker save` archive). A plain tar file is read in place,
//! each member at its offset; standard input and compressed archives are first
//! spooled, decompressed, to an unnamed temporary file, since images are read out of
//! order (index, manifest, config, then layers).
//!
//! Members are found by normalised relative paths only: a name with `..` or a leading
//! `/` never reaches the filesystem, and only regular files are read.

use crate::import::compress::decoder;
use crate::import::{Class, ImportError};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tar::EntryType;

/// Members an image archive may have (a layout holds a few files per layer).
const MAX_MEMBERS: usize = 100_000;
/// Largest header record (PAX, GNU long name) of an image archive.
const MAX_RECORD: u64 = 1 << 20;
/// Symlinks followed to find one member (`docker save` links repeated layers).
const MAX_LINKS: usize = 8;

/// A member of a tar archive.
enum Member {
    /// Regular file content at this offset of the (spooled) archive.
    File { offset: u64, size: u64 },
    /// A symlink or hard link to another member, by normalised name.
    Link(String),
}

enum Kind {
    Dir(PathBuf),
    Tar {
        file: File,
        members: HashMap<String, Member>,
    },
}

/// The files of an image, by relative path.
pub(crate) struct Source {
    kind: Kind,
    /// How the source is named in messages.
    pub(crate) what: String,
}

/// A member opened for reading, and its size.
pub(crate) struct Opened<'a> {
    pub(crate) reader: Box<dyn Read + 'a>,
    pub(crate) size: u64,
}

impl Source {
    /// Opens `path` (`-` for standard input), spooling into `spool_dir` when the
    /// archive must be decompressed or cannot seek; a spool over `max_spool` bytes (a
    /// decompression bomb, an endless stream) is refused before it fills the disk.
    pub(crate) fn open(
        path: &Path,
        spool_dir: &Path,
        max_spool: u64,
    ) -> Result<Source, ImportError> {
        let what = if path == Path::new("-") {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        let io_err = |action: &str, source| ImportError::Io {
            what: format!("{action} {what}"),
            source,
        };
        if path == Path::new("-") {
            let file = spool(io::stdin().lock(), spool_dir, &what, max_spool)?;
            return Source::tar(file, what);
        }
        let meta = fs::metadata(path).map_err(|e| io_err("reading", e))?;
        if meta.is_dir() {
            return Ok(Source {
                kind: Kind::Dir(path.to_path_buf()),
                what,
            });
        }
        let mut file = File::open(path).map_err(|e| io_err("opening", e))?;
        let mut head = [0u8; 6];
        let n = read_head(&mut file, &mut head).map_err(|e| io_err("reading", e))?;
        let compressed = head[..n].starts_with(&[0x1f, 0x8b])
            || head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || head[..n].starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
        let seekable = meta.is_file();
        file.seek(SeekFrom::Start(0))
            .or_else(|e| if seekable { Err(e) } else { Ok(0) })
            .map_err(|e| io_err("reading", e))?;
        if compressed || !seekable {
            let file = spool(file, spool_dir, &what, max_spool)?;
            return Source::tar(file, what);
        }
        Source::tar(file, what)
    }

    /// Indexes the members of a tar archive.
    fn tar(mut file: File, what: String) -> Result<Source, ImportError> {
        file.seek(SeekFrom::Start(0)).map_err(|e| ImportError::Io {
            what: format!("reading {what}"),
            source: e,
        })?;
        let members = index(&mut file, &what)?;
        Ok(Source {
            kind: Kind::Tar { file, members },
            what,
        })
    }

    /// Whether the source has a member `name`.
    pub(crate) fn has(&self, name: &str) -> bool {
        match &self.kind {
            Kind::Dir(dir) => normalise(name).is_some_and(|n| dir.join(n).is_file()),
            Kind::Tar { members, .. } => self.resolve(members, name).is_ok(),
        }
    }

    /// Opens member `name` (a relative path such as `blobs/sha256/…`).
    pub(crate) fn open_member(&self, name: &str) -> Result<Opened<'_>, ImportError> {
        let missing = |detail: &str| {
            ImportError::refused(Class::NotAnImage, format!("{}: {name} {detail}", self.what))
        };
        let norm = normalise(name).ok_or_else(|| {
            ImportError::refused(
                Class::PathTraversal,
                format!("{}: member name {name:?} leaves the image", self.what),
            )
        })?;
        match &self.kind {
            Kind::Dir(dir) => {
                let path = match inside(dir, &norm) {
                    Ok(Some(path)) => path,
                    Ok(None) => {
                        return Err(ImportError::refused(
                            Class::PathTraversal,
                            format!(
                                "{}: {name} is a symlink that leaves the image layout",
                                self.what
                            ),
                        ));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(missing("is missing"));
                    }
                    Err(e) => {
                        return Err(ImportError::Io {
                            what: format!("opening {}", dir.join(&norm).display()),
                            source: e,
                        });
                    }
                };
                // Non-blocking: a FIFO in the layout must not wait for a writer (it is
                // then refused as not a regular file).
                let file = match fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path)
                {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(missing("is missing"));
                    }
                    Err(e) => {
                        return Err(ImportError::Io {
                            what: format!("opening {}", path.display()),
                            source: e,
                        });
                    }
                };
                let meta = file.metadata().map_err(|e| ImportError::Io {
                    what: format!("reading {}", path.display()),
                    source: e,
                })?;
                if !meta.is_file() {
                    return Err(missing("is not a regular file"));
                }
                Ok(Opened {
                    reader: Box::new(file),
                    size: meta.len(),
                })
            }
            Kind::Tar { file, members } => {
                let (offset, size) = self.resolve(members, &norm).map_err(|e| missing(&e))?;
                Ok(Opened {
                    reader: Box::new(At {
                        file,
                        offset,
                        end: offset + size,
                    }),
                    size,
                })
            }
        }
    }

    /// Reads a whole member of at most `max` bytes.
    pub(crate) fn read_small(&self, name: &str, max: u64) -> Result<Vec<u8>, ImportError> {
        let opened = self.open_member(name)?;
        if opened.size > max {
            return Err(ImportError::refused(
                Class::TooLarge,
                format!(
                    "{}: {name} is {} bytes, over the {max}-byte bound",
                    self.what, opened.size
                ),
            ));
        }
        let mut out = Vec::with_capacity(opened.size as usize);
        opened
            .reader
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| ImportError::Io {
                what: format!("reading {name} of {}", self.what),
                source: e,
            })?;
        if out.len() as u64 > max {
            return Err(ImportError::refused(
                Class::TooLarge,
                format!("{}: {name} is over the {max}-byte bound", self.what),
            ));
        }
        Ok(out)
    }

    /// The offset and size of a tar member, following links.
    fn resolve(&self, members: &HashMap<String, Member>, name: &str) -> Result<(u64, u64), String> {
        let mut name = name.to_string();
        for _ in 0..=MAX_LINKS {
            match members.get(&name) {
                Some(Member::File { offset, size }) => return Ok((*offset, *size)),
                Some(Member::Link(target)) => name = target.clone(),
                None => return Err("is missing".into()),
            }
        }
        Err(format!("is behind more than {MAX_LINKS} links"))
    }
}

/// Where member `norm` of layout directory `dir` really is, symlinks resolved:
/// `None` when that is outside the layout (a link to `/etc/shadow` or to `..`), as
/// links out of a tar archive are never followed either.
fn inside(dir: &Path, norm: &str) -> io::Result<Option<PathBuf>> {
    let base = fs::canonicalize(dir)?;
    let path = fs::canonicalize(dir.join(norm))?;
    Ok(path.starts_with(&base).then_some(path))
}

/// Reads up to `buf.len()` bytes, fewer only at the end.
fn read_head(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Copies `reader`, decompressed if it is, into an unnamed file in `dir`: at most
/// `max` bytes.
fn spool(reader: impl Read, dir: &Path, what: &str, max: u64) -> Result<File, ImportError> {
    fs::create_dir_all(dir).map_err(|e| ImportError::Io {
        what: format!("creating {}", dir.display()),
        source: e,
    })?;
    let mut file = tempfile::tempfile_in(dir).map_err(|e| ImportError::Io {
        what: format!("creating a temporary file in {}", dir.display()),
        source: e,
    })?;
    let decoded = decoder(reader, None, what)?;
    let copied = io::copy(&mut decoded.take(max.saturating_add(1)), &mut file)
        .map_err(|e| ImportError::from_read(e, what, false))?;
    if copied > max {
        return Err(ImportError::refused(
            Class::TooLarge,
            format!(
                "{what} unpacks to more than {max} bytes (raise --max-size if the image is that large)"
            ),
        ));
    }
    Ok(file)
}

/// A path as a member name: `./a//b/` → `a/b`; `None` if it has `..` or is absolute
/// or empty.
fn normalise(name: &str) -> Option<String> {
    if name.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            p if p.contains('\0') => return None,
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Joins a symlink's target to the directory of the link, staying inside the archive.
fn link_target(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    normalise(&parts.join("/"))
}

/// Lists the members of a tar archive with their offsets, reading headers only.
fn index(file: &mut File, what: &str) -> Result<HashMap<String, Member>, ImportError> {
    let malformed =
        |detail: String| ImportError::refused(Class::Malformed, format!("{what}: {detail}"));
    let read_err = |e: io::Error| ImportError::from_read(e, what, false);
    let mut archive = tar::Archive::new(&*file);
    let mut members = HashMap::new();
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    for entry in archive.entries_with_seek().map_err(read_err)?.raw(true) {
        let mut entry = entry.map_err(read_err)?;
        let kind = entry.header().entry_type();
        let size = entry.header().entry_size().map_err(read_err)?;
        if matches!(
            kind,
            EntryType::XHeader
                | EntryType::XGlobalHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            if size > MAX_RECORD {
                return Err(ImportError::refused(
                    Class::TooLarge,
                    format!("{what}: a {size}-byte header record exceeds {MAX_RECORD} bytes"),
                ));
            }
            let mut data = Vec::with_capacity(size as usize);
            (&mut entry)
                .take(size)
                .read_to_end(&mut data)
                .map_err(read_err)?;
            let trimmed = || {
                let mut d = data.clone();
                while d.last() == Some(&0) {
                    d.pop();
                }
                d
            };
            match kind {
                EntryType::XHeader => pax = Some(data),
                EntryType::GNULongName => long_name = Some(trimmed()),
                EntryType::GNULongLink => long_link = Some(trimmed()),
                _ => {}
            }
            continue;
        }
        let mut raw_name = long_name
            .take()
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let mut raw_link = long_link
            .take()
            .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        if let Some(pax) = pax.take() {
            for ext in tar::PaxExtensions::new(&pax) {
                let ext = ext.map_err(|e| malformed(format!("bad PAX record: {e}")))?;
                match ext.key_bytes() {
                    b"path" => raw_name = ext.value_bytes().to_vec(),
                    b"linkpath" => raw_link = Some(ext.value_bytes().to_vec()),
                    _ => {}
                }
            }
        }
        let text = |b: Vec<u8>| {
            String::from_utf8(b).map_err(|_| malformed("a member name is not UTF-8".into()))
        };
        let Some(name) = normalise(&text(raw_name)?) else {
            continue; // "./" itself, or a name no lookup can ask for
        };
        let member = match kind {
            EntryType::Regular | EntryType::Continuous => Member::File {
                offset: entry.raw_file_position(),
                size,
            },
            EntryType::Symlink => {
                let target = text(raw_link.unwrap_or_default())?;
                match link_target(&name, &target) {
                    Some(t) => Member::Link(t),
                    None => continue, // points outside the archive: never followed
                }
            }
            EntryType::Link => match normalise(&text(raw_link.unwrap_or_default())?) {
                Some(t) => Member::Link(t),
                None => continue,
            },
            _ => continue,
        };
        if members.insert(name.clone(), member).is_some() {
            return Err(ImportError::refused(
                Class::DuplicateEntry,
                format!("{what}: member {name} appears twice"),
            ));
        }
        if members.len() > MAX_MEMBERS {
            return Err(ImportError::refused(
                Class::TooLarge,
                format!("{what}: more than {MAX_MEMBERS} members"),
            ));
        }
    }
    Ok(members)
}

/// A region of a file, read with positioned reads (several may be open at once).
struct At<'a> {
    file: &'a File,
    offset: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.end - self.offset).min(buf.len() as u64) as usize;
        if left == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..left], self.offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a member",
            ));
        }
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside() {
        assert_eq!(
            normalise("./blobs//sha256/x").as_deref(),
            Some("blobs/sha256/x")
        );
        assert_eq!(normalise("../x"), None);
        assert_eq!(normalise("/etc/passwd"), None);
        assert_eq!(normalise("./"), None);
        assert_eq!(
            link_target("a/layer.tar", "../b/layer.tar").as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(link_target("a/layer.tar", "../../etc/passwd"), None);
        assert_eq!(link_target("a/layer.tar", "/etc/passwd"), None);
    }
}
