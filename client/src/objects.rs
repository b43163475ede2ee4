//! Where the FUSE front end reads file contents: [`Fetched`] objects, downloaded from
//! servers into the host's cache (`canopy mount`, the volume plugin, `canopy run
//! --server`), or [`Local`] object files of a store on this machine (`canopy run` of a
//! root in the local store), opened in place, so nothing is copied.

use crate::cache::Cache;
use crate::remote::Remote;
use canopy_protocol::ObjectId;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A source of object contents.
pub trait Objects: Send + Sync {
    /// Opens the content of object `id` (of `size` bytes, as the tree says), which
    /// stays available until a matching [`Objects::release`].
    fn open(&self, id: &ObjectId, size: u64) -> io::Result<File>;
    /// Ends one [`Objects::open`].
    fn release(&self, id: &ObjectId);
    /// Bytes this source holds on the host, for `statfs`.
    fn used(&self) -> u64;
}

/// Objects fetched from servers into the host's bounded cache, verified on the way.
pub struct Fetched {
    cache: Arc<Cache>,
    remote: Arc<Remote>,
    rt: tokio::runtime::Handle,
}

impl Fetched {
    /// Reads through `cache` from `remote`, blocking on `rt` (never call from one of
    /// its worker threads).
    pub fn new(cache: Arc<Cache>, remote: Arc<Remote>, rt: tokio::runtime::Handle) -> Self {
        Fetched { cache, remote, rt }
    }
}

impl Objects for Fetched {
    fn open(&self, id: &ObjectId, size: u64) -> io::Result<File> {
        let path = self
            .cache
            .get(id, |tmp| {
                self.rt.block_on(self.remote.object_to_file(id, size, tmp))
            })
            .map_err(io::Error::other)?;
        File::open(&path).inspect_err(|_| self.cache.unpin(id))
    }

    fn release(&self, id: &ObjectId) {
        self.cache.unpin(id);
    }

    fn used(&self) -> u64 {
        self.cache.used()
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
    fn open(&self, id: &ObjectId, _size: u64) -> io::Result<File> {
        let path = (self.path)(id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("the store has no local file for object {id}"),
            )
        })?;
        File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    fn release(&self, _id: &ObjectId) {}

    fn used(&self) -> u64 {
        0
    }
}
