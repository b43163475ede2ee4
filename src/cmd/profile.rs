//! `canopy profile record|show|drop`: a root's access profile (see
//! [`canopy_protocol::profile`]). Recording runs the command as `canopy run` does,
//! through a view whose object reads are noted ([`Recording`]), then writes the profile
//! into a new signed commit of the same tree ([`canopy_server::profile::set`]).

use super::{bytes as size, open, print_json, root_at, root_name, time};
use crate::cli::{ProfileCommand, ProfileRecordArgs};
use anyhow::{Context, Result, bail};
use canopy_client::profile::Recording;
use canopy_client::run::{self, RunConfig, Source};
use canopy_protocol::profile::{self, MAX_JSON, Profile};
use canopy_protocol::{Escaped, RootName, TreeId};
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
    // Only the run's FUSE view reads through the recording: canopy's own reads of the
    // root (users, groups, the machine id) are not the program's.
    let recording = Arc::new(Recording::new(objects.clone()));
    let source = Source::View {
        view,
        objects,
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
        view_objects: Some(recording.clone()),
    };
    // With --json, stdout holds the JSON alone: the command writes to stderr.
    let stdout = args.json.json.then(StdoutToStderr::start).transpose()?;
    let code = run::run(&cfg, &source, &|_| {});
    drop(stdout);
    let shown = Escaped(args.command.join(" ").as_bytes()).to_string();
    let code =
        code.with_context(|| format!("running {shown} in root {root}: no profile written"))?;
    // 125: the run could not be set up; 126: the program cannot be executed; 127: it was
    // not found (as shells report them). What was read then is not the program's start.
    if (125..=127).contains(&code) {
        bail!(
            "{shown} could not run in root {root} (exit status {code}: {}): no profile \
             written; check the command with canopy run {root} -- COMMAND",
            match code {
                125 => "the run could not start",
                126 => "not executable",
                _ => "not found",
            }
        );
    }
    if code != 0 {
        eprintln!(
            "canopy profile: the command exited with status {code}; the profile records what it \
             read until then"
        );
    }
    drop(source);
    let store = Arc::new(Store::open(store_path, Access::Unlocked)?);
    let trees = |t: &TreeId| {
        store
            .tree(t)
            .map(Arc::new)
            .with_context(|| format!("reading tree {t} of root {root}"))
    };
    // Paths the profile format refuses (not UTF-8, too long) are left out here.
    let paths = profile::paths_of(&recording.read(), tree, &trees)?;
    let mut recorded = Profile {
        command: args.command.clone(),
        recorded: canopy_server::import::now(),
        recorded_in: commit.to_string(),
        paths,
        bytes: 0,
    };
    let dropped = recorded.fit();
    if recorded.to_json().len() > MAX_JSON {
        bail!(
            "the command line of {shown} is too long to record ({} bytes; a profile holds \
             at most {MAX_JSON} bytes): no profile written",
            args.command.iter().map(String::len).sum::<usize>()
        );
    }
    if dropped > 0 {
        eprintln!(
            "canopy profile: the profile keeps the first {} files read; {dropped} more do not \
             fit in a profile (at most {} paths, {MAX_JSON} bytes)",
            recorded.paths.len(),
            profile::MAX_PATHS
        );
    }
    recorded.bytes = profile::plan(&recorded, tree, trees)?.bytes();
    drop(store);
    if recorded.paths.is_empty() {
        bail!("{shown} read no file of root {root}: nothing to record");
    }
    let written = if args.dry_run {
        None
    } else {
        let store = open(store_path, Access::Write)?;
        // Attached to the version it was recorded in, or not at all.
        Some(canopy_server::profile::set(
            &store,
            &root,
            Some(&recorded),
            Some(commit),
        )?)
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
            "{root}: {} files ({}) read by {shown}",
            recorded.paths.len(),
            size(recorded.bytes),
        );
        match &written {
            None => {
                for p in &recorded.paths {
                    println!("  {}", Escaped(p.as_bytes()));
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
            print_json(&json!({
                "root": at.root.as_str(), "commit": id.to_string(), "profile": null,
                "replay": null,
            }))?;
        } else {
            println!(
                "{}: commit {id} has no access profile (canopy profile record {} -- COMMAND makes one)",
                at.root, at.root
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    let p = found.with_context(|| {
        format!(
            "root {}: commit {id} has a profile hosts refuse (they mount the root without \
             replaying it); canopy profile drop {} removes it, canopy profile record {} -- \
             COMMAND replaces it",
            at.root, at.root, at.root
        )
    })?;
    let plan = profile::plan(&p, commit.body.tree, |t| {
        store
            .tree(t)
            .map(Arc::new)
            .with_context(|| format!("reading tree {t} of root {} (commit {id})", at.root))
    })?;
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
    println!("command    {}", Escaped(p.command.join(" ").as_bytes()));
    println!(
        "recorded   {} in commit {}",
        time(p.recorded),
        Escaped(p.recorded_in.as_bytes())
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
    let done = canopy_server::profile::set(&store, &root, None, None)?;
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
        let failed = || {
            anyhow::anyhow!(
                "sending the command's output to stderr: {}",
                std::io::Error::last_os_error()
            )
        };
        // SAFETY: dup of standard output; the copy is owned from here on (closed if
        // what follows fails).
        let saved = unsafe { libc::dup(1) };
        if saved < 0 {
            return Err(failed());
        }
        // SAFETY: `saved` is a descriptor just made and owned by nobody else.
        let saved = unsafe { std::os::fd::OwnedFd::from_raw_fd(saved) };
        // SAFETY: dup2 on the standard descriptors.
        if unsafe { libc::dup2(2, 1) } < 0 {
            return Err(failed());
        }
        Ok(StdoutToStderr(saved))
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: puts the saved descriptor back as standard output.
        unsafe { libc::dup2(self.0.as_raw_fd(), 1) };
    }
}
