//! `canopy assemble` and `canopy upgrade`.

use super::{bytes, fetcher, head, open, print_json, root_name};
use crate::cli::{AssembleArgs, ConfigureArgs, UpgradeArgs};
use anyhow::{Context, Result};
use canopy_protocol::{Commit, CommitBody, CommitId, Package, PackageId, RootName};
use canopy_server::assemble::{
    Configuration, Recipe, Request, assemble_as, package_refs, select_imported, unchanged,
};
use canopy_server::configure;
use canopy_server::diff::{self, Listed, PackageChange};
use canopy_server::repo::provide::{self, Progress, control_from_cache, provide};
use canopy_server::{Access, Store, TxnStats};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

pub fn run(store: &Path, args: AssembleArgs) -> Result<ExitCode> {
    let root = root_name(&args.root)?;
    let recipe = Recipe {
        specs: args
            .packages
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?,
        from: args.from,
        essential: args.essential,
        recommends: args.recommends,
        allow_overwrite: args.allow_overwrite,
        subtree: args.subtree,
        no_configure: args.no_configure,
        unknown_owner_root: args.unknown_owner.is_some(),
    };
    let store = open(store, Access::Write)?;
    let previous = store
        .root_ref(&root)?
        .map(|id| store.commit(&id))
        .transpose()?;
    let (packages, resolved) = select(&store, &recipe, args.json.json)?;
    let plan = Plan {
        operation: "assemble",
        subject: args.message,
        previous,
        resolved,
        configure: &args.configure,
    };
    commit(
        &store,
        Request {
            root,
            recipe,
            packages,
            subject: None,
        },
        plan,
        args.json.json,
    )
}

pub fn upgrade(store: &Path, args: UpgradeArgs) -> Result<ExitCode> {
    let root = root_name(&args.root)?;
    let json = args.json.json;
    let store = open(store, Access::Write)?;
    let current = head(&store, &root)?;
    let old = store.commit(&current)?;
    if let Some(image) = super::image::of_commit(&old.body)? {
        anyhow::bail!(
            "root {root} was imported from image {}: import the newer image to upgrade it (canopy import oci LAYOUT --name {root}, or canopy import docker-archive FILE --name {root})",
            image.manifest
        );
    }
    let recipe = Recipe::of_commit(&old.body)
        .with_context(|| format!("reading how root {root} was made (commit {current})"))?;
    // Upgrading re-resolves from the repositories the root was made from: one removed
    // since is named as such (not as a mistyped name of another repository).
    for name in &recipe.from {
        if let Err(canopy_server::repo::RepoError::Unknown { .. }) =
            canopy_server::repo::get(&store, name)
        {
            anyhow::bail!(
                "root {root} was assembled --from {}, and no repository named {name} is \
                 configured now: add it again (canopy repo add {name} URL …), or assemble \
                 {root} anew from the repositories there are (`canopy repo list`)",
                recipe.from.join(",")
            );
        }
    }
    if args.dry_run {
        return dry_run(&store, &root, current, &old.body, &recipe, json);
    }
    let (packages, resolved) = select(&store, &recipe, json)?;
    if unchanged(&old.body, &packages) {
        if json {
            print_json(&report_json(&Report {
                commit: &old,
                id: current,
                previous: Some(&old),
                changes: &[],
                stats: TxnStats::default(),
                resolved: &resolved,
                written: false,
                overwritten: &[],
                configuration: None,
            }))?;
        } else {
            println!(
                "{root} is up to date: {} packages, commit {current}",
                old.body.packages.len()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let new = package_refs(&packages);
    let changes = diff::packages(&old.body.packages, &new);
    if !json {
        println!("{}", summary(&changes));
        for change in &changes {
            println!("  {}", describe(change));
        }
    }
    let subject = args
        .message
        .unwrap_or_else(|| format!("upgrade {root}: {}", summary(&changes)));
    let plan = Plan {
        operation: "upgrade",
        subject: Some(subject),
        previous: Some(old),
        resolved,
        configure: &args.configure,
    };
    commit(
        &store,
        Request {
            root,
            recipe,
            packages,
            subject: None,
        },
        plan,
        json,
    )
}

/// `upgrade --dry-run`: resolves the recipe as it would now, compares, writes nothing.
fn dry_run(
    store: &Store,
    root: &RootName,
    current: CommitId,
    old: &CommitBody,
    recipe: &Recipe,
    json: bool,
) -> Result<ExitCode> {
    // What the upgrade would assemble: (name, version, arch, archive, imported already).
    let (planned, changes_of, download): (Vec<Value>, Vec<Value>, (usize, u64));
    let described: Vec<String>;
    if recipe.from.is_empty() {
        let packages = select_imported(store, &recipe.specs)?;
        let refs = package_refs(&packages);
        let changes = diff::packages(&old.packages, &refs);
        planned = refs.iter().map(|p| planned_json(&p.into(), true)).collect();
        changes_of = changes.iter().map(change_json).collect();
        described = changes.iter().map(describe).collect();
        download = (0, 0);
    } else {
        let progress = Bars::new(json);
        let resolution = provide::resolve(store, recipe, &fetcher()?, &progress);
        progress.bar.finish_and_clear();
        let resolution = resolution?;
        let changes = diff::packages(&old.packages, &resolution.packages);
        planned = resolution
            .packages
            .iter()
            .map(|p| planned_json(&p.into(), p.imported.is_some()))
            .collect();
        changes_of = changes.iter().map(change_json).collect();
        described = changes.iter().map(describe).collect();
        let missing: Vec<_> = resolution.missing().collect();
        download = (missing.len(), missing.iter().map(|p| p.archive.size).sum());
    }
    let pending = !changes_of.is_empty();
    if json {
        print_json(&json!({
            "root": root.as_str(), "commit": current.to_string(), "dry_run": true,
            "up_to_date": !pending, "changes": changes_of, "packages": planned,
            "download": {"archives": download.0, "bytes": download.1},
        }))?;
    } else if pending {
        println!(
            "{root}: {} pending (dry run: nothing downloaded or written)",
            described.len()
        );
        for line in &described {
            println!("  {line}");
        }
        if download.0 > 0 {
            println!(
                "would download {} archives ({})",
                download.0,
                bytes(download.1)
            );
        }
    } else {
        println!(
            "{root} is up to date: {} packages, commit {current}",
            old.packages.len()
        );
    }
    Ok(if pending {
        ExitCode::from(PENDING)
    } else {
        ExitCode::SUCCESS
    })
}

/// Exit status of `upgrade --dry-run` when the upgrade would change the root.
const PENDING: u8 = 10;

/// What [`select`] did beyond choosing: resolving and downloading, for `--from`.
#[derive(Default)]
struct Resolved {
    /// Whether the packages were resolved from repositories at all.
    from_repos: bool,
    packages: usize,
    downloaded: usize,
    downloaded_bytes: u64,
    problems: Vec<String>,
}

/// The packages a recipe means: resolved from its repositories, or imported ones
/// named exactly.
fn select(
    store: &Store,
    recipe: &Recipe,
    json: bool,
) -> Result<(Vec<(PackageId, Package)>, Resolved)> {
    if recipe.from.is_empty() {
        let mut packages = select_imported(store, &recipe.specs)?;
        if !recipe.no_configure {
            packages = control_from_cache(store, packages)?;
        }
        return Ok((packages, Resolved::default()));
    }
    let progress = Bars::new(json);
    let provided = provide(store, recipe, &fetcher()?, &progress);
    progress.bar.finish_and_clear();
    let provided = provided?;
    let resolved = Resolved {
        from_repos: true,
        packages: provided.packages.len(),
        downloaded: provided.downloaded,
        downloaded_bytes: provided.downloaded_bytes,
        problems: provided.problems,
    };
    if !json {
        println!(
            "resolved {} packages, {} downloaded ({})",
            resolved.packages,
            resolved.downloaded,
            bytes(resolved.downloaded_bytes)
        );
    }
    for problem in &resolved.problems {
        eprintln!("warning: {problem}");
    }
    Ok((provided.packages, resolved))
}

/// What a command knows about the commit it is about to make, beyond the request.
struct Plan<'a> {
    /// What the reflog calls it: `assemble`, or `upgrade` (a root made again from its
    /// own recipe).
    operation: &'static str,
    /// The commit's subject line.
    subject: Option<String>,
    /// The root's commit before.
    previous: Option<Commit>,
    /// How the packages were resolved.
    resolved: Resolved,
    /// How to configure the packages.
    configure: &'a ConfigureArgs,
}

/// Assembles (configuring, with a progress bar) and prints the result line, with notes
/// on overwrites and configuring.
fn commit(store: &Store, mut req: Request, plan: Plan, json: bool) -> Result<ExitCode> {
    let label = req.root.to_string();
    req.subject = plan.subject;
    let (previous, resolved) = (plan.previous, plan.resolved);
    let settings = configure::Settings {
        worker: std::env::current_exe().context("finding the canopy executable")?,
        timeout: plan.configure.configure_timeout,
        source_date_epoch: source_date_epoch()?,
        unknown_owner_root: req.recipe.unknown_owner_root,
    };
    let progress = Bars::new(json);
    let started = std::time::Instant::now();
    let done = assemble_as(store, &req, Some((&settings, &progress)), plan.operation);
    progress.bar.finish_and_clear();
    let done = done?;
    for warning in &done.warnings {
        eprintln!("warning: {warning}");
    }
    if let Configuration::Done { configured, .. } = &done.configuration {
        for note in &configured.notes {
            eprintln!("warning: {note}");
        }
    }
    let changes = match &previous {
        Some(p) => diff::packages(&p.body.packages, &done.commit.body.packages),
        None => Vec::new(),
    };
    if json {
        return print_json(&report_json(&Report {
            commit: &done.commit,
            id: done.id,
            previous: previous.as_ref(),
            changes: &changes,
            stats: done.stats,
            resolved: &resolved,
            written: done.written,
            overwritten: &done.overwritten,
            configuration: Some(&done.configuration),
        }))
        .map(|()| ExitCode::SUCCESS);
    }
    for path in &done.overwritten {
        eprintln!("note: {path} overwritten by a later package");
    }
    configured_lines(
        &label,
        &done.configuration,
        done.commit.body.packages.len(),
        started,
    );
    if !done.written {
        println!(
            "{label} is unchanged: commit {} already has this content ({} packages); nothing written",
            done.id,
            done.commit.body.packages.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if matches!(done.configuration, Configuration::Off) {
        scripts_note(&done.commit.body);
    }
    println!(
        "assembled {label}: commit {} ({} packages, {} new objects, {} new)",
        done.id,
        done.commit.body.packages.len(),
        done.stats.new_objects,
        bytes(done.stats.new_bytes)
    );
    Ok(ExitCode::SUCCESS)
}

/// What `assemble` and `upgrade` report.
struct Report<'a> {
    /// The root's commit now.
    commit: &'a Commit,
    id: CommitId,
    /// Its commit before the command.
    previous: Option<&'a Commit>,
    changes: &'a [PackageChange<'a>],
    stats: TxnStats,
    resolved: &'a Resolved,
    /// Whether a commit was written (not when nothing would change).
    written: bool,
    overwritten: &'a [String],
    /// What configuring did, when the command assembled.
    configuration: Option<&'a Configuration>,
}

/// The JSON document `assemble` and `upgrade` print (see the README).
fn report_json(r: &Report) -> Value {
    let b = &r.commit.body;
    let configured = matches!(r.configuration, Some(Configuration::Done { .. }));
    let scripts: Vec<&str> = b
        .packages
        .iter()
        .filter(|p| !configured && !p.scripts.is_empty())
        .map(|p| p.name.as_str())
        .collect();
    let configure = match r.configuration {
        None | Some(Configuration::Off) => Value::Null,
        Some(Configuration::Skipped(reason)) => json!({"configured": false, "reason": reason}),
        Some(Configuration::Done { configured, layer }) => json!({
            "configured": true,
            "scripts": configured.packages.iter().map(|p| p.scripts.len()).sum::<usize>(),
            "source_date_epoch": configured.source_date_epoch,
            "layer": {"added": layer.added, "changed": layer.changed, "removed": layer.removed,
                      "new_bytes": layer.new_bytes},
            "stripped": configured.stripped.len(),
        }),
    };
    json!({
        "root": b.root.as_str(), "commit": r.id.to_string(), "tree": b.tree.to_string(),
        "parent": b.parent.map(|p| p.to_string()), "generation": b.generation,
        "previous": r.previous.map(|c| c.id().to_string()), "written": r.written,
        "up_to_date": !r.written, "dry_run": false,
        "packages": b.packages.iter().map(|p| planned_json(&p.into(), true)).collect::<Vec<_>>(),
        "changes": r.changes.iter().map(change_json).collect::<Vec<_>>(),
        "new_objects": r.stats.new_objects, "new_bytes": r.stats.new_bytes,
        "overwritten": r.overwritten, "scripts_not_run": scripts, "configure": configure,
        "resolved": r.resolved.from_repos.then(|| json!({
            "packages": r.resolved.packages, "downloaded": r.resolved.downloaded,
            "downloaded_bytes": r.resolved.downloaded_bytes, "problems": r.resolved.problems,
        })),
    })
}

/// A package of a root (or of an upgrade's plan) in JSON.
fn planned_json(p: &Listed, imported: bool) -> Value {
    json!({
        "name": p.name, "version": p.version, "arch": p.arch,
        "archive": p.archive.to_string(), "imported": imported,
    })
}

/// A package change in JSON, as `roots diff --json` has it.
pub(super) fn change_json(c: &PackageChange) -> Value {
    match c {
        PackageChange::Added(p) => {
            json!({"change": "added", "name": p.name, "arch": p.arch, "new": p.version})
        }
        PackageChange::Removed(p) => {
            json!({"change": "removed", "name": p.name, "arch": p.arch, "old": p.version})
        }
        PackageChange::Changed { old, new } => json!({
            "change": "changed", "name": new.name, "arch": new.arch,
            "old": old.version, "new": new.version,
        }),
    }
}

/// What configuring did, for people: how many scripts ran, or why none did.
fn configured_lines(
    label: &str,
    configuration: &Configuration,
    packages: usize,
    started: std::time::Instant,
) {
    match configuration {
        Configuration::Off => {}
        Configuration::Skipped(reason) => eprintln!("note: not configured: {reason}"),
        Configuration::Done { configured, layer } => {
            let ran: usize = configured.packages.iter().map(|p| p.scripts.len()).sum();
            println!(
                "configured {packages} packages ({ran} scripts ran) in {:.1} s; the scripts added {}, changed {} and removed {} paths ({} new)",
                started.elapsed().as_secs_f64(),
                layer.added,
                layer.changed,
                layer.removed,
                bytes(layer.new_bytes)
            );
            if !configured.stripped.is_empty() {
                println!(
                    "left out {} host-specific paths (machine id, keys, logs…: see `canopy roots log {label}`)",
                    configured.stripped.len()
                );
            }
        }
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, when set.
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(None),
    }
}

/// Says which packages carried maintainer scripts, which were not run.
fn scripts_note(body: &CommitBody) {
    let with: Vec<&str> = body
        .packages
        .iter()
        .filter(|p| !p.scripts.is_empty())
        .map(|p| p.name.as_str())
        .collect();
    if !with.is_empty() {
        eprintln!(
            "note: {} of {} packages have maintainer scripts, which were not run: {}",
            with.len(),
            body.packages.len(),
            with.join(" ")
        );
    }
}

/// "2 packages changed, 1 added, 0 removed".
fn summary(changes: &[PackageChange]) -> String {
    let count = |f: fn(&PackageChange) -> bool| changes.iter().filter(|c| f(c)).count();
    let changed = count(|c| matches!(c, PackageChange::Changed { .. }));
    let added = count(|c| matches!(c, PackageChange::Added(_)));
    let removed = count(|c| matches!(c, PackageChange::Removed(_)));
    let plural = if changed == 1 { "" } else { "s" };
    format!("{changed} package{plural} changed, {added} added, {removed} removed")
}

/// One package change as a line: `libssl3 3.0.17 → 3.0.20`, `+ foo 1.0`, `- bar 2.1`.
pub(super) fn describe(change: &PackageChange) -> String {
    match change {
        PackageChange::Added(p) => format!("+ {} {}", p.name, p.version),
        PackageChange::Removed(p) => format!("- {} {}", p.name, p.version),
        PackageChange::Changed { old, new } if old.version == new.version => {
            format!(
                "~ {} {} (rebuilt: other archive, same version)",
                new.name, new.version
            )
        }
        PackageChange::Changed { old, new } => {
            format!("~ {} {} → {}", new.name, old.version, new.version)
        }
    }
}

/// Progress of resolving and downloading: a spinner with the step, then a byte bar.
struct Bars {
    bar: ProgressBar,
}

impl Bars {
    /// A spinner on stderr; hidden with `--json`, where only the document is wanted.
    fn new(json: bool) -> Bars {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {wide_msg}").expect("static template"),
        );
        if json || crate::output::quiet() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        } else {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        Bars { bar }
    }
}

impl configure::Progress for Bars {
    fn step(&self, message: &str) {
        self.bar.set_message(format!("configuring: {message}"));
    }

    /// With -v, the scripts' output goes to stderr as it comes.
    fn output(&self, line: &str) {
        if tracing::enabled!(tracing::Level::INFO) {
            self.bar.suspend(|| eprintln!("| {line}"));
        }
    }
}

impl Progress for Bars {
    fn step(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }

    fn downloads(&self, archives: usize, total: u64) {
        self.bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(format!(
            "downloading {archives} archives ({})",
            bytes(total)
        ));
    }

    fn downloaded(&self, n: u64) {
        self.bar.inc(n);
    }

    fn imported(&self, label: &str) {
        self.bar.set_message(format!("imported {label}"));
    }
}
