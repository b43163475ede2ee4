use super::*;
use std::io::Read;

/// Fetches `data` into the cache and closes it again.
fn put(cache: &Cache, data: &[u8]) -> ObjectId {
    let id = ObjectId::of(data);
    cache
        .get(&id, |tmp| {
            fs::write(tmp, data).unwrap();
            Ok::<_, std::io::Error>(data.len() as u64)
        })
        .unwrap();
    cache.unpin(&id);
    id
}

/// Opens the cached object `id` as a reader does: pinned until unpinned.
fn pin(cache: &Cache, id: &ObjectId) {
    cache
        .get(id, |_| -> Result<u64, std::io::Error> { panic!("cached") })
        .unwrap();
}

#[test]
fn evicts_least_recently_used_but_never_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 10).unwrap();
    let a = put(&cache, b"aaaa");
    pin(&cache, &a);
    let b = put(&cache, b"bbbb");
    let c = put(&cache, b"cccc");
    // Over 10 bytes: b is the least recently used unpinned object.
    assert!(cache.path(&a).exists());
    assert!(!cache.path(&b).exists());
    assert!(cache.path(&c).exists());
    assert!(cache.used() <= 10);
    cache.unpin(&a);
    put(&cache, b"dddd");
    assert!(!cache.path(&a).exists());
}

#[test]
fn offers_hold_the_bound_and_never_evict_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 10).unwrap();
    let open = put(&cache, b"aaaa");
    pin(&cache, &open);
    let b = ObjectId::of(b"bbbb");
    assert!(cache.offer(&b, b"bbbb").unwrap());
    assert!(!cache.offer(&b, b"bbbb").unwrap(), "held already");
    // Room for c only by evicting b, never the open a.
    let c = ObjectId::of(b"cccccc");
    assert!(cache.offer(&c, b"cccccc").unwrap());
    assert!(cache.path(&open).exists() && !cache.path(&b).exists());
    assert!(cache.used() <= 10);
    // Larger than what can be freed: refused, nothing evicted.
    let d = ObjectId::of(b"ddddddddd");
    assert!(!cache.offer(&d, b"ddddddddd").unwrap());
    assert!(cache.contains(&c) && !cache.contains(&d));
    let v = cache.cached(&c).expect("an offered object is verified");
    // Put in read-only, stamped as the file in place is (no hashing at its open).
    let path = cache.path(&c);
    assert_eq!(v.stamp, Stamp::of(&fs::File::open(&path).unwrap()).unwrap());
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, READ_ONLY);
    assert_eq!(read_all(v), b"cccccc");
    cache.unpin(&c);
    // Its fan-out directory made on the way, as for any other object.
    let e = ObjectId::of(b"e");
    assert!(cache.offer(&e, b"e").unwrap());
    assert!(cache.path(&e).is_file());
}

#[test]
fn offered_files_hold_the_bound_and_never_evict_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 10).unwrap();
    let open = put(&cache, b"aaaa");
    pin(&cache, &open);
    let staged = |data: &[u8]| {
        let id = ObjectId::of(data);
        let tmp = cache.staging(&id);
        fs::write(&tmp, data).unwrap();
        (id, tmp)
    };
    let (b, tmp) = staged(b"bbbbbb");
    assert!(cache.has_room(6));
    assert!(cache.offer_file(&b, &tmp, 6).unwrap());
    assert!(!tmp.exists() && cache.path(&open).exists());
    assert_eq!(read_all(cache.cached(&b).expect("verified")), b"bbbbbb");
    cache.unpin(&b);
    // Room only by evicting the open a: refused, and the staged file is gone.
    let (c, tmp) = staged(b"ccccccc");
    assert!(!cache.has_room(7));
    assert!(!cache.offer_file(&c, &tmp, 7).unwrap());
    assert!(!tmp.exists() && !cache.contains(&c));
    assert!(cache.path(&open).exists() && cache.used() <= 10);
}

#[test]
fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = Cache::open(dir.path(), 100).unwrap();
    assert!(matches!(
        Cache::open(dir.path(), 100),
        Err(CacheError::Busy(_))
    ));
    drop(first);
    Cache::open(dir.path(), 100).unwrap();
}

/// Overwrites a cache file in place, as root (or its owner, after a chmod) could.
fn tamper(path: &Path, data: &[u8]) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(path, data).unwrap();
}

fn read_all(mut v: Verified) -> Vec<u8> {
    let mut out = Vec::new();
    v.file.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn reuses_and_reverifies_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = put(&Cache::open(dir.path(), 100).unwrap(), b"kept"); // dropped: unlocked
    let cache = Cache::open(dir.path(), 100).unwrap();
    let v = cache
        .get(&id, |_| -> Result<u64, std::io::Error> {
            panic!("must not fetch what is cached")
        })
        .unwrap();
    assert_eq!(read_all(v), b"kept");
    tamper(&cache.path(&id), b"evil");
    drop(cache);
    let cache = Cache::open(dir.path(), 100).unwrap();
    let fetched = std::cell::Cell::new(false);
    let v = cache
        .get(&id, |tmp| {
            fetched.set(true);
            fs::write(tmp, b"kept").unwrap();
            Ok::<_, std::io::Error>(4)
        })
        .unwrap();
    assert!(fetched.get(), "a damaged cached object is fetched again");
    assert_eq!(read_all(v), b"kept");
}

#[test]
fn files_are_read_only_and_a_change_after_verification_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 100).unwrap();
    let id = put(&cache, b"good");
    let mode = fs::metadata(cache.path(&id)).unwrap().mode();
    assert_eq!(mode & 0o777, READ_ONLY);
    // Same size, other bytes, while this process has it verified.
    tamper(&cache.path(&id), b"evil");
    let fetched = std::cell::Cell::new(false);
    let v = cache
        .get(&id, |tmp| {
            fetched.set(true);
            fs::write(tmp, b"good").unwrap();
            Ok::<_, std::io::Error>(4)
        })
        .unwrap();
    assert!(
        fetched.get(),
        "a cache file changed since verification is fetched again"
    );
    let stamp = v.stamp;
    assert_eq!(read_all(v), b"good");
    cache.unpin(&id);
    // A change that leaves the bytes alone (a chmod) is re-verified, not refetched.
    fs::set_permissions(cache.path(&id), fs::Permissions::from_mode(0o400)).unwrap();
    let v = cache
        .get(&id, |_| -> Result<u64, std::io::Error> {
            panic!("the bytes are still right")
        })
        .unwrap();
    assert_ne!(v.stamp, stamp);
    cache.unpin(&id);
    // Found damaged without fetching: removed, never handed out.
    tamper(&cache.path(&id), b"bad!");
    assert!(cache.cached(&id).is_none());
    assert!(!cache.path(&id).exists());
    assert!(cache.cached(&id).is_none());
}

/// A fetch that writes `data` and says whether it ran.
fn fetch_of<'a>(
    data: &'a [u8],
    ran: &'a std::cell::Cell<bool>,
) -> impl FnOnce(&Path) -> Result<u64, std::io::Error> + 'a {
    move |tmp| {
        ran.set(true);
        fs::write(tmp, data)?;
        Ok(data.len() as u64)
    }
}

#[test]
fn an_object_half_written_by_an_earlier_run_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = b"all of the object's bytes";
    let id = ObjectId::of(data);
    {
        // A run that stopped mid-write of an offered object: its final name, its mode,
        // part of its bytes.
        let cache = Cache::open(dir.path(), 100).unwrap();
        let path = cache.path(&id);
        private_dir(path.parent().unwrap()).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(READ_ONLY)
            .open(&path)
            .unwrap()
            .write_all(&data[..7])
            .unwrap();
    }
    let cache = Cache::open(dir.path(), 30).unwrap();
    assert!(cache.contains(&id), "listed by the scan, as any file there");
    assert!(cache.cached(&id).is_none(), "hashed before use, not served");
    assert!(!cache.path(&id).exists() && cache.used() == 0);
    let ran = std::cell::Cell::new(false);
    let v = cache.get(&id, fetch_of(data, &ran)).unwrap();
    assert!(ran.get(), "fetched again");
    assert_eq!(read_all(v), data);
    cache.unpin(&id);
    assert!(cache.used() <= 30);

    // Found by a reader's open rather than a look: fetched again too.
    drop(cache);
    let path = Cache::open(dir.path(), 30).unwrap().path(&id);
    tamper(&path, &data[..7]);
    let cache = Cache::open(dir.path(), 30).unwrap();
    let ran = std::cell::Cell::new(false);
    let v = cache.get(&id, fetch_of(data, &ran)).unwrap();
    assert!(ran.get(), "a half-written file is fetched again");
    assert_eq!(read_all(v), data);
    assert_eq!(cache.used(), data.len() as u64);
}

#[test]
fn an_offer_writes_at_the_objects_name_and_replaces_an_unlisted_file_there() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 100).unwrap();
    let id = ObjectId::of(b"offered");
    let path = cache.path(&id);
    // A file no listing knows of (one whose removal failed), possibly open somewhere:
    // replaced by a new file, never written into.
    private_dir(path.parent().unwrap()).unwrap();
    fs::write(&path, b"stale bytes").unwrap();
    let stale = fs::File::open(&path).unwrap();
    assert!(cache.offer(&id, b"offered").unwrap());
    assert_eq!(read_all(cache.cached(&id).expect("verified")), b"offered");
    cache.unpin(&id);
    let mut old = Vec::new();
    (&stale).read_to_end(&mut old).unwrap();
    assert_eq!(old, b"stale bytes", "the old file was not written into");
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, READ_ONLY);
    // Nothing staged: the staging directory stays empty.
    assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn a_failed_offer_leaves_nothing_and_gives_its_room_back() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 10).unwrap();
    let id = ObjectId::of(b"blocked");
    // Its fan-out directory's name taken by a file: the object cannot be created.
    let fan = cache.path(&id).parent().unwrap().to_path_buf();
    fs::write(&fan, b"").unwrap();
    assert!(matches!(
        cache.offer(&id, b"blocked"),
        Err(CacheError::Io { .. })
    ));
    assert!(!cache.contains(&id) && cache.used() == 0);
    assert!(!cache.is_fetching(&id));
    // The room is there for the next object.
    let other = b"ten bytes!";
    let other_id = ObjectId::of(other);
    assert_ne!(cache.path(&other_id).parent(), Some(fan.as_path()));
    assert!(cache.offer(&other_id, other).unwrap());
    assert_eq!(cache.used(), 10);
}

#[test]
fn an_object_being_fetched_is_not_offered_too() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 100).unwrap();
    let data = b"fetched once";
    let id = ObjectId::of(data);
    let v = cache
        .get(&id, |tmp| {
            // An offer while the reader's fetch is under way: refused, nothing written.
            assert!(!cache.offer(&id, data).unwrap());
            assert!(!cache.path(&id).exists());
            fs::write(tmp, data)?;
            Ok::<_, std::io::Error>(data.len() as u64)
        })
        .unwrap();
    assert_eq!(read_all(v), data);
    assert_eq!(cache.used(), data.len() as u64);
}

/// Plants `what` at the name of the object `data` in a cache at `dir` (as someone who
/// can write the cache directory could), then checks the next run serves the object's
/// own bytes, fetched again, from a regular file at its name, and never waits on
/// what was planted (a FIFO's open would block until a writer came).
fn planted_is_replaced(plant: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let data = b"the object's own bytes";
    let id = ObjectId::of(data);
    let path = {
        let cache = Cache::open(dir.path(), 100).unwrap();
        let path = cache.path(&id);
        private_dir(path.parent().unwrap()).unwrap();
        plant(&path);
        path
    };
    let (done, finished) = std::sync::mpsc::channel();
    let root = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let cache = Cache::open(&root, 100).unwrap();
        let ran = std::cell::Cell::new(false);
        let got = cache
            .get(&id, fetch_of(data, &ran))
            .map(|v| (read_all(v), ran.get()));
        let _ = done.send(got.map_err(|e| e.to_string()));
    });
    // A bound only against a hang (the open of a FIFO blocks for good): done at once.
    let got = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the reader never came back from what was planted at the object's name");
    let (bytes, fetched) = got.expect("the object is fetched again");
    assert_eq!(bytes, data);
    assert!(fetched, "what was planted is never used");
    assert!(
        fs::symlink_metadata(&path).unwrap().is_file(),
        "a regular file in its place"
    );
}

#[test]
fn a_fifo_at_an_objects_name_is_replaced_not_opened() {
    planted_is_replaced(|path| {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    });
}

#[test]
fn a_symlink_at_an_objects_name_is_replaced_not_followed() {
    planted_is_replaced(|path| {
        // Even to a file with the object's bytes: its content could change at any time,
        // out of the cache's sight.
        let top = path.parent().unwrap().parent().unwrap().parent().unwrap();
        let elsewhere = top.join("elsewhere");
        fs::write(&elsewhere, b"the object's own bytes").unwrap();
        std::os::unix::fs::symlink(&elsewhere, path).unwrap();
    });
}

#[test]
fn a_directory_at_an_objects_name_is_replaced() {
    planted_is_replaced(|path| {
        fs::create_dir(path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
    });
}

#[test]
fn a_cache_directory_that_is_a_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Cache::open(&file, 1 << 20)
        .err()
        .expect("a file is no cache directory");
    let shown = err.to_string();
    assert!(shown.contains("give --cache-dir a directory"), "{shown}");
    assert!(shown.contains("not-a-dir"), "{shown}");
}
