//! `canopy netboot`: a root's kernel and initramfs, canopy's boot script and the
//! pxelinux and iPXE configurations that boot diskless nodes from it over NFS.

use super::{bytes, open, print_json, root_at};
use crate::cli::NetbootArgs;
use anyhow::{Context, Result, bail};
use canopy_server::Access;
use canopy_server::inspect;
use canopy_server::netboot::{self, BootFile, Locations};
use serde_json::json;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// The names written into DIR, as the configurations refer to them.
const KERNEL: &str = "vmlinuz";
const INITRD: &str = "initrd.img";
const BOOT_SCRIPT: &str = "canopy.cpio";
const PXELINUX: &str = "pxelinux.cfg/default";
const IPXE: &str = "boot.ipxe";

pub fn run(store: &Path, args: NetbootArgs) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let (at, id) = root_at(&store, &args.root)?;
    let commit = store.commit(&id)?;
    commit.verify(&store.verifying_key()?)?;
    let root = at.root.to_string();
    let files = netboot::boot_files(&store, &commit.body.tree, &args.root)?;
    let server = match args.server {
        Some(s) if netboot::valid_server(&s) => s,
        Some(s) => bail!("--server {s:?} is not a host name or address (HOST or HOST:PORT)"),
        None => this_host()?,
    };
    let mut cmdline = netboot::cmdline(&server, &format!("/{root}@{id}"));
    match &args.args {
        Some(extra) if netboot::valid_args(extra) => cmdline = format!("{extra} {cmdline}"),
        Some(extra) => bail!(
            "--args {extra:?}: kernel arguments are words of letters, digits and ,.=_:/@+- \
             separated by single spaces"
        ),
        None => {}
    }
    let about = format!(
        "canopy netboot: root {root}, commit {id}, kernel {}",
        files.version
    );
    let dir = &args.dir;
    fs::create_dir_all(dir.join("pxelinux.cfg"))
        .with_context(|| format!("creating {}", dir.join("pxelinux.cfg").display()))?;
    // Boot files first, the configurations that name them last.
    copy_out(&store, &files.kernel, &dir.join(KERNEL))?;
    copy_out(&store, &files.initrd, &dir.join(INITRD))?;
    write_atomic(&dir.join(BOOT_SCRIPT), netboot::boot_script_cpio())?;
    let names = Locations {
        kernel: KERNEL.into(),
        initrd: INITRD.into(),
        boot_script: BOOT_SCRIPT.into(),
    };
    write_atomic(
        &dir.join(PXELINUX),
        netboot::pxelinux_config(&names, &cmdline, &about).as_bytes(),
    )?;
    write_atomic(
        &dir.join(IPXE),
        netboot::ipxe_script(&names, &cmdline, &about).as_bytes(),
    )?;
    if args.json.json {
        let file = |f: &BootFile, name: &str| {
            json!({"path": f.path, "id": f.blob.to_string(), "size": f.size,
                   "file": dir.join(name).display().to_string()})
        };
        print_json(&json!({
            "root": root, "commit": id.to_string(), "version": files.version,
            "kernel": file(&files.kernel, KERNEL), "initrd": file(&files.initrd, INITRD),
            "boot_script": {"file": dir.join(BOOT_SCRIPT).display().to_string(),
                            "size": netboot::boot_script_cpio().len()},
            "pxelinux": dir.join(PXELINUX).display().to_string(),
            "ipxe": dir.join(IPXE).display().to_string(),
            "server": server, "cmdline": cmdline,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "root {root}, commit {}: kernel {} ({}), initramfs {}",
        id.0.short(),
        files.version,
        bytes(files.kernel.size),
        bytes(files.initrd.size)
    );
    println!(
        "wrote {KERNEL}, {INITRD}, {BOOT_SCRIPT}, {PXELINUX} and {IPXE} in {}",
        dir.display()
    );
    println!("kernel command line: {cmdline}");
    Ok(ExitCode::SUCCESS)
}

/// This machine's host name, the default NFS server nodes are told to use.
fn this_host() -> Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        bail!(
            "cannot read this machine's host name ({}): give --server HOST",
            std::io::Error::last_os_error()
        );
    }
    let name = buf.split(|&b| b == 0).next().unwrap_or(&[]);
    let name = String::from_utf8_lossy(name).into_owned();
    if !netboot::valid_server(&name) || name == "localhost" {
        bail!("this machine's host name {name:?} is no use to nodes: give --server HOST");
    }
    Ok(name)
}

/// Writes a root's file to `dest`, its content checked against its id on the way.
fn copy_out(store: &canopy_server::store::Store, file: &BootFile, dest: &Path) -> Result<()> {
    let mut content = inspect::content(store, &file.blob)
        .with_context(|| format!("reading {} (object {})", file.path, file.blob))?;
    let mut data = Vec::with_capacity(file.size as usize);
    std::io::copy(&mut content, &mut data)
        .with_context(|| format!("reading {} (object {})", file.path, file.blob))?;
    write_atomic(dest, &data)
}

/// Writes `data` to `dest` so that readers see the old file or the new one, whole.
fn write_atomic(dest: &Path, data: &[u8]) -> Result<()> {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dest.with_file_name(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, dest)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("writing {}", dest.display()))
    })
}
