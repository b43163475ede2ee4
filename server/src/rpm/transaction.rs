//! A set of RPMs installed together, as rpm's transaction sees it: each package's
//! stored header read back, the order rpm installs them in, and what the headers say
//! beyond the package trees — directory metadata and owners by name (the last package
//! installed wins, as with rpm), scriptlets and triggers.
//!
//! The order is rpm's rule: a package comes after what it requires (by name, by a
//! Provides or by a file it ships); in a loop, prerequisites (`Requires(pre)`,
//! `Requires(post)`, interpreters) are kept and plain requirements give way; what
//! nothing orders goes by name.

use super::header;
use crate::configure::ConfigureError;
use crate::store::Txn;
use canopy_protocol::{EntryKind, Package, PackageId, PackageKind};
use rpm::{DependencyFlags, FileFlags, IndexTag, PackageMetadata, ScriptletFlags};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The entry of a package's control tree that holds its main header.
pub(crate) const HEADER: &str = "header";

/// A scriptlet or trigger: what rpm would run.
#[derive(Clone, Debug)]
pub(crate) struct Script {
    /// `%pre`, `%triggerin(bash)`, `%transfiletriggerin(/usr/lib64)`…
    pub(crate) label: String,
    /// The interpreter and its arguments (`/bin/sh`, `<lua>`).
    pub(crate) program: Vec<String>,
    /// Its text, run from a file; an empty one runs the interpreter alone.
    pub(crate) body: String,
    /// rpm would expand macros or a query format in it first (`-e`, `-q`).
    pub(crate) expands: bool,
}

/// When a package trigger fires, and on what.
#[derive(Clone, Debug)]
pub(crate) struct Trigger {
    pub(crate) script: Script,
    /// Before the target's `%pre` (`%triggerprein`) rather than after its `%post`.
    pub(crate) before: bool,
    /// Package names (with version bounds) it fires on.
    pub(crate) on: Vec<(String, DependencyFlags, String)>,
}

/// A file trigger: fires on installed files under its prefixes.
#[derive(Clone, Debug)]
pub(crate) struct FileTrigger {
    pub(crate) script: Script,
    /// Once at the end with every matching file (`%transfiletriggerin`), rather than
    /// once per package installed (`%filetriggerin`).
    pub(crate) transaction: bool,
    pub(crate) prefixes: Vec<String>,
    /// Higher runs first.
    pub(crate) priority: u32,
}

/// One path a header lists.
#[derive(Clone, Debug)]
pub(crate) struct File {
    pub(crate) path: String,
    pub(crate) dir: bool,
    pub(crate) mode: u16,
    pub(crate) user: String,
    pub(crate) group: String,
    pub(crate) ghost: bool,
}

/// One package of the transaction.
pub(crate) struct Member {
    pub(crate) name: String,
    /// `name-[epoch:]version-release.arch`, as rpm names a package in messages.
    pub(crate) nevra: String,
    /// Epoch, version and release, as canopy records them.
    pub(crate) evr: String,
    /// The build time (seconds since the epoch).
    pub(crate) built: i64,
    /// The main header, as the package database stores it.
    pub(crate) main: Vec<u8>,
    pub(crate) requires: Vec<rpm::Dependency>,
    pub(crate) provides: Vec<rpm::Dependency>,
    pub(crate) files: Vec<File>,
    pub(crate) pretrans: Option<Script>,
    pub(crate) pre: Option<Script>,
    pub(crate) post: Option<Script>,
    pub(crate) posttrans: Option<Script>,
    pub(crate) triggers: Vec<Trigger>,
    pub(crate) file_triggers: Vec<FileTrigger>,
}

fn bad(p: &Package, what: impl std::fmt::Display) -> ConfigureError {
    ConfigureError::Package(format!("{} {}: {what}", p.name, p.version))
}

/// The RPMs among `packages`, their headers read back from their records, in the
/// order given.
pub(crate) fn read(
    txn: &Txn<'_>,
    packages: &[(PackageId, Package)],
) -> Result<Vec<Member>, ConfigureError> {
    let mut out = Vec::new();
    for (_, p) in packages.iter().filter(|(_, p)| p.kind == PackageKind::Rpm) {
        let control = p.control.ok_or_else(|| {
            bad(
                p,
                "its record keeps no header (imported by an older canopy): import the .rpm again",
            )
        })?;
        let tree = txn.tree(&control)?;
        let blob = |name: &str| -> Result<Option<Vec<u8>>, ConfigureError> {
            match tree.get(name.as_bytes()).map(|e| &e.kind) {
                Some(EntryKind::File { blob, .. }) => Ok(Some(txn.blob(blob)?)),
                _ => Ok(None),
            }
        };
        let main =
            blob(HEADER)?.ok_or_else(|| bad(p, "its record's control tree has no header"))?;
        let meta = header::stored(&main, &format!("{} {}", p.name, p.version))
            .map_err(|e| bad(p, format!("its stored header: {e}")))?;
        out.push(member(&meta, p, main)?);
    }
    Ok(out)
}

fn member(meta: &PackageMetadata, p: &Package, main: Vec<u8>) -> Result<Member, ConfigureError> {
    let h = &meta.header;
    let scriptlet = |got: Result<rpm::Scriptlet, rpm::Error>, label: &str| {
        got.ok().map(|s| Script {
            label: label.to_string(),
            program: s
                .program
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| vec!["/bin/sh".to_string()]),
            expands: s
                .flags
                .is_some_and(|f| f.intersects(ScriptletFlags::EXPAND | ScriptletFlags::QFORMAT)),
            body: s.script,
        })
    };
    let mut triggers = Vec::new();
    for t in meta.get_triggers().map_err(|e| bad(p, e))? {
        let before = t
            .conditions
            .iter()
            .any(|c| c.flags.contains(DependencyFlags::TRIGGERPREIN));
        let fires_in = t.conditions.iter().any(|c| {
            c.flags
                .intersects(DependencyFlags::TRIGGERIN | DependencyFlags::TRIGGERPREIN)
        });
        if !fires_in {
            continue;
        }
        let kind = if before { "triggerprein" } else { "triggerin" };
        let names: Vec<&str> = t.conditions.iter().map(|c| c.name.as_str()).collect();
        triggers.push(Trigger {
            script: Script {
                label: format!("%{kind}({})", names.join(",")),
                program: t.program.clone(),
                body: t.script.clone(),
                expands: false,
            },
            before,
            on: t
                .conditions
                .iter()
                .map(|c| (c.name.clone(), c.flags, c.version.clone()))
                .collect(),
        });
    }
    let mut file_triggers = Vec::new();
    for (transaction, list, priorities) in [
        (
            false,
            meta.get_file_triggers(),
            IndexTag::RPMTAG_FILETRIGGERPRIORITIES,
        ),
        (
            true,
            meta.get_trans_file_triggers(),
            IndexTag::RPMTAG_TRANSFILETRIGGERPRIORITIES,
        ),
    ] {
        let priorities = h
            .get_entry_data_as_u32_array(priorities)
            .unwrap_or_default();
        for (i, t) in list.map_err(|e| bad(p, e))?.into_iter().enumerate() {
            if !t
                .conditions
                .iter()
                .any(|c| c.flags.contains(DependencyFlags::TRIGGERIN))
            {
                continue;
            }
            let prefixes: Vec<String> = t.conditions.iter().map(|c| c.name.clone()).collect();
            let kind = if transaction {
                "transfiletriggerin"
            } else {
                "filetriggerin"
            };
            file_triggers.push(FileTrigger {
                script: Script {
                    label: format!("%{kind}({})", prefixes.join(",")),
                    program: t.program.clone(),
                    body: t.script.clone(),
                    expands: false,
                },
                transaction,
                prefixes,
                // rpm's default priority.
                priority: priorities.get(i).copied().unwrap_or(1_000_000),
            });
        }
    }
    let mut files = Vec::new();
    for e in meta.get_file_entries().map_err(|e| bad(p, e))? {
        let mode = e.mode().raw_mode();
        files.push(File {
            path: format!("{}{}", e.dirname(), e.basename()),
            dir: mode & 0o170000 == 0o040000,
            mode: mode & 0o7777,
            user: e.user().to_string(),
            group: e.group().to_string(),
            ghost: e.flags().contains(FileFlags::GHOST),
        });
    }
    let arch = meta.get_arch().unwrap_or("noarch");
    Ok(Member {
        name: p.name.clone(),
        nevra: format!("{}-{}.{arch}", p.name, p.version),
        evr: p.version.clone(),
        built: meta.get_build_time().map_or(0, |t| t as i64),
        main,
        requires: meta.get_requires().unwrap_or_default(),
        provides: meta.get_provides().unwrap_or_default(),
        files,
        pretrans: scriptlet(meta.get_pre_trans_script(), "%pretrans"),
        pre: scriptlet(meta.get_pre_install_script(), "%pre"),
        post: scriptlet(meta.get_post_install_script(), "%post"),
        posttrans: scriptlet(meta.get_post_trans_script(), "%posttrans"),
        triggers,
        file_triggers,
    })
}

/// Whether a requirement must hold before a scriptlet runs: a prerequisite, which
/// keeps its place in a loop.
fn prerequisite(flags: DependencyFlags) -> bool {
    flags.intersects(
        DependencyFlags::PREREQ
            | DependencyFlags::SCRIPT_PRE
            | DependencyFlags::SCRIPT_POST
            | DependencyFlags::INTERP,
    )
}

/// The order rpm installs `members` in: indexes into `members`.
pub(crate) fn order(members: &[Member]) -> Vec<usize> {
    // Who satisfies a name: by package name, Provides, or a file shipped.
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, m) in members.iter().enumerate() {
        by_name.entry(m.name.as_str()).or_default().push(i);
        for p in &m.provides {
            by_name.entry(p.name.as_str()).or_default().push(i);
        }
        for f in &m.files {
            by_name.entry(f.path.as_str()).or_default().push(i);
        }
    }
    // before[p] = (q, strong): q is installed before p.
    let mut before: Vec<BTreeMap<usize, bool>> = vec![BTreeMap::new(); members.len()];
    for (p, m) in members.iter().enumerate() {
        for r in &m.requires {
            if r.name.starts_with("rpmlib(") || r.flags.contains(DependencyFlags::RPMLIB) {
                continue;
            }
            for &q in by_name.get(r.name.as_str()).into_iter().flatten() {
                if q != p {
                    let strong = before[p].entry(q).or_insert(false);
                    *strong |= prerequisite(r.flags);
                }
            }
        }
    }
    let components = strongly_connected(&before);
    // Components in dependency order; ties by their first member (name order).
    let mut component_of = vec![0; members.len()];
    for (c, list) in components.iter().enumerate() {
        for &m in list {
            component_of[m] = c;
        }
    }
    let mut waiting = vec![0usize; components.len()];
    let mut next: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); components.len()];
    for (p, deps) in before.iter().enumerate() {
        for &q in deps.keys() {
            let (cp, cq) = (component_of[p], component_of[q]);
            if cp != cq && next[cq].insert(cp) {
                waiting[cp] += 1;
            }
        }
    }
    let key = |c: usize| (components[c][0], c);
    let mut ready: BTreeSet<(usize, usize)> = (0..components.len())
        .filter(|&c| waiting[c] == 0)
        .map(key)
        .collect();
    let mut out = Vec::with_capacity(members.len());
    while let Some((_, c)) = ready.pop_first() {
        out.extend(inside(&components[c], &before));
        for &n in &next[c] {
            waiting[n] -= 1;
            if waiting[n] == 0 {
                ready.insert(key(n));
            }
        }
    }
    out
}

/// The order inside a loop: prerequisites first, the rest by name.
fn inside(component: &[usize], before: &[BTreeMap<usize, bool>]) -> Vec<usize> {
    let mut left: BTreeSet<usize> = component.iter().copied().collect();
    let mut out = Vec::with_capacity(component.len());
    while !left.is_empty() {
        let free = left.iter().copied().find(|&p| {
            !before[p]
                .iter()
                .any(|(q, &strong)| strong && left.contains(q))
        });
        // A loop of prerequisites: rpm breaks it too, at the first package.
        let p = free.unwrap_or_else(|| *left.first().expect("not empty"));
        left.remove(&p);
        out.push(p);
    }
    out
}

/// Tarjan's strongly connected components of the "installed before" graph, each
/// sorted; without recursion, so a long chain of packages cannot exhaust the stack.
fn strongly_connected(before: &[BTreeMap<usize, bool>]) -> Vec<Vec<usize>> {
    let n = before.len();
    let edges: Vec<Vec<usize>> = before.iter().map(|m| m.keys().copied().collect()).collect();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut counter = 0;
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(start, 0usize)];
        index[start] = counter;
        low[start] = counter;
        counter += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(top) = work.last_mut() {
            let v = top.0;
            if let Some(&w) = edges[v].get(top.1) {
                top.1 += 1;
                if index[w] == usize::MAX {
                    index[w] = counter;
                    low[w] = counter;
                    counter += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                loop {
                    let w = stack.pop().expect("v is on the stack");
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                out.push(component);
            }
        }
    }
    out
}

/// Directory modes and owners by name that the headers give, by path: the last
/// package installed that lists a path decides, as with rpm.
pub(crate) struct Layout {
    /// Explicitly listed directories and their permission bits.
    pub(crate) dirs: BTreeMap<String, u16>,
    /// Owners other than root:root: (user, group, the package that says so).
    pub(crate) owners: BTreeMap<String, (String, String, String)>,
}

/// The layout of members installed in `order`.
pub(crate) fn layout(members: &[Member], order: &[usize]) -> Layout {
    let mut dirs = BTreeMap::new();
    let mut owners = BTreeMap::new();
    for &i in order {
        let m = &members[i];
        for f in m.files.iter().filter(|f| !f.ghost) {
            if f.dir {
                dirs.insert(f.path.clone(), f.mode);
            }
            if f.user == "root" && f.group == "root" {
                owners.remove(&f.path);
            } else {
                owners.insert(
                    f.path.clone(),
                    (f.user.clone(), f.group.clone(), m.nevra.clone()),
                );
            }
        }
    }
    Layout { dirs, owners }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, requires: &[(&str, DependencyFlags)]) -> Member {
        Member {
            name: name.into(),
            nevra: name.into(),
            evr: "1-1".into(),
            built: 0,
            main: Vec::new(),
            requires: requires
                .iter()
                .map(|(n, f)| rpm::Dependency {
                    name: n.to_string(),
                    flags: *f,
                    version: String::new(),
                })
                .collect(),
            provides: Vec::new(),
            files: vec![File {
                path: format!("/usr/bin/{name}"),
                dir: false,
                mode: 0o755,
                user: "root".into(),
                group: "root".into(),
                ghost: false,
            }],
            pretrans: None,
            pre: None,
            post: None,
            posttrans: None,
            triggers: Vec::new(),
            file_triggers: Vec::new(),
        }
    }

    fn names(members: &[Member]) -> Vec<&str> {
        order(members)
            .into_iter()
            .map(|i| members[i].name.as_str())
            .collect()
    }

    #[test]
    fn requirements_first_then_names() {
        let any = DependencyFlags::ANY;
        let members = [
            m("app", &[("lib", any), ("/usr/bin/sh", any)]),
            m("lib", &[("setup", any)]),
            m("setup", &[]),
            m("sh", &[]),
            m("zzz", &[]),
        ];
        assert_eq!(names(&members), ["setup", "lib", "sh", "app", "zzz"]);
    }

    #[test]
    fn loops_keep_prerequisites() {
        let any = DependencyFlags::ANY;
        let pre = DependencyFlags::SCRIPT_PRE;
        // a needs b for its %pre; b needs a at run time only: b goes first.
        let members = [m("a", &[("b", pre)]), m("b", &[("a", any)])];
        assert_eq!(names(&members), ["b", "a"]);
        let members = [m("a", &[("b", any)]), m("b", &[("a", pre)])];
        assert_eq!(names(&members), ["a", "b"]);
    }
}
