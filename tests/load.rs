//! Connections under load: hundreds of idle and of slow (one byte a second) clients on
//! the HTTP and NFS ports of one `canopy serve`, while a normal client — raw HTTP/1.1
//! requests, and libnfs's `nfs-cat` — keeps getting its answers within a second; and
//! the same with the server's open-file limit at 64, where it must keep serving by
//! closing the connections idle longest, and go on serving once the crowd leaves.

use crate::corpus;
use crate::util::{Canopy, cmd};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Clients of each kind, per port.
const CROWD: usize = 300;
/// How long a normal client may wait for an answer.
const PROMPT: Duration = Duration::from_secs(1);

/// `canopy serve` with HTTP and NFS on free ports, optionally under an open-file limit.
struct Serve {
    child: Child,
    http: SocketAddr,
    nfs: u16,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(env: &Canopy, nofile: Option<u64>) -> Serve {
        let log = env.path(format!("serve-{nofile:?}.log"));
        let mut command = Command::new(crate::util::BIN);
        command
            .arg("--store")
            .arg(env.store())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--nfs", "127.0.0.1:0", "--no-portmap"])
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap());
        if let Some(n) = nofile {
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit between fork and exec touches only the child.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                })
            };
        }
        let mut child = command.spawn().expect("starting canopy serve");
        let (mut http, mut nfs) = (None, None);
        let out = child.stdout.take().unwrap();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("on http://").nth(1) {
                http = Some(addr.parse().unwrap());
            } else if let Some(addr) = line.split("over NFSv3 on ").nth(1) {
                nfs = Some(addr.rsplit(':').next().unwrap().parse().unwrap());
            }
            if http.is_some() && nfs.is_some() {
                break;
            }
        }
        let (Some(http), Some(nfs)) = (http, nfs) else {
            panic!(
                "canopy serve did not say where it listens:\n{}",
                fs::read_to_string(&log).unwrap()
            );
        };
        Serve {
            child,
            http,
            nfs,
            log,
        }
    }

    /// `GET /v1/roots` on a new connection: the status line and body, and how long the
    /// answer took.
    fn get_roots(&self) -> (String, Duration) {
        let started = Instant::now();
        let mut s = TcpStream::connect(self.http).expect("connecting to HTTP");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET /v1/roots HTTP/1.1\r\nHost: canopy\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let read = s.read_to_string(&mut answer);
        let took = started.elapsed();
        read.unwrap_or_else(|e| panic!("reading the answer to GET /v1/roots: {e} ({answer:?})"));
        (answer, took)
    }

    /// `nfs-cat` of a file: its bytes, and how long that took.
    fn nfs_cat(&self, path: &str) -> (Vec<u8>, Duration) {
        let url = format!(
            "nfs://127.0.0.1{path}?version=3&nfsport={0}&mountport={0}",
            self.nfs
        );
        let started = Instant::now();
        let out = cmd("nfs-cat").arg(&url).output();
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "nfs-cat {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.stdout, took)
    }

    /// The normal client, a few times over a few seconds: every answer right and
    /// within [`PROMPT`].
    fn answers_promptly(&mut self, when: &str, content: &[u8]) {
        for _ in 0..5 {
            let (answer, took) = self.get_roots();
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.contains("\"load\""),
                "{when}: GET /v1/roots answered {answer:?}"
            );
            assert!(took < PROMPT, "{when}: GET /v1/roots took {took:?}");
            let (bytes, took) = self.nfs_cat("/load/usr/share/load/data");
            assert_eq!(bytes, content, "{when}: nfs-cat read other bytes");
            assert!(took < PROMPT, "{when}: nfs-cat took {took:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "{when}: canopy serve died:\n{}",
            fs::read_to_string(&self.log).unwrap()
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Idle and slow clients on both ports; the slow ones send a byte a second (of an
/// HTTP request head, of an RPC record) until dropped.
struct Crowd {
    idle: Vec<TcpStream>,
    stop: Arc<AtomicBool>,
    dribbler: Option<std::thread::JoinHandle<()>>,
}

impl Crowd {
    fn gather(serve: &Serve) -> Crowd {
        let nfs: SocketAddr = ([127, 0, 0, 1], serve.nfs).into();
        let mut idle = Vec::new();
        let mut slow = Vec::new();
        for _ in 0..CROWD {
            for addr in [serve.http, nfs] {
                idle.push(TcpStream::connect(addr).expect("an idle client connects"));
                let s = TcpStream::connect(addr).expect("a slow client connects");
                s.set_nonblocking(true).unwrap();
                let talk: &[u8] = if addr == nfs {
                    // An RPC record marker announcing 40 bytes, then the call's start.
                    b"\x80\x00\x00\x28\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02"
                } else {
                    b"GET /v1/roots HTTP/1.1\r\nHost: canopy\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaa"
                };
                slow.push((s, talk));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let dribbler = std::thread::spawn(move || {
            let mut at = 0;
            while !flag.load(Ordering::Relaxed) {
                for (s, talk) in &mut slow {
                    // A closed connection (the server dropped it) is simply done.
                    let _ = s.write(&talk[at % talk.len()..][..1]);
                }
                at += 1;
                for _ in 0..10 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Crowd {
            idle,
            stop,
            dribbler: Some(dribbler),
        }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.dribbler.take() {
            let _ = d.join();
        }
        self.idle.clear();
    }
}

/// Lets this test process hold the crowd's ~2,400 sockets.
fn raise_own_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= 8192,
            "the tests need an open-file hard limit of 8192 or more (ulimit -Hn is {})",
            lim.rlim_max
        );
        lim.rlim_cur = lim.rlim_cur.max(8192);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// A store with root `load` holding one 64 KiB file.
fn store(name: &str) -> (Canopy, Vec<u8>) {
    let env = Canopy::init(name);
    let deb = env.path("load.deb");
    fs::write(&deb, corpus::good_deb("load")).unwrap();
    env.cmd(["import", "deb"]).arg(&deb).success();
    env.cmd(["assemble", "load", "load"]).success();
    (env, corpus::noise(64 * 1024))
}

#[test]
fn idle_and_slow_crowds_do_not_keep_a_normal_client_waiting() {
    raise_own_limit();
    let (env, content) = store("load-crowd");
    let mut serve = Serve::start(&env, None);
    serve.answers_promptly("before the crowd", &content);
    let crowd = Crowd::gather(&serve);
    serve.answers_promptly("among 600 idle and 600 slow clients", &content);
    drop(crowd);
    serve.answers_promptly("after the crowd left", &content);
}

#[test]
fn at_a_low_open_file_limit_the_server_degrades_and_recovers() {
    raise_own_limit();
    let (env, content) = store("load-nofile");
    let mut serve = Serve::start(&env, Some(64));
    serve.answers_promptly("with 64 descriptors", &content);
    let crowd = Crowd::gather(&serve);
    serve.answers_promptly("with 64 descriptors among the crowd", &content);
    drop(crowd);
    serve.answers_promptly("with 64 descriptors after the crowd left", &content);
    let log = fs::read_to_string(&serve.log).unwrap();
    assert!(
        log.contains("closing the one idle longest"),
        "the server never said it closed idle connections at its cap:\n{log}"
    );
}
