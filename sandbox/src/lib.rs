//! Linux namespace sandboxes for canopy: one command in its own user, mount, PID, IPC,
//! UTS and network namespaces, on a root directory of your choosing, with nothing of
//! the host visible but what you mount in.
//!
//! canopy runs package scripts in these at assemble time (`configure`), and runs roots
//! with them (`canopy run`). The same builder covers both ends:
//!
//! - **Unprivileged, shifted** ([`Users::shifted`]): ids 0–65535 inside stand for a
//!   block of host ids no host user has (as root, written by canopy itself; otherwise
//!   the caller's `/etc/subuid`/`/etc/subgid` range through `newuidmap`/`newgidmap`).
//!   Code that is root inside is nobody outside: `/proc/sys` and host files refuse it.
//! - **Caller as root** ([`Users::caller_as_root`]): no subordinate range needed; only
//!   the caller's own id exists inside.
//! - **Super-privileged** ([`Users::Current`] with [`Namespaces::NONE`] but a mount
//!   namespace): the host's network, PIDs and IPC, the host's `/` bound at `/host`.
//!
//! ```no_run
//! use canopy_sandbox::{Mount, Sandbox, Stdio, Users};
//!
//! # fn main() -> Result<(), canopy_sandbox::SandboxError> {
//! let mut sandbox = Sandbox::new(Users::shifted(canopy_sandbox::SHIFTED_IDS)?);
//! sandbox
//!     .root("/srv/roots/web")                       // becomes `/`, via pivot_root
//!     .mount(Mount::Proc { target: "/proc".into() })
//!     .mount(Mount::Dev { target: "/dev".into() })
//!     .mount(Mount::Tmpfs { target: "/tmp".into(), mode: 0o1777 })
//!     .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
//!     .stdout(Stdio::Piped);
//! let mut child = sandbox.spawn("sh", ["-c", "id -u; hostname"])?;
//! let mut out = String::new();
//! std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
//! assert!(child.wait()?.success());
//! # Ok(()) }
//! ```
//!
//! A super-privileged container, as root:
//!
//! ```no_run
//! use canopy_sandbox::{Mount, Namespaces, Sandbox, Users};
//!
//! # fn main() -> Result<(), canopy_sandbox::SandboxError> {
//! let status = Sandbox::new(Users::Current)
//!     .namespaces(Namespaces { mount: true, ..Namespaces::NONE })
//!     .root("/run/canopy/tools")
//!     .mount(Mount::Bind { source: "/".into(), target: "/host".into(), read_only: false })
//!     .mount(Mount::Bind { source: "/proc".into(), target: "/proc".into(), read_only: false })
//!     .env("HOST", "/host")
//!     .status("/bin/sh", ["-c", "ls /host"])?;
//! # let _ = status; Ok(()) }
//! ```
//!
//! **How it starts.** [`Sandbox::spawn`] clones the process with the namespaces asked
//! for (from any thread: the child runs only system calls until `execve`), writes the
//! id maps, and lets the child mount, `pivot_root`, bring `lo` up and set its ids. With
//! a PID namespace the child is the namespace's init: it forwards SIGTERM, SIGINT,
//! SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH and SIGCONT to the command, reaps orphans, and
//! exits with the command's status (128 + N if it was killed by signal N); killing it
//! kills everything inside. Every sandbox process gets SIGKILL when the thread that
//! started it exits, so a killed caller leaves nothing running. `spawn` returns once
//! the command is executed, or with the step that failed (`mounting proc at /proc:
//! EPERM`, `running /usr/bin/dpkg: ENOENT`).
//!
//! **What it needs.** Linux 5.3 or later (pidfds); unprivileged user namespaces for
//! non-root callers (`user.max_user_namespaces` > 0) and Debian's `uidmap` for shifted
//! maps; overlay mounts inside a user namespace need Linux 5.11.
#![warn(missing_docs)]

mod child;
mod error;
mod ids;
mod mounts;
mod process;
mod sandbox;

pub use error::SandboxError;
pub use ids::{IdMap, ROOT_RANGE_TOP, SHIFTED_IDS, SUBGID, SUBUID, Users};
pub use mounts::{DEVICES, Mount};
pub use process::Child;
pub use sandbox::{DEFAULT_PATH, Namespaces, Sandbox, Stdio};
