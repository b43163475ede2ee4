//! Exporting roots over NFSv3, checked with real NFS clients: Debian's libnfs-utils
//! (`nfs-ls`, `nfs-cat`, `nfs-cp`; this machine's kernel has no NFS client) and the
//! `nfs3_client` crate, which can hold a handle across a server restart and shows
//! every attribute. Garbage is sent as raw bytes.

use crate::debs;
use crate::mount::{eventually, wait_for_line};
use crate::util::{Canopy, cmd, walk};
use nfs3_client::Nfs3Client;
use nfs3_client::nfs3_types::nfs3::{
    GETATTR3args, LOOKUP3args, Nfs3Result, READ3args, READDIR3args, READDIRPLUS3args,
    READLINK3args, cookieverf3, diropargs3, fattr3, filename3, ftype3, nfs_fh3, nfsstat3,
};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::TokioIo;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `canopy serve --nfs 127.0.0.1:PORT` (no HTTP), stopped when dropped.
struct NfsServer {
    child: Child,
    port: u16,
}

impl NfsServer {
    fn start(env: &Canopy, port: u16) -> NfsServer {
        let log = env.path(format!("nfs-{port}.log"));
        let mut child = Command::new(crate::util::BIN)
            .arg("--store")
            .arg(env.store())
            .args(["-v", "serve", "--no-portmap", "--nfs"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting canopy serve --nfs");
        let line = wait_for_line(&mut child, "over NFSv3 on 127.0.0.1:", &log);
        let port = line.rsplit(':').next().unwrap().parse().unwrap();
        NfsServer { child, port }
    }

    /// A libnfs URL of PATH (`/ROOT/...`) on this server, no portmapper needed.
    fn url(&self, path: &str) -> String {
        format!(
            "nfs://127.0.0.1{path}?version=3&nfsport={0}&mountport={0}",
            self.port
        )
    }

    /// `nfs-cat` of PATH.
    fn cat(&self, path: &str) -> Vec<u8> {
        let out = cmd("nfs-cat").arg(self.url(path)).output();
        assert!(
            out.status.success(),
            "nfs-cat {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn client(&self) -> Client {
        Client::connect(self.port)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One entry of a READDIRPLUS listing.
struct Listed {
    name: String,
    fileid: u64,
    cookie: u64,
    attr: fattr3,
    fh: nfs_fh3,
}

/// An NFSv3 client on one connection (and MOUNT on another when asked).
struct Client {
    rt: tokio::runtime::Runtime,
    nfs: Nfs3Client<TokioIo<tokio::net::TcpStream>>,
    port: u16,
}

fn fh(bytes: &[u8]) -> nfs_fh3 {
    nfs_fh3 {
        data: Opaque::owned(bytes.to_vec()),
    }
}

fn ok<T, E>(r: Nfs3Result<T, E>) -> Result<T, nfsstat3> {
    match r {
        Nfs3Result::Ok(v) => Ok(v),
        Nfs3Result::Err((status, _)) => Err(status),
    }
}

impl Client {
    fn connect(port: u16) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stream = rt
            .block_on(tokio::net::TcpStream::connect(("127.0.0.1", port)))
            .expect("connecting to the NFS port");
        Client {
            nfs: Nfs3Client::new(TokioIo::new(stream)),
            rt,
            port,
        }
    }

    /// MOUNT's MNT of an export path: its top directory's handle.
    fn mount(&self, path: &str) -> nfs_fh3 {
        let handle = self.rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .unwrap();
            let mut mount = nfs3_client::MountClient::new(TokioIo::new(stream));
            let path = nfs3_client::nfs3_types::mount::dirpath(Opaque::owned(path.into()));
            mount.mnt(path).await.expect("MNT").fhandle.0.to_vec()
        });
        fh(&handle)
    }

    fn lookup(&mut self, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3, nfsstat3> {
        let args = LOOKUP3args {
            what: diropargs3 {
                dir: dir.clone(),
                name: filename3(Opaque::owned(name.as_bytes().to_vec())),
            },
        };
        let res = self.rt.block_on(self.nfs.lookup(&args)).expect("LOOKUP");
        ok(res).map(|r| r.object)
    }

    /// The handle of `/EXPORT/a/b/c`, by MNT of the export and LOOKUP of each name.
    fn path(&mut self, export: &str, path: &str) -> nfs_fh3 {
        let mut at = self.mount(export);
        for name in path.split('/').filter(|n| !n.is_empty()) {
            at = self
                .lookup(&at, name)
                .unwrap_or_else(|e| panic!("LOOKUP {name} of {export}/{path}: {e:?}"));
        }
        at
    }

    fn getattr(&mut self, fh: &nfs_fh3) -> Result<fattr3, nfsstat3> {
        let args = GETATTR3args { object: fh.clone() };
        let res = self.rt.block_on(self.nfs.getattr(&args)).expect("GETATTR");
        ok(res).map(|r| r.obj_attributes)
    }

    /// A whole file, in reads of `chunk` bytes.
    fn read(&mut self, fh: &nfs_fh3, chunk: u32) -> Result<Vec<u8>, nfsstat3> {
        let mut out = Vec::new();
        loop {
            let args = READ3args {
                file: fh.clone(),
                offset: out.len() as u64,
                count: chunk,
            };
            let res = ok(self.rt.block_on(self.nfs.read(&args)).expect("READ"))?;
            assert_eq!(res.count as usize, res.data.len());
            out.extend_from_slice(&res.data);
            if res.eof {
                return Ok(out);
            }
            assert!(res.count > 0, "a READ short of the end returned nothing");
        }
    }

    fn readlink(&mut self, fh: &nfs_fh3) -> Vec<u8> {
        let args = READLINK3args {
            symlink: fh.clone(),
        };
        let res = self
            .rt
            .block_on(self.nfs.readlink(&args))
            .expect("READLINK");
        ok(res).expect("READLINK failed").data.0.to_vec()
    }

    /// A whole directory with READDIRPLUS pages of at most `dircount`/`maxcount`
    /// bytes, following cookies to the end; and how many replies that took.
    fn readdirplus(&mut self, dir: &nfs_fh3, dircount: u32, maxcount: u32) -> (Vec<Listed>, usize) {
        let (mut out, mut cookie, mut verf, mut replies) = (Vec::new(), 0, [0; 8], 0);
        loop {
            let args = READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf: cookieverf3(verf),
                dircount,
                maxcount,
            };
            let res = self
                .rt
                .block_on(self.nfs.readdirplus(&args))
                .expect("READDIRPLUS");
            let res = ok(res).expect("READDIRPLUS failed");
            replies += 1;
            verf = res.cookieverf.0;
            for e in res.reply.entries.0 {
                cookie = e.cookie;
                out.push(Listed {
                    name: String::from_utf8(e.name.0.to_vec()).unwrap(),
                    fileid: e.fileid,
                    cookie: e.cookie,
                    attr: e.name_attributes.unwrap(),
                    fh: e.name_handle.unwrap(),
                });
            }
            if res.reply.eof {
                return (out, replies);
            }
            assert!(replies < 100_000, "READDIRPLUS never reaches the end");
        }
    }

    /// Names and cookies of a whole directory with plain READDIR pages of at most
    /// `count` bytes; and how many replies that took.
    fn readdir(&mut self, dir: &nfs_fh3, count: u32) -> (Vec<(String, u64, u64)>, usize) {
        let (mut out, mut cookie, mut verf, mut replies) = (Vec::new(), 0, [0; 8], 0);
        loop {
            let args = READDIR3args {
                dir: dir.clone(),
                cookie,
                cookieverf: cookieverf3(verf),
                count,
            };
            let res = self.rt.block_on(self.nfs.readdir(&args)).expect("READDIR");
            let res = ok(res).expect("READDIR failed");
            replies += 1;
            verf = res.cookieverf.0;
            for e in res.reply.entries.0 {
                cookie = e.cookie;
                out.push((
                    String::from_utf8(e.name.0.to_vec()).unwrap(),
                    e.fileid,
                    e.cookie,
                ));
            }
            if res.reply.eof {
                return (out, replies);
            }
            assert!(replies < 100_000, "READDIR never reaches the end");
        }
    }

    /// Every entry under a directory, by path, walked with READDIRPLUS.
    fn walk(&mut self, dir: &nfs_fh3, prefix: &str, out: &mut BTreeMap<String, Listed>) {
        let (entries, _) = self.readdirplus(dir, 8192, 65536);
        for e in entries {
            if e.name == "." || e.name == ".." {
                continue;
            }
            let path = format!("{prefix}{}", e.name);
            if matches!(e.attr.type_, ftype3::NF3DIR) {
                let sub = e.fh.clone();
                self.walk(&sub, &format!("{path}/"), out);
            }
            out.insert(path, e);
        }
    }
}

/// A store with root `web` assembled from the real test packages.
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

/// What makes two files the same file (content, kind, mode, owner, xattrs), read from
/// a checked-out copy, to compare with the fileids the export gives.
fn identity_on_disk(path: &Path) -> String {
    let m = fs::symlink_metadata(path).unwrap();
    let t = m.file_type();
    let what = if t.is_file() {
        hex::encode(Sha256::digest(fs::read(path).unwrap()))
    } else if t.is_symlink() {
        format!("-> {}", fs::read_link(path).unwrap().display())
    } else {
        format!("{:?} {}", t, m.rdev())
    };
    format!(
        "{what} {:o} {}:{} {:?}",
        m.mode(),
        m.uid(),
        m.gid(),
        crate::util::xattrs(path)
    )
}

fn nfs_type(t: fs::FileType) -> ftype3 {
    if t.is_dir() {
        ftype3::NF3DIR
    } else if t.is_symlink() {
        ftype3::NF3LNK
    } else if t.is_char_device() {
        ftype3::NF3CHR
    } else if t.is_block_device() {
        ftype3::NF3BLK
    } else if t.is_fifo() {
        ftype3::NF3FIFO
    } else if t.is_socket() {
        ftype3::NF3SOCK
    } else {
        ftype3::NF3REG
    }
}

/// `nfs-ls`'s mode column as permission bits (it shows no setuid/setgid/sticky).
fn parse_mode(s: &str) -> u32 {
    s.chars()
        .skip(1)
        .take(9)
        .fold(0, |mode, c| (mode << 1) | u32::from(c != '-'))
}

#[test]
fn nfs_export_matches_checkout() {
    let env = web("nfs-walk");
    let out = env.path("out");
    env.cmd(["checkout", "web"]).arg(&out).success();
    let server = NfsServer::start(&env, 0);
    let paths = walk(&out);
    assert!(paths.len() > 1000, "{} entries", paths.len());

    // Content of every regular file, byte for byte, through libnfs.
    let mut files = 0;
    for rel in &paths {
        let p = out.join(rel);
        if fs::symlink_metadata(&p).unwrap().is_file() {
            let rel = rel.to_str().unwrap();
            assert_eq!(
                server.cat(&format!("/web/{rel}")),
                fs::read(&p).unwrap(),
                "{rel}"
            );
            files += 1;
        }
    }
    assert!(files > 500, "only {files} files compared");

    // Every attribute of every entry, walked with READDIRPLUS.
    let mut client = server.client();
    let top = client.mount("/web");
    let mut listed = BTreeMap::new();
    client.walk(&top, "", &mut listed);
    let want: Vec<String> = paths
        .iter()
        .map(|p| p.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed.keys().cloned().collect::<Vec<_>>(),
        want,
        "the export lists exactly the checkout's paths"
    );
    let mut by_identity: BTreeMap<String, u64> = BTreeMap::new();
    let mut setuid = 0;
    for (rel, e) in &listed {
        let p = out.join(rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let a = &e.attr;
        assert_eq!(a.type_, nfs_type(m.file_type()), "{rel}: type");
        assert_eq!(a.mode, m.mode() & 0o7777, "{rel}: mode");
        assert_eq!((a.uid, a.gid), (m.uid(), m.gid()), "{rel}: owner");
        assert_eq!(a.fileid, e.fileid, "{rel}: fileid in entry and attributes");
        assert_eq!(
            a.mtime.seconds, 0,
            "{rel}: times are the epoch (directories: plus nanoseconds from content)"
        );
        if m.mode() & 0o6000 != 0 {
            setuid += 1;
        }
        if m.is_dir() {
            assert_eq!(
                a.nlink,
                m.nlink() as u32,
                "{rel}: nlink = 2 + subdirectories"
            );
            continue;
        }
        assert_eq!(
            a.nlink,
            canopy_protocol::inode::LEAF_NLINK,
            "{rel}: nlink (a leaf may stand at several paths)"
        );
        assert_eq!(a.size, m.size(), "{rel}: size");
        assert_eq!(a.mtime.nseconds, 0, "{rel}: time");
        if m.file_type().is_symlink() {
            assert_eq!(
                client.readlink(&e.fh),
                fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes(),
                "{rel}: target"
            );
        }
        // One fileid per identity, as FUSE gives one inode: the same fileid for the
        // same file wherever it is, different fileids for anything that differs.
        let fileid = *by_identity.entry(identity_on_disk(&p)).or_insert(e.fileid);
        assert_eq!(fileid, e.fileid, "{rel}: identical files share a fileid");
    }
    let leaves = listed
        .values()
        .filter(|e| !matches!(e.attr.type_, ftype3::NF3DIR));
    let mut fileids: Vec<u64> = leaves.map(|e| e.fileid).collect();
    fileids.sort();
    fileids.dedup();
    assert_eq!(
        fileids.len(),
        by_identity.len(),
        "different files, different fileids"
    );
    assert!(
        by_identity.len() < listed.len(),
        "some files of the root are identical (and share a fileid)"
    );
    assert!(
        setuid > 0,
        "the root has setuid or setgid files (su, passwd...)"
    );

    // libnfs's own listing (READDIRPLUS through its client) agrees on type, permission
    // bits, owner and size.
    let listing = cmd("nfs-ls").arg("-R").arg(server.url("/web")).stdout();
    let mut seen = 0;
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 6, "{line}");
        let name = f[5..].join(" ");
        let name = name.split(" -> ").next().unwrap();
        let e = &listed[name];
        assert_eq!(parse_mode(f[0]), e.attr.mode & 0o777, "{line}");
        assert_eq!(
            f[2..5],
            [
                e.attr.uid.to_string(),
                e.attr.gid.to_string(),
                e.attr.size.to_string()
            ],
            "{line}"
        );
        seen += 1;
    }
    assert_eq!(seen, listed.len(), "nfs-ls -R lists every entry once");

    // A pinned export (by commit prefix) shows the same, and writes are refused.
    let commit = env.current("web");
    assert_eq!(
        server.cat(&format!("/web@{}/etc/debian_version", &commit[..12])),
        fs::read(out.join("etc/debian_version")).unwrap()
    );
    let copy = cmd("nfs-cp")
        .arg(out.join("etc/debian_version"))
        .arg(server.url("/web/etc/new"))
        .output();
    assert!(!copy.status.success(), "nfs-cp into the export succeeded");
    let err = String::from_utf8_lossy(&copy.stderr);
    assert!(err.contains("ROFS"), "{err}");
}

#[test]
fn nfs_handles_survive_restart_and_upgrade() {
    let env = web("nfs-handles");
    let port = free_port();
    let mut server = NfsServer::start(&env, port);
    let mut client = server.client();
    let etc = client.path("/web", "etc");
    let bash = client.path("/web", "bin/bash");
    let issue = client.path("/web", "etc/issue");
    let bash_bytes = client.read(&bash, 1 << 20).unwrap();
    assert_eq!(bash_bytes, server.cat("/web/bin/bash"));
    let old_issue = client.read(&issue, 4096).unwrap();
    let etc_before = client.getattr(&etc).unwrap();
    let usr_bin = client.path("/web", "usr/bin");
    let usr_bin_before = client.getattr(&usr_bin).unwrap();
    drop(client);

    // Restart on the same port: the old handles still work, with no lookup first.
    server.stop();
    let mut server = NfsServer::start(&env, port);
    let mut client = server.client();
    assert_eq!(
        client.read(&bash, 65536).unwrap(),
        bash_bytes,
        "file handle after restart"
    );
    assert_eq!(
        client.getattr(&etc).unwrap().fileid,
        etc_before.fileid,
        "directory handle"
    );
    assert_eq!(
        client.lookup(&etc, "issue").unwrap(),
        issue,
        "same handle from a lookup"
    );
    assert_eq!(
        server.cat("/web/bin/bash"),
        bash_bytes,
        "libnfs after the restart"
    );
    drop(client);

    // Upgrade the root while exported: a package that replaces etc/issue.
    let pkg = env.mkdir("pkg");
    fs::create_dir_all(pkg.join("etc")).unwrap();
    fs::write(pkg.join("etc/issue"), b"upgraded\n").unwrap();
    let tarball = env.path("extra.tar");
    cmd("tar")
        .arg("-cf")
        .arg(&tarball)
        .args(["--owner=0", "--group=0", "-C"])
        .arg(&pkg)
        .arg("etc/issue")
        .success();
    env.cmd(["import", "tar"])
        .arg(&tarball)
        .args(["--name", "extra"])
        .success();
    let old_commit = env.current("web");
    env.cmd(["assemble", "web", "--allow-overwrite"])
        .args(debs::ROOT_PACKAGES)
        .arg("extra")
        .success();
    let mut client = server.client();
    // The server rereads refs at most a second old.
    let new_issue = eventually(
        Duration::from_secs(10),
        || "the new version is not served".into(),
        || client.lookup(&etc, "issue").ok().filter(|h| *h != issue),
    );
    assert_eq!(
        client.read(&new_issue, 4096).unwrap(),
        b"upgraded\n",
        "changed file: new content"
    );
    assert_eq!(client.lookup(&etc, "issue").unwrap(), new_issue);
    let bin = client.path("/web", "bin");
    assert_eq!(
        client.lookup(&bin, "bash").unwrap(),
        bash,
        "unchanged file: same handle"
    );
    assert_eq!(client.read(&bash, 65536).unwrap(), bash_bytes);
    let etc_after = client.getattr(&etc).unwrap();
    assert_eq!(
        etc_after.fileid, etc_before.fileid,
        "a directory keeps its fileid"
    );
    assert_ne!(
        etc_after.mtime.nseconds, etc_before.mtime.nseconds,
        "a changed directory looks modified to clients caching its listing"
    );
    let usr_bin = client.path("/web", "usr/bin");
    assert_eq!(
        client.getattr(&usr_bin).unwrap().mtime,
        usr_bin_before.mtime,
        "an unchanged directory keeps its time"
    );
    // The old version is still there, pinned, with the old content.
    assert_eq!(
        server.cat(&format!("/web@{old_commit}/etc/issue")),
        old_issue
    );
    // After a restart, the replaced file's handle is stale (not an error, no crash);
    // the unchanged file's still reads.
    drop(client);
    server.stop();
    let mut server = NfsServer::start(&env, port);
    let mut client = server.client();
    assert_eq!(client.read(&issue, 4096), Err(nfsstat3::NFS3ERR_STALE));
    assert_eq!(client.read(&bash, 65536).unwrap(), bash_bytes);
    assert!(server.alive());
}

/// One ONC RPC call (AUTH_NONE) on a fresh connection; the whole reply record.
fn raw_call(port: u16, prog: u32, vers: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut msg: Vec<u8> = [0x1234_5678u32, 0, 2, prog, vers, proc_, 0, 0, 0, 0]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    msg.extend_from_slice(args);
    let mut rec = (0x8000_0000u32 | msg.len() as u32).to_be_bytes().to_vec();
    rec.extend_from_slice(&msg);
    s.write_all(&rec).unwrap();
    let mut marker = [0u8; 4];
    s.read_exact(&mut marker).unwrap();
    let mut reply = vec![0u8; (u32::from_be_bytes(marker) & 0x7fff_ffff) as usize];
    s.read_exact(&mut reply).unwrap();
    reply
}

/// The reply words after xid and REPLY: MSG_ACCEPTED, the verifier (flavor, length),
/// the accept status, then what the status carries.
fn words(reply: &[u8]) -> Vec<u32> {
    reply[8..]
        .chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn nfs_survives_garbage() {
    let env = web("nfs-garbage");
    let mut server = NfsServer::start(&env, 0);
    let port = server.port;
    // Sends bytes on a fresh connection; reads whatever comes back until the server
    // closes or stays silent.
    let send = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        sink
    };
    // Random bytes, bare and framed as a record.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let random: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for chunk in random.chunks(4096) {
        send(chunk);
        let mut rec = (0x8000_0000u32 | 4000).to_be_bytes().to_vec();
        rec.extend_from_slice(&chunk[..4000]);
        send(&rec);
    }
    // Truncated records: the marker promises more than is sent.
    let mut short = (0x8000_0000u32 | 100).to_be_bytes().to_vec();
    short.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    assert!(send(&short).is_empty(), "an answer to half a record");
    // Huge record lengths, last fragment or not, and many fragments that add up.
    for marker in [0xffff_ffffu32, 0x7fff_ffff, 0x8010_0001] {
        assert!(send(&marker.to_be_bytes()).is_empty());
    }
    let mut many = Vec::new();
    for _ in 0..40 {
        many.extend_from_slice(&4096u32.to_be_bytes());
        many.extend_from_slice(&[0; 4096]);
    }
    assert!(send(&many).is_empty(), "160 KiB of fragments accepted");
    assert!(server.alive(), "server died");

    // Valid headers with garbage: arguments that claim 4 GiB, that stop short, that
    // run long; unknown programs, versions and procedures; bad credentials.
    const NFS: u32 = 100003;
    const GARBAGE_ARGS: [u32; 4] = [0, 0, 0, 4];
    assert_eq!(
        words(&raw_call(port, NFS, 3, 1, &[0xff, 0xff, 0xff, 0xf0]))[..4],
        GARBAGE_ARGS
    );
    assert_eq!(
        words(&raw_call(port, NFS, 3, 6, &[0, 0, 0, 8, 1, 2]))[..4],
        GARBAGE_ARGS
    );
    assert_eq!(
        words(&raw_call(port, NFS, 3, 0, &[0; 8]))[..4],
        GARBAGE_ARGS,
        "NULL with arguments"
    );
    assert_eq!(
        words(&raw_call(port, 100005, 3, 1, &[0, 0, 8, 0]))[..4],
        GARBAGE_ARGS,
        "MNT path over 1024 bytes"
    );
    assert_eq!(
        words(&raw_call(port, 100021, 4, 0, &[]))[..],
        [0, 0, 0, 1],
        "NLM: PROG_UNAVAIL"
    );
    assert_eq!(
        words(&raw_call(port, NFS, 4, 0, &[]))[..],
        [0, 0, 0, 2, 3, 3],
        "NFSv4: PROG_MISMATCH 3..3"
    );
    assert_eq!(
        words(&raw_call(port, NFS, 3, 22, &[]))[..],
        [0, 0, 0, 3],
        "PROC_UNAVAIL"
    );
    // Handles this server never made, or cut, or of a commit it does not have.
    let fh_args = |fh: &[u8]| {
        let mut a = (fh.len() as u32).to_be_bytes().to_vec();
        a.extend_from_slice(fh);
        a.resize(4 + fh.len().div_ceil(4) * 4, 0);
        a
    };
    let mut client = server.client();
    let good = client.path("/web", "etc/issue").data.0.to_vec();
    // Well formed, but naming a fileid nothing has, in a commit the store lacks.
    let mut unknown_commit = good[..3].to_vec();
    unknown_commit.extend_from_slice(&[7; 8 + 32]);
    for (fh, status) in [
        (&b"x"[..], 10001),
        (&[0u8; 64][..], 10001),
        (&good[..good.len() - 1], 10001),
        (&unknown_commit[..], 70),
    ] {
        let w = words(&raw_call(port, NFS, 3, 1, &fh_args(fh)));
        assert_eq!(w[..], [0, 0, 0, 0, status], "GETATTR of a made-up handle");
    }
    // A write of any kind: read-only.
    assert_eq!(
        words(&raw_call(port, NFS, 3, 7, &fh_args(&good)))[..],
        [0, 0, 0, 0, 30, 0, 0],
        "WRITE: ROFS, no attributes"
    );

    // After all that, the server still answers, right.
    assert!(server.alive(), "server died");
    assert_eq!(
        words(&raw_call(port, NFS, 3, 0, &[]))[..],
        [0, 0, 0, 0],
        "NULL"
    );
    let out = env.path("out");
    env.cmd(["checkout", "web"]).arg(&out).success();
    assert_eq!(
        server.cat("/web/etc/issue"),
        fs::read(out.join("etc/issue")).unwrap()
    );
    assert_eq!(
        client.read(&fh(&good), 4096).unwrap(),
        fs::read(out.join("etc/issue")).unwrap()
    );
}

#[test]
fn nfs_pages_large_directories_and_special_files() {
    let env = Canopy::init("nfs-big");
    let tree = env.mkdir("t");
    fs::write(tree.join("hello"), b"hello\n").unwrap();
    std::os::unix::fs::symlink("/some/where", tree.join("link")).unwrap();
    cmd("mknod")
        .arg(tree.join("null"))
        .args(["c", "1", "3"])
        .success();
    cmd("mknod")
        .arg(tree.join("loop0"))
        .args(["b", "7", "0"])
        .success();
    // A big directory of identical files: one fileid for all, so cookies must be
    // positions, not fileids.
    fs::create_dir(tree.join("big")).unwrap();
    for i in 0..3000 {
        fs::write(
            tree.join(format!("big/entry-with-a-long-name-{i:05}")),
            b"same",
        )
        .unwrap();
    }
    env.cmd(["import", "dir"])
        .arg(&tree)
        .args(["--name", "t"])
        .success();
    env.cmd(["assemble", "web", "t"]).success();
    let server = NfsServer::start(&env, 0);
    let want: Vec<String> = (0..3000)
        .map(|i| format!("entry-with-a-long-name-{i:05}"))
        .collect();

    // libnfs lists them all (over READDIRPLUS pages of its choosing).
    let listing = cmd("nfs-ls").arg(server.url("/web/big")).stdout();
    let mut names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, want, "nfs-ls lists every entry once");

    // READDIR and READDIRPLUS in small pages: every entry once, in order, after . and
    // .., with cookies that are unique although every fileid is the same.
    let mut client = server.client();
    let big = client.path("/web", "big");
    let (listed, replies) = client.readdir(&big, 4096);
    assert!(replies > 10, "{replies} READDIR replies");
    let names: Vec<&str> = listed.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names[..2], [".", ".."]);
    assert_eq!(names[2..], want);
    let mut cookies: Vec<u64> = listed.iter().map(|(_, _, c)| *c).collect();
    cookies.dedup();
    assert_eq!(cookies.len(), listed.len(), "cookies are unique");
    let fileids: std::collections::BTreeSet<u64> = listed[2..].iter().map(|(_, f, _)| *f).collect();
    assert_eq!(fileids.len(), 1, "identical files share one fileid");
    let (plus, replies) = client.readdirplus(&big, 1024, 8192);
    assert!(replies > 10, "{replies} READDIRPLUS replies");
    let plus_names: Vec<&str> = plus.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(plus_names, names);
    assert!(
        plus[2..]
            .iter()
            .all(|e| e.attr.size == 4 && e.fh == plus[2].fh)
    );
    assert_eq!(plus.iter().map(|e| e.cookie).collect::<Vec<_>>(), cookies);

    // Symlinks and devices as stored.
    let top = client.mount("/web");
    let link = client.lookup(&top, "link").unwrap();
    assert_eq!(client.readlink(&link), b"/some/where");
    assert_eq!(client.getattr(&link).unwrap().size, 11);
    for (name, kind, major, minor) in [
        ("null", ftype3::NF3CHR, 1, 3),
        ("loop0", ftype3::NF3BLK, 7, 0),
    ] {
        let node = client.lookup(&top, name).unwrap();
        let a = client.getattr(&node).unwrap();
        assert_eq!(a.type_, kind, "{name}");
        assert_eq!(
            (a.rdev.specdata1, a.rdev.specdata2),
            (major, minor),
            "{name}"
        );
    }
    assert_eq!(server.cat("/web/hello"), b"hello\n");
}

#[test]
fn nfs_and_http_from_one_process() {
    // (`--nfs` alone, as every other test here runs it, prints only the NFS line.)
    let env = web("nfs-cli");
    let port = free_port();
    let (mut child, http, said) = serve_both(&env, &format!("127.0.0.1:{port}"));
    assert_eq!(said, port, "over NFSv3 on the address given");
    // Both answer: the HTTP root list names the root the NFS export shows.
    let mut s = TcpStream::connect(&http).unwrap();
    s.write_all(b"GET /v1/roots HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"name\":\"web\""), "{answer}");
    let mut client = Client::connect(port);
    let etc = client.path("/web", "etc");
    assert!(client.getattr(&etc).is_ok());
    // SIGTERM stops the process, though a client still holds a connection open.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = eventually(
        Duration::from_secs(10),
        || "canopy serve did not exit on SIGTERM with a client connected".into(),
        || child.try_wait().unwrap(),
    );
    assert!(status.success(), "{status}");
    drop(client);
}

/// `GET PATH` over HTTP/1.0: the status code and the body.
fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head");
    let head = String::from_utf8_lossy(&answer[..end]);
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, answer[end + 4..].to_vec())
}

/// `canopy serve` of `env`'s store over HTTP (a free port of 127.0.0.1) and NFS (at
/// `nfs`): the process, the HTTP address (`HOST:PORT`) and the NFS port it says.
fn serve_both(env: &Canopy, nfs: &str) -> (std::process::Child, String, u16) {
    let mut child = Command::new(crate::util::BIN)
        .arg("--store")
        .arg(env.store())
        .args([
            "serve",
            "--no-portmap",
            "--listen",
            "127.0.0.1:0",
            "--nfs",
            nfs,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut both = String::new();
    for _ in 0..2 {
        std::io::BufRead::read_line(&mut lines, &mut both).unwrap();
    }
    let http = both
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no HTTP address in {both:?}"))
        .to_string();
    let port: u16 = both
        .lines()
        .find(|l| l.contains("over NFSv3 on 127.0.0.1:"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no NFS port in {both:?}"));
    (child, http, port)
}

/// An object file damaged on disk is never served: HTTP answers 500, or cuts a whole
/// answer short, rather than send the wrong bytes whole (which an HTTP cache would keep
/// for good), NFS reads fail, and once the file holds its bytes again both serve it,
/// though they served it before.
#[test]
fn damaged_objects_are_served_by_neither_http_nor_nfs() {
    let env = web("nfs-damaged");
    let (mut child, http, port) = serve_both(&env, "127.0.0.1:0");
    let mut client = Client::connect(port);
    // A large file (sent with sendfile) and a small one (kept in memory once read).
    for path in ["/bin/bash", "/etc/debian_version"] {
        let listed = env.json(["ls", "web", path]);
        let blob = listed[0]["blob"].as_str().unwrap().to_string();
        let file = env
            .store()
            .join("objects")
            .join(&blob[..2])
            .join(&blob[2..]);
        let good = fs::read(&file).unwrap();
        let fh = client.path("/web", path.trim_start_matches('/'));
        // Served once while intact: what was verified must be checked again.
        assert_eq!(http_get(&http, &format!("/v1/objects/{blob}")).1, good);
        assert_eq!(client.read(&fh, 1 << 20).unwrap(), good);
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x20;
        let mut perms = fs::metadata(&file).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        fs::set_permissions(&file, perms).unwrap();
        fs::write(&file, &bad).unwrap();
        // Never the damaged bytes whole: an error, an answer cut short of its length
        // (a large file is checked as it is sent, its end held back until the whole
        // is found right), or (a small object kept in memory since it was verified)
        // the object's own bytes.
        let (code, body) = http_get(&http, &format!("/v1/objects/{blob}"));
        let refused = code == 500 && String::from_utf8_lossy(&body).contains("corrupt");
        let cut_short = code == 200 && body.len() < good.len() && path == "/bin/bash";
        assert!(
            refused || cut_short || (code == 200 && body == good && path != "/bin/bash"),
            "{path}: {code} {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        assert_eq!(
            client.read(&fh, 1 << 20),
            Err(nfsstat3::NFS3ERR_IO),
            "{path}"
        );
        let out = env.cmd(["fsck"]).failure(1);
        assert!(
            String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).contains(&blob[2..]),
            "{path}: fsck does not name {blob}"
        );
        fs::write(&file, &good).unwrap();
        assert_eq!(
            http_get(&http, &format!("/v1/objects/{blob}")),
            (200, good.clone())
        );
        assert_eq!(client.read(&fh, 1 << 20).unwrap(), good);
    }
    let _ = child.kill();
    let _ = child.wait();
    env.fsck_clean();
}

/// A root's ref damaged on disk leaves that root out of what HTTP and NFS serve, not
/// every root: the others are listed, mounted and read as before.
#[test]
fn a_damaged_ref_hides_only_its_own_root() {
    let env = web("nfs-bad-ref");
    env.cmd(["assemble", "other"])
        .args(debs::ROOT_PACKAGES)
        .success();
    fs::write(env.store().join("refs/roots/web"), "garbage\n").unwrap();
    let (mut child, http, port) = serve_both(&env, "127.0.0.1:0");
    let (code, body) = http_get(&http, "/v1/roots");
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{listed}");
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other"]);
    let mut client = Client::connect(port);
    let bash = client.path("/other", "bin/bash");
    assert!(!client.read(&bash, 1 << 20).unwrap().is_empty());
    let _ = child.kill();
    let _ = child.wait();
    // `roots list` lists the other root too, and names the damaged ref.
    let out = env.cmd(["roots", "list"]).output();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stdout.starts_with("other "), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("web") && stderr.contains("fsck"),
        "{stderr}"
    );
}
