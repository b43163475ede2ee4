//! Diskless nodes: `canopy netboot` and the iPXE endpoint on small roots made for the
//! purpose.

use crate::util::{Canopy, cmd, write_file};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A root that looks bootable to `canopy netboot`: two kernels (the newer one by
/// version, not by name order, is 6.1.0-10), each with an initramfs, and
/// initramfs-tools' NFS script.
fn fake_bootable(env: &Canopy, root: &str, files: &[(&str, &[u8])]) {
    let package = format!("{root}-{}", files.len());
    let tree = env.mkdir(format!("{package}-tree"));
    for (path, content) in files {
        write_file(&tree.join(path), content, 0o644);
    }
    env.cmd(["import", "dir"])
        .arg(&tree)
        .args(["--name", &package])
        .success();
    env.cmd(["assemble", root, &package]).success();
}

const BOOTABLE: &[(&str, &[u8])] = &[
    ("boot/vmlinuz-6.1.0-9-amd64", b"old kernel"),
    ("boot/initrd.img-6.1.0-9-amd64", b"old initrd"),
    ("boot/vmlinuz-6.1.0-10-amd64", b"new kernel"),
    ("boot/initrd.img-6.1.0-10-amd64", b"new initrd"),
    ("boot/config-6.1.0-10-amd64", b"CONFIG_NFS_FS=m"),
    (
        "usr/share/initramfs-tools/scripts/nfs",
        b"nfs_mount_root() { :; }",
    ),
];

/// Unpacks a newc archive into a new directory.
fn unpack_cpio(env: &Canopy, archive: &Path, name: &str) -> PathBuf {
    let dir = env.mkdir(name);
    let out = Command::new("cpio")
        .args(["-i", "-d", "--quiet"])
        .current_dir(&dir)
        .stdin(fs::File::open(archive).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "cpio: {out:?}");
    dir
}

#[test]
fn netboot_writes_the_newest_kernel_its_initramfs_and_configs_that_mount_the_commit() {
    let env = Canopy::init("netboot-files");
    fake_bootable(&env, "node", BOOTABLE);
    let commit = env.current("node");
    let dir = env.path("tftp");
    let out = env.json([
        "netboot",
        "node",
        dir.to_str().unwrap(),
        "--server",
        "10.0.0.1",
        "--args",
        "console=ttyS0,115200",
    ]);
    assert_eq!(out["version"], "6.1.0-10-amd64", "{out}");
    assert_eq!(out["commit"], commit.as_str());
    assert_eq!(fs::read(dir.join("vmlinuz")).unwrap(), b"new kernel");
    assert_eq!(fs::read(dir.join("initrd.img")).unwrap(), b"new initrd");
    assert_eq!(out["kernel"]["path"], "/boot/vmlinuz-6.1.0-10-amd64");
    let cmdline = format!(
        "console=ttyS0,115200 root=/dev/nfs nfsroot=10.0.0.1:/node@{commit},vers=3,tcp,nolock \
         ip=dhcp ro boot=canopy"
    );
    assert_eq!(out["cmdline"], cmdline.as_str());
    let pxe = fs::read_to_string(dir.join("pxelinux.cfg/default")).unwrap();
    assert!(pxe.contains(&format!("APPEND {cmdline}\n")), "{pxe}");
    assert!(pxe.contains("KERNEL vmlinuz\n") && pxe.contains("INITRD initrd.img,canopy.cpio\n"));
    let ipxe = fs::read_to_string(dir.join("boot.ipxe")).unwrap();
    assert!(ipxe.starts_with("#!ipxe\n"), "{ipxe}");
    assert!(ipxe.contains(&cmdline) && ipxe.contains("initrd --name canopy.cpio canopy.cpio"));

    // The boot script: valid sh, builds on initramfs-tools' NFS mount, makes the
    // host identity of the shared list.
    let unpacked = unpack_cpio(&env, &dir.join("canopy.cpio"), "cpio");
    let script = unpacked.join("scripts/canopy");
    cmd("sh").arg("-n").arg(&script).success();
    let text = fs::read_to_string(&script).unwrap();
    for needed in [
        "nfs_mount_root",
        "mount -n -t overlay",
        "canopy_machine_id",
        "canopy_in_root ssh-keygen 'ssh-keygen -A'",
    ] {
        assert!(text.contains(needed), "{needed} missing from:\n{text}");
    }

    // Again over the same directory: replaced whole, nothing left behind.
    let mut before: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    before.sort();
    let text = env.stdout([
        "netboot",
        "node",
        dir.to_str().unwrap(),
        "--server",
        "h:2050",
    ]);
    assert!(text.contains("kernel 6.1.0-10-amd64"), "{text}");
    assert!(
        text.contains(&format!(
            "nfsroot=h:/node@{commit},vers=3,tcp,nolock,port=2050 "
        )),
        "{text}"
    );
    let mut after: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    after.sort();
    assert_eq!(before, after);
    assert_eq!(
        after,
        [
            "boot.ipxe",
            "canopy.cpio",
            "initrd.img",
            "pxelinux.cfg",
            "vmlinuz"
        ]
    );
}

#[test]
fn roots_that_cannot_boot_are_refused_by_name_and_nothing_is_written() {
    let env = Canopy::init("netboot-refused");
    fake_bootable(&env, "nokernel", &[("etc/hostname", b"x")]);
    fake_bootable(
        &env,
        "noinitrd",
        &[
            ("boot/vmlinuz-6.1.0-10-amd64", b"k"),
            ("usr/share/initramfs-tools/scripts/nfs", b""),
        ],
    );
    fake_bootable(
        &env,
        "dracut",
        &[
            ("boot/vmlinuz-6.1.0-10-amd64", b"k"),
            ("boot/initrd.img-6.1.0-10-amd64", b"i"),
        ],
    );
    fake_bootable(&env, "node", BOOTABLE);
    let dir = env.path("out");
    let refused = |args: &[&str], says: &[&str]| {
        let mut all = vec!["netboot"];
        all.extend_from_slice(args);
        let out = env.fails(all);
        let err = String::from_utf8_lossy(&out.stderr);
        for s in says {
            assert!(err.contains(s), "{args:?}: {s:?} not in {err}");
        }
        assert!(!dir.exists(), "{args:?} wrote {}", dir.display());
    };
    let d = dir.to_str().unwrap();
    refused(
        &["nokernel", d, "--server", "h"],
        &["root nokernel has no kernel", "linux-image-amd64"],
    );
    refused(
        &["noinitrd", d, "--server", "h"],
        &["root noinitrd", "no /boot/initrd.img-6.1.0-10-amd64"],
    );
    refused(
        &["dracut", d, "--server", "h"],
        &["root dracut", "initramfs-tools"],
    );
    refused(&["node", d, "--server", "a b"], &["--server \"a b\""]);
    refused(
        &["node", d, "--server", "h", "--args", "x\ninit=/bin/sh"],
        &["--args"],
    );
    refused(&["nosuch", d, "--server", "h"], &["nosuch"]);
}

/// GET over HTTP with curl: status and body.
fn get(url: &str, host: Option<&str>) -> (u16, Vec<u8>) {
    let mut c = cmd("curl");
    c.args(["-s", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(h) = host {
        c.arg("-H").arg(format!("Host: {h}"));
    }
    let out = c.arg(url).output();
    let mut body = out.stdout;
    let pos = body.iter().rposition(|&b| b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[pos + 1..]).parse().unwrap();
    body.truncate(pos);
    (code, body)
}

#[test]
fn boot_ipxe_names_the_current_commit_and_immutable_boot_files() {
    let env = Canopy::init("netboot-ipxe");
    fake_bootable(&env, "node", BOOTABLE);
    fake_bootable(&env, "plain", &[("etc/hostname", b"x")]);
    let commit = env.current("node");
    let server = crate::mount::Server::start(&env, "127.0.0.1:0");
    let url = |path: &str| format!("{}{path}", server.url);

    let (code, body) = get(
        &url("/v1/roots/node/boot.ipxe?nfs=10.0.2.2&args=console%3DttyS0+quiet"),
        None,
    );
    let script = String::from_utf8(body).unwrap();
    assert_eq!(code, 200, "{script}");
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains(&format!(
            "console=ttyS0 quiet root=/dev/nfs nfsroot=10.0.2.2:/node@{commit},vers=3,tcp,nolock ip=dhcp ro boot=canopy"
        )),
        "{script}"
    );
    // Every file the script names is served, and is what the root holds.
    let named: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("kernel ") || l.starts_with("initrd "))
        .map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("/v1/"))
                .unwrap()
        })
        .collect();
    assert_eq!(named.len(), 3, "{script}");
    let fetched: Vec<Vec<u8>> = named
        .iter()
        .map(|p| {
            let (code, body) = get(&url(p), None);
            assert_eq!(code, 200, "{p}");
            body
        })
        .collect();
    assert_eq!(fetched[0], b"new kernel");
    assert_eq!(fetched[1], b"new initrd");
    let dir = env.path("files");
    env.cmd(["netboot", "node", dir.to_str().unwrap(), "--server", "h"])
        .success();
    assert_eq!(fetched[2], fs::read(dir.join("canopy.cpio")).unwrap());

    // Without ?nfs=, the host the script was asked from; a host that could smuggle
    // words into the command line is refused.
    let (code, body) = get(&url("/v1/roots/node/boot.ipxe"), Some("boot.example:7750"));
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("nfsroot=boot.example:/node@"));
    for bad in [
        "/v1/roots/node/boot.ipxe?nfs=a%20init%3D%2Fbin%2Fsh",
        "/v1/roots/node/boot.ipxe?nfs=h&args=a%0Aboot",
    ] {
        let (code, body) = get(&url(bad), None);
        assert_eq!(code, 400, "{bad}: {}", String::from_utf8_lossy(&body));
    }
    let (code, body) = get(&url("/v1/roots/plain/boot.ipxe?nfs=h"), None);
    assert_eq!(code, 404);
    assert!(String::from_utf8_lossy(&body).contains("root plain has no kernel"));
    let (code, _) = get(&url("/v1/roots/nosuch/boot.ipxe?nfs=h"), None);
    assert_eq!(code, 404);
    let (code, _) = get(&url("/v1/netboot/canopy-boot-0000.cpio"), None);
    assert_eq!(code, 404);

    // A new commit: the next boot gets it.
    fake_bootable(&env, "node", &BOOTABLE[2..]);
    let newer = env.current("node");
    assert_ne!(newer, commit);
    let (_, body) = get(&url("/v1/roots/node/boot.ipxe?nfs=h"), None);
    assert!(String::from_utf8_lossy(&body).contains(&format!("/node@{newer},")));
}
