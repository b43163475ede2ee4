//! `canopy volume-plugin` as Docker uses it: the real plugin on a unix socket, driven
//! with curl through Docker's volume plugin protocol, served by a real `canopy serve`,
//! its volumes read through its real FUSE mount; and a real `dockerd` of our own running
//! a container on a canopy volume.

use crate::debs;
use crate::mount::{
    SMALL, Server, eventually, force_stop, import_app, is_mounted, read, wait_for_line,
};
use crate::util::{Canopy, cmd};
use serde_json::{Value, json};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The media type of every answer of the protocol.
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// How long a volume may take to serve again after its mount server is killed: the
/// plugin starts a new one on the kept connection, which resumes and shows its versions
/// again. On a loaded 2-core machine (a CI run boots QEMU guests beside) once over 30 s.
const AFTER_RESTART: Duration = Duration::from_secs(120);

/// A store with root `small` (bash and what it needs), served.
fn small_root(name: &str) -> (Canopy, Server) {
    let env = Canopy::init(name);
    env.cmd(["import", "deb"])
        .args(debs::paths(SMALL))
        .success();
    env.cmd(["assemble", "small"]).args(SMALL).success();
    fs::write(env.path("server.pub"), env.stdout(["key", "show"])).unwrap();
    let server = Server::start(&env, "127.0.0.1:0");
    (env, server)
}

/// The flags of a plugin on `socket` whose state, mount and cache are
/// `DIR/state`, `DIR/volumes` and `DIR/cache`, each name followed by `suffix`.
fn plugin_flags(env: &Canopy, url: &str, socket: &Path, suffix: &str) -> Vec<OsString> {
    let mut flags: Vec<OsString> = vec!["--server".into(), url.into(), "--trust".into()];
    flags.push(env.path("server.pub").into());
    flags.extend(["--socket".into(), socket.into()]);
    for (flag, dir) in [
        ("--state-dir", "state"),
        ("--mount-dir", "volumes"),
        ("--cache-dir", "cache"),
    ] {
        flags.push(flag.into());
        flags.push(env.path(format!("{dir}{suffix}")).into());
    }
    flags
}

/// `canopy volume-plugin` in the foreground, with its socket, state and mount in the
/// test's directory; stopped with SIGTERM when dropped.
struct Plugin {
    child: Child,
    socket: PathBuf,
    mount_dir: PathBuf,
    log: PathBuf,
}

impl Plugin {
    /// Starts the plugin on `socket` with its state in `DIR/state`.
    fn start_on(env: &Canopy, url: &str, socket: &Path, extra: &[&str]) -> Plugin {
        Plugin::start_program(env, url, socket, Path::new(crate::util::BIN), extra)
    }

    /// As [`Plugin::start_on`], running `program` (a copy of canopy, as an upgrade
    /// installs a new file).
    fn start_program(
        env: &Canopy,
        url: &str,
        socket: &Path,
        program: &Path,
        extra: &[&str],
    ) -> Plugin {
        let mount_dir = env.path("volumes");
        let log = env.path("plugin.log");
        let mut child = Command::new(program)
            .args(["-v", "volume-plugin"])
            .args(plugin_flags(env, url, socket, ""))
            .args(extra)
            .stdout(Stdio::piped())
            // Appended to: the mount server a first plugin started writes here too.
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("starting canopy volume-plugin");
        let line = wait_for_line(&mut child, "listening on", &log);
        assert_eq!(
            line,
            format!(
                "listening on {}, volumes under {}",
                socket.display(),
                mount_dir.display()
            )
        );
        assert!(
            is_mounted(&mount_dir),
            "no FUSE mount at {mount_dir:?}:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        Plugin {
            child,
            socket: socket.to_path_buf(),
            mount_dir,
            log,
        }
    }

    fn start(env: &Canopy, url: &str, extra: &[&str]) -> Plugin {
        Plugin::start_on(env, url, &env.path("plugin.sock"), extra)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap()
    }

    /// POSTs `body` to `/METHOD` with curl and returns the JSON answer, after checking
    /// its status and media type.
    fn call_raw(&self, method: &str, body: &str, status: u16) -> Value {
        let out = cmd("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&self.socket)
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ])
            .args(["-w", "\n%{http_code} %{content_type}"])
            .arg(format!("http://plugin/{method}"))
            .stdout();
        let (json, trailer) = out.rsplit_once('\n').unwrap();
        assert_eq!(
            trailer,
            format!("{status} {CONTENT_TYPE}"),
            "{method} {body}: {json}"
        );
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{method}: {e}: {json}"))
    }

    /// A call that must succeed: `Err` is empty.
    fn call(&self, method: &str, body: Value) -> Value {
        let answer = self.call_raw(method, &body.to_string(), 200);
        assert_eq!(
            answer["Err"],
            "",
            "{method} {body} failed:\n{answer}\n{}",
            self.log()
        );
        answer
    }

    /// A call that must be refused with an `Err` containing `says`.
    fn refused(&self, method: &str, body: &str, says: &str) {
        let answer = self.call_raw(method, body, 200);
        let err = answer["Err"].as_str().unwrap_or_default();
        assert!(err.contains(says), "{method} {body}: {answer}");
    }

    /// `Get`'s `Volume`.
    fn get(&self, name: &str) -> Value {
        self.call("VolumeDriver.Get", json!({ "Name": name }))["Volume"].clone()
    }

    /// `List`, as (name, mountpoint) pairs.
    fn list(&self) -> Vec<(String, String)> {
        let answer = self.call("VolumeDriver.List", json!({}));
        answer["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["Name"].as_str().unwrap().to_string(),
                    v["Mountpoint"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn mount(&self, name: &str, id: &str) -> PathBuf {
        let answer = self.call("VolumeDriver.Mount", json!({ "Name": name, "ID": id }));
        PathBuf::from(answer["Mountpoint"].as_str().unwrap())
    }

    fn unmount(&self, name: &str, id: &str) {
        self.call("VolumeDriver.Unmount", json!({ "Name": name, "ID": id }));
    }

    /// Sends `signal` and waits for the plugin to exit (with success, if `clean`), its
    /// mount left to its mount server.
    fn exit(mut self, signal: i32, clean: bool) {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        assert!(
            !clean || status.success(),
            "exit status {status}:\n{}",
            self.log()
        );
        assert!(
            !clean || !self.socket.exists(),
            "the socket outlived the plugin"
        );
        // Not dropped: that would unmount.
        std::mem::forget(self);
    }

    /// SIGTERM: the plugin must exit 0, remove its socket and unmount.
    fn stop(mut self) {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}:\n{}", self.log());
        assert!(!self.socket.exists(), "the socket outlived the plugin");
        assert!(!is_mounted(&self.mount_dir), "still mounted after SIGTERM");
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        force_stop(&mut self.child, &self.mount_dir);
    }
}

#[test]
fn volume_life_cycle_over_the_socket() {
    let (env, server) = small_root("volume-life");
    let plugin = Plugin::start(&env, &server.url, &[]);
    assert_eq!(
        plugin.call_raw("Plugin.Activate", "", 200),
        json!({ "Implements": ["VolumeDriver"] })
    );
    assert_eq!(
        plugin.call_raw("VolumeDriver.Capabilities", "", 200),
        json!({ "Capabilities": { "Scope": "local" } })
    );
    assert!(plugin.list().is_empty());

    plugin.call(
        "VolumeDriver.Create",
        json!({ "Name": "web", "Opts": { "root": "small" } }),
    );
    assert_eq!(plugin.list(), [("web".to_string(), String::new())]);
    let volume = plugin.get("web");
    assert_eq!(volume["Mountpoint"], "");
    assert_eq!(volume["Status"]["mounts"], 0);
    assert_eq!(volume["Status"]["options"], "root=small");

    // Two containers mount it: one path, in the plugin's mount, counted twice.
    let path = plugin.mount("web", "container-1");
    assert_eq!(plugin.mount("web", "container-2"), path);
    assert_eq!(path.parent(), Some(plugin.mount_dir.as_path()));
    let commit = env.current("small");
    assert_eq!(
        path.file_name().unwrap().to_str(),
        Some(format!("small@{commit}").as_str())
    );
    let volume = plugin.get("web");
    assert_eq!(volume["Mountpoint"], path.to_str().unwrap());
    assert_eq!(volume["Status"]["mounts"], 2);
    assert_eq!(volume["Status"]["commit"], commit.as_str());
    assert_eq!(
        plugin.call("VolumeDriver.Path", json!({ "Name": "web" }))["Mountpoint"],
        path.to_str().unwrap()
    );
    assert_eq!(
        plugin.list(),
        [("web".to_string(), path.display().to_string())]
    );
    let bash = read(&path.join("bin/bash")).unwrap();
    assert_eq!(&bash[..4], b"\x7fELF");
    // Another volume of the same root, following it: another path in the same mount,
    // the same inode for the same file, so its pages are cached once for both.
    plugin.call(
        "VolumeDriver.Create",
        json!({ "Name": "web-latest", "Opts": { "root": "small", "follow": "true" } }),
    );
    let latest = plugin.mount("web-latest", "container-3");
    assert_eq!(latest, plugin.mount_dir.join("small"));
    assert_eq!(
        fs::metadata(latest.join("bin/bash")).unwrap().ino(),
        fs::metadata(path.join("bin/bash")).unwrap().ino()
    );
    plugin.unmount("web-latest", "container-3");
    plugin.call("VolumeDriver.Remove", json!({ "Name": "web-latest" }));
    let out = cmd("chroot")
        .arg(&path)
        .args(["/bin/bash", "-c", "echo from the volume"])
        .stdout();
    assert_eq!(out, "from the volume\n");

    // Removing a volume in use is refused; one unmount leaves it mounted.
    plugin.refused(
        "VolumeDriver.Remove",
        r#"{"Name": "web"}"#,
        "is mounted by container-1, container-2",
    );
    plugin.unmount("web", "container-1");
    assert_eq!(plugin.get("web")["Status"]["mounts"], 1);
    assert!(
        path.join("bin/bash").exists(),
        "still mounted by container-2"
    );

    // The last unmount releases it: the path is no longer handed out, nor shown.
    plugin.unmount("web", "container-2");
    let volume = plugin.get("web");
    assert_eq!(volume["Mountpoint"], "");
    assert_eq!(volume["Status"]["mounts"], 0);
    assert_eq!(
        plugin.call("VolumeDriver.Path", json!({ "Name": "web" }))["Mountpoint"],
        ""
    );
    eventually(
        Duration::from_secs(5),
        || format!("{} still exists after the release", path.display()),
        || (!path.exists()).then_some(()),
    );
    assert_eq!(fs::read_dir(&plugin.mount_dir).unwrap().count(), 0);

    plugin.call("VolumeDriver.Remove", json!({ "Name": "web" }));
    assert!(plugin.list().is_empty());
    plugin.refused(
        "VolumeDriver.Get",
        r#"{"Name": "web"}"#,
        "no volume named \"web\"",
    );
    plugin.stop();
}

#[test]
fn pinned_following_and_plain_volumes_across_versions_and_restarts() {
    let env = Canopy::init("volume-versions");
    import_app(&env, "1", "one\n");
    env.cmd(["assemble", "app", "app"]).success();
    let first = env.current("app");
    fs::write(env.path("server.pub"), env.stdout(["key", "show"])).unwrap();
    let server = Server::start(&env, "127.0.0.1:0");
    let plugin = Plugin::start(&env, &server.url, &["--interval", "200ms"]);
    let create = |name: &str, opts: Value| {
        plugin.call("VolumeDriver.Create", json!({ "Name": name, "Opts": opts }));
    };
    create("app", Value::Null);
    create("pinned", json!({ "root": "app", "commit": first }));
    create("latest", json!({ "root": "app", "follow": "true" }));
    // Creating a volume again with the same options changes nothing.
    create("app", json!({}));

    let plain = plugin.mount("app", "c1");
    let pinned = plugin.mount("pinned", "c2");
    let latest = plugin.mount("latest", "c3");
    assert_eq!(plain, pinned, "both show the same commit: one entry");
    assert_eq!(latest, plugin.mount_dir.join("app"));

    import_app(&env, "2", "two\n");
    env.cmd(["assemble", "app", "app=2"]).success();
    eventually(
        Duration::from_secs(15),
        || format!("latest never moved to version 2:\n{}", plugin.log()),
        || (read(&latest.join("srv/msg")).ok()? == b"two\n").then_some(()),
    );
    assert_eq!(plugin.get("latest")["Status"]["commit"], env.current("app"));
    assert_eq!(read(&pinned.join("srv/msg")).unwrap(), b"one\n");
    assert_eq!(
        read(&plain.join("srv/msg")).unwrap(),
        b"one\n",
        "a plain volume keeps the commit it was mounted at while in use"
    );
    plugin.unmount("app", "c1");
    let remounted = plugin.mount("app", "c4");
    assert_ne!(remounted, plain);
    assert_eq!(read(&remounted.join("srv/msg")).unwrap(), b"two\n");
    assert_eq!(
        read(&pinned.join("srv/msg")).unwrap(),
        b"one\n",
        "releasing a volume keeps an entry another volume uses"
    );
    for (name, id) in [("app", "c4"), ("pinned", "c2"), ("latest", "c3")] {
        plugin.unmount(name, id);
    }
    let state = fs::read(env.path("state/volumes.json")).unwrap();
    plugin.stop();

    // A restarted plugin serves the same volumes from its state file.
    let plugin = Plugin::start(&env, &server.url, &[]);
    assert_eq!(fs::read(env.path("state/volumes.json")).unwrap(), state);
    let names: Vec<String> = plugin.list().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["app", "latest", "pinned"]);
    assert_eq!(
        plugin.get("pinned")["Status"]["options"],
        format!("root=app commit={first}")
    );
    let pinned = plugin.mount("pinned", "after-restart");
    assert_eq!(read(&pinned.join("srv/msg")).unwrap(), b"one\n");
    let latest = plugin.mount("latest", "after-restart");
    assert_eq!(read(&latest.join("srv/msg")).unwrap(), b"two\n");
    plugin.unmount("pinned", "after-restart");
    plugin.unmount("latest", "after-restart");
    plugin.stop();
}

/// A program running from a volume: bash from the volume reads files of the volume and
/// runs bash from the volume, over and over, and prints a line per round; it exits at the
/// first failure. Killed when dropped.
struct Reader {
    child: Child,
    rounds: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Reader {
    fn start(volume: &Path) -> Reader {
        let mut child = Command::new("chroot")
            .arg(volume)
            .args(["/bin/bash", "-c"])
            .arg(
                "while :; do v=$(< /etc/debian_version) && [ -n \"$v\" ] && \
                 /bin/bash -c 'exit 0' && read -r -N 1000 b < /bin/bash || exit 7; \
                 echo round; done",
            )
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let rounds = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let out = child.stdout.take().unwrap();
        let counter = rounds.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for _ in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Reader { child, rounds }
    }

    /// Waits until the program has done `more` rounds; it must still be running.
    fn goes_on(&mut self, more: usize, when: &str) {
        let count = || self.rounds.load(std::sync::atomic::Ordering::Relaxed);
        let target = count() + more;
        eventually(
            AFTER_RESTART,
            || {
                format!(
                    "the program from the volume stopped {when} ({} rounds)",
                    count()
                )
            },
            || (count() >= target).then_some(()),
        );
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "the program from the volume failed {when}: {:?}",
            self.child.try_wait()
        );
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Unmounts the plugin's mount at the end of a test, whatever happened: its mount
/// server outlives the plugin processes a test starts.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Aborts the FUSE connection of the mount at its path if the test fails, so that no
/// program waiting on a mount whose server is gone stays blocked.
struct AbortOnFailure(PathBuf);

impl Drop for AbortOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::mount::abort_connection(&self.0);
        }
    }
}

/// The process id of the latest mount server the plugin logged, as `says` it.
fn logged_pid(log: &str, says: &str) -> i32 {
    log.rsplit(says)
        .next()
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {says:?} in the log:\n{log}"))
}

#[test]
fn mounted_volumes_survive_kill_9_of_the_mount_server() {
    let (env, server) = small_root("volume-server-kill");
    // No follow round during the test: what hides a released volume after a restart is
    // the restart itself.
    let flags = ["--interval", "1h"];
    let plugin = Plugin::start(&env, &server.url, &flags);
    let _guard = MountGuard(plugin.mount_dir.clone());
    plugin.call(
        "VolumeDriver.Create",
        json!({ "Name": "web", "Opts": { "root": "small", "follow": "true" } }),
    );
    plugin.call(
        "VolumeDriver.Create",
        json!({ "Name": "gone", "Opts": { "root": "small" } }),
    );
    let path = plugin.mount("web", "container-1");
    // An entry shown and released before the kill stays hidden after it.
    let gone = plugin.mount("gone", "container-3");
    let mut reader = Reader::start(&path);
    let _abort = AbortOnFailure(plugin.mount_dir.clone());
    reader.goes_on(5, "at first");
    plugin.unmount("gone", "container-3");
    let expected = read(&path.join("bin/bash")).unwrap();
    let before = (plugin.list(), plugin.get("web"));

    // kill -9 of the mount server, three times: the plugin starts it again on the FUSE
    // connection it kept, and the program from the volume only waits. Before the third,
    // the plugin is killed too: the next one keeps the connection of the server it
    // finds.
    let mut plugin = plugin;
    let mut servers = vec![logged_pid(
        &plugin.log(),
        "started the mount server, process ",
    )];
    for round in 1..=3 {
        if round == 3 {
            plugin.exit(libc::SIGKILL, false);
            plugin = Plugin::start(&env, &server.url, &flags);
            assert!(
                plugin
                    .log()
                    .contains("keeping the FUSE connection of the mount server"),
                "{}",
                plugin.log()
            );
        }
        let pid = *servers.last().unwrap();
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reader.goes_on(5, &format!("after kill -9 {round} of the mount server"));
        let log = eventually(
            AFTER_RESTART,
            || format!("the mount server was not started again:\n{}", plugin.log()),
            || {
                let log = plugin.log();
                (log.matches("the mount server serves again").count() == round).then_some(log)
            },
        );
        assert!(
            log.contains("resumed the plugin's mount at"),
            "the mount server did not resume:\n{log}"
        );
        servers.push(logged_pid(&log, "the mount server serves again (process "));
        assert_ne!(servers[round], pid);
        assert_eq!(read(&path.join("bin/bash")).unwrap(), expected);
        assert_eq!((plugin.list(), plugin.get("web")), before);
        // The plugin hides it again as soon as it has started the server again (not
        // at its next follow round, up to --interval later).
        eventually(
            AFTER_RESTART,
            || format!("{} shows again after the restart", gone.display()),
            || (!gone.exists()).then_some(()),
        );
    }
    reader.goes_on(5, "at the end");
    drop(reader);

    // Released: the server unmounts and exits cleanly; nothing is kept or restarted.
    plugin.unmount("web", "container-1");
    plugin.stop();
}

#[test]
fn mounted_volumes_survive_restarts_and_kill_9_of_the_plugin() {
    let (env, server) = small_root("volume-restart");
    // With passthrough where the kernel allows, as a plugin runs by default.
    let flags: [&str; 0] = [];
    let plugin = Plugin::start(&env, &server.url, &flags);
    let _guard = MountGuard(plugin.mount_dir.clone());
    plugin.call(
        "VolumeDriver.Create",
        json!({ "Name": "web", "Opts": { "root": "small" } }),
    );
    plugin.call(
        "VolumeDriver.Create",
        json!({ "Name": "idle", "Opts": { "root": "small", "follow": "true" } }),
    );
    let path = plugin.mount("web", "container-1");
    assert_eq!(plugin.mount("web", "container-2"), path);
    assert_eq!(plugin.mount("web", "container-2"), path);
    let mut reader = Reader::start(&path);
    reader.goes_on(5, "at first");
    let answers = |plugin: &Plugin| {
        (
            plugin.list(),
            plugin.get("web"),
            plugin.get("idle"),
            plugin.call("VolumeDriver.Path", json!({ "Name": "web" })),
        )
    };
    let before = answers(&plugin);
    assert_eq!(before.1["Status"]["mounts"], 3);

    // A plugin stopped while containers use its volumes leaves their mount served; the
    // program reads on while no plugin runs, and a new plugin answers as the old one.
    plugin.exit(libc::SIGTERM, true);
    assert!(
        is_mounted(&env.path("volumes")),
        "SIGTERM unmounted in-use volumes"
    );
    reader.goes_on(5, "after the plugin stopped");
    let plugin = Plugin::start(&env, &server.url, &flags);
    assert_eq!(answers(&plugin), before, "after a restart");
    assert!(
        plugin.log().contains("took up 1 mounted volumes"),
        "{}",
        plugin.log()
    );
    reader.goes_on(5, "after the restart");

    // The same after kill -9.
    plugin.exit(libc::SIGKILL, false);
    reader.goes_on(5, "after kill -9 of the plugin");
    let plugin = Plugin::start(&env, &server.url, &flags);
    assert_eq!(answers(&plugin), before, "after kill -9 and a restart");
    reader.goes_on(5, "after kill -9 and a restart");

    // An upgrade: the plugin restarted from another canopy file has a mount server of
    // that file take the mount over from the old one, live.
    plugin.exit(libc::SIGTERM, true);
    let upgraded = env.path("canopy-upgraded");
    fs::copy(crate::util::BIN, &upgraded).unwrap();
    let plugin = Plugin::start_program(
        &env,
        &server.url,
        &env.path("plugin.sock"),
        &upgraded,
        &flags,
    );
    assert!(
        plugin.log().contains("took the plugin's mount at"),
        "no hand-over to the upgraded mount server:\n{}",
        plugin.log()
    );
    assert_eq!(answers(&plugin), before, "after an upgrade");
    reader.goes_on(5, "after an upgrade");

    // Docker unmounts later with the IDs it got before: the last one releases.
    plugin.unmount("web", "container-1");
    plugin.unmount("web", "container-2");
    assert_eq!(plugin.get("web")["Status"]["mounts"], 1);
    reader.goes_on(5, "while one mount remains");
    assert!(matches!(reader.child.try_wait(), Ok(None)));
    drop(reader);
    plugin.unmount("web", "container-2");
    plugin.refused(
        "VolumeDriver.Unmount",
        r#"{"Name": "web", "ID": "container-2"}"#,
        "not mounted by",
    );
    assert_eq!(plugin.get("web")["Mountpoint"], "");
    eventually(
        Duration::from_secs(5),
        || format!("{} still exists after the release", path.display()),
        || (!path.exists()).then_some(()),
    );

    // A plugin started with other options while no volume is mounted replaces the
    // mount server, which would serve on with the old ones.
    plugin.exit(libc::SIGKILL, false);
    let plugin = Plugin::start(
        &env,
        &server.url,
        &["--no-passthrough", "--cache-size", "1G"],
    );
    assert!(
        plugin.log().contains("replacing the mount server"),
        "{}",
        plugin.log()
    );

    // Another plugin (its own socket and state) on the same mount directory is refused:
    // it would hide this one's volumes.
    let mut flags = plugin_flags(&env, &server.url, &env.path("other.sock"), "-other");
    let at = flags.iter().position(|f| f == "--mount-dir").unwrap();
    flags[at + 1] = env.path("volumes").into();
    let out = env.bare_cmd(["volume-plugin"]).args(flags).failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "serves the volumes of the plugin whose state is in {}",
            env.path("state").display()
        )),
        "{stderr}"
    );
    assert!(is_mounted(&env.path("volumes")));

    // A mount server that dies is started again at once on the connection the plugin
    // kept (mounts of this plugin's options too).
    let pid = logged_pid(&plugin.log(), "started the mount server, process ");
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    eventually(
        AFTER_RESTART,
        || format!("the mount server was not started again:\n{}", plugin.log()),
        || {
            plugin
                .log()
                .contains("the mount server serves again")
                .then_some(())
        },
    );
    let path = plugin.mount("web", "after-a-crash");
    assert_eq!(&read(&path.join("bin/bash")).unwrap()[..4], b"\x7fELF");
    plugin.unmount("web", "after-a-crash");
    plugin.stop();

    // A saved mount that names an entry its definition does not give is refused at
    // start, naming the file.
    let state = env.path("state/volumes.json");
    let mut saved: Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    saved["mounted"] = json!({ "web": { "entry": "other@x", "commit": "x", "users": { "c": 1 } } });
    fs::write(&state, saved.to_string()).unwrap();
    let out = env
        .bare_cmd(["volume-plugin"])
        .args(plugin_flags(
            &env,
            &server.url,
            &env.path("plugin.sock"),
            "",
        ))
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is not a valid volume state file",
            state.display()
        )) && stderr.contains("mounted volume \"web\""),
        "{stderr}"
    );
    assert!(!is_mounted(&env.path("volumes")));
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let (env, server) = small_root("volume-bad");
    let plugin = Plugin::start(&env, &server.url, &[]);
    plugin.call(
        "VolumeDriver.Create",
        json!({ "Name": "web", "Opts": { "root": "small" } }),
    );
    plugin.call(
        "VolumeDriver.Create",
        json!({ "Name": "ghost", "Opts": { "root": "nosuchroot" } }),
    );
    let path = plugin.mount("web", "holder");
    let state = fs::read(env.path("state/volumes.json")).unwrap();
    let listed = plugin.list();
    let commit = env.current("small");

    let cases: &[(&str, String, &str)] = &[
        ("VolumeDriver.Create", "{not json".into(), "not JSON"),
        ("VolumeDriver.Create", "[1, 2]".into(), "invalid type"),
        (
            "VolumeDriver.Create",
            r#"{"Opts": {}}"#.into(),
            "missing field `Name`",
        ),
        (
            "VolumeDriver.Create",
            r#"{"Name": ""}"#.into(),
            "invalid volume name",
        ),
        (
            "VolumeDriver.Create",
            r#"{"Name": "a\u0000b"}"#.into(),
            "invalid volume name",
        ),
        (
            "VolumeDriver.Create",
            r#"{"Name": "../etc"}"#.into(),
            "invalid volume name",
        ),
        (
            "VolumeDriver.Create",
            r#"{"Name": "a/b"}"#.into(),
            "invalid volume name",
        ),
        (
            "VolumeDriver.Create",
            format!(r#"{{"Name": "{}"}}"#, "v".repeat(10_000)),
            "(10000 bytes)",
        ),
        (
            "VolumeDriver.Mount",
            r#"{"Name": "web", "ID": "a\nb"}"#.into(),
            "invalid mount ID",
        ),
        (
            "VolumeDriver.Create",
            r#"{"Name": "x", "Opts": {"size": "1G"}}"#.into(),
            "unknown option \"size\"",
        ),
        (
            "VolumeDriver.Create",
            r#"{"Name": "x", "Opts": {"root": "../../etc"}}"#.into(),
            "invalid root name",
        ),
        (
            "VolumeDriver.Create",
            r#"{"Name": "x", "Opts": {"commit": "abc"}}"#.into(),
            "commit= takes a full commit id",
        ),
        (
            "VolumeDriver.Create",
            format!(r#"{{"Name": "x", "Opts": {{"commit": "{commit}", "follow": "true"}}}}"#),
            "cannot go with follow=true",
        ),
        (
            "VolumeDriver.Create",
            r#"{"Name": "web", "Opts": {"root": "other"}}"#.into(),
            "exists with other options (root=small)",
        ),
        (
            "VolumeDriver.Remove",
            r#"{"Name": "nope"}"#.into(),
            "no volume named \"nope\"",
        ),
        (
            "VolumeDriver.Remove",
            r#"{"Name": "web"}"#.into(),
            "is mounted by holder",
        ),
        (
            "VolumeDriver.Mount",
            r#"{"Name": "web"}"#.into(),
            "missing field `ID`",
        ),
        (
            "VolumeDriver.Mount",
            r#"{"Name": "nope", "ID": "c"}"#.into(),
            "no volume named",
        ),
        (
            "VolumeDriver.Mount",
            r#"{"Name": "ghost", "ID": "c"}"#.into(),
            "the server has no root named nosuchroot",
        ),
        (
            "VolumeDriver.Unmount",
            r#"{"Name": "web", "ID": "stranger"}"#.into(),
            "not mounted by \"stranger\"",
        ),
        (
            "VolumeDriver.Unmount",
            r#"{"Name": "ghost", "ID": "c"}"#.into(),
            "not mounted by",
        ),
        ("VolumeDriver.Get", "".into(), "missing field `Name`"),
        ("VolumeDriver.Path", r#"{"Name": 7}"#.into(), "invalid type"),
        ("VolumeDriver.List", "{oops".into(), "not JSON"),
    ];
    for (method, body, says) in cases {
        plugin.refused(method, body, says);
        assert_eq!(
            fs::read(env.path("state/volumes.json")).unwrap(),
            state,
            "{method} {body} changed the state file"
        );
        assert_eq!(plugin.list(), listed, "{method} {body} changed the volumes");
        assert_eq!(plugin.get("web")["Status"]["mounts"], 1);
        assert!(path.join("bin/bash").exists());
    }
    let unknown = plugin.call_raw("VolumeDriver.Explode", "{}", 404);
    assert!(
        unknown["Err"].as_str().unwrap().contains("unknown method"),
        "{unknown}"
    );
    plugin.unmount("web", "holder");
    let listed = plugin.list();

    // A second plugin on a live socket is refused; the first keeps serving.
    let second = env
        .bare_cmd(["volume-plugin"])
        .args(plugin_flags(&env, &server.url, &plugin.socket, "2"))
        .failure(1);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another plugin is listening on it"),
        "{stderr}"
    );
    assert_eq!(plugin.list(), listed);
    let socket = plugin.socket.clone();
    plugin.stop();

    // A socket file left by a plugin that died is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let plugin = Plugin::start_on(&env, &server.url, &socket, &[]);
    assert_eq!(plugin.list(), listed);
    plugin.stop();

    // A damaged state file stops the start, naming the file and what to do.
    fs::write(env.path("state/volumes.json"), "{\"format\": 1, \"vol").unwrap();
    let out = env
        .bare_cmd(["volume-plugin"])
        .args(plugin_flags(&env, &server.url, &socket, ""))
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} is not a valid volume state file",
            env.path("state/volumes.json").display()
        )) && stderr.contains("move it aside"),
        "{stderr}"
    );
    assert!(!socket.exists(), "a refused start leaves no socket");
}

/// A `dockerd` of the test's own: its data, state and API socket in the test's
/// directory, and no changes to the host's network (no iptables rules, no bridge).
/// Stopped by PID when dropped.
pub(crate) struct Dockerd {
    child: Child,
    host: String,
    dir: PathBuf,
}

impl Dockerd {
    pub(crate) fn start(env: &Canopy) -> Dockerd {
        let dir = env.mkdir("docker");
        let host = format!("unix://{}", dir.join("docker.sock").display());
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["-H", &host])
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("dockerd.log")).unwrap())
            .spawn()
            .expect("starting dockerd (scripts/test.sh installs Debian's docker.io)");
        let log = dir.join("dockerd.log");
        let log = || fs::read_to_string(&log).unwrap_or_default();
        let mut dockerd = Dockerd { child, host, dir };
        eventually(
            Duration::from_secs(60),
            || format!("dockerd did not start:\n{}", log()),
            || {
                if let Ok(Some(status)) = dockerd.child.try_wait() {
                    panic!("dockerd exited with {status}:\n{}", log());
                }
                let version = dockerd.docker(["version"]).output();
                version.status.success().then_some(())
            },
        );
        dockerd
    }

    /// The docker client of the same package, talking to this daemon only.
    pub(crate) fn docker<const N: usize>(&self, args: [&str; N]) -> crate::util::TestCommand {
        let mut command = cmd("/usr/bin/docker");
        command
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .args(["--host", &self.host])
            .args(args);
        command
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let stopped = std::time::Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < stopped {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn docker_runs_a_program_from_a_canopy_volume() {
    let (env, server) = small_root("volume-docker");
    // Docker finds volume plugins by their socket's name in /run/docker/plugins.
    let driver = format!("canopy-test-{}", std::process::id());
    let plugins = Path::new("/run/docker/plugins");
    // dockerd 20.10 keeps an identity key in /etc/docker/key.json, wherever its data is.
    let made: Vec<&Path> = ["/run/docker", "/run/docker/plugins", "/etc/docker/key.json"]
        .into_iter()
        .map(Path::new)
        .filter(|d| !d.exists())
        .collect();
    let plugin = Plugin::start_on(
        &env,
        &server.url,
        &plugins.join(format!("{driver}.sock")),
        &[],
    );
    let dockerd = Dockerd::start(&env);

    // An image with nothing in it but /opt: every program comes from the volume.
    let image_root = env.mkdir("image/opt");
    let image_tar = env.path("image.tar");
    cmd("tar")
        .arg("-C")
        .arg(image_root.parent().unwrap())
        .arg("-cf")
        .arg(&image_tar)
        .arg("opt")
        .success();
    dockerd
        .docker(["import"])
        .arg(&image_tar)
        .arg("canopy-test/empty:1")
        .success();
    dockerd
        .docker(["volume", "create", "-d", &driver, "-o", "root=small", "web"])
        .success();
    let inspect = dockerd.docker(["volume", "inspect", "web"]).stdout();
    assert!(
        inspect.contains(&format!("\"Driver\": \"{driver}\"")),
        "{inspect}"
    );

    // Debian's bash runs with the volume's own loader and libraries.
    let lib = "/opt/root/lib/x86_64-linux-gnu";
    let out = dockerd
        .docker(["run", "--rm", "--network", "none", "-v", "web:/opt/root:ro"])
        .arg("canopy-test/empty:1")
        .arg(format!("{lib}/ld-linux-x86-64.so.2"))
        .args(["--library-path", lib, "/opt/root/bin/bash", "-c"])
        .arg("echo \"Debian $(< /opt/root/etc/debian_version) from canopy\"")
        .stdout();
    let version = env.path("checkout");
    env.cmd(["checkout", "small"]).arg(&version).success();
    let expected = fs::read_to_string(version.join("etc/debian_version")).unwrap();
    assert_eq!(out, format!("Debian {} from canopy\n", expected.trim()));
    assert!(
        plugin.log().contains("volume web: released"),
        "docker did not unmount the volume after the container:\n{}",
        plugin.log()
    );
    assert_eq!(plugin.get("web")["Status"]["mounts"], 0);

    // A container that runs while the plugin is restarted keeps reading from its
    // volume, and Docker's unmount when it goes reaches the new plugin with the ID
    // Docker gave the old one.
    dockerd
        .docker(["run", "-d", "--name", "reader", "--network", "none"])
        .args(["-v", "web:/opt/root:ro", "canopy-test/empty:1"])
        .arg(format!("{lib}/ld-linux-x86-64.so.2"))
        .args(["--library-path", lib, "/opt/root/bin/bash", "-c"])
        .arg("while v=$(< /opt/root/etc/debian_version) && [ -n \"$v\" ]; do :; done; exit 3")
        .success();
    assert_eq!(plugin.get("web")["Status"]["mounts"], 1);
    let socket = plugin.socket.clone();
    plugin.exit(libc::SIGTERM, true);
    let plugin = Plugin::start_on(&env, &server.url, &socket, &[]);
    assert_eq!(plugin.get("web")["Status"]["mounts"], 1);
    std::thread::sleep(Duration::from_secs(1));
    let running = dockerd
        .docker([
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            "reader",
        ])
        .stdout();
    assert_eq!(running, "true 0\n", "the container stopped reading");
    dockerd.docker(["rm", "-f", "reader"]).success();
    eventually(
        Duration::from_secs(30),
        || {
            format!(
                "docker's unmount did not reach the new plugin:\n{}",
                plugin.log()
            )
        },
        || (plugin.get("web")["Status"]["mounts"] == 0).then_some(()),
    );

    dockerd.docker(["volume", "rm", "web"]).success();
    assert!(plugin.list().is_empty(), "docker volume rm removed it");
    drop(dockerd);
    plugin.stop();
    for path in made.iter().rev() {
        if path.is_dir() {
            fs::remove_dir(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
    }
}
