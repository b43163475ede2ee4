//! Bounded waits: a server (here a proxy in front of it) that sends a few hundred bytes
//! a second makes a reader fail with EIO within `--timeout + size / --min-rate`, and a
//! reader killed meanwhile is gone at once, whatever the deadline; nothing it left
//! behind poisons the cache.

use crate::corpus;
use crate::mount::{Mount, Server, read};
use crate::proxy::TcpProxy;
use crate::util::Canopy;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A TCP proxy to `upstream` that, while `dribble` is set, sends answers on at about
/// 300 bytes a second (30 bytes every 100 ms). Requests always pass at full speed.
struct Proxy {
    url: String,
    dribble: Arc<AtomicBool>,
    _proxy: TcpProxy,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let dribble = Arc::new(AtomicBool::new(false));
        let d = dribble.clone();
        let proxy = TcpProxy::start(
            upstream,
            Arc::new(|c, s, _: &AtomicBool| pipe(c, s, None)),
            Arc::new(move |s, c, stop: &AtomicBool| pipe(s, c, Some((&d, stop)))),
        );
        Proxy {
            url: proxy.url.clone(),
            dribble,
            _proxy: proxy,
        }
    }
}

/// Copies `from` to `to`; with `slow`, 30 bytes per 100 ms while its flag is set.
fn pipe(mut from: TcpStream, mut to: TcpStream, slow: Option<(&AtomicBool, &AtomicBool)>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let dribbling = slow
            .as_ref()
            .is_some_and(|(d, _)| d.load(Ordering::Relaxed));
        if slow
            .as_ref()
            .is_some_and(|(_, s)| s.load(Ordering::Relaxed))
        {
            break;
        }
        // The slow direction always reads 30 bytes at a time: a read already waiting
        // when dribbling starts must not let a whole answer through at once.
        let want = if slow.is_some() { 30 } else { buf.len() };
        let n = match from.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if dribbling {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn a_dribbling_server_gives_eio_within_the_deadline_and_killable_readers() {
    let env = Canopy::init("waits-dribble");
    let deb = env.path("slow.deb");
    fs::write(&deb, corpus::good_deb("slow")).unwrap();
    env.cmd(["import", "deb"]).arg(&deb).success();
    // Another 64 KiB file, with other content than the first.
    let other = corpus::noise(128 * 1024)[64 * 1024..].to_vec();
    let tar = corpus::Tar::new()
        .dir("./")
        .file("./other", &other)
        .finish();
    let deb2 = env.path("slow2.deb");
    fs::write(&deb2, corpus::deb_of("slowtwo", &tar)).unwrap();
    env.cmd(["import", "deb"]).arg(&deb2).success();
    env.cmd(["assemble", "slow", "slow", "slowtwo"]).success();
    let server = Server::start(&env, "127.0.0.1:0");
    let proxy = Proxy::start(&server.url);
    // A 64 KiB file at --min-rate 64K: at most 2 s + 1 s from one server.
    let mount = Mount::start(
        &env,
        "mnt",
        &proxy.url,
        &[
            "--root",
            "slow",
            "--timeout",
            "2s",
            "--min-rate",
            "64K",
            "--no-passthrough",
        ],
    );
    let (one, two) = (mount.path("usr/share/slow/data"), mount.path("other"));
    proxy.dribble.store(true, Ordering::Relaxed);

    let started = Instant::now();
    let err = read(&one).expect_err("a read through a dribbling proxy succeeded");
    let took = started.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(took < Duration::from_secs(8), "EIO came after {took:?}");

    // A reader killed while it waits is gone within the same bound.
    let mut reader = Command::new("cat").arg(&two).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    reader.kill().unwrap();
    let status = reader.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "kill took {:?}",
        killed.elapsed()
    );

    // Nothing half-fetched stays: at full speed both files read right.
    proxy.dribble.store(false, Ordering::Relaxed);
    let data = corpus::noise(64 * 1024);
    assert_eq!(read(&one).unwrap(), data);
    assert_eq!(read(&two).unwrap(), other);
    mount.stop();
}

#[test]
fn a_reader_waiting_on_a_slow_fetch_dies_at_once_when_killed() {
    let env = Canopy::init("waits-kill");
    // Larger than what the proxy passes at once before it notices it must dribble.
    let content = corpus::noise(1 << 20);
    let tar = corpus::Tar::new()
        .dir("./")
        .file("./big", &content)
        .finish();
    let deb = env.path("kill.deb");
    fs::write(&deb, corpus::deb_of("kill", &tar)).unwrap();
    env.cmd(["import", "deb"]).arg(&deb).success();
    env.cmd(["assemble", "kill", "kill"]).success();
    let server = Server::start(&env, "127.0.0.1:0");
    let proxy = Proxy::start(&server.url);
    // Deadlines far beyond the test: a fetch at 300 B/s may take minutes. With
    // passthrough as the host allows (root: on) and without it.
    for (name, extra) in [("pass", &[][..]), ("plain", &["--no-passthrough"][..])] {
        let args = [
            &["--root", "kill", "--timeout", "300s", "--min-rate", "1"][..],
            extra,
        ]
        .concat();
        let mount = Mount::start(&env, name, &proxy.url, &args);
        let file = mount.path("big");
        proxy.dribble.store(true, Ordering::Relaxed);
        for signal in [libc::SIGKILL, libc::SIGTERM] {
            let mut reader = Command::new("cat")
                .arg(&file)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            if let Some(status) = reader.try_wait().unwrap() {
                let mut said = String::new();
                reader
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut said)
                    .unwrap();
                panic!(
                    "{name}: cat ended ({status}: {said}) before it was killed:\n{}",
                    mount.log()
                );
            }
            let killed = Instant::now();
            // SAFETY: kill with a valid pid and signal.
            unsafe { libc::kill(reader.id() as i32, signal) };
            let status = reader.wait().unwrap();
            let took = killed.elapsed();
            assert_eq!(status.signal(), Some(signal), "{name}");
            assert!(
                took < Duration::from_secs(3),
                "{name}: signal {signal} took {took:?}"
            );
        }
        // The fetch goes on for the next reader, at full speed once the server is back.
        proxy.dribble.store(false, Ordering::Relaxed);
        assert!(read(&file).unwrap() == content, "{name}: other bytes read");
        mount.stop();
    }
}
