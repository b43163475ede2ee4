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
//!
//! - [`candidate`]: a Packages paragraph as the resolver needs it;
//! - [`index`]: the usable part of an index, looked up by name and provided name;
//! - `provider`: the resolvo adapter;
//! - this module: the strategy (which solves, in which order, and what is reported).

mod candidate;
mod index;
mod provider;
#[cfg(test)]
mod tests;

pub use candidate::{Candidate, MultiArch, Priority};

use crate::packages::PackageSpec;
use foldhash::{HashSet, HashSetExt};
use index::{Index, Qualifier, Target};
use provider::Debian;
use resolvo::{
    ConditionalRequirement, DenseIndex, Problem, Solver, UnsolvableOrCancelled, conflict::Conflict,
};

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
