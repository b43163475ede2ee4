//! One module per command: each opens the store as it needs, calls into the library
//! and prints the result as text or JSON.

mod assemble;
mod checkout;
mod image;
mod import;
mod inspect;
mod maintenance;
mod mount;
mod netboot;
mod profile;
mod remove;
mod replicate;
mod repo;
mod roots;
mod run;
mod serve;
mod setup;
mod volume;

use crate::cli::{
    Cli, Command, ImportCommand, KeyCommand, PackagesCommand, RepoCommand, RootsCommand,
};
use anyhow::{Context, Result};
use canopy_protocol::{CommitId, RootName};
use canopy_server::view::history::{self, RootAt};
use canopy_server::{Access, Store};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::Mount(args) = cli.command {
        // A host that mounts needs no store.
        return mount::run(args);
    }
    if let Command::VolumePlugin(args) = cli.command {
        return volume::run(args);
    }
    if let Command::ConfigureWorker = cli.command {
        return Ok(ExitCode::from(
            canopy_server::configure::worker::main() as u8
        ));
    }
    if let Command::Run(args) = cli.command {
        return Ok(run::run(cli.store, args));
    }
    if let Command::Profile(crate::cli::ProfileCommand::Record(_)) = &cli.command {
        // Runs a command as `canopy run` does: its signals are blocked before any thread.
        canopy_client::run::prepare();
    }
    let store = store_path(cli.store)?;
    match cli.command {
        Command::Init(args) => setup::init(&store, args),
        Command::Key(KeyCommand::Show) => setup::key_show(&store),
        Command::Import(ImportCommand::Deb {
            files,
            limit,
            force,
            json,
        }) => import::debs(&store, &files, import::Flags::of(&limit, &force, &json)),
        Command::Import(ImportCommand::Rpm {
            files,
            keyring,
            limit,
            force,
            json,
        }) => import::rpms(
            &store,
            &files,
            keyring.as_deref(),
            import::Flags::of(&limit, &force, &json),
        ),
        Command::Import(ImportCommand::Tar {
            file,
            named,
            limit,
            force,
            json,
        }) => import::tar(
            &store,
            &file,
            &named,
            import::Flags::of(&limit, &force, &json),
        ),
        Command::Import(ImportCommand::Dir {
            dir,
            named,
            limit,
            force,
            json,
        }) => import::dir(
            &store,
            &dir,
            &named,
            import::Flags::of(&limit, &force, &json),
        ),
        Command::Import(ImportCommand::Oci { layout, image }) => {
            image::import(&store, &layout, image::Format::Layout, image)
        }
        Command::Import(ImportCommand::DockerArchive { file, image }) => {
            image::import(&store, &file, image::Format::DockerArchive, image)
        }
        Command::Packages(PackagesCommand::List(json)) => import::list(&store, json.json),
        Command::Packages(PackagesCommand::Remove(args)) => remove::packages(&store, &args),
        Command::Roots(RootsCommand::Reflog { root, json }) => {
            roots::reflog(&store, &root, json.json)
        }
        Command::Roots(RootsCommand::Remove {
            root,
            dry_run,
            json,
        }) => remove::root(&store, &root, dry_run, json.json),
        Command::Assemble(args) => assemble::run(&store, args),
        Command::Upgrade(args) => assemble::upgrade(&store, args),
        Command::Repo(RepoCommand::Add(args)) => repo::add(&store, *args),
        Command::Repo(RepoCommand::List(json)) => repo::list(&store, json.json),
        Command::Repo(RepoCommand::Remove { name }) => repo::remove(&store, &name),
        Command::Repo(RepoCommand::Update { names, json }) => {
            repo::update(&store, &names, json.json)
        }
        Command::Roots(RootsCommand::List(args)) => {
            if args.removed {
                roots::removed(&store, args.json.json)
            } else {
                roots::list(&store, args.json.json)
            }
        }
        Command::Roots(RootsCommand::Show { root, json }) => {
            inspect::show(&store, &root, json.json)
        }
        Command::Roots(RootsCommand::Log { root, json }) => roots::log(&store, &root, json.json),
        Command::Roots(RootsCommand::Rollback { root, commit, json }) => {
            roots::rollback(&store, &root, commit.as_deref(), json.json)
        }
        Command::Roots(RootsCommand::Diff {
            root,
            old,
            new,
            packages,
            json,
        }) => roots::diff(
            &store,
            &root,
            old.as_deref(),
            new.as_deref(),
            packages,
            json.json,
        ),
        Command::Ls(args) => inspect::ls(&store, args),
        Command::Cat(args) => inspect::cat(&store, &args),
        Command::Owner(args) => inspect::owner(&store, &args),
        Command::Checkout(args) => checkout::run(&store, args),
        Command::Fsck(args) => maintenance::fsck(&store, &args),
        Command::Gc(args) => maintenance::gc(&store, &args),
        Command::Serve(args) => serve::run(&store, args),
        Command::Replicate(args) => replicate::run(&store, args),
        Command::Netboot(args) => netboot::run(&store, args),
        Command::Profile(command) => profile::run(&store, command),
        Command::Mount(_)
        | Command::VolumePlugin(_)
        | Command::Run(_)
        | Command::ConfigureWorker => {
            unreachable!("handled above")
        }
    }
}

/// `--store`, else `$XDG_DATA_HOME/canopy`, else `~/.local/share/canopy`.
fn store_path(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("canopy"));
    }
    let home = std::env::var_os("HOME")
        .context("cannot find the default store: set HOME, CANOPY_STORE or --store")?;
    Ok(PathBuf::from(home).join(".local/share/canopy"))
}

fn open(store: &std::path::Path, access: Access) -> Result<Store> {
    Store::open(store, access).map_err(|e| permission_hint(store, e.into()))
}

/// A store this user may not read or write (another user's, or a directory it cannot
/// create) is an error that says so and what to do, beside the file it failed on.
fn permission_hint(store: &std::path::Path, e: anyhow::Error) -> anyhow::Error {
    let denied = e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    }) || e.to_string().contains("Permission denied");
    if !denied {
        return e;
    }
    let owner = std::fs::metadata(store)
        .map(|m| {
            format!(
                " (it belongs to uid {})",
                std::os::unix::fs::MetadataExt::uid(&m)
            )
        })
        .unwrap_or_default();
    e.context(format!(
        "this user may not use the store at {}{owner}: run canopy as its owner, or give a \
         store of your own with --store DIR (or CANOPY_STORE)",
        store.display()
    ))
}

fn root_name(s: &str) -> Result<RootName> {
    Ok(s.parse()?)
}

/// The commit of a root's history that `prefix` names (a full id or a unique prefix).
fn find_in_log(store: &Store, root: &RootName, prefix: &str) -> Result<CommitId> {
    Ok(history::find(store, root, prefix)?)
}

/// The current commit of a root, or an error that names the store and what exists.
fn head(store: &Store, root: &RootName) -> Result<CommitId> {
    Ok(history::head(store, root)?)
}

/// `ROOT` or `ROOT@COMMIT` and the commit it names.
fn root_at(store: &Store, spec: &str) -> Result<(RootAt, CommitId)> {
    let at: RootAt = spec.parse()?;
    let id = history::resolve(store, &at)?;
    Ok((at, id))
}

/// `NAME VERSION ARCH`, as package lines print it; tarballs, directories and image
/// layers have no architecture, and then no trailing space either.
fn package_line(name: &str, version: &str, arch: &str) -> String {
    if arch.is_empty() {
        format!("{name} {version}")
    } else {
        format!("{name} {version} {arch}")
    }
}

/// A unix timestamp as RFC 3339 UTC.
fn time(ts: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(ts.max(0) as u64))
        .to_string()
}

/// Bytes for people: 1.2 MiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Resolves on SIGINT or SIGTERM: how foreground commands (serve, mount) are stopped.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received, stopping");
}

/// How repositories are fetched: a connection or read that stalls this long fails.
fn fetcher() -> Result<canopy_server::repo::fetch::Fetcher> {
    Ok(canopy_server::repo::fetch::Fetcher::new(
        Duration::from_secs(30),
    )?)
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Raises this process's soft limit on open descriptors to its hard limit, as
/// long-running services need: every connection, open file and cached object is one,
/// and the usual soft limit of 1,024 lets a few hundred idle clients exhaust them.
/// Failing to is only logged: the process works, with less headroom.
pub fn raise_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let wanted = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            tracing::warn!(
                "cannot raise the open-file limit from {}: {}",
                lim.rlim_cur,
                std::io::Error::last_os_error()
            );
        }
    }
}
