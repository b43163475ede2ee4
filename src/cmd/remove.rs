//! `canopy roots remove` and `canopy packages remove`.

use super::{bytes, open, print_json, root_name, time};
use crate::cli::PackagesRemoveArgs;
use anyhow::Result;
use canopy_server::Access;
use canopy_server::packages::PackageSpec;
use canopy_server::remove::{self, Selection, Use};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn root(store: &Path, root: &str, dry_run: bool, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Write)?;
    let root = root_name(root)?;
    let r = remove::remove_root(&store, &root, dry_run)?;
    if json {
        print_json(&json!({
            "root": root.as_str(), "commit": r.commit.to_string(), "dry_run": dry_run,
            "removed": !dry_run, "unique_objects": r.unique_objects,
            "unique_bytes": r.unique_bytes,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} root {root} (at commit {}); {} objects ({}) only it uses go at a gc once its \
         reflog entries are older than the grace period (`canopy gc --prune-reflog now` for at once)",
        r.commit,
        r.unique_objects,
        bytes(r.unique_bytes)
    );
    if !dry_run {
        println!("`canopy roots rollback {root}` brings it back meanwhile");
    }
    Ok(ExitCode::SUCCESS)
}

/// How a root uses a package, in words.
fn describe(u: &Use) -> String {
    let mut parts = Vec::new();
    if u.current {
        parts.push("its current commit".to_string());
    }
    if u.history > 0 {
        parts.push(format!("{} older commits", u.history));
    }
    if let Some(until) = u.reflog_until {
        parts.push(format!("its reflog until {}", time(until)));
    }
    parts.join(", ")
}

pub fn packages(store: &Path, args: &PackagesRemoveArgs) -> Result<ExitCode> {
    let store = open(store, Access::Write)?;
    let mut results = Vec::new();
    if args.unused {
        results.extend(remove::remove_packages(
            &store,
            Selection::Unused,
            args.prune_reflog,
            args.dry_run,
        )?);
    }
    for spec in &args.packages {
        let spec: PackageSpec = spec.parse()?;
        results.extend(remove::remove_packages(
            &store,
            Selection::Spec(&spec),
            args.prune_reflog,
            args.dry_run,
        )?);
    }
    let refused = results.iter().filter(|r| !r.users.is_empty()).count();
    if args.json.json {
        let items: Vec<_> = results
            .iter()
            .map(|r| {
                let users: Vec<_> = r
                    .users
                    .iter()
                    .map(|(root, u)| {
                        json!({
                            "root": root.as_str(), "current": u.current, "history": u.history,
                            "reflog_until": u.reflog_until,
                        })
                    })
                    .collect();
                json!({
                    "name": r.package.name, "version": r.package.version, "arch": r.package.arch,
                    "package": r.id.to_string(), "archive": r.package.archive.to_string(),
                    "removed": r.users.is_empty() && !args.dry_run, "used_by": users,
                })
            })
            .collect();
        print_json(&json!({"dry_run": args.dry_run, "packages": items}))?;
    } else {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for r in &results {
            let p = &r.package;
            if r.users.is_empty() {
                println!(
                    "{verb} {}",
                    super::package_line(&p.name, &p.version, &p.arch)
                );
            } else {
                let users: Vec<String> = r
                    .users
                    .iter()
                    .map(|(root, u)| format!("{root} ({})", describe(u)))
                    .collect();
                eprintln!(
                    "refused: {} {} is used by {}",
                    p.name,
                    p.version,
                    users.join("; ")
                );
            }
        }
        let only_reflog = results.iter().any(|r| {
            !r.users.is_empty() && r.users.iter().all(|(_, u)| !u.current && u.history == 0)
        });
        if only_reflog {
            eprintln!(
                "(a package only the reflog uses can go now with `--prune-reflog now`; those roots can then no longer be rolled back to the versions that used it)"
            );
        }
        if results.is_empty() {
            println!("no package to remove: every imported package is used");
        } else if !args.dry_run && refused < results.len() {
            println!("their objects go at the next `canopy gc`, unless something else uses them");
        }
    }
    Ok(if refused > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
