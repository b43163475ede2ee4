//! canopy's client side: hosts use roots without unpacking them.
//!
//! - [`remote`]: fetching from servers (or HTTP caches) with failover and timeouts,
//!   verifying every object against its id;
//! - [`objects`]: where file contents come from: the host's cache (`canopy-cache`) over
//!   servers, or a local store's own files;
//! - [`pack`]: many small objects per request, each verified;
//! - [`prefetch`]: a directory's small files fetched in the background when it is read in order;
//! - [`demand`]: fetches readers wait for go first, prefetch holds back meanwhile;
//! - [`view`]: roots, their trees and inode numbers, independent of any front end;
//! - [`fs`]: the FUSE front end over the view;
//! - [`open_files`]: a mount's open files, handles and passthrough registrations;
//! - [`mode_table`]: each open inode's I/O mode in shared memory, for a successor after a crash;
//! - [`host`]: a host's client settings (servers, trust, cache, how to fetch);
//! - [`mount`]: putting it together for `canopy mount`;
//! - [`handover`]: a live mount passed from one process to the next;
//! - [`session`]: a `canopy mount` process from start (fresh, taken over, resumed) to end;
//! - [`service`]: the service manager's descriptor store and the state beside it;
//! - [`run`]: `canopy run`, a command in a root with per-host state;
//! - [`volume`]: the Docker volume plugin, `canopy volume-plugin`.
#![warn(missing_docs)]

pub mod arrivals;
pub mod demand;
pub mod fs;
pub mod handover;
pub mod host;
pub mod mode_table;
pub mod mount;
pub mod objects;
pub mod open_files;
pub mod pack;
pub mod prefetch;
pub mod profile;
pub mod remote;
pub mod run;
pub mod service;
pub mod session;
pub mod view;
pub mod volume;
