//! The two streams of a configure: the prepared tree to the worker (each content once,
//! checked against its id as it is read), and the configured tree back — built into the
//! store as it arrives, host identity left out, every content checked, and compared path
//! by path with what was sent to measure the configuration layer.

use super::stream::{self, Kind, Record};
use super::worker::{Ended, Job};
use super::{ConfigureError, Layer, Stripped};
use crate::import::builder::{ArchivePath, TreeBuilder};
use crate::import::{ImportError, Limits};
use crate::store::{BlobError, StoreError, Txn};
use canopy_protocol::{
    BlobId, Entry, EntryKind, Keep, Meta, ObjectId, TreeId, host_identity, identity,
};
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};

pub(super) type Exchanged = (TreeId, Ended, Vec<Stripped>, Layer);

/// Sends the job and the tree, then reads the configured tree back.
pub(super) fn exchange(
    txn: &mut Txn<'_>,
    tree: &TreeId,
    job: &Job,
    stdin: fs::File,
    stdout: fs::File,
) -> Result<Exchanged, ConfigureError> {
    let sent = {
        let mut w = BufWriter::with_capacity(1 << 20, stdin);
        let wire = |e: io::Error| ConfigureError::Worker(format!("sending the root: {e}"));
        serde_json::to_writer(&mut w, job).map_err(|e| ConfigureError::Worker(e.to_string()))?;
        w.write_all(b"\n").map_err(wire)?;
        let mut sender = Sender {
            txn,
            out: &mut w,
            sent: HashMap::new(),
            before: HashMap::new(),
        };
        sender.root(tree).map_err(|e| match e {
            SendError::Io(e) => wire(e),
            SendError::Store(e) => e.into(),
        })?;
        let Sender { sent, before, .. } = sender;
        stream::end(&mut w).map_err(wire)?;
        w.flush().map_err(wire)?;
        (sent, before)
    };
    let (sent, before) = sent;
    let mut r = BufReader::with_capacity(1 << 20, stdout);
    let (tree, stripped, layer) = receive(txn, &mut r, &sent, before)?;
    let mut line = Vec::new();
    r.take(1 << 16)
        .read_until(b'\n', &mut line)
        .map_err(|e| ConfigureError::Worker(format!("reading the result: {e}")))?;
    let ended: Ended = serde_json::from_slice(&line)
        .map_err(|e| ConfigureError::Worker(format!("reading the result: {e}")))?;
    Ok((tree, ended, stripped, layer))
}

enum SendError {
    Io(io::Error),
    Store(StoreError),
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        SendError::Io(e)
    }
}

impl From<StoreError> for SendError {
    fn from(e: StoreError) -> Self {
        SendError::Store(e)
    }
}

/// Streams a stored tree, each content once.
struct Sender<'a, 't, W> {
    txn: &'a Txn<'t>,
    out: &'a mut W,
    /// Content sent so far.
    sent: HashMap<ObjectId, ()>,
    /// Every path sent with its identity, to measure what configuring changed.
    before: HashMap<Vec<u8>, ObjectId>,
}

/// The identity of a directory's own metadata (its content is compared path by path).
fn dir_identity(meta: &Meta) -> ObjectId {
    identity(
        &EntryKind::Dir {
            tree: TreeId(ObjectId::from_bytes([0; 32])),
        },
        meta,
    )
}

impl<W: Write> Sender<'_, '_, W> {
    fn root(&mut self, tree: &TreeId) -> Result<(), SendError> {
        stream::write(
            self.out,
            &Record {
                path: Vec::new(),
                meta: Meta::ROOT_DIR,
                kind: Kind::Dir,
            },
        )?;
        self.dir(tree, &mut Vec::new())
    }

    fn dir(&mut self, tree: &TreeId, path: &mut Vec<u8>) -> Result<(), SendError> {
        for Entry { name, meta, kind } in self.txn.tree(tree)?.into_entries() {
            let len = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            let sig = match &kind {
                EntryKind::Dir { .. } => dir_identity(&meta),
                other => identity(other, &meta),
            };
            self.before.insert(path.clone(), sig);
            match kind {
                EntryKind::Dir { tree } => {
                    stream::write(
                        self.out,
                        &Record {
                            path: path.clone(),
                            meta,
                            kind: Kind::Dir,
                        },
                    )?;
                    self.dir(&tree, path)?;
                }
                EntryKind::File { size, blob } => {
                    let inline = self.sent.insert(blob.0, ()).is_none();
                    stream::write(
                        self.out,
                        &Record {
                            path: path.clone(),
                            meta,
                            kind: Kind::File { size, blob, inline },
                        },
                    )?;
                    if inline {
                        let mut reader = HashingReader {
                            inner: self.txn.open_object(&blob.0)?.take(size),
                            hasher: canopy_protocol::Hasher::new(),
                        };
                        let copied = io::copy(&mut reader, self.out)?;
                        let actual = reader.hasher.finish();
                        if copied != size || actual != blob.0 {
                            return Err(SendError::Store(StoreError::Corrupt {
                                id: blob.0,
                                actual,
                            }));
                        }
                    }
                }
                other => stream::write(
                    self.out,
                    &Record {
                        path: path.clone(),
                        meta,
                        kind: Kind::Other(other),
                    },
                )?,
            }
            path.truncate(len);
        }
        Ok(())
    }
}

/// Hashes what passes through, so a damaged object is caught as it is sent.
struct HashingReader<R> {
    inner: R,
    hasher: canopy_protocol::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// For a symlink to a path the host identity list removes (c_rehash's
/// `/etc/ssl/certs/HASH.0 -> ssl-cert-snakeoil.pem`): it is removed too, since it would
/// dangle in the shared root, and each host makes its own with the file.
fn link_to_identity(path: &str, kind: &Kind) -> Option<(Keep, String)> {
    let Kind::Other(EntryKind::Symlink { target }) = kind else {
        return None;
    };
    let target = String::from_utf8_lossy(target);
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    let mut parts: Vec<&str> = Vec::new();
    let joined = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{dir}/{target}")
    };
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let rule = host_identity(&format!("/{}", parts.join("/")))?;
    (rule.keep == Keep::Nothing).then(|| (Keep::Nothing, format!("link to a {}", rule.what)))
}

/// Builds the configured tree from the worker's stream, leaving out host identity.
fn receive(
    txn: &mut Txn<'_>,
    r: &mut impl Read,
    sent: &HashMap<ObjectId, ()>,
    mut before: HashMap<Vec<u8>, ObjectId>,
) -> Result<(TreeId, Vec<Stripped>, Layer), ConfigureError> {
    let bad = |e: io::Error| ConfigureError::Worker(format!("reading the configured root: {e}"));
    let mut builder = TreeBuilder::new(Limits::default().max_entries);
    let mut stripped = Vec::new();
    let mut layer = Layer::default();
    let mut skipping: Option<Vec<u8>> = None;
    let (empty, _) = txn
        .put_blob(&b""[..])
        .map_err(|e| ImportError::from_blob(e, "an empty file"))?;
    while let Some(rec) = stream::read(r).map_err(bad)? {
        let inline_size = match &rec.kind {
            Kind::File {
                size, inline: true, ..
            } => *size,
            _ => 0,
        };
        if rec.path.is_empty() {
            continue;
        }
        let under_skipped = skipping
            .as_ref()
            .is_some_and(|s| rec.path.starts_with(s) && rec.path.get(s.len()) == Some(&b'/'));
        if under_skipped {
            io::copy(&mut r.take(inline_size), &mut io::sink()).map_err(bad)?;
            continue;
        }
        skipping = None;
        let shown = format!("/{}", String::from_utf8_lossy(&rec.path));
        let rule = host_identity(&shown)
            .map(|r| (r.keep, r.what.to_string()))
            .or_else(|| link_to_identity(&shown, &rec.kind));
        let (meta, kind) = match (rule, &rec.kind) {
            (Some((keep, what)), kind) => {
                let file = matches!(kind, Kind::File { .. });
                let size = match kind {
                    Kind::File { size, .. } => *size,
                    _ => 0,
                };
                let action = match keep {
                    Keep::Nothing => Some("removed"),
                    Keep::EmptyFile if file && size == 0 => None,
                    Keep::EmptyFile if file => Some("emptied"),
                    Keep::EmptyFile => Some("removed"),
                    Keep::EmptyFiles if file && size > 0 => Some("removed"),
                    Keep::EmptyFiles => None,
                };
                if let Some(action) = action {
                    io::copy(&mut r.take(inline_size), &mut io::sink()).map_err(bad)?;
                    stripped.push(Stripped {
                        path: shown.clone(),
                        what,
                        action: action.to_string(),
                    });
                    if action == "removed" {
                        if matches!(kind, Kind::Dir) {
                            skipping = Some(rec.path.clone());
                        }
                        continue;
                    }
                    (
                        rec.meta.clone(),
                        EntryKind::File {
                            size: 0,
                            blob: empty,
                        },
                    )
                } else {
                    content(txn, r, &rec, sent)?
                }
            }
            _ => content(txn, r, &rec, sent)?,
        };
        let sig = match &kind {
            EntryKind::Dir { .. } => dir_identity(&meta),
            other => identity(other, &meta),
        };
        match before.remove(&rec.path) {
            None => layer.added += 1,
            Some(old) if old != sig => layer.changed += 1,
            Some(_) => {}
        }
        if let (EntryKind::File { size, .. }, Kind::File { inline: true, .. }) = (&kind, &rec.kind)
        {
            layer.new_bytes += size;
        }
        let path = ArchivePath::parse(&rec.path)?;
        match kind {
            EntryKind::Dir { .. } => builder.add_dir(&path, meta)?,
            kind => builder.add_leaf(&path, meta, kind)?,
        }
    }
    layer.removed = before.len() as u64;
    stripped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((builder.write(txn)?, stripped, layer))
}

/// The entry a record stands for, its inline content stored and checked.
fn content(
    txn: &mut Txn<'_>,
    r: &mut impl Read,
    rec: &Record,
    sent: &HashMap<ObjectId, ()>,
) -> Result<(Meta, EntryKind), ConfigureError> {
    let kind = match &rec.kind {
        Kind::Dir => EntryKind::Dir {
            tree: TreeId(ObjectId::from_bytes([0; 32])),
        },
        Kind::Other(kind) => kind.clone(),
        Kind::File { size, blob, inline } => {
            if *inline {
                let (stored, got) = txn.put_blob(r.take(*size)).map_err(|e| match e {
                    BlobError::Source(e) => {
                        ConfigureError::Worker(format!("reading the configured root: {e}"))
                    }
                    BlobError::Store(e) => e.into(),
                })?;
                if got != *size || stored != *blob {
                    return Err(ConfigureError::Worker(format!(
                        "/{}: the content sent is not the content announced",
                        String::from_utf8_lossy(&rec.path)
                    )));
                }
            } else if !sent.contains_key(&blob.0) {
                return Err(ConfigureError::Worker(format!(
                    "/{}: refers to content canopy never sent",
                    String::from_utf8_lossy(&rec.path)
                )));
            }
            EntryKind::File {
                size: *size,
                blob: BlobId(blob.0),
            }
        }
    };
    Ok((rec.meta.clone(), kind))
}
