//! Debian: everything canopy knows of the `.deb` format and of Debian repositories.
//!
//! - [`control`]: deb822 paragraphs and relation syntax (`Depends: a (>= 1) | b`);
//! - [`resolve`]: which packages of an index a request needs, on the resolvo solver;
//! - [`release`]: a repository's signed Release file and its checked Packages indexes;
//! - [`deb`]: importing a `.deb` archive into a package tree.

pub mod control;
pub mod deb;
pub mod release;
pub mod resolve;
