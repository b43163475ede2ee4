//! `canopy checkout`.

use super::{bytes, open, print_json, root_at};
use crate::cli::CheckoutArgs;
use anyhow::{Result, bail};
use canopy_server::Access;
use canopy_server::checkout::{Options, checkout};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn run(store: &Path, args: CheckoutArgs) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let spec = match (&args.commit, args.root.contains('@')) {
        (Some(_), true) => bail!("give the commit once: ROOT@COMMIT or --commit COMMIT"),
        (Some(c), false) => format!("{}@{c}", args.root),
        (None, _) => args.root.clone(),
    };
    let (at, id) = root_at(&store, &spec)?;
    let root = at.root;
    let commit = store.commit(&id)?;
    commit.verify(&store.verifying_key()?)?;
    // A large root takes a while: a spinner counts what is written (hidden with --json).
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} checking out {msg}: {pos} entries")
            .expect("static template"),
    );
    if args.json.json || crate::output::quiet() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    } else {
        bar.set_message(format!("{root} {} to {}", id.0.short(), args.dir.display()));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
    }
    let progress = |n: u64| bar.set_position(n);
    let result = checkout(
        &store,
        &commit.body.tree,
        &args.dir,
        Options {
            hardlink: args.hardlink,
            progress: Some(&progress),
        },
    );
    bar.finish_and_clear();
    let r = result?;
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if args.json.json {
        print_json(&json!({
            "root": root.as_str(), "commit": id.to_string(), "tree": commit.body.tree.to_string(),
            "dir": args.dir.display().to_string(), "files": r.files, "linked": r.linked,
            "farm_linked": r.farm_linked, "linked_bytes": r.linked_bytes,
            "copied": r.files - r.linked, "copied_for_metadata": r.copied_for_metadata,
            "cross_device": r.cross_device, "dirs": r.dirs, "symlinks": r.symlinks,
            "special": r.specials, "warnings": r.warnings,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "checked out {root} {} to {}: {} files ({} hard-linked, {} copied), {} dirs, {} symlinks, {} special",
        id.0.short(),
        args.dir.display(),
        r.files,
        r.linked,
        r.files - r.linked,
        r.dirs,
        r.symlinks,
        r.specials
    );
    if r.linked > 0 {
        println!(
            "{} hard-linked ({} of them through the link farm, as their mode or owner differ from the object's): shared with the store and every checkout of the same files",
            bytes(r.linked_bytes),
            r.farm_linked
        );
    }
    if r.copied_for_metadata > 0 {
        println!(
            "note: {} files copied: they carry xattrs, or the link farm could not be written",
            r.copied_for_metadata
        );
    }
    if r.cross_device {
        println!(
            "note: {} is on another filesystem than the store: files were copied",
            args.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
