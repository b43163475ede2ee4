//! The packages of an index as the resolver sees them: a Packages paragraph's name,
//! version, architecture and relations, checked.

use crate::debian::control::{ControlError, Op, Paragraph, Relation, parse_relations};
use debversion::Version;

/// How a package may be used across architectures (its `Multi-Arch` field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MultiArch {
    /// No field, or `no`.
    #[default]
    No,
    /// `same`: co-installable with itself for other architectures.
    Same,
    /// `foreign`: satisfies dependencies of packages of any architecture.
    Foreign,
    /// `allowed`: dependants may ask for any architecture with `name:any`.
    Allowed,
}

/// How much a system needs a package (its `Priority` field); the order picks among
/// several packages providing one virtual name, as apt does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// `required`: the system breaks without it.
    Required,
    /// `important`: expected on any Unix-like system.
    Important,
    /// `standard`: a reasonable small system.
    Standard,
    /// `optional`, and a missing field.
    #[default]
    Optional,
    /// `extra` (obsolete) and anything unknown: informational only, so never an error.
    Extra,
}

/// One installable package from an index: what the resolver needs of a Packages paragraph.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: Version,
    /// Architecture, `all` included.
    pub arch: String,
    /// Its Multi-Arch field.
    pub multi_arch: MultiArch,
    /// `Essential: yes`.
    pub essential: bool,
    /// Its Priority.
    pub priority: Priority,
    /// Pre-Depends, as an AND of ORs.
    pub pre_depends: Vec<Vec<Relation>>,
    /// Depends, as an AND of ORs.
    pub depends: Vec<Vec<Relation>>,
    /// Recommends, as an AND of ORs.
    pub recommends: Vec<Vec<Relation>>,
    /// Provides: virtual names, unversioned or `(= VERSION)`.
    pub provides: Vec<Relation>,
    /// Conflicts.
    pub conflicts: Vec<Relation>,
    /// Breaks.
    pub breaks: Vec<Relation>,
}

impl Candidate {
    /// Reads a Packages paragraph (or a `.deb`'s control file). Errors name the package
    /// and the field.
    pub fn from_paragraph(p: &Paragraph) -> Result<Candidate, ControlError> {
        let package = p.get("Package").unwrap_or("?");
        let err = |field: &str, message: String| ControlError::Field {
            package: package.to_string(),
            field: field.to_string(),
            message,
        };
        let required = |field: &str| {
            p.get(field)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| err(field, "missing".into()))
        };
        let name = required("Package")?;
        if !crate::debian::control::valid_package_name(name) {
            return Err(err("Package", format!("{name:?} is not a package name")));
        }
        let version = required("Version")?;
        let version = version.parse().map_err(|e| {
            err(
                "Version",
                format!("{version:?} is not a Debian version: {e}"),
            )
        })?;
        let arch = required("Architecture")?;
        if arch.contains(char::is_whitespace) {
            return Err(err(
                "Architecture",
                format!("{arch:?} is not one architecture"),
            ));
        }
        let multi_arch = match p.get("Multi-Arch") {
            None | Some("no") => MultiArch::No,
            Some("same") => MultiArch::Same,
            Some("foreign") => MultiArch::Foreign,
            Some("allowed") => MultiArch::Allowed,
            Some(other) => {
                return Err(err(
                    "Multi-Arch",
                    format!("{other:?} is not no, same, foreign or allowed"),
                ));
            }
        };
        let essential = match p.get("Essential") {
            None | Some("no") => false,
            Some("yes") => true,
            Some(other) => return Err(err("Essential", format!("{other:?} is not yes or no"))),
        };
        let priority = match p.get("Priority") {
            Some("required") => Priority::Required,
            Some("important") => Priority::Important,
            Some("standard") => Priority::Standard,
            None | Some("optional") => Priority::Optional,
            Some(_) => Priority::Extra,
        };
        let relations = |field: &str| -> Result<Vec<Vec<Relation>>, ControlError> {
            p.get(field)
                .map(parse_relations)
                .transpose()
                .map_err(|e| err(field, e.to_string()))
                .map(Option::unwrap_or_default)
        };
        // Provides, Conflicts and Breaks name packages one by one: no alternatives.
        let single = |field: &str| -> Result<Vec<Relation>, ControlError> {
            relations(field)?
                .into_iter()
                .map(|mut group| match group.len() {
                    1 => Ok(group.remove(0)),
                    _ => Err(err(field, "alternatives (|) are not allowed here".into())),
                })
                .collect()
        };
        let provides = single("Provides")?;
        if let Some(bad) = provides.iter().find(|r| {
            r.constraint
                .as_ref()
                .is_some_and(|(op, _)| *op != Op::Equal)
        }) {
            return Err(err(
                "Provides",
                format!("{bad}: a provided version can only be (= VERSION)"),
            ));
        }
        Ok(Candidate {
            name: name.to_string(),
            version,
            arch: arch.to_string(),
            multi_arch,
            essential,
            priority,
            pre_depends: relations("Pre-Depends")?,
            depends: relations("Depends")?,
            recommends: relations("Recommends")?,
            provides,
            conflicts: single("Conflicts")?,
            breaks: single("Breaks")?,
        })
    }
}
