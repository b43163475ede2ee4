//! The link farm: hard-linkable copies of objects with a checkout's mode and owner.
//!
//! An object file has one mode and owner (0644, the store's), and every hard link to
//! it shares them, so a checkout cannot link an executable or a file owned by another
//! user to the object itself — and must never change the object's mode, which every
//! existing link, every server reading it and an S3 backend (which has no modes) would
//! see. Instead, for each (object, mode, uid, gid) a checkout needs, one file is made
//! beside the objects, once, verified against the object's id while it is written:
//!
//! ```text
//! STORE/links/ab/<object id>-<mode in octal>-<uid>-<gid>
//! ```
//!
//! and every checkout hard-links that file, so two checkouts of a root share the inode
//! of `/bin/bash` and of `libc.so.6`. A farm file no checkout links any more (link
//! count 1) is removed by `gc`. Files with extended attributes are copied, not farmed.
//!
//! A checkout writes the farm files it lacks under temporary names and links those;
//! at its end one `syncfs` makes them durable and they are renamed into the farm
//! ([`Pending::publish`]). A farm file is therefore never seen under its name before
//! its bytes are on disk, and a checkout costs one sync, not one per farm file.
//!
//! A farm file is shared by every checkout linking it, so editing one such checkout in
//! place changes them all and the farm: `fsck` re-hashes farm files and reports a
//! changed one, and `fsck --repair` takes it out of the farm (checkouts made after link
//! a fresh, verified copy).

use crate::store::{IoContext, Store, StoreError};
use canopy_protocol::{BlobId, Hasher};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The farm's directory in a store.
fn dir(store: &Store) -> PathBuf {
    store.path().join("links")
}

/// The farm file of an object with this mode and owner.
fn path(store: &Store, blob: &BlobId, mode: u16, uid: u32, gid: u32) -> PathBuf {
    let hex = blob.0.to_hex();
    dir(store)
        .join(&hex[..2])
        .join(format!("{hex}-{mode:o}-{uid}-{gid}"))
}

/// Farm files one checkout made and links, not yet durable nor in the farm: each
/// farm path with the temporary file holding it. Dropped unpublished (a failed
/// checkout), it removes its temporary files.
#[derive(Default)]
pub struct Pending {
    made: HashMap<PathBuf, PathBuf>,
}

impl Pending {
    /// The file to hard-link for an object with this content, mode and owner: the
    /// farm's, or one made by this checkout (from the object file at `object`, or, for
    /// a backend that keeps no files here such as a bucket, from the backend; checked
    /// against `blob` while copied). `None` when the farm cannot be written (a store
    /// the user may not write): the caller copies instead.
    pub fn file(
        &mut self,
        store: &Store,
        object: Option<&Path>,
        blob: &BlobId,
        size: u64,
        (mode, uid, gid): (u16, u32, u32),
    ) -> Result<Option<PathBuf>, StoreError> {
        let target = path(store, blob, mode, uid, gid);
        if let Ok(m) = fs::symlink_metadata(&target)
            && m.is_file()
            && m.len() == size
            && m.mode() & 0o7777 == u32::from(mode)
            && (m.uid(), m.gid()) == (uid, gid)
        {
            return Ok(Some(target));
        }
        if let Some(tmp) = self.made.get(&target) {
            return Ok(Some(tmp.clone()));
        }
        let parent = target
            .parent()
            .expect("farm files live in a fan-out directory");
        if fs::create_dir_all(parent).is_err() {
            return Ok(None);
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = dir(store).join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let made = copy(store, object, blob, &tmp).and_then(|()| {
            std::os::unix::fs::lchown(&tmp, Some(uid), Some(gid))
                .ctx(|| format!("chown {}", tmp.display()))?;
            // After chown, which clears setuid bits.
            fs::set_permissions(&tmp, fs::Permissions::from_mode(u32::from(mode)))
                .ctx(|| format!("chmod {}", tmp.display()))
        });
        if let Err(e) = made {
            let _ = fs::remove_file(&tmp);
            return match e {
                StoreError::Corrupt { .. } => Err(e),
                // Not allowed to write the farm, or to give the file its owner: copy instead.
                _ => Ok(None),
            };
        }
        self.made.insert(target, tmp.clone());
        Ok(Some(tmp))
    }

    /// Makes the files this checkout made durable (one `syncfs`) and moves them into
    /// the farm, for later checkouts to link.
    pub fn publish(mut self, store: &Store) -> Result<(), StoreError> {
        if self.made.is_empty() {
            return Ok(());
        }
        crate::store::syncfs(&dir(store))?;
        for (target, tmp) in std::mem::take(&mut self.made) {
            match fs::rename(&tmp, &target) {
                Ok(()) => {}
                // A concurrent `gc` swept it as a leftover: the checkout's link keeps
                // its bytes, and a later checkout makes the farm file again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        what: format!("renaming {} to {}", tmp.display(), target.display()),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        for tmp in self.made.values() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Copies an object (its file, else from the backend), checking its content against
/// its id.
fn copy(store: &Store, object: Option<&Path>, blob: &BlobId, to: &Path) -> Result<(), StoreError> {
    let (mut src, from): (Box<dyn Read + Send>, String) = match object {
        Some(path) => (
            Box::new(fs::File::open(path).ctx(|| format!("opening object {}", path.display()))?),
            path.display().to_string(),
        ),
        None => (
            store.objects().get(&blob.0)?,
            format!("{} in {}", blob.0, store.objects().location()),
        ),
    };
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .ctx(|| format!("creating {}", to.display()))?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = src
            .read(&mut buf)
            .ctx(|| format!("reading object {from}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .ctx(|| format!("writing {}", to.display()))?;
    }
    let actual = hasher.finish();
    if actual != blob.0 {
        return Err(StoreError::Corrupt { id: blob.0, actual });
    }
    // Made durable by the checkout's one `syncfs` (see `Pending::publish`).
    Ok(())
}

/// A farm file whose content is not its object's any more.
#[derive(Clone, Debug)]
pub struct Changed {
    /// The farm file.
    pub path: PathBuf,
    /// The object it should hold.
    pub id: canopy_protocol::ObjectId,
    /// What it hashes to now (`None`: unreadable).
    pub actual: Option<canopy_protocol::ObjectId>,
}

/// Every farm file, with the object its name says it holds.
fn files(store: &Store) -> Vec<(PathBuf, canopy_protocol::ObjectId)> {
    let Ok(fans) = fs::read_dir(dir(store)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for fan in fans.flatten() {
        let Ok(entries) = fs::read_dir(fan.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.get(..64).and_then(|hex| hex.parse().ok()) {
                out.push((e.path(), id));
            }
        }
    }
    out
}

/// Farm files whose content no longer hashes to their object's id.
pub fn changed(store: &Store) -> Vec<Changed> {
    use rayon::prelude::*;
    files(store)
        .into_par_iter()
        .filter_map(|(path, id)| {
            let actual = fs::File::open(&path).ok().and_then(|mut f| {
                let mut hasher = Hasher::new();
                std::io::copy(&mut f, &mut hasher).ok()?;
                Some(hasher.finish())
            });
            (actual != Some(id)).then_some(Changed { path, id, actual })
        })
        .collect()
}

/// Takes changed farm files out of the farm (checkouts linking them keep them).
pub fn remove_changed(store: &Store) -> Result<Vec<Changed>, StoreError> {
    let found = changed(store);
    for c in &found {
        fs::remove_file(&c.path).ctx(|| format!("removing {}", c.path.display()))?;
    }
    Ok(found)
}

/// Removes farm files no checkout links any more, and leftovers of interrupted
/// copies; returns how many files and bytes. Only a writer (gc) calls this.
pub fn sweep(store: &Store) -> Result<(u64, u64), StoreError> {
    let root = dir(store);
    let Ok(fans) = fs::read_dir(&root) else {
        return Ok((0, 0));
    };
    let (mut files, mut bytes) = (0, 0);
    for fan in fans {
        let fan = fan.ctx(|| format!("listing {}", root.display()))?.path();
        let leftover = fan
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"));
        let entries: Vec<PathBuf> = if leftover {
            vec![fan]
        } else if fan.is_dir() {
            fs::read_dir(&fan)
                .ctx(|| format!("listing {}", fan.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect()
        } else {
            continue;
        };
        for f in entries {
            let Ok(m) = fs::symlink_metadata(&f) else {
                continue;
            };
            if m.nlink() == 1 || leftover {
                fs::remove_file(&f).ctx(|| format!("removing {}", f.display()))?;
                files += 1;
                bytes += m.len();
            }
        }
    }
    Ok((files, bytes))
}
