//! The sandbox on this machine's kernel, as root (what `scripts/test.sh` runs as): a
//! root made of the host's read-only `/usr` and links, shifted ids, no network, its own
//! PIDs, failures reported by step, exit statuses and kills passed through.

use canopy_sandbox::{Mount, Namespaces, SHIFTED_IDS, Sandbox, SandboxError, Stdio, Users};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A root directory with the host's `/usr` bound read-only and the merged-/usr links,
/// enough to run the host's shell and coreutils.
fn sandbox(root: &Path, users: Users) -> Sandbox {
    // Root of the namespace owns its root directory, as a configured root's does.
    let (uid, gid) = (users.host_uid(0).unwrap(), users.host_gid(0).unwrap());
    std::os::unix::fs::chown(root, Some(uid), Some(gid)).unwrap();
    for link in ["bin", "sbin", "lib", "lib64"] {
        let _ = std::os::unix::fs::symlink(format!("usr/{link}"), root.join(link));
    }
    // Debian 12 hosts are merged-/usr or not; the host's own /bin, /lib… are bound when
    // they are real directories.
    let mut sb = Sandbox::new(users);
    sb.root(root)
        .mount(Mount::Bind {
            source: "/usr".into(),
            target: "/usr".into(),
            read_only: true,
        })
        .mount(Mount::Proc {
            target: "/proc".into(),
        })
        .mount(Mount::Dev {
            target: "/dev".into(),
        })
        .mount(Mount::Tmpfs {
            target: "/tmp".into(),
            mode: 0o1777,
        })
        .env("PATH", "/usr/bin:/usr/sbin");
    for dir in ["bin", "sbin", "lib", "lib64"] {
        let host = Path::new("/").join(dir);
        if host.is_dir() && !host.is_symlink() {
            let _ = fs::remove_file(root.join(dir));
            sb.mount(Mount::Bind {
                source: host,
                target: Path::new("/").join(dir),
                read_only: true,
            });
        }
    }
    sb
}

fn output(sb: &mut Sandbox, script: &str) -> (String, i32) {
    sb.stdout(Stdio::Piped);
    let mut child = sb.spawn("sh", ["-c", script]).expect("spawn");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    (out, status.code().unwrap_or(-1))
}

#[test]
fn shifted_root_is_nobody_outside() {
    let dir = tempfile::tempdir().unwrap();
    let users = Users::shifted(SHIFTED_IDS).unwrap();
    let base = users.host_uid(0).unwrap();
    assert_ne!(base, 0);
    let mut sb = sandbox(dir.path(), users);
    sb.hostname("sandboxed");
    let (out, code) = output(
        &mut sb,
        "id -u; hostname; echo $$; cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'; \
         ls /sys/class/net 2>/dev/null; grep -c ':' /proc/net/dev; \
         echo x > /proc/sys/kernel/core_pattern && echo WROTE-CORE-PATTERN; \
         touch /created && chown 33:33 /created && echo chowned",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert_eq!(lines[1], "sandboxed", "{out}");
    assert_eq!(
        lines[2], "2",
        "the command runs under the namespace's init: {out}"
    );
    assert_eq!(lines[3], format!("0 {base} {SHIFTED_IDS}"), "{out}");
    assert!(out.contains("\n1\n"), "only lo in /proc/net/dev: {out}");
    assert!(!out.contains("WROTE-CORE-PATTERN"), "{out}");
    assert!(out.contains("chowned"), "{out}");
    let meta = fs::metadata(dir.path().join("created")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (base + 33, base + 33));
}

#[test]
fn failures_name_the_step_and_statuses_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = sandbox(dir.path(), Users::shifted(SHIFTED_IDS).unwrap());
    let err = sb.spawn("/no/such/program", ["x"]).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, SandboxError::Setup { .. }) && text.contains("running /no/such/program"),
        "{text}"
    );
    let mut sb = sandbox(dir.path(), Users::shifted(SHIFTED_IDS).unwrap());
    assert_eq!(output(&mut sb, "exit 7").1, 7);
    let mut sb = sandbox(dir.path(), Users::shifted(SHIFTED_IDS).unwrap());
    assert_eq!(output(&mut sb, "kill -9 $$").1, 128 + 9);

    // A symlinked mount target is refused, not followed.
    std::os::unix::fs::symlink("/etc", dir.path().join("trap")).unwrap();
    let mut sb = sandbox(dir.path(), Users::shifted(SHIFTED_IDS).unwrap());
    sb.mount(Mount::Tmpfs {
        target: "/trap/x".into(),
        mode: 0o755,
    });
    let err = sb.spawn("true", [] as [&str; 0]).unwrap_err().to_string();
    assert!(err.contains("/trap/x") && err.contains("ELOOP"), "{err}");
}

#[test]
fn killing_the_sandbox_kills_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = sandbox(dir.path(), Users::shifted(SHIFTED_IDS).unwrap());
    sb.stdout(Stdio::Piped);
    // A daemon that leaves its parent: it still dies with the namespace.
    let mut child = sb
        .spawn(
            "sh",
            ["-c", "(setsid sleep 300 &) ; echo started; sleep 300"],
        )
        .unwrap();
    let mut buf = [0u8; 8];
    child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    let start = Instant::now();
    let status = child.kill().unwrap();
    assert!(!status.success());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(child.wait_timeout(Duration::ZERO).unwrap().is_some());
}

#[test]
fn super_privileged_sees_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = sandbox(dir.path(), Users::Current);
    sb.namespaces(Namespaces {
        mount: true,
        ..Namespaces::NONE
    })
    .mount(Mount::Bind {
        source: "/".into(),
        target: "/host".into(),
        read_only: true,
    });
    let host_init = fs::read_to_string("/proc/1/comm").unwrap();
    let (out, code) = output(
        &mut sb,
        "cat /proc/1/comm; test -d /host/etc && echo host-etc; id -u",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("{host_init}host-etc\n0\n"));
}

#[test]
fn caller_root_keeps_owners_for_root() {
    let dir = tempfile::tempdir().unwrap();
    let users = Users::caller_root(SHIFTED_IDS).unwrap();
    assert_eq!(users.host_uid(33), Some(33), "root's map is the identity");
    let mut sb = sandbox(dir.path(), users);
    let (out, code) = output(
        &mut sb,
        "id -u; cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'; \
         touch /created && chown 33:34 /created && echo chowned",
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, format!("0\n0 0 {SHIFTED_IDS}\nchowned\n"));
    let meta = fs::metadata(dir.path().join("created")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (33, 34));
}
