//! Debian: everything canopy knows of the `.deb` format and of Debian repositories.
//!
//! - [`control`]: deb822 paragraphs and relation syntax (`Depends: a (>= 1) | b`);
//! - [`resolve`]: which packages of an index a request needs, on the resolvo solver;
//! - [`release`]: a repository's signed Release file and its checked Packages indexes;
//! - [`deb`]: importing a `.deb` archive into a package tree;
//! - [`configure`]: configuring a root the way dpkg installs packages (with the
//!   database it needs and merged-/usr);
//! - [`Debian`]: all of it as a [`crate::format::Format`].

pub mod configure;
pub mod control;
mod database;
pub mod deb;
mod format;
mod order;
pub mod release;
pub mod resolve;
pub(crate) mod usrmerge;

pub use format::Debian;
