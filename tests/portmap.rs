//! The portmapper of `canopy serve --nfs`: stock clients that ask port 111 where NFS and
//! MOUNT are (rpcinfo, libnfs without port options) find them; with an rpcbind already
//! on port 111, canopy registers with it and withdraws when it stops.
//!
//! Each test runs server and clients in a network namespace of its own (`unshare
//! --net`, loopback only), so port 111 is theirs whatever runs on the host or in
//! other tests.

use crate::debs;
use crate::util::{BIN, Canopy, cmd};

/// Runs `script` with bash in fresh network and mount namespaces, loopback up, with
/// `$CANOPY` the binary and `$STORE` the store; returns its stdout.
fn in_netns(env: &Canopy, script: &str) -> String {
    let preamble = "set -euo pipefail\nip link set lo up\n\
        # Waits for canopy serve's NFS line in $1; prints the port.\n\
        nfs_port() { for _ in $(seq 100); do \
            p=$(sed -n 's/.*over NFSv3 on 127.0.0.1:\\([0-9]*\\)$/\\1/p' \"$1\"); \
            [ -n \"$p\" ] && { echo \"$p\"; return; }; sleep 0.1; done; \
            echo 'canopy serve did not start' >&2; cat \"$1\" >&2; return 1; }\n";
    cmd("unshare")
        .args(["--net", "--mount", "--", "bash", "-c"])
        .arg(format!("{preamble}{script}"))
        .env("CANOPY", BIN)
        .env("STORE", env.store())
        .current_dir(env.path(""))
        .stdout()
}

fn web(name: &str) -> Canopy {
    let env = Canopy::init(name);
    env.cmd(["import", "deb"])
        .args(debs::paths(debs::ROOT_PACKAGES))
        .success();
    env.cmd(["assemble", "web"])
        .args(debs::ROOT_PACKAGES)
        .success();
    env
}

#[test]
fn stock_clients_find_nfs_through_port_111() {
    let env = web("portmap");
    let out = in_netns(
        &env,
        r#"
"$CANOPY" --store "$STORE" serve --nfs 127.0.0.1:0 > serve.out 2> serve.err &
server=$!
port=$(nfs_port serve.out)
echo "port $port"
grep -q 'portmapper on 127.0.0.1:111 (TCP and UDP)' serve.out
echo "--- rpcinfo -p"
rpcinfo -p 127.0.0.1
echo "--- udp"
rpcinfo -u 127.0.0.1 100000 2
echo "--- nfs-ls"
nfs-ls 'nfs://127.0.0.1/web/etc?version=3' | grep -c debian_version
echo "--- nfs-cat"
nfs-cat 'nfs://127.0.0.1/web/etc/debian_version?version=3'
kill "$server"; wait "$server" || true
"#,
    );
    let port = out
        .lines()
        .find_map(|l| l.strip_prefix("port "))
        .unwrap_or_else(|| panic!("no port line in:\n{out}"));
    let section = |name: &str| {
        out.split(&format!("--- {name}\n"))
            .nth(1)
            .and_then(|s| s.split("\n---").next())
            .unwrap_or_else(|| panic!("no {name} section in:\n{out}"))
            .to_string()
    };
    let rpcinfo = section("rpcinfo -p");
    for (prog, name) in [("100003", "nfs"), ("100005", "mountd")] {
        assert!(
            rpcinfo.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 4 && w[0] == prog && w[1] == "3" && w[2] == "tcp" && w[3] == port
            }),
            "rpcinfo -p lists no {name} v3 over tcp at {port}:\n{rpcinfo}"
        );
    }
    assert!(
        !rpcinfo
            .lines()
            .any(|l| l.contains("100003") && l.contains("udp")),
        "NFS is TCP only, yet rpcinfo lists it over UDP:\n{rpcinfo}"
    );
    assert!(
        section("udp").contains("ready and waiting"),
        "the portmapper does not answer over UDP:\n{out}"
    );
    assert_eq!(section("nfs-ls").trim(), "1", "{out}");
    let version = packaged_text("base-files", "etc/debian_version");
    assert_eq!(section("nfs-cat").trim(), version.trim(), "{out}");
}

#[test]
fn an_rpcbind_on_port_111_gets_a_registration_that_is_withdrawn() {
    let env = web("rpcbind");
    let out = in_netns(
        &env,
        r#"
# rpcbind keeps its socket and state in /run: a private one.
mount -t tmpfs tmpfs /run
mkdir -p /run/rpcbind
rpcbind -f -w > rpcbind.out 2>&1 &
rpcbind=$!
for _ in $(seq 50); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && break; sleep 0.1; done
"$CANOPY" --store "$STORE" serve --nfs 127.0.0.1:0 > serve.out 2> serve.err &
server=$!
port=$(nfs_port serve.out)
for _ in $(seq 50); do grep -q 'registered with the portmapper' serve.out && break; sleep 0.1; done
echo "port $port"
cat serve.out
echo "--- while serving"
rpcinfo -p 127.0.0.1
nfs-cat 'nfs://127.0.0.1/web/etc/debian_version?version=3'
kill -TERM "$server"; wait "$server" || true
echo "--- after"
rpcinfo -p 127.0.0.1
kill "$rpcbind"
"#,
    );
    assert!(
        out.contains("NFS and MOUNT registered with the portmapper already on 127.0.0.1:111"),
        "{out}"
    );
    let port = out
        .lines()
        .find_map(|l| l.strip_prefix("port "))
        .unwrap_or_else(|| panic!("no port line in:\n{out}"));
    let (serving, after) = out
        .split_once("--- after\n")
        .unwrap_or_else(|| panic!("{out}"));
    let listed = |text: &str, prog: &str| {
        text.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() >= 4 && w[0] == prog && w[1] == "3" && w[2] == "tcp" && w[3] == port
        })
    };
    assert!(
        listed(serving, "100003") && listed(serving, "100005"),
        "{out}"
    );
    assert!(
        !listed(after, "100003") && !listed(after, "100005"),
        "{out}"
    );
    let version = packaged_text("base-files", "etc/debian_version");
    assert!(serving.contains(version.trim()), "{out}");
}

/// The text of a file of a package, unpacked by dpkg-deb.
fn packaged_text(package: &str, path: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    cmd("dpkg-deb")
        .arg("-x")
        .arg(&debs::deb(package).path)
        .arg(dir.path())
        .success();
    std::fs::read_to_string(dir.path().join(path)).unwrap()
}
