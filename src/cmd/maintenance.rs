//! `canopy fsck` and `canopy gc`.

use super::{bytes, open, print_json};
use anyhow::Result;
use canopy_server::{Access, fsck, gc};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn fsck(store: &Path, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let r = fsck::fsck(&store)?;
    if json {
        let problems: Vec<_> = r
            .problems
            .iter()
            .map(|p| json!({"kind": p.kind, "id": p.id.map(|i| i.to_string()), "detail": p.detail}))
            .collect();
        print_json(
            &json!({"objects": r.objects, "refs": r.refs, "unreachable": r.unreachable, "problems": problems}),
        )?;
    } else {
        for p in &r.problems {
            println!("{}: {}", p.kind, p.detail);
        }
        let verdict = if r.problems.is_empty() {
            "no problems".to_string()
        } else {
            format!("{} problems", r.problems.len())
        };
        println!(
            "fsck: {} objects verified, {} refs checked, {verdict}",
            r.objects, r.refs
        );
        if r.unreachable > 0 {
            println!(
                "fsck: {} objects are unreachable (left by an interrupted write); `canopy gc` removes them",
                r.unreachable
            );
        }
    }
    Ok(if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn gc(store: &Path, dry_run: bool, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Write)?;
    let r = gc::gc(&store, dry_run)?;
    if json {
        print_json(&json!({
            "dry_run": dry_run, "removed": r.removed, "freed": r.freed, "kept": r.kept,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let (removed, freed) = if dry_run {
        ("would remove", "would free")
    } else {
        ("removed", "freed")
    };
    println!(
        "gc: {removed} {} objects, {freed} {} bytes ({}); {} objects kept",
        r.removed,
        r.freed,
        bytes(r.freed),
        r.kept
    );
    Ok(ExitCode::SUCCESS)
}
