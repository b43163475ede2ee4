//! Access profiles on a host (see [`canopy_protocol::profile`]): replaying the profile of
//! each version a mount shows, so a program's files are in the cache before it asks for
//! them, and recording which files a program reads ([`Recording`]), for
//! `canopy profile record`.
//!
//! Replay starts when a mount serves (and for each new version it moves to): the files
//! that the profile of the version's commit (verified when it was shown) names and the
//! cache lacks are fetched in profile order, many per request (`GET /v1/packs/profile/{commit}/{part}`; larger
//! files as objects). It is bounded as prefetch is ([`crate::prefetch`]): at most
//! [`prefetch::REQUESTS`] requests and [`prefetch::IN_FLIGHT`] bytes in flight, the
//! profile's files within a share of the cache ([`prefetch::SHARE`]) and put in only
//! where unpinned objects can make room, so the bound holds and nothing open is evicted.
//! Every member is verified against its id; one that is not is dropped alone, and its
//! reader fetches it by itself (EIO if that is wrong too). A reader of a file a request
//! in flight is bringing waits for it (within that request's deadline) rather than
//! fetching it a second time. Directory prefetch is held off while a replay runs
//! ([`Prefetch::hold`]): its packs would compete with the files a starting program is
//! about to read. A server without profile packs (404 `no such endpoint`)
//! means no replay, with one line in the log: until a server has answered a profile
//! pack, large files wait for the first part's answer, so one from before profile packs
//! is asked for nothing else.

use crate::arrivals::{Arrival, Arrivals, Bounds, Endpoint};
use crate::objects::{Objects, Opened};
use crate::prefetch::{self, Prefetch};
use crate::remote::Remote;
use crate::view::View;
use canopy_cache::Cache;
use canopy_protocol::pack::{self, Member};
use canopy_protocol::profile::{self, Profile};
use canopy_protocol::{Commit, CommitId, ObjectId, TreeId, VerifyingKey};
use lru::LruCache;
use std::collections::HashSet;
use std::io;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Commits a replayer remembers having considered.
const CONSIDERED: NonZeroUsize = NonZeroUsize::new(256).expect("non-zero");

/// What a replay did, for the log.
#[derive(Default)]
struct Counts {
    files: AtomicU64,
    bytes: AtomicU64,
    requests: AtomicU64,
    /// Pack parts asked for, and those that failed.
    parts: AtomicU64,
    failed: AtomicU64,
}

/// A mount's replayer of access profiles.
pub struct Replay {
    cache: OnceLock<Arc<Cache>>,
    /// The mount's prefetch, held off while a replay runs.
    prefetch: OnceLock<Arc<Prefetch>>,
    remote: Arc<Remote>,
    trust: VerifyingKey,
    view: Arc<View>,
    /// Its own runtime: members are hashed and written to the cache there, never on the
    /// runtime whose fetches readers wait for.
    rt: Option<tokio::runtime::Runtime>,
    /// Most bytes a profile brings into the cache.
    share: u64,
    /// Most a reader waits for a request in flight to bring its file.
    wait_limit: Duration,
    /// Commits whose profiles were considered (the latest [`CONSIDERED`]); one whose
    /// replay failed is forgotten, and replayed again when shown again.
    considered: Mutex<LruCache<CommitId, ()>>,
    /// What requests under way are bringing.
    arrivals: Arrivals,
    /// Requests and bytes in flight.
    bounds: Bounds,
    /// Whether the server has profile packs.
    endpoint: Endpoint,
    /// Whether a profile pack was answered: then the server is known to have them.
    answered: AtomicBool,
}

impl Replay {
    /// A replayer for the versions `view` shows, fetching from `remote` (verified with
    /// `trust`) into a cache of `cache_size` bytes given later ([`Replay::attach`]), on
    /// a runtime of its own; `None` if that cannot start.
    pub fn new(
        view: Arc<View>,
        remote: Arc<Remote>,
        trust: VerifyingKey,
        cache_size: u64,
    ) -> Option<Arc<Replay>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("canopy-replay")
            .enable_all()
            .build()
            .map_err(|e| tracing::warn!("profile replay is off: cannot start its runtime: {e}"))
            .ok()?;
        Some(Arc::new(Replay {
            cache: OnceLock::new(),
            prefetch: OnceLock::new(),
            wait_limit: remote.deadline(pack::PART_MAX),
            remote,
            trust,
            view,
            rt: Some(rt),
            share: cache_size / prefetch::SHARE,
            considered: Mutex::new(LruCache::new(CONSIDERED)),
            arrivals: Arrivals::default(),
            bounds: Bounds::new(prefetch::REQUESTS),
            endpoint: Endpoint::default(),
            answered: AtomicBool::new(false),
        }))
    }

    /// Replays into `cache` (the mount's, once it is open).
    pub fn attach(&self, cache: Arc<Cache>) {
        let _ = self.cache.set(cache);
    }

    /// Holds `prefetch` off while a replay runs (see [`Prefetch::hold`]).
    pub fn holding(&self, prefetch: Arc<Prefetch>) {
        let _ = self.prefetch.set(prefetch);
    }

    /// Starts replaying the profile of each version the view shows that was not
    /// considered yet. Never waits.
    pub fn shown(self: &Arc<Self>) {
        if !self.endpoint.supported() || self.cache.get().is_none() {
            return;
        }
        for name in self.view.shown() {
            let Some(version) = self.view.root(&name) else {
                continue;
            };
            if self
                .considered
                .lock()
                .expect("replay lock")
                .put(version.commit, ())
                .is_some()
            {
                continue;
            }
            let this = self.clone();
            // Held from now (the program may start before the replay's task does), but
            // only for a version with a profile or not known to have none: a walk that
            // starts meanwhile in a root without one would lose its directories'
            // prefetch for nothing (a held directory is not prefetched later).
            let may_have_profile = !matches!(self.view.profile_of(&version.commit), Some(None));
            let held = self
                .prefetch
                .get()
                .filter(|_| may_have_profile)
                .map(|p| p.hold());
            if let Some(rt) = &self.rt {
                rt.spawn(async move {
                    this.replay(name, version.commit, version.tree).await;
                    drop(held);
                });
            }
        }
    }

    /// Forgets that commit `commit` was considered: it is replayed when shown again.
    fn forget(&self, commit: CommitId) {
        self.considered.lock().expect("replay lock").pop(&commit);
    }

    /// Waits, within a request's deadline, if a replay request in flight is bringing
    /// `id`. Called before a reader fetches `id` itself.
    pub fn before_fetch(&self, id: &ObjectId) {
        self.arrivals.wait_for(id);
    }

    /// Replays the profile of commit `commit` (tree `tree`), shown as `entry`.
    async fn replay(self: Arc<Self>, entry: String, commit: CommitId, tree: TreeId) {
        let started = Instant::now();
        let profile = match self.profile(commit).await {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("{entry}: not replaying the profile of commit {commit}: {e}");
                self.forget(commit);
                return;
            }
        };
        let plan = match profile::plan(&profile, tree, |t| self.view.tree(t).map_err(|_| *t)) {
            Ok(plan) => plan,
            Err(t) => {
                tracing::warn!(
                    "{entry}: not replaying the profile of commit {commit}: the view lacks its \
                     tree {t}"
                );
                self.forget(commit);
                return;
            }
        };
        let Some(cache) = self.cache.get() else {
            return;
        };
        let counts = Arc::new(Counts::default());
        let mut budget = self.share;
        // Whether the share refused a file (the profile is larger than it).
        let mut refused = false;
        let mut tasks = tokio::task::JoinSet::new();
        // Until the server is known to have profile packs, the first part asked for
        // tells (as its first member arrives, or as it ends) and large files wait for
        // it: a server from before profile packs is asked for nothing else.
        let (mut tell, told) = if self.answered.load(Ordering::Relaxed) || plan.parts.is_empty() {
            (None, None)
        } else {
            let (tell, told) = watch::channel(false);
            (Some(tell), Some(told))
        };
        // Parts and large files alternate, each in profile order: a program's first
        // needs are usually its binary and libraries (large) and its first modules.
        let (mut parts, mut large) = (plan.parts.into_iter().enumerate(), plan.large.into_iter());
        loop {
            let (part, file) = (parts.next(), large.next());
            if part.is_none() && file.is_none() {
                break;
            }
            if let Some((n, members)) = part {
                // Within the share, in profile order: the first files a program reads
                // are worth the most.
                let mut wanted = Vec::new();
                for m in members.iter().filter(|m| !cache.contains(&m.blob.0)) {
                    if !take(&mut budget, m.size) {
                        refused = true;
                        break;
                    }
                    wanted.push(*m);
                }
                if !wanted.is_empty() {
                    let this = self.clone();
                    let counts = counts.clone();
                    let tell = tell.take();
                    tasks.spawn(async move {
                        this.part(commit, n, members, wanted, &counts, tell).await
                    });
                }
            }
            if let Some(m) = file
                && !cache.contains(&m.blob.0)
            {
                if !take(&mut budget, m.size) {
                    refused = true;
                    continue;
                }
                let this = self.clone();
                let counts = counts.clone();
                let told = told.clone();
                tasks.spawn(async move { this.large(m, &counts, told).await });
            }
        }
        // No part was asked for (the cache held them all): large files need not wait.
        drop(tell);
        if refused {
            tracing::info!(
                "{entry}: the profile of commit {commit} is larger than its share of the cache \
                 (1/{} of --cache-size): only its first files are replayed",
                prefetch::SHARE
            );
        }
        while tasks.join_next().await.is_some() {}
        if !self.endpoint.supported() {
            // Said once, by the part that found out; nothing was replayed.
            return;
        }
        let parts = counts.parts.load(Ordering::Relaxed);
        if parts > 0 && counts.failed.load(Ordering::Relaxed) == parts {
            tracing::warn!(
                "{entry}: every pack part of the profile of commit {commit} failed: it is \
                 replayed again when the mount next looks for new versions"
            );
            self.forget(commit);
            return;
        }
        tracing::info!(
            "{entry}: replayed the profile of commit {commit} ({} paths, recorded with {:?}): \
             {} files, {} bytes in {} requests, {:?}",
            profile.paths.len(),
            canopy_protocol::Escaped(profile.command.join(" ").as_bytes()).to_string(),
            counts.files.load(Ordering::Relaxed),
            counts.bytes.load(Ordering::Relaxed),
            counts.requests.load(Ordering::Relaxed),
            started.elapsed()
        );
    }

    /// The profile commit `commit` carries: as it was when the commit was loaded and
    /// verified for the view, or else read again by id and checked against the trusted
    /// key.
    async fn profile(&self, commit: CommitId) -> Result<Option<Profile>, String> {
        let known = self.view.profile_of(&commit);
        if let Some(value) = known {
            return match value {
                None => Ok(None),
                Some(v) => Profile::from_json(&v).map(Some).map_err(|e| e.to_string()),
            };
        }
        let bytes = self
            .remote
            .object(&commit.0)
            .await
            .map_err(|e| e.to_string())?;
        let decoded = Commit::decode(&bytes).map_err(|e| e.to_string())?;
        decoded.verify(&self.trust).map_err(|e| e.to_string())?;
        match Profile::of(&decoded.body.extensions) {
            None => Ok(None),
            Some(p) => p.map(Some).map_err(|e| e.to_string()),
        }
    }

    /// Fetches part `n` of `commit`'s profile pack, putting its `wanted` members into
    /// the cache; `tell`, if given, hears that the server has profile packs as the first
    /// member arrives, and is dropped as this ends whatever happened (after a 404 has
    /// turned the endpoint off).
    async fn part(
        &self,
        commit: CommitId,
        n: usize,
        members: Vec<Member>,
        wanted: Vec<Member>,
        counts: &Counts,
        tell: Option<watch::Sender<bool>>,
    ) {
        let size: u64 = members.iter().map(|m| m.size).sum();
        let Some(_permits) = self.bounds.permits(size).await else {
            return;
        };
        if !self.endpoint.supported() {
            return;
        }
        let Some(cache) = self.cache.get() else {
            return;
        };
        let wanted: HashSet<ObjectId> = wanted
            .iter()
            .map(|m| m.blob.0)
            .filter(|id| !cache.contains(id))
            .collect();
        if wanted.is_empty() {
            // Readers brought them meanwhile.
            return;
        }
        let expected = self.arrivals.expect(
            wanted
                .iter()
                .map(|id| (*id, Arrival::first(self.wait_limit))),
            |_| false,
        );
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.parts.fetch_add(1, Ordering::Relaxed);
        let path = format!("v1/packs/profile/{commit}/{n}");
        let result = self
            .remote
            .pack_at(&path, &members, None, |id, bytes| {
                self.answered.store(true, Ordering::Relaxed);
                if let Some(t) = &tell
                    && !*t.borrow()
                {
                    t.send_replace(true);
                }
                if wanted.contains(&id) && expected.deliver(cache, id, &bytes, "profile replay") {
                    counts.files.fetch_add(1, Ordering::Relaxed);
                    counts
                        .bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
            })
            .await;
        if let Err(e) = result
            && !self
                .endpoint
                .lacks(&e, "profile packs", "profiles are not replayed")
        {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("profile replay of commit {commit} part {n}: {e}");
        }
    }

    /// Fetches a file too large for packs into the cache, as a reader would (a reader
    /// of it meanwhile waits for this one fetch, see [`Cache::get`]), once `told` (if
    /// given) says whether the server has profile packs, and only if it has.
    async fn large(
        self: Arc<Self>,
        m: Member,
        counts: &Counts,
        told: Option<watch::Receiver<bool>>,
    ) {
        // Before taking permits: the part that tells needs one.
        if let Some(mut told) = told {
            let _ = told.wait_for(|known| *known).await;
        }
        if !self.endpoint.supported() {
            return;
        }
        let Some(_permits) = self.bounds.permits(m.size).await else {
            return;
        };
        let Some(cache) = self.cache.get().cloned() else {
            return;
        };
        if cache.contains(&m.blob.0) {
            return;
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
        match crate::arrivals::fetch_into(cache, self.remote.clone(), m.blob.0, m.size).await {
            Ok(()) => {
                counts.files.fetch_add(1, Ordering::Relaxed);
                counts.bytes.fetch_add(m.size, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("profile replay of object {}: {e}", m.blob),
        }
    }
}

/// Takes `bytes` from `budget` if it holds them; else empties it (nothing after a file
/// that does not fit is taken, so the share goes to the profile's first files).
fn take(budget: &mut u64, bytes: u64) -> bool {
    if bytes <= *budget {
        *budget -= bytes;
        true
    } else {
        *budget = 0;
        false
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        // Requests under way are abandoned (their members are in the cache or not at
        // all); a runtime cannot be dropped where blocking is not allowed.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Objects read through another source, noting which, in the order they were first
/// read: what `canopy profile record` turns into a profile.
pub struct Recording {
    inner: Arc<dyn Objects>,
    read: Mutex<(Vec<ObjectId>, HashSet<ObjectId>)>,
}

impl Recording {
    /// Records what is read from `inner`.
    pub fn new(inner: Arc<dyn Objects>) -> Self {
        Recording {
            inner,
            read: Mutex::new((Vec::new(), HashSet::new())),
        }
    }

    /// The objects read so far, in the order they were first read.
    pub fn read(&self) -> Vec<ObjectId> {
        self.read.lock().expect("recording lock").0.clone()
    }
}

impl Objects for Recording {
    fn open(&self, id: &ObjectId, size: u64) -> io::Result<Opened> {
        {
            let mut read = self.read.lock().expect("recording lock");
            if read.1.insert(*id) {
                read.0.push(*id);
            }
        }
        self.inner.open(id, size)
    }

    fn cached(&self, id: &ObjectId, size: u64) -> io::Result<Option<Opened>> {
        self.inner.cached(id, size)
    }

    fn release(&self, id: &ObjectId) {
        self.inner.release(id)
    }

    fn used(&self) -> u64 {
        self.inner.used()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_refuses_what_does_not_fit_and_what_follows() {
        let mut budget = 10;
        assert!(take(&mut budget, 10));
        assert_eq!(budget, 0);
        assert!(take(&mut budget, 0));
        let mut budget = 10;
        assert!(!take(&mut budget, 11));
        assert!(!take(&mut budget, 1));
    }
}
