//! canopy's server side: the content-addressed object store and everything that writes
//! or walks it — importers, the assembler, checkout, fsck and garbage collection.
#![warn(missing_docs)]

mod crash;
pub mod store;

pub use store::{Access, Store, StoreError, Txn, TxnStats};
