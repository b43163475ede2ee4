//! canopy's server side: the content-addressed object store and everything that writes
//! or walks it.
//!
//! - [`store`]: objects, refs, the lock and the signing key; all writes in transactions;
//!   objects and refs behind a backend seam (local directory, memory);
//! - [`view`]: one read view of the store (history, entry attributes, trees) that HTTP,
//!   NFS, checkout and the commands share;
//! - [`import`]: tarballs and directories into package trees, and what every format's
//!   importer shares (limits, the tree builder, error classes);
//! - [`debian`]: the `.deb` format and Debian repositories: control data, the resolver,
//!   signed Release files and Packages indexes, the `.deb` importer;
//! - [`rpm`]: the `.rpm` format: checked headers, the cpio payload, the `.rpm` importer;
//! - [`oci`]: container images (OCI layouts, `docker save` archives) imported as roots,
//!   each layer once;
//! - [`packages`]: the imported packages and how a spec picks one;
//! - [`repo`]: configured repositories, downloads, OpenPGP checks, what a recipe
//!   resolves to;
//! - [`assemble`]: a root as the union of package trees, committed and signed;
//! - [`configure`]: running the packages' scripts in a sandbox so the root is
//!   installed, not just unpacked; [`edit`]: changing a stored tree in memory;
//! - [`diff`]: what changed between two commits of a root;
//! - [`rollback`]: an earlier version again, as a new commit;
//! - [`checkout`]: a root as a plain directory;
//! - [`inspect`]: a root's paths, contents and owners, without mounting it;
//! - [`closure`], [`fsck`], [`gc`]: what the refs reach, checking it, keeping only it;
//! - [`http`] and [`nfs`]: serving it, to `canopy mount` and to kernels' NFS clients.
#![warn(missing_docs)]

pub mod assemble;
pub mod checkout;
pub mod closure;
pub mod configure;
mod crash;
pub mod debian;
pub mod diff;
pub mod edit;
pub mod fsck;
pub mod gc;
pub mod http;
pub mod import;
pub mod inspect;
pub mod nfs;
pub mod oci;
pub mod packages;
pub mod repo;
pub mod rollback;
pub mod rpm;
pub mod store;
pub mod suggest;
pub mod view;

pub use store::{Access, Backend, Store, StoreError, Txn, TxnStats};
