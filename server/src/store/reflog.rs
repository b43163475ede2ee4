//! The reflog: every move of a root's ref, kept in the ref backend's log of that ref
//! (`logs/roots/NAME` on a local store), one JSON line each:
//!
//! ```text
//! {"time":1764450000,"user":"root","op":"upgrade","old":"3f2a…","new":"8e1d…"}
//! ```
//!
//! `op` is what moved it (`assemble`, `upgrade`, `rollback`, `remove`, `import`…), `old`
//! and `new` the commits before and after (`null` for none: a new root, a removed one).
//!
//! An entry is written *before* the ref moves, so a crash between the two never loses
//! the record of a move that happened. A crash in between leaves an entry for a move
//! that did not happen; it is recognised — and shown as interrupted — because the move
//! after it starts from its `old`, not its `new` (or, for the last entry, because the
//! ref does not hold its `new`). The commits it names were written before it, so even
//! an interrupted entry names commits the store has. The log outlives the ref: a
//! removed root's history stays reachable through it, for `rollback` and for gc's grace
//! period.

use super::{RefName, Store, StoreError};
use canopy_protocol::{CommitId, RootName};
use serde::{Deserialize, Serialize};

/// One move of a root's ref.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When, unix seconds.
    pub time: i64,
    /// Who: the user name of the process that moved it, or its uid.
    pub user: String,
    /// What moved it.
    pub op: String,
    /// The commit before (`None`: the root did not exist).
    #[serde(with = "hex_id")]
    pub old: Option<CommitId>,
    /// The commit after (`None`: the root was removed).
    #[serde(with = "hex_id")]
    pub new: Option<CommitId>,
}

/// An entry as read back, knowing whether its move took place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// The entry.
    pub entry: Entry,
    /// `false` when the writer stopped between writing the entry and moving the ref.
    pub applied: bool,
}

/// Commit ids as hex strings, `null` for none.
mod hex_id {
    use canopy_protocol::CommitId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<CommitId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_str(&id.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CommitId>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(|id| Some(CommitId(id)))
                .map_err(serde::de::Error::custom),
        }
    }
}

/// The user moving refs in this process: its login name, else its uid.
pub fn current_user() -> String {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to live memory of the size given; getpwuid_r writes the
    // entry into `pwd` and `buf` and points `found` at `pwd` on success.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            pwd.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc == 0 && !found.is_null() {
        // SAFETY: on success `pw_name` points at a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr((*found).pw_name) };
        if let Ok(name) = name.to_str()
            && !name.is_empty()
        {
            return name.to_string();
        }
    }
    uid.to_string()
}

/// Seconds since the epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Records that `op` is about to move root `root` from `old` to `new` (durable on
    /// return). Writers call this just before the compare-and-swap of the ref.
    pub(crate) fn log_root_move(
        &self,
        root: &RootName,
        op: &str,
        old: Option<CommitId>,
        new: Option<CommitId>,
    ) -> Result<(), StoreError> {
        let entry = Entry {
            time: now(),
            user: current_user(),
            op: op.to_string(),
            old,
            new,
        };
        let line = serde_json::to_string(&entry).expect("an entry serializes");
        self.refs
            .append_log(&RefName::Root(root.clone()).to_string(), &line)
    }

    /// A root's reflog, oldest entry first, each marked applied or interrupted. Lines
    /// that do not parse (written by a later version, or damaged) are left out.
    pub fn reflog(&self, root: &RootName) -> Result<Vec<Logged>, StoreError> {
        let name = RefName::Root(root.clone()).to_string();
        let entries: Vec<Entry> = self
            .refs
            .read_log(&name)?
            .iter()
            .filter_map(|line| match serde_json::from_str(line) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!("{name}: skipping a reflog line that does not parse: {e}");
                    None
                }
            })
            .collect();
        let current = self.root_ref(root)?;
        let mut out = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let applied = match entries.get(i + 1) {
                Some(next) => next.old == entry.new,
                None => current == entry.new,
            };
            out.push(Logged {
                entry: entry.clone(),
                applied,
            });
        }
        Ok(out)
    }

    /// Every root that has a reflog, existing or removed, sorted.
    pub fn logged_roots(&self) -> Result<Vec<RootName>, StoreError> {
        let mut out = Vec::new();
        for name in self.refs.log_names(super::ROOTS)? {
            match name.parse() {
                Ok(root) => out.push(root),
                Err(e) => tracing::warn!("skipping the log {name}: {e}"),
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_protocol::ObjectId;

    #[test]
    fn entries_round_trip_and_interrupted_moves_are_told_apart() {
        let state = tempfile::tempdir().unwrap();
        let store = Store::memory(state.path()).unwrap();
        let web: RootName = "web".parse().unwrap();
        let (a, b, c) = (
            CommitId(ObjectId::of(b"a")),
            CommitId(ObjectId::of(b"b")),
            CommitId(ObjectId::of(b"c")),
        );
        // a created, then a move to b that crashed before the ref moved, then c.
        for (op, old, new) in [("assemble", None, Some(a)), ("upgrade", Some(a), Some(b))] {
            store.log_root_move(&web, op, old, new).unwrap();
        }
        store
            .refs()
            .compare_and_swap("roots/web", None, Some(a.0))
            .unwrap();
        store
            .log_root_move(&web, "upgrade", Some(a), Some(c))
            .unwrap();
        store
            .refs()
            .compare_and_swap("roots/web", Some(a.0), Some(c.0))
            .unwrap();
        store.refs().append_log("roots/web", "{not json").unwrap();
        let log = store.reflog(&web).unwrap();
        let seen: Vec<(&str, Option<CommitId>, bool)> = log
            .iter()
            .map(|l| (l.entry.op.as_str(), l.entry.new, l.applied))
            .collect();
        assert_eq!(
            seen,
            [
                ("assemble", Some(a), true),
                ("upgrade", Some(b), false),
                ("upgrade", Some(c), true)
            ]
        );
        assert!(!log[0].entry.user.is_empty());
        assert_eq!(store.logged_roots().unwrap(), [web]);
    }
}
