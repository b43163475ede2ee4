//! `canopy volume-plugin`, and its mount server (`--mount-server`, started by the plugin).

use super::mount::{default_cache_dir, host_config};
use super::terminated;
use crate::cli::VolumePluginArgs;
use anyhow::Result;
use canopy_client::volume::{self, VolumeConfig};
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

pub fn run(args: VolumePluginArgs) -> Result<ExitCode> {
    super::raise_descriptor_limit();
    let cache_dir = args
        .cache_dir
        .unwrap_or_else(|| default_cache_dir("canopy-volumes"));
    // The mount server is this program with the same arguments, and the flag.
    let server_args: Vec<OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--mount-server")
        .chain([OsString::from("--mount-server")])
        .collect();
    let cfg = VolumeConfig {
        host: host_config(args.servers, args.host, cache_dir)?,
        socket: args.socket.clone(),
        state_dir: args.state_dir,
        mount_dir: args.mount_dir.clone(),
        interval: args.interval,
        server_args,
    };
    if args.mount_server {
        volume::serve_mounts(cfg, terminated())?;
        return Ok(ExitCode::SUCCESS);
    }
    volume::run(cfg, terminated(), || {
        println!(
            "listening on {}, volumes under {}",
            args.socket.display(),
            args.mount_dir.display()
        );
        let _ = std::io::stdout().flush();
    })
    .map_err(|e| as_root_hint(e.into()))?;
    Ok(ExitCode::SUCCESS)
}

/// A plugin started by another user than root fails on its first directory (the state
/// in /var/lib, the socket in /run/docker/plugins) or on the FUSE mount: say that the
/// plugin runs as root, as Docker's plugins do.
fn as_root_hint(e: anyhow::Error) -> anyhow::Error {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let denied = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    }) || e.to_string().contains("Permission denied");
    if root || !denied {
        return e;
    }
    e.context(
        "the volume plugin runs as root, on the Docker host (it mounts FUSE for every \
         container and answers Docker on its socket): start it with sudo or from its \
         systemd unit",
    )
}
