//! `canopy profile record|show|drop`: a root's access profile (see
//! [`canopy_protocol::profile`]). Recording runs the command as `canopy run` does,
//! through a view whose object reads are noted ([`Recording`]), then writes the profile
//! into a new signed commit of the same tree ([`canopy_server::profile::set`]).

use super::{open, print_json, root_at, root_name, time};
use crate::cli::{ProfileCommand, ProfileRecordArgs};
use anyhow::{Context, Result, bail};
use canopy_client::profile::Recording;
use canopy_client::run::{self, RunConfig, Source};
use canopy_protocol::profile::{self, MAX_PATHS, Profile};
use canopy_protocol::{RootName, TreeId};
use canopy_server::{Access, Store};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

/// Runs a `canopy profile` command.
pub fn run(store: &Path, command: ProfileCommand) -> Result<ExitCode> {
    match command {
        ProfileCommand::Record(args) => record(store, args),
        ProfileCommand::Show { root, json } => show(store, &root, json.json),
        ProfileCommand::Drop { root, json } => drop_profile(store, &root, json.json),
    }
}

/// `canopy profile record`: runs the command, then writes what it read.
fn record(store_path: &Path, args: ProfileRecordArgs) -> Result<ExitCode> {
    let root = root_name(&args.root)?;
    let source = super::run::store_source(store_path, &args.root, None)?;
    let Source::View {
        view,
        objects,
        commit,
        image,
    } = source
    else {
        bail!("root {root} is not in the store {}", store_path.display());
    };
    let tree = view
        .root(root.as_str())
        .with_context(|| format!("root {root}: no version shown"))?
        .tree;
    let recording = Arc::new(Recording::new(objects));
    let source = Source::View {
        view,
        objects: recording.clone(),
        commit,
        image,
    };
    let cfg = RunConfig {
        name: root.to_string(),
        image_name: root.to_string(),
        args: args.command.clone(),
        label: None,
        user: None,
        workdir: args.workdir.clone(),
        env: args
            .env
            .iter()
            .map(|e| super::run::env_var(e))
            .collect::<Result<_>>()?,
        hostname: root.to_string(),
        host_network: true,
        binds: Vec::new(),
        state: None,
        spc: false,
    };
    // With --json, stdout holds the JSON alone: the command writes to stderr.
    let stdout = args.json.json.then(StdoutToStderr::start).transpose()?;
    let code = run::run(&cfg, &source, &|_| {});
    drop(stdout);
    let code =
        code.with_context(|| format!("running {:?} in root {root}", args.command.join(" ")))?;
    if code != 0 {
        eprintln!(
            "canopy profile: the command exited with status {code}; the profile records what it \
             read until then"
        );
    }
    drop(source);
    let store = Arc::new(Store::open(store_path, Access::Unlocked)?);
    let trees = |t: &TreeId| store.tree(t).ok().map(Arc::new);
    let mut paths = profile::paths_of(&recording.read(), tree, &trees);
    paths.truncate(MAX_PATHS);
    let mut recorded = Profile {
        command: args.command.clone(),
        recorded: now(),
        recorded_in: commit.to_string(),
        paths,
        bytes: 0,
    };
    recorded.bytes = profile::plan(&recorded, tree, trees).bytes();
    drop(store);
    if recorded.paths.is_empty() {
        bail!(
            "{:?} read no file of root {root}: nothing to record",
            args.command.join(" ")
        );
    }
    let written = if args.dry_run {
        None
    } else {
        let store = open(store_path, Access::Write)?;
        Some(canopy_server::profile::set(&store, &root, Some(&recorded))?)
    };
    if args.json.json {
        print_json(&json!({
            "root": root.as_str(),
            "commit": written.as_ref().map(|w| w.id.to_string()),
            "previous": written.as_ref().map(|w| w.previous.to_string()),
            "written": written.as_ref().is_some_and(|w| w.written),
            "exit_status": code,
            "profile": profile_json(&recorded),
        }))?;
    } else {
        println!(
            "{root}: {} files ({}) read by {}",
            recorded.paths.len(),
            size(recorded.bytes),
            recorded.command.join(" ")
        );
        match &written {
            None => {
                for p in &recorded.paths {
                    println!("  {p}");
                }
                println!("(dry run: no commit written)");
            }
            Some(w) if w.written => println!(
                "{root}: now at {} (generation {}), with this profile; was {}",
                w.id, w.commit.body.generation, w.previous
            ),
            Some(w) => println!("{root}: commit {} has this profile already", w.id),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `canopy profile show`.
fn show(store: &Path, spec: &str, as_json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let (at, id) = root_at(&store, spec)?;
    let commit = store.commit(&id)?;
    let Some(found) = Profile::of(&commit.body.extensions) else {
        if as_json {
            print_json(
                &json!({"root": at.root.as_str(), "commit": id.to_string(), "profile": null}),
            )?;
        } else {
            println!(
                "{}: commit {id} has no access profile (canopy profile record {} -- COMMAND makes one)",
                at.root, at.root
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let p = found.with_context(|| format!("root {}: commit {id}", at.root))?;
    let plan = profile::plan(&p, commit.body.tree, |t| store.tree(t).ok().map(Arc::new));
    let files = plan.parts.iter().map(Vec::len).sum::<usize>() + plan.large.len();
    if as_json {
        return print_json(&json!({
            "root": at.root.as_str(),
            "commit": id.to_string(),
            "profile": profile_json(&p),
            "replay": {
                "files": files, "bytes": plan.bytes(),
                "parts": plan.parts.len(), "large": plan.large.len(),
            },
        }))
        .map(|()| ExitCode::SUCCESS);
    }
    println!("root       {}", at.root);
    println!("commit     {id}");
    println!("command    {}", p.command.join(" "));
    println!(
        "recorded   {} in commit {}",
        time(p.recorded),
        p.recorded_in
    );
    println!(
        "paths      {} ({} when recorded)",
        p.paths.len(),
        size(p.bytes)
    );
    println!(
        "replay     {files} files, {}: {} pack parts and {} large files",
        size(plan.bytes()),
        plan.parts.len(),
        plan.large.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `canopy profile drop`.
fn drop_profile(store: &Path, root: &str, as_json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Write)?;
    let root: RootName = root_name(root)?;
    let done = canopy_server::profile::set(&store, &root, None)?;
    if as_json {
        print_json(&json!({
            "root": root.as_str(), "commit": done.id.to_string(),
            "previous": done.previous.to_string(), "written": done.written,
        }))?;
    } else if done.written {
        println!(
            "{root}: now at {} (generation {}), without a profile; was {}",
            done.id, done.commit.body.generation, done.previous
        );
    } else {
        println!("{root}: commit {} has no profile; nothing written", done.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// A profile as JSON (the shape `canopy profile show --json` and `record --json` give).
fn profile_json(p: &Profile) -> serde_json::Value {
    json!({
        "command": p.command, "recorded": p.recorded, "time": time(p.recorded),
        "recorded_in": p.recorded_in, "paths": p.paths, "bytes": p.bytes,
    })
}

/// Standard output sent to standard error until dropped.
struct StdoutToStderr(std::os::fd::OwnedFd);

impl StdoutToStderr {
    fn start() -> Result<StdoutToStderr> {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        std::io::stdout().flush()?;
        // SAFETY: dup and dup2 on the standard descriptors; the copy is owned here.
        unsafe {
            let saved = libc::dup(1);
            if saved < 0 || libc::dup2(2, 1) < 0 {
                bail!(
                    "sending the command's output to stderr: {}",
                    std::io::Error::last_os_error()
                );
            }
            Ok(StdoutToStderr(std::os::fd::OwnedFd::from_raw_fd(saved)))
        }
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: puts the saved descriptor back as standard output.
        unsafe { libc::dup2(self.0.as_raw_fd(), 1) };
    }
}

/// `bytes` for people.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
