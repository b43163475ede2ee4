//! `canopy roots list|log|rollback|diff`.

use super::{find_in_log, head, open, print_json, root_name, time};
use anyhow::{Context, Result};
use canopy_protocol::{CommitId, Escaped};
use canopy_server::Access;
use canopy_server::configure::{self, Configured, ScriptRun};
use canopy_server::diff;
use canopy_server::rollback::{self, Base};
use canopy_server::view::history;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn list(store: &Path, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let mut items = Vec::new();
    // A ref damaged on disk is named on stderr (with what to run), and the other roots
    // are listed still.
    for (name, id) in store.served_roots()? {
        let c = store.commit(&id)?;
        items.push(json!({
            "name": name.as_str(), "commit": id.to_string(), "timestamp": c.body.timestamp,
            "subject": c.body.subject, "packages": c.body.packages.len(),
        }));
        if !json {
            println!(
                "{:<24} {}  {}  {} packages",
                name.as_str(),
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

/// Roots whose ref is gone but whose reflog remains: what `roots rollback` can bring back.
pub fn removed(store: &Path, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let mut items = Vec::new();
    for root in store.logged_roots()? {
        if store.root_ref(&root)?.is_some() {
            continue;
        }
        let Some(gone) = store
            .reflog(&root)?
            .into_iter()
            .rev()
            .find(|l| l.applied && l.entry.new.is_none())
        else {
            continue;
        };
        let Some(commit) = gone.entry.old else {
            continue;
        };
        // After gc's grace period the versions are gone: nothing to bring back.
        let kept = store.has(&commit.0)?;
        items.push(json!({
            "name": root.as_str(), "commit": commit.to_string(), "removed_at": gone.entry.time,
            "user": gone.entry.user, "kept": kept,
        }));
        if !json {
            let state = if kept {
                format!("`canopy roots rollback {root}` brings it back")
            } else {
                "collected by gc".to_string()
            };
            println!(
                "{:<24} {}  removed {} by {}  ({state})",
                root.as_str(),
                commit.0.short(),
                time(gone.entry.time),
                Escaped(gone.entry.user.as_bytes())
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
        let configured = configured(b);
        if json {
            let packages: Vec<_> = b
                .packages
                .iter()
                .map(|p| json!({"name": p.name, "version": p.version, "arch": p.arch, "archive": p.archive.to_string(), "scripts": p.scripts}))
                .collect();
            items.push(json!({
                "commit": id.to_string(), "tree": b.tree.to_string(), "parent": b.parent.map(|p| p.to_string()),
                "timestamp": b.timestamp, "subject": b.subject, "requested": b.requested, "options": b.options,
                "packages": packages, "image": image, "configure": configured,
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
            println!("    tree: {}", b.tree);
            let ran: std::collections::HashMap<&str, &Vec<ScriptRun>> = configured
                .as_ref()
                .map(|c| {
                    c.packages
                        .iter()
                        .map(|p| (p.name.as_str(), &p.scripts))
                        .collect()
                })
                .unwrap_or_default();
            for p in &b.packages {
                let scripts = match ran.get(p.name.as_str()) {
                    Some(runs) => format!(
                        "  ran: {}",
                        runs.iter()
                            .map(|r| format!("{} {} ({})", r.script, r.args, r.status))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None if configured.is_none() && !p.scripts.is_empty() => {
                        format!("  scripts not run: {}", p.scripts.join(","))
                    }
                    None => String::new(),
                };
                println!(
                    "    {}{scripts}",
                    super::package_line(&p.name, &p.version, &p.arch)
                );
            }
            if let Some(c) = &configured {
                println!(
                    "    configured by {} with SOURCE_DATE_EPOCH={}",
                    c.format, c.source_date_epoch
                );
                for s in &c.stripped {
                    println!("    left out ({}, {}): {}", s.what, s.action, s.path);
                }
            }
            println!();
        }
    }
    if json {
        print_json(&json!(items))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn reflog(store: &Path, root: &str, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let root = root_name(root)?;
    let log = store.reflog(&root)?;
    if log.is_empty() {
        // The usual error for a root that never was, with its suggestions.
        head(&store, &root)?;
    }
    let id = |c: Option<CommitId>| c.map(|c| c.to_string());
    if json {
        let items: Vec<_> = log
            .iter()
            .rev()
            .map(|l| {
                let e = &l.entry;
                json!({
                    "time": e.time, "user": e.user, "op": e.op, "old": id(e.old),
                    "new": id(e.new), "applied": l.applied,
                })
            })
            .collect();
        print_json(&json!(items))?;
        return Ok(ExitCode::SUCCESS);
    }
    let short = |c: Option<CommitId>| c.map_or("-".to_string(), |c| c.0.short());
    for l in log.iter().rev() {
        let e = &l.entry;
        let note = if l.applied {
            ""
        } else {
            "  (interrupted: the ref did not move)"
        };
        println!(
            "{}  {:<10} {:<9} {} → {}{note}",
            time(e.time),
            // A log line is text anyone who could write the store wrote: shown escaped.
            Escaped(e.user.as_bytes()).to_string(),
            Escaped(e.op.as_bytes()).to_string(),
            short(e.old),
            short(e.new)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What configuring recorded in a commit, if it was configured.
fn configured(body: &canopy_protocol::CommitBody) -> Option<Configured> {
    let bytes = body.extensions.get(configure::EXTENSION)?;
    match serde_json::from_slice(bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("the commit's configure record does not parse: {e}");
            None
        }
    }
}

pub fn rollback(store: &Path, root: &str, commit: Option<&str>, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Write)?;
    let root = root_name(root)?;
    // A removed root comes back from the commit it had (its reflog knows it).
    let base = rollback::base(&store, &root)?;
    let target = match (commit, base) {
        (Some(prefix), _) => find_in_log(&store, &root, prefix)?,
        (None, Base::Head(current)) => rollback::previous_version(&store, &root, current)?,
        (None, Base::Removed(had)) => had,
    };
    let done = rollback::rollback(&store, &root, base, target)?;
    if json {
        print_json(&json!({
            "root": root.as_str(), "commit": done.id.to_string(),
            "restored": done.restored.to_string(), "previous": done.previous.to_string(),
            "written": done.written, "generation": done.commit.body.generation,
        }))?;
    } else if done.written {
        println!(
            "{root}: now at {} (generation {}), restoring {}; was {}",
            done.id, done.commit.body.generation, done.restored, done.previous
        );
    } else {
        println!(
            "{root}: commit {} already has the content of {}; nothing written",
            done.id, done.restored
        );
    }
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
        None => match store.commit(&new)?.body.parent {
            Some(parent) => parent,
            None => {
                // A root's first commit: nothing changed, and that is no error.
                if json {
                    print_json(&json!({
                        "old": null, "new": new.to_string(), "packages": [], "paths": [],
                    }))?;
                } else {
                    println!(
                        "{root}: commit {} is the root's first: nothing to compare it with \
                         (`canopy roots diff {root} OLD NEW` compares any two)",
                        new.0.short()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
        },
    };
    let (a, b) = (store.commit(&old)?.body, store.commit(&new)?.body);
    let changes = diff::packages(&a.packages, &b.packages);
    let paths = if packages_only {
        Vec::new()
    } else {
        diff::trees(&store, &a.tree, &b.tree)?
    };
    if json {
        let packages: Vec<_> = changes.iter().map(super::assemble::change_json).collect();
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
        // Say so when nothing differs: a header alone reads like output cut short.
        if changes.is_empty() && paths.is_empty() {
            if a.tree == b.tree {
                println!(
                    "no package or path differs: both commits have tree {}",
                    b.tree
                );
            } else if packages_only {
                println!("no package differs (paths were not compared: --packages)");
            } else {
                println!("no package or path differs");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
