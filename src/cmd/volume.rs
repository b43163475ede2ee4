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
    })?;
    Ok(ExitCode::SUCCESS)
}
