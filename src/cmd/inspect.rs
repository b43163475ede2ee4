//! `canopy roots show`, `canopy ls`, `canopy cat`, `canopy owner`: a root's commit,
//! directories, files and their origin, read from the store without mounting.

use super::{bytes, open, print_json, root_at, time};
use crate::cli::{CatArgs, LsArgs, OwnerArgs};
use anyhow::{Context, Result, bail};
use canopy_protocol::{Entry, EntryKind, Meta, PackageRef};
use canopy_server::Access;
use canopy_server::inspect::{self, Follow, Origin};
use canopy_server::maker::Maker;
use serde_json::{Value, json};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

pub fn show(store: &Path, spec: &str, as_json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let (at, id) = root_at(&store, spec)?;
    let commit = store.commit(&id)?;
    let b = &commit.body;
    let signer = hex(&commit.signer);
    let verified = commit.verify(&store.verifying_key()?).is_ok();
    let current = super::head(&store, &at.root)? == id;
    let usage = inspect::usage(&store, &b.tree)?;
    if as_json {
        return print_json(&json!({
            "root": at.root.as_str(), "commit": id.to_string(), "tree": b.tree.to_string(),
            "parent": b.parent.map(|p| p.to_string()), "generation": b.generation,
            "current": current, "signer": signer, "signature_ok": verified,
            "timestamp": b.timestamp, "time": time(b.timestamp), "subject": b.subject,
            "requested": b.requested, "options": b.options,
            "packages": b.packages.iter().map(package_json).collect::<Vec<_>>(),
            "extensions": b.extensions.keys().collect::<Vec<_>>(),
            "files": usage.files, "dirs": usage.dirs, "symlinks": usage.symlinks,
            "special": usage.specials, "size": usage.bytes, "blobs": usage.blobs,
            "blob_size": usage.blob_bytes,
        }))
        .map(|()| ExitCode::SUCCESS);
    }
    let parent = b
        .parent
        .map_or("(none: the root's first commit)".into(), |p| p.to_string());
    let whose = if verified {
        "this store's key"
    } else {
        "NOT this store's key: `canopy fsck` reports it"
    };
    let state = if current { ", current" } else { "" };
    println!("root       {}", at.root);
    println!("commit     {id} (generation {}{state})", b.generation);
    println!("tree       {}", b.tree);
    println!("parent     {parent}");
    println!("signer     {signer} ({whose})");
    println!("date       {}", time(b.timestamp));
    println!("subject    {}", b.subject);
    let options = if b.options.is_empty() {
        String::new()
    } else {
        format!(" ({})", b.options.join(", "))
    };
    println!("requested  {}{options}", b.requested.join(" "));
    println!(
        "content    {} files, {} dirs, {} symlinks, {} special; {} ({} distinct contents, {})",
        usage.files,
        usage.dirs,
        usage.symlinks,
        usage.specials,
        bytes(usage.bytes),
        usage.blobs,
        bytes(usage.blob_bytes)
    );
    if !b.extensions.is_empty() {
        let keys: Vec<&str> = b.extensions.keys().map(String::as_str).collect();
        println!("extensions {}", keys.join(" "));
    }
    println!("packages   {}", b.packages.len());
    for p in &b.packages {
        println!("    {}", super::package_line(&p.name, &p.version, &p.arch));
    }
    Ok(ExitCode::SUCCESS)
}

fn package_json(p: &PackageRef) -> Value {
    json!({
        "name": p.name, "version": p.version, "arch": p.arch, "archive": p.archive.to_string(),
        "package": p.package.to_string(), "scripts": p.scripts,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn ls(store: &Path, args: LsArgs) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let (at, id) = root_at(&store, &args.root)?;
    let tree = store.commit(&id)?.body.tree;
    // As `ls`: `ls LINK` lists the directory a link points to, `ls -l LINK` shows the
    // link itself, `ls -l LINK/` the directory again.
    let path = args.path.as_os_str().as_bytes();
    let follow = if !args.long || path.ends_with(b"/") {
        Follow::Last
    } else {
        Follow::NotLast
    };
    let found =
        inspect::lookup(&store, &tree, path, follow).with_context(|| format!("in root {at}"))?;
    let entries = inspect::list(&store, &found)?;
    if args.json.json {
        let items: Vec<Value> = entries.iter().map(entry_json).collect();
        return print_json(&json!(items)).map(|()| ExitCode::SUCCESS);
    }
    for e in &entries {
        if args.long {
            println!("{}", long_line(e));
        } else {
            println!("{}", e.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The word for an entry's kind in JSON.
fn kind_word(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::File { .. } => "file",
        EntryKind::Dir { .. } => "dir",
        EntryKind::Symlink { .. } => "symlink",
        EntryKind::CharDevice { .. } => "char",
        EntryKind::BlockDevice { .. } => "block",
        EntryKind::Fifo => "fifo",
        EntryKind::Socket => "socket",
    }
}

fn entry_json(e: &Entry) -> Value {
    let mut v = json!({
        "name": String::from_utf8_lossy(e.name.as_bytes()), "kind": kind_word(&e.kind),
        "mode": format!("{:04o}", e.meta.mode), "uid": e.meta.uid, "gid": e.meta.gid,
        "xattrs": e.meta.xattrs.iter().map(|(n, _)| String::from_utf8_lossy(n)).collect::<Vec<_>>(),
    });
    let extra = match &e.kind {
        EntryKind::File { size, blob } => json!({"size": size, "blob": blob.to_string()}),
        EntryKind::Dir { tree } => json!({"tree": tree.to_string()}),
        EntryKind::Symlink { target } => json!({"target": String::from_utf8_lossy(target)}),
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            json!({"major": major, "minor": minor})
        }
        EntryKind::Fifo | EntryKind::Socket => json!({}),
    };
    if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
        v.extend(extra);
    }
    v
}

/// `-rwsr-xr-x`: the type letter and permission bits as `ls -l` shows them.
fn mode_string(kind: &EntryKind, meta: &Meta) -> String {
    let m = u32::from(meta.mode);
    let mut s = String::with_capacity(10);
    s.push(match kind {
        EntryKind::File { .. } => '-',
        EntryKind::Dir { .. } => 'd',
        EntryKind::Symlink { .. } => 'l',
        EntryKind::CharDevice { .. } => 'c',
        EntryKind::BlockDevice { .. } => 'b',
        EntryKind::Fifo => 'p',
        EntryKind::Socket => 's',
    });
    for (shift, special, set, unset) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, m & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn long_line(e: &Entry) -> String {
    let size = match &e.kind {
        EntryKind::File { size, .. } => size.to_string(),
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            format!("{major}, {minor}")
        }
        EntryKind::Symlink { target } => target.len().to_string(),
        _ => "0".into(),
    };
    let target = match &e.kind {
        EntryKind::Symlink { target } => format!(" -> {}", canopy_protocol::Escaped(target)),
        _ => String::new(),
    };
    format!(
        "{} {:>5} {:>5} {:>10} {}{target}",
        mode_string(&e.kind, &e.meta),
        e.meta.uid,
        e.meta.gid,
        size,
        e.name
    )
}

pub fn cat(store: &Path, args: &CatArgs) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let (at, id) = root_at(&store, &args.root)?;
    let tree = store.commit(&id)?.body.tree;
    let found = inspect::lookup(
        &store,
        &tree,
        args.path.as_os_str().as_bytes(),
        Follow::Last,
    )
    .with_context(|| format!("in root {at}"))?;
    let EntryKind::File { blob, .. } = found.kind else {
        bail!(
            "{} in root {at} is a {}, not a file{}",
            found.display(),
            found.kind.label(),
            if matches!(found.kind, EntryKind::Dir { .. }) {
                format!(" (list it with `canopy ls {at} {}`)", found.display())
            } else {
                String::new()
            }
        );
    };
    let mut file = inspect::content(&store, &blob)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading object {blob} of {}", found.display()))?;
        if n == 0 {
            break;
        }
        crate::output::bytes(&buf[..n]);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn owner(store: &Path, args: &OwnerArgs) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let (at, id) = root_at(&store, &args.root)?;
    let body = store.commit(&id)?.body;
    let owner = inspect::owner(&store, &body, args.path.as_os_str().as_bytes())
        .with_context(|| format!("in root {at}"))?;
    let path = owner.found.display();
    let label = |i: &usize| {
        let p = &body.packages[*i];
        if p.arch.is_empty() {
            format!("{} {}", p.name, p.version)
        } else {
            format!("{} {} ({})", p.name, p.version, p.arch)
        }
    };
    let (origin, packages, replaced, makers): (&str, &[usize], &[usize], &[Maker]) =
        match &owner.origin {
            Origin::Packages(p) => ("package", p, &[], &[]),
            Origin::Configuration { replaced, makers } => ("configuration", &[], replaced, makers),
            Origin::Unknown => ("unknown", &[], &[], &[]),
        };
    if args.json.json {
        let pick = |list: &[usize]| -> Vec<Value> {
            list.iter()
                .map(|i| package_json(&body.packages[*i]))
                .collect()
        };
        let made_by: Vec<Value> = makers
            .iter()
            .map(|m| match m {
                Maker::Script { package, script } => json!({
                    "what": "script", "package": package_json(&body.packages[*package]),
                    "script": script,
                }),
                Maker::Database => json!({"what": "package database"}),
            })
            .collect();
        print_json(&json!({
            "root": at.root.as_str(), "commit": id.to_string(), "path": path,
            "kind": kind_word(&owner.found.kind), "origin": origin,
            "packages": pick(packages), "replaced": pick(replaced), "made_by": made_by,
        }))?;
    } else if let Origin::Packages(p) = &owner.origin {
        println!(
            "{path}: {}",
            p.iter().map(label).collect::<Vec<_>>().join(", ")
        );
    } else if let Origin::Configuration { replaced, makers } = &owner.origin {
        let mut said = Vec::new();
        if !makers.is_empty() {
            let who: Vec<String> = makers
                .iter()
                .map(|m| match m {
                    Maker::Script { package, script } => {
                        format!("{}'s {script}", body.packages[*package].name)
                    }
                    Maker::Database => "the package database, written by configuring".into(),
                })
                .collect();
            let names = if makers.iter().any(|m| matches!(m, Maker::Script { .. })) {
                ", which names it"
            } else {
                ""
            };
            said.push(format!("made by {}{names}", who.join(", ")));
        } else if replaced.is_empty() {
            said.push("made when the packages were configured".into());
        }
        if !replaced.is_empty() {
            said.push(format!(
                "changed from what {} ships",
                replaced.iter().map(label).collect::<Vec<_>>().join(", ")
            ));
        }
        println!("{path}: configuration ({})", said.join("; "));
    } else {
        println!("{path}: no package ships it");
    }
    Ok(match owner.origin {
        Origin::Unknown => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}
