//! canopy's server side: the content-addressed object store and everything that writes
//! or walks it.
//!
//! - [`store`]: objects, refs, the lock and the signing key; all writes in transactions;
//! - [`import`]: `.deb`, tarballs and directories into package trees;
//! - [`packages`]: the imported packages and how a spec picks one;
//! - [`control`], [`resolve`]: Debian control data and which packages of an index a
//!   request needs;
//! - [`assemble`]: a root as the union of package trees, committed and signed;
//! - [`checkout`]: a root as a plain directory;
//! - [`signature`]: OpenPGP signatures on Debian repository metadata, checked against a keyring;
//! - [`closure`], [`fsck`], [`gc`]: what the refs reach, checking it, keeping only it.
#![warn(missing_docs)]

pub mod assemble;
pub mod checkout;
pub mod closure;
pub mod control;
mod crash;
pub mod fsck;
pub mod gc;
pub mod http;
pub mod import;
pub mod packages;
pub mod resolve;
pub mod signature;
pub mod store;

pub use store::{Access, Store, StoreError, Txn, TxnStats};
