//! RPM: everything canopy knows of the `.rpm` format.
//!
//! - [`header`]: the lead and the two headers, bounded and checked before parsing,
//!   their digests and OpenPGP signatures;
//! - [`cpio`]: the records of the payload archive;
//! - [`caps`]: file capabilities from the header's text to the kernel's xattr;
//! - [`evr`]: rpm's version ordering (epochs, `rpmvercmp`, `~` and `^`);
//! - [`facts`]: what a package record keeps of an RPM (extension `rpm`);
//! - [`import`]: an `.rpm` into a package tree;
//! - [`repomd`]: rpm-md repositories (repomd.xml, primary, filelists);
//! - [`resolve`]: which packages of a repository a request needs, on resolvo;
//! - `transaction`, `owners`, `driver`, `configure`: installing a set of RPMs as rpm
//!   does — install order, directory modes and owners by name from the headers,
//!   scriptlets and triggers in the configure sandbox, the root's rpm database;
//! - [`Rpm`]: all of it as a [`crate::format::Format`].

mod caps;
mod configure;
mod cpio;
mod driver;
pub mod evr;
pub mod facts;
mod format;
pub(crate) mod header;
pub mod import;
mod owners;
pub mod repomd;
pub mod resolve;
mod transaction;

pub use format::Rpm;
