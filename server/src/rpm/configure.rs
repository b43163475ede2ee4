//! Configuring a root of RPMs the way `rpm -i` installs them, on the configure
//! sandbox ([`crate::configure`]).
//!
//! The union is laid out first: every directory a header lists gets that header's
//! mode, the last package installed deciding. Then two runs ([`super::driver`]):
//! `%pretrans` and `%pre` scriptlets (they create users); between them canopy sets the
//! owners the headers name from the root's own `/etc/passwd` and `/etc/group`
//! ([`super::owners`]); then the package database, `%post`, triggers and `%posttrans`.
//! A root without scriptlets before its owners are set skips the first run.
//!
//! The package database is written by the root's own rpm (`rpmdb --importdb` of the
//! stored headers, at the root's `%_dbpath`, else `/var/lib/rpm`): its format is the
//! one the root's rpm reads, whatever rpm canopy's host has. A root without rpm gets no
//! database; its `<lua>` scriptlets, which only rpm can run, are left out, and the
//! record says so.

use super::driver::{self, HEADERS, Phase, RpmReport, Run};
use super::owners::{self, Ids};
use super::transaction::{self, Layout, Member};
use crate::configure::{ConfigureError, Configurer, Next, Plan, Prepared, Report, Settings};
use crate::edit::{EditError, Editor, Node};
use crate::store::Txn;
use canopy_protocol::{EntryKind, Package, PackageId, TreeId};

/// RPM scriptlets and database, as a [`Configurer`].
pub struct Scriptlets;

/// rpm's `PATH` for scriptlets.
const SCRIPT_PATH: &str = "/sbin:/bin:/usr/sbin:/usr/bin";

/// Where rpm keeps its database (Fedora's, then the traditional place).
const DB_DIRS: [&str; 2] = ["/usr/lib/sysimage/rpm", "/var/lib/rpm"];

fn edit(e: EditError) -> ConfigureError {
    ConfigureError::Package(e.to_string())
}

/// The transaction: packages, their order, their layout.
struct Install {
    members: Vec<Member>,
    order: Vec<usize>,
    layout: Layout,
}

impl Install {
    fn read(txn: &Txn<'_>, packages: &[(PackageId, Package)]) -> Result<Install, ConfigureError> {
        let members = transaction::read(txn, packages)?;
        for m in &members {
            let scripts = [&m.pretrans, &m.pre, &m.post, &m.posttrans];
            if let Some(s) = scripts.into_iter().flatten().find(|s| s.expands) {
                return Err(ConfigureError::Package(format!(
                    "{}: its {} asks rpm to expand macros or a query format in it (-e/-q), which canopy does not do",
                    m.nevra, s.label
                )));
            }
        }
        let order = transaction::order(&members);
        let layout = transaction::layout(&members, &order);
        Ok(Install {
            members,
            order,
            layout,
        })
    }

    fn runs(&self, phase: Phase) -> Vec<Run> {
        driver::runs(&self.members, &self.order, phase)
    }

    /// Whether there is a first run: scriptlets before owners are set.
    fn before(&self) -> bool {
        !self.runs(Phase::Before).is_empty()
    }
}

/// What the root has that configuring needs.
struct Tools {
    shell: bool,
    /// rpm, which runs `<lua>` scriptlets.
    rpm: bool,
    /// rpmdb, which writes the package database.
    rpmdb: bool,
}

fn exists(ed: &mut Editor, txn: &Txn<'_>, paths: &[&str]) -> Result<bool, ConfigureError> {
    for p in paths {
        if ed.get(txn, p).map_err(edit)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn tools(ed: &mut Editor, txn: &Txn<'_>) -> Result<Tools, ConfigureError> {
    Ok(Tools {
        shell: exists(ed, txn, &["/usr/bin/sh", "/bin/sh"])?,
        rpm: exists(ed, txn, &["/usr/bin/rpm", "/bin/rpm"])?,
        rpmdb: exists(ed, txn, &["/usr/bin/rpmdb", "/bin/rpmdb"])?,
    })
}

impl Configurer for Scriptlets {
    fn name(&self) -> &'static str {
        "rpm"
    }

    fn prepare(
        &self,
        txn: &mut Txn<'_>,
        tree: TreeId,
        packages: &[(PackageId, Package)],
        settings: &Settings,
    ) -> Result<Prepared, ConfigureError> {
        let install = Install::read(txn, packages)?;
        let mut ed = Editor::open(txn, &tree)?;
        owners::set_modes(&mut ed, txn, &install.layout)?;
        let tools = tools(&mut ed, txn)?;
        let scriptlets = install.runs(Phase::Before).len() + install.runs(Phase::After).len();
        if !tools.shell {
            return Ok(Prepared::Skip(if scriptlets == 0 && !tools.rpmdb {
                "no scriptlets to run and no rpm in the root".into()
            } else {
                format!(
                    "the root has no shell (/bin/sh) to run its {scriptlets} scriptlets and rpm"
                )
            }));
        }
        if install.before() {
            let (plan, report) = plan(
                txn,
                ed,
                &install,
                packages,
                settings,
                Phase::Before,
                &tools,
                Vec::new(),
            )?;
            return Ok(Prepared::Run(plan, report));
        }
        let notes = set_owners(&mut ed, txn, &install, settings.unknown_owner_root)?;
        if scriptlets == 0 && !tools.rpmdb {
            return Ok(Prepared::Skip(
                "no scriptlets to run and no rpm in the root".into(),
            ));
        }
        let (plan, report) = plan(
            txn,
            ed,
            &install,
            packages,
            settings,
            Phase::After,
            &tools,
            notes,
        )?;
        Ok(Prepared::Run(plan, report))
    }

    fn lays_out(&self) -> bool {
        true
    }

    fn unpacked(
        &self,
        txn: &mut Txn<'_>,
        tree: TreeId,
        packages: &[(PackageId, Package)],
        unknown_owner_root: bool,
    ) -> Result<(TreeId, Vec<String>), ConfigureError> {
        let install = Install::read(txn, packages)?;
        let mut ed = Editor::open(txn, &tree)?;
        owners::set_modes(&mut ed, txn, &install.layout)?;
        let warnings = set_owners(&mut ed, txn, &install, unknown_owner_root)?;
        Ok((ed.write(txn)?, warnings))
    }

    fn then(
        &self,
        txn: &mut Txn<'_>,
        tree: TreeId,
        packages: &[(PackageId, Package)],
        settings: &Settings,
        runs: usize,
    ) -> Result<(Next, Vec<String>), ConfigureError> {
        let install = Install::read(txn, packages)?;
        let mut ed = Editor::open(txn, &tree)?;
        let finished = match (install.before(), runs) {
            (true, 1) => Phase::Before,
            _ => Phase::After,
        };
        if finished == Phase::After {
            steady_database(&mut ed, txn)?;
            return Ok((Next::Done(ed.write(txn)?), Vec::new()));
        }
        let notes = set_owners(&mut ed, txn, &install, settings.unknown_owner_root)?;
        let tools = tools(&mut ed, txn)?;
        if install.runs(Phase::After).is_empty() && !tools.rpmdb {
            return Ok((Next::Done(ed.write(txn)?), notes));
        }
        let (plan, report) = plan(
            txn,
            ed,
            &install,
            packages,
            settings,
            Phase::After,
            &tools,
            Vec::new(),
        )?;
        Ok((Next::Run(plan, report), notes))
    }
}

/// Sets the owners the headers name, from the root's account files as they are now.
fn set_owners(
    ed: &mut Editor,
    txn: &Txn<'_>,
    install: &Install,
    unknown_owner_root: bool,
) -> Result<Vec<String>, ConfigureError> {
    let ids = Ids::of_root(ed, txn)?;
    owners::set_owners(ed, txn, &install.layout, &ids, unknown_owner_root)
}

/// sqlite's shared-memory index of an rpm database whose write-ahead log is empty is
/// rebuilt by whoever opens it: kept empty, so that the same packages give the same
/// root (read-only readers need the file to exist).
fn steady_database(ed: &mut Editor, txn: &mut Txn<'_>) -> Result<(), ConfigureError> {
    for dir in DB_DIRS {
        let wal_empty = matches!(
            ed.get(txn, &format!("{dir}/rpmdb.sqlite-wal"))
                .map_err(edit)?,
            Some(Node::Leaf {
                kind: EntryKind::File { size: 0, .. },
                ..
            })
        );
        if !wal_empty {
            continue;
        }
        let (empty, _) = txn.put_blob(&b""[..]).map_err(|e| {
            ConfigureError::Tree(crate::import::ImportError::from_blob(e, "an empty file"))
        })?;
        if let Some(Node::Leaf {
            kind: EntryKind::File { size, blob },
            ..
        }) = ed
            .get(txn, &format!("{dir}/rpmdb.sqlite-shm"))
            .map_err(edit)?
        {
            *size = 0;
            *blob = empty;
        }
    }
    Ok(())
}

/// Stages a phase's files and says how to run it.
#[allow(clippy::too_many_arguments)]
fn plan(
    txn: &mut Txn<'_>,
    ed: Editor,
    install: &Install,
    packages: &[(PackageId, Package)],
    settings: &Settings,
    phase: Phase,
    tools: &Tools,
    mut notes: Vec<String>,
) -> Result<(Plan, Box<dyn Report>), ConfigureError> {
    let mut runs = install.runs(phase);
    if !tools.rpm {
        runs.retain(|r| {
            let lua = r.program.first().map(String::as_str) == Some("<lua>");
            if lua {
                notes.push(format!(
                    "{}: its {} is a <lua> scriptlet, which only rpm runs, and the root has no rpm: not run",
                    r.package, r.label
                ));
            }
            !lua
        });
    }
    let database = phase == Phase::After && tools.rpmdb;
    let script = driver::script(&runs, database);
    let mut files: Vec<(String, u32, Vec<u8>)> =
        vec![("configure".into(), 0o755, script.text.into_bytes())];
    files.extend(
        script
            .files
            .into_iter()
            .map(|(name, content)| (name, 0o644, content)),
    );
    if database {
        let headers = install
            .order
            .iter()
            .flat_map(|&i| install.members[i].main.iter().copied())
            .collect();
        files.push((HEADERS.into(), 0o644, headers));
    }
    let source_date_epoch = settings
        .source_date_epoch
        .unwrap_or_else(|| install.members.iter().map(|m| m.built).max().unwrap_or(0));
    let arches = packages
        .iter()
        .map(|(_, p)| (p.name.clone(), p.arch.clone()))
        .collect();
    let plan = Plan {
        tree: ed.write(txn)?,
        source_date_epoch,
        program: "/bin/sh".into(),
        args: vec!["/run/canopy/configure".into()],
        env: [
            ("PATH", SCRIPT_PATH),
            ("HOME", "/root"),
            ("LC_ALL", "C"),
            ("SOURCE_DATE_EPOCH", &source_date_epoch.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        files,
        binds: Vec::new(),
        empty: Vec::new(),
    };
    let report = RpmReport::new(&runs, arches, notes);
    Ok((plan, Box::new(report)))
}
