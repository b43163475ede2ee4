//! The byte stream between canopy and its configure worker: tree entries one after
//! another, each with its path, metadata and — for files — content hash and, when the
//! other side does not have that content yet, the content itself.
//!
//! ```text
//! record := u8 kind                 0 end, 1 dir, 2 file, 3 symlink, 4 char, 5 block,
//!                                   6 fifo, 7 socket
//!           u32 length, path        relative to the root, `/`-separated ("" is the root)
//!           u16 mode, u32 uid, u32 gid
//!           u32 count, per xattr: u32 length, name, u32 length, value
//!           file:    u64 size, 32-byte SHA-256, u8 inline, [size bytes if inline]
//!           symlink: u32 length, target
//!           device:  u32 major, u32 minor
//! ```
//!
//! Integers are big-endian. The reader bounds every length, because one side is the
//! sandbox: a worker whose root was changed by package scripts is not trusted to send
//! sane records.

use canopy_protocol::{BlobId, EntryKind, Meta, ObjectId};
use std::io::{self, Read, Write};

/// Longest path accepted (a path of 16 components of 255 bytes is well within).
const PATH_MAX: usize = 16 * 1024;
/// Most xattrs on one entry.
const XATTRS_MAX: usize = 256;
/// Longest xattr name and value.
const XATTR_NAME_MAX: usize = 255;
const XATTR_VALUE_MAX: usize = 64 * 1024;
/// Longest symlink target.
const TARGET_MAX: usize = 4095;

/// What one record says about an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory.
    Dir,
    /// A regular file; `inline` when its bytes follow the record.
    File {
        size: u64,
        blob: BlobId,
        inline: bool,
    },
    /// A symlink, a device, a fifo or a socket (never a file or directory).
    Other(EntryKind),
}

/// One entry of a tree in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// Relative path, `/`-separated; empty for the root.
    pub(crate) path: Vec<u8>,
    pub(crate) meta: Meta,
    pub(crate) kind: Kind,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Writes a record's header; a file's inline bytes are the caller's to write next.
pub(crate) fn write(w: &mut impl Write, r: &Record) -> io::Result<()> {
    let code: u8 = match &r.kind {
        Kind::Dir => 1,
        Kind::File { .. } => 2,
        Kind::Other(EntryKind::Symlink { .. }) => 3,
        Kind::Other(EntryKind::CharDevice { .. }) => 4,
        Kind::Other(EntryKind::BlockDevice { .. }) => 5,
        Kind::Other(EntryKind::Fifo) => 6,
        Kind::Other(EntryKind::Socket) => 7,
        Kind::Other(EntryKind::File { .. } | EntryKind::Dir { .. }) => {
            return Err(invalid("files and directories are not Kind::Other"));
        }
    };
    w.write_all(&[code])?;
    bytes(w, &r.path)?;
    w.write_all(&r.meta.mode.to_be_bytes())?;
    w.write_all(&r.meta.uid.to_be_bytes())?;
    w.write_all(&r.meta.gid.to_be_bytes())?;
    w.write_all(&(r.meta.xattrs.len() as u32).to_be_bytes())?;
    for (name, value) in &r.meta.xattrs {
        bytes(w, name)?;
        bytes(w, value)?;
    }
    match &r.kind {
        Kind::File { size, blob, inline } => {
            w.write_all(&size.to_be_bytes())?;
            w.write_all(blob.0.as_bytes())?;
            w.write_all(&[*inline as u8])
        }
        Kind::Other(EntryKind::Symlink { target }) => bytes(w, target),
        Kind::Other(
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor },
        ) => {
            w.write_all(&major.to_be_bytes())?;
            w.write_all(&minor.to_be_bytes())
        }
        _ => Ok(()),
    }
}

/// Writes the end marker.
pub(crate) fn end(w: &mut impl Write) -> io::Result<()> {
    w.write_all(&[0])
}

fn bytes(w: &mut impl Write, b: &[u8]) -> io::Result<()> {
    w.write_all(&(b.len() as u32).to_be_bytes())?;
    w.write_all(b)
}

fn u8_(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn u16_(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn u32_(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn u64_(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_bytes(r: &mut impl Read, max: usize, what: &str) -> io::Result<Vec<u8>> {
    let n = u32_(r)? as usize;
    if n > max {
        return Err(invalid(format!("{what} of {n} bytes exceeds {max}")));
    }
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// Reads the next record's header (`None` at the end marker). A file's inline bytes
/// follow; the caller reads exactly `size` of them.
pub(crate) fn read(r: &mut impl Read) -> io::Result<Option<Record>> {
    let code = u8_(r)?;
    if code == 0 {
        return Ok(None);
    }
    if code > 7 {
        return Err(invalid(format!("unknown record kind {code}")));
    }
    let path = read_bytes(r, PATH_MAX, "a path")?;
    let mode = u16_(r)?;
    if mode & !0o7777 != 0 {
        return Err(invalid(format!("mode {mode:o} has file-type bits")));
    }
    let (uid, gid) = (u32_(r)?, u32_(r)?);
    let n = u32_(r)? as usize;
    if n > XATTRS_MAX {
        return Err(invalid(format!("{n} xattrs on one entry")));
    }
    let mut xattrs = Vec::with_capacity(n);
    for _ in 0..n {
        let name = read_bytes(r, XATTR_NAME_MAX, "an xattr name")?;
        let value = read_bytes(r, XATTR_VALUE_MAX, "an xattr value")?;
        xattrs.push((name, value));
    }
    let meta = Meta {
        mode,
        uid,
        gid,
        xattrs,
    };
    let kind = match code {
        1 => Kind::Dir,
        2 => {
            let size = u64_(r)?;
            let mut id = [0u8; 32];
            r.read_exact(&mut id)?;
            let inline = match u8_(r)? {
                0 => false,
                1 => true,
                b => return Err(invalid(format!("inline flag {b}"))),
            };
            Kind::File {
                size,
                blob: BlobId(ObjectId::from_bytes(id)),
                inline,
            }
        }
        3 => Kind::Other(EntryKind::Symlink {
            target: read_bytes(r, TARGET_MAX, "a symlink target")?,
        }),
        4 | 5 => {
            let (major, minor) = (u32_(r)?, u32_(r)?);
            Kind::Other(if code == 4 {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            })
        }
        6 => Kind::Other(EntryKind::Fifo),
        _ => Kind::Other(EntryKind::Socket),
    };
    Ok(Some(Record { path, meta, kind }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = vec![
            Record {
                path: b"".to_vec(),
                meta: Meta::default(),
                kind: Kind::Dir,
            },
            Record {
                path: b"etc/passwd".to_vec(),
                meta: Meta {
                    mode: 0o4755,
                    uid: 33,
                    gid: 4,
                    xattrs: vec![(b"security.capability".to_vec(), vec![1, 2, 3])],
                },
                kind: Kind::File {
                    size: 3,
                    blob: BlobId::of(b"abc"),
                    inline: true,
                },
            },
            Record {
                path: b"bin".to_vec(),
                meta: Meta::default(),
                kind: Kind::Other(EntryKind::Symlink {
                    target: b"usr/bin".to_vec(),
                }),
            },
        ];
        let mut buf = Vec::new();
        for r in &records {
            write(&mut buf, r).unwrap();
        }
        end(&mut buf).unwrap();
        let mut rd = &buf[..];
        let mut back = Vec::new();
        while let Some(r) = read(&mut rd).unwrap() {
            back.push(r);
        }
        assert_eq!(back, records);
        assert!(read(&mut &[9u8][..]).is_err());
    }
}
