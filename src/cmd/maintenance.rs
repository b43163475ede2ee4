//! `canopy fsck` and `canopy gc`.

use super::{bytes, open, print_json};
use crate::cli::{FsckArgs, GcArgs};
use anyhow::{Result, bail};
use canopy_server::closure::Problem;
use canopy_server::{Access, fsck, gc, repair};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

fn problem_json(p: &Problem) -> serde_json::Value {
    json!({"kind": p.kind, "id": p.id.map(|i| i.to_string()), "detail": p.detail})
}

pub fn fsck(store: &Path, args: &FsckArgs) -> Result<ExitCode> {
    if args.repair {
        return repair(store, args);
    }
    let json = args.json.json;
    let store = open(store, Access::Read)?;
    // Every object is read and hashed: a bar shows how far (hidden with --json).
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} fsck: [{bar:30}] {pos}/{len} objects re-hashed")
            .expect("static template")
            .progress_chars("=> "),
    );
    if json || crate::output::quiet() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let result = fsck::fsck_with_progress(&store, &progress);
    bar.finish_and_clear();
    let r = result?;
    if json {
        let problems: Vec<_> = r.problems.iter().map(problem_json).collect();
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
                "fsck: {} objects are unreachable (no root, package or reflog entry uses them: a root's unconfigured trees, or an interrupted write); `canopy gc` removes them",
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

pub fn gc(store: &Path, args: &GcArgs) -> Result<ExitCode> {
    let store = open(store, Access::Write)?;
    let opts = gc::Options {
        dry_run: args.dry_run,
        reflog_grace: args.prune_reflog,
    };
    let r = gc::gc(&store, &opts)?;
    if args.json.json {
        let damaged: Vec<_> = r.damaged.iter().map(problem_json).collect();
        print_json(&json!({
            "dry_run": args.dry_run, "removed": r.removed, "freed": r.freed, "kept": r.kept,
            "kept_by": {
                "roots": r.kept_by_roots, "reflog": r.kept_by_reflog, "packages": r.kept_by_packages,
                "writers": r.kept_by_writers,
            },
            "reflog_bytes": r.reflog_bytes, "package_bytes": r.package_bytes,
            "prune_reflog_seconds": args.prune_reflog.as_secs(), "damaged": damaged,
            "link_farm": {"removed": r.farm_removed, "freed": r.farm_freed},
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let (removed, freed) = if args.dry_run {
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
    println!("  {} by roots and their history", r.kept_by_roots);
    if r.kept_by_reflog > 0 {
        println!(
            "  {} only by reflog entries younger than {} ({}; `--prune-reflog now` frees them)",
            r.kept_by_reflog,
            humantime::format_duration(args.prune_reflog),
            bytes(r.reflog_bytes)
        );
    }
    if r.kept_by_packages > 0 {
        println!(
            "  {} only by imported packages no root uses ({}; `canopy packages remove --unused` drops those packages)",
            r.kept_by_packages,
            bytes(r.package_bytes)
        );
    }
    if r.kept_by_writers > 0 {
        println!(
            "  {} only because writers on other machines are about to reference them (their leases)",
            r.kept_by_writers
        );
    }
    if r.farm_removed > 0 {
        println!(
            "  and {} link-farm files no checkout uses any more ({})",
            r.farm_removed,
            bytes(r.farm_freed)
        );
    }
    if !r.damaged.is_empty() {
        println!(
            "  {} damaged objects kept, for `canopy fsck --repair`",
            r.damaged.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn repair(store: &Path, args: &FsckArgs) -> Result<ExitCode> {
    // A mistyped --archives would otherwise be searched as an empty directory, and
    // objects that archive could restore reported as beyond repair.
    for dir in &args.archives {
        if !dir.is_dir() {
            bail!(
                "--archives {}: no such directory (give the directories that hold the .deb or .rpm archives, e.g. /var/cache/apt/archives)",
                dir.display()
            );
        }
    }
    let store = open(store, Access::Write)?.reimporting();
    let fetcher = super::fetcher()?;
    let sources = repair::Sources {
        fetcher: &fetcher,
        dirs: args.archives.clone(),
    };
    let r = repair::repair(&store, &sources)?;
    if args.json.json {
        let repaired: Vec<_> = r
            .repaired
            .iter()
            .map(|x| json!({"id": x.id.to_string(), "package": x.package, "source": x.source}))
            .collect();
        let unrepaired: Vec<_> = r
            .unrepaired
            .iter()
            .map(|x| {
                json!({
                    "id": x.id.to_string(), "kind": x.kind, "reason": x.reason,
                    "roots": x.roots.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                    "packages": x.packages,
                })
            })
            .collect();
        print_json(&json!({
            "problems_before": r.before, "problems_after": r.after,
            "repaired": repaired, "unrepaired": unrepaired,
            "link_farm_removed": r.farm_removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        }))?;
    } else {
        for path in &r.farm_removed {
            println!(
                "removed changed link-farm file {} (checkouts still linking it keep the changed content: check them out again)",
                path.display()
            );
        }
        for x in &r.repaired {
            println!("repaired {} ({}) from {}", x.id, x.package, x.source);
        }
        for x in &r.unrepaired {
            let roots: Vec<&str> = x.roots.iter().map(|r| r.as_str()).collect();
            println!(
                "not repaired: {} ({}): {}; used by roots: {}; packages: {}",
                x.id,
                x.kind,
                x.reason,
                if roots.is_empty() {
                    "none".into()
                } else {
                    roots.join(", ")
                },
                if x.packages.is_empty() {
                    "none".into()
                } else {
                    x.packages.join(", ")
                },
            );
        }
        println!(
            "fsck --repair: {} problems before, {} repaired, {} problems now",
            r.before,
            r.repaired.len(),
            r.after
        );
    }
    Ok(if r.after == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
