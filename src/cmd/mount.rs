//! `canopy mount`.

use super::terminated;
use crate::cli::{HostArgs, MountArgs};
use anyhow::{Context, Result, bail};
use canopy_client::host::HostConfig;
use canopy_client::mount::{self, MountConfig};
use canopy_client::service::Stored;
use canopy_client::view::Scope;
use canopy_protocol::VerifyingKey;
use canopy_server::view::history::{self, RootAt};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Reads a public key as `canopy key show` prints it.
pub(super) fn read_key(path: &std::path::Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the trusted key {}", path.display()))?;
    let mut bytes = [0u8; 32];
    let hex = text.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{} does not hold a public key (64 hex characters, as `canopy key show` prints)",
            path.display()
        );
    }
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    VerifyingKey::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid ed25519 public key", path.display()))
}

/// `/var/cache/NAME` as root, else `$XDG_CACHE_HOME/NAME` or `~/.cache/NAME`.
pub(super) fn default_cache_dir(name: &str) -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache").join(name);
    }
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir).join(name),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".cache")
            .join(name),
    }
}

/// The validated form of the flags every host command takes.
pub(super) fn host_config(
    servers: Vec<url::Url>,
    args: HostArgs,
    cache_dir: PathBuf,
) -> Result<HostConfig> {
    Ok(HostConfig {
        servers,
        trust: read_key(&args.trust)?,
        cache_dir,
        cache_size: args.cache_size,
        passthrough: !args.no_passthrough,
        timeout: args.timeout,
        min_rate: args.min_rate,
        prefetch: !args.no_prefetch,
        compress: args.compress,
        profile: !args.no_profile,
    })
}

/// Refuses mountpoints a mount would hide or fail on, saying what to do: a missing
/// directory, a directory with files in it (unless `--nonempty`). Returns whether a
/// live canopy mount serves it (then it is taken over, not mounted over: two daemons
/// on one path would stack, the lower one unreachable).
fn check_mountpoint(path: &Path, nonempty: bool) -> Result<bool> {
    let meta = match metadata_within(path, LOOK)? {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "mountpoint {} does not exist: create it first (mkdir -p {})",
            path.display(),
            path.display()
        ),
        // ENOTCONN: a FUSE mount whose daemon died; the kernel still holds the path.
        // A canopy one (killed, crashed) is detached and mounted anew, so a restarted
        // service needs no hand; another filesystem's is left to its owner.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            if !is_canopy_mount(path) {
                bail!(
                    "mountpoint {} is a dead FUSE mount (its daemon is gone): `umount {}` first",
                    path.display(),
                    path.display()
                );
            }
            mount::umount_lazily(path).with_context(|| {
                format!("detaching the dead canopy mount at {}", path.display())
            })?;
            tracing::warn!(
                "{}: its canopy daemon is gone; detached the dead mount",
                path.display()
            );
            return check_mountpoint(path, nonempty);
        }
        Err(e) => bail!("mountpoint {}: {e}", path.display()),
    };
    if !meta.is_dir() {
        bail!("mountpoint {} is not a directory", path.display());
    }
    if is_canopy_mount(path) {
        return Ok(true);
    }
    let occupied = std::fs::read_dir(path)
        .with_context(|| format!("listing mountpoint {}", path.display()))?
        .next()
        .is_some();
    if occupied && !nonempty {
        bail!(
            "mountpoint {} is not empty: mounting would hide its files (pass --nonempty to mount over them anyway)",
            path.display()
        );
    }
    Ok(false)
}

/// How long a look at the mountpoint may take.
const LOOK: std::time::Duration = std::time::Duration::from_secs(10);

/// `metadata(path)`, given at most `limit`: a FUSE mount whose connection is kept open
/// with no process serving it (by a service manager's descriptor store, between two
/// processes) answers nothing, and a look at it waits until a process does.
fn metadata_within(
    path: &Path,
    limit: std::time::Duration,
) -> Result<std::io::Result<std::fs::Metadata>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let looked = path.to_path_buf();
    // Left waiting if the mount never answers; it ends with the process.
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::metadata(looked));
    });
    rx.recv_timeout(limit).map_err(|_| {
        anyhow::anyhow!(
            "mountpoint {} does not answer within {}s: a mount whose connection is kept \
             with no process serving it (`systemctl start canopy-mount` resumes a canopy \
             one kept by systemd), or a hung one (`umount -l {}` takes it away)",
            path.display(),
            limit.as_secs(),
            path.display()
        )
    })
}

/// Whether `path` is the mountpoint of a live canopy FUSE mount: in
/// /proc/self/mountinfo, a `fuse` (or `fuse.canopy`) filesystem whose source is
/// `canopy`.
fn is_canopy_mount(path: &Path) -> bool {
    let path = canopy_client::handover::resolved(path);
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS…] - FSTYPE SOURCE SUPER-OPTIONS
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            return false;
        };
        let (fstype, source) = (fields.get(dash + 1), fields.get(dash + 2));
        let canopy = fstype == Some(&"fuse.canopy")
            || (fstype.is_some_and(|t| t.starts_with("fuse")) && source == Some(&"canopy"));
        canopy
            && fields.get(4).map(|m| unescape(m)).as_deref()
                == Some(path.as_os_str().as_encoded_bytes())
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

pub fn run(args: MountArgs) -> Result<ExitCode> {
    super::raise_descriptor_limit();
    // A connection the service manager kept for this mount (the process before was
    // killed or stopped for a restart): its requests wait for this process, so the
    // mountpoint is not looked at.
    let stored = Stored::from_env();
    if let Some(s) = &stored {
        tracing::info!("the service manager passed {}", s.describe());
    }
    let stored = match stored.filter(|s| s.has_connection()) {
        // Unmounted meanwhile (`umount`): the kept connection serves nothing.
        Some(s) if !is_canopy_mount(&args.mountpoint) => {
            s.release();
            None
        }
        s => s,
    };
    let take_over = match &stored {
        Some(_) => true,
        None => check_mountpoint(&args.mountpoint, args.nonempty)?,
    };
    // `--root web@3f2a` and `--root web --commit 3f2a` say the same.
    let (scope, commit) = match &args.root {
        Some(spec) => {
            let at: RootAt = spec.parse()?;
            let commit = match (at.commit, &args.commit) {
                (Some(_), Some(_)) => {
                    bail!("give the commit once: --root ROOT@COMMIT or --commit COMMIT")
                }
                (Some(c), None) => Some(c),
                (None, Some(c)) => Some(history::check_prefix(c)?),
                (None, None) => None,
            };
            (Scope::One(at.root.to_string()), commit)
        }
        None => (Scope::All, None),
    };
    if commit.is_some() && args.follow {
        bail!("--follow shows new versions; a pinned commit shows one: give one or the other");
    }
    let mut servers = vec![args.url];
    servers.extend(args.servers);
    let cache_dir = args
        .cache_dir
        .unwrap_or_else(|| default_cache_dir("canopy"));
    let cfg = MountConfig {
        host: host_config(servers, args.host, cache_dir)?,
        mountpoint: args.mountpoint.clone(),
        scope,
        commit,
        follow: args.follow.then_some(args.interval),
        take_over,
        stored,
    };
    let mountpoint = args.mountpoint;
    mount::run(cfg, terminated(), || {
        println!("mounted at {}", mountpoint.display());
        let _ = std::io::stdout().flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
