//! `canopy roots list|log|rollback`.

use super::{find_in_log, head, open, print_json, root_name, time};
use anyhow::{Context, Result};
use canopy_protocol::CommitId;
use canopy_server::Access;
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
    let mut next = Some(head(&store, &root)?);
    let mut items = Vec::new();
    while let Some(id) = next {
        let c = store.commit(&id)?;
        let b = &c.body;
        if json {
            let packages: Vec<_> = b
                .packages
                .iter()
                .map(|p| json!({"name": p.name, "version": p.version, "arch": p.arch, "archive": p.archive.to_string()}))
                .collect();
            items.push(json!({
                "commit": id.to_string(), "parent": b.parent.map(|p| p.to_string()), "timestamp": b.timestamp,
                "subject": b.subject, "requested": b.requested, "packages": packages,
            }));
        } else {
            println!(
                "commit {id}\ndate   {}\n\n    {}\n",
                time(b.timestamp),
                b.subject
            );
            for p in &b.packages {
                println!("    {} {} {}", p.name, p.version, p.arch);
            }
            println!();
        }
        next = b.parent;
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
        Some(prefix) => find_in_log(&store, &root, current, prefix)?,
        None => store
            .commit(&current)?
            .body
            .parent
            .with_context(|| format!("root {root} has no earlier commit to roll back to"))?,
    };
    let mut txn = store.begin()?;
    txn.set_root(&root, target);
    txn.commit()?;
    println!("{root}: now at {target} (was {current})");
    Ok(ExitCode::SUCCESS)
}
