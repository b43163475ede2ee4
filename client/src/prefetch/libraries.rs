//! A starting program's libraries, fetched as soon as its executable is in the cache.
//!
//! A program's files are otherwise fetched one after the other, each a wait for a
//! whole object: the kernel reads the executable, then its interpreter (the dynamic
//! loader), which reads the root's `/etc/ld.so.cache`, then each library the program
//! needs, then theirs. When a file that a program opened is in the cache (verified)
//! and is an ELF object, its headers say what comes next ([`elf`](super::elf)): its
//! interpreter and the libraries it needs are found in the same root as the loader
//! would find them (`DT_RPATH`/`DT_RUNPATH` with `$ORIGIN`, the root's `ld.so.cache`
//! ([`ldcache`](super::ldcache)), then the loader's default directories), through the
//! view's own trees, never the host's files, and those the cache lacks are fetched at
//! once, side by side. Each library is read in turn when it arrives, so one that needs
//! another (libssl, libcrypto) brings it too; a python extension module that a program
//! opens brings its libraries the same way. What almost every program of a root needs
//! (its loader, `ld.so.cache` and C library) does not wait for the first executable to
//! arrive: it is fetched as soon as that executable is opened ([`common`]).
//!
//! This is demand a moment early, not a guess: it is not held back for readers'
//! fetches as packs are ([`crate::demand`]), and packs give way to it as to them. It is
//! bounded all the same: at most [`FILES`] files fetched, [`EXAMINED`] read and
//! [`PROGRAM_STEPS`] path components walked or names looked up for one program (each
//! search directory resolved once per object; reading and resolving run on the
//! blocking pool, never on the workers serving readers), [`REQUESTS`] requests and [`IN_FLIGHT`](super::IN_FLIGHT) bytes in
//! flight, within the share of the cache for what was fetched ahead of use, put in
//! only where evicting unpinned objects makes room ([`Cache::has_room`]), through the
//! cache's one fetch per object ([`Cache::get`]); each file
//! once per root version. Every object is verified as it streams in; one that fails is
//! not cached and its reader fetches it alone (and gets EIO if it is bad). A reader
//! that reaches a file under way waits for it and makes it go at once if it still
//! waits for its turn ([`crate::arrivals`]); a file a reader or a profile's replay is
//! fetching already is left to them.
//!
//! [`Cache::has_room`]: canopy_cache::Cache::has_room
//! [`Cache::get`]: canopy_cache::Cache::get

use super::Prefetch;
use super::elf::{self, Needs};
use super::ldcache::LdCache;
use crate::arrivals::Bounds;
use canopy_protocol::{Entry, EntryKind, ObjectId, TreeId};
use lru::LruCache;
use search::{Dirs, Steps, default_search, locate, resolve, search_dirs};
use std::io::Read;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::task::JoinSet;

/// Most files fetched for one program.
pub const FILES: usize = 32;
/// Most objects read for one program (those cached already too).
pub const EXAMINED: usize = 64;
/// Requests for libraries in flight at once.
pub const REQUESTS: usize = 8;
/// Largest `ld.so.cache` read (real ones are tens of KiB, a full distribution's a few
/// hundred).
const LD_CACHE_MAX: u64 = 2 << 20;
/// Where the loader finds its cache in a root.
const LD_CACHE: &[u8] = b"/etc/ld.so.cache";
/// Most path components walked and names looked up for one program, all paths
/// together.
const PROGRAM_STEPS: usize = 16 << 10;
/// Interpreters (`PT_INTERP`) remembered from programs read, tried first as a root's
/// loader ([`common`]).
const INTERPS: usize = 4;
/// Root versions remembered as having had what every program needs fetched.
const ROOTS: usize = 64;
/// Files opened and not yet in the cache, remembered until they arrive.
const WAITING: usize = 1 << 10;
/// (root, object) pairs remembered as examined.
const SEEN: usize = 1 << 14;
/// Roots whose `ld.so.cache` is kept.
const LD_CACHES: usize = 16;

/// A regular file found in a root.
#[derive(Clone, Debug)]
struct Found {
    /// The tree of the root it was found in.
    root: TreeId,
    /// The names of the directories from the root down to its own.
    dir: Vec<Vec<u8>>,
    blob: ObjectId,
    size: u64,
}

/// What a root's `ld.so.cache` says, read once (`None`: it is damaged).
type LdCell = Arc<tokio::sync::OnceCell<Option<Arc<LdCache>>>>;

/// A mount's state for library prefetch.
pub(super) struct Libraries {
    /// The runtime that serves readers' fetches: libraries are demand, not to wait
    /// behind prefetch's lower-priority thread.
    handle: OnceLock<tokio::runtime::Handle>,
    /// Files opened whose content has not arrived yet, by object.
    waiting: Mutex<LruCache<ObjectId, Found>>,
    /// (root tree, directory inode, object) opened already: a program opening one
    /// file again and again costs one look-up each time.
    opened: Mutex<LruCache<(TreeId, u64, ObjectId), ()>>,
    /// (root, object) pairs examined or fetched already.
    seen: Mutex<LruCache<(TreeId, ObjectId), ()>>,
    /// Each root's `ld.so.cache`, by root tree and ELF machine.
    ld_caches: Mutex<LruCache<(TreeId, u16), LdCell>>,
    /// Interpreters of programs read (absolute paths), with their ELF machine and
    /// class, most recent first.
    interps: Mutex<LruCache<Vec<u8>, (u16, bool)>>,
    /// Root versions (trees) whose loader, `ld.so.cache` and C library were asked for
    /// ([`common`]).
    roots: Mutex<LruCache<TreeId, ()>>,
    /// Bytes of library fetches under way ([`fetch::Reserved`]).
    reserved: Mutex<u64>,
    bounds: Bounds,
}

impl Default for Libraries {
    fn default() -> Self {
        let n = |n: usize| NonZeroUsize::new(n).expect("non-zero");
        Libraries {
            handle: OnceLock::new(),
            waiting: Mutex::new(LruCache::new(n(WAITING))),
            opened: Mutex::new(LruCache::new(n(SEEN))),
            seen: Mutex::new(LruCache::new(n(SEEN))),
            ld_caches: Mutex::new(LruCache::new(n(LD_CACHES))),
            interps: Mutex::new(LruCache::new(n(INTERPS))),
            roots: Mutex::new(LruCache::new(n(ROOTS))),
            reserved: Mutex::new(0),
            bounds: Bounds::new(REQUESTS),
        }
    }
}

impl Prefetch {
    /// Has library prefetch run on `handle`, the runtime readers' fetches run on.
    pub fn serve_on(&self, handle: tokio::runtime::Handle) {
        let _ = self.libraries.handle.set(handle);
    }

    /// A file of directory `parent`, its `entry`, is being opened: if it may be an ELF
    /// object, its libraries are fetched once it is in the cache; if it is an
    /// executable the cache lacks, what almost every program of its root needs is
    /// fetched at once, beside it ([`common`]).
    pub(super) fn opening_object(self: &Arc<Self>, parent: u64, entry: &Entry) {
        let Some((blob, size, executable)) = maybe_elf(entry) else {
            return;
        };
        let blob = &blob;
        let Some((root, dir)) = self.view.dir_place(parent) else {
            return;
        };
        // Keyed by the root's tree too: directory inodes stay the same across versions,
        // and a program opened again after a switch is examined in the new version.
        let again = {
            let mut opened = self.libraries.opened.lock().expect("prefetch lock");
            opened.put((root, parent, *blob), ()).is_some()
        };
        if again {
            return;
        }
        if self
            .libraries
            .seen
            .lock()
            .expect("prefetch lock")
            .contains(&(root, *blob))
        {
            return;
        }
        let found = Found {
            root,
            dir,
            blob: *blob,
            size,
        };
        if self.cache.contains(blob) {
            self.start_program(found);
        } else {
            let mut waiting = self.libraries.waiting.lock().expect("prefetch lock");
            waiting.put(*blob, found);
            drop(waiting);
            if executable {
                self.expect_program(root);
            }
        }
    }

    /// Object `id` is in the cache, fetched for a reader: if a program opened it, its
    /// libraries are fetched now.
    pub fn arrived(self: &Arc<Self>, id: &ObjectId) {
        let found = self
            .libraries
            .waiting
            .lock()
            .expect("prefetch lock")
            .pop(id);
        if let Some(found) = found {
            self.start_program(found);
        }
    }

    fn start_program(self: &Arc<Self>, found: Found) {
        let this = self.clone();
        self.spawn_library_task(async move { this.program(found).await });
    }

    /// Runs `task` on the runtime readers' fetches run on (prefetch's own before that
    /// is known).
    fn spawn_library_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        match (self.libraries.handle.get(), &self.rt) {
            (Some(h), _) => drop(h.spawn(task)),
            (None, Some(rt)) => drop(rt.spawn(task)),
            (None, None) => {}
        }
    }

    /// Fetches what the ELF object `first` asks the loader for, and what that asks
    /// for, within [`FILES`] fetched, [`EXAMINED`] read and [`PROGRAM_STEPS`] spent
    /// resolving paths. Objects are read and paths resolved on the blocking pool, not
    /// on the workers that serve readers' fetches.
    async fn program(self: Arc<Self>, first: Found) {
        let root = first.root;
        if !self.first_time(root, &first.blob) {
            return;
        }
        let this = self.clone();
        let first_read = tokio::task::spawn_blocking(move || {
            let needs = this.needs_of(&first)?;
            let mut steps = Steps(PROGRAM_STEPS);
            // The interpreter first: the kernel maps it right after the executable.
            let interp = needs
                .interp
                .as_deref()
                .filter(|p| p.starts_with(b"/"))
                .and_then(|p| resolve(&this.view, root, p, &mut steps));
            let ld_path = resolve(&this.view, root, LD_CACHE, &mut steps);
            Some((first, needs, interp, ld_path, steps))
        })
        .await;
        let Ok(Some((first, needs, interp, ld_path, steps))) = first_read else {
            return;
        };
        let (machine, wide) = (needs.machine, needs.wide);
        if let (Some(path), Some(_)) = (&needs.interp, &interp) {
            let mut interps = self.libraries.interps.lock().expect("prefetch lock");
            interps.put(path.clone(), (machine, wide));
        }
        let start = Start {
            root,
            interp,
            ld_path,
            steps,
            machine,
            wide,
        };
        self.fetch_needs(start, vec![(first, Some(needs))]).await;
    }

    /// Fetches `start`'s interpreter and `ld.so.cache`, then what the objects of
    /// `batch` ask the loader for (their needs given, or read once they are cached),
    /// and what that asks for, within [`FILES`] fetched, [`EXAMINED`] read and the
    /// path steps left.
    async fn fetch_needs(self: &Arc<Self>, start: Start, mut batch: Vec<(Found, Option<Needs>)>) {
        let Start {
            root,
            interp,
            ld_path,
            steps,
            machine,
            wide,
        } = start;
        let mut budget = Budget {
            fetches: FILES,
            reads: EXAMINED - 1,
        };
        let mut fetches: JoinSet<Option<Found>> = JoinSet::new();
        let mut examine: Vec<Found> = Vec::new();
        if let Some(f) = interp {
            self.want(f, &mut budget, &mut fetches, &mut examine);
        }
        let ld = match ld_path {
            Some(f) => self.ld_cache(root, machine, f).await,
            None => None,
        };
        let mut reading = Reading {
            ld,
            defaults: None,
            steps,
            machine,
            wide,
        };
        let mut steps_left = PROGRAM_STEPS;
        loop {
            if !batch.is_empty() {
                let this = self.clone();
                let Ok((wanted, back)) = tokio::task::spawn_blocking(move || {
                    let wanted = this.read_batch(batch, &mut reading);
                    (wanted, reading)
                })
                .await
                else {
                    break;
                };
                reading = back;
                steps_left = reading.steps.0;
                for f in wanted {
                    self.want(f, &mut budget, &mut fetches, &mut examine);
                }
            }
            batch = examine
                .drain(..)
                .filter(|_| budget.read())
                .map(|f| (f, None))
                .collect();
            if !batch.is_empty() {
                continue;
            }
            match fetches.join_next().await {
                None => break,
                Some(Ok(Some(f))) if budget.read() => batch.push((f, None)),
                Some(_) => {}
            }
        }
        tracing::debug!(
            "library prefetch for {root}: {} fetched, machine {machine}, 64-bit {wide}, \
             {} path steps left",
            FILES - budget.fetches,
            steps_left
        );
    }

    /// Reads each object of `batch` (its needs given or read now from the cache)
    /// and finds the libraries it asks for, within `reading.steps`.
    fn read_batch(&self, batch: Vec<(Found, Option<Needs>)>, reading: &mut Reading) -> Vec<Found> {
        let mut wanted = Vec::new();
        for (object, needs) in batch {
            let Some(needs) = needs
                .or_else(|| self.needs_of(&object))
                .filter(|n| n.machine == reading.machine)
            else {
                continue;
            };
            let steps = &mut reading.steps;
            let search = search_dirs(&self.view, &object, &needs, steps);
            let defaults = reading.defaults.get_or_insert_with(|| {
                default_search(
                    &self.view,
                    object.root,
                    reading.machine,
                    reading.wide,
                    steps,
                )
            });
            for name in &needs.needed {
                if steps.0 == 0 {
                    return wanted;
                }
                let ld = reading.ld.as_deref();
                if let Some(f) = locate(&self.view, &object, name, &search, ld, defaults, steps) {
                    wanted.push(f);
                }
            }
        }
        wanted
    }

    /// Whether `blob` is seen in `root` for the first time (and marks it seen).
    fn first_time(&self, root: TreeId, blob: &ObjectId) -> bool {
        let mut seen = self.libraries.seen.lock().expect("prefetch lock");
        seen.put((root, *blob), ()).is_none()
    }

    /// Has library `f` read next if the cache holds it, or fetches it beside the others.
    fn want(
        self: &Arc<Self>,
        f: Found,
        budget: &mut Budget,
        fetches: &mut JoinSet<Option<Found>>,
        examine: &mut Vec<Found>,
    ) {
        if !self.first_time(f.root, &f.blob) {
            return;
        }
        if self.cache.contains(&f.blob) {
            examine.push(f);
            return;
        }
        if budget.fetches == 0 {
            return;
        }
        if let Some(fetch) = self.fetch_expected(f.clone()) {
            budget.fetches -= 1;
            fetches.spawn(async move { fetch.await.then_some(f) });
        }
    }

    /// What the cached object `f` asks the loader for, if it is an ELF object.
    fn needs_of(&self, f: &Found) -> Option<Needs> {
        let v = self.cache.cached(&f.blob)?;
        let needs = elf::needs(&v.file);
        self.cache.unpin(&f.blob);
        needs.ok()
    }

    /// The `ld.so.cache` of `root` for objects of `machine`, read once per root (and
    /// fetched first if the cache lacks it: the loader reads it next).
    async fn ld_cache(
        self: &Arc<Self>,
        root: TreeId,
        machine: u16,
        f: Found,
    ) -> Option<Arc<LdCache>> {
        if f.size > LD_CACHE_MAX {
            return None;
        }
        let cell = self
            .libraries
            .ld_caches
            .lock()
            .expect("prefetch lock")
            .get_or_insert((root, machine), LdCell::default)
            .clone();
        // One program reads it (fetching it first if the cache lacks it: the loader
        // reads it next); any other starting meanwhile waits for that one. Only what
        // was read is kept: a cache not fetched this time is tried again next time.
        let read = cell.get_or_try_init(|| async {
            if !self.cache.contains(&f.blob) {
                self.first_time(root, &f.blob);
                if let Some(fetch) = self.fetch_expected(f.clone()) {
                    fetch.await;
                }
            }
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.read_ld_cache(root, &f.blob, machine))
                .await
                .unwrap_or(Err(()))
        });
        read.await.ok().cloned().flatten()
    }

    /// Reads and parses the cached `ld.so.cache` `blob` of `root`: `Err` if the cache
    /// does not hold it, `Ok(None)` if it is damaged.
    fn read_ld_cache(
        &self,
        root: TreeId,
        blob: &ObjectId,
        machine: u16,
    ) -> Result<Option<Arc<LdCache>>, ()> {
        let v = self.cache.cached(blob).ok_or(())?;
        let mut bytes = Vec::new();
        let read = (&v.file).take(LD_CACHE_MAX).read_to_end(&mut bytes);
        self.cache.unpin(blob);
        read.map_err(|_| ())?;
        match LdCache::parse(bytes, machine) {
            Ok(c) => Ok(Some(Arc::new(c))),
            Err(e) => {
                tracing::debug!("{root}: /etc/ld.so.cache left aside: {e}");
                Ok(None)
            }
        }
    }
}

/// Where fetching a program's needs starts: in `root`, its interpreter and the root's
/// `ld.so.cache` (found), the path steps left, and the ELF machine and class of the
/// objects to read.
struct Start {
    root: TreeId,
    interp: Option<Found>,
    ld_path: Option<Found>,
    steps: Steps,
    machine: u16,
    wide: bool,
}

/// What reading one program's objects has at hand and may still spend.
struct Reading {
    ld: Option<Arc<LdCache>>,
    /// The loader's default directories, resolved when first needed.
    defaults: Option<Vec<Dirs>>,
    steps: Steps,
    machine: u16,
    wide: bool,
}

/// What one program may still fetch and read.
struct Budget {
    fetches: usize,
    reads: usize,
}

impl Budget {
    /// Takes one read, if any is left.
    fn read(&mut self) -> bool {
        let left = self.reads > 0;
        self.reads = self.reads.saturating_sub(1);
        left
    }
}

/// The content and size of the regular file `e`, and whether it is executable, if it
/// may be an ELF object: large enough for an ELF header, and executable or named like a
/// shared library (a `.so` in its name), so a walk over data files reads none of them.
fn maybe_elf(e: &Entry) -> Option<(ObjectId, u64, bool)> {
    match e.kind {
        EntryKind::File { blob, size } if size >= 52 => {
            let executable = e.meta.mode & 0o111 != 0;
            (executable || contains(e.name.as_bytes(), b".so"))
                .then_some((blob.0, size, executable))
        }
        _ => None,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

mod common;
mod fetch;
mod search;

#[cfg(test)]
mod tests;
