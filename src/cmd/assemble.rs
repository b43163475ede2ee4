//! `canopy assemble` and `canopy upgrade`.

use super::{bytes, fetcher, head, open, root_name};
use crate::cli::{AssembleArgs, UpgradeArgs};
use anyhow::{Context, Result};
use canopy_protocol::{CommitBody, Package, PackageId, RootName};
use canopy_server::assemble::{
    Recipe, Request, assemble, package_refs, select_imported, unchanged,
};
use canopy_server::diff::{self, PackageChange};
use canopy_server::repo::provide::{Progress, provide};
use canopy_server::{Access, Store};
use indicatif::{ProgressBar, ProgressStyle};
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
    };
    let store = open(store, Access::Write)?;
    let packages = select(&store, &recipe)?;
    commit(&store, root, recipe, packages, args.message)
}

pub fn upgrade(store: &Path, args: UpgradeArgs) -> Result<ExitCode> {
    let root = root_name(&args.root)?;
    let store = open(store, Access::Write)?;
    let current = head(&store, &root)?;
    let old = store.commit(&current)?.body;
    if let Some(image) = super::image::of_commit(&old)? {
        anyhow::bail!(
            "root {root} was imported from image {}: import the newer image to upgrade it (canopy import oci LAYOUT --name {root}, or canopy import docker-archive FILE --name {root})",
            image.manifest
        );
    }
    let recipe = Recipe::of_commit(&old)
        .with_context(|| format!("reading how root {root} was made (commit {current})"))?;
    let packages = select(&store, &recipe)?;
    if unchanged(&old, &packages) {
        println!(
            "{root} is up to date: {} packages, commit {current}",
            old.packages.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let new = package_refs(&packages);
    let changes = diff::packages(&old.packages, &new);
    println!("{}", summary(&changes));
    for change in &changes {
        println!("  {}", describe(change));
    }
    if args.dry_run {
        println!("dry run: no commit written");
        return Ok(ExitCode::SUCCESS);
    }
    let subject = args
        .message
        .unwrap_or_else(|| format!("upgrade {root}: {}", summary(&changes)));
    commit(&store, root, recipe, packages, Some(subject))
}

/// The packages a recipe means: resolved from its repositories, or imported ones
/// named exactly.
fn select(store: &Store, recipe: &Recipe) -> Result<Vec<(PackageId, Package)>> {
    if recipe.from.is_empty() {
        return Ok(select_imported(store, &recipe.specs)?);
    }
    let progress = Bars::new();
    let provided = provide(store, recipe, &fetcher()?, &progress);
    progress.bar.finish_and_clear();
    let provided = provided?;
    println!(
        "resolved {} packages, {} downloaded ({})",
        provided.packages.len(),
        provided.downloaded,
        bytes(provided.downloaded_bytes)
    );
    for problem in &provided.problems {
        eprintln!("warning: {problem}");
    }
    Ok(provided.packages)
}

/// Assembles and prints the result line, with notes on overwrites and scripts.
fn commit(
    store: &Store,
    root: RootName,
    recipe: Recipe,
    packages: Vec<(PackageId, Package)>,
    subject: Option<String>,
) -> Result<ExitCode> {
    let label = root.to_string();
    let done = assemble(
        store,
        &Request {
            root,
            recipe,
            packages,
            subject,
        },
    )?;
    for path in &done.overwritten {
        eprintln!("note: {path} overwritten by a later package");
    }
    scripts_note(&done.commit.body);
    println!(
        "assembled {label}: commit {} ({} packages, {} new objects, {} new)",
        done.id,
        done.commit.body.packages.len(),
        done.stats.new_objects,
        bytes(done.stats.new_bytes)
    );
    Ok(ExitCode::SUCCESS)
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
    fn new() -> Bars {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {wide_msg}").expect("static template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Bars { bar }
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
