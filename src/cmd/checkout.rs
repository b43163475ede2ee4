//! `canopy checkout`.

use super::{find_in_log, head, open, root_name};
use crate::cli::CheckoutArgs;
use anyhow::Result;
use canopy_server::Access;
use canopy_server::checkout::{Options, checkout};
use std::path::Path;
use std::process::ExitCode;

pub fn run(store: &Path, args: CheckoutArgs) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let root = root_name(&args.root)?;
    let id = match &args.commit {
        Some(prefix) => find_in_log(&store, &root, prefix)?,
        None => head(&store, &root)?,
    };
    let commit = store.commit(&id)?;
    commit.verify(&store.verifying_key()?)?;
    let r = checkout(
        &store,
        &commit.body.tree,
        &args.dir,
        Options {
            hardlink: args.hardlink,
        },
    )?;
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
    if r.copied_for_metadata > 0 {
        println!(
            "note: {} files copied: mode, owner or xattrs differ from the store's object file",
            r.copied_for_metadata
        );
    }
    if r.cross_device {
        println!(
            "note: {} is on another filesystem than the store: files were copied",
            args.dir.display()
        );
    }
    if r.no_local_objects {
        println!("note: the store's objects are not files on this machine: files were copied");
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
