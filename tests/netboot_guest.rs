//! QEMU guests for the diskless-boot tests: a network namespace of their own, `canopy
//! serve` in it on the fixed ports a stock initramfs expects, and guests (TCG,
//! user-mode networking) whose second serial port carries a root shell the tests drive.

use crate::util::{BIN, Canopy};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A network namespace with loopback up, held by a sleeping process.
pub struct Netns {
    holder: Child,
}

impl Netns {
    /// A new namespace with its loopback up.
    pub fn new() -> Netns {
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
    pub fn command(&self, program: &str) -> Command {
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
pub struct BootServer {
    child: Child,
}

impl BootServer {
    /// Starts the server on `env`'s store; its log goes to `serve-N.log`.
    pub fn start(env: &Canopy, ns: &Netns, n: usize) -> BootServer {
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

    /// Bytes the server made the kernel read from storage (`read_bytes` of
    /// /proc/PID/io, all its threads): reads the page cache answered are not counted.
    pub fn disk_reads(&self) -> u64 {
        let pid = self.child.id();
        // nsenter execs the server: the pid is canopy's own.
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "canopy", "pid {pid} is not the server");
        let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("read_bytes:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no read_bytes in /proc/{pid}/io:\n{io}"))
    }

    /// Stops the server (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
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
pub struct Guest {
    /// Its name in messages and file names.
    pub name: String,
    child: Child,
    console: PathBuf,
    socket: PathBuf,
    shell: Option<UnixStream>,
    pending: Vec<u8>,
}

/// Kernel arguments for a guest on a busy machine: its console on ttyS0, no timer
/// check (TCG's timer looks broken under load), a panic stops the guest.
pub const GUEST_ARGS: &str = "console=ttyS0 no_timer_check panic=-1";

impl Guest {
    /// Starts QEMU in `ns`: `boot` says how it boots, `netdev` adds options to its
    /// user-mode network (e.g. `,bootfile=URL`).
    pub fn start(env: &Canopy, ns: &Netns, name: &str, boot: &[String], netdev: &str) -> Guest {
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

    /// Waits until the guest's console shows `text` (e.g. the kernel's first line).
    pub fn wait_for_console(&mut self, text: &str) {
        let deadline = Instant::now() + BOOT_LIMIT;
        while !String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).contains(text)
        {
            if Instant::now() > deadline {
                self.fail(&format!(
                    "{text:?} not on the console within the boot limit"
                ));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!("qemu exited ({status})"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The last 40 lines of the guest's console.
    fn console_tail(&self) -> String {
        let text = fs::read(&self.console).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Fails the test, naming the guest and showing its console's end.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "guest {}: {what}; last console lines:\n{}",
            self.name,
            self.console_tail()
        )
    }

    /// Waits until the probe's shell answers on the second serial port.
    pub fn wait_for_shell(&mut self) {
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
    pub fn run(&mut self, script: &str) -> (String, i32) {
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
    pub fn ok(&mut self, script: &str) -> String {
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
pub fn system_state(guest: &mut Guest) -> String {
    let (out, _) = guest.run("systemctl is-system-running --wait");
    let state = out.trim().to_string();
    if state != "running" {
        let (failed, _) = guest.run("systemctl --failed --no-legend --no-pager");
        guest.fail(&format!("system is {state:?}; failed units:\n{failed}"));
    }
    state
}

/// Drops every file under `dir` from the page cache (written back first, since dirty
/// pages stay), so the next reads of them come from the disk.
pub fn evict_from_page_cache(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            evict_from_page_cache(&entry.path());
        } else if kind.is_file() {
            let file = fs::File::open(entry.path()).unwrap();
            file.sync_data().unwrap();
            // SAFETY: a valid descriptor, the whole file.
            let err =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(err, 0, "posix_fadvise {}", entry.path().display());
        }
    }
}
