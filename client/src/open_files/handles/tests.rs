//! Unit tests of handle entries: what a successor counts and frees.

use super::*;
use crate::objects::Local;
use canopy_protocol::ObjectId;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

/// Files on a "connection" of /dev/null (closing a registration is refused there,
/// and only logged): what is counted and freed is tested here; the kernel's side
/// is in tests/handover.rs.
fn files() -> Files {
    let files = Files::new(true, Arc::new(Local::new(|_| None)));
    files.attach(OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
    files
}

fn left(table: &ModeTable) -> Vec<Recorded> {
    let fd = table.fd().try_clone_to_owned().unwrap();
    let (_, recorded) = ModeTable::open(fd).unwrap();
    recorded.into_iter().map(|(_, r)| r).collect()
}

fn registration(ino: u64, raw: u32, handles: bool) -> Recorded {
    Recorded::Passthrough {
        ino,
        raw,
        stamp: None,
        handles,
    }
}

/// A table as a process killed at various points leaves it: registration 5 (inode
/// 9) with one open file released later, one whose OPEN (unique 40) the kernel
/// resends, never answered; registration 6 (inode 10) with no open file left;
/// registration 7 (inode 11) not all of whose open files were recorded.
fn killed() -> (Arc<ModeTable>, Vec<(usize, Recorded)>) {
    let table = ModeTable::create().unwrap();
    let r5 = table.add(registration(9, 5, true)).unwrap();
    let handle = |fh, unique, registration, ino, raw| Recorded::Handle {
        ino,
        raw,
        registration: Some(registration),
        fh,
        unique,
    };
    table.add(handle(100, 30, r5, 9, 5)).unwrap();
    table.add(handle(101, 40, r5, 9, 5)).unwrap();
    table.add(registration(10, 6, true)).unwrap();
    let r7 = table.add(registration(11, 7, true)).unwrap();
    table.add(handle(102, 50, r7, 11, 7)).unwrap();
    table.untrack(r7);
    let fd = table.fd().try_clone_to_owned().unwrap();
    let (table, recorded) = ModeTable::open(fd).unwrap();
    (Arc::new(table), recorded)
}

#[test]
fn a_successor_holds_a_registration_until_its_recorded_open_files_are_gone() {
    let (table, recorded) = killed();
    let files = files();
    let adopted = files.adopt_recorded(table.clone(), recorded, true);
    let expected = Adopted {
        inodes: 3,
        kept_closed: 0,
        unused_closed: 1,
        open_files: 2,
        cached_files: 0,
        held: 1,
    };
    assert_eq!(adopted, expected);
    // Registration 6 closed (its entry freed), 7 kept for good (its open file's
    // entry freed: not counted).
    let entries = left(&table);
    assert!(entries.contains(&registration(9, 5, true)), "{entries:?}");
    assert!(!entries.contains(&registration(10, 6, true)), "{entries:?}");
    assert!(entries.contains(&registration(11, 7, false)), "{entries:?}");
    assert_eq!(entries.len(), 4, "{entries:?}");
    // A new open of inode 9 shares registration 5 and is recorded too.
    let Io::Direct(shared) = files.io_for(9, None) else {
        panic!("inode 9 is bound to registration 5")
    };
    assert_eq!(shared.raw, 5);
    let open = OpenFile {
        ino: 9,
        blob: ObjectId::of(b"x"),
        size: 1,
        content: Mutex::new(None),
        backing: Some(shared),
        counted: false,
    };
    files.insert(7000, 60, open);
    assert_eq!(left(&table).len(), 5);
    // The resent OPEN 40 and the release of handle 100: both recorded files gone,
    // the new open holds the registration alone.
    files.opening(40 | RESENT);
    files.opening(30);
    files.remove(100, 9);
    let entries = left(&table);
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries.contains(&registration(9, 5, true)), "{entries:?}");
    // Its release: closed and freed.
    drop(files.remove(7000, 9));
    let entries = left(&table);
    assert_eq!(entries, [registration(11, 7, false)]);
    // Handles never recorded, or released twice, change nothing.
    files.remove(100, 9);
    files.remove(102, 11);
    assert_eq!(left(&table), [registration(11, 7, false)]);
}

#[test]
fn after_a_process_that_kept_no_handle_entries_every_registration_is_kept() {
    let (table, recorded) = killed();
    let files = files();
    let adopted = files.adopt_recorded(table.clone(), recorded, false);
    assert_eq!(
        (adopted.held, adopted.open_files, adopted.unused_closed),
        (3, 0, 0)
    );
    // Said so in the table, for the successors after; stale handle entries freed.
    let entries = left(&table);
    assert_eq!(
        entries,
        [
            registration(9, 5, false),
            registration(10, 6, false),
            registration(11, 7, false)
        ]
    );
}

#[test]
fn open_files_of_a_killed_process_are_handed_over_live_and_recorded_anew() {
    let (table, recorded) = killed();
    let live = files();
    live.adopt_recorded(table, recorded, true);
    live.opening(40 | RESENT);
    let next = files();
    next.adopt(live.state()).unwrap();
    drop(live);
    let fresh = Arc::new(ModeTable::create().unwrap());
    next.record_in(fresh.clone());
    let entries = left(&fresh);
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries.contains(&registration(9, 5, true)), "{entries:?}");
    assert!(entries.contains(&registration(11, 7, false)), "{entries:?}");
    assert!(entries.iter().any(|r| matches!(
        r,
        Recorded::Handle {
            ino: 9,
            raw: 5,
            fh: 100,
            unique: 30,
            ..
        }
    )));
    // Released: registration 5 closed, 7 kept.
    next.remove(100, 9);
    assert_eq!(left(&fresh), [registration(11, 7, false)]);
}

/// Inode 20's count of open files read through canopy.
fn cached(files: &Files) -> usize {
    match files.modes.lock().unwrap().get(&20) {
        Some(Mode::Cached { open, .. }) => *open,
        _ => 0,
    }
}

#[test]
fn open_files_read_through_canopy_are_counted_off_once_each() {
    // Inode 20: open files 200 (answered) and 201 (its OPEN, 70, resent), the
    // release of 202 handled but not answered (entry freed, count lowered), and an
    // open counted whose entry was not added yet (killed, so never answered): a
    // count of 3, each of its files with an entry (`handles`) or not.
    let adopt = |handles_kept, handles| {
        let made = ModeTable::create().unwrap();
        let count = Recorded::Cached {
            ino: 20,
            count: 3,
            handles,
        };
        made.add(count).unwrap();
        for (fh, unique) in [(200, 60), (201, 70)] {
            let h = Recorded::Handle {
                ino: 20,
                raw: 0,
                registration: None,
                fh,
                unique,
            };
            made.add(h).unwrap();
        }
        let fd = made.fd().try_clone_to_owned().unwrap();
        let (table, recorded) = ModeTable::open(fd).unwrap();
        let files = files();
        let a = files.adopt_recorded(Arc::new(table), recorded, handles_kept);
        (files, a)
    };
    // Counted by its entries.
    let (files, adopted) = adopt(true, true);
    assert_eq!((adopted.inodes, adopted.cached_files), (1, 2));
    assert_eq!(cached(&files), 2);
    // 202's release, resent, counts nothing off (before, it was counted off again:
    // with 200 open, a passthrough open of the inode then failed).
    files.remove(202, 20);
    assert_eq!(cached(&files), 2);
    files.opening(70 | RESENT);
    assert_eq!(cached(&files), 1);
    // Read, then released: counted off once.
    let blob = ObjectId::of(b"x");
    files.get_or_insert(200, || Some(OpenFile::orphan(20, blob, 1)));
    files.remove(200, 20);
    assert_eq!(cached(&files), 0);
    files.remove(200, 20);
    assert_eq!(cached(&files), 0);
    // Not each file with an entry: the count is kept, and still only the entries
    // count off (one too many then stays: never too few).
    let (files, _) = adopt(true, false);
    assert_eq!(cached(&files), 3);
    files.remove(202, 20);
    files.remove(200, 20);
    assert_eq!(cached(&files), 2);
    // After a process that kept no entries, any release of a handle never seen is
    // counted off, as before.
    let (files, adopted) = adopt(false, true);
    assert_eq!(adopted.cached_files, 0);
    files.remove(202, 20);
    assert_eq!(cached(&files), 2);
}

#[test]
fn a_new_table_trusts_the_entries_of_files_read_through_canopy_if_each_has_one() {
    let files = files();
    let counted = |ino| OpenFile {
        ino,
        blob: ObjectId::of(b"x"),
        size: 1,
        content: Mutex::new(None),
        backing: None,
        counted: true,
    };
    // Inode 20: two open files, one of them unknown (a killed predecessor's, never
    // read); inode 21: one, known.
    for ino in [20, 20, 21] {
        assert!(matches!(files.io_for(ino, None), Io::Counted));
    }
    files.insert(300, 2, counted(20));
    files.insert(301, 4, counted(21));
    let table = Arc::new(ModeTable::create().unwrap());
    files.record_in(table.clone());
    let entries = left(&table);
    let count = |ino, count, handles| Recorded::Cached {
        ino,
        count,
        handles,
    };
    assert!(entries.contains(&count(20, 2, false)), "{entries:?}");
    assert!(entries.contains(&count(21, 1, true)), "{entries:?}");
    assert_eq!(entries.len(), 4, "{entries:?}");
}

use super::super::Io;
