//! Configuring Debian packages the way dpkg installs them.
//!
//! The union is laid out as `dpkg --unpack` would leave it — merged-/usr when the set
//! holds `usrmerge` or `usr-is-merged`, and dpkg's database with every package
//! unpacked ([`super::database`]) — then a driver script runs in the sandbox:
//!
//! 1. every `preinst install`, Essential packages first and each package's
//!    Pre-Depends before it, with the environment dpkg gives maintainer scripts
//!    (`DPKG_MAINTSCRIPT_PACKAGE`, `…_NAME`, `…_ARCH`, `DPKG_ADMINDIR`, `DPKG_ROOT`…),
//!    since dpkg runs a preinst before it unpacks (base-passwd's makes `/etc/passwd`,
//!    which later scripts need);
//! 2. `dpkg --configure --pending` with the root's own dpkg, so the order of
//!    postinsts, triggers (ldconfig, ca-certificates…) and alternatives are dpkg's.
//!
//! `policy-rc.d` answers 101 so that no service starts, `DEBIAN_FRONTEND` is
//! `noninteractive`, the locale `C.UTF-8`, and `SOURCE_DATE_EPOCH` fixed. dpkg's
//! `--debug=2` names each script it runs; [`DpkgReport`] reads that to record what ran
//! and, when one fails, its exit status and last lines of output.

use super::database::{self, ADMINDIR, Unpacked};
use super::order::{self, Step};
use super::usrmerge;
use crate::configure::{
    ConfigureError, Configurer, PackageScripts, Plan, Prepared, Report, ScriptRun, Settings,
    worker::Ended,
};
use crate::edit::Editor;
use crate::store::Txn;
use canopy_protocol::{Package, PackageId, TreeId};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// dpkg, as a [`Configurer`].
pub struct Dpkg;

/// Prefix of the driver's own lines in the output.
const MARK: &str = "canopy-configure: ";

/// Lines of a failed script's output shown.
const TAIL: usize = 20;
/// At most this many lines of dpkg's own error reports are kept.
const COMPLAINTS: usize = 40;

impl Configurer for Dpkg {
    fn name(&self) -> &'static str {
        "dpkg"
    }

    fn prepare(
        &self,
        txn: &mut Txn<'_>,
        tree: TreeId,
        packages: &[(PackageId, Package)],
        settings: &Settings,
    ) -> Result<Prepared, ConfigureError> {
        let mut ed = Editor::open(txn, &tree)?;
        let has = |ed: &mut Editor, path: &str| -> Result<bool, ConfigureError> {
            Ok(ed.get(txn, path).map_err(edit)?.is_some())
        };
        if !has(&mut ed, "/usr/bin/dpkg")? && !has(&mut ed, "/bin/dpkg")? {
            return Ok(Prepared::Skip(
                "the root has no dpkg (/usr/bin/dpkg)".into(),
            ));
        }
        if !has(&mut ed, "/bin/sh")? && !has(&mut ed, "/usr/bin/sh")? {
            return Ok(Prepared::Skip("the root has no shell (/bin/sh)".into()));
        }
        let pkgs = database::read(txn, &database::debs(packages))?;
        if pkgs
            .iter()
            .any(|p| usrmerge::MARKERS.contains(&p.name.as_str()))
        {
            usrmerge::merge(&mut ed, txn).map_err(|e| ConfigureError::Package(e.to_string()))?;
        }
        database::write(&mut ed, txn, &pkgs)?;
        let source_date_epoch = settings
            .source_date_epoch
            .unwrap_or_else(|| pkgs.iter().map(|p| p.built_at).max().unwrap_or(0));
        let tree = ed.write(txn)?;
        let dpkg_version = pkgs
            .iter()
            .find(|p| p.name == "dpkg")
            .map(|p| p.version.clone())
            .unwrap_or_default();
        let mut files = vec![
            (
                "configure".into(),
                0o755,
                driver(&pkgs, &dpkg_version).into_bytes(),
            ),
            ("policy-rc.d".into(), 0o755, POLICY_RC_D.as_bytes().to_vec()),
        ];
        // dpkg runs a preinst from tmp.ci/, beside its package's control files (debconf
        // reads the package's name from tmp.ci/control): each gets that directory.
        for p in pkgs.iter().filter(|p| p.preinst) {
            for (member, mode, content) in p.control_archive(txn)? {
                files.push((format!("ci/{}/{member}", p.info_name), mode, content));
            }
        }
        let plan = Plan {
            tree,
            source_date_epoch,
            program: "/bin/sh".into(),
            args: vec!["/run/canopy/configure".into()],
            env: environment(source_date_epoch),
            files,
            binds: vec![("policy-rc.d".into(), "/usr/sbin/policy-rc.d".into())],
            empty: vec![("/run".into(), vec!["lock".into()])],
        };
        let report = DpkgReport::new(&pkgs);
        Ok(Prepared::Run(plan, Box::new(report)))
    }
}

fn edit(e: crate::edit::EditError) -> ConfigureError {
    ConfigureError::Package(e.to_string())
}

/// `invoke-rc.d` and `deb-systemd-invoke` ask it before starting a service: 101 is
/// "action forbidden", so no daemon starts at assemble time.
const POLICY_RC_D: &str =
    "#!/bin/sh\n# canopy: no service starts while a root is configured.\nexit 101\n";

/// The environment of the whole run, as mmdebstrap and dpkg set it.
fn environment(source_date_epoch: i64) -> Vec<(String, String)> {
    [
        ("PATH", canopy_sandbox::DEFAULT_PATH),
        ("HOME", "/root"),
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
        ("LC_ALL", "C.UTF-8"),
        ("LANG", "C.UTF-8"),
        ("LANGUAGE", "C.UTF-8"),
        ("SOURCE_DATE_EPOCH", &source_date_epoch.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Quotes a word for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The driver script: every preinst (with what it pre-depends on configured first),
/// then dpkg.
fn driver(pkgs: &[Unpacked], dpkg_version: &str) -> String {
    let mut s = format!(
        r#"#!/bin/sh
# Written by canopy: configures the packages unpacked in this root.
set -u
cd /
export DPKG_ADMINDIR={ADMINDIR} DPKG_ROOT= DPKG_MAINTSCRIPT_DEBUG=0
export DPKG_RUNNING_VERSION={dpkg_version} DPKG_FORCE=security-mac,downgrade
# As dpkg --unpack does: the control archive in tmp.ci/, the preinst run from there.
preinst() {{
    echo "{MARK}preinst $1 install"
    rm -rf {ADMINDIR}/tmp.ci && cp -a "/run/canopy/ci/$2" {ADMINDIR}/tmp.ci || exit 100
    DPKG_MAINTSCRIPT_PACKAGE=$1 DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT=1 \
    DPKG_MAINTSCRIPT_ARCH=$3 DPKG_MAINTSCRIPT_NAME=preinst \
        {ADMINDIR}/tmp.ci/preinst install </dev/null
    status=$?
    rm -rf {ADMINDIR}/tmp.ci
    echo "{MARK}preinst $1 exit $status"
    [ "$status" -eq 0 ] || exit 100
}}
"#,
        dpkg_version = quote(dpkg_version)
    );
    for step in order::steps(pkgs) {
        match step {
            Step::Preinst(i) => {
                let p = &pkgs[i];
                s.push_str(&format!(
                    "preinst {} {} {}\n",
                    quote(&p.name),
                    quote(&p.info_name),
                    quote(&p.arch)
                ));
            }
            Step::Configure(list) => {
                let names: Vec<String> = list.iter().map(|&i| quote(&pkgs[i].info_name)).collect();
                // What goes wrong here shows again in the final run, which decides.
                s.push_str(&format!(
                    "echo \"{MARK}dpkg --configure (pre-dependencies)\"\n\
                     dpkg --debug=2 --configure {} </dev/null 2>&1\n",
                    names.join(" ")
                ));
            }
        }
    }
    s.push_str(&format!(
        "echo \"{MARK}dpkg --configure --pending\"\n\
         dpkg --debug=2 --configure --pending </dev/null 2>&1\n\
         status=$?\n\
         echo \"{MARK}dpkg exit $status\"\n\
         exit $status\n"
    ));
    s
}

/// What the output says ran.
pub(crate) struct DpkgReport {
    /// Package architectures, by name.
    arches: HashMap<String, String>,
    /// Scripts in the order they ran: package, script, arguments, status.
    runs: Vec<(String, ScriptRun)>,
    /// The output of the script running now.
    current: Option<(usize, VecDeque<String>)>,
    /// Whether dpkg has moved on to another package since the current script started
    /// (the script has ended, but its output is still attributed to it).
    moved_on: bool,
    /// The last lines of each run that ended, by run index (only failed runs keep them).
    tails: HashMap<usize, Vec<String>>,
    /// The package named by dpkg's last "error processing package" line.
    failing: Option<String>,
    /// The last lines of all output but dpkg's debug lines.
    tail: VecDeque<String>,
    /// dpkg's own error reports (`dpkg: dependency problems…`, `dpkg: error…`) with their
    /// indented lines: what explains a failure that no script's status does.
    complaints: Vec<String>,
    /// Whether the last line was part of such a report.
    complaining: bool,
    /// Package configured count, for progress.
    configured: usize,
    total: usize,
}

impl DpkgReport {
    fn new(pkgs: &[Unpacked]) -> DpkgReport {
        DpkgReport {
            arches: pkgs
                .iter()
                .map(|p| (p.name.clone(), p.arch.clone()))
                .collect(),
            runs: Vec::new(),
            current: None,
            moved_on: false,
            tails: HashMap::new(),
            failing: None,
            tail: VecDeque::new(),
            complaints: Vec::new(),
            complaining: false,
            configured: 0,
            total: pkgs.len(),
        }
    }

    fn start(&mut self, package: &str, script: &str, args: &str) {
        self.end_current();
        self.runs.push((
            package.to_string(),
            ScriptRun {
                script: script.to_string(),
                args: args.to_string(),
                status: 0,
            },
        ));
        self.current = Some((self.runs.len() - 1, VecDeque::new()));
        self.moved_on = false;
    }

    fn end_current(&mut self) {
        if let Some((i, lines)) = self.current.take() {
            self.tails.insert(i, lines.into());
        }
    }

    /// dpkg says it works on `package` now: a script of another package has ended (dpkg
    /// may print this line just before or just after starting `package`'s script).
    fn moving_to(&mut self, package: &str) {
        if let Some((i, _)) = &self.current {
            self.moved_on |= self.runs[*i].0 != package;
        }
    }

    /// Sets the status of the last run of `package`.
    fn failed(&mut self, package: &str, status: i32) {
        if let Some((_, run)) = self.runs.iter_mut().rev().find(|(p, _)| p == package) {
            run.status = status;
        }
    }
}

/// `package` from an info script path `/var/lib/dpkg/info/NAME[:ARCH].SCRIPT`.
fn script_of(path: &str) -> Option<(&str, &str)> {
    let file = path.strip_prefix(&format!("{ADMINDIR}/info/"))?;
    let (name, script) = file.rsplit_once('.')?;
    Some((name.split(':').next().unwrap_or(name), script))
}

impl Report for DpkgReport {
    fn line(&mut self, line: &str) -> Option<String> {
        if !line.starts_with("D0") {
            if self.tail.len() == TAIL {
                self.tail.pop_front();
            }
            self.tail.push_back(line.to_string());
        }
        self.complaining =
            if line.starts_with("dpkg: error") || line.starts_with("dpkg: dependency") {
                true
            } else {
                self.complaining && line.starts_with(' ')
            };
        if self.complaining && self.complaints.len() < COMPLAINTS {
            self.complaints.push(line.to_string());
        }
        if let Some(rest) = line.strip_prefix(MARK) {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                ["preinst", pkg, "install"] => {
                    self.start(pkg, "preinst", "install");
                    return Some(format!("preinst of {pkg}"));
                }
                ["preinst", pkg, "exit", status] => {
                    self.end_current();
                    self.failed(pkg, status.parse().unwrap_or(1));
                }
                _ => {}
            }
            return None;
        }
        if let Some(rest) = line.strip_prefix("D000002: fork/exec ") {
            // "/var/lib/dpkg/info/x.postinst ( configure  )"
            let (path, args) = rest.split_once(" (").unwrap_or((rest, ""));
            if let Some((pkg, script)) = script_of(path.trim()) {
                let args = args.trim().trim_end_matches(')').trim();
                let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
                let pkg = pkg.to_string();
                self.start(&pkg, script, &args);
            }
            return None;
        }
        if line.starts_with("D0") {
            return None;
        }
        if let Some(rest) = line.strip_prefix("dpkg: error processing package ") {
            self.end_current();
            let pkg = rest.split([' ', ':']).next().unwrap_or("").to_string();
            self.failing = Some(pkg);
            return None;
        }
        if let Some(failing) = self.failing.clone() {
            if let Some((_, status)) = line.split_once("subprocess returned error exit status ") {
                self.failed(&failing, status.trim().parse().unwrap_or(1));
                self.failing = None;
                return None;
            }
            if line.contains("subprocess was killed by signal") {
                self.failed(&failing, 128);
                self.failing = None;
                return None;
            }
        }
        if let Some((_, lines)) = &mut self.current {
            if lines.len() == TAIL {
                lines.pop_front();
            }
            lines.push_back(line.to_string());
        }
        if let Some(rest) = line.strip_prefix("Setting up ") {
            self.configured += 1;
            let pkg = rest.split([' ', ':']).next().unwrap_or(rest);
            self.moving_to(pkg);
            return Some(format!("{}/{} {pkg}", self.configured, self.total));
        }
        if let Some(rest) = line.strip_prefix("Processing triggers for ") {
            let pkg = rest.split([' ', ':']).next().unwrap_or(rest);
            self.moving_to(pkg);
            return Some(format!("triggers of {pkg}"));
        }
        None
    }

    fn running(&self) -> Option<String> {
        let (i, _) = self.current.as_ref().filter(|_| !self.moved_on)?;
        let (package, run) = &self.runs[*i];
        Some(format!("{package}'s {} ({})", run.script, run.args))
    }

    fn finish(mut self: Box<Self>, ended: &Ended) -> Result<Vec<PackageScripts>, ConfigureError> {
        self.end_current();
        if let Some(i) = self.runs.iter().position(|(_, r)| r.status != 0) {
            let (package, run) = &self.runs[i];
            return Err(ConfigureError::Script {
                package: package.clone(),
                script: run.script.clone(),
                status: run.status,
                output: self.tails.remove(&i).unwrap_or_default(),
            });
        }
        if ended.status != Some(0) {
            let hint = if self
                .complaints
                .iter()
                .any(|l| l.contains("is not installed"))
            {
                " (a root assembled from imported packages holds exactly the packages named: \
                 add the missing ones, or let `--from REPO` resolve the dependencies)"
            } else {
                ""
            };
            return Err(ConfigureError::Program {
                what: match ended.status {
                    Some(s) => format!("dpkg --configure --pending failed (exit status {s}){hint}"),
                    None => "dpkg --configure --pending did not finish".into(),
                },
                output: if self.complaints.is_empty() {
                    self.tail.into()
                } else {
                    self.complaints
                },
            });
        }
        let mut by_package: BTreeMap<String, Vec<ScriptRun>> = BTreeMap::new();
        for (package, run) in self.runs {
            by_package.entry(package).or_default().push(run);
        }
        Ok(by_package
            .into_iter()
            .map(|(name, scripts)| PackageScripts {
                arch: self.arches.get(&name).cloned().unwrap_or_default(),
                name,
                scripts,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: &[&str]) -> DpkgReport {
        let mut r = DpkgReport {
            arches: [("bash".to_string(), "amd64".to_string())].into(),
            runs: Vec::new(),
            current: None,
            moved_on: false,
            tails: HashMap::new(),
            failing: None,
            tail: VecDeque::new(),
            complaints: Vec::new(),
            complaining: false,
            configured: 0,
            total: 2,
        };
        for l in lines {
            r.line(l);
        }
        r
    }

    #[test]
    fn reads_what_ran_and_what_failed() {
        let ok = report(&[
            "canopy-configure: preinst bash install",
            "canopy-configure: preinst bash exit 0",
            "D000002: fork/exec /var/lib/dpkg/info/bash.postinst ( configure  )",
            "Setting up bash (5.2) ...",
            "D000002: fork/exec /var/lib/dpkg/info/libc-bin.postinst ( triggered ldconfig )",
        ]);
        let done = Box::new(ok)
            .finish(&Ended {
                status: Some(0),
                timed_out: false,
            })
            .unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].name, "bash");
        assert_eq!(done[0].scripts[1].args, "configure");
        assert_eq!(done[1].scripts[0].args, "triggered ldconfig");

        let bad = report(&[
            "D000002: fork/exec /var/lib/dpkg/info/fails:amd64.postinst ( configure  )",
            "about to fail",
            "dpkg: error processing package fails:amd64 (--configure):",
            " installed fails:amd64 package post-installation script subprocess returned error exit status 3",
        ]);
        match Box::new(bad).finish(&Ended {
            status: Some(1),
            timed_out: false,
        }) {
            Err(ConfigureError::Script {
                package,
                script,
                status,
                output,
            }) => {
                assert_eq!(
                    (package.as_str(), script.as_str(), status),
                    ("fails", "postinst", 3)
                );
                assert_eq!(output, vec!["about to fail".to_string()]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn says_which_script_runs_until_dpkg_moves_on() {
        let mut r = report(&[
            "Setting up loops (1.0) ...",
            "D000002: fork/exec /var/lib/dpkg/info/loops.postinst ( configure  )",
            "still looping",
        ]);
        assert_eq!(r.running().as_deref(), Some("loops's postinst (configure)"));
        r.line("Setting up bash (5.2) ...");
        assert_eq!(r.running(), None);
    }

    #[test]
    fn a_dependency_problem_is_told_with_what_dpkg_said() {
        let r = report(&[
            "Setting up gcc-12-base:amd64 (12.2.0-14) ...",
            "dpkg: dependency problems prevent configuration of base-passwd:",
            " base-passwd depends on libdebconfclient0 (>= 0.145); however:",
            "  Package libdebconfclient0 is not installed.",
            "",
            "dpkg: error processing package base-passwd (--configure):",
            " dependency problems - leaving unconfigured",
            "Setting up libc6:amd64 (2.36-9) ...",
            "D000002: fork/exec /var/lib/dpkg/info/libc-bin.postinst ( triggered ldconfig )",
            "Errors were encountered while processing:",
            " base-passwd",
        ]);
        let ended = Ended {
            status: Some(1),
            timed_out: false,
        };
        match Box::new(r).finish(&ended) {
            Err(ConfigureError::Program { what, output }) => {
                assert!(what.contains("add the missing ones"), "{what}");
                assert_eq!(output.len(), 5, "{output:?}");
                assert!(output[2].contains("libdebconfclient0 is not installed"));
                assert!(output[4].contains("leaving unconfigured"));
            }
            other => panic!("{other:?}"),
        }
    }
}
