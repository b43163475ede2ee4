//! Prefetch: when a program reads a directory's files in order, the directory's small
//! files are fetched in the background, many per request ([`crate::pack`]), and its
//! large ones beside them, one per request ([`large`]), so a walk over a tree
//! (`find | xargs cat`, `tar`, `cp -r`, `rsync`) finds them cached instead of waiting
//! for one round trip each.
//!
//! In order means: the directory was listed and its first regular file (in entry
//! order, the order a listing gives) is opened, as a walk does (`find` lists every
//! directory before `cat` opens its first file); or three neighbours in entry order are
//! opened one after the other. A program that starts picks a few files out of large
//! directories (an interpreter's modules, the libraries the dynamic linker maps, a shell
//! out of `/bin`, which may well be its first file, as the dynamic linker is in its
//! directory, both opened without a listing; python lists the directories it imports
//! from, then opens files further down, and an `__init__.py` and the module after it
//! are often neighbours): fetching whole directories beside what it needs made cold
//! starts twice as slow (`benches/cold.sh`: python 0.55 s against 0.25 s without
//! prefetch), so it fetches only what it opens, and early the libraries its ELF
//! headers name ([`libraries`]). Once a walk is seen, the directories
//! listed before it (`find` lists the whole tree ahead of `cat`) and those listed
//! within [`WALK`] of its last sign are prefetched at once, ahead of the reader.
//!
//! It never stands in anyone's way, and it is bounded:
//! - the opener is not made to wait: its own file is fetched as before, by the first
//!   read; prefetching starts beside it, on the runtime;
//! - at most [`REQUESTS`] pack requests and [`IN_FLIGHT`] bytes are in flight;
//! - what was prefetched and not yet opened stays within a share of the cache
//!   ([`SHARE`]); objects go in only where the cache can make room by evicting unpinned
//!   ones ([`Cache::offer`]), so the cache bound holds and nothing open is evicted;
//! - every member is verified against its id before it goes into the cache;
//! - a reader of a file that a pack is bringing waits for that pack if little of it
//!   comes first ([`crate::arrivals`]; within the pack's own deadline: `--timeout` and
//!   its size at `--min-rate`), rather than fetching it a second time; a pack still
//!   queued or held back then goes at once, as the reader's own fetch would have
//!   ([`Urgent`]), so a walk that never pauses makes one request per pack, not one per
//!   file; further behind, or if the pack did not bring it, the file is fetched alone;
//! - packs are fetched, hashed and written on a runtime of their own, one thread at a
//!   lower priority, so they never hold up the fetches readers wait for;
//! - while a reader's own fetch is under way, no pack starts and none is read further
//!   ([`crate::demand`]), for at most [`HOLD`] per pack, unless a reader waits for it.
//!
//! Library prefetch ([`libraries`]) is demand a moment early, with bounds of its own:
//! it runs on the readers' runtime (reading objects and resolving paths on its blocking
//! pool), packs give way to it, and it needs no packs.
//!
//! A server without the pack endpoint (from before it, or a cache that passes only
//! objects) turns directory prefetch off for the mount's life, with one line in the
//! log; library prefetch goes on, one object per request.

use crate::arrivals::{Arrival, Arrivals, Bounds, Endpoint, Expected, Permits};
use crate::demand::{Demand, Fetching, Gate, Urgent};
use crate::remote::Remote;
use crate::view::View;
use canopy_cache::Cache;
use canopy_protocol::pack::{self, Member};
use canopy_protocol::{EntryKind, ObjectId, Tree, TreeId};
use lru::LruCache;
use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod elf;
mod large;
pub mod ldcache;
mod libraries;
mod walk;

use walk::{Reads, nearest};

/// Pack requests in flight at once.
pub const REQUESTS: usize = 4;
/// Bytes of pack answers in flight at once (a part is at most [`pack::PART_MAX`]).
pub const IN_FLIGHT: u64 = 4 * pack::PART_MAX;
/// The share of the cache (1/SHARE of its bound) that objects prefetched and not yet
/// opened may take.
pub const SHARE: u64 = 4;
/// Longest a pack is held back, in all, while readers' own fetches are under way (a
/// walk over a tree fetches without pause: its packs then go on beside it).
pub const HOLD: Duration = Duration::from_secs(1);
/// Files whose directory is remembered (from their last lookup).
const PARENTS: usize = 1 << 16;
/// Directories listed that a walk detected later prefetches.
const LISTED: usize = 1 << 12;
/// How recent a listing must be for a walk detected later to prefetch it.
const LISTED_FOR: Duration = Duration::from_secs(10);
/// How long a walk is taken to go on after its last sign (a directory read in order):
/// meanwhile every directory listed is prefetched at once.
const WALK: Duration = Duration::from_secs(2);
/// Directories whose reading is remembered ([`Reads`]).
const LAST: usize = 1 << 12;
/// Directories remembered as prefetched already.
const ASKED: usize = 1 << 14;

/// A directory pack's part, queued.
struct Part {
    tree: TreeId,
    part: usize,
    members: Vec<Member>,
    /// The members the cache lacked when it was queued.
    wanted: HashSet<ObjectId>,
    /// Where each member's bytes start and end in the answer.
    starts: HashMap<ObjectId, (u64, u64)>,
    /// How far the answer has been received.
    received: Arc<AtomicU64>,
    /// Set when a reader waits for one of its members.
    urgent: Arc<Urgent>,
    /// Its wanted members, registered for readers to wait for.
    expected: Expected,
}

/// Objects prefetched and not opened since.
#[derive(Default)]
struct Speculative {
    sizes: HashMap<ObjectId, u64>,
    bytes: u64,
}

/// A mount's prefetcher.
pub struct Prefetch {
    cache: Arc<Cache>,
    remote: Arc<Remote>,
    /// Prefetch's own runtime, one thread at a lower priority: packs are hashed and
    /// written to the cache there, and must never hold up the runtime that fetches
    /// what readers wait for.
    rt: Option<tokio::runtime::Runtime>,
    view: Arc<View>,
    /// Most bytes prefetched and not yet opened.
    share: u64,
    /// Most a reader waits for a pack to bring its file.
    wait_limit: Duration,
    /// The directory inode each file was last looked up in, and its entry's index in
    /// that directory's tree then (so an open finds its entry without a search).
    parents: Mutex<LruCache<u64, (u64, usize)>>,
    /// Per directory inode, how it has been read: listed, and the index of the file
    /// opened in it last.
    reads: Mutex<LruCache<u64, Reads>>,
    /// Directories listed, oldest first, with when, while no walk was under way (at
    /// most [`LISTED`]).
    listed: Mutex<VecDeque<(u64, Instant)>>,
    /// Until when a walk detected is taken to go on ([`WALK`] after its last sign).
    walk_until: Mutex<Option<Instant>>,
    /// Directories (by tree) whose packs were asked for.
    asked: Mutex<LruCache<TreeId, ()>>,
    /// What packs and large files under way are bringing.
    arrivals: Arrivals,
    speculative: Mutex<Speculative>,
    /// Pack requests and bytes in flight.
    packs: Bounds,
    /// Large files fetched ahead of use at once ([`large`]); their bytes count with
    /// the packs'.
    large: Bounds,
    /// Whether the server has packs.
    endpoint: Endpoint,
    /// Programs' libraries fetched as their executables arrive ([`libraries`]).
    libraries: libraries::Libraries,
    /// Readers' own fetches under way: packs give way to them.
    demand: Demand,
    /// Replays of access profiles under way ([`Prefetch::hold`]).
    held: Arc<AtomicUsize>,
}

/// Prefetch held off while it lives (see [`Prefetch::hold`]).
pub struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Prefetch {
    /// A prefetcher for the files of `view`, fetching from `remote` into `cache` (of
    /// `cache_size` bytes) on a runtime of its own; `None` if that cannot start.
    pub fn new(
        cache: Arc<Cache>,
        remote: Arc<Remote>,
        view: Arc<View>,
        cache_size: u64,
    ) -> Option<Arc<Prefetch>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("canopy-prefetch")
            .on_thread_start(|| {
                // Below the readers: prefetch takes the CPU only when they leave it.
                // SAFETY: setpriority on the calling thread (who = 0) only.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            })
            .enable_all()
            .build()
            .map_err(|e| tracing::warn!("prefetch is off: cannot start its runtime: {e}"))
            .ok()?;
        let wait_limit = remote.deadline(pack::PART_MAX);
        let packs = Bounds::new(REQUESTS);
        Some(Arc::new(Prefetch {
            cache,
            remote,
            rt: Some(rt),
            view,
            share: cache_size / SHARE,
            wait_limit,
            parents: Mutex::new(LruCache::new(NonZeroUsize::new(PARENTS).expect("non-zero"))),
            reads: Mutex::new(LruCache::new(NonZeroUsize::new(LAST).expect("non-zero"))),
            listed: Mutex::new(VecDeque::new()),
            walk_until: Mutex::new(None),
            asked: Mutex::new(LruCache::new(NonZeroUsize::new(ASKED).expect("non-zero"))),
            arrivals: Arrivals::default(),
            speculative: Mutex::new(Speculative::default()),
            large: packs.sharing_bytes(large::LARGE),
            packs,
            endpoint: Endpoint::default(),
            libraries: libraries::Libraries::default(),
            demand: Demand::default(),
            held: Arc::new(AtomicUsize::new(0)),
        }))
    }

    /// Notes that file `ino` was looked up as `name` in directory `parent`.
    pub fn looked_up(&self, parent: u64, ino: u64, name: &[u8]) {
        let Some((_, tree)) = self.view.dir_tree(parent) else {
            return;
        };
        let Ok(index) = tree
            .entries()
            .binary_search_by(|e| e.name.as_bytes().cmp(name))
        else {
            return;
        };
        self.parents
            .lock()
            .expect("prefetch lock")
            .put(ino, (parent, index));
    }

    /// A file `ino` (content `blob`) is being opened: prefetches its directory's other
    /// small files if it is read in order (see the module's documentation), once per
    /// tree. Never waits.
    pub fn opening(self: &Arc<Self>, ino: u64, blob: &ObjectId) {
        let looked_up = self
            .parents
            .lock()
            .expect("prefetch lock")
            .get(&ino)
            .copied();
        let Some((parent, index)) = looked_up else {
            return;
        };
        let Some((tree_id, tree)) = self.view.dir_tree(parent) else {
            return;
        };
        // The entry found at lookup; if the directory shows another version since (the
        // kernel keeps names across a switch), found again near there, once.
        let is_it = |i: &usize| {
            tree.entries()
                .get(*i)
                .is_some_and(|e| matches!(e.kind, EntryKind::File { blob: b, .. } if b.0 == *blob))
        };
        let Some(index) = Some(index).filter(is_it).or_else(|| {
            let found = nearest(index, tree.entries().len(), is_it)?;
            let mut parents = self.parents.lock().expect("prefetch lock");
            parents.put(ino, (parent, found));
            Some(found)
        }) else {
            return;
        };
        let entry = &tree.entries()[index];
        // Libraries need no packs: fetched one object each.
        self.opening_object(parent, entry);
        if !self.endpoint.supported() {
            return;
        }
        let is_file = |i: usize| matches!(tree.entries()[i].kind, EntryKind::File { .. });
        let in_order = {
            let mut reads = self.reads.lock().expect("prefetch lock");
            let r = reads.get_or_insert_mut(parent, Reads::default);
            r.open(index, is_file)
        };
        if in_order {
            self.directory(tree_id, &tree, Some(blob));
            // A walk is under way: the directories it listed (and lists from now on)
            // are read next; their packs come ahead of it.
            *self.walk_until.lock().expect("prefetch lock") = Some(Instant::now() + WALK);
            let listed: Vec<(u64, Instant)> = self
                .listed
                .lock()
                .expect("prefetch lock")
                .drain(..)
                .collect();
            for (dir, when) in listed {
                // Listed for this walk, not by a program long gone.
                if when.elapsed() < LISTED_FOR {
                    self.listed_dir(dir);
                }
            }
        }
    }

    /// Directory `ino` is being listed: its first file opened next reads it in order;
    /// during a walk, its small files are prefetched at once.
    pub fn listing(self: &Arc<Self>, ino: u64) {
        if !self.endpoint.supported() {
            return;
        }
        self.reads
            .lock()
            .expect("prefetch lock")
            .get_or_insert_mut(ino, Reads::default)
            .listed = true;
        let walking = self
            .walk_until
            .lock()
            .expect("prefetch lock")
            .is_some_and(|t| Instant::now() < t);
        if walking {
            self.listed_dir(ino);
        } else {
            let mut listed = self.listed.lock().expect("prefetch lock");
            if listed.len() == LISTED {
                listed.pop_front();
            }
            listed.push_back((ino, Instant::now()));
        }
    }

    /// Prefetches the small files of the listed directory `ino`.
    fn listed_dir(self: &Arc<Self>, ino: u64) {
        if let Some((tree_id, tree)) = self.view.dir_tree(ino) {
            self.directory(tree_id, &tree, None);
        }
    }

    /// Holds prefetch off until the guard is dropped: a profile's replay brings what a
    /// starting program reads, and directory packs beside it would compete with it for
    /// the CPU and the server. Directories opened meanwhile are not marked as asked, so
    /// the next files read in order in them prefetch as usual.
    pub fn hold(&self) -> Held {
        self.held.fetch_add(1, Ordering::Relaxed);
        Held(self.held.clone())
    }

    /// Whether a replay holds prefetch off now.
    fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed) > 0
    }

    /// Prefetches the files of tree `tree_id` but `opened`, once per tree: the small
    /// ones in packs, then the large ones ([`large`]).
    fn directory(self: &Arc<Self>, tree_id: TreeId, tree: &Tree, opened: Option<&ObjectId>) {
        if self.is_held() {
            return;
        }
        if self
            .asked
            .lock()
            .expect("prefetch lock")
            .put(tree_id, ())
            .is_some()
        {
            return;
        }
        for (part, members) in pack::parts(tree).into_iter().enumerate() {
            let wanted: Vec<Member> = members
                .iter()
                .filter(|m| Some(&m.blob.0) != opened && !self.cache.contains(&m.blob.0))
                .copied()
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let bytes: u64 = wanted.iter().map(|m| m.size).sum();
            if !self.within_share(bytes) {
                tracing::debug!(
                    "prefetch of {tree_id} part {part} left out: objects prefetched and not \
                     yet opened fill their share of the cache"
                );
                break;
            }
            self.queue(tree_id, part, members, &wanted);
        }
        self.large_files(tree_id, tree, opened);
    }

    /// Whether `bytes` more prefetched bytes stay within the share, forgetting objects
    /// the cache no longer holds when it looks full.
    fn within_share(&self, bytes: u64) -> bool {
        let mut s = self.speculative.lock().expect("prefetch lock");
        if s.bytes + bytes > self.share {
            let cache = &self.cache;
            s.sizes.retain(|id, _| cache.contains(id));
            s.bytes = s.sizes.values().sum();
        }
        s.bytes + bytes <= self.share
    }

    /// Queues part `part` of `tree` (`members`, of which the cache lacks `wanted`),
    /// registering its `wanted` members at once: a reader that reaches one of them
    /// before the part's turn comes (or while it gives way to readers' fetches) makes it
    /// go at once and waits for it, rather than fetching its files one by one.
    fn queue(self: &Arc<Self>, tree: TreeId, part: usize, members: Vec<Member>, wanted: &[Member]) {
        let received = Arc::new(AtomicU64::new(0));
        let urgent = Arc::new(Urgent::default());
        let mut starts = HashMap::new();
        let mut offset = pack::HEAD_LEN as u64;
        for m in &members {
            offset += pack::MEMBER_HEAD_LEN as u64;
            starts.entry(m.blob.0).or_insert((offset, offset + m.size));
            offset += m.size;
        }
        let expected = self.arrivals.expect(
            wanted.iter().map(|m| {
                let arrival = Arrival::new(starts[&m.blob.0].0, received.clone(), self.wait_limit);
                (m.blob.0, arrival.promoting(urgent.clone()))
            }),
            |_| false,
        );
        let part = Part {
            tree,
            part,
            members,
            wanted: wanted.iter().map(|m| m.blob.0).collect(),
            starts,
            received,
            urgent,
            expected,
        };
        let this = self.clone();
        if let Some(rt) = &self.rt {
            rt.spawn(async move { this.fetch(part).await });
        }
    }

    /// Fetches one part once its turn comes, putting its members into the cache and
    /// waking whoever waits for the wanted ones.
    async fn fetch(self: Arc<Self>, part: Part) {
        let Part {
            tree,
            part,
            members,
            wanted,
            starts,
            received,
            urgent,
            expected,
        } = part;
        let size: u64 = members.iter().map(|m| m.size).sum();
        let Some((gate, _permits)) = self.turn(&self.packs, size, &urgent).await else {
            return;
        };
        // Members are written to the cache by a thread of their own while the answer
        // is still being received and hashed: one file created per object is most of
        // the work. What it has not written yet is part of the answer, which the
        // permits bound; they are held until it is done.
        let (to_write, written) = std::sync::mpsc::channel::<(ObjectId, Vec<u8>)>();
        let this = self.clone();
        let writer = tokio::task::spawn_blocking(move || {
            for (id, bytes) in written {
                if expected.deliver(&this.cache, id, &bytes, "prefetch") {
                    this.speculate(id, bytes.len() as u64);
                }
            }
            // `expected` goes here: what the pack did not bring is no longer awaited.
        });
        let result = self
            .remote
            .pack(&tree, part, &members, gate, |id, bytes| {
                if let Some((_, end)) = starts.get(&id) {
                    received.fetch_max(*end, Ordering::Relaxed);
                }
                if wanted.contains(&id) {
                    // Fails only if the writer is gone (it panicked): nothing to do.
                    let _ = to_write.send((id, bytes));
                }
            })
            .await;
        drop(to_write);
        let _ = writer.await;
        if let Err(e) = result
            && !self.endpoint.lacks(
                &e,
                "directory packs",
                "prefetch is off, files are fetched one by one",
            )
        {
            tracing::warn!("prefetch of directory {tree} part {part}: {e}");
        }
    }

    /// Waits until a request of `size` bytes ahead of use may go: it gives way to
    /// readers' fetches (at most [`HOLD`]), then waits for room within `bounds`;
    /// neither once `urgent` is set, as a reader then waits for it: it goes as that
    /// reader's own fetch would have, outside the bounds, which stay what they are for
    /// requests ahead of use. Returns the request's gate and its permits (none if it
    /// went as urgent); `None` if the bounds are closed.
    async fn turn<'a>(
        &'a self,
        bounds: &Bounds,
        size: u64,
        urgent: &'a Urgent,
    ) -> Option<(Gate<'a>, Option<Permits>)> {
        let held = urgent.unless(self.demand.idle(HOLD)).await;
        let permits = match urgent.unless(bounds.permits(size)).await {
            Some(None) => return None,
            Some(Some(permits)) => Some(permits),
            None => None,
        };
        let gate = Gate {
            demand: &self.demand,
            hold: HOLD.saturating_sub(held.unwrap_or_default()),
            urgent: Some(urgent),
        };
        Some((gate, permits))
    }

    /// Counts object `id` of `size` bytes, just put into the cache, as prefetched and
    /// not yet opened.
    fn speculate(&self, id: ObjectId, size: u64) {
        let mut s = self.speculative.lock().expect("prefetch lock");
        if s.sizes.insert(id, size).is_none() {
            s.bytes += size;
        }
    }

    /// Counts a fetch a reader waits for (prefetch holds back until it ends).
    pub fn demand(&self) -> Fetching<'_> {
        self.demand.begin()
    }

    /// Waits, within the pack's deadline, if a pack in flight is bringing `id` and has
    /// little to send before it; then counts it as used. Called before a reader fetches `id` itself.
    pub fn before_fetch(&self, id: &ObjectId) {
        // A file already cached (fetched alone by an earlier reader) is not waited for
        // although a queued pack still lists it.
        if !self.cache.contains(id) {
            self.arrivals.wait_for(id);
        }
        let mut s = self.speculative.lock().expect("prefetch lock");
        if let Some(size) = s.sizes.remove(id) {
            s.bytes -= size;
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Packs under way are abandoned (their members are in the cache or not at all);
        // a runtime cannot be dropped where blocking is not allowed.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
