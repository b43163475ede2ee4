//! `canopy mount`.

use super::terminated;
use crate::cli::{HostArgs, MountArgs};
use anyhow::{Context, Result, bail};
use canopy_client::mount::{self, HostConfig, MountConfig};
use canopy_client::view::Scope;
use canopy_protocol::VerifyingKey;
use std::io::Write;
use std::path::PathBuf;
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
    })
}

pub fn run(args: MountArgs) -> Result<ExitCode> {
    let scope = match &args.root {
        Some(name) => Scope::One(super::root_name(name)?.to_string()),
        None => Scope::All,
    };
    let commit = args
        .commit
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("--commit takes a full commit id")?;
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
    };
    let mountpoint = args.mountpoint;
    mount::run(cfg, terminated(), || {
        println!("mounted at {}", mountpoint.display());
        let _ = std::io::stdout().flush();
    })?;
    Ok(ExitCode::SUCCESS)
}
