//! Package scripts that misbehave, and configuring under faults: a failing postinst, one
//! that tries the network, one that runs `rm -rf /`, one that leaves daemons running, one
//! that never ends, configuring as a user with and without subordinate ids, upgrade from
//! scratch, kill -9 and aborts mid-configure.
//!
//! Each test has its own store with dpkg's smallest closure ([`debs::DPKG_PACKAGES`])
//! imported, and packages built with dpkg-deb at test time.

use crate::debs;
use crate::installed::checkout;
use crate::util::{Canopy, cmd, dpkg_build_as_root, parse_assemble, write_control, write_file};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A package built at test time: `name` with a postinst (`#!/bin/sh` script body).
pub(crate) fn script_deb(dir: &Path, name: &str, version: &str, postinst: &str) -> PathBuf {
    let tree = dir.join(format!("{name}-{version}"));
    write_control(&tree, name, version, "all");
    write_file(
        &tree.join("DEBIAN/postinst"),
        format!("#!/bin/sh\n{postinst}\n").as_bytes(),
        0o755,
    );
    write_file(
        &tree.join(format!("usr/share/doc/{name}/README")),
        format!("{name} {version}\n").as_bytes(),
        0o644,
    );
    let out = dir.join(format!("{name}_{version}_all.deb"));
    dpkg_build_as_root(&tree, &out);
    fs::set_permissions(&out, fs::Permissions::from_mode(0o644)).unwrap();
    out
}

/// A store with dpkg's smallest closure imported.
pub(crate) fn dpkg_store(name: &str) -> Canopy {
    let env = Canopy::init(name);
    env.cmd(["import", "deb"])
        .args(debs::more_debs(debs::DPKG_PACKAGES).iter().map(|d| &d.path))
        .stdout();
    env
}

pub(crate) fn assemble_args<'a>(root: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["assemble", root];
    args.extend(debs::DPKG_PACKAGES);
    args.extend(extra);
    args
}

#[test]
fn a_failing_script_fails_the_assemble_with_its_output_and_changes_nothing() {
    let env = dpkg_store("installed-fails");
    let deb = script_deb(
        &env.mkdir("debs"),
        "canopy-fails",
        "1.0",
        "for i in $(seq 1 25); do echo \"line $i of the failing script\"; done\nexit 3",
    );
    env.cmd(["import", "deb"]).arg(&deb).stdout();
    let before = env.snapshot();
    let out = env.fails(assemble_args("bad", &["canopy-fails"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("canopy-fails: postinst failed with exit status 3"),
        "{err}"
    );
    assert!(err.contains("line 25 of the failing script"), "{err}");
    assert!(err.contains("line 6 of the failing script"), "{err}");
    assert!(
        !err.contains("line 5 of the failing script"),
        "only the last 20 lines: {err}"
    );
    before.assert_unchanged("a failed configure");
    env.fsck_clean();
    // Without configuring, the same packages assemble.
    let out = env.stdout(
        [
            assemble_args("bad", &["canopy-fails"]),
            vec!["--no-configure"],
        ]
        .concat(),
    );
    parse_assemble(&out);
    let log = env.json(["roots", "log", "bad"]);
    assert_eq!(log[0]["options"], serde_json::json!(["no-configure"]));
    assert_eq!(log[0]["configure"], serde_json::Value::Null);
}

#[test]
fn scripts_have_no_network() {
    let env = dpkg_store("installed-network");
    // Something listens on the host's loopback: the sandbox's own loopback has nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let bash = debs::more_debs(&["bash", "libtinfo6"]);
    let deb = script_deb(
        &env.mkdir("debs"),
        "canopy-network",
        "1.0",
        &format!(
            "ip=$(cat /proc/net/dev | grep -c :)\necho \"$ip interfaces\"\n\
             if bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null; then echo CONNECTED; exit 0; fi\n\
             if bash -c 'exec 3<>/dev/tcp/151.101.2.132/80' 2>/dev/null; then echo CONNECTED OUT; exit 0; fi\n\
             echo no network; exit 7"
        ),
    );
    env.cmd(["import", "deb"])
        .arg(&deb)
        .args(bash.iter().map(|d| &d.path))
        .stdout();
    let out = env.fails(assemble_args(
        "net",
        &["canopy-network", "bash", "libtinfo6"],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exit status 7"), "{err}");
    assert!(
        err.contains("1 interfaces") && err.contains("no network"),
        "{err}"
    );
    assert!(
        listener.accept().is_err(),
        "the host's listener was reached from a package script"
    );
}

#[test]
fn a_script_that_removes_everything_touches_neither_host_nor_store() {
    let env = dpkg_store("installed-destroy");
    let canary = env.path("canary");
    fs::write(&canary, b"still here\n").unwrap();
    let deb = script_deb(
        &env.mkdir("debs"),
        "canopy-destroy",
        "1.0",
        "echo destroying everything\necho pwned > /host-marker\nrm -rf --no-preserve-root / 2>/dev/null\nexit 0",
    );
    env.cmd(["import", "deb"]).arg(&deb).stdout();
    let before = env.snapshot();
    let out = env.fails(assemble_args("gone", &["canopy-destroy"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("destroying everything"),
        "the script ran: {err}"
    );
    assert!(!Path::new("/host-marker").exists());
    assert_eq!(fs::read(&canary).unwrap(), b"still here\n");
    assert!(Path::new("/usr/bin/dpkg").exists() && Path::new("/etc/passwd").exists());
    before.assert_unchanged("a configure whose script removed /");
    env.fsck_clean();
}

/// A user made for a test, removed (with its subordinate ranges) when dropped.
struct TestUser {
    name: String,
}

impl TestUser {
    /// A new user: `system` users get no subordinate id range from useradd; others get
    /// one (added by hand where useradd does not).
    fn new(tag: &str, system: bool) -> TestUser {
        let name = format!("canopy-{tag}-{}", std::process::id() % 100_000);
        let _ = cmd("userdel").arg(&name).output();
        let mut add = cmd("useradd");
        add.args(["-M", "-s", "/bin/sh"]);
        if system {
            add.arg("-r");
        }
        add.arg(&name);
        // Other tests may hold /etc/passwd's lock for a moment.
        let mut tries = 0;
        while !add.output().status.success() {
            tries += 1;
            assert!(tries < 20, "useradd {name} keeps failing");
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        let user = TestUser { name };
        if !system
            && !fs::read_to_string("/etc/subuid")
                .unwrap_or_default()
                .contains(&format!("{}:", user.name))
        {
            let start = 300_000 + (std::process::id() % 1000) * 65_536;
            let range = format!("{start}-{}", start + 65_535);
            cmd("usermod")
                .args(["--add-subuids", &range, "--add-subgids", &range, &user.name])
                .success();
        }
        user
    }

    /// `canopy ARGS` as this user.
    fn canopy(&self, store: &Path, args: &[&str]) -> std::process::Output {
        cmd("runuser")
            .args(["-u", &self.name, "--", crate::util::BIN, "--store"])
            .arg(store)
            .args(args)
            .output()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = cmd("userdel").arg(&self.name).output();
    }
}

/// A directory the user owns, with a copy of dpkg's smallest closure to import.
fn user_dir(env: &Canopy, user: &TestUser) -> (PathBuf, Vec<String>) {
    let dir = env.mkdir(format!("home-{}", user.name));
    let mut debs = Vec::new();
    for deb in debs::more_debs(debs::DPKG_PACKAGES) {
        let copy = dir.join(deb.path.file_name().unwrap());
        fs::copy(&deb.path, &copy).unwrap();
        debs.push(copy.display().to_string());
    }
    cmd("chown").args(["-R", &user.name]).arg(&dir).success();
    // As Debian makes homes: only the user may search it, not the sandbox's ids.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    (dir, debs)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn configuring_as_a_user_takes_its_subordinate_ids_and_says_what_is_missing() {
    let env = Canopy::new("installed-user");
    for (tag, system) in [("ids", false), ("noids", true)] {
        let user = TestUser::new(tag, system);
        let (dir, debs) = user_dir(&env, &user);
        let store = dir.join("store");
        let init = user.canopy(&store, &["init"]);
        assert!(init.status.success(), "{}", text(&init));
        let mut import = vec!["import", "deb"];
        import.extend(debs.iter().map(String::as_str));
        let out = user.canopy(&store, &import);
        assert!(out.status.success(), "{}", text(&out));
        let assemble = assemble_args("small", &[]);
        let out = user.canopy(&store, &assemble[..]);
        if system {
            assert!(!out.status.success(), "{}", text(&out));
            let err = text(&out);
            assert!(
                err.contains("/etc/subuid")
                    && err.contains(&user.name)
                    && err.contains(&format!("`{}:", user.name)),
                "the error names the line to add: {err}"
            );
            // Unconfigured, the same user assembles.
            let out = user.canopy(&store, &[&assemble[..], &["--no-configure"]].concat());
            assert!(out.status.success(), "{}", text(&out));
            continue;
        }
        assert!(
            out.status.success() && text(&out).contains("configured "),
            "{}",
            text(&out)
        );
        // Root can read the user's store: the root is configured, with the ids inside.
        let tree = env.path(format!("{}-small", user.name));
        cmd(crate::util::BIN)
            .arg("--store")
            .arg(&store)
            .args(["checkout", "small"])
            .arg(&tree)
            .success();
        let status = fs::read_to_string(tree.join("var/lib/dpkg/status")).unwrap();
        let dpkg = status
            .split("\n\n")
            .find(|p| p.starts_with("Package: dpkg\n"))
            .unwrap_or_else(|| panic!("{status}"));
        assert!(dpkg.contains("\nStatus: install ok installed\n"), "{dpkg}");
        let meta = fs::metadata(tree.join("var/lib/dpkg/status")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "owners as inside the sandbox"
        );
        let fsck = user.canopy(&store, &["fsck"]);
        assert!(fsck.status.success(), "{}", text(&fsck));
    }
}

#[test]
fn upgrade_configures_again_from_scratch() {
    let env = dpkg_store("installed-upgrade");
    let dir = env.mkdir("debs");
    let hello = |version: &str| {
        script_deb(
            &dir,
            "canopy-hello",
            version,
            "cat /usr/share/doc/canopy-hello/README > /etc/canopy-hello",
        )
    };
    env.cmd(["import", "deb"]).arg(hello("1.0")).stdout();
    env.stdout(assemble_args("up", &["canopy-hello"]));
    env.cmd(["import", "deb"]).arg(hello("2.0")).stdout();
    let out = env.stdout(["upgrade", "up"]);
    assert!(out.contains("canopy-hello 1.0 → 2.0"), "{out}");
    assert!(out.contains("configured "), "{out}");
    env.stdout(assemble_args("fresh", &["canopy-hello"]));
    let tree = |root: &str| env.json(["roots", "log", root])[0]["tree"].clone();
    assert_eq!(tree("up"), tree("fresh"), "an upgraded root is a fresh one");
    let dir = checkout(&env, "up", "up");
    assert_eq!(
        fs::read_to_string(dir.join("etc/canopy-hello")).unwrap(),
        "canopy-hello 2.0\n"
    );
}

/// Processes whose command line is exactly `args`.
fn processes(args: &[&str]) -> usize {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| fs::read(e.path().join("cmdline")).ok().as_deref() == Some(&wanted[..]))
        .count()
}

#[test]
fn a_configure_killed_at_any_point_leaves_the_last_good_root_and_nothing_running() {
    let env = dpkg_store("installed-kill");
    let out = env.stdout(assemble_args("web", &[]));
    let good = parse_assemble(&out).commit;
    let dir = env.mkdir("debs");
    let sleeper = script_deb(
        &dir,
        "canopy-sleeper",
        "1.0",
        "echo sleeping now\nsleep 3011",
    );
    let quick = script_deb(&dir, "canopy-quick", "1.0", "echo quick");
    env.cmd(["import", "deb"])
        .arg(&sleeper)
        .arg(&quick)
        .stdout();
    let after = |what: &str| {
        env.fsck_clean();
        assert_eq!(env.current("web"), good, "web moved after {what}");
        assert_eq!(processes(&["sleep", "3011"]), 0, "a script outlived {what}");
    };

    // kill -9 while a postinst runs.
    let child = std::process::Command::new(crate::util::BIN)
        .arg("--store")
        .arg(env.store())
        .arg("-v")
        .args(assemble_args("web", &["canopy-sleeper"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed however this test ends, so that a failure leaves nothing running.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(child);
    let stderr = child.0.stderr.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("sleeping now") {
            break;
        }
    }
    assert!(
        seen.contains("sleeping now"),
        "the postinst never ran:\n{seen}"
    );
    let running = |n: usize| {
        let start = std::time::Instant::now();
        while processes(&["sleep", "3011"]) != n && start.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        processes(&["sleep", "3011"]) == n
    };
    assert!(running(1), "the script's sleep never showed up");
    drop(child);
    // The sandbox dies with canopy (its processes get SIGKILL when their parent goes).
    assert!(running(0), "a script outlived canopy's kill -9");
    after("kill -9 during a postinst");

    // Aborted once configuring is done but nothing is durable, and as the ref is written.
    for (var, value) in [
        ("CANOPY_CRASH_AT", "configured"),
        ("CANOPY_CRASH_AT", "before ref write"),
        ("CANOPY_CRASH_AFTER", "1"),
    ] {
        env.cmd(assemble_args("web", &["canopy-quick"]))
            .env(var, value)
            .signal(libc::SIGABRT);
        after(&format!("{var}={value}"));
    }
    // And then it works.
    let out = env.stdout(assemble_args("web", &["canopy-quick"]));
    assert!(out.contains("configured "), "{out}");
    assert_ne!(env.current("web"), good);
    env.fsck_clean();
}

#[test]
fn file_capabilities_set_by_a_script_are_kept_namespace_independent() {
    let env = dpkg_store("installed-caps");
    let libcap = debs::more_debs(&["libcap2", "libcap2-bin"]);
    let deb = script_deb(
        &env.mkdir("debs"),
        "canopy-caps",
        "1.0",
        "cp /bin/true /usr/bin/canopy-ping && setcap cap_net_raw+ep /usr/bin/canopy-ping",
    );
    env.cmd(["import", "deb"])
        .arg(&deb)
        .args(libcap.iter().map(|d| &d.path))
        .stdout();
    env.stdout(assemble_args(
        "caps",
        &["canopy-caps", "libcap2", "libcap2-bin"],
    ));
    let dir = checkout(&env, "caps", "caps");
    let cap = crate::util::xattr(&dir.join("usr/bin/canopy-ping"), b"security.capability")
        .expect("the capability is in the root");
    // VFS_CAP_REVISION_2 (little-endian magic 0x02000000 | effective): no root id, so it
    // means the same in any user namespace (a v3 value would carry the sandbox's ids).
    assert_eq!(cap.len(), 20, "{cap:?}");
    assert_eq!(cap[3], 2, "{cap:?}");
    assert_eq!(cap[0] & 1, 1, "effective: {cap:?}");
    // CAP_NET_RAW is bit 13 of the permitted set (little-endian, from byte 4).
    assert_eq!(cap[5] & (1 << 5), 1 << 5, "cap_net_raw: {cap:?}");
}

/// Waits up to 20 s for no process to have the command line `args`; whether none has.
fn all_gone(args: &[&str]) -> bool {
    let start = std::time::Instant::now();
    while processes(args) != 0 && start.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    processes(args) == 0
}

#[test]
fn daemons_that_scripts_start_are_stopped_and_a_script_that_never_ends_times_out() {
    let env = dpkg_store("installed-daemons");
    let dir = env.mkdir("debs");
    // The store is in a directory only root may search, as /root is: not the sandbox's ids.
    fs::set_permissions(env.path(""), fs::Permissions::from_mode(0o700)).unwrap();
    // A postinst that leaves processes behind: one detached in its own session, one that
    // keeps the script's output open. It also needs /dev/null and /proc.
    let daemon = script_deb(
        &dir,
        "canopy-daemon",
        "1.0",
        "test -c /dev/null && grep -q '^Name:' /proc/self/status || exit 9\n\
         setsid sleep 3021 </dev/null >/dev/null 2>&1 &\n\
         sleep 3022 &\n\
         echo daemons started",
    );
    let forever = script_deb(
        &dir,
        "canopy-forever",
        "1.0",
        "echo looping forever\nwhile :; do sleep 3023; done",
    );
    env.cmd(["import", "deb"])
        .arg(&daemon)
        .arg(&forever)
        .stdout();

    let out = env.stdout(assemble_args("daemons", &["canopy-daemon"]));
    assert!(out.contains("configured "), "{out}");
    assert!(
        all_gone(&["sleep", "3021"]),
        "a detached daemon outlived configure"
    );
    assert!(
        all_gone(&["sleep", "3022"]),
        "a background job outlived configure"
    );
    let good = env.current("daemons");

    let before = env.snapshot();
    let start = std::time::Instant::now();
    let out = env.fails(
        [
            assemble_args("daemons", &["canopy-forever"]),
            vec!["--configure-timeout", "60s"],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not finish within 1m")
            && err.contains("canopy-forever's postinst (configure)")
            && err.contains("--configure-timeout")
            && err.contains("looping forever"),
        "{err}"
    );
    assert!(
        start.elapsed().as_secs() < 300,
        "stopped only after {:?}",
        start.elapsed()
    );
    assert!(
        all_gone(&["sleep", "3023"]),
        "the endless script outlived its timeout"
    );
    before.assert_unchanged("a configure that timed out");
    assert_eq!(env.current("daemons"), good);
    env.fsck_clean();
}
