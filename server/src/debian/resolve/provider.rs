//! The resolvo adapter: what Debian's relations mean to the solver (names, version
//! sets, unions, conflicts as constraints, Recommends behind switches).

use super::candidate::Candidate;
use super::index::{Index, Qualifier, Target};
use crate::debian::control::Relation;
use debversion::Version;
use foldhash::{HashMap, HashMapExt};
use resolvo::{
    Candidates, Condition, ConditionId, ConditionalRequirement, DenseIndex, Dependencies,
    DependencyProvider, Interner, KnownDependencies, NameId, Requirement, SolvableId, SolverCache,
    StringId, VersionSetId, VersionSetUnionId,
};
use std::cell::RefCell;
use std::fmt;

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
pub(super) struct Debian<'i, 'c> {
    pub(super) index: &'i Index<'c>,
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
    pub(super) fn new(index: &'i Index<'c>, conflicts: bool, recommends: bool) -> Self {
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
    pub(super) fn requirement(
        &self,
        alternatives: impl IntoIterator<Item = Target>,
    ) -> Option<Requirement> {
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
    pub(super) fn recommended(&self, candidate: usize, group: usize) -> Option<Requirement> {
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
    pub(super) fn switch_requirement(&self, key: SwitchKey) -> ConditionalRequirement {
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
