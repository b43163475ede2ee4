//! The usable part of an index (one architecture), looked up by name and by what
//! packages provide, and what a relation asks of a candidate.

use super::ResolveError;
use super::candidate::{Candidate, MultiArch};
use crate::debian::control::{Op, Relation};
use crate::packages::PackageSpec;
use debversion::Version;
use foldhash::{HashMap, HashMapExt};
use std::fmt;

/// What a relation asks of a candidate, once its architecture list has been applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Target {
    pub(super) name: String,
    pub(super) constraint: Option<(Op, Version)>,
    pub(super) qualifier: Qualifier,
}

/// The architecture part of a target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Qualifier {
    /// No qualifier: any candidate will do (all are native or `all`).
    Plain,
    /// `:any`: only a `Multi-Arch: allowed` package satisfies a dependency.
    Any,
    /// `:native` or `:ARCH`: satisfied only when that is the target architecture
    /// (`all` counts as native).
    Arch(String),
    /// A spec's `NAME:ARCH`: exactly that architecture, `all` included.
    Exact(String),
}

impl Target {
    pub(super) fn of(relation: &Relation, arch: &str) -> Target {
        let qualifier = match relation.arch_qualifier.as_deref() {
            None => Qualifier::Plain,
            Some("any") => Qualifier::Any,
            Some("native") => Qualifier::Arch(arch.to_string()),
            Some(other) => Qualifier::Arch(other.to_string()),
        };
        Target {
            name: relation.name.clone(),
            constraint: relation.constraint.clone(),
            qualifier,
        }
    }

    pub(super) fn of_spec(spec: &PackageSpec) -> Result<Target, ResolveError> {
        let constraint = match &spec.version {
            None => None,
            Some(v) => Some((
                Op::Equal,
                v.parse().map_err(|_| ResolveError::BadVersion {
                    spec: spec.to_string(),
                    version: v.clone(),
                })?,
            )),
        };
        Ok(Target {
            name: spec.name.clone(),
            constraint,
            qualifier: spec.arch.clone().map_or(Qualifier::Plain, Qualifier::Exact),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.qualifier {
            Qualifier::Plain => {}
            Qualifier::Any => f.write_str(":any")?,
            Qualifier::Arch(a) | Qualifier::Exact(a) => write!(f, ":{a}")?,
        }
        if let Some((op, version)) = &self.constraint {
            write!(f, " ({op} {version})")?;
        }
        Ok(())
    }
}

/// The usable part of an index, looked up by name.
pub(super) struct Index<'c> {
    pub(super) candidates: &'c [Candidate],
    pub(super) arch: &'c str,
    /// Candidates of the target architecture or `all`, by name, in index order.
    pub(super) by_name: HashMap<&'c str, Vec<usize>>,
    /// The names of packages providing a virtual name (for this architecture), each once,
    /// by priority, then in index order.
    providers: HashMap<&'c str, Vec<&'c str>>,
}

impl<'c> Index<'c> {
    pub(super) fn new(candidates: &'c [Candidate], arch: &'c str) -> Index<'c> {
        // foldhash: fast on the tens of thousands of names of an index, and seeded per
        // process, so that a hostile index cannot make the maps degenerate.
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::with_capacity(candidates.len());
        let mut providers: HashMap<&str, Vec<&str>> = HashMap::new();
        for (i, c) in candidates.iter().enumerate() {
            if c.arch != arch && c.arch != "all" {
                continue;
            }
            let same = by_name.entry(&c.name).or_default();
            let duplicate = same.iter().any(|&j| {
                let other = &candidates[j];
                other.arch == c.arch && other.version == c.version
            });
            if duplicate {
                continue;
            }
            same.push(i);
            for p in c.provides.iter().filter(|p| p.applies_to(arch)) {
                let names = providers.entry(&p.name).or_default();
                if !names.contains(&c.name.as_str()) {
                    names.push(&c.name);
                }
            }
        }
        // Providers are tried most needed first (mawk, required, before gawk, optional,
        // for `awk`), then in index order.
        let priority = |name: &str| {
            by_name[name]
                .iter()
                .map(|&i| candidates[i].priority)
                .min()
                .unwrap_or_default()
        };
        for names in providers.values_mut() {
            names.sort_by_key(|name| priority(name));
        }
        Index {
            candidates,
            arch,
            by_name,
            providers,
        }
    }

    /// The packages that may satisfy a name: the package of that name, then its
    /// providers.
    pub(super) fn owners(&self, name: &str) -> Vec<&'c str> {
        let real = self.by_name.get_key_value(name).map(|(k, _)| *k);
        let provided = self.providers.get(name).into_iter().flatten().copied();
        let mut owners: Vec<&str> = real.into_iter().collect();
        owners.extend(provided.filter(|p| Some(*p) != real));
        owners
    }

    /// The owners of a target's name with a candidate that satisfies it.
    pub(super) fn able(&self, target: &Target) -> Vec<&'c str> {
        let mut owners = self.owners(&target.name);
        owners.retain(|o| {
            self.by_name[o]
                .iter()
                .any(|&c| self.satisfies(c, target, false))
        });
        owners
    }

    /// Whether a candidate satisfies a target: by its own name and version, or by a
    /// Provides. A versioned target needs a versioned Provides; in a Conflicts or Breaks
    /// (`against`), `:any` matches every architecture.
    pub(super) fn satisfies(&self, candidate: usize, target: &Target, against: bool) -> bool {
        let c = &self.candidates[candidate];
        let arch_ok = match &target.qualifier {
            Qualifier::Plain => true,
            Qualifier::Any => against || c.multi_arch == MultiArch::Allowed,
            Qualifier::Arch(a) => a == self.arch,
            Qualifier::Exact(a) => *a == c.arch,
        };
        if !arch_ok {
            return false;
        }
        let version_ok = |v: &Version| {
            target
                .constraint
                .as_ref()
                .is_none_or(|(op, bound)| op.admits(v, bound))
        };
        if c.name == target.name && version_ok(&c.version) {
            return true;
        }
        c.provides.iter().any(|p| {
            p.name == target.name
                && p.applies_to(self.arch)
                && match (&target.constraint, &p.constraint) {
                    (None, _) => true,
                    (Some(_), Some((_, provided))) => version_ok(provided),
                    (Some(_), None) => false,
                }
        })
    }

    /// What the index has under a name, for an error message.
    pub(super) fn describe(&self, name: &str) -> String {
        let have: Vec<String> = self
            .candidates
            .iter()
            .filter(|c| c.name == name)
            .map(|c| format!("{}:{}={}", c.name, c.arch, c.version))
            .collect();
        match have.is_empty() {
            true => format!("only packages providing {name}"),
            false => have.join(", "),
        }
    }

    /// The Conflicts and Breaks among a chosen set, one line each. A package never
    /// conflicts with itself, nor with another version of its own name.
    pub(super) fn clashes(&self, chosen: &[usize]) -> Vec<String> {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for &i in chosen {
            let c = &self.candidates[i];
            by_name.entry(&c.name).or_default().push(i);
            for p in &c.provides {
                by_name.entry(&p.name).or_default().push(i);
            }
        }
        let mut lines = Vec::new();
        for &i in chosen {
            let c = &self.candidates[i];
            let relations = (c.conflicts.iter().map(|r| ("conflicts with", r)))
                .chain(c.breaks.iter().map(|r| ("breaks", r)));
            for (verb, relation) in relations.filter(|(_, r)| r.applies_to(self.arch)) {
                let target = Target::of(relation, self.arch);
                let mut hit: Vec<usize> = by_name
                    .get(relation.name.as_str())
                    .cloned()
                    .unwrap_or_default();
                hit.dedup();
                for j in hit {
                    let other = &self.candidates[j];
                    if other.name != c.name && self.satisfies(j, &target, true) {
                        lines.push(format!(
                            "{} {} {verb} {} {} ({verb} {relation})",
                            c.name, c.version, other.name, other.version
                        ));
                    }
                }
            }
        }
        lines
    }
}
