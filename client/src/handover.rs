//! Live hand-over of a FUSE mount from one canopy process to the next, with no
//! disconnect: programs using the mount never see it go away.
//!
//! Every serving process listens on a unix socket named after its mountpoint
//! ([`socket_path`], mode 0600 in a 0700 directory, callers of the same user only). A
//! successor started on the same mountpoint connects and says which options it runs
//! with; a process with other options refuses, saying how to restart instead. Then:
//!
//! 1. the live process lists the root versions it has shown ([`Offer`]); the successor
//!    loads them (the kernel may still hold inodes of any of them; the inode rule gives
//!    every process the same numbers) and says `go`;
//! 2. the live process stops opening and releasing files, and sends the `/dev/fuse`
//!    descriptor (SCM_RIGHTS), the kernel's INIT offer and its open files; on the
//!    successor's acknowledgement it exits without unmounting, opens and releases still
//!    stopped (the successor adopted the open files as sent: a release answered after
//!    that would close a passthrough registration the successor answers opens with);
//! 3. the successor builds its FUSE session on a socket pair into which it writes the
//!    INIT the kernel sent the first process (the kernel sends INIT once per
//!    connection), puts the real descriptor in the pair's place, and asks the kernel to
//!    resend every request the previous process had read but not answered
//!    (`FUSE_NOTIFY_RESEND`). Requests meanwhile wait in the kernel's queue.
//!
//! The request loop after a hand-over is the one a fresh mount runs, so requests cost
//! the same.

mod live;
mod resume;
mod socket;
mod successor;
mod wire;

pub(crate) use live::listen;
pub(crate) use resume::{resend, resume};
pub(crate) use socket::{connect_now, runtime_dir};
pub use socket::{resolved, shows, socket_path};
pub use successor::{HandoverError, Pending, Taken, ask};

use serde::{Deserialize, Serialize};

/// The options of a mount that a successor must share to take it over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options(pub Vec<(String, String)>);

impl Options {
    /// Names the options that differ between `self` (live) and `other` (successor).
    pub(crate) fn differences(&self, other: &Options) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.0 {
            let theirs = other.0.iter().find(|(k2, _)| k2 == k).map(|(_, v)| v);
            if theirs != Some(v) {
                out.push(format!(
                    "{k} (running: {v}; new: {})",
                    theirs.map_or("(none)", |s| s.as_str())
                ));
            }
        }
        for (k, v) in &other.0 {
            if !self.0.iter().any(|(k2, _)| k2 == k) {
                out.push(format!("{k} (running: (none); new: {v})"));
            }
        }
        out
    }
}

/// A version of a top-level entry the live process has shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The entry (a root's name, or `NAME@COMMIT`).
    pub entry: String,
    /// The commit, 64 hex digits.
    pub commit: String,
}

/// The first answer to a successor: what to load before taking over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    /// Every version shown so far, oldest first.
    pub history: Vec<Shown>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_differ_are_named() {
        let a = Options(vec![
            ("passthrough".into(), "true".into()),
            ("root".into(), "web".into()),
        ]);
        let b = Options(vec![
            ("passthrough".into(), "false".into()),
            ("root".into(), "web".into()),
        ]);
        assert!(a.differences(&a.clone()).is_empty());
        assert_eq!(
            a.differences(&b),
            vec!["passthrough (running: true; new: false)".to_string()]
        );
    }
}
