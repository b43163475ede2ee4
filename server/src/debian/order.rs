//! The order of the driver's work before `dpkg --configure --pending`: each package's
//! preinst, and, before a preinst that needs them, the packages it pre-depends on
//! configured.
//!
//! dpkg unpacks a package (running its preinst) only once what it pre-depends on is
//! configured: mariadb-server's preinst runs `adduser --system mysql`, which needs
//! adduser configured (and adduser's chfn the PAM configuration libpam-runtime's
//! postinst writes). Essential packages come first (their preinsts, each after what
//! it pre-depends on, as a bootstrap unpacks them before anything is configured), then
//! they are configured with everything they depend on, as a bootstrap does; then every
//! other package, each after what it pre-depends on — which, for a package with a
//! preinst, is configured first, with the packages it depends on, in one
//! `dpkg --configure`.

use super::database::Unpacked;
use std::collections::{BTreeSet, HashMap, HashSet};

/// One thing the driver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Runs this package's preinst.
    Preinst(usize),
    /// Configures these packages (`dpkg --configure`), in the order given.
    Configure(Vec<usize>),
}

/// The steps, in order (see the module documentation).
pub(crate) fn steps(pkgs: &[Unpacked]) -> Vec<Step> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, p) in pkgs.iter().enumerate() {
        by_name.entry(p.name.as_str()).or_insert(i);
    }
    for (i, p) in pkgs.iter().enumerate() {
        for v in &p.provides {
            by_name.entry(v.as_str()).or_insert(i);
        }
    }
    let mut plan = Plan {
        pkgs,
        by_name,
        unpacked: HashSet::new(),
        configured: HashSet::new(),
        out: Vec::new(),
    };
    let essential: Vec<usize> = (0..pkgs.len()).filter(|&i| pkgs[i].essential).collect();
    for &i in &essential {
        plan.unpack(i);
    }
    // A system is installed on a configured Essential set (a bootstrap configures it
    // first): the scripts of every other package may use what it provides (chfn
    // needs the PAM configuration libpam-runtime's postinst writes).
    plan.configure(&essential);
    for i in 0..pkgs.len() {
        plan.unpack(i);
    }
    plan.out
}

struct Plan<'p> {
    pkgs: &'p [Unpacked],
    by_name: HashMap<&'p str, usize>,
    /// Packages whose unpacking has begun (their preinst has run or is about to).
    unpacked: HashSet<usize>,
    configured: HashSet<usize>,
    out: Vec<Step>,
}

impl Plan<'_> {
    /// The first alternative of each group present in the set.
    fn resolve(&self, groups: &[Vec<super::control::Relation>]) -> Vec<usize> {
        groups
            .iter()
            .filter_map(|g| {
                g.iter()
                    .find_map(|r| self.by_name.get(r.name.as_str()).copied())
            })
            .collect()
    }

    fn unpack(&mut self, i: usize) {
        if !self.unpacked.insert(i) {
            return;
        }
        let pkgs = self.pkgs;
        let pre = self.resolve(&pkgs[i].pre_depends);
        for &j in &pre {
            self.unpack(j);
        }
        let p = &pkgs[i];
        if p.preinst && !p.essential && !pre.is_empty() {
            self.configure(&pre);
        }
        if p.preinst {
            self.out.push(Step::Preinst(i));
        }
    }

    /// Configures `from` and what it needs: each is unpacked first, then those not yet
    /// configured are, in one step.
    fn configure(&mut self, from: &[usize]) {
        let needed = self.closure(from);
        for &j in &needed {
            self.unpack(j);
        }
        // Only what is unpacked by now can be configured (a dependency cycle back to a
        // package whose preinst waits for this leaves the rest to `--pending`).
        let todo: Vec<usize> = needed
            .into_iter()
            .filter(|j| !self.configured.contains(j) && self.ready(*j))
            .collect();
        if !todo.is_empty() {
            self.configured.extend(&todo);
            self.out.push(Step::Configure(todo));
        }
    }

    /// Whether package `j`'s preinst is behind it (or it has none): it is unpacked
    /// and not on the way to its own preinst.
    fn ready(&self, j: usize) -> bool {
        !self.pkgs[j].preinst || self.out.contains(&Step::Preinst(j))
    }

    /// `from` and everything it depends or pre-depends on, not configured yet, in
    /// package order.
    fn closure(&self, from: &[usize]) -> Vec<usize> {
        let mut seen: BTreeSet<usize> = BTreeSet::new();
        let mut queue: Vec<usize> = from.to_vec();
        while let Some(j) = queue.pop() {
            if self.configured.contains(&j) || !seen.insert(j) {
                continue;
            }
            let p = &self.pkgs[j];
            queue.extend(self.resolve(&p.depends));
            queue.extend(self.resolve(&p.pre_depends));
        }
        seen.into_iter().collect()
    }
}
