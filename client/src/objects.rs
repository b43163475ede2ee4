//! Where the FUSE front end reads file contents: [`Fetched`] objects, downloaded from
//! servers into the host's cache (`canopy mount`, the volume plugin, `canopy run
//! --server`), or [`Local`] object files of a store on this machine (`canopy run` of a
//! root in the local store), opened in place, so nothing is copied.

use crate::prefetch::Prefetch;
use crate::profile::Replay;
use crate::remote::Remote;
use canopy_cache::{Cache, Stamp};
use canopy_protocol::ObjectId;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// An object's content, opened.
pub struct Opened {
    /// The file, read-only.
    pub file: File,
    /// For sources whose files can change under them (the cache): the file's stamp when
    /// its content was verified. A reader that finds another stamp on the file opens
    /// the object anew before trusting its bytes.
    pub stamp: Option<Stamp>,
}

impl Opened {
    /// Whether the file is still as it was when verified (always, without a stamp).
    pub fn unchanged(&self) -> bool {
        self.stamp
            .is_none_or(|s| Stamp::of(&self.file).is_ok_and(|now| now == s))
    }
}

/// A source of object contents.
pub trait Objects: Send + Sync {
    /// Opens the content of object `id` (of `size` bytes, as the tree says), which
    /// stays available until a matching [`Objects::release`].
    fn open(&self, id: &ObjectId, size: u64) -> io::Result<Opened>;
    /// Opens object `id` as [`Objects::open`] does if the host holds it already, and
    /// returns `None` rather than fetch it.
    fn cached(&self, id: &ObjectId, size: u64) -> io::Result<Option<Opened>>;
    /// Ends one [`Objects::open`].
    fn release(&self, id: &ObjectId);
    /// Bytes this source holds on the host, for `statfs`.
    fn used(&self) -> u64;
    /// The most bytes this source holds on the host (a bounded cache), if bounded:
    /// what stays pinned between opens takes a share of it.
    fn bound(&self) -> Option<u64> {
        None
    }
}

/// Objects fetched from servers into the host's bounded cache, verified on the way.
pub struct Fetched {
    cache: Arc<Cache>,
    remote: Arc<Remote>,
    rt: tokio::runtime::Handle,
    prefetch: Option<Arc<Prefetch>>,
    replay: Option<Arc<Replay>>,
}

impl Fetched {
    /// Reads through `cache` from `remote`, blocking on `rt` (never call from one of
    /// its worker threads).
    pub fn new(cache: Arc<Cache>, remote: Arc<Remote>, rt: tokio::runtime::Handle) -> Self {
        Fetched {
            cache,
            remote,
            rt,
            prefetch: None,
            replay: None,
        }
    }

    /// Reads what `prefetch` is bringing from it rather than fetching it again.
    pub fn with_prefetch(mut self, prefetch: Arc<Prefetch>) -> Self {
        prefetch.serve_on(self.rt.clone());
        self.prefetch = Some(prefetch);
        self
    }

    /// Reads what a profile's replay is bringing from it rather than fetching it again,
    /// and has the replay fill this cache.
    pub fn with_replay(mut self, replay: Option<Arc<Replay>>) -> Self {
        if let Some(r) = &replay {
            r.attach(self.cache.clone());
        }
        self.replay = replay;
        self
    }
}

impl Objects for Fetched {
    fn open(&self, id: &ObjectId, size: u64) -> io::Result<Opened> {
        if let Some(prefetch) = &self.prefetch {
            prefetch.before_fetch(id);
        }
        if let Some(replay) = &self.replay {
            replay.before_fetch(id);
        }
        let v = self
            .cache
            .get(id, |tmp| {
                let _demand = self.prefetch.as_ref().map(|p| p.demand());
                self.rt.block_on(self.remote.object_to_file(id, size, tmp))
            })
            .map_err(io::Error::other)?;
        if let Some(prefetch) = &self.prefetch {
            prefetch.arrived(id);
        }
        Ok(Opened {
            file: v.file,
            stamp: Some(v.stamp),
        })
    }

    fn cached(&self, id: &ObjectId, _size: u64) -> io::Result<Option<Opened>> {
        Ok(self.cache.cached(id).map(|v| Opened {
            file: v.file,
            stamp: Some(v.stamp),
        }))
    }

    fn release(&self, id: &ObjectId) {
        self.cache.unpin(id);
    }

    fn used(&self) -> u64 {
        self.cache.used()
    }

    fn bound(&self) -> Option<u64> {
        Some(self.cache.max_bytes())
    }
}

/// Where a local object's file is, if the store keeps one.
type PathOf = Box<dyn Fn(&ObjectId) -> Option<PathBuf> + Send + Sync>;

/// Object files of a store on this machine, found by a function from id to path (the
/// store knows its own layout).
pub struct Local {
    path: PathOf,
}

impl Local {
    /// Objects at the paths `path` gives (`None`: the store has no local file for it).
    pub fn new(path: impl Fn(&ObjectId) -> Option<PathBuf> + Send + Sync + 'static) -> Self {
        Local {
            path: Box::new(path),
        }
    }
}

impl Objects for Local {
    /// The store's own file, as the store itself trusts it (no stamp).
    fn open(&self, id: &ObjectId, _size: u64) -> io::Result<Opened> {
        let path = (self.path)(id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("the store has no local file for object {id}"),
            )
        })?;
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Opened { file, stamp: None })
    }

    fn cached(&self, id: &ObjectId, size: u64) -> io::Result<Option<Opened>> {
        self.open(id, size).map(Some)
    }

    fn release(&self, _id: &ObjectId) {}

    fn used(&self) -> u64 {
        0
    }
}
