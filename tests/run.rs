//! `canopy run`: real commands of real Debian roots in their own namespaces, from the
//! local store, from a served store, from a directory and a following mount; exit
//! statuses and signals; state across runs and an upgrade; a non-root caller; the
//! super-privileged mode; an image's own command and its INSTALL label.

use crate::debs::{self, ROOT_PACKAGES};
use crate::mount::{Mount, Server, eventually};
use crate::util::{self, Canopy, cmd, simple_deb};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// A store with root `web`: bash, coreutils and what they need, plus `conf` 1 (two
/// files in /etc).
fn web(name: &str) -> Canopy {
    let env = Canopy::init(name);
    env.cmd(["import", "deb"])
        .args(debs::paths(ROOT_PACKAGES))
        .success();
    conf(&env, "1");
    env.cmd(["assemble", "web", "conf"])
        .args(ROOT_PACKAGES)
        .success();
    env
}

/// Imports package `conf` at `version`: /etc/app.conf and /etc/other.conf say it.
fn conf(env: &Canopy, version: &str) {
    let deb = simple_deb(
        &env.mkdir(format!("conf-{version}")),
        "conf",
        version,
        &[
            ("etc/app.conf", format!("app {version}\n").as_bytes()),
            ("etc/other.conf", format!("other {version}\n").as_bytes()),
        ],
    );
    env.cmd(["import", "deb"]).arg(deb).success();
}

/// `canopy run ROOT ARGS… -- /bin/bash -c SCRIPT`.
fn bash(env: &Canopy, root: &str, args: &[&str], script: &str) -> util::TestCommand {
    let mut c = env.cmd(["run", root]);
    c.args(args).args(["--", "/bin/bash", "-c", script]);
    c
}

#[test]
fn runs_from_the_store_with_state_across_an_upgrade() {
    let env = web("run-store");
    let out = bash(&env, "web", &[], "echo hi; id -u; echo ok > /tmp/t && cat /tmp/t; ls /dev/null /proc/self >/dev/null && echo dev-proc").stdout();
    assert_eq!(out, "hi\n0\nok\ndev-proc\n");
    bash(&env, "web", &[], "exit 7").failure(7);
    // An id the run's user namespace does not map is refused, saying which it maps.
    let out = bash(&env, "web", &["--user", "99999"], "true").failure(125);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("maps ids 0 to 65535"), "{err}");
    let out = bash(&env, "web", &[], "touch /usr/x; echo $?").output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    let out = bash(
        &env,
        "web",
        &["--network", "none"],
        "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '",
    )
    .stdout();
    assert_eq!(out, "lo\n", "--network none leaves only loopback");
    let out = env.cmd(["run", "web", "--", "nosuch"]).failure(127);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run nosuch in the root"));

    // Writes to /etc and /var land in --state and stay.
    let state = env.path("state");
    let state_arg = state.to_str().unwrap();
    bash(&env, "web", &["--state", state_arg], "echo mine > /etc/app.conf && echo new > /etc/new.conf && mkdir -p /var/lib/web && echo 1 > /var/lib/web/count").success();
    assert_eq!(
        fs::read_to_string(state.join("etc/upper/app.conf")).unwrap(),
        "mine\n"
    );
    let out = bash(
        &env,
        "web",
        &["--state", state_arg],
        "cat /etc/app.conf /etc/new.conf /var/lib/web/count /etc/other.conf",
    )
    .stdout();
    assert_eq!(out, "mine\nnew\n1\nother 1\n");
    // Without --state nothing is kept.
    bash(&env, "web", &[], "echo gone > /etc/app.conf").success();
    assert_eq!(
        bash(&env, "web", &[], "cat /etc/app.conf").stdout(),
        "app 1\n"
    );

    // After an upgrade: what the host changed stays, the rest is the new version.
    conf(&env, "2");
    env.cmd(["upgrade", "web"]).success();
    let out = bash(
        &env,
        "web",
        &["--state", state_arg],
        "cat /etc/app.conf /etc/other.conf",
    )
    .stdout();
    assert_eq!(out, "mine\nother 2\n");
    let diff = env.stdout(["run", "web", "--state", state_arg, "--diff"]);
    assert_eq!(diff, "M /etc/app.conf\nA /etc/new.conf\nA /var/lib/web/\n");
    env.fsck_clean();
}

#[test]
fn run_starts_with_the_directories_a_booted_host_has_and_resolves_its_hostname() {
    // /run is a fresh tmpfs: services expect the root's own /run directories
    // (/run/lock, where apache2ctl takes its lock), what tmpfiles.d declares
    // (/run/postgresql, owned by postgres, where pg_ctl writes its pid file) and the
    // RuntimeDirectory= of enabled services (/run/sshd, which sshd -t wants); and
    // their own hostname to resolve (apache2, make-ssl-cert, sudo look it up).
    let env = web("run-runtime");
    let deb = simple_deb(
        &env.mkdir("svc"),
        "svc",
        "1",
        &[
            (
                "etc/passwd",
                b"root:x:0:0:root:/root:/bin/bash\nsvc:x:105:107::/nonexistent:/bin/false\n",
            ),
            ("etc/group", b"root:x:0:\nsvc:x:107:\n"),
            (
                "usr/lib/tmpfiles.d/svc.conf",
                b"d /run/svc 2750 svc svc -\nd /var/run/svc/sub 0700 svc\nf /run/svc/file 0644\n",
            ),
            ("run/app/sub/stale.pid", b"1\n"),
            (
                "etc/systemd/system/multi-user.target.wants/svc.service",
                b"[Service]\nUser=svc\nRuntimeDirectory=svcd\nRuntimeDirectoryMode=0750\n",
            ),
        ],
    );
    env.cmd(["import", "deb"]).arg(deb).success();
    env.cmd(["assemble", "svc", "svc"])
        .args(ROOT_PACKAGES)
        .success();
    let out = bash(
        &env,
        "svc",
        &[],
        "stat -c '%n %a %U %G' /run/svc /run/svc/sub /run/app /run/app/sub /run/svcd; ls -A /run/app/sub /run/svc; \
         h=$(</proc/sys/kernel/hostname); while read -r a b; do [ \"$b\" = \"$h\" ] && echo \"$a $b\"; done < /etc/hosts",
    )
    .stdout();
    assert_eq!(
        out,
        "/run/svc 2750 svc svc\n/run/svc/sub 700 svc root\n/run/app 755 root root\n\
         /run/app/sub 755 root root\n/run/svcd 750 svc svc\n/run/app/sub:\n\n/run/svc:\nsub\n127.0.1.1 svc\n"
    );
    // The host's own names are still there.
    let out = bash(&env, "svc", &["--hostname", "other"], "cat /etc/hosts").stdout();
    let host = fs::read_to_string("/etc/hosts").unwrap();
    assert!(out.starts_with(host.trim_end()), "{out}");
    assert!(out.ends_with("127.0.1.1\tother\n"), "{out}");
}

#[test]
fn identical_files_stay_apart_when_one_is_written() {
    // Files with the same bytes, mode and owner are one inode in the mount (their page
    // cache is shared): empty logs, default configs. Writing one through the run's
    // /etc or /var overlay must leave the other as it was.
    let env = web("run-twins");
    let deb = simple_deb(
        &env.mkdir("twins"),
        "twins",
        "1",
        &[
            ("var/log/app/access.log", b""),
            ("var/log/app/error.log", b""),
            ("etc/twins/a.conf", b"same\n"),
            ("etc/twins/b.conf", b"same\n"),
        ],
    );
    env.cmd(["import", "deb"]).arg(deb).success();
    env.cmd(["assemble", "twins", "twins"])
        .args(ROOT_PACKAGES)
        .success();
    let out = bash(
        &env,
        "twins",
        &[],
        "echo x >> /var/log/app/access.log; echo changed > /etc/twins/a.conf; \
         cat /var/log/app/error.log /etc/twins/b.conf; echo --; \
         cat /var/log/app/access.log /etc/twins/a.conf",
    )
    .stdout();
    assert_eq!(out, "same\n--\nx\nchanged\n");
}

#[test]
fn signals_reach_the_command_and_its_status_comes_back() {
    let env = web("run-signals");
    // Killed by a signal: 128 + N, as shells report it.
    bash(&env, "web", &[], "kill -TERM $$").failure(143);
    // A SIGTERM to canopy goes to the command, whose trap answers.
    let mut child = Command::new(util::BIN)
        .arg("--store")
        .arg(env.store())
        .args(["run", "web", "--", "/bin/bash", "-c"])
        .arg("trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.1; done")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: kill with the pid of our child and a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = eventually(
        Duration::from_secs(20),
        || "canopy run did not end".into(),
        || child.try_wait().unwrap(),
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got TERM\n");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn runs_from_a_server_and_from_directories() {
    let env = web("run-remote");
    fs::write(env.path("server.pub"), env.stdout(["key", "show"])).unwrap();
    let server = Server::start(&env, "127.0.0.1:0");
    let remote = |script: &str| {
        let mut c = env.bare_cmd(["run", "--server", &server.url, "--trust"]);
        c.arg(env.path("server.pub"))
            .arg("--cache-dir")
            .arg(env.path("cache"))
            .args(["web", "--", "/bin/bash", "-c", script]);
        c
    };
    assert_eq!(remote("cat /etc/app.conf").stdout(), "app 1\n");
    remote("exit 7").failure(7);
    let err = env
        .bare_cmd(["run", "--server", &server.url, "web", "--", "true"])
        .failure(125);
    assert!(String::from_utf8_lossy(&err.stderr).contains("--trust"));

    // A checkout.
    let dir = env.path("checkout");
    env.cmd(["checkout", "web"]).arg(&dir).success();
    let out = env
        .bare_cmd(["run"])
        .arg(&dir)
        .args(["--", "/bin/bash", "-c", "cat /etc/app.conf; exit 7"])
        .failure(7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app 1\n");

    // A following mount: the run stays on the commit it started with (NAME@COMMIT).
    let mount = Mount::start(&env, "mnt", &server.url, &["--follow", "--interval", "1s"]);
    let commit = env.current("web");
    let shown = util::xattr(&mount.path("web"), b"user.canopy.commit").expect("the commit xattr");
    assert_eq!(String::from_utf8(shown).unwrap(), commit);
    assert!(mount.path(&format!("web@{commit}")).is_dir());
    let out = env
        .bare_cmd(["run"])
        .arg(mount.path("web"))
        .args(["--", "/bin/bash", "-c", "cat /etc/other.conf"])
        .stdout();
    assert_eq!(out, "other 1\n");
    // With the mount there, a run from the server uses it: its cache and its inodes.
    let mut verbose = env.bare_cmd(["-v", "run", "--server", &server.url, "--trust"]);
    verbose.arg(env.path("server.pub")).args([
        "web",
        "--",
        "/bin/bash",
        "-c",
        "cat /etc/other.conf",
    ]);
    let out2 = verbose.success();
    assert_eq!(String::from_utf8_lossy(&out2.stdout), "other 1\n");
    let stderr = String::from_utf8_lossy(&out2.stderr);
    assert!(
        stderr.contains(&format!(
            "from the host's mount {}",
            mount.path(&format!("web@{commit}")).display()
        )),
        "{stderr}"
    );

    // A host mount whose process does not answer (stopped here) is never touched: the
    // run asks each mount's process first, within a deadline, and fetches the root
    // itself; a directory on that mount is refused within a bound, not waited on.
    {
        let _resume = Resumes(&mount);
        mount.signal(libc::SIGSTOP);
        // The kernel still holds the mount's names and attributes (kept for long): the
        // run must find the stopped process out all the same.
        let mut past = env.bare_cmd(["-v", "run", "--server", &server.url, "--trust"]);
        past.arg(env.path("server.pub"))
            .arg("--cache-dir")
            .arg(env.path("cache"))
            .args(["web", "--", "/bin/bash", "-c", "cat /etc/other.conf"]);
        let out = past
            .output_within(Duration::from_secs(120))
            .expect("canopy run hung on a stopped host mount");
        assert!(
            out.status.success(),
            "{}",
            past.report("exit status 0", &out)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "other 1\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("does not answer"), "{stderr}");
        assert!(!stderr.contains("from the host's mount"), "{stderr}");

        let mut on_it = env.bare_cmd(["run"]);
        on_it.arg(mount.path("web")).args(["--", "/bin/true"]);
        let out = on_it
            .output_within(Duration::from_secs(60))
            .expect("canopy run hung on a directory of a stopped mount");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("which does not answer within"),
            "{}",
            on_it.report("a refusal", &out)
        );
        let mut bound = env.bare_cmd(["run", "--bind"]);
        bound
            .arg(format!("{}:/mnt", mount.path("web").display()))
            .arg(&dir)
            .args(["--", "/bin/true"]);
        let out = bound
            .output_within(Duration::from_secs(60))
            .expect("canopy run hung on a --bind source on a stopped mount");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("which does not answer within"),
            "{}",
            bound.report("a refusal", &out)
        );
        // A super-privileged run binds the host's / and /run, stopped mount included,
        // and never looks into it.
        let mut spc = env.bare_cmd(["run", "--spc"]);
        spc.arg(&dir)
            .args(["--", "/bin/bash", "-c", "cat /etc/app.conf"]);
        let out = spc
            .output_within(Duration::from_secs(60))
            .expect("canopy run --spc hung on a stopped host mount");
        assert!(
            out.status.success(),
            "{}",
            spc.report("exit status 0", &out)
        );
    }
    // Resumed, it is used again.
    assert_eq!(verbose.success().stdout, b"other 1\n");
    mount.stop();
}

/// Resumes a stopped mount's process when dropped, whatever the test did meanwhile;
/// after a failure, also aborts the mount's connection, so that no process (a run the
/// test gave up on) stays blocked on it.
struct Resumes<'a>(&'a Mount);

impl Drop for Resumes<'_> {
    fn drop(&mut self) {
        self.0.signal(libc::SIGCONT);
        if std::thread::panicking() {
            crate::mount::abort_connection(&self.0.dir);
        }
    }
}

/// `/dev/fuse` is `0600 root` on this machine type: tests that run as another user
/// open it to everyone while they run, and put it back after the last one.
static FUSE_OPEN: Mutex<u32> = Mutex::new(0);

struct FuseForAll;

impl FuseForAll {
    fn grant() -> FuseForAll {
        let mut n = FUSE_OPEN.lock().unwrap();
        if *n == 0 {
            fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
        }
        *n += 1;
        FuseForAll
    }
}

impl Drop for FuseForAll {
    fn drop(&mut self) {
        let mut n = FUSE_OPEN.lock().unwrap();
        *n -= 1;
        if *n == 0 {
            let _ = fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o600));
        }
    }
}

fn as_nobody(env: &Canopy, args: &[&str]) -> util::TestCommand {
    let mut c = cmd("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        util::BIN,
        "--store",
    ])
    .arg(env.store())
    .args(args)
    .env("HOME", env.path(""))
    .env("XDG_RUNTIME_DIR", env.mkdir("nobody-run"));
    c
}

#[test]
fn runs_unprivileged_and_refuses_spc_to_non_root() {
    let env = web("run-nobody");
    let runtime = env.path("nobody-run");
    fs::create_dir_all(&runtime).unwrap();
    std::os::unix::fs::chown(&runtime, Some(65534), Some(65534)).unwrap();
    let _fuse = FuseForAll::grant();
    let out = as_nobody(
        &env,
        &[
            "run",
            "web",
            "--",
            "/bin/bash",
            "-c",
            "id -u; cat /etc/app.conf; touch /usr/x",
        ],
    )
    .output();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout, "0\napp 1\n", "{stderr}");
    assert!(
        stderr.contains("touch: cannot touch '/usr/x': Read-only file system"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1));
    let out = as_nobody(&env, &["run", "web", "--spc", "--", "true"]).failure(125);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--spc needs root"));
}

#[test]
fn spc_sees_the_host() {
    let env = web("run-spc");
    let out = bash(
        &env,
        "web",
        &["--spc"],
        "cat /proc/1/comm /host/etc/hostname; echo $HOST $NAME $IMAGE",
    )
    .stdout();
    let host_init = fs::read_to_string("/proc/1/comm").unwrap();
    let hostname = fs::read_to_string("/etc/hostname").unwrap();
    assert_eq!(out, format!("{host_init}{hostname}/host web web\n"));
}

#[test]
fn image_roots_run_their_command_and_labels() {
    let env = Canopy::init("run-image");
    let (layout, _) = crate::image::umoci_image(&env);
    env.cmd(["import", "oci"])
        .arg(&layout)
        .args(["--name", "app"])
        .success();
    assert_eq!(env.stdout(["run", "app"]), "hello from /opt\n");
    let out = env.cmd(["run", "app", "--label", "install"]).output();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "install app as app\n");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("INSTALL: /bin/bash -c 'echo install app as app'"),
        "the command is printed first: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.stdout(["run", "app", "--name", "app2", "--label", "install"]);
    assert_eq!(out, "install app as app2\n");
    let out = env.cmd(["run", "app", "--label", "uninstall"]).failure(125);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no UNINSTALL label"));
}
