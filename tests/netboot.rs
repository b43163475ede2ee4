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
use crate::util::{BIN, Canopy, cmd, simple_deb, write_file};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// The test package: a root shell on the second serial port once the system is up
/// (`raw -echo`: what the test writes is read as commands, not echoed).
fn probe_deb(dir: &Path) -> PathBuf {
    simple_deb(
        dir,
        "canopy-test-probe",
        "1.0",
        &[
            (
                "usr/lib/systemd/system/canopy-test-probe.service",
                b"[Unit]\nDescription=canopy test probe: a shell on ttyS1\n\
                  After=multi-user.target\n\n[Service]\n\
                  ExecStart=/bin/sh -c 'stty -F /dev/ttyS1 raw -echo && exec /bin/sh </dev/ttyS1 >/dev/ttyS1 2>&1'\n\
                  Restart=always\n",
            ),
            (
                "etc/systemd/system/multi-user.target.d/canopy-test-probe.conf",
                b"[Unit]\nWants=canopy-test-probe.service\n",
            ),
        ],
    )
}

/// The store with root `node` (Debian 12, systemd, kernel, initramfs-tools and the
/// probe), assembled once for the boot tests.
fn booted_store() -> &'static Canopy {
    static STORE: OnceLock<Canopy> = OnceLock::new();
    STORE.get_or_init(|| {
        let env = Canopy::init("netboot-root");
        let probe = probe_deb(&env.mkdir("probe"));
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

/// A network namespace with loopback up, held by a sleeping process.
struct Netns {
    holder: Child,
}

impl Netns {
    fn new() -> Netns {
        let mut holder = Command::new("unshare")
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && echo up && exec sleep 100000",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare runs");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "up\n", "the namespace's loopback did not come up");
        Netns { holder }
    }

    /// `program` to run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.holder.id()))
            .arg("--")
            .arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// `canopy serve` in the namespace: HTTP on 7750, NFS on 2049, the portmapper on 111.
struct BootServer {
    child: Child,
}

impl BootServer {
    fn start(env: &Canopy, ns: &Netns, n: usize) -> BootServer {
        let log = env.path(format!("serve-{n}.log"));
        let mut child = ns
            .command(BIN)
            .arg("--store")
            .arg(env.store())
            .args([
                "-v",
                "serve",
                "--listen",
                "127.0.0.1:7750",
                "--nfs",
                "127.0.0.1:2049",
            ])
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting canopy serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains("on http://") {
                        break;
                    }
                }
                _ => panic!(
                    "canopy serve did not start: {seen}{}",
                    fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        }
        assert!(seen.contains("portmapper on 127.0.0.1:111"), "{seen}");
        BootServer { child }
    }

    fn stop(&mut self) {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for BootServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a guest may take to boot to its shell (TCG on a loaded machine).
const BOOT_LIMIT: Duration = Duration::from_secs(900);
/// How long one command in a guest may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// A QEMU guest; its console goes to a file, its shell to a socket.
struct Guest {
    name: String,
    child: Child,
    console: PathBuf,
    socket: PathBuf,
    shell: Option<UnixStream>,
    pending: Vec<u8>,
}

/// Kernel arguments for a guest on a busy machine: its console on ttyS0, no timer
/// check (TCG's timer looks broken under load), a panic stops the guest.
const GUEST_ARGS: &str = "console=ttyS0 no_timer_check panic=-1";

impl Guest {
    fn start(env: &Canopy, ns: &Netns, name: &str, boot: &[String], netdev: &str) -> Guest {
        let console = env.path(format!("{name}-console.log"));
        let socket = env.path(format!("{name}.sock"));
        let child = ns
            .command("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "1024", "-smp", "1", "-no-reboot"])
            .args(["-display", "none", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-chardev")
            .arg(format!(
                "socket,id=shell,path={},server=on,wait=off",
                socket.display()
            ))
            .args(["-serial", "chardev:shell"])
            .arg("-netdev")
            .arg(format!("user,id=n0{netdev}"))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .args(boot)
            .stdin(Stdio::null())
            .stdout(fs::File::create(env.path(format!("{name}-qemu.log"))).unwrap())
            .stderr(fs::File::create(env.path(format!("{name}-qemu.err"))).unwrap())
            .spawn()
            .expect("starting qemu-system-x86_64");
        Guest {
            name: name.to_string(),
            child,
            console,
            socket,
            shell: None,
            pending: Vec::new(),
        }
    }

    fn console_tail(&self) -> String {
        let text = fs::read(&self.console).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "guest {}: {what}; last console lines:\n{}",
            self.name,
            self.console_tail()
        )
    }

    /// Waits until the probe's shell answers on the second serial port.
    fn wait_for_shell(&mut self) {
        let deadline = Instant::now() + BOOT_LIMIT;
        while self.shell.is_none() {
            if Instant::now() > deadline {
                self.fail("no shell within the boot limit");
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("qemu exited ({status})"));
            }
            match UnixStream::connect(&self.socket) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    self.shell = Some(s);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
        // Before the probe runs, lines written to the port are lost: ask until answered.
        let mut n = 0;
        loop {
            n += 1;
            // An interactive shell (its input is a terminal) prompts: no prompts.
            let asked = format!("PS1=''; PS2=''; echo ready-$((1+{n}))\n");
            self.shell
                .as_mut()
                .unwrap()
                .write_all(asked.as_bytes())
                .unwrap();
            if self
                .read_until(&format!("ready-{}", n + 1), Duration::from_secs(5))
                .is_some()
            {
                return;
            }
            if Instant::now() > deadline {
                self.fail("the probe's shell never answered");
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("qemu exited ({status})"));
            }
        }
    }

    /// Reads the shell's output until a line holds `marker`: what came before it, and
    /// the rest of that line.
    fn read_until(&mut self, marker: &str, limit: Duration) -> Option<(String, String)> {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            let found = text
                .find(marker)
                .and_then(|pos| text[pos..].find('\n').map(|eol| (pos, pos + eol)));
            if let Some((pos, eol)) = found {
                let before = text[..pos].to_string();
                let rest = text[pos + marker.len()..eol].trim().to_string();
                self.pending = text.as_bytes()[eol + 1..].to_vec();
                return Some((before, rest));
            }
            if Instant::now() > deadline {
                return None;
            }
            match self.shell.as_mut().unwrap().read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => self.fail(&format!("reading its shell: {e}")),
            }
        }
    }

    /// Runs `script` in the guest's shell; its output (stdout and stderr) and status.
    fn run(&mut self, script: &str) -> (String, i32) {
        self.pending.clear();
        // The marker is computed by the shell, so an echo of the command never matches.
        let line = format!("{{ {script}\n}} 2>&1; echo \"@@end-$((40+2)) $?\"\n");
        self.shell
            .as_mut()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
        let Some((out, status)) = self.read_until("@@end-42", COMMAND_LIMIT) else {
            self.fail(&format!("no answer to {script:?}"));
        };
        (out, status.parse().unwrap_or(-1))
    }

    /// Runs `script`, which must succeed; its output.
    fn ok(&mut self, script: &str) -> String {
        let (out, status) = self.run(script);
        if status != 0 {
            self.fail(&format!("{script:?} exited {status}: {out}"));
        }
        out
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks a guest for systemd's state once the boot is over; `running` or the failures.
fn system_state(guest: &mut Guest) -> String {
    let (out, _) = guest.run("systemctl is-system-running --wait");
    let state = out.trim().to_string();
    if state != "running" {
        let (failed, _) = guest.run("systemctl --failed --no-legend --no-pager");
        guest.fail(&format!("system is {state:?}; failed units:\n{failed}"));
    }
    state
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

    // Guest a boots from the files `canopy netboot` wrote. QEMU takes one initrd: the
    // two images laid out as boot loaders lay them out, each on a 4-byte boundary.
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
    let mut initrd = fs::read(dir.join("initrd.img")).unwrap();
    initrd.resize(initrd.len().div_ceil(4) * 4, 0);
    initrd.extend(fs::read(dir.join("canopy.cpio")).unwrap());
    let both = env.path("initrd-and-canopy.img");
    fs::write(&both, initrd).unwrap();
    let mut a = Guest::start(
        env,
        &ns,
        "a",
        &[
            "-kernel".into(),
            dir.join("vmlinuz").display().to_string(),
            "-initrd".into(),
            both.display().to_string(),
            "-append".into(),
            format!("{GUEST_ARGS} {cmdline}"),
        ],
        "",
    );
    // Guest b boots with QEMU's own iPXE, told by DHCP to chain boot.ipxe.
    let mut b = Guest::start(
        env,
        &ns,
        "b",
        &["-boot".into(), "n".into()],
        ",bootfile=http://10.0.2.2:7750/v1/roots/node/boot.ipxe?nfs=10.0.2.2\
         &args=console%3DttyS0+no_timer_check+panic%3D-1",
    );
    a.wait_for_shell();
    b.wait_for_shell();

    let mut ids = Vec::new();
    for guest in [&mut a, &mut b] {
        assert_eq!(system_state(guest), "running");
        // / is the overlay; under it, the pinned commit over NFS.
        assert_eq!(guest.ok("stat -f -c %T /").trim(), "overlayfs");
        let lower = guest.ok("findmnt -n -o SOURCE,FSTYPE /run/canopy/ro");
        assert!(
            lower.contains(&format!("10.0.2.2:/node@{commit}")) && lower.contains("nfs"),
            "{lower}"
        );
        let id = guest.ok("cat /etc/machine-id").trim().to_string();
        assert!(
            id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
            "machine id {id:?}"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "two nodes of one root share a machine id");

    // Writes stay in the node that made them.
    a.ok("echo only-a > /var/lib/canopy-test-file && sync");
    assert_eq!(a.ok("cat /var/lib/canopy-test-file").trim(), "only-a");
    b.ok("test ! -e /var/lib/canopy-test-file");

    // The server restarts under the running nodes: their next reads are answered.
    server.stop();
    let server = BootServer::start(env, &ns, 2);
    for guest in [&mut a, &mut b] {
        let out = guest
            .ok("wc -c < /usr/share/doc/systemd/copyright; dpkg-query -W -f '${Version}' systemd");
        assert!(out.contains("252."), "{out}");
        assert_eq!(
            guest
                .ok("cat /var/lib/canopy-test-file 2>/dev/null || echo none")
                .trim(),
            if guest.name == "a" { "only-a" } else { "none" }
        );
    }
    drop(server);
}
