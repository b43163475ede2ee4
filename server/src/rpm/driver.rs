//! The scriptlets of an RPM transaction as rpm runs them for a fresh install, written
//! as one shell script for the configure sandbox, and the report that reads its output.
//!
//! Two phases, with owners set between them (see [`super::owners`]):
//!
//! - before: every `%pretrans`, then per package in install order its `%triggerprein`s
//!   and its `%pre`;
//! - after: the package database (the root's own `rpmdb --importdb`, fed the stored
//!   headers), then per package its `%post`, the `%triggerin`s it fires and its own
//!   that fire, the `%filetriggerin`s its files fire and its own over what is already
//!   there; then every `%posttrans`; then every `%transfiletriggerin` (highest priority
//!   first) with the matching files on its input.
//!
//! A scriptlet runs as rpm runs it: the interpreter (`/bin/sh` unless the header names
//! one), the body as a file, then `1` (one instance installed; triggers add the
//! target's count), from `/`, with rpm's `PATH`; an interpreter without a body runs
//! alone. `<lua>` scriptlets run in the root's own rpm (`rpm --eval`), with `arg` as
//! rpm sets it. Every run's exit status is checked: a failing `%post` fails the
//! assemble, where `rpm -i` would only warn.

use super::transaction::{Member, Script};
use crate::configure::{ConfigureError, PackageScripts, Report, ScriptRun, worker::Ended};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Where the runs' files are, in the sandbox (under `/run/canopy`, which is not part of
/// the root).
const STAGE: &str = "/run/canopy/rpm";

/// The file of the stored headers, one after the other, in install order.
pub(crate) const HEADERS: &str = "rpm/headers";

/// Prefix of the driver's own lines in the output.
const MARK: &str = "canopy-configure: ";

/// Lines of a failed scriptlet's output shown.
const TAIL: usize = 20;

/// One scriptlet run.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    /// The package it belongs to, by name.
    pub(crate) package: String,
    /// `%post`, `%triggerin(bash)`…
    pub(crate) label: String,
    /// Its numeric arguments.
    pub(crate) args: Vec<u32>,
    /// The interpreter and its arguments.
    pub(crate) program: Vec<String>,
    /// The body, staged as a file.
    pub(crate) body: String,
    /// The file list it reads (file triggers).
    pub(crate) input: Option<String>,
}

/// Which half of the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Up to and with the `%pre` scriptlets.
    Before,
    /// From the `%post` scriptlets on.
    After,
}

fn run(m: &Member, s: &Script, args: Vec<u32>, input: Option<String>) -> Run {
    Run {
        package: m.name.clone(),
        label: s.label.clone(),
        args,
        program: s.program.clone(),
        body: s.body.clone(),
        input,
    }
}

/// Whether a trigger condition names this package (and its version, if bounded).
fn names(on: &(String, rpm::DependencyFlags, String), m: &Member) -> bool {
    use rpm::DependencyFlags as F;
    let (name, flags, version) = on;
    if *name != m.name {
        return false;
    }
    if version.is_empty() {
        return true;
    }
    let order = super::evr::compare(&m.evr, version);
    (flags.contains(F::LESS) && order.is_lt())
        || (flags.contains(F::GREATER) && order.is_gt())
        || (flags.contains(F::EQUAL) && order.is_eq())
}

/// The files of `m` under any of `prefixes`, one per line.
fn matching<'m>(m: &'m Member, prefixes: &[String]) -> impl Iterator<Item = &'m str> {
    m.files
        .iter()
        .filter(|f| !f.ghost && prefixes.iter().any(|p| f.path.starts_with(p.as_str())))
        .map(|f| f.path.as_str())
}

fn lines<'a>(paths: impl Iterator<Item = &'a str>) -> Option<String> {
    let text: String = paths.map(|p| format!("{p}\n")).collect();
    (!text.is_empty()).then_some(text)
}

/// The runs of one phase for `members` installed in `order`.
pub(crate) fn runs(members: &[Member], order: &[usize], phase: Phase) -> Vec<Run> {
    let mut out = Vec::new();
    match phase {
        Phase::Before => {
            for &i in order {
                if let Some(s) = &members[i].pretrans {
                    out.push(run(&members[i], s, vec![1], None));
                }
            }
            for (at, &i) in order.iter().enumerate() {
                let m = &members[i];
                triggers(members, &order[..=at], m, true, &mut out);
                if let Some(s) = &m.pre {
                    out.push(run(m, s, vec![1], None));
                }
            }
        }
        Phase::After => {
            for (at, &i) in order.iter().enumerate() {
                let m = &members[i];
                if let Some(s) = &m.post {
                    out.push(run(m, s, vec![1], None));
                }
                triggers(members, &order[..=at], m, false, &mut out);
                for &q in &order[..at] {
                    for t in members[q].file_triggers.iter().filter(|t| !t.transaction) {
                        if let Some(input) = lines(matching(m, &t.prefixes)) {
                            out.push(run(&members[q], &t.script, vec![1], Some(input)));
                        }
                    }
                }
                for t in m.file_triggers.iter().filter(|t| !t.transaction) {
                    let installed = order[..=at]
                        .iter()
                        .flat_map(|&q| matching(&members[q], &t.prefixes));
                    if let Some(input) = lines(installed) {
                        out.push(run(m, &t.script, vec![1], Some(input)));
                    }
                }
            }
            for &i in order {
                if let Some(s) = &members[i].posttrans {
                    out.push(run(&members[i], s, vec![1], None));
                }
            }
            let mut transaction: Vec<(u32, usize, &super::transaction::FileTrigger)> = order
                .iter()
                .enumerate()
                .flat_map(|(at, &i)| {
                    members[i]
                        .file_triggers
                        .iter()
                        .filter(|t| t.transaction)
                        .map(move |t| (t.priority, at, t))
                })
                .collect();
            transaction.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            for (_, at, t) in transaction {
                let all = order
                    .iter()
                    .flat_map(|&q| matching(&members[q], &t.prefixes));
                if let Some(input) = lines(all) {
                    out.push(run(&members[order[at]], &t.script, vec![1], Some(input)));
                }
            }
        }
    }
    out
}

/// The package triggers `m`'s installation fires (`before`: `%triggerprein`, else
/// `%triggerin`): those of packages installed so far that name it, then its own that
/// name a package installed so far, each once.
fn triggers(members: &[Member], so_far: &[usize], m: &Member, before: bool, out: &mut Vec<Run>) {
    for &q in so_far {
        let owner = &members[q];
        for t in owner.triggers.iter().filter(|t| t.before == before) {
            if t.on.iter().any(|on| names(on, m)) {
                out.push(run(owner, &t.script, vec![1, 1], None));
            }
        }
    }
    for t in m.triggers.iter().filter(|t| t.before == before) {
        let fired = so_far
            .iter()
            .filter(|&&q| members[q].name != m.name)
            .any(|&q| t.on.iter().any(|on| names(on, &members[q])));
        if fired {
            out.push(run(m, &t.script, vec![1, 1], None));
        }
    }
}

/// Quotes a word for the shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the driver script needs besides itself: files for `/run/canopy`.
pub(crate) struct Driver {
    /// The shell script.
    pub(crate) text: String,
    /// Files under `/run/canopy` (name, content).
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// The driver for `runs`; with `database`, the root's rpm first registers the headers
/// of [`HEADERS`] at `dbpath` (the root's own `%_dbpath` when it names one outside
/// `/root`, else `/var/lib/rpm`). `rpmdb --importdb` (rpm 4.16 and later) stores the
/// headers as they are, as `rpm -i --justdb` would but without an install time, so the
/// same packages give the same database.
pub(crate) fn script(runs: &[Run], database: bool) -> Driver {
    let mut text = format!(
        r#"#!/bin/sh
# Written by canopy: runs the RPM scriptlets of this root in rpm's install order.
set -u
cd /
step() {{
    n=$1
    shift
    echo "{MARK}start $n"
    "$@"
    status=$?
    echo "{MARK}exit $n $status"
    [ "$status" -eq 0 ] || exit 100
}}
"#
    );
    if database {
        text.push_str(&format!(
            r#"dbpath=$(rpm --eval '%{{_dbpath}}' 2>/dev/null)
case "$dbpath" in
    /root/* | / | "") dbpath=/var/lib/rpm ;;
    /*) ;;
    *) dbpath=/var/lib/rpm ;;
esac
echo "{MARK}dbpath $dbpath"
step db rpmdb --dbpath "$dbpath" --importdb <{STAGE}/headers
"#
        ));
    }
    let mut files = Vec::new();
    for (n, r) in runs.iter().enumerate() {
        let body = format!("{STAGE}/{n}");
        let words: Vec<String> = if r.program.first().map(String::as_str) == Some("<lua>") {
            let args: Vec<String> = r.args.iter().map(u32::to_string).collect();
            vec![
                "rpm".into(),
                "--eval".into(),
                format!(
                    "\"%{{lua: local f = assert(loadfile('{body}', 't', setmetatable({{arg = {{'<lua>', {}}}}}, {{__index = _ENV}}))); f()}}\"",
                    args.join(", ")
                ),
            ]
        } else if r.body.is_empty() {
            r.program.iter().map(|w| quote(w)).collect()
        } else {
            r.program
                .iter()
                .map(|w| quote(w))
                .chain([quote(&body)])
                .chain(r.args.iter().map(u32::to_string))
                .collect()
        };
        files.push((format!("rpm/{n}"), r.body.clone().into_bytes()));
        let input = match &r.input {
            Some(list) => {
                files.push((format!("rpm/{n}.in"), list.clone().into_bytes()));
                format!("{body}.in")
            }
            None => "/dev/null".into(),
        };
        text.push_str(&format!("step {n} {} <{input}\n", words.join(" ")));
    }
    text.push_str("exit 0\n");
    Driver { text, files }
}

/// What the driver's output says ran.
pub(crate) struct RpmReport {
    /// Every planned run: package and what ran (status set when it ends).
    runs: Vec<(String, ScriptRun)>,
    /// Which have ended.
    ended: Vec<bool>,
    /// The run going on, with its last lines.
    current: Option<(Option<usize>, VecDeque<String>)>,
    /// The last lines of the runs that failed.
    tails: HashMap<Option<usize>, Vec<String>>,
    /// The database step's exit status, once it ended.
    database: Option<i32>,
    /// Architectures by package name.
    arches: HashMap<String, String>,
    /// What the record should say besides the runs.
    notes: Vec<String>,
    /// The last lines of all output.
    tail: VecDeque<String>,
}

impl RpmReport {
    pub(crate) fn new(
        runs: &[Run],
        arches: HashMap<String, String>,
        notes: Vec<String>,
    ) -> RpmReport {
        RpmReport {
            runs: runs
                .iter()
                .map(|r| {
                    let args: Vec<String> = r.args.iter().map(u32::to_string).collect();
                    (
                        r.package.clone(),
                        ScriptRun {
                            script: r.label.clone(),
                            args: args.join(" "),
                            status: 0,
                        },
                    )
                })
                .collect(),
            ended: vec![false; runs.len()],
            current: None,
            tails: HashMap::new(),
            database: None,
            arches,
            notes,
            tail: VecDeque::new(),
        }
    }

    /// The run a marker names: a number, or `db`.
    fn which(&self, word: &str) -> Option<Option<usize>> {
        match word {
            "db" => Some(None),
            n => n.parse().ok().filter(|&n| n < self.runs.len()).map(Some),
        }
    }
}

fn push(lines: &mut VecDeque<String>, line: &str) {
    if lines.len() == TAIL {
        lines.pop_front();
    }
    lines.push_back(line.to_string());
}

impl Report for RpmReport {
    fn line(&mut self, line: &str) -> Option<String> {
        push(&mut self.tail, line);
        if let Some(rest) = line.strip_prefix(MARK) {
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                ["start", n] => {
                    let run = self.which(n)?;
                    self.current = Some((run, VecDeque::new()));
                    return Some(match run {
                        None => "writing the rpm database".into(),
                        Some(i) => format!("{} of {}", self.runs[i].1.script, self.runs[i].0),
                    });
                }
                ["exit", n, status] => {
                    let run = self.which(n)?;
                    let status = status.parse().unwrap_or(1);
                    match run {
                        None => self.database = Some(status),
                        Some(i) => {
                            self.runs[i].1.status = status;
                            self.ended[i] = true;
                        }
                    }
                    if let Some((_, lines)) = self.current.take()
                        && status != 0
                    {
                        self.tails.insert(run, lines.into());
                    }
                }
                _ => {}
            }
            return None;
        }
        if let Some((_, lines)) = &mut self.current {
            push(lines, line);
        }
        None
    }

    fn finish(mut self: Box<Self>, ended: &Ended) -> Result<Vec<PackageScripts>, ConfigureError> {
        if let Some(status) = self.database.filter(|&s| s != 0) {
            return Err(ConfigureError::Program {
                what: format!(
                    "the root's rpm could not write the package database (rpmdb --importdb, rpm 4.16 or later, exit status {status})"
                ),
                output: self.tails.remove(&None).unwrap_or_default(),
            });
        }
        if let Some(i) = (0..self.runs.len()).find(|&i| self.ended[i] && self.runs[i].1.status != 0)
        {
            let (package, run) = &self.runs[i];
            return Err(ConfigureError::Script {
                package: package.clone(),
                script: run.script.clone(),
                status: run.status,
                output: self.tails.remove(&Some(i)).unwrap_or_default(),
            });
        }
        let all_ran = self.ended.iter().all(|&e| e);
        if ended.status != Some(0) || !all_ran {
            return Err(ConfigureError::Program {
                what: match (ended.status, &self.current) {
                    (_, Some((Some(i), _))) => format!(
                        "{} of {} did not finish",
                        self.runs[*i].1.script, self.runs[*i].0
                    ),
                    (Some(s), _) => format!("the scriptlet driver failed (exit status {s})"),
                    (None, _) => "the scriptlet driver did not finish".into(),
                },
                output: self.tail.into(),
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

    fn running(&self) -> Option<String> {
        match self.current.as_ref()? {
            (None, _) => Some("the rpm database (rpmdb --importdb)".into()),
            (Some(i), _) => {
                let (package, run) = &self.runs[*i];
                Some(format!("{package}'s {} ({})", run.script, run.args))
            }
        }
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}
