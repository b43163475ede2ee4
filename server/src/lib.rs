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
//! - [`format`]: the interface every package format implements (Debian and RPM are
//!   peers behind it);
//! - [`packages`]: the imported packages and how a spec picks one;
//! - [`repo`]: configured repositories, downloads, OpenPGP checks, what a recipe
//!   resolves to;
//! - [`assemble`]: a root as the union of package trees, committed and signed;
//! - [`configure`]: running the packages' scripts in a sandbox so the root is
//!   installed, not just unpacked; [`edit`]: changing a stored tree in memory;
//! - [`diff`]: what changed between two commits of a root;
//! - [`rollback`]: an earlier version again, as a new commit;
//! - [`remove`]: roots and packages removed, and who uses a package;
//! - [`checkout`]: a root as a plain directory, hard-linked to the store or its
//!   [`linkfarm`];
//! - [`inspect`]: a root's paths, contents and owners, without mounting it;
//! - [`closure`], [`fsck`], [`gc`]: what the refs reach, checking it, keeping only it;
//! - [`repair`]: damaged objects restored from the archives they came from;
//! - [`http`] and [`nfs`]: serving it, to `canopy mount` and to kernels' NFS clients;
//!   [`admission`]: how many connections they take, within the open-file limit;
//!   [`netboot`]: what diskless nodes boot with (kernel, initramfs, command line).
#![warn(missing_docs)]

pub mod admission;
pub mod assemble;
pub mod checkout;
pub mod closure;
pub mod configure;
mod crash;
pub mod debian;
pub mod diff;
pub mod edit;
pub mod format;
pub mod fsck;
pub mod gc;
pub mod http;
pub mod import;
pub mod inspect;
pub mod linkfarm;
pub mod maker;
pub mod netboot;
pub mod nfs;
pub mod oci;
pub mod packages;
pub mod profile;
pub mod remove;
pub mod repair;
pub mod replicate;
pub mod repo;
pub mod rollback;
pub mod rpm;
pub mod store;
pub mod suggest;
pub mod view;

pub use store::{Access, Backend, Store, StoreError, Txn, TxnStats};
