//! What can go wrong starting a sandbox.

use nix::errno::Errno;

/// Why a sandbox could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A non-root caller has no subordinate id range to map.
    #[error(
        "user {user} has no subordinate range of {count} ids in {file}: add the line `{line}` to /etc/subuid and /etc/subgid (as root: usermod --add-subuids … --add-subgids … {user}), and install Debian's uidmap package for newuidmap/newgidmap"
    )]
    NoSubordinateIds {
        /// The user.
        user: String,
        /// The file that lacks the range.
        file: &'static str,
        /// How many ids are needed.
        count: u32,
        /// A line that would do.
        line: String,
    },
    /// Every block of host ids a root-owned map could use is handed out in /etc/subuid.
    #[error(
        "no block of 65536 host ids is free for the sandbox's user namespace: /etc/subuid and /etc/subgid hand them all out; add a `root:START:65536` line for canopy to use"
    )]
    NoFreeRange,
    /// newuidmap or newgidmap failed.
    #[error("writing the sandbox's id map with {tool}: {detail}")]
    IdMapTool {
        /// Which helper.
        tool: &'static str,
        /// What it said.
        detail: String,
    },
    /// The sandbox's description is not usable.
    #[error("sandbox: {0}")]
    Config(String),
    /// A file operation of the caller failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A system call of the caller failed.
    #[error("{what}: {source}")]
    Spawn {
        /// What was being done.
        what: String,
        /// The errno.
        source: Errno,
    },
    /// A step of the sandbox's setup failed inside it.
    #[error("setting up the sandbox: {step}: {source}")]
    Setup {
        /// The step, e.g. `mounting proc at /proc` or `running /usr/bin/dpkg`.
        step: String,
        /// The errno.
        source: Errno,
    },
}
