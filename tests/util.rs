//! Harness for the integration tests, in the manner of ripgrep's `tests/util.rs`.
//!
//! [`Canopy`] owns a fresh temporary directory with a store path inside it and runs the
//! real `canopy` binary (`CARGO_BIN_EXE_canopy`) against that store. [`TestCommand`]
//! runs any program (canopy, `dpkg-deb`, `chroot`…) and, when the outcome is not the one
//! asserted, panics with the full command line, working directory, environment changes,
//! exit status, stdout and stderr. The rest are the checks the tests share: a store
//! snapshot to prove "nothing changed", a tree comparison to prove "identical to
//! `dpkg-deb -x`", and parsers for canopy's result lines.
//!
//! Set `CANOPY_TEST_KEEP=1` to keep the temporary directory of a failing test (and those
//! of fixtures shared in statics, otherwise removed as the test process exits).

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_canopy");

/// A test environment: a fresh temporary directory and a store path inside it.
pub struct Canopy {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    store: PathBuf,
    /// Set on every canopy command (e.g. the S3 endpoint and credentials).
    envs: Vec<(String, std::ffi::OsString)>,
}

impl Canopy {
    /// A fresh directory whose store (`DIR/store`) is not initialised yet.
    pub fn new(name: &str) -> Canopy {
        let dir = tempfile::Builder::new()
            .prefix(&format!("canopy-{name}-"))
            .tempdir()
            .expect("creating a temporary directory for the test");
        // Tests compare modes, so never let the umask decide them.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().to_path_buf();
        remove_at_exit(root.clone());
        let store = root.join("store");
        Canopy {
            dir: Some(dir),
            root,
            store,
            envs: Vec::new(),
        }
    }

    /// Sets `key` to `value` in the environment of every canopy command this runs.
    pub fn with_env(mut self, key: &str, value: impl AsRef<OsStr>) -> Canopy {
        self.envs
            .push((key.to_string(), value.as_ref().to_os_string()));
        self
    }

    /// A fresh directory with an initialised store.
    pub fn init(name: &str) -> Canopy {
        let canopy = Canopy::new(name);
        let out = canopy.stdout(["init"]);
        assert!(
            out.starts_with(&format!("initialised store at {}", canopy.store.display())),
            "unexpected `canopy init` output:\n{out}"
        );
        canopy
    }

    /// A fresh directory holding a copy of this environment's store. Object files are
    /// immutable once written (new ones arrive by rename, gc only unlinks), so the copy
    /// hard-links them, which keeps forks of a big store cheap; every other file (refs,
    /// config, key, lock) is a real copy.
    pub fn fork(&self, name: &str) -> Canopy {
        let copy = Canopy::new(name);
        cmd("cp")
            .arg("-al")
            .arg(&self.store)
            .arg(&copy.store)
            .success();
        for rel in walk(&copy.store) {
            let path = copy.store.join(&rel);
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_file() && !rel.starts_with("objects") {
                let content = fs::read(&path).unwrap();
                fs::remove_file(&path).unwrap();
                fs::write(&path, content).unwrap();
                fs::set_permissions(&path, meta.permissions()).unwrap();
            }
        }
        copy
    }

    /// What [`Canopy::with_env`] set, for canopy processes started another way.
    pub fn envs(&self) -> &[(String, std::ffi::OsString)] {
        &self.envs
    }

    /// The store.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// A path inside the temporary directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// A directory inside the temporary directory, created (0755) if missing.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let path = self.root.join(rel);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `canopy --store STORE ARGS…`, run in the temporary directory.
    pub fn cmd<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.bare_cmd(["--store".as_ref(), self.store.as_os_str()]);
        command.args(args);
        command
    }

    /// `canopy ARGS…` without `--store`, run in the temporary directory.
    pub fn bare_cmd<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = cmd(BIN);
        command.args(args).current_dir(&self.root);
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        command
    }

    /// Runs canopy, asserts success and returns its stdout.
    pub fn stdout<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).stdout()
    }

    /// Runs canopy, asserts it exits with status 1 and returns its output.
    pub fn fails<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args).failure(1)
    }

    /// Runs canopy with `--json`, asserts success and parses stdout.
    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.cmd(args);
        command.arg("--json");
        let out = command.stdout();
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{} printed invalid JSON ({e}):\n{out}", command.line()))
    }

    /// Snapshot of the store (see [`Snapshot`]).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::of(&self.store)
    }

    /// `canopy fsck`: asserts it exits 0 and says "…, no problems".
    pub fn fsck_clean(&self) {
        let out = self.stdout(["fsck"]);
        assert!(
            out.lines().any(|l| l.starts_with("fsck: ")
                && l.contains(" objects verified, ")
                && l.ends_with(" refs checked, no problems")),
            "no `fsck: N objects verified, R refs checked, no problems` line:\n{out}"
        );
    }

    /// `canopy fsck --json`: asserts it exits 0 with no problems; returns the report.
    pub fn fsck_report(&self) -> serde_json::Value {
        let report = self.json(["fsck"]);
        assert_eq!(
            report["problems"],
            serde_json::json!([]),
            "fsck --json: {report}"
        );
        for key in ["objects", "refs", "unreachable"] {
            assert!(report[key].is_u64(), "fsck --json lacks {key}: {report}");
        }
        report
    }

    /// The commit a root is at now, from `roots log ROOT --json`.
    pub fn current(&self, root: &str) -> String {
        let log = self.json(["roots", "log", root]);
        log[0]["commit"]
            .as_str()
            .unwrap_or_else(|| panic!("roots log {root} --json has no current commit: {log}"))
            .to_string()
    }
}

impl Drop for Canopy {
    fn drop(&mut self) {
        if std::thread::panicking()
            && std::env::var_os("CANOPY_TEST_KEEP").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("keeping {}", dir.keep().display());
        }
    }
}

/// Directories of test environments to remove as the test process exits.
static AT_EXIT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes `dir` as the test process exits, if it is still there: an environment kept
/// in a static (a fixture a module's tests share) is never dropped, and its directory
/// (hundreds of MB with a root's store and checkout) would outlive every run.
fn remove_at_exit(dir: PathBuf) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function that takes no arguments.
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_left);
    });
    if let Ok(mut dirs) = AT_EXIT.lock() {
        dirs.push(dir);
    }
}

/// Removes the directories left of test environments, unless `CANOPY_TEST_KEEP` is set;
/// one with a mount still under it is left, since removing it would walk into the mount
/// (and a hung one would hang the exit). Never panics: it runs inside `exit`.
extern "C" fn remove_left() {
    if std::env::var_os("CANOPY_TEST_KEEP").is_some() {
        return;
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Ok(dirs) = AT_EXIT.lock() else {
        return;
    };
    for dir in dirs.iter().filter(|d| d.exists()) {
        // The fifth field is the mount point (test directories hold no space to escape).
        let mounted = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| Path::new(m).starts_with(dir));
        if !mounted {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A command to run, with assertions on how it ends.
pub struct TestCommand {
    cmd: Command,
}

/// A command running `program`, with stdin closed, no core dumps, and none of canopy's
/// environment variables inherited from the caller.
pub fn cmd(program: impl AsRef<OsStr>) -> TestCommand {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null())
        .env_remove("CANOPY_STORE")
        .env_remove("CANOPY_CRASH_AFTER")
        .env_remove("CANOPY_PAUSE_AT");
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // Crash tests abort on purpose; a core file per abort would be slow and large.
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    TestCommand { cmd }
}

impl TestCommand {
    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut TestCommand {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut TestCommand {
        self.cmd.env(key, value);
        self
    }

    /// Sets the working directory.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut TestCommand {
        self.cmd.current_dir(dir);
        self
    }

    /// The command line, quoted for a shell, with environment changes in front.
    pub fn line(&self) -> String {
        let mut words = Vec::new();
        for (key, value) in self.cmd.get_envs() {
            if let Some(value) = value {
                words.push(format!(
                    "{}={}",
                    key.to_string_lossy(),
                    quote(value.as_bytes())
                ));
            }
        }
        words.push(quote(self.cmd.get_program().as_bytes()));
        words.extend(self.cmd.get_args().map(|a| quote(a.as_bytes())));
        words.join(" ")
    }

    /// Runs the command and returns its output, whatever the outcome.
    pub fn output(&mut self) -> Output {
        self.cmd
            .output()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.line()))
    }

    /// Runs the command with its output in files (a process it leaves behind holds no
    /// pipe of ours) and returns it, or `None` (the command killed, not waited for) if it
    /// has not ended within `limit`.
    pub fn output_within(&mut self, limit: std::time::Duration) -> Option<Output> {
        use std::io::{Read, Seek};
        let (mut out, mut err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let mut child = self
            .cmd
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {}: {e}", self.line()));
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                // Not waited for: a process the kernel holds would hold the test too.
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let read = |f: &mut fs::File| {
            let mut bytes = Vec::new();
            f.rewind().unwrap();
            f.read_to_end(&mut bytes).unwrap();
            bytes
        };
        Some(Output {
            status,
            stdout: read(&mut out),
            stderr: read(&mut err),
        })
    }

    /// Runs the command and asserts it exits 0.
    pub fn success(&mut self) -> Output {
        let out = self.output();
        if !out.status.success() {
            panic!("{}", self.report("exit status 0", &out));
        }
        out
    }

    /// Runs the command, asserts it exits 0 and returns its stdout.
    pub fn stdout(&mut self) -> String {
        let out = self.success();
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// Runs the command and asserts it exits with `code`.
    pub fn failure(&mut self, code: i32) -> Output {
        let out = self.output();
        if out.status.code() != Some(code) {
            panic!("{}", self.report(&format!("exit status {code}"), &out));
        }
        out
    }

    /// Runs the command and asserts it was killed by `signal`.
    pub fn signal(&mut self, signal: i32) -> Output {
        let out = self.output();
        if out.status.signal() != Some(signal) {
            panic!(
                "{}",
                self.report(&format!("death by signal {signal}"), &out)
            );
        }
        out
    }

    /// Describes how a run went, for a failure message.
    pub fn report(&self, expected: &str, out: &Output) -> String {
        let cwd = match self.cmd.get_current_dir() {
            Some(dir) => dir.display().to_string(),
            None => std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        };
        format!(
            "\n\nexpected {expected}, got {}\n\ncommand: {}\ncwd: {cwd}\n\n\
             stdout:\n{}\n\nstderr:\n{}\n",
            out.status,
            self.line(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        )
    }
}

fn quote(word: &[u8]) -> String {
    let text = String::from_utf8_lossy(word);
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Everything in a directory, path by path: `dir`, `symlink -> TARGET`, or
/// `file MODE sha256`. Used to assert that a command left a store byte-for-byte unchanged
/// (the store's `lock` file is left out: taking a lock may create it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    root: PathBuf,
    entries: BTreeMap<PathBuf, String>,
}

impl Snapshot {
    /// Takes a snapshot of `root`.
    pub fn of(root: &Path) -> Snapshot {
        let mut entries = BTreeMap::new();
        for rel in walk(root) {
            if rel == Path::new("lock") {
                continue;
            }
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                "dir".to_string()
            } else if meta.file_type().is_symlink() {
                format!("symlink -> {}", fs::read_link(&path).unwrap().display())
            } else {
                format!("file {:o} {}", meta.mode() & 0o7777, sha256_file(&path))
            };
            entries.insert(rel, what);
        }
        Snapshot {
            root: root.to_path_buf(),
            entries,
        }
    }

    /// How `after` differs from this snapshot, one line per path.
    pub fn differences(&self, after: &Snapshot) -> Vec<String> {
        let paths: BTreeSet<&PathBuf> = self.entries.keys().chain(after.entries.keys()).collect();
        let mut out = Vec::new();
        for path in paths {
            match (self.entries.get(path), after.entries.get(path)) {
                (Some(a), Some(b)) if a != b => {
                    out.push(format!("changed {}: {a} -> {b}", path.display()))
                }
                (Some(a), None) => out.push(format!("removed {}: {a}", path.display())),
                (None, Some(b)) => out.push(format!("added {}: {b}", path.display())),
                _ => {}
            }
        }
        out
    }

    /// Asserts the directory is as it was when this snapshot was taken.
    pub fn assert_unchanged(&self, what: &str) {
        let after = Snapshot::of(&self.root);
        let diff = self.differences(&after);
        assert!(
            diff.is_empty(),
            "{what} changed {}:\n{}",
            self.root.display(),
            diff.join("\n")
        );
    }
}

/// Relative paths of everything under `root` (not `root` itself), sorted, without
/// following symlinks.
pub fn walk(root: &Path) -> Vec<PathBuf> {
    fn visit(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let dir = root.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let child = rel.join(&name);
            let is_dir = fs::symlink_metadata(root.join(&child))
                .unwrap()
                .file_type()
                .is_dir();
            out.push(child.clone());
            if is_dir {
                visit(root, &child, out);
            }
        }
    }
    let mut out = Vec::new();
    visit(root, Path::new(""), &mut out);
    out
}

/// SHA-256 of a file's content, in lowercase hex.
pub fn sha256_file(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Whether `s` is a full object id: 64 lowercase hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The extended attributes of a path (not following symlinks), name to value.
pub fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let names = read_growing(path, |buf| {
        // SAFETY: the buffer pointer and length describe a live, writable Vec.
        unsafe { libc::llistxattr(c_path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    });
    let mut out = BTreeMap::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let value = xattr(path, name).unwrap_or_default();
        out.insert(name.to_vec(), value);
    }
    out
}

/// One extended attribute of a path (not following symlinks), if set.
pub fn xattr(path: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = CString::new(name).unwrap();
    let mut missing = false;
    let value = read_growing(path, |buf| {
        // SAFETY: the buffer pointer and length describe a live, writable Vec.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENODATA) {
            missing = true;
            return 0;
        }
        n
    });
    (!missing).then_some(value)
}

/// Calls an xattr syscall with a buffer that grows until the result fits.
fn read_growing(path: &Path, mut call: impl FnMut(&mut Vec<u8>) -> isize) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    loop {
        let n = call(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return buf;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Vec::new(),
            _ => panic!("reading xattrs of {}: {err}", path.display()),
        }
    }
}

/// What a tree comparison looks at for one path.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    rdev: Option<(u32, u32)>,
    target: Option<PathBuf>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn node(path: &Path) -> Node {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_char_device() {
        "char device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    let device = ft.is_char_device() || ft.is_block_device();
    Node {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: if ft.is_file() { meta.len() } else { 0 },
        rdev: device.then(|| (libc::major(meta.rdev()), libc::minor(meta.rdev()))),
        target: ft.is_symlink().then(|| fs::read_link(path).unwrap()),
        xattrs: xattrs(path),
    }
}

fn same_content(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (fs::File::open(a).unwrap(), fs::File::open(b).unwrap());
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return fb.read(&mut bb[..1]).unwrap() == 0;
        }
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Every difference between two trees, including their top directories: paths present in
/// only one, and for each common path its type, permission bits (with setuid, setgid and
/// sticky), owner, group, symlink target, device numbers, extended attributes and content.
pub fn tree_differences(expected: &Path, actual: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let exp: BTreeSet<PathBuf> = walk(expected).into_iter().collect();
    let act: BTreeSet<PathBuf> = walk(actual).into_iter().collect();
    for rel in exp.difference(&act) {
        out.push(format!(
            "/{}: missing (a {} in the reference)",
            rel.display(),
            node(&expected.join(rel)).kind
        ));
    }
    for rel in act.difference(&exp) {
        out.push(format!(
            "/{}: unexpected {}",
            rel.display(),
            node(&actual.join(rel)).kind
        ));
    }
    let common = std::iter::once(PathBuf::new()).chain(exp.intersection(&act).cloned());
    for rel in common {
        let (a, b) = (expected.join(&rel), actual.join(&rel));
        let (na, nb) = (node(&a), node(&b));
        let shown = format!("/{}", rel.display());
        let mut differ = |what: &str, x: String, y: String| {
            out.push(format!("{shown}: {what} is {y}, expected {x}"))
        };
        if na.kind != nb.kind {
            differ("type", na.kind.into(), nb.kind.into());
            continue;
        }
        if na.mode != nb.mode {
            differ(
                "mode",
                format!("{:04o}", na.mode),
                format!("{:04o}", nb.mode),
            );
        }
        if (na.uid, na.gid) != (nb.uid, nb.gid) {
            differ(
                "owner",
                format!("{}:{}", na.uid, na.gid),
                format!("{}:{}", nb.uid, nb.gid),
            );
        }
        if na.target != nb.target {
            differ(
                "symlink target",
                format!("{:?}", na.target),
                format!("{:?}", nb.target),
            );
        }
        if na.rdev != nb.rdev {
            differ("device", format!("{:?}", na.rdev), format!("{:?}", nb.rdev));
        }
        if na.xattrs != nb.xattrs {
            differ(
                "xattrs",
                format!("{:?}", na.xattrs),
                format!("{:?}", nb.xattrs),
            );
        }
        if na.size != nb.size {
            differ("size", na.size.to_string(), nb.size.to_string());
        } else if na.kind == "file" && !same_content(&a, &b) {
            differ("content", "the reference's".into(), "different".into());
        }
    }
    out
}

/// Asserts two trees are identical (see [`tree_differences`]), listing every difference.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let diff = tree_differences(expected, actual);
    assert!(
        diff.is_empty(),
        "{} differs from the reference {} in {} ways:\n{}",
        actual.display(),
        expected.display(),
        diff.len(),
        diff.join("\n")
    );
}

/// How many of each kind of entry a tree holds, its top directory not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Devices, fifos and sockets.
    pub special: u64,
}

/// Counts the entries of a tree.
pub fn count_tree(root: &Path) -> Counts {
    let mut counts = Counts::default();
    for rel in walk(root) {
        let ft = fs::symlink_metadata(root.join(rel)).unwrap().file_type();
        if ft.is_file() {
            counts.files += 1;
        } else if ft.is_dir() {
            counts.dirs += 1;
        } else if ft.is_symlink() {
            counts.symlinks += 1;
        } else {
            counts.special += 1;
        }
    }
    counts
}

/// One result line of `canopy import`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// `true` for `imported …`, `false` for `skipped …: already imported`.
    pub new: bool,
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// `E entries` (imported lines only): files, directories, links and specials.
    pub entries: u64,
    /// `N new objects` (imported lines only).
    pub new_objects: u64,
    /// `B new bytes` (imported lines only).
    pub new_bytes: u64,
}

/// Parses `imported NAME VERSION (ARCH): E entries, N new objects, B new bytes` or
/// `skipped NAME VERSION (ARCH): already imported`.
pub fn parse_import_line(line: &str) -> Imported {
    let bad = || -> ! { panic!("not an import result line: {line:?}") };
    let (new, rest) = if let Some(rest) = line.strip_prefix("imported ") {
        (true, rest)
    } else if let Some(rest) = line.strip_prefix("skipped ") {
        (false, rest)
    } else {
        bad()
    };
    let (head, tail) = rest.split_once("): ").unwrap_or_else(|| bad());
    let (name_version, arch) = head.rsplit_once(" (").unwrap_or_else(|| bad());
    let (name, version) = name_version.split_once(' ').unwrap_or_else(|| bad());
    let mut numbers = [0u64; 3];
    if new {
        let words: Vec<&str> = tail.split(", ").collect();
        let suffixes = [" entries", " new objects", " new bytes"];
        if words.len() != 3 {
            bad();
        }
        for ((word, suffix), n) in words.iter().zip(suffixes).zip(&mut numbers) {
            *n = word
                .strip_suffix(suffix)
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| bad());
        }
    } else if tail != "already imported" {
        bad();
    }
    Imported {
        new,
        name: name.into(),
        version: version.into(),
        arch: arch.into(),
        entries: numbers[0],
        new_objects: numbers[1],
        new_bytes: numbers[2],
    }
}

/// Parses every line of an import's stdout.
pub fn parse_import(stdout: &str) -> Vec<Imported> {
    stdout.lines().map(parse_import_line).collect()
}

/// The result line of `canopy assemble`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembled {
    /// The root's name.
    pub root: String,
    /// The new commit.
    pub commit: String,
    /// `P packages`.
    pub packages: u64,
    /// `N new objects`.
    pub new_objects: u64,
}

/// Parses `assembled ROOT: commit <64hex> (P packages, N new objects)` out of stdout.
pub fn parse_assemble(stdout: &str) -> Assembled {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("assembled "))
        .unwrap_or_else(|| panic!("no `assembled` line in:\n{stdout}"));
    let bad = || -> ! { panic!("not an assemble result line: {line:?}") };
    let rest = line.strip_prefix("assembled ").unwrap();
    let (root, rest) = rest.split_once(": commit ").unwrap_or_else(|| bad());
    let (commit, rest) = rest.split_once(" (").unwrap_or_else(|| bad());
    // The contract's `(P packages, N new objects)`; more fields after those are tolerated.
    let rest = rest.strip_suffix(')').unwrap_or_else(|| bad());
    let (packages, rest) = rest.split_once(" packages, ").unwrap_or_else(|| bad());
    let new_objects = rest
        .split(", ")
        .next()
        .and_then(|w| w.strip_suffix(" new objects"))
        .unwrap_or_else(|| bad());
    assert!(
        is_hex64(commit),
        "commit id in {line:?} is not 64 hex digits"
    );
    Assembled {
        root: root.into(),
        commit: commit.into(),
        packages: packages.parse().unwrap_or_else(|_| bad()),
        new_objects: new_objects.parse().unwrap_or_else(|_| bad()),
    }
}

/// `dpkg-deb -x` of each package into `dest`, in order: the reference a checkout must
/// equal.
pub fn dpkg_extract<P: AsRef<Path>>(debs: &[P], dest: &Path) {
    for deb in debs {
        cmd("dpkg-deb")
            .arg("-x")
            .arg(deb.as_ref())
            .arg(dest)
            .success();
    }
}

/// Builds a .deb from `tree` (which holds `DEBIAN/control`) with `dpkg-deb --build`,
/// keeping the tree's owners.
pub fn dpkg_build(tree: &Path, out: &Path) -> PathBuf {
    cmd("dpkg-deb")
        .args(["--build", "-Zgzip"])
        .arg(tree)
        .arg(out)
        .success();
    out.to_path_buf()
}

/// Builds a .deb from `tree` (which holds `DEBIAN/control`) whose files all belong to
/// root, as packages' files do, whoever owns the tree.
pub fn dpkg_build_as_root(tree: &Path, out: &Path) -> PathBuf {
    cmd("dpkg-deb")
        .args(["--root-owner-group", "--build", "-Zgzip"])
        .arg(tree)
        .arg(out)
        .success();
    out.to_path_buf()
}

/// Writes `DEBIAN/control` for package `name` into `tree`.
pub fn write_control(tree: &Path, name: &str, version: &str, arch: &str) {
    let debian = tree.join("DEBIAN");
    fs::create_dir_all(&debian).unwrap();
    fs::set_permissions(&debian, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        debian.join("control"),
        format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {arch}\n\
             Maintainer: canopy tests <tests@example.org>\n\
             Description: canopy test package {name}\n"
        ),
    )
    .unwrap();
}

/// Writes a regular file (creating parent directories 0755) with the given mode.
pub fn write_file(path: &Path, content: &[u8], mode: u32) {
    let parent = path.parent().unwrap();
    fs::create_dir_all(parent).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds a small root-owned `.deb` in `dir` with `dpkg-deb`: package `name` at
/// `version`, architecture `all`, holding `files` (path relative to `/`, content) as
/// 0644 files in 0755 directories. Returns the .deb's path.
pub fn simple_deb(dir: &Path, name: &str, version: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let tree = dir.join(format!("{name}_{version}.tree"));
    fs::create_dir_all(&tree).unwrap();
    fs::set_permissions(&tree, fs::Permissions::from_mode(0o755)).unwrap();
    write_control(&tree, name, version, "all");
    for (path, content) in files {
        let path = tree.join(path);
        write_file(&path, content, 0o644);
        let mut parent = path.parent().unwrap();
        while parent != tree {
            fs::set_permissions(parent, fs::Permissions::from_mode(0o755)).unwrap();
            parent = parent.parent().unwrap();
        }
    }
    let out = dir.join(format!("{name}_{version}_all.deb"));
    dpkg_build_as_root(&tree, &out);
    out
}
