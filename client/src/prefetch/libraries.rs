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
//! opens brings its libraries the same way.
//!
//! This is demand a moment early, not a guess: it is not held back for readers'
//! fetches as packs are ([`crate::demand`]), and packs give way to it as to them. It is
//! bounded all the same: at most [`FILES`] files fetched and [`EXAMINED`] read for
//! one program, [`REQUESTS`] requests and [`IN_FLIGHT`](super::IN_FLIGHT) bytes in
//! flight, within the share of the cache for what was fetched ahead of use, put in
//! only where evicting unpinned objects makes room ([`Cache::offer_file`]); each file
//! once per root version. Every object is verified as it streams in; one that fails is
//! not cached and its reader fetches it alone (and gets EIO if it is bad). A reader
//! that reaches a file under way waits for it ([`crate::arrivals`]).
//!
//! [`Cache::offer_file`]: canopy_cache::Cache::offer_file

use super::Prefetch;
use super::elf::{self, Needs};
use super::ldcache::LdCache;
use crate::arrivals::{Arrival, Bounds};
use crate::view::View;
use canopy_protocol::{EntryKind, ObjectId, Tree, TreeId};
use lru::LruCache;
use std::collections::VecDeque;
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
/// Largest `ld.so.cache` read (real ones are tens of KiB).
const LD_CACHE_MAX: u64 = 16 << 20;
/// Where the loader finds its cache in a root.
const LD_CACHE: &[u8] = b"/etc/ld.so.cache";
/// Most symbolic links followed while resolving one path (the kernel's limit).
const LINKS: u32 = 40;
/// Most path components walked while resolving one path.
const STEPS: usize = 4096;
/// Longest library name or path taken.
const NAME_MAX: usize = 4096;
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

/// What a root's `ld.so.cache` says, read once (`None`: it has none or it is damaged).
type LdCell = Arc<tokio::sync::OnceCell<Option<Arc<LdCache>>>>;

/// A mount's state for library prefetch.
pub(super) struct Libraries {
    /// The runtime that serves readers' fetches: libraries are demand, not to wait
    /// behind prefetch's lower-priority thread.
    handle: OnceLock<tokio::runtime::Handle>,
    /// Files opened whose content has not arrived yet, by object.
    waiting: Mutex<LruCache<ObjectId, Found>>,
    /// (directory inode, object) pairs opened already: a program opening one file
    /// again and again costs one look-up each time.
    opened: Mutex<LruCache<(u64, ObjectId), ()>>,
    /// (root, object) pairs examined or fetched already.
    seen: Mutex<LruCache<(TreeId, ObjectId), ()>>,
    /// Each root's `ld.so.cache`, by root tree and ELF machine.
    ld_caches: Mutex<LruCache<(TreeId, u16), LdCell>>,
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
            bounds: Bounds::new(REQUESTS),
        }
    }
}

impl Prefetch {
    /// Has library prefetch run on `handle`, the runtime readers' fetches run on.
    pub fn serve_on(&self, handle: tokio::runtime::Handle) {
        let _ = self.libraries.handle.set(handle);
    }

    /// File `ino` (content `blob`), looked up in directory `parent`, is being opened:
    /// if it may be an ELF object, its libraries are fetched once it is in the cache.
    pub(super) fn opening_object(self: &Arc<Self>, parent: u64, blob: &ObjectId) {
        let again = {
            let mut opened = self.libraries.opened.lock().expect("prefetch lock");
            opened.put((parent, *blob), ()).is_some()
        };
        if again {
            return;
        }
        let Some((root, dir)) = self.view.dir_place(parent) else {
            return;
        };
        let Some((_, tree)) = self.view.dir_tree(parent) else {
            return;
        };
        let Some(size) = maybe_elf(&tree, blob) else {
            return;
        };
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
        let task = async move { this.program(found).await };
        match (self.libraries.handle.get(), &self.rt) {
            (Some(h), _) => drop(h.spawn(task)),
            (None, Some(rt)) => drop(rt.spawn(task)),
            (None, None) => {}
        }
    }

    /// Fetches what the ELF object `first` asks the loader for, and what that asks
    /// for, within [`FILES`] fetched and [`EXAMINED`] read.
    async fn program(self: Arc<Self>, first: Found) {
        let root = first.root;
        if !self.first_time(root, &first.blob) {
            return;
        }
        let Some(needs) = self.needs_of(&first) else {
            return;
        };
        let (machine, wide) = (needs.machine, needs.wide);
        let mut budget = Budget {
            fetches: FILES,
            reads: EXAMINED - 1,
        };
        let mut fetches: JoinSet<Option<Found>> = JoinSet::new();
        let mut todo: VecDeque<(Found, Needs)> = VecDeque::new();
        // The interpreter first: the kernel maps it right after the executable.
        if let Some(f) = needs
            .interp
            .as_deref()
            .filter(|p| p.starts_with(b"/"))
            .and_then(|p| resolve(&self.view, root, p))
        {
            self.want(f, &mut budget, &mut fetches, &mut todo);
        }
        let ld = self.ld_cache(root, machine).await;
        todo.push_back((first, needs));
        loop {
            while let Some((object, needs)) = todo.pop_front() {
                for name in &needs.needed {
                    if let Some(f) = locate(&self.view, &object, &needs, name, ld.as_deref()) {
                        self.want(f, &mut budget, &mut fetches, &mut todo);
                    }
                }
            }
            match fetches.join_next().await {
                None => break,
                Some(Ok(Some(f))) if budget.read() => {
                    if let Some(needs) = self.needs_of(&f).filter(|n| n.machine == machine) {
                        todo.push_back((f, needs));
                    }
                }
                Some(_) => {}
            }
        }
        tracing::debug!(
            "library prefetch for {root}: {} fetched, machine {machine}, 64-bit {wide}",
            FILES - budget.fetches
        );
    }

    /// Whether `blob` is seen in `root` for the first time (and marks it seen).
    fn first_time(&self, root: TreeId, blob: &ObjectId) -> bool {
        let mut seen = self.libraries.seen.lock().expect("prefetch lock");
        seen.put((root, *blob), ()).is_none()
    }

    /// Reads library `f` now if the cache holds it, or fetches it beside the others.
    fn want(
        self: &Arc<Self>,
        f: Found,
        budget: &mut Budget,
        fetches: &mut JoinSet<Option<Found>>,
        todo: &mut VecDeque<(Found, Needs)>,
    ) {
        if !self.first_time(f.root, &f.blob) {
            return;
        }
        if self.cache.contains(&f.blob) {
            if budget.read()
                && let Some(needs) = self.needs_of(&f)
            {
                todo.push_back((f, needs));
            }
            return;
        }
        if budget.fetches == 0 || !self.within_share(f.size) {
            return;
        }
        budget.fetches -= 1;
        if let Some(fetch) = self.fetch_expected(f.clone()) {
            fetches.spawn(async move { fetch.await.then_some(f) });
        }
    }

    /// Registers that `f` is under way, so the loader reaching it waits for this fetch
    /// rather than starting its own, and returns its fetch (whether the cache then
    /// holds it); `None` if another request brings it already.
    fn fetch_expected(
        self: &Arc<Self>,
        f: Found,
    ) -> Option<impl std::future::Future<Output = bool> + Send + 'static> {
        let expected = self.arrivals.expect(
            [(f.blob, Arrival::first(self.remote.deadline(f.size)))],
            |id| self.cache.contains(id),
        );
        if !expected.contains(&f.blob) {
            return None;
        }
        let this = self.clone();
        Some(async move {
            let cached = this.fetch_library(&f).await;
            // Its readers go on, whether it came or not.
            drop(expected);
            cached
        })
    }

    /// Fetches library `f` into the cache; whether the cache holds it then.
    async fn fetch_library(&self, f: &Found) -> bool {
        // Counted as a reader's fetch: packs give way to it.
        let _demand = self.demand.begin();
        let Some(_permits) = self.libraries.bounds.permits(f.size).await else {
            return false;
        };
        if self.cache.contains(&f.blob) {
            return true;
        }
        if !self.cache.has_room(f.size) {
            return false;
        }
        let tmp = self.cache.staging(&f.blob);
        match self.remote.object_to_file(&f.blob, f.size, &tmp).await {
            Ok(got) => match self.cache.offer_file(&f.blob, &tmp, got) {
                Ok(true) => {
                    self.speculate(f.blob, got);
                    true
                }
                Ok(false) => self.cache.contains(&f.blob),
                Err(e) => {
                    tracing::warn!("library prefetch: {e}");
                    false
                }
            },
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(
                    "library prefetch of /{}/… object {}: {e}",
                    String::from_utf8_lossy(&f.dir.join(&b'/')),
                    f.blob
                );
                false
            }
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
    async fn ld_cache(self: &Arc<Self>, root: TreeId, machine: u16) -> Option<Arc<LdCache>> {
        let cell = self
            .libraries
            .ld_caches
            .lock()
            .expect("prefetch lock")
            .get_or_insert((root, machine), LdCell::default)
            .clone();
        let f = resolve(&self.view, root, LD_CACHE).filter(|f| f.size <= LD_CACHE_MAX)?;
        // One program reads it (fetching it first if the cache lacks it: the loader
        // reads it next); any other starting meanwhile waits for that one.
        cell.get_or_init(|| async {
            if !self.cache.contains(&f.blob) && self.within_share(f.size) {
                self.first_time(root, &f.blob);
                if let Some(fetch) = self.fetch_expected(f.clone()) {
                    fetch.await;
                }
            }
            let v = self.cache.cached(&f.blob)?;
            let mut bytes = Vec::new();
            let read = (&v.file).take(LD_CACHE_MAX).read_to_end(&mut bytes);
            self.cache.unpin(&f.blob);
            read.ok()?;
            match LdCache::parse(&bytes, machine) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::debug!("{root}: /etc/ld.so.cache left aside: {e}");
                    None
                }
            }
        })
        .await
        .clone()
    }
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

/// The size of the regular file with content `blob` in `tree`, if it may be an ELF
/// object: large enough for an ELF header, and executable or named like a shared
/// library (a `.so` in its name), so a walk over data files reads none of them.
fn maybe_elf(tree: &Tree, blob: &ObjectId) -> Option<u64> {
    tree.entries().iter().find_map(|e| match e.kind {
        EntryKind::File { blob: b, size }
            if b.0 == *blob
                && size >= 52
                && (e.meta.mode & 0o111 != 0 || contains(e.name.as_bytes(), b".so")) =>
        {
            Some(size)
        }
        _ => None,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where the loader finds library `name` that `object` (with `needs`) asks for in its
/// root: a path as such, else `DT_RPATH` (without `DT_RUNPATH`), `DT_RUNPATH`, the
/// root's `ld.so.cache`, then the default directories of the object's architecture.
fn locate(
    view: &View,
    object: &Found,
    needs: &Needs,
    name: &[u8],
    ld: Option<&LdCache>,
) -> Option<Found> {
    if name.len() > NAME_MAX {
        return None;
    }
    let root = object.root;
    if name.contains(&b'/') {
        // Relative to the program's working directory, which is not known here.
        return name
            .starts_with(b"/")
            .then(|| resolve(view, root, name))
            .flatten();
    }
    let origin = [&b"/"[..], &object.dir.join(&b'/')].concat();
    let rpath = if needs.runpath.is_empty() {
        &needs.rpath[..]
    } else {
        &[]
    };
    let search = rpath.iter().chain(&needs.runpath).filter_map(|d| {
        let d = expand(d, &origin, needs.machine)?;
        // Relative to the working directory, as for a name with a slash.
        d.starts_with(b"/").then_some(d)
    });
    let in_dir = |dir: &[u8]| resolve(view, root, &[dir, b"/", name].concat());
    for dir in search {
        if let Some(f) = in_dir(&dir) {
            return Some(f);
        }
    }
    if let Some(f) = ld
        .and_then(|c| c.get(name))
        .and_then(|p| resolve(view, root, p))
    {
        return Some(f);
    }
    default_dirs(needs.machine, needs.wide)
        .iter()
        .find_map(|d| in_dir(d.as_bytes()))
}

/// Search directory `dir` with `$ORIGIN` (or `${ORIGIN}`) replaced by `origin` and
/// `$LIB` by the multiarch library directory; `None` if it names anything else the
/// loader would expand (`$PLATFORM`: the CPU's, not known here).
fn expand(dir: &[u8], origin: &[u8], machine: u16) -> Option<Vec<u8>> {
    let lib = triplet(machine).map(|t| format!("lib/{t}"));
    let mut out = Vec::new();
    let mut rest = dir;
    while let Some(at) = rest.iter().position(|b| *b == b'$') {
        out.extend(&rest[..at]);
        rest = &rest[at + 1..];
        let (token, is_origin) = [
            (&b"{ORIGIN}"[..], true),
            (b"ORIGIN", true),
            (b"{LIB}", false),
            (b"LIB", false),
        ]
        .into_iter()
        .find(|(t, _)| rest.starts_with(t))?;
        if is_origin {
            out.extend(origin);
        } else {
            out.extend(lib.as_deref()?.as_bytes());
        }
        rest = &rest[token.len()..];
    }
    out.extend(rest);
    (out.len() <= NAME_MAX).then_some(out)
}

/// Debian's multiarch name for objects of ELF machine `machine`.
fn triplet(machine: u16) -> Option<&'static str> {
    use object::elf::*;
    Some(match machine {
        EM_X86_64 => "x86_64-linux-gnu",
        EM_AARCH64 => "aarch64-linux-gnu",
        EM_386 => "i386-linux-gnu",
        EM_ARM => "arm-linux-gnueabihf",
        EM_PPC64 => "powerpc64le-linux-gnu",
        EM_S390 => "s390x-linux-gnu",
        EM_RISCV => "riscv64-linux-gnu",
        _ => return None,
    })
}

/// The loader's default directories for objects of `machine`: the multiarch ones,
/// then `lib64` for 64-bit objects, then `lib`.
fn default_dirs(machine: u16, wide: bool) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(t) = triplet(machine) {
        dirs.push(format!("/lib/{t}"));
        dirs.push(format!("/usr/lib/{t}"));
    }
    if wide {
        dirs.extend(["/lib64".into(), "/usr/lib64".into()]);
    }
    dirs.extend(["/lib".into(), "/usr/lib".into()]);
    dirs
}

/// The regular file at `path` in root `root` (from its top, relative or not),
/// following symbolic links as the kernel would in a `chroot` to it: `..` at the root stays there, an absolute target starts again at the
/// root. Never leaves the root; bounded by [`LINKS`] and [`STEPS`].
fn resolve(view: &View, root: TreeId, path: &[u8]) -> Option<Found> {
    let mut dirs: Vec<(Vec<u8>, Arc<Tree>)> = vec![(Vec::new(), view.tree(&root).ok()?)];
    let mut todo: VecDeque<Vec<u8>> = components(path).collect();
    let (mut links, mut steps) = (0, 0);
    while let Some(name) = todo.pop_front() {
        steps += 1;
        if steps > STEPS {
            return None;
        }
        if name == b".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let here = &dirs.last().expect("the root stays").1;
        let kind = here.get(&name)?.kind.clone();
        match &kind {
            EntryKind::Dir { tree } => {
                let tree = view.tree(tree).ok()?;
                dirs.push((name, tree));
            }
            EntryKind::Symlink { target } => {
                links += 1;
                if links > LINKS {
                    return None;
                }
                if target.starts_with(b"/") {
                    dirs.truncate(1);
                }
                for c in components(target).rev() {
                    todo.push_front(c);
                }
            }
            EntryKind::File { blob, size } if todo.is_empty() => {
                return Some(Found {
                    root,
                    dir: dirs[1..].iter().map(|(n, _)| n.clone()).collect(),
                    blob: blob.0,
                    size: *size,
                });
            }
            _ => return None,
        }
    }
    None
}

/// The names of a path, without empty ones and `.`.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests;
