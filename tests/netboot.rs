//! Diskless nodes: `canopy netboot` and the iPXE endpoint on small roots made for the
//! purpose, then real boots: a Debian 12 root with systemd, its kernel and the
//! initramfs initramfs-tools built for it when it was configured, booted in QEMU (TCG,
//! user-mode networking) from `canopy serve --nfs` — one guest from the files `canopy
//! netboot` wrote, one through QEMU's own iPXE from `boot.ipxe`.
//!
//! The boots take minutes of emulated CPU, so they run when `CANOPY_TEST_BOOT=1`
//! (scripts/test.sh sets it) and say so otherwise. Server and guests live in a network
//! namespace of their own (loopback only: the guests reach its 127.0.0.1 as 10.0.2.2),
//! so the NFS port 2049, the portmapper's 111 and HTTP's 7750 are theirs alone and
//! nothing leaves the machine. A test package in the root runs a shell on the guest's
//! second serial port, which the test drives.

use crate::debs;
use crate::netboot_guest::{
    BootServer, GUEST_ARGS, Guest, Netns, evict_from_page_cache, system_state,
};
use crate::util::{Canopy, cmd, simple_deb, write_file};
use sha2::Digest;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

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

// ---- Real boots ----------------------------------------------------------------

/// Whether the QEMU boots run (scripts/test.sh sets `CANOPY_TEST_BOOT=1`).
fn boots_enabled(test: &str) -> bool {
    let on = std::env::var_os("CANOPY_TEST_BOOT").is_some_and(|v| v == "1");
    if !on {
        eprintln!("netboot::{test}: not run: it boots QEMU guests; set CANOPY_TEST_BOOT=1");
    }
    on
}

/// Where the test package says which version it is.
const PROBE_VERSION_FILE: &str = "/usr/share/canopy-test-probe/version";

/// The test package: a root shell on the second serial port once the system is up
/// (`raw -echo`: what the test writes is read as commands, not echoed; no prompts, even
/// in a shell the unit restarted), and its version in a file, so that two commits of a
/// root differ in a file nodes can read.
fn probe_deb(dir: &Path, version: &str) -> PathBuf {
    simple_deb(
        dir,
        "canopy-test-probe",
        version,
        &[
            (
                "usr/lib/systemd/system/canopy-test-probe.service",
                b"[Unit]\nDescription=canopy test probe: a shell on ttyS1\n\
                  After=multi-user.target\n\n[Service]\n\
                  Environment=PS1= PS2=\n\
                  ExecStart=/bin/sh -c 'stty -F /dev/ttyS1 raw -echo && exec /bin/sh </dev/ttyS1 >/dev/ttyS1 2>&1'\n\
                  Restart=always\n",
            ),
            (
                "etc/systemd/system/multi-user.target.d/canopy-test-probe.conf",
                b"[Unit]\nWants=canopy-test-probe.service\n",
            ),
            (&PROBE_VERSION_FILE[1..], format!("{version}\n").as_bytes()),
        ],
    )
}

/// The store with root `node` (Debian 12, systemd, kernel, initramfs-tools,
/// openssh-server and the probe), assembled once for the boot tests.
fn booted_store() -> &'static Canopy {
    static STORE: OnceLock<Canopy> = OnceLock::new();
    STORE.get_or_init(|| {
        let env = Canopy::init("netboot-root");
        let probe = probe_deb(&env.mkdir("probe"), "1.0");
        env.cmd(["import", "deb"])
            .args(
                debs::more_debs(debs::NETBOOT_PACKAGES)
                    .iter()
                    .map(|d| &d.path),
            )
            .arg(&probe)
            .success();
        let out = env
            .cmd(["assemble", "node", "canopy-test-probe"])
            .args(debs::NETBOOT_PACKAGES)
            .stdout();
        assert!(out.contains("configured "), "{out}");
        // Statics are never dropped: the store goes when the test process exits.
        crate::installed::remove_at_exit(env.path(""));
        env
    })
}

/// What one node says about itself: its machine id, its ssh host key fingerprints,
/// and a digest of the programs and systemd files it runs (paths, sizes, SHA-256).
struct NodeFacts {
    machine_id: String,
    host_keys: Vec<String>,
    files: String,
}

fn node_facts(guest: &mut Guest, commit: &str) -> NodeFacts {
    assert_eq!(system_state(guest), "running");
    // / is the overlay; under it, the pinned commit over NFS.
    assert_eq!(guest.ok("stat -f -c %T /").trim(), "overlayfs");
    let lower = guest.ok("findmnt -n -o SOURCE,FSTYPE /run/canopy/ro");
    assert!(
        lower.contains(&format!("10.0.2.2:/node@{commit}")) && lower.contains("nfs"),
        "{}: {lower}",
        guest.name
    );
    let machine_id = guest.ok("cat /etc/machine-id").trim().to_string();
    assert!(
        machine_id.len() == 32 && machine_id.bytes().all(|c| c.is_ascii_hexdigit()),
        "{}: machine id {machine_id:?}",
        guest.name
    );
    // Host keys were made at boot, in the writable layer: sshd runs with them, and
    // the shared root under it has none.
    assert_eq!(guest.ok("systemctl is-active ssh").trim(), "active");
    guest.ok("! ls /run/canopy/ro/etc/ssh | grep ssh_host_");
    let keys = guest.ok("for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -l -f \"$k\"; done");
    let host_keys: Vec<String> = keys
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("SHA256:")))
        .map(str::to_string)
        .collect();
    assert!(
        host_keys.len() >= 3 && keys.contains("(ED25519)"),
        "{}: host keys:\n{keys}",
        guest.name
    );
    let listing = guest.ok(
        "cd / && find usr/bin usr/sbin usr/lib/systemd -type f | sort | \
         xargs -d '\\n' sha256sum | tee /run/canopy-files | wc -l; sha256sum < /run/canopy-files",
    );
    let count: usize = listing.lines().next().unwrap().trim().parse().unwrap();
    assert!(
        count > 500,
        "{}: only {count} files:\n{listing}",
        guest.name
    );
    NodeFacts {
        machine_id,
        host_keys,
        files: listing,
    }
}

#[test]
fn nodes_boot_from_a_root_over_nfs_with_state_of_their_own() {
    if !boots_enabled("nodes_boot_from_a_root_over_nfs_with_state_of_their_own") {
        return;
    }
    let env = booted_store();
    let commit = env.current("node");
    let ns = Netns::new();
    let mut server = BootServer::start(env, &ns, 1);

    // No host key is in the shared root: configure took them out.
    let etc_ssh = env.stdout(["ls", "node", "/etc/ssh"]);
    assert!(
        etc_ssh.contains("sshd_config") && !etc_ssh.contains("ssh_host_"),
        "{etc_ssh}"
    );

    // The store leaves the page cache: what the server reads from the disk for the
    // first node, and then for a second one, is measured. `canopy netboot` reads the
    // kernel and initrd after that, so neither node's count holds them.
    evict_from_page_cache(env.store());
    let dir = env.path("tftp");
    let files = env.json([
        "netboot",
        "node",
        dir.to_str().unwrap(),
        "--server",
        "10.0.2.2",
    ]);
    let cmdline = files["cmdline"].as_str().unwrap().to_string();
    assert!(
        cmdline.contains(&format!("nfsroot=10.0.2.2:/node@{commit},")),
        "{files}"
    );

    // Guest a boots from the files `canopy netboot` wrote. QEMU takes one initrd: the
    // two images laid out as boot loaders lay them out, each on a 4-byte boundary.
    let boot_from = |dir: &Path, name: &str| {
        let mut initrd = fs::read(dir.join("initrd.img")).unwrap();
        initrd.resize(initrd.len().div_ceil(4) * 4, 0);
        initrd.extend(fs::read(dir.join("canopy.cpio")).unwrap());
        let both = env.path(format!("{name}-initrd-and-canopy.img"));
        fs::write(&both, initrd).unwrap();
        vec![
            "-kernel".into(),
            dir.join("vmlinuz").display().to_string(),
            "-initrd".into(),
            both.display().to_string(),
        ]
    };
    let mut boot = boot_from(&dir, "a");
    boot.extend(["-append".into(), format!("{GUEST_ARGS} {cmdline}")]);
    let before = server.disk_reads();
    let started = Instant::now();
    let mut a = Guest::start(env, &ns, "a", &boot, "");
    a.wait_for_shell();
    assert_eq!(system_state(&mut a), "running");
    let a_boot = started.elapsed();
    let first = server.disk_reads() - before;

    // Guest b boots after it with QEMU's own iPXE, told by DHCP to chain boot.ipxe.
    // Once its kernel runs, boot.ipxe has pinned it to the commit: the root is then
    // upgraded (the probe 2.0 has another version file) while b boots and a runs.
    let ipxe = ",bootfile=http://10.0.2.2:7750/v1/roots/node/boot.ipxe?nfs=10.0.2.2\
                &args=console%3DttyS0+no_timer_check+panic%3D-1";
    let started = Instant::now();
    let mut b = Guest::start(env, &ns, "b", &["-boot".into(), "n".into()], ipxe);
    b.wait_for_console("Linux version");
    let upgrade = std::thread::spawn(move || {
        let probe = probe_deb(&env.mkdir("probe-2"), "2.0");
        env.cmd(["import", "deb"]).arg(&probe).success();
        env.stdout(["upgrade", "node"])
    });
    b.wait_for_shell();
    assert_eq!(system_state(&mut b), "running");
    let b_boot = started.elapsed();
    let second = server.disk_reads() - before - first;
    eprintln!(
        "netboot: server disk reads: first node {first} bytes (booted in {a_boot:.0?}), \
         second node {second} bytes (booted in {b_boot:.0?})"
    );
    // The first boot read the root from the disk; the second was served from the
    // server's page cache: one copy of the root, read once. A second copy would read
    // about as much again; what the second boot does read (files only it opens, and
    // pages other tests on a busy machine pushed out in the minutes between) stays
    // well under a quarter.
    assert!(
        first >= 8 << 20,
        "the first node's boot read only {first} bytes from the disk: the store's files \
         stayed in memory (is {} on tmpfs? point TMPDIR at a disk)",
        env.store().display()
    );
    assert!(
        second * 4 <= first,
        "the second node's boot read {second} bytes from the disk, the first's {first}"
    );

    // Same files, their own identity.
    let fa = node_facts(&mut a, &commit);
    let fb = node_facts(&mut b, &commit);
    assert_eq!(
        fa.files, fb.files,
        "two nodes of one commit see different files"
    );
    assert_ne!(fa.machine_id, fb.machine_id, "two nodes share a machine id");
    for key in &fa.host_keys {
        assert!(
            !fb.host_keys.contains(key),
            "two nodes share host key {key}"
        );
    }
    // The files are the root's: a program compared with the store's copy.
    let sshd = env.cmd(["cat", "node", "/usr/sbin/sshd"]).output().stdout;
    let digest = hex::encode(sha2::Sha256::digest(&sshd));
    assert_eq!(
        a.ok("grep ' usr/sbin/sshd$' /run/canopy-files").trim(),
        format!("{digest}  usr/sbin/sshd")
    );

    // Writes stay in the node that made them.
    a.ok("echo only-a > /var/lib/canopy-test-file && sync");
    assert_eq!(a.ok("cat /var/lib/canopy-test-file").trim(), "only-a");
    b.ok("test ! -e /var/lib/canopy-test-file");

    // The upgrade made a new commit; the running nodes stay on theirs.
    let upgraded = upgrade.join().unwrap();
    assert!(upgraded.contains("canopy-test-probe"), "{upgraded}");
    let newer = env.current("node");
    assert_ne!(newer, commit);
    // And the server restarts under them: their next reads are answered.
    server.stop();
    let server = BootServer::start(env, &ns, 2);
    for guest in [&mut a, &mut b] {
        let out = guest.ok(&format!(
            "cat {PROBE_VERSION_FILE}; wc -c < /usr/share/doc/systemd/copyright; \
             dpkg-query -W -f '${{Version}}' systemd"
        ));
        assert!(out.starts_with("1.0\n") && out.contains("252."), "{out}");
        assert_eq!(
            guest
                .ok("cat /var/lib/canopy-test-file 2>/dev/null || echo none")
                .trim(),
            if guest.name == "a" { "only-a" } else { "none" }
        );
    }
    drop((a, b));

    // A node booted now gets the new commit: netboot's files name it, and so does
    // boot.ipxe, which guest c boots from.
    let files = env.json([
        "netboot",
        "node",
        dir.to_str().unwrap(),
        "--server",
        "10.0.2.2",
    ]);
    assert_eq!(files["commit"], newer.as_str(), "{files}");
    let mut c = Guest::start(env, &ns, "c", &["-boot".into(), "n".into()], ipxe);
    c.wait_for_shell();
    let fc = node_facts(&mut c, &newer);
    assert_eq!(c.ok(&format!("cat {PROBE_VERSION_FILE}")).trim(), "2.0");
    assert_ne!(fc.machine_id, fa.machine_id);
    drop(server);
}
