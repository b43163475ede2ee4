//! `canopy roots list|log|rollback|diff`.

use super::{find_in_log, head, open, print_json, root_name, time};
use anyhow::{Context, Result};
use canopy_protocol::{CommitId, Escaped};
use canopy_server::Access;
use canopy_server::diff::{self, PackageChange};
use canopy_server::view::history;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn list(store: &Path, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let mut items = Vec::new();
    for (name, id) in store.roots()? {
        let c = store.commit(&id)?;
        items.push(json!({
            "name": name.as_str(), "commit": id.to_string(), "timestamp": c.body.timestamp,
            "subject": c.body.subject, "packages": c.body.packages.len(),
        }));
        if !json {
            println!(
                "{:<24} {}  {}  {} packages",
                name,
                id.0.short(),
                time(c.body.timestamp),
                c.body.packages.len()
            );
        }
    }
    if json {
        print_json(&json!(items))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn log(store: &Path, root: &str, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let root = root_name(root)?;
    let mut items = Vec::new();
    for entry in history::log(&store, head(&store, &root)?) {
        let (id, c) = entry?;
        let b = &c.body;
        let image = super::image::of_commit(b)
            .with_context(|| format!("reading commit {id} of root {root}"))?;
        if json {
            let packages: Vec<_> = b
                .packages
                .iter()
                .map(|p| json!({"name": p.name, "version": p.version, "arch": p.arch, "archive": p.archive.to_string(), "scripts": p.scripts}))
                .collect();
            items.push(json!({
                "commit": id.to_string(), "parent": b.parent.map(|p| p.to_string()), "timestamp": b.timestamp,
                "subject": b.subject, "requested": b.requested, "options": b.options, "packages": packages,
                "image": image,
            }));
        } else {
            println!(
                "commit {id}\ndate   {}\n\n    {}\n",
                time(b.timestamp),
                b.subject
            );
            let options = if b.options.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.options.join(", "))
            };
            match &image {
                Some(image) => {
                    for line in super::image::lines(image) {
                        println!("    {line}");
                    }
                }
                None => println!("    requested: {}{options}", b.requested.join(" ")),
            }
            for p in &b.packages {
                let scripts = if p.scripts.is_empty() {
                    String::new()
                } else {
                    format!("  scripts not run: {}", p.scripts.join(","))
                };
                println!("    {} {} {}{scripts}", p.name, p.version, p.arch);
            }
            println!();
        }
    }
    if json {
        print_json(&json!(items))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn rollback(store: &Path, root: &str, commit: Option<&str>) -> Result<ExitCode> {
    let store = open(store, Access::Write)?;
    let root = root_name(root)?;
    let current = head(&store, &root)?;
    let target: CommitId = match commit {
        Some(prefix) => find_in_log(&store, &root, prefix)?,
        None => store
            .commit(&current)?
            .body
            .parent
            .with_context(|| format!("root {root} has no earlier commit to roll back to"))?,
    };
    let mut txn = store.begin()?;
    txn.set_root(&root, Some(current), target);
    txn.commit()?;
    println!("{root}: now at {target} (was {current})");
    Ok(ExitCode::SUCCESS)
}

pub fn diff(
    store: &Path,
    root: &str,
    old: Option<&str>,
    new: Option<&str>,
    packages_only: bool,
    json: bool,
) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let root = root_name(root)?;
    let current = head(&store, &root)?;
    let new = match new {
        Some(prefix) => find_in_log(&store, &root, prefix)?,
        None => current,
    };
    let old = match old {
        Some(prefix) => find_in_log(&store, &root, prefix)?,
        None => store.commit(&new)?.body.parent.with_context(|| {
            format!("commit {new} of root {root} has no parent to compare with")
        })?,
    };
    let (a, b) = (store.commit(&old)?.body, store.commit(&new)?.body);
    let changes = diff::packages(&a.packages, &b.packages);
    let paths = if packages_only {
        Vec::new()
    } else {
        diff::trees(&store, &a.tree, &b.tree)?
    };
    if json {
        let packages: Vec<_> = changes
            .iter()
            .map(|c| match c {
                PackageChange::Added(p) => json!({"change": "added", "name": p.name, "arch": p.arch, "new": p.version}),
                PackageChange::Removed(p) => json!({"change": "removed", "name": p.name, "arch": p.arch, "old": p.version}),
                PackageChange::Changed { old, new } => json!({"change": "changed", "name": new.name, "arch": new.arch, "old": old.version, "new": new.version}),
            })
            .collect();
        let paths: Vec<_> = paths
            .iter()
            .map(|(c, p)| json!({"change": c.marker().to_string(), "path": String::from_utf8_lossy(p)}))
            .collect();
        print_json(&json!({
            "old": old.to_string(), "new": new.to_string(), "packages": packages, "paths": paths,
        }))?;
    } else {
        println!("{root}: {} → {}", old.0.short(), new.0.short());
        for c in &changes {
            println!("{}", super::assemble::describe(c));
        }
        for (c, p) in &paths {
            println!("{} {}", c.marker(), Escaped(p));
        }
    }
    Ok(ExitCode::SUCCESS)
}
