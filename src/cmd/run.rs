//! `canopy run`: picks the root (local store, server, directory), validates the flags
//! and hands over to `canopy_client::run`. Exits with the command's status, or 125
//! (126, 127) when canopy itself cannot run it.

use super::{find_in_log, head, print_json, store_path};
use crate::cli::RunArgs;
use anyhow::{Context, Result, bail};
use canopy_client::host::HostConfig;
use canopy_client::objects::Local;
use canopy_client::run::{self, Bind, Label, RunConfig, RunError, Source};
use canopy_client::view::{RootVersion, Scope, View};
use canopy_protocol::{CommitId, EntryKind, RootName, Tree, TreeId};
use canopy_server::{Access, Store};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Runs `canopy run`; never fails: errors are printed and become exit status 125.
pub fn run(store: Option<PathBuf>, args: RunArgs) -> ExitCode {
    run::prepare();
    match start(store, args) {
        Ok(code) => code,
        Err(e) => {
            let code = e
                .downcast_ref::<RunError>()
                .map_or(125, RunError::exit_code);
            eprintln!("canopy run: {}", crate::describe(&e));
            ExitCode::from(code)
        }
    }
}

fn start(store: Option<PathBuf>, args: RunArgs) -> Result<ExitCode> {
    let dir_source = args.root.contains('/');
    // Keeps the server source's runtime alive for the run.
    let mut _runtime = None;
    let (source, root_name) = if dir_source {
        if !args.servers.is_empty() || args.commit.is_some() {
            bail!(
                "{} is a directory: --server and --commit are for roots by name",
                args.root
            );
        }
        let dir = PathBuf::from(&args.root);
        run::source::check_answers(&dir).map_err(anyhow::Error::msg)?;
        if !dir.is_dir() {
            bail!(
                "{} is not a directory (a root name has no `/`)",
                dir.display()
            );
        }
        let (dir, commit) = Source::pinned_dir(&dir);
        if let Some(c) = commit {
            tracing::info!("running commit {c} of {}", dir.display());
        }
        let name = Path::new(&args.root)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        (
            Source::Dir {
                path: dir,
                image: None,
            },
            name,
        )
    } else if !args.servers.is_empty() {
        let trust = args.trust.as_deref().context(
            "--server needs --trust FILE (the key `canopy key show` prints on the server)",
        )?;
        let host = HostConfig {
            servers: args.servers.clone(),
            trust: super::mount::read_key(trust)?,
            cache_dir: args
                .cache_dir
                .clone()
                .unwrap_or_else(|| super::mount::default_cache_dir("canopy")),
            cache_size: args.cache_size,
            passthrough: false,
            timeout: args.timeout,
            // As `canopy mount`'s default --min-rate.
            min_rate: 64 << 10,
            prefetch: false,
            compress: args.compress,
            profile: !args.no_profile,
        };
        let commit = args
            .commit
            .as_deref()
            .map(|c| {
                c.parse::<CommitId>()
                    .context("--commit with --server takes a full commit id (64 hex digits)")
            })
            .transpose()?;
        let (source, rt) = run::server_source(&host, &args.root, commit)?;
        _runtime = Some(rt);
        (source, args.root.clone())
    } else {
        let store = store_path(store)?;
        (
            store_source(&store, &args.root, args.commit.as_deref())?,
            args.root.clone(),
        )
    };

    if args.diff {
        let dir = args
            .state
            .as_deref()
            .expect("clap requires --state with --diff");
        let changes = run::diff(dir, &source)?;
        if args.json.json {
            let items: Vec<_> = changes
                .iter()
                .map(|(c, p)| json!({"change": c.to_string(), "path": p}))
                .collect();
            print_json(&json!(items))?;
        } else {
            for (c, p) in &changes {
                println!("{c} {p}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    let name = args.name.clone().unwrap_or_else(|| root_name.clone());
    let cfg = RunConfig {
        hostname: args.hostname.clone().unwrap_or_else(|| name.clone()),
        name,
        image_name: root_name,
        args: args.command.clone(),
        label: args.label.as_deref().map(|l| match l {
            "run" => Label::Run,
            "install" => Label::Install,
            _ => Label::Uninstall,
        }),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        env: args.env.iter().map(|e| env_var(e)).collect::<Result<_>>()?,
        host_network: args.network == "host",
        binds: args.bind.iter().map(|b| bind(b)).collect::<Result<_>>()?,
        state: args.state.clone(),
        spc: args.spc,
        view_objects: None,
    };
    let code = run::run(&cfg, &source, &|line| eprintln!("canopy run: {line}"))?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// A root of the local store, as a view pinned to one commit whose files are the
/// store's own object files. The store is not locked: its objects never change, and
/// gc removes only what no root references.
pub(super) fn store_source(path: &Path, name: &str, commit: Option<&str>) -> Result<Source> {
    let store = Arc::new(Store::open(path, Access::Unlocked)?);
    let root: RootName = name.parse().with_context(|| {
        format!("{name:?} is not a root name (a directory needs a `/`: ./{name})")
    })?;
    let id = match commit {
        Some(prefix) => find_in_log(&store, &root, prefix)?,
        None => head(&store, &root)?,
    };
    let body = store.commit(&id)?.body;
    let trees = trees_under(&store, body.tree)?;
    let view = View::new(Scope::One(name.to_string()));
    view.install(
        name,
        RootVersion {
            commit: id,
            tree: body.tree,
        },
        trees,
    );
    let image = super::image::of_commit(&body)?;
    let objects = {
        let store = store.clone();
        Local::new(move |id| store.local_path(id))
    };
    Ok(Source::View {
        view: Arc::new(view),
        objects: Arc::new(objects),
        commit: id,
        image: image.map(Box::new),
    })
}

/// Every tree under `top`, read from the store once each.
fn trees_under(store: &Store, top: TreeId) -> Result<HashMap<TreeId, Tree>> {
    let mut trees = HashMap::new();
    let mut todo = vec![top];
    while let Some(id) = todo.pop() {
        if trees.contains_key(&id) {
            continue;
        }
        let tree = store.tree(&id)?;
        for e in tree.entries() {
            if let EntryKind::Dir { tree } = &e.kind {
                todo.push(*tree);
            }
        }
        trees.insert(id, tree);
    }
    Ok(trees)
}

/// `KEY=VALUE`, or `KEY` for the caller's value.
pub(super) fn env_var(s: &str) -> Result<(String, String)> {
    let (k, v) = match s.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (s.to_string(), std::env::var(s).unwrap_or_default()),
    };
    if k.is_empty() || k.contains('\0') || v.contains('\0') {
        bail!("--env {s:?}: give KEY=VALUE");
    }
    Ok((k, v))
}

/// `SRC:DST[:ro]`.
fn bind(s: &str) -> Result<Bind> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, read_only) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        _ => bail!("--bind {s:?}: give SRC:DST or SRC:DST:ro"),
    };
    if !dst.starts_with('/') {
        bail!("--bind {s:?}: the target {dst} must be an absolute path inside the run");
    }
    // A source on a canopy mount that does not answer would hold the run in the kernel.
    run::source::check_answers(Path::new(src)).map_err(|e| anyhow::anyhow!("--bind {s:?}: {e}"))?;
    let source = std::fs::canonicalize(src).with_context(|| format!("--bind {s:?}: {src}"))?;
    Ok(Bind {
        source,
        target: PathBuf::from(dst),
        read_only,
    })
}
