//! What a package record keeps of an RPM beyond the common fields, under the extension
//! key `rpm` (JSON, fields in a fixed order, so the same package gives the same bytes).
//! The whole header is kept too, in the record's control tree (`header`): these facts
//! are what canopy itself reads without parsing it again.

use rpm::{Dependency, DependencyFlags};
use serde::{Deserialize, Serialize};

/// The package extension key.
pub const KEY: &str = "rpm";

/// An RPM's facts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The epoch, when the header has one (an absent epoch sorts as 0).
    pub epoch: Option<u32>,
    /// The version, without epoch and release.
    pub version: String,
    /// The release.
    pub release: String,
    /// Entries owned by someone other than root:root, by name: resolved when a root
    /// is assembled, from that root's own `/etc/passwd` and `/etc/group`.
    pub owners: Vec<Owner>,
    /// Paths marked `%config`.
    pub config: Vec<String>,
    /// Paths marked `%ghost`: owned by the package but not shipped, so not in its tree.
    pub ghosts: Vec<String>,
    /// Requires, as `NAME [OP EVR]` (rpmlib() and scriptlet-only requirements left out).
    pub requires: Vec<String>,
    /// Provides.
    pub provides: Vec<String>,
    /// Conflicts.
    pub conflicts: Vec<String>,
    /// Obsoletes.
    pub obsoletes: Vec<String>,
    /// Recommends.
    pub recommends: Vec<String>,
}

/// A path and its owner's names, as the header gives them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The path in the package, `/var/lib/app`.
    pub path: String,
    /// The owning user's name.
    pub user: String,
    /// The owning group's name.
    pub group: String,
}

impl Facts {
    /// The encoding kept in the package record.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("facts serialize")
    }

    /// The facts of a package record's extension value.
    pub fn decode(bytes: &[u8]) -> Result<Facts, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A dependency as rpm prints it: `name`, `name >= 1.2-3`.
pub(crate) fn relation(d: &Dependency) -> String {
    let f = d.flags;
    let op = match (
        f.contains(DependencyFlags::LESS),
        f.contains(DependencyFlags::GREATER),
        f.contains(DependencyFlags::EQUAL),
    ) {
        (true, false, false) => "<",
        (true, false, true) => "<=",
        (false, true, false) => ">",
        (false, true, true) => ">=",
        (false, false, true) => "=",
        _ => "",
    };
    if op.is_empty() || d.version.is_empty() {
        d.name.clone()
    } else {
        format!("{} {op} {}", d.name, d.version)
    }
}

/// Whether a requirement is on rpm itself (`rpmlib(…)`), which no package provides.
pub(crate) fn is_rpm_internal(d: &Dependency) -> bool {
    d.name.starts_with("rpmlib(") || d.flags.contains(DependencyFlags::RPMLIB)
}
