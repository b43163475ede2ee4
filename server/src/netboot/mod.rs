//! Booting diskless nodes from a root: the kernel and initramfs the root's own packages
//! installed, the kernel command line that mounts the root over NFS, and canopy's boot
//! script that gives each node a writable layer in memory and its own host identity.
//!
//! The root's initramfs is used as initramfs-tools built it when the root was
//! configured: its `/scripts/nfs` mounts `/` over NFS. A second, small initramfs
//! ([`boot_script_cpio`]) adds `/scripts/canopy`, chosen by `boot=canopy` on the
//! command line, which mounts the root read-only as `boot=nfs` does, puts an overlay
//! with a tmpfs upper layer over it, and makes the node's machine id, SSH host keys and
//! the rest of [`canopy_protocol::HOST_IDENTITY`]. Boot loaders load several initramfs
//! images one after the other (pxelinux `INITRD a,b`, iPXE `initrd` twice) and Linux
//! unpacks them in turn, so the root's image stays untouched and served by its id.

mod cpio;

use crate::inspect::{self, Follow, InspectError};
use crate::packages::compare_versions;
use crate::store::Store;
use canopy_protocol::{BlobId, EntryKind, HOST_IDENTITY, Hasher, PerHost, TreeId};
use std::sync::OnceLock;

/// Where a root keeps its kernels and initramfs images.
const BOOT_DIR: &[u8] = b"/boot";
/// initramfs-tools' NFS boot script, which canopy's builds on.
const NFS_SCRIPT: &[u8] = b"/usr/share/initramfs-tools/scripts/nfs";
/// canopy's boot script, before the host-identity function is appended.
const BOOT_SCRIPT: &str = include_str!("boot.sh");

/// Why a root cannot be netbooted.
#[derive(Debug, thiserror::Error)]
pub enum NetbootError {
    /// No kernel in `/boot`.
    #[error(
        "root {root} has no kernel (/boot/vmlinuz-*): assemble it with a kernel package and \
         initramfs-tools, e.g. `canopy assemble {root} --from debian --essential systemd-sysv \
         linux-image-amd64 initramfs-tools`"
    )]
    NoKernel {
        /// The root, as asked for.
        root: String,
    },
    /// Kernels, but no initramfs for any of them.
    #[error(
        "root {root} has /boot/vmlinuz-{version} but no /boot/initrd.img-{version}: the \
         initramfs is built when the root is configured (was it assembled with --no-configure, \
         or without initramfs-tools?)"
    )]
    NoInitrd {
        /// The root, as asked for.
        root: String,
        /// The newest kernel's version.
        version: String,
    },
    /// The initramfs was not made by initramfs-tools, so `boot=canopy` means nothing to it.
    #[error(
        "root {root} has no initramfs-tools NFS boot script ({}): its initramfs cannot mount \
         an NFS root with canopy's writable layer; add initramfs-tools to the root",
        String::from_utf8_lossy(NFS_SCRIPT)
    )]
    NotInitramfsTools {
        /// The root, as asked for.
        root: String,
    },
    /// Looking into the root failed.
    #[error("root {root}: {source}")]
    Inspect {
        /// The root, as asked for.
        root: String,
        /// What failed.
        source: InspectError,
    },
}

/// One boot file of a root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFile {
    /// Its path in the root, e.g. `/boot/vmlinuz-6.1.0-28-amd64`.
    pub path: String,
    /// Its content's id (served at `/v1/objects/ID`).
    pub blob: BlobId,
    /// Its size in bytes.
    pub size: u64,
}

/// The kernel and initramfs a root boots with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    /// The kernel's version, as in the file names: `6.1.0-28-amd64`.
    pub version: String,
    /// `/boot/vmlinuz-VERSION`.
    pub kernel: BootFile,
    /// `/boot/initrd.img-VERSION`.
    pub initrd: BootFile,
}

/// The newest kernel in the root's `/boot` that has an initramfs (versions compared as
/// Debian compares them), checked to come with initramfs-tools' NFS boot script.
/// `root` names the root in errors.
pub fn boot_files(store: &Store, tree: &TreeId, root: &str) -> Result<BootFiles, NetbootError> {
    let inspect_err = |source| NetbootError::Inspect {
        root: root.to_string(),
        source,
    };
    let boot = match inspect::lookup(store, tree, BOOT_DIR, Follow::Last) {
        Ok(found) => found,
        Err(InspectError::NotFound(_)) => {
            return Err(NetbootError::NoKernel {
                root: root.to_string(),
            });
        }
        Err(e) => return Err(inspect_err(e)),
    };
    let entries = inspect::list(store, &boot).map_err(inspect_err)?;
    let mut versions: Vec<String> = entries
        .iter()
        .filter_map(|e| e.name.as_bytes().strip_prefix(b"vmlinuz-"))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
        .collect();
    versions.sort_by(|a, b| compare_versions(b, a));
    let Some(newest) = versions.first().cloned() else {
        return Err(NetbootError::NoKernel {
            root: root.to_string(),
        });
    };
    let Some(version) = versions.into_iter().find(|v| {
        let initrd = format!("initrd.img-{v}");
        entries
            .iter()
            .any(|e| e.name.as_bytes() == initrd.as_bytes())
    }) else {
        return Err(NetbootError::NoInitrd {
            root: root.to_string(),
            version: newest,
        });
    };
    match inspect::lookup(store, tree, NFS_SCRIPT, Follow::Last) {
        Ok(found) if matches!(found.kind, EntryKind::File { .. }) => {}
        Ok(_) | Err(InspectError::NotFound(_)) | Err(InspectError::NotADirectory(_)) => {
            return Err(NetbootError::NotInitramfsTools {
                root: root.to_string(),
            });
        }
        Err(e) => return Err(inspect_err(e)),
    }
    let file = |name: String| -> Result<BootFile, NetbootError> {
        let path = format!("/boot/{name}");
        let found =
            inspect::lookup(store, tree, path.as_bytes(), Follow::Last).map_err(inspect_err)?;
        match found.kind {
            EntryKind::File { size, blob } => Ok(BootFile { path, blob, size }),
            other => Err(inspect_err(InspectError::NotFound(format!(
                "{path} (a {}, not a file)",
                other.label()
            )))),
        }
    };
    Ok(BootFiles {
        kernel: file(format!("vmlinuz-{version}"))?,
        initrd: file(format!("initrd.img-{version}"))?,
        version,
    })
}

/// The kernel command line that boots a node from `export` (`/NAME@COMMIT`) of the NFS
/// server `server` (a host, or `HOST:PORT` when NFS is not on 2049; MOUNT is found
/// through the portmapper, as klibc's `nfsmount` asks for it).
pub fn cmdline(server: &str, export: &str) -> String {
    let (host, port) = split_port(server);
    let port = match port {
        Some(p) if p != 2049 => format!(",port={p}"),
        _ => String::new(),
    };
    format!("root=/dev/nfs nfsroot={host}:{export},vers=3,tcp,nolock{port} ip=dhcp ro boot=canopy")
}

/// `HOST[:PORT]`, `[V6]:PORT` or a bare IPv6 address, split.
fn split_port(server: &str) -> (&str, Option<u16>) {
    if let Some((host, tail)) = server.strip_prefix('[').and_then(|r| r.split_once(']')) {
        return (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match server.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (server, None),
        },
        _ => (server, None),
    }
}

/// The host of an HTTP `Host` header (`server:7750` → `server`, `[fd00::1]:7750` →
/// `fd00::1`).
pub fn host_of(authority: &str) -> &str {
    split_port(authority).0
}

/// Whether `server` can go into a command line as is: a host name or address with an
/// optional port, nothing that would split or end the line.
pub fn valid_server(server: &str) -> bool {
    !server.is_empty()
        && server.len() <= 255
        && server
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

/// Whether extra kernel arguments can go into a command line as they are: words of
/// letters, digits and `,.=_:/@+-`, separated by single spaces (`console=ttyS0,115200
/// quiet`), nothing that would end the line or quote.
pub fn valid_args(args: &str) -> bool {
    args.len() <= 1024
        && args.split(' ').all(|word| {
            !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b",.=_:/@+-".contains(&b))
        })
}

/// The value of `key` in a URL query string (`a=1&b=x%20y`), `+` and `%XX` decoded.
/// Undecodable values count as absent.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?;
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            b => b,
        });
    }
    String::from_utf8(out).ok()
}

/// canopy's boot script with the host-identity steps this build knows, as one
/// uncompressed newc archive (`scripts/canopy`), the same bytes on every call.
pub fn boot_script_cpio() -> &'static [u8] {
    static CPIO: OnceLock<Vec<u8>> = OnceLock::new();
    CPIO.get_or_init(|| {
        let script = format!("{BOOT_SCRIPT}\n{}", host_identity_function());
        cpio::archive(&[
            cpio::Member::Dir("scripts"),
            cpio::Member::File("scripts/canopy", script.as_bytes()),
        ])
    })
}

/// The file name the boot script's archive is written and served as: its content's id
/// in the name, so it can be cached for good.
pub fn boot_script_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut hasher = Hasher::new();
        hasher.update(boot_script_cpio());
        let id = hasher.finish().to_string();
        format!("canopy-boot-{}.cpio", &id[..16])
    })
}

/// `canopy_host_identity()`: a new machine id, then each command of the host-identity
/// list once, in the list's order, when the root has its program.
fn host_identity_function() -> String {
    let mut body = String::from("canopy_host_identity()\n{\n");
    let mut seen = Vec::new();
    for rule in HOST_IDENTITY {
        match rule.per_host {
            PerHost::MachineId => body.push_str("\tcanopy_machine_id\n"),
            PerHost::Command(command) if !seen.contains(&command) => {
                seen.push(command);
                let program = command.split_whitespace().next().unwrap_or(command);
                body.push_str(&format!("\tcanopy_in_root {program} '{command}'\n"));
            }
            PerHost::Command(_) | PerHost::Created => {}
        }
    }
    body.push_str("}\n");
    body
}

/// Where a boot loader finds the files: URLs for iPXE, names next to the config for
/// pxelinux.
#[derive(Clone, Debug)]
pub struct Locations {
    /// The kernel.
    pub kernel: String,
    /// The root's initramfs.
    pub initrd: String,
    /// canopy's boot script archive.
    pub boot_script: String,
}

/// An iPXE script that boots with `cmdline`. `about` goes into a comment.
pub fn ipxe_script(at: &Locations, cmdline: &str, about: &str) -> String {
    // The initrd= arguments name the images for kernels booted by UEFI's stub.
    format!(
        "#!ipxe\n# {about}\nkernel {} initrd=initrd.img initrd=canopy.cpio {cmdline}\n\
         initrd --name initrd.img {}\ninitrd --name canopy.cpio {}\nboot\n",
        at.kernel, at.initrd, at.boot_script
    )
}

/// A pxelinux (SYSLINUX) configuration that boots with `cmdline`.
pub fn pxelinux_config(at: &Locations, cmdline: &str, about: &str) -> String {
    format!(
        "# {about}\nDEFAULT canopy\nLABEL canopy\n  KERNEL {}\n  INITRD {},{}\n  APPEND {cmdline}\n",
        at.kernel, at.initrd, at.boot_script
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_name_the_export_and_only_unusual_ports() {
        assert_eq!(
            cmdline("10.0.2.2", "/node@ab12"),
            "root=/dev/nfs nfsroot=10.0.2.2:/node@ab12,vers=3,tcp,nolock ip=dhcp ro boot=canopy"
        );
        assert!(cmdline("server:2049", "/n").contains("nfsroot=server:/n,vers=3,tcp,nolock "));
        assert!(cmdline("server:2050", "/n").contains(",nolock,port=2050 "));
        assert_eq!(split_port("[fd00::1]:2050"), ("fd00::1", Some(2050)));
        assert_eq!(split_port("fd00::1"), ("fd00::1", None));
        assert_eq!(host_of("server:7750"), "server");
        assert!(valid_server("10.0.2.2:2049"));
        assert!(!valid_server("a b") && !valid_server("x\nboot") && !valid_server(""));
        assert!(valid_args("console=ttyS0,115200 quiet"));
        assert!(!valid_args("a\nboot") && !valid_args("a  b") && !valid_args("x\"y"));
        assert_eq!(
            query_value("nfs=h&args=console%3DttyS0+quiet", "args").as_deref(),
            Some("console=ttyS0 quiet")
        );
        assert_eq!(query_value("nfs=h", "args"), None);
        assert_eq!(query_value("args=%zz", "args"), None);
    }

    #[test]
    fn the_boot_script_makes_each_host_identity_once() {
        let f = host_identity_function();
        assert_eq!(f.matches("canopy_machine_id").count(), 1);
        assert_eq!(f.matches("'ssh-keygen -A'").count(), 1);
        assert!(f.contains("canopy_in_root dbus-uuidgen 'dbus-uuidgen --ensure'"));
        let cpio = boot_script_cpio();
        assert!(cpio.windows(14).any(|w| w == b"scripts/canopy"));
        assert!(boot_script_name().starts_with("canopy-boot-"));
    }
}
