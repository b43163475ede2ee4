//! Dependency resolution: which packages of a Debian index to install so that a request
//! (`nginx-light bash`) and everything it needs hold together.
//!
//! The search is resolvo's (a CDCL SAT solver); this module says what Debian's relations
//! mean to it. Every package name is a resolvo name whose candidates are its versions, so
//! at most one version per name is chosen. A relation becomes a union of version sets:
//! one on the package of that name (`libc6 (>= 2.36)`) and one on each package that
//! provides it (`exim4-daemon-light providing mail-transport-agent`); `a | b` is the union
//! of both, tried in order, so the first alternative wins when it can. Conflicts and
//! Breaks become resolvo constraints ("if that package is chosen, it must not match"),
//! on the named package and on every other provider of the name.
//!
//! What resolvo cannot say directly is done around it. When Conflicts and Breaks make the
//! request impossible, it is solved again without them and the clashes are reported
//! ([`Resolution::problems`]). Recommends are wanted, not needed: each group is a
//! requirement conditional on a made-up "switch" package, and requiring switches turns
//! them on. All at once usually fits; when not, they are turned on in batches, halving
//! the batches that fail, and a group that fits nowhere is left out and reported.
//! (resolvo's own soft requirements were not used: a conflict met while adding one can
//! undo the ones added before it.)
//!
//! One architecture is resolved at a time: candidates of the target architecture and
//! `all`; the rest of the index is ignored.

use crate::debian::control::{ControlError, Op, Paragraph, Relation, parse_relations};
use crate::packages::PackageSpec;
use debversion::Version;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use resolvo::{
    Candidates, Condition, ConditionId, ConditionalRequirement, DenseIndex, Dependencies,
    DependencyProvider, Interner, KnownDependencies, NameId, Problem, Requirement, SolvableId,
    Solver, SolverCache, StringId, UnsolvableOrCancelled, VersionSetId, VersionSetUnionId,
    conflict::Conflict,
};
use std::cell::RefCell;
use std::fmt;

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

/// What to resolve.
#[derive(Clone, Debug)]
pub struct Request {
    /// The packages asked for: `NAME[:ARCH][=VERSION]`; a virtual name is satisfied by a
    /// package that provides it.
    pub packages: Vec<PackageSpec>,
    /// The target architecture (`amd64`); only it and `all` are installable.
    pub arch: String,
    /// Add every `Essential: yes` package, as a bootable root needs.
    pub essential: bool,
    /// Follow Recommends as well as Depends (where they fit).
    pub recommends: bool,
}

/// A resolved set of packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// Indexes into the candidates given to [`resolve`], one per package name, sorted by
    /// name.
    pub chosen: Vec<usize>,
    /// Conflicts and Breaks that no choice could avoid, and Recommends left out because
    /// they did not fit, one readable line each; empty when all is well.
    pub problems: Vec<String>,
}

/// Why a request cannot be resolved. The messages are written for a CLI user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No package has the name and none provides it.
    #[error("unknown package {spec}: the index has no package of that name and none provides it{}",
        near.as_ref().map(|n| format!("; did you mean {n}?")).unwrap_or_default())]
    UnknownPackage {
        /// The spec as given.
        spec: String,
        /// The closest name the index has, if one is close.
        near: Option<String>,
    },
    /// Packages of the name exist, but not of the version or architecture asked for.
    #[error("no package matches {spec}; the index has {available}")]
    NoMatch {
        /// The spec as given.
        spec: String,
        /// What the index has under that name.
        available: String,
    },
    /// A pinned version is not a Debian version.
    #[error("{spec}: {version:?} is not a Debian version")]
    BadVersion {
        /// The spec as given.
        spec: String,
        /// The version part.
        version: String,
    },
    /// The dependencies cannot all be met; the explanation follows the chain from the
    /// request down to what is missing.
    #[error("the request cannot be satisfied:\n{0}")]
    Unsatisfiable(String),
}

/// Resolves a request against an index: the request's packages, what they depend on
/// (Pre-Depends and Depends, with Recommends and Essential packages when asked), the
/// highest versions that work together, no two versions of one name. Duplicate entries
/// (name, version, arch) keep the first.
pub fn resolve(candidates: &[Candidate], request: &Request) -> Result<Resolution, ResolveError> {
    let index = Index::new(candidates, &request.arch);
    let roots = root_targets(&index, request)?;
    let (mut chosen, left_out) = match solve(&index, &roots, request.recommends) {
        Some(found) => found,
        None => {
            let chosen = solve_ignoring_conflicts(&index, &roots)?;
            let mut notes = Vec::new();
            if request.recommends {
                notes.push(
                    "Recommends were not followed: the set has conflicts to sort out first".into(),
                );
            }
            (chosen, notes)
        }
    };
    chosen.sort_by(|&a, &b| candidates[a].name.cmp(&candidates[b].name));
    let mut problems = index.clashes(&chosen);
    problems.extend(left_out);
    Ok(Resolution { chosen, problems })
}

/// What a relation asks of a candidate, once its architecture list has been applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Target {
    name: String,
    constraint: Option<(Op, Version)>,
    qualifier: Qualifier,
}

/// The architecture part of a target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Qualifier {
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
    fn of(relation: &Relation, arch: &str) -> Target {
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

    fn of_spec(spec: &PackageSpec) -> Result<Target, ResolveError> {
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
struct Index<'c> {
    candidates: &'c [Candidate],
    arch: &'c str,
    /// Candidates of the target architecture or `all`, by name, in index order.
    by_name: HashMap<&'c str, Vec<usize>>,
    /// The names of packages providing a virtual name (for this architecture), each once,
    /// by priority, then in index order.
    providers: HashMap<&'c str, Vec<&'c str>>,
}

impl<'c> Index<'c> {
    fn new(candidates: &'c [Candidate], arch: &'c str) -> Index<'c> {
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
    fn owners(&self, name: &str) -> Vec<&'c str> {
        let real = self.by_name.get_key_value(name).map(|(k, _)| *k);
        let provided = self.providers.get(name).into_iter().flatten().copied();
        let mut owners: Vec<&str> = real.into_iter().collect();
        owners.extend(provided.filter(|p| Some(*p) != real));
        owners
    }

    /// The owners of a target's name with a candidate that satisfies it.
    fn able(&self, target: &Target) -> Vec<&'c str> {
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
    fn satisfies(&self, candidate: usize, target: &Target, against: bool) -> bool {
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
    fn describe(&self, name: &str) -> String {
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
    fn clashes(&self, chosen: &[usize]) -> Vec<String> {
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

/// The root requirements: each spec (checked against the index first, for a clear error)
/// and, when asked, each Essential package.
fn root_targets(index: &Index, request: &Request) -> Result<Vec<Target>, ResolveError> {
    let mut roots = Vec::new();
    for spec in &request.packages {
        let target = Target::of_spec(spec)?;
        if index.owners(&spec.name).is_empty() {
            let names = index.by_name.keys().copied();
            return Err(ResolveError::UnknownPackage {
                spec: spec.to_string(),
                near: crate::suggest::closest(&spec.name, names).map(str::to_string),
            });
        }
        if index.able(&target).is_empty() {
            return Err(ResolveError::NoMatch {
                spec: spec.to_string(),
                available: index.describe(&spec.name),
            });
        }
        roots.push(target);
    }
    if request.essential {
        let mut essential: Vec<&str> = index
            .by_name
            .iter()
            .filter(|(_, list)| list.iter().any(|&c| index.candidates[c].essential))
            .map(|(name, _)| *name)
            .collect();
        essential.sort_unstable();
        roots.extend(essential.into_iter().map(|name| Target {
            name: name.to_string(),
            constraint: None,
            qualifier: Qualifier::Plain,
        }));
    }
    Ok(roots)
}

/// A solver for an index, and the requirements of the request.
fn start<'i, 'c>(
    index: &'i Index<'c>,
    roots: &[Target],
    conflicts: bool,
    recommends: bool,
) -> (Solver<Debian<'i, 'c>>, Vec<ConditionalRequirement>) {
    let provider = Debian::new(index, conflicts, recommends);
    let required = roots
        .iter()
        .filter_map(|t| provider.requirement([t.clone()]))
        .map(ConditionalRequirement::from)
        .collect();
    (Solver::new(provider), required)
}

/// The solve that explains a failure: Conflicts and Breaks left to be reported, no
/// Recommends, so that what remains is what the request needs and cannot have.
fn solve_ignoring_conflicts(index: &Index, roots: &[Target]) -> Result<Vec<usize>, ResolveError> {
    let (mut solver, required) = start(index, roots, false, false);
    run(&mut solver, required).map_err(|conflict| {
        let why = conflict.display_user_friendly(&solver).to_string();
        ResolveError::Unsatisfiable(why.trim_end().to_string())
    })
}

/// The solve that respects Conflicts and Breaks: the chosen candidates and the
/// Recommends left out, or `None`. With `recommends`, Recommends are followed as far as
/// they fit.
fn solve(index: &Index, roots: &[Target], recommends: bool) -> Option<(Vec<usize>, Vec<String>)> {
    let (mut solver, mut required) = start(index, roots, true, recommends);
    if !recommends {
        return Some((run(&mut solver, required).ok()?, Vec::new()));
    }
    // Usually every Recommends fits: one solve with all of them switched on.
    let mut all = required.clone();
    all.push(solver.provider().switch_requirement(None));
    if let Ok(chosen) = run(&mut solver, all) {
        return Some((chosen, Vec::new()));
    }
    // Otherwise switch them on in batches, round by round as packages join the set: a
    // batch that fits is kept whole, one that does not is halved until each group that
    // does not fit is found alone. That is a few solves per misfit, not one per group;
    // the solver keeps what it learnt of the index between runs.
    let mut chosen = run(&mut solver, required.clone()).ok()?;
    let mut offered = HashSet::new();
    let mut left_out = Vec::new();
    loop {
        let pending: Vec<(usize, usize)> = chosen
            .iter()
            .filter(|&&c| offered.insert(c))
            .flat_map(|&c| (0..index.candidates[c].recommends.len()).map(move |g| (c, g)))
            .filter(|&(c, g)| solver.provider().recommended(c, g).is_some())
            .collect();
        if pending.is_empty() {
            break;
        }
        let mut batches = vec![pending.as_slice()];
        while let Some(batch) = batches.pop() {
            let mut trial = required.clone();
            trial.extend(
                batch
                    .iter()
                    .map(|&key| solver.provider().switch_requirement(Some(key))),
            );
            match run(&mut solver, trial.clone()) {
                Ok(found) => {
                    required = trial;
                    chosen = found;
                }
                Err(_) if batch.len() == 1 => {
                    let (c, g) = batch[0];
                    let candidate = &index.candidates[c];
                    let relations: Vec<String> = candidate.recommends[g]
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    left_out.push(format!(
                        "{} {} recommends {}: left out, it cannot be installed with the rest",
                        candidate.name,
                        candidate.version,
                        relations.join(" | ")
                    ));
                }
                Err(_) => {
                    let (first, second) = batch.split_at(batch.len() / 2);
                    batches.extend([second, first]);
                }
            }
        }
    }
    Some((chosen, left_out))
}

/// Runs resolvo once and keeps the real candidates of the answer. The conflict is only
/// turned into words where it is shown: building the explanation costs more than the
/// solve.
fn run(
    solver: &mut Solver<Debian>,
    requirements: Vec<ConditionalRequirement>,
) -> Result<Vec<usize>, Conflict> {
    match solver.solve(Problem::new().requirements(requirements)) {
        Ok(solvables) => {
            let real = solver.provider().index.candidates.len();
            Ok(solvables
                .into_iter()
                .map(DenseIndex::to_index)
                .filter(|&i| i < real)
                .collect())
        }
        Err(UnsolvableOrCancelled::Unsolvable(conflict)) => Err(conflict),
        Err(UnsolvableOrCancelled::Cancelled(_)) => {
            unreachable!("the Debian provider never cancels a solve")
        }
    }
}

/// A resolvo version set: the candidates of one package name that satisfy a target
/// (or, `negated`, that do not: the allowed side of a Conflicts).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Set {
    name: NameId,
    target: Target,
    negated: bool,
}

/// A switch's key: one Recommends group (candidate, group index), or `None` for the
/// switch that turns on every Recommends.
type SwitchKey = Option<(usize, usize)>;

/// What resolvo is told about an index. Solvable ids below the number of candidates are
/// candidates; above are switches: made-up packages that nothing depends on, each the
/// condition of Recommends groups (`group if its switch or the all-switch is chosen`),
/// turned on by requiring them. Names, sets and switches are interned as the solver
/// asks for them, so a solve costs in proportion to the part of the index it reaches.
struct Debian<'i, 'c> {
    index: &'i Index<'c>,
    conflicts: bool,
    recommends: bool,
    names: RefCell<Names>,
    sets: RefCell<Interned<Set>>,
    unions: RefCell<Vec<Vec<VersionSetId>>>,
    conditions: RefCell<Vec<Condition>>,
    switches: RefCell<Interned<SwitchKey>>,
    /// Each switch's name, by switch, and back.
    switch_names: RefCell<Vec<NameId>>,
    switch_of_name: RefCell<HashMap<NameId, usize>>,
}

/// Package names by id and by text.
#[derive(Default)]
struct Names {
    list: Vec<String>,
    ids: HashMap<String, NameId>,
}

/// Values by id and ids by value.
struct Interned<T> {
    list: Vec<T>,
    ids: HashMap<T, u32>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            list: Vec::new(),
            ids: HashMap::new(),
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Interned<T> {
    /// The value's id, and whether it is new.
    fn intern(&mut self, value: T) -> (u32, bool) {
        if let Some(&id) = self.ids.get(&value) {
            return (id, false);
        }
        let id = u32::try_from(self.list.len()).expect("fewer than 2^32 interned values");
        self.list.push(value.clone());
        self.ids.insert(value, id);
        (id, true)
    }
}

impl<'i, 'c> Debian<'i, 'c> {
    fn new(index: &'i Index<'c>, conflicts: bool, recommends: bool) -> Self {
        Debian {
            index,
            conflicts,
            recommends,
            names: RefCell::default(),
            sets: RefCell::default(),
            unions: RefCell::default(),
            conditions: RefCell::default(),
            switches: RefCell::default(),
            switch_names: RefCell::default(),
            switch_of_name: RefCell::default(),
        }
    }

    fn name_id(&self, name: &str) -> NameId {
        let mut names = self.names.borrow_mut();
        if let Some(&id) = names.ids.get(name) {
            return id;
        }
        let id = NameId::from_index(names.list.len());
        names.list.push(name.to_string());
        names.ids.insert(name.to_string(), id);
        id
    }

    fn set(&self, name: &str, target: Target, negated: bool) -> VersionSetId {
        let name = self.name_id(name);
        let (id, _) = self.sets.borrow_mut().intern(Set {
            name,
            target,
            negated,
        });
        VersionSetId(id)
    }

    /// The requirement for a group of alternatives: any package able to satisfy any of
    /// them, in order. `None` when no alternative applies on this architecture.
    fn requirement(&self, alternatives: impl IntoIterator<Item = Target>) -> Option<Requirement> {
        let mut sets: Vec<VersionSetId> = Vec::new();
        let mut unknown = None;
        for target in alternatives {
            let owners = self.index.able(&target);
            if owners.is_empty() {
                unknown.get_or_insert(target);
                continue;
            }
            for owner in owners {
                let set = self.set(owner, target.clone(), false);
                if !sets.contains(&set) {
                    sets.push(set);
                }
            }
        }
        // Nothing can satisfy any of them: a set on the first name, with no candidates
        // that match, makes resolvo report it as missing.
        if sets.is_empty() {
            let target = unknown?;
            let name = target.name.clone();
            sets.push(self.set(&name, target, false));
        }
        Some(match sets.len() {
            1 => Requirement::Single(sets[0]),
            _ => {
                let mut unions = self.unions.borrow_mut();
                unions.push(sets);
                Requirement::Union(VersionSetUnionId(
                    u32::try_from(unions.len() - 1).expect("fewer than 2^32 unions"),
                ))
            }
        })
    }

    fn group(&self, group: &[Relation]) -> Option<Requirement> {
        let arch = self.index.arch;
        self.requirement(
            group
                .iter()
                .filter(|r| r.applies_to(arch))
                .map(|r| Target::of(r, arch)),
        )
    }

    /// The requirement for a Recommends group, when some package could satisfy it:
    /// Recommends of packages the index lacks (another archive area, another
    /// architecture) are common and simply not followed.
    fn recommended(&self, candidate: usize, group: usize) -> Option<Requirement> {
        let arch = self.index.arch;
        let relations = &self.index.candidates[candidate].recommends[group];
        let available = relations
            .iter()
            .filter(|r| r.applies_to(arch))
            .any(|r| !self.index.able(&Target::of(r, arch)).is_empty());
        available.then(|| self.group(relations)).flatten()
    }

    /// The version set holding a switch (its one made-up candidate).
    fn switch_set(&self, key: SwitchKey) -> VersionSetId {
        let (k, new) = self.switches.borrow_mut().intern(key);
        let name = match key {
            None => "(every Recommends)".to_string(),
            Some((c, group)) => {
                let c = &self.index.candidates[c];
                format!("({} {} Recommends #{})", c.name, c.version, group + 1)
            }
        };
        if new {
            let id = self.name_id(&name);
            self.switch_names.borrow_mut().push(id);
            self.switch_of_name.borrow_mut().insert(id, k as usize);
        }
        let target = Target {
            name: name.clone(),
            constraint: None,
            qualifier: Qualifier::Plain,
        };
        self.set(&name, target, false)
    }

    /// A root requirement that turns a switch on.
    fn switch_requirement(&self, key: SwitchKey) -> ConditionalRequirement {
        Requirement::Single(self.switch_set(key)).into()
    }

    /// The condition of a Recommends group: its own switch or the all-switch is on.
    fn switch_condition(&self, candidate: usize, group: usize) -> ConditionId {
        let own = Condition::Requirement(self.switch_set(Some((candidate, group))));
        let all = Condition::Requirement(self.switch_set(None));
        let mut conditions = self.conditions.borrow_mut();
        conditions.extend([own, all]);
        let n = conditions.len();
        conditions.push(Condition::Binary(
            resolvo::LogicalOperator::Or,
            ConditionId::from_index(n - 2),
            ConditionId::from_index(n - 1),
        ));
        ConditionId::from_index(n)
    }

    /// The switch a solvable id is, if it is one.
    fn switch(&self, solvable: SolvableId) -> Option<usize> {
        let k = solvable
            .to_index()
            .checked_sub(self.index.candidates.len())?;
        (k < self.switch_names.borrow().len()).then_some(k)
    }

    fn version(&self, solvable: SolvableId) -> Option<&'c Version> {
        let candidates: &'c [Candidate] = self.index.candidates;
        candidates.get(solvable.to_index()).map(|c| &c.version)
    }
}

impl Interner for Debian<'_, '_> {
    type NameId = NameId;
    type SolvableId = SolvableId;

    fn display_solvable(&self, solvable: SolvableId) -> impl fmt::Display + '_ {
        match self.version(solvable) {
            Some(version) => format!(
                "{} {version}",
                self.index.candidates[solvable.to_index()].name
            ),
            None => self.display_solvable_name(solvable).to_string(),
        }
    }

    fn display_merged_solvables(&self, solvables: &[SolvableId]) -> impl fmt::Display + '_ {
        let Some(&first) = solvables.first() else {
            return String::new();
        };
        let mut versions: Vec<&Version> =
            solvables.iter().filter_map(|s| self.version(*s)).collect();
        versions.sort();
        versions.dedup();
        let versions: Vec<String> = versions.iter().map(ToString::to_string).collect();
        format!(
            "{} {}",
            self.display_solvable_name(first),
            versions.join(" | ")
        )
    }

    fn display_name(&self, name: NameId) -> impl fmt::Display + '_ {
        self.names.borrow().list[name.to_index()].clone()
    }

    fn display_version_set(&self, version_set: VersionSetId) -> impl fmt::Display + '_ {
        let sets = self.sets.borrow();
        let set = &sets.list[version_set.0 as usize];
        let owner = &self.names.borrow().list[set.name.to_index()];
        let what = if *owner == set.target.name {
            let mut plain = set.target.clone();
            plain.name.clear();
            plain.to_string().trim_start().to_string()
        } else {
            format!("providing {}", set.target)
        };
        match set.negated {
            true => format!("not matching {what}"),
            false => what,
        }
    }

    fn display_string(&self, _string: StringId) -> impl fmt::Display + '_ {
        // No strings are interned: candidates are never excluded with a reason.
        ""
    }

    fn version_set_name(&self, version_set: VersionSetId) -> NameId {
        self.sets.borrow().list[version_set.0 as usize].name
    }

    fn solvable_name(&self, solvable: SolvableId) -> NameId {
        match self.switch(solvable) {
            Some(k) => self.switch_names.borrow()[k],
            None => self.name_id(&self.index.candidates[solvable.to_index()].name),
        }
    }

    fn version_sets_in_union(
        &self,
        version_set_union: VersionSetUnionId,
    ) -> impl Iterator<Item = VersionSetId> {
        self.unions.borrow()[version_set_union.0 as usize]
            .clone()
            .into_iter()
    }

    fn resolve_condition(&self, condition: ConditionId) -> Condition {
        self.conditions.borrow()[condition.to_index()].clone()
    }
}

impl DependencyProvider for Debian<'_, '_> {
    async fn filter_candidates(
        &self,
        candidates: &[SolvableId],
        version_set: VersionSetId,
        inverse: bool,
    ) -> Vec<SolvableId> {
        let set = self.sets.borrow().list[version_set.0 as usize].clone();
        candidates
            .iter()
            .copied()
            .filter(|s| {
                // A switch is the one candidate of its name, and matches its set.
                let hit = self.switch(*s).is_some()
                    || self.index.satisfies(s.to_index(), &set.target, set.negated);
                (hit != set.negated) != inverse
            })
            .collect()
    }

    async fn get_candidates(&self, name: NameId) -> Option<Candidates<SolvableId>> {
        let switch = self.switch_of_name.borrow().get(&name).copied();
        let candidates = match switch {
            Some(k) => vec![SolvableId::from_index(self.index.candidates.len() + k)],
            None => {
                let names = self.names.borrow();
                let list = self
                    .index
                    .by_name
                    .get(names.list[name.to_index()].as_str())?;
                list.iter().map(|&i| SolvableId::from_index(i)).collect()
            }
        };
        Some(Candidates {
            candidates,
            ..Candidates::default()
        })
    }

    async fn sort_candidates(&self, _: &SolverCache<Self>, solvables: &mut [SolvableId]) {
        // Highest version first; the sort is stable, so index order breaks ties.
        solvables.sort_by(|a, b| self.version(*b).cmp(&self.version(*a)));
    }

    async fn get_dependencies(&self, solvable: SolvableId) -> Dependencies {
        if self.switch(solvable).is_some() {
            return Dependencies::Known(KnownDependencies::default());
        }
        let i = solvable.to_index();
        let c = &self.index.candidates[i];
        let mut requirements: Vec<ConditionalRequirement> = c
            .pre_depends
            .iter()
            .chain(&c.depends)
            .filter_map(|group| self.group(group))
            .map(ConditionalRequirement::from)
            .collect();
        if self.recommends {
            for group in 0..c.recommends.len() {
                if let Some(requirement) = self.recommended(i, group) {
                    let condition = self.switch_condition(i, group);
                    requirements.push(requirement.with_condition(condition));
                }
            }
        }
        let mut constrains = Vec::new();
        if self.conflicts {
            let arch = self.index.arch;
            for relation in c.conflicts.iter().chain(&c.breaks) {
                if !relation.applies_to(arch) {
                    continue;
                }
                let target = Target::of(relation, arch);
                for owner in self.index.owners(&relation.name) {
                    // A package never conflicts with itself (Conflicts + Provides +
                    // Replaces on one virtual name is how Debian says "only one of us").
                    if owner != c.name {
                        constrains.push(self.set(owner, target.clone(), true));
                    }
                }
            }
        }
        Dependencies::Known(KnownDependencies {
            requirements,
            constrains,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::control::parse_paragraphs;
    use proptest::prelude::*;

    /// Candidates from a Packages snippet.
    fn index(text: &str) -> Vec<Candidate> {
        parse_paragraphs(text)
            .unwrap()
            .iter()
            .map(|p| Candidate::from_paragraph(p).unwrap())
            .collect()
    }

    /// An amd64 stanza: `pkg("app", "1", "Depends: lib; Recommends: doc")`.
    fn pkg(name: &str, version: &str, fields: &str) -> String {
        let fields = fields.replace("; ", "\n");
        format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\n{fields}\n\n")
    }

    fn request(specs: &str) -> Request {
        Request {
            packages: specs
                .split_whitespace()
                .map(|s| s.parse().unwrap())
                .collect(),
            arch: "amd64".into(),
            essential: false,
            recommends: false,
        }
    }

    /// The chosen set as `name=version`, sorted by name.
    fn names(candidates: &[Candidate], r: &Resolution) -> Vec<String> {
        r.chosen
            .iter()
            .map(|&i| format!("{}={}", candidates[i].name, candidates[i].version))
            .collect()
    }

    fn resolved(text: &str, req: &Request) -> Vec<String> {
        let candidates = index(text);
        let r = resolve(&candidates, req).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.problems, Vec::<String>::new());
        names(&candidates, &r)
    }

    fn unsatisfiable(text: &str, req: &Request) -> String {
        match resolve(&index(text), req) {
            Err(ResolveError::Unsatisfiable(why)) => why,
            other => panic!("expected unsatisfiable, got {other:?}"),
        }
    }

    #[test]
    fn follows_depends_and_pre_depends() {
        let text = pkg("app", "1", "Depends: liba, libb (>= 2)")
            + &pkg("liba", "1", "Pre-Depends: libc")
            + &pkg("libb", "2", "")
            + &pkg("libc", "1", "")
            + &pkg("unrelated", "1", "");
        assert_eq!(
            resolved(&text, &request("app")),
            ["app=1", "liba=1", "libb=2", "libc=1"]
        );
        assert_eq!(resolved(&text, &request("")), Vec::<String>::new());
    }

    #[test]
    fn alternatives_prefer_the_first_that_works() {
        let text = pkg("app", "1", "Depends: first | second")
            + &pkg("first", "1", "")
            + &pkg("second", "1", "");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "first=1"]);
        // A later alternative when the first has no candidate or none that fits.
        let text = pkg("app", "1", "Depends: missing | old (>= 2) | second")
            + &pkg("old", "1", "")
            + &pkg("second", "1", "");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "second=1"]);
        // ...or when the first one's own dependencies cannot be met.
        let text = pkg("app", "1", "Depends: first | second")
            + &pkg("first", "1", "Depends: nowhere")
            + &pkg("second", "1", "");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "second=1"]);
    }

    #[test]
    fn virtual_packages_resolve_through_provides() {
        let text = pkg("app", "1", "Depends: mta")
            + &pkg("postfix", "3", "Provides: mta")
            + &pkg("exim", "4", "Provides: mta");
        // One provider, the first in the index when none has a higher priority.
        assert_eq!(resolved(&text, &request("app")), ["app=1", "postfix=3"]);
        let text = pkg("app", "1", "Depends: mta")
            + &pkg("postfix", "3", "Provides: mta")
            + &pkg("exim", "4", "Provides: mta; Priority: standard");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "exim=4"]);
        // A provider already in the set serves.
        assert_eq!(
            resolved(&text, &request("app postfix")),
            ["app=1", "postfix=3"]
        );
        // The request may name a virtual package too.
        assert_eq!(resolved(&text, &request("mta")).len(), 1);
        // A real package of the name comes before providers.
        let text = text + &pkg("mta", "1", "");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "mta=1"]);
    }

    #[test]
    fn versioned_provides_satisfy_versioned_dependencies() {
        let text = pkg("app", "1", "Depends: foo (>= 1)")
            + &pkg("plain", "1", "Provides: foo")
            + &pkg("versioned", "1", "Provides: foo (= 1.2)");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "versioned=1"]);
        // An unversioned Provides satisfies only an unversioned dependency.
        let text = pkg("app", "1", "Depends: foo (>= 1)") + &pkg("plain", "1", "Provides: foo");
        let why = unsatisfiable(&text, &request("app"));
        assert!(why.contains("foo"), "{why}");
        let text = pkg("app", "1", "Depends: foo (>= 2)")
            + &pkg("versioned", "1", "Provides: foo (= 1.2)");
        unsatisfiable(&text, &request("app"));
    }

    #[test]
    fn version_constraints_pick_matching_versions() {
        let lib = pkg("lib", "1.0~rc1", "") + &pkg("lib", "1.0", "") + &pkg("lib", "1.1", "");
        let cases = [
            ("<< 1.0", "lib=1.0~rc1"),
            ("<= 1.0", "lib=1.0"),
            ("= 1.0", "lib=1.0"),
            (">= 1.0", "lib=1.1"),
            (">> 1.0", "lib=1.1"),
            ("< 1.0", "lib=1.0"),
            ("> 1.0~rc1", "lib=1.1"),
            ("= 1.0~rc1", "lib=1.0~rc1"),
        ];
        for (constraint, want) in cases {
            let text = pkg("app", "1", &format!("Depends: lib ({constraint})")) + &lib;
            assert_eq!(
                resolved(&text, &request("app")),
                ["app=1", want],
                "{constraint}"
            );
        }
        let text = pkg("app", "1", "Depends: lib (>> 1.1)") + &lib;
        let why = unsatisfiable(&text, &request("app"));
        assert!(why.contains("lib (>> 1.1)"), "{why}");
    }

    #[test]
    fn epochs_and_tildes_order_versions() {
        let text = pkg("app", "1", "Depends: lib (>> 2.0)")
            + &pkg("lib", "1:0.9", "")
            + &pkg("lib", "3.0", "");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "lib=1:0.9"]);
        let text = pkg("lib", "1.0~rc1", "") + &pkg("lib", "1.0", "") + &pkg("lib", "1.0~rc2", "");
        assert_eq!(resolved(&text, &request("lib")), ["lib=1.0"]);
    }

    #[test]
    fn picks_the_highest_version_unless_pinned() {
        let text = pkg("lib", "1.2", "") + &pkg("lib", "1.10", "") + &pkg("lib", "1.9", "");
        assert_eq!(resolved(&text, &request("lib")), ["lib=1.10"]);
        assert_eq!(resolved(&text, &request("lib=1.9")), ["lib=1.9"]);
        assert_eq!(resolved(&text, &request("lib:amd64=1.2")), ["lib=1.2"]);
        // A pin holds against a dependant that would like a newer one.
        let text = text + &pkg("app", "1", "Depends: lib (>= 1.2)");
        assert_eq!(
            resolved(&text, &request("app lib=1.2")),
            ["app=1", "lib=1.2"]
        );
    }

    #[test]
    fn pins_name_architectures() {
        let text =
            "Package: tool\nVersion: 1\nArchitecture: all\n\n".to_string() + &pkg("tool", "2", "");
        assert_eq!(resolved(&text, &request("tool")), ["tool=2"]);
        assert_eq!(resolved(&text, &request("tool:all")), ["tool=1"]);
        assert_eq!(resolved(&text, &request("tool:amd64")), ["tool=2"]);
        let err = resolve(&index(&text), &request("tool:i386")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no package matches tool:i386; the index has tool:all=1, tool:amd64=2"
        );
    }

    #[test]
    fn unknown_and_unmatched_requests_are_clear_errors() {
        let text = pkg("bash", "5.2", "");
        let candidates = index(&text);
        assert_eq!(
            resolve(&candidates, &request("nosuch")),
            Err(ResolveError::UnknownPackage {
                spec: "nosuch".into(),
                near: None
            })
        );
        assert_eq!(
            resolve(&candidates, &request("bash=9"))
                .unwrap_err()
                .to_string(),
            "no package matches bash=9; the index has bash:amd64=5.2"
        );
        assert!(matches!(
            resolve(&candidates, &request("bash=!")),
            Err(ResolveError::BadVersion { .. })
        ));
    }

    #[test]
    fn unsatisfiable_requests_explain_the_chain() {
        let text = pkg("app", "1", "Depends: middle | other-mid")
            + &pkg("middle", "1", "Depends: libgone (>= 2), libc")
            + &pkg("other-mid", "1", "Depends: mta (>= 2)")
            + &pkg("libgone", "1", "")
            + &pkg("libc", "1", "")
            + &pkg("exim", "1", "Provides: mta (= 1)")
            + &pkg("fine", "1", "");
        let err = resolve(&index(&text), &request("fine app")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the request cannot be satisfied:\n\
             app cannot be installed because there are no viable options:\n\
             └─ app 1 would require\n   \
                └─ middle | other-mid, which cannot be installed because there are no viable options:\n      \
                   ├─ middle 1 would require\n      \
                   │  └─ libgone (>= 2), for which no candidates were found.\n      \
                   └─ other-mid 1 would require\n         \
                      └─ mta (>= 2), for which no candidates were found."
        );
    }

    #[test]
    fn pre_depends_cycles_resolve() {
        let text = pkg("aa", "1", "Pre-Depends: bb")
            + &pkg("bb", "1", "Pre-Depends: cc")
            + &pkg("cc", "1", "Depends: aa (>= 1)");
        assert_eq!(resolved(&text, &request("aa")), ["aa=1", "bb=1", "cc=1"]);
    }

    #[test]
    fn conflicts_are_avoided_by_choosing_an_alternative() {
        let text = pkg("app", "1", "Depends: awk-a | awk-b; Conflicts: awk-a")
            + &pkg("awk-a", "1", "")
            + &pkg("awk-b", "1", "");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "awk-b=1"]);
        // A versioned conflict only rules out the versions it names.
        let text = pkg("app", "1", "Depends: lib; Breaks: lib (>= 2)")
            + &pkg("lib", "1", "")
            + &pkg("lib", "2", "");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "lib=1"]);
    }

    #[test]
    fn conflicts_on_a_virtual_name_spare_the_package_itself() {
        // Debian's "only one of us": each provides and conflicts with the virtual name.
        let text = pkg("mta-a", "1", "Provides: mta; Conflicts: mta")
            + &pkg("mta-b", "1", "Provides: mta; Conflicts: mta")
            + &pkg("app", "1", "Depends: mta")
            + &pkg("tool", "1", "Depends: mta-b");
        assert_eq!(resolved(&text, &request("mta-a")), ["mta-a=1"]);
        assert_eq!(
            resolved(&text, &request("app tool")),
            ["app=1", "mta-b=1", "tool=1"]
        );
        let candidates = index(&text);
        let r = resolve(&candidates, &request("mta-a mta-b")).unwrap();
        assert_eq!(names(&candidates, &r), ["mta-a=1", "mta-b=1"]);
        assert_eq!(
            r.problems,
            [
                "mta-a 1 conflicts with mta-b 1 (conflicts with mta)",
                "mta-b 1 conflicts with mta-a 1 (conflicts with mta)"
            ]
        );
    }

    #[test]
    fn unavoidable_breaks_are_reported() {
        let text = pkg("new", "2", "Breaks: old (<< 2)")
            + &pkg("old", "1", "")
            + &pkg("app", "1", "Depends: new, old");
        let candidates = index(&text);
        let r = resolve(&candidates, &request("app")).unwrap();
        assert_eq!(names(&candidates, &r), ["app=1", "new=2", "old=1"]);
        assert_eq!(r.problems, ["new 2 breaks old 1 (breaks old (<< 2))"]);
    }

    #[test]
    fn essential_packages_only_when_asked() {
        let text = pkg("base", "1", "Essential: yes; Depends: libbase")
            + &pkg("libbase", "1", "")
            + &pkg("app", "1", "");
        assert_eq!(resolved(&text, &request("app")), ["app=1"]);
        let mut req = request("app");
        req.essential = true;
        assert_eq!(resolved(&text, &req), ["app=1", "base=1", "libbase=1"]);
    }

    #[test]
    fn recommends_only_when_asked_and_where_they_fit() {
        let text = pkg("app", "1", "Recommends: extra, missing, clash | extra2")
            + &pkg("extra", "1", "Recommends: extra-more")
            + &pkg("extra-more", "1", "")
            + &pkg("extra2", "1", "")
            + &pkg("clash", "1", "Conflicts: app");
        assert_eq!(resolved(&text, &request("app")), ["app=1"]);
        let mut req = request("app");
        req.recommends = true;
        assert_eq!(
            resolved(&text, &req),
            ["app=1", "extra=1", "extra-more=1", "extra2=1"]
        );
        // One that cannot fit is left out, and said so; the others still come.
        let text = pkg("app", "1", "Recommends: clash, extra")
            + &pkg("extra", "1", "Recommends: extra-more")
            + &pkg("extra-more", "1", "")
            + &pkg("clash", "1", "Conflicts: app");
        let candidates = index(&text);
        let r = resolve(&candidates, &req).unwrap();
        assert_eq!(names(&candidates, &r), ["app=1", "extra=1", "extra-more=1"]);
        assert_eq!(
            r.problems,
            ["app 1 recommends clash: left out, it cannot be installed with the rest"]
        );
    }

    #[test]
    fn any_qualifier_needs_multi_arch_allowed() {
        let text = pkg("app", "1", "Depends: perl:any") + &pkg("perl", "5", "Multi-Arch: allowed");
        assert_eq!(resolved(&text, &request("app")), ["app=1", "perl=5"]);
        // As in dpkg, `:any` is not satisfied by a package that is not Multi-Arch: allowed.
        for multi_arch in ["Multi-Arch: foreign", "Multi-Arch: same", ""] {
            let text = pkg("app", "1", "Depends: perl:any") + &pkg("perl", "5", multi_arch);
            unsatisfiable(&text, &request("app"));
        }
        // Foreign packages satisfy plain dependencies; :native and the target arch too.
        let text = pkg("app", "1", "Depends: make, perl:native, tar:amd64")
            + &pkg("make", "4", "Multi-Arch: foreign")
            + &pkg("perl", "5", "Multi-Arch: allowed")
            + "Package: tar\nVersion: 1\nArchitecture: all\n\n";
        assert_eq!(
            resolved(&text, &request("app")),
            ["app=1", "make=4", "perl=5", "tar=1"]
        );
        let text = pkg("app", "1", "Depends: tar:i386") + &pkg("tar", "1", "");
        unsatisfiable(&text, &request("app"));
    }

    #[test]
    fn architecture_lists_are_evaluated_for_the_target() {
        let text = pkg(
            "app",
            "1",
            "Depends: only-amd64 [amd64], only-arm [arm64], not-i386 [!i386], not-amd64 [!amd64] | fallback",
        ) + &pkg("only-amd64", "1", "")
            + &pkg("not-i386", "1", "")
            + &pkg("fallback", "1", "");
        assert_eq!(
            resolved(&text, &request("app")),
            ["app=1", "fallback=1", "not-i386=1", "only-amd64=1"]
        );
    }

    #[test]
    fn other_architectures_are_ignored_and_duplicates_keep_the_first() {
        let text = "Package: lib\nVersion: 9\nArchitecture: i386\n\n".to_string()
            + &pkg("lib", "1", "Depends: first")
            + &pkg("lib", "1", "Depends: second")
            + &pkg("first", "1", "")
            + &pkg("second", "1", "");
        assert_eq!(resolved(&text, &request("lib")), ["first=1", "lib=1"]);
        let text = "Package: i386only\nVersion: 1\nArchitecture: i386\n\n";
        assert_eq!(
            resolve(&index(text), &request("i386only")),
            Err(ResolveError::UnknownPackage {
                spec: "i386only".into(),
                near: None
            })
        );
    }

    #[test]
    fn bad_paragraphs_name_package_and_field() {
        let cases = [
            (
                "Version: 1\nArchitecture: all",
                "package ?: field Package: missing",
            ),
            (
                "Package: a0\nArchitecture: all",
                "package a0: field Version: missing",
            ),
            (
                "Package: a0\nVersion: 1",
                "package a0: field Architecture: missing",
            ),
            (
                "Package: A\nVersion: 1\nArchitecture: all",
                "field Package: \"A\" is not",
            ),
            (
                "Package: a0\nVersion: x y\nArchitecture: all",
                "field Version",
            ),
            (
                "Package: a0\nVersion: 1\nArchitecture: all\nDepends: b0 (>",
                "field Depends: relation",
            ),
            (
                "Package: a0\nVersion: 1\nArchitecture: all\nProvides: b0 (>= 1)",
                "(= VERSION)",
            ),
            (
                "Package: a0\nVersion: 1\nArchitecture: all\nConflicts: b0 | c0",
                "alternatives",
            ),
            (
                "Package: a0\nVersion: 1\nArchitecture: all\nMulti-Arch: maybe",
                "field Multi-Arch",
            ),
            (
                "Package: a0\nVersion: 1\nArchitecture: all\nEssential: sure",
                "field Essential",
            ),
        ];
        for (text, words) in cases {
            let p = &parse_paragraphs(text).unwrap()[0];
            let err = Candidate::from_paragraph(p).unwrap_err().to_string();
            assert!(err.contains(words), "{text:?} gave {err}");
        }
    }

    /// A small random index: a few names, versions and relations among them.
    fn random_index() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["aa", "bb", "cc", "dd", "vv"]);
        let version = prop::sample::select(vec!["1", "2", "1:0", "2~rc1"]);
        let op = prop::sample::select(vec!["", " (>= 2)", " (<< 2)", " (= 1)", " (>> 1:0)"]);
        let relation = (name.clone(), op).prop_map(|(n, o)| format!("{n}{o}"));
        let group = prop::collection::vec(relation, 1..3).prop_map(|g| g.join(" | "));
        let field = |label: &'static str, of: BoxedStrategy<String>| {
            prop::collection::vec(of, 0..3).prop_map(move |list| match list.is_empty() {
                true => String::new(),
                false => format!("{label}: {}\n", list.join(", ")),
            })
        };
        let stanza = (
            name.clone(),
            version,
            field("Depends", group.clone().boxed()),
            field("Recommends", group.boxed()),
            field(
                "Provides",
                name.clone().prop_map(|n| format!("{n} (= 1)")).boxed(),
            ),
            field("Conflicts", name.prop_map(String::from).boxed()),
        )
            .prop_map(|(n, v, d, r, p, c)| {
                format!("Package: {n}\nVersion: {v}\nArchitecture: amd64\n{d}{r}{p}{c}\n")
            });
        prop::collection::vec(stanza, 1..8).prop_map(|s| s.concat())
    }

    proptest! {
        /// Whatever the index, resolving never panics, and an answer keeps its promises:
        /// one version per name, every dependency of every chosen package met inside the
        /// set, and every Conflicts or Breaks left in it reported.
        #[test]
        fn answers_are_consistent(text in random_index(), asked in prop::sample::subsequence(vec!["aa", "bb", "cc", "vv"], 0..3), recommends: bool) {
            let candidates = index(&text);
            let mut req = request(&asked.join(" "));
            req.recommends = recommends;
            let Ok(r) = resolve(&candidates, &req) else { return Ok(()) };
            let set = Index::new(&candidates, "amd64");
            let names: HashSet<&str> = r.chosen.iter().map(|&i| candidates[i].name.as_str()).collect();
            prop_assert_eq!(names.len(), r.chosen.len());
            for &i in &r.chosen {
                for group in candidates[i].pre_depends.iter().chain(&candidates[i].depends) {
                    let met = group.iter().any(|rel| {
                        let target = Target::of(rel, "amd64");
                        r.chosen.iter().any(|&j| set.satisfies(j, &target, false))
                    });
                    prop_assert!(met, "{} needs {:?} in {:?}", candidates[i].name, group, r.chosen);
                }
            }
            for spec in &req.packages {
                let target = Target::of_spec(spec).unwrap();
                prop_assert!(r.chosen.iter().any(|&j| set.satisfies(j, &target, false)));
            }
            let clashes = set.clashes(&r.chosen).len();
            let reported = r.problems.iter().filter(|p| !p.contains("recommends") && !p.starts_with("Recommends")).count();
            prop_assert_eq!(clashes, reported);
        }
    }
}
