//! `canopy assemble`.

use super::{bytes, open, root_name};
use crate::cli::AssembleArgs;
use anyhow::Result;
use canopy_server::Access;
use canopy_server::assemble::{Request, assemble};
use std::path::Path;
use std::process::ExitCode;

pub fn run(store: &Path, args: AssembleArgs) -> Result<ExitCode> {
    let req = Request {
        root: root_name(&args.root)?,
        specs: args
            .packages
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?,
        allow_overwrite: args.allow_overwrite,
        subtree: args.subtree,
        subject: args.message,
    };
    let store = open(store, Access::Write)?;
    let done = assemble(&store, &req)?;
    for path in &done.overwritten {
        eprintln!("note: {path} overwritten by a later package");
    }
    println!(
        "assembled {}: commit {} ({} packages, {} new objects, {} new)",
        req.root,
        done.id,
        done.commit.body.packages.len(),
        done.stats.new_objects,
        bytes(done.stats.new_bytes)
    );
    Ok(ExitCode::SUCCESS)
}
