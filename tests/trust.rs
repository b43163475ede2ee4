//! Signed names on the client: a ref swapped to another root's signed commit, a ref
//! replayed to an older commit, and a root signed by a foreign key among good ones —
//! each refused with a message that says why, while the other roots stay mounted.

use crate::mount::{Mount, Server, eventually, import_app, read};
use crate::util::{Canopy, cmd};
use std::fs;
use std::time::Duration;

/// Points `refs/roots/NAME` of `env`'s store at `commit`, as a compromised server would.
fn set_ref(env: &Canopy, name: &str, commit: &str) {
    fs::write(
        env.store().join("refs/roots").join(name),
        format!("{commit}\n"),
    )
    .unwrap();
}

#[test]
fn swapped_replayed_and_foreign_roots_are_refused_and_the_others_mount() {
    let env = Canopy::init("trust");
    import_app(&env, "1", "one\n");
    env.cmd(["assemble", "a", "app"]).success();
    env.cmd(["assemble", "b", "app"]).success();
    env.cmd(["assemble", "c", "app"]).success();
    // Root f is signed by another store's key; its objects are copied over.
    let other = Canopy::init("trust-other");
    import_app(&other, "1", "foreign\n");
    other.cmd(["assemble", "f", "app"]).success();
    cmd("cp")
        .args(["-a", "--no-clobber"])
        .arg(other.store().join("objects/."))
        .arg(env.store().join("objects"))
        .success();
    set_ref(&env, "f", &other.current("f"));
    // Root c's ref is swapped to b's commit, signed as a version of b.
    set_ref(&env, "c", &env.current("b"));
    let server = Server::start(&env, "127.0.0.1:0");

    let mount = Mount::start(&env, "all", &server.url, &[]);
    let mut shown: Vec<String> = fs::read_dir(&mount.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    shown.sort();
    assert_eq!(shown, ["a", "b"], "log:\n{}", mount.log());
    let log = mount.log();
    assert!(
        log.contains("refusing root c: its ref points at commit")
            && log.contains("signed as a version of root b"),
        "{log}"
    );
    assert!(
        log.contains("refusing root f") && log.contains("not by the trusted key"),
        "{log}"
    );
    assert_eq!(read(&mount.path("a/srv/msg")).unwrap(), b"one\n");
    mount.stop();

    // Mounting the swapped root alone fails and says why.
    let dir = env.mkdir("c-alone");
    let out = env
        .bare_cmd(["mount", &server.url])
        .arg(&dir)
        .args(["--root", "c", "--trust"])
        .arg(env.path("server.pub"))
        .arg("--cache-dir")
        .arg(env.path("c-cache"))
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signed as a version of root b"), "{stderr}");

    // A followed root whose ref goes back to an older commit stays where it was.
    let first = env.current("a");
    let follow = Mount::start(
        &env,
        "follow",
        &server.url,
        &["--root", "a", "--follow", "--interval", "200ms"],
    );
    import_app(&env, "2", "two\n");
    env.cmd(["assemble", "a", "app=2"]).success();
    eventually(
        Duration::from_secs(10),
        || format!("version 2 never shown:\n{}", follow.log()),
        || (read(&follow.path("srv/msg")).ok()? == b"two\n").then_some(()),
    );
    set_ref(&env, "a", &first);
    eventually(
        Duration::from_secs(10),
        || format!("the replay was not refused:\n{}", follow.log()),
        || follow.log().contains("which is not newer").then_some(()),
    );
    assert_eq!(read(&follow.path("srv/msg")).unwrap(), b"two\n");
    follow.stop();
}
