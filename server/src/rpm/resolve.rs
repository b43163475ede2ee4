//! Dependency resolution for RPM repositories, on the resolvo SAT solver, with rpm's
//! rules: a requirement is met by a package of that name, by one that Provides it
//! (versioned provides compared under EVR ordering, an unversioned one meeting any
//! version), or, for a path, by one that ships the file. Conflicts and Obsoletes keep
//! packages apart. Rich dependencies: `(a or b)` is a choice, `(a and b)` two
//! requirements, `(a if b)` a requirement that holds once `b` is installed; the others
//! (`with`, `without`, `unless`, `else`, nesting) make the package uninstallable with a
//! reason that names it, which the explanation shows. Of equal versions, the target
//! architecture is preferred to `noarch`; other architectures are never in the index.

use super::evr::Evr;
use super::repomd::{Candidate, Dep, Op};
use crate::packages::PackageSpec;
use foldhash::{HashMap, HashMapExt};
use resolvo::{
    Candidates, Condition, ConditionId, ConditionalRequirement, DenseIndex, Dependencies,
    DependencyProvider, Interner, KnownDependencies, NameId, Problem, Requirement, SolvableId,
    Solver, SolverCache, StringId, UnsolvableOrCancelled, VersionSetId, VersionSetUnionId,
};
use std::cell::RefCell;
use std::fmt;

/// What to resolve.
#[derive(Clone, Debug)]
pub struct Request {
    /// Package names (or capabilities, or file paths), optionally `=EVR`.
    pub packages: Vec<PackageSpec>,
    /// The target architecture (`x86_64`); `noarch` goes with it.
    pub arch: String,
    /// Follow Recommends where they fit.
    pub recommends: bool,
}

/// The chosen packages: indexes into the candidates, sorted by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// One index per chosen package.
    pub chosen: Vec<usize>,
    /// Weak dependencies left out, one line each.
    pub problems: Vec<String>,
}

/// Why a request cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nothing is called that, provides it or ships it.
    #[error(
        "unknown package {0}: the repositories have no package of that name, and none provides it"
    )]
    UnknownPackage(String),
    /// The dependencies cannot all be met.
    #[error("the request cannot be satisfied:\n{0}")]
    Unsatisfiable(String),
}

/// Resolves `request` against `candidates`: the highest versions that hold together.
pub fn resolve(candidates: &[Candidate], request: &Request) -> Result<Resolution, ResolveError> {
    let index = Index::new(candidates);
    let mut roots = Vec::new();
    for spec in &request.packages {
        let dep = Dep {
            name: spec.name.clone(),
            constraint: spec.version.as_ref().map(|v| (Op::Eq, Evr::parse(v))),
        };
        if index.owners(&dep.name).is_empty() {
            return Err(ResolveError::UnknownPackage(spec.to_string()));
        }
        roots.push(dep);
    }
    let attempt = |recommends: bool| {
        let provider = Rpm::new(&index, recommends);
        let requirements: Vec<ConditionalRequirement> = roots
            .iter()
            .map(|d| provider.requirement(d).into())
            .collect();
        let mut solver = Solver::new(provider);
        match solver.solve(Problem::new().requirements(requirements)) {
            Ok(found) => Ok(found
                .into_iter()
                .map(DenseIndex::to_index)
                .collect::<Vec<_>>()),
            Err(UnsolvableOrCancelled::Unsolvable(conflict)) => Err(conflict
                .display_user_friendly(&solver)
                .to_string()
                .trim_end()
                .to_string()),
            Err(UnsolvableOrCancelled::Cancelled(_)) => {
                unreachable!("the RPM provider never cancels a solve")
            }
        }
    };
    let mut problems = Vec::new();
    let mut chosen = match attempt(request.recommends) {
        Ok(chosen) => chosen,
        Err(why) if !request.recommends => return Err(ResolveError::Unsatisfiable(why)),
        Err(_) => {
            let chosen = attempt(false).map_err(ResolveError::Unsatisfiable)?;
            problems.push(
                "Recommends were not followed: they cannot all be installed with the rest".into(),
            );
            chosen
        }
    };
    chosen.sort_by(|&a, &b| candidates[a].name.cmp(&candidates[b].name));
    Ok(Resolution { chosen, problems })
}

/// The candidates, looked up by name and by what they provide.
struct Index<'c> {
    candidates: &'c [Candidate],
    by_name: HashMap<&'c str, Vec<usize>>,
    /// Capability or file → names of the packages providing it, each once.
    providers: HashMap<&'c str, Vec<&'c str>>,
}

impl<'c> Index<'c> {
    fn new(candidates: &'c [Candidate]) -> Self {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::with_capacity(candidates.len());
        let mut providers: HashMap<&str, Vec<&str>> = HashMap::with_capacity(candidates.len());
        for (i, c) in candidates.iter().enumerate() {
            by_name.entry(&c.name).or_default().push(i);
            let names = c
                .provides
                .iter()
                .map(|p| p.name.as_str())
                .chain(c.files.iter().map(String::as_str));
            for n in names {
                let list = providers.entry(n).or_default();
                if !list.contains(&c.name.as_str()) {
                    list.push(&c.name);
                }
            }
        }
        Index {
            candidates,
            by_name,
            providers,
        }
    }

    /// Package names that may meet a name: the package itself, then its providers.
    fn owners(&self, name: &str) -> Vec<&'c str> {
        let mut out: Vec<&str> = self
            .by_name
            .get_key_value(name)
            .map(|(k, _)| *k)
            .into_iter()
            .collect();
        for p in self.providers.get(name).into_iter().flatten() {
            if !out.contains(p) {
                out.push(p);
            }
        }
        out
    }

    /// Whether candidate `i` meets `dep`.
    fn satisfies(&self, i: usize, dep: &Dep) -> bool {
        let c = &self.candidates[i];
        let admits = |evr: &Evr| match &dep.constraint {
            None => true,
            Some((op, bound)) => op.admits(evr, bound),
        };
        if c.name == dep.name && admits(&c.evr) {
            return true;
        }
        if dep.name.starts_with('/') && c.files.contains(&dep.name) {
            return true;
        }
        c.provides.iter().any(|p| {
            p.name == dep.name
                && match (&dep.constraint, &p.constraint) {
                    (None, _) | (_, None) => true,
                    (Some(_), Some((_, provided))) => admits(provided),
                }
        })
    }
}

/// A rich dependency, as far as canopy maps it onto the solver.
enum Rich {
    /// One of these.
    Any(Vec<Dep>),
    /// All of these.
    All(Vec<Dep>),
    /// The first, once the second is installed.
    If(Dep, Dep),
}

/// Parses `(a or b or c)`, `(a and b)`, `(a if b)`; `None` for anything else.
fn rich(text: &str) -> Option<Rich> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    if inner.contains('(') {
        return None;
    }
    let words: Vec<&str> = inner.split_whitespace().collect();
    // Terms are `name [op version]`, joined by one operator word.
    let mut terms: Vec<Vec<&str>> = vec![Vec::new()];
    let mut joiner: Option<&str> = None;
    for w in words {
        match w {
            "or" | "and" | "if" | "unless" | "with" | "without" | "else" => {
                if joiner.is_some_and(|j| j != w) || (w == "if" && joiner.is_some()) {
                    return None;
                }
                joiner = Some(w);
                terms.push(Vec::new());
            }
            _ => terms.last_mut().expect("never empty").push(w),
        }
    }
    let deps: Vec<Dep> = terms
        .iter()
        .map(|t| match t.as_slice() {
            [name] => Some(Dep {
                name: name.to_string(),
                constraint: None,
            }),
            [name, op, version] => {
                let op = match *op {
                    "<" => Op::Lt,
                    "<=" => Op::Le,
                    "=" | "==" => Op::Eq,
                    ">=" => Op::Ge,
                    ">" => Op::Gt,
                    _ => return None,
                };
                Some(Dep {
                    name: name.to_string(),
                    constraint: Some((op, Evr::parse(version))),
                })
            }
            _ => None,
        })
        .collect::<Option<_>>()?;
    match (joiner, deps.len()) {
        (None, 1) => Some(Rich::All(deps)),
        (Some("or"), _) => Some(Rich::Any(deps)),
        (Some("and"), _) => Some(Rich::All(deps)),
        (Some("if"), 2) => {
            let mut d = deps.into_iter();
            Some(Rich::If(d.next()?, d.next()?))
        }
        _ => None,
    }
}

/// A version set: the candidates of `name` that meet `dep`, or (negated) do not.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Set {
    name: NameId,
    dep: Dep,
    negated: bool,
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
    fn intern(&mut self, value: T) -> u32 {
        if let Some(&id) = self.ids.get(&value) {
            return id;
        }
        let id = u32::try_from(self.list.len()).expect("fewer than 2^32 interned values");
        self.list.push(value.clone());
        self.ids.insert(value, id);
        id
    }
}

/// What resolvo is told about the index; names, sets, unions, conditions and reasons
/// are interned as the solver asks, so a solve costs what it reaches.
struct Rpm<'i, 'c> {
    index: &'i Index<'c>,
    recommends: bool,
    names: RefCell<Interned<String>>,
    sets: RefCell<Interned<Set>>,
    unions: RefCell<Vec<Vec<VersionSetId>>>,
    conditions: RefCell<Vec<Condition>>,
    strings: RefCell<Vec<String>>,
}

impl<'i, 'c> Rpm<'i, 'c> {
    fn new(index: &'i Index<'c>, recommends: bool) -> Self {
        Rpm {
            index,
            recommends,
            names: RefCell::default(),
            sets: RefCell::default(),
            unions: RefCell::default(),
            conditions: RefCell::default(),
            strings: RefCell::default(),
        }
    }

    fn name_id(&self, name: &str) -> NameId {
        NameId::from_index(self.names.borrow_mut().intern(name.to_string()) as usize)
    }

    fn set(&self, owner: &str, dep: &Dep, negated: bool) -> VersionSetId {
        let name = self.name_id(owner);
        VersionSetId(self.sets.borrow_mut().intern(Set {
            name,
            dep: dep.clone(),
            negated,
        }))
    }

    /// The sets meeting any of `deps`: one per package able to meet one.
    fn sets_for(&self, deps: &[Dep]) -> Vec<VersionSetId> {
        let mut sets = Vec::new();
        for dep in deps {
            for owner in self.index.owners(&dep.name) {
                let able = self.index.by_name[owner]
                    .iter()
                    .any(|&c| self.index.satisfies(c, dep));
                if able {
                    let set = self.set(owner, dep, false);
                    if !sets.contains(&set) {
                        sets.push(set);
                    }
                }
            }
        }
        // Nothing meets any: a set on the first name with no candidates, which
        // resolvo reports as missing.
        if sets.is_empty()
            && let Some(first) = deps.first()
        {
            sets.push(self.set(&first.name, first, false));
        }
        sets
    }

    fn union(&self, sets: Vec<VersionSetId>) -> Requirement {
        match sets.len() {
            1 => Requirement::Single(sets[0]),
            _ => {
                let mut unions = self.unions.borrow_mut();
                unions.push(sets);
                Requirement::Union(VersionSetUnionId(
                    u32::try_from(unions.len() - 1).expect("fewer than 2^32 unions"),
                ))
            }
        }
    }

    /// The requirement for a plain dependency.
    fn requirement(&self, dep: &Dep) -> Requirement {
        self.union(self.sets_for(std::slice::from_ref(dep)))
    }

    /// A condition met when any package meeting `dep` is installed.
    fn condition(&self, dep: &Dep) -> Option<ConditionId> {
        let sets: Vec<VersionSetId> = self
            .index
            .owners(&dep.name)
            .into_iter()
            .map(|owner| self.set(owner, dep, false))
            .collect();
        let mut conditions = self.conditions.borrow_mut();
        let mut current: Option<ConditionId> = None;
        for set in sets {
            conditions.push(Condition::Requirement(set));
            let id = ConditionId::from_index(conditions.len() - 1);
            current = Some(match current {
                None => id,
                Some(before) => {
                    conditions.push(Condition::Binary(resolvo::LogicalOperator::Or, before, id));
                    ConditionId::from_index(conditions.len() - 1)
                }
            });
        }
        current
    }

    fn reason(&self, text: String) -> StringId {
        let mut strings = self.strings.borrow_mut();
        strings.push(text);
        StringId::from_index(strings.len() - 1)
    }

    fn evr(&self, solvable: SolvableId) -> &'c Evr {
        let candidates: &'c [Candidate] = self.index.candidates;
        &candidates[solvable.to_index()].evr
    }
}

impl Interner for Rpm<'_, '_> {
    type NameId = NameId;
    type SolvableId = SolvableId;

    fn display_solvable(&self, solvable: SolvableId) -> impl fmt::Display + '_ {
        let c = &self.index.candidates[solvable.to_index()];
        format!("{} {}.{}", c.name, c.evr, c.arch)
    }

    fn display_merged_solvables(&self, solvables: &[SolvableId]) -> impl fmt::Display + '_ {
        let Some(&first) = solvables.first() else {
            return String::new();
        };
        let versions: Vec<String> = solvables
            .iter()
            .map(|s| {
                let c = &self.index.candidates[s.to_index()];
                format!("{}.{}", c.evr, c.arch)
            })
            .collect();
        format!(
            "{} {}",
            self.index.candidates[first.to_index()].name,
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
        let what = if *owner == set.dep.name {
            match &set.dep.constraint {
                Some((op, evr)) => format!("{} {evr}", op.symbol()),
                None => String::new(),
            }
        } else if set.dep.name.starts_with('/') {
            format!("shipping {}", set.dep)
        } else {
            format!("providing {}", set.dep)
        };
        match set.negated {
            true => format!("not matching {what}"),
            false => what,
        }
    }

    fn display_string(&self, string: StringId) -> impl fmt::Display + '_ {
        self.strings.borrow()[string.to_index()].clone()
    }

    fn version_set_name(&self, version_set: VersionSetId) -> NameId {
        self.sets.borrow().list[version_set.0 as usize].name
    }

    fn solvable_name(&self, solvable: SolvableId) -> NameId {
        self.name_id(&self.index.candidates[solvable.to_index()].name)
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

impl DependencyProvider for Rpm<'_, '_> {
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
                let hit = self.index.satisfies(s.to_index(), &set.dep);
                (hit != set.negated) != inverse
            })
            .collect()
    }

    async fn get_candidates(&self, name: NameId) -> Option<Candidates<SolvableId>> {
        let names = self.names.borrow();
        let list = self
            .index
            .by_name
            .get(names.list[name.to_index()].as_str())?;
        Some(Candidates {
            candidates: list.iter().map(|&i| SolvableId::from_index(i)).collect(),
            ..Candidates::default()
        })
    }

    async fn sort_candidates(&self, _: &SolverCache<Self>, solvables: &mut [SolvableId]) {
        // Highest EVR first; of equal EVRs, an architecture-specific build before noarch.
        solvables.sort_by(|a, b| {
            let (ca, cb) = (
                &self.index.candidates[a.to_index()],
                &self.index.candidates[b.to_index()],
            );
            self.evr(*b)
                .compare(self.evr(*a))
                .then_with(|| (ca.arch == "noarch").cmp(&(cb.arch == "noarch")))
        });
    }

    async fn get_dependencies(&self, solvable: SolvableId) -> Dependencies {
        let c = &self.index.candidates[solvable.to_index()];
        let mut requirements: Vec<ConditionalRequirement> = Vec::new();
        let weak = self
            .recommends
            .then_some(&c.recommends)
            .into_iter()
            .flatten();
        for (dep, strong) in c
            .requires
            .iter()
            .map(|d| (d, true))
            .chain(weak.map(|d| (d, false)))
        {
            if !strong && self.index.owners(&dep.name).is_empty() {
                continue;
            }
            if !dep.name.starts_with('(') {
                requirements.push(self.requirement(dep).into());
                continue;
            }
            match rich(&dep.name) {
                Some(Rich::Any(deps)) => requirements.push(self.union(self.sets_for(&deps)).into()),
                Some(Rich::All(deps)) => requirements.extend(
                    deps.iter()
                        .map(|d| ConditionalRequirement::from(self.requirement(d))),
                ),
                Some(Rich::If(then, when)) => {
                    if let Some(condition) = self.condition(&when) {
                        requirements.push(self.requirement(&then).with_condition(condition));
                    }
                }
                None => {
                    let reason = self.reason(format!(
                        "{} {}.{} has a rich dependency canopy cannot resolve: {}",
                        c.name, c.evr, c.arch, dep.name
                    ));
                    return Dependencies::Unknown(reason);
                }
            }
        }
        let mut constrains = Vec::new();
        for dep in &c.conflicts {
            for owner in self.index.owners(&dep.name) {
                if owner != c.name {
                    constrains.push(self.set(owner, dep, true));
                }
            }
        }
        // Obsoletes name packages, not what they provide.
        for dep in &c.obsoletes {
            if dep.name != c.name && self.index.by_name.contains_key(dep.name.as_str()) {
                constrains.push(self.set(&dep.name, dep, true));
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

    fn dep(text: &str) -> Dep {
        if text.starts_with('(') {
            return Dep {
                name: text.into(),
                constraint: None,
            };
        }
        let parts: Vec<&str> = text.split_whitespace().collect();
        match parts.as_slice() {
            [name] => Dep {
                name: name.to_string(),
                constraint: None,
            },
            [name, op, v] => Dep {
                name: name.to_string(),
                constraint: Some((
                    match *op {
                        "<" => Op::Lt,
                        "<=" => Op::Le,
                        "=" => Op::Eq,
                        ">=" => Op::Ge,
                        _ => Op::Gt,
                    },
                    Evr::parse(v),
                )),
            },
            _ => panic!("{text}"),
        }
    }

    /// `pkg("app", "1.0-1", "x86_64")` with deps added by the caller.
    fn pkg(name: &str, evr: &str, arch: &str) -> Candidate {
        Candidate {
            name: name.into(),
            arch: arch.into(),
            evr: Evr::parse(evr),
            requires: vec![],
            provides: vec![dep(&format!("{name} = {evr}"))],
            conflicts: vec![],
            obsoletes: vec![],
            recommends: vec![],
            files: vec![],
        }
    }

    fn request(specs: &str) -> Request {
        Request {
            packages: specs
                .split_whitespace()
                .map(|s| s.parse().unwrap())
                .collect(),
            arch: "x86_64".into(),
            recommends: false,
        }
    }

    fn chosen(index: &[Candidate], req: &Request) -> Vec<String> {
        let r = resolve(index, req).unwrap_or_else(|e| panic!("{e}"));
        r.chosen
            .iter()
            .map(|&i| format!("{}-{}.{}", index[i].name, index[i].evr, index[i].arch))
            .collect()
    }

    #[test]
    fn follows_sonames_files_and_versions() {
        let mut app = pkg("app", "2.0-1", "x86_64");
        app.requires = vec![
            dep("libfoo.so.1()(64bit)"),
            dep("/bin/sh"),
            dep("base >= 1.10"),
        ];
        let mut lib = pkg("foo-libs", "1.0-1", "x86_64");
        lib.provides.push(dep("libfoo.so.1()(64bit)"));
        let mut sh = pkg("bash", "5.2-1", "x86_64");
        sh.files = vec!["/bin/sh".into()];
        let old = pkg("base", "1.9-1", "noarch");
        let new = pkg("base", "1.10-1", "noarch");
        let index = vec![app, lib, sh, old, new];
        assert_eq!(
            chosen(&index, &request("app")),
            [
                "app-2.0-1.x86_64",
                "base-1.10-1.noarch",
                "bash-5.2-1.x86_64",
                "foo-libs-1.0-1.x86_64"
            ]
        );
    }

    #[test]
    fn prefers_the_architecture_then_noarch_and_honours_obsoletes() {
        let a = pkg("tool", "1.0-1", "noarch");
        let b = pkg("tool", "1.0-1", "x86_64");
        let mut new = pkg("newtool", "2.0-1", "x86_64");
        new.obsoletes = vec![dep("tool < 2")];
        new.provides.push(dep("tool = 2.0-1"));
        let index = vec![a, b, new];
        assert_eq!(
            chosen(&index, &request("tool=1.0-1")),
            ["tool-1.0-1.x86_64"]
        );
        let err = resolve(&index, &request("tool=1.0-1 newtool")).unwrap_err();
        assert!(err.to_string().contains("newtool"), "{err}");
    }

    #[test]
    fn rich_dependencies() {
        let mut app = pkg("app", "1-1", "x86_64");
        app.requires = vec![dep("(sh or busybox)"), dep("(docs if man)")];
        let busybox = pkg("busybox", "1-1", "x86_64");
        let man = pkg("man", "1-1", "x86_64");
        let docs = pkg("docs", "1-1", "noarch");
        let index = vec![app.clone(), busybox, man, docs];
        assert_eq!(
            chosen(&index, &request("app")),
            ["app-1-1.x86_64", "busybox-1-1.x86_64"]
        );
        assert_eq!(
            chosen(&index, &request("app man")),
            [
                "app-1-1.x86_64",
                "busybox-1-1.x86_64",
                "docs-1-1.noarch",
                "man-1-1.x86_64"
            ]
        );
        let mut odd = app;
        odd.requires = vec![dep("(a with b)")];
        let err = resolve(&[odd], &request("app")).unwrap_err().to_string();
        assert!(
            err.contains("rich dependency") && err.contains("app"),
            "{err}"
        );
    }

    #[test]
    fn explains_what_is_missing() {
        let mut app = pkg("app", "1-1", "x86_64");
        app.requires = vec![dep("libmissing.so.2()(64bit)")];
        let err = resolve(&[app], &request("app")).unwrap_err().to_string();
        assert!(err.contains("libmissing.so.2()(64bit)"), "{err}");
        let err = resolve(&[], &request("nothing")).unwrap_err();
        assert_eq!(err, ResolveError::UnknownPackage("nothing".into()));
    }
}
