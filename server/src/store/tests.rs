//! The store's unit tests: transactions, objects, refs and logs, on a local store and
//! an in-memory one.

use super::*;

/// A local store and an in-memory one, each in its own directory.
fn stores() -> Vec<(tempfile::TempDir, Store)> {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let local = Store::init(a.path()).unwrap().0;
    let memory = Store::memory(b.path()).unwrap();
    vec![(a, local), (b, memory)]
}

#[test]
fn dropped_transaction_leaves_nothing() {
    for (dir, store) in stores() {
        let (id, size) = {
            let mut txn = store.begin().unwrap();
            txn.put_blob(&b"abc"[..]).map_err(|_| ()).unwrap()
        };
        assert_eq!(size, 3);
        assert!(!store.has(&id.0).unwrap());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}

#[test]
fn committed_objects_are_readable_and_deduplicated() {
    for (_dir, store) in stores() {
        let mut txn = store.begin().unwrap();
        let (a, _) = txn.put_blob(&b"same"[..]).map_err(|_| ()).unwrap();
        let (b, _) = txn.put_blob(&b"same"[..]).map_err(|_| ()).unwrap();
        assert_eq!(a, b);
        let stats = txn.commit().unwrap();
        assert_eq!(
            stats,
            TxnStats {
                new_objects: 1,
                new_bytes: 4,
                replaced: 0,
            }
        );
        assert_eq!(store.read_object(&a.0).unwrap(), b"same");
        assert_eq!(store.objects().size(&a.0).unwrap(), 4);
        let mut buf = [0u8; 8];
        assert_eq!(store.objects().read_at(&a.0, 1, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"ame");
        assert_eq!(store.objects().list().unwrap(), vec![a.0]);
        // A second put of present content reports it.
        let tmp = store.path().join("tmp/again");
        fs::write(&tmp, b"same").unwrap();
        assert_eq!(store.objects().put(vec![(a.0, tmp)]).unwrap(), vec![true]);
    }
}

#[test]
fn corrupt_local_objects_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::init(dir.path()).unwrap();
    let mut txn = store.begin().unwrap();
    let (a, _) = txn.put_blob(&b"same"[..]).map_err(|_| ()).unwrap();
    txn.commit().unwrap();
    fs::write(store.local_path(&a.0).unwrap(), b"evil").unwrap();
    assert!(matches!(
        store.read_object(&a.0),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn refs_move_only_from_what_the_writer_expected() {
    for (_dir, store) in stores() {
        let web: RootName = "web".parse().unwrap();
        let (one, two) = (CommitId(ObjectId::of(b"1")), CommitId(ObjectId::of(b"2")));
        let mut txn = store.begin().unwrap();
        txn.set_root(&web, None, one);
        txn.commit().unwrap();
        // A writer that read no root loses to the one that created it.
        let mut txn = store.begin().unwrap();
        txn.set_root(&web, None, two);
        let err = txn.commit().unwrap_err();
        assert!(
            matches!(&err, StoreError::Conflict { name, found: Some(f), .. } if name == "roots/web" && *f == one.0),
            "{err}"
        );
        assert_eq!(store.root_ref(&web).unwrap(), Some(one));
        let mut txn = store.begin().unwrap();
        txn.set_root(&web, Some(one), two);
        txn.commit().unwrap();
        assert_eq!(store.roots().unwrap(), vec![(web.clone(), two)]);
        // Removal is a swap to nothing.
        store
            .refs()
            .compare_and_swap("roots/web", Some(two.0), None)
            .unwrap();
        assert_eq!(store.roots().unwrap(), vec![]);
    }
}

#[test]
fn an_archive_imported_by_another_writer_keeps_its_record() {
    for (_dir, store) in stores() {
        let archive = ArchiveHash(ObjectId::of(b"deb"));
        let (first, second) = (PackageId(ObjectId::of(b"a")), PackageId(ObjectId::of(b"b")));
        for id in [first, second] {
            let mut txn = store.begin().unwrap();
            txn.set_package(&archive, id);
            txn.commit().unwrap();
        }
        assert_eq!(store.package_ref(&archive).unwrap(), Some(first));
    }
}

#[test]
fn logs_keep_their_entries_in_order() {
    for (dir, store) in stores() {
        assert!(store.refs().read_log("roots/web").unwrap().is_empty());
        store.refs().append_log("roots/web", "one").unwrap();
        if store.local_path(&ObjectId::of(b"")).is_some() {
            // A crash mid-append leaves a line without its newline: dropped.
            let path = dir.path().join("logs/roots/web");
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            std::io::Write::write_all(&mut f, b"tor").unwrap();
        }
        store.refs().append_log("roots/web", "two").unwrap();
        assert_eq!(store.refs().read_log("roots/web").unwrap(), ["one", "two"]);
    }
}
