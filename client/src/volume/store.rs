//! The plugin as its mount server's descriptor store: the role a service manager plays
//! for `canopy mount` ([`crate::service`]). The plugin starts the mount server with
//! `NOTIFY_SOCKET` naming a datagram socket it holds; the server stores its FUSE
//! connection and its table of I/O modes there (`FDSTORE=1`), as under systemd. When
//! the server dies other than by exiting cleanly (`kill -9`, a crash), the plugin starts
//! it again at once with the descriptors (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`),
//! and it resumes the live connection: programs reading from a volume only wait.
//!
//! Only the latest server the plugin started is heard (checked by the sender's
//! credentials). Its descriptors are dropped when it asks (`FDSTOREREMOVE=1`, when it
//! unmounts), when it exits cleanly, and when the plugin starts another server (which
//! stores its own).

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt,
};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Most descriptors kept (a server stores two).
const MAX_FDS: usize = 16;

/// What the store holds.
#[derive(Default)]
struct Held {
    /// The server heard (the latest started), 0 for none.
    main: u32,
    /// Its descriptors by name.
    fds: BTreeMap<String, OwnedFd>,
    /// Whether it said `READY=1`.
    ready: bool,
}

/// The descriptor store of a plugin's mount servers.
pub(crate) struct FdStore {
    /// The abstract name, as `NOTIFY_SOCKET` gives it (`@NAME`).
    name: String,
    held: Mutex<Held>,
    changed: Condvar,
}

impl FdStore {
    /// Binds the store's socket, named after `mount_dir`'s servers and this process,
    /// and receives on it in a thread of its own for the life of the plugin.
    pub(crate) fn bind(mount_dir: &Path) -> std::io::Result<Arc<FdStore>> {
        use std::os::linux::net::SocketAddrExt;
        let hash = canopy_protocol::inode::hash(&[
            b"volume-plugin-store",
            crate::mount::resolved(mount_dir)
                .as_os_str()
                .as_encoded_bytes(),
        ]);
        let name = format!("canopy-volumes-{hash:016x}-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let socket = UnixDatagram::bind_addr(&addr)?;
        setsockopt(&socket, sockopt::PassCred, &true)?;
        let store = Arc::new(FdStore {
            name: format!("@{name}"),
            held: Mutex::new(Held::default()),
            changed: Condvar::new(),
        });
        let receiving = store.clone();
        std::thread::Builder::new()
            .name("fd-store".into())
            .spawn(move || receiving.receive(socket))?;
        Ok(store)
    }

    /// The socket's name, for the server's `NOTIFY_SOCKET`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// From now on only process `pid` is heard; what an earlier server stored is
    /// dropped.
    pub(crate) fn expect(&self, pid: u32) {
        let mut held = self.held.lock().expect("store lock");
        *held = Held {
            main: pid,
            ..Held::default()
        };
    }

    /// Whether `pid` is the server heard.
    pub(crate) fn is_main(&self, pid: u32) -> bool {
        self.held.lock().expect("store lock").main == pid
    }

    /// Drops everything kept.
    pub(crate) fn clear(&self) {
        self.expect(0);
    }

    /// The descriptors kept, in name order, if a FUSE connection is among them.
    pub(crate) fn take(&self) -> Option<Vec<(String, OwnedFd)>> {
        let mut held = self.held.lock().expect("store lock");
        if !held.fds.contains_key(crate::service::CONNECTION) {
            return None;
        }
        Some(std::mem::take(&mut held.fds).into_iter().collect())
    }

    /// Waits at most `limit` for process `pid` to say `READY=1`; whether it did.
    pub(crate) fn wait_ready(&self, pid: u32, limit: Duration) -> bool {
        self.wait_until(pid, limit, |held| held.ready)
    }

    /// Waits at most `limit` until process `pid`'s FUSE connection and its table of I/O
    /// modes are kept; whether they are. A server answers (a `Hello`, or that it stored
    /// its connection) once it has sent them, which this store's thread may not have
    /// received yet: a server dying meanwhile would not be started again on them.
    pub(crate) fn wait_connection(&self, pid: u32, limit: Duration) -> bool {
        self.wait_until(pid, limit, |held| {
            held.fds.contains_key(crate::service::CONNECTION)
                && held.fds.contains_key(crate::service::MODES)
        })
    }

    /// Puts back `fds`, given to process `pid` to resume, if it is still the server
    /// heard and has not stored its own: it died, or did not say it serves, before it
    /// could, and the next one resumes from them.
    pub(crate) fn restore(&self, pid: u32, fds: Vec<(String, OwnedFd)>) {
        let mut held = self.held.lock().expect("store lock");
        if held.main != pid {
            return;
        }
        for (name, fd) in fds {
            held.fds.entry(name).or_insert(fd);
        }
        self.changed.notify_all();
    }

    /// Waits at most `limit` until `pid` is the server heard and `done` holds.
    fn wait_until(&self, pid: u32, limit: Duration, done: impl Fn(&Held) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut held = self.held.lock().expect("store lock");
        loop {
            if held.main == pid && done(&held) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            held = self.changed.wait_timeout(held, left).expect("store lock").0;
        }
    }

    fn receive(&self, socket: UnixDatagram) {
        let mut buf = vec![0u8; 4096];
        let mut space = nix::cmsg_space!(UnixCredentials, [RawFd; MAX_FDS]);
        loop {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let message = match recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!("the descriptor store {}: {e}", self.name);
                    return;
                }
            };
            let mut sender = None;
            let mut fds = Vec::new();
            if let Ok(cmsgs) = message.cmsgs() {
                for cmsg in cmsgs {
                    match cmsg {
                        ControlMessageOwned::ScmCredentials(c) => sender = Some(c.pid()),
                        // SAFETY: the kernel just installed these descriptors in this
                        // process for this message; nothing else owns them.
                        ControlMessageOwned::ScmRights(raw) => fds.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        ),
                        _ => {}
                    }
                }
            }
            let len = message.bytes;
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            self.heard(sender, &text, fds);
        }
    }

    /// Acts on one message `text` from process `sender` carrying `fds`.
    fn heard(&self, sender: Option<i32>, text: &str, mut fds: Vec<OwnedFd>) {
        let mut held = self.held.lock().expect("store lock");
        if held.main == 0 || sender != i32::try_from(held.main).ok() {
            return;
        }
        let assigned = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        if assigned("READY").as_deref() == Some("1") {
            held.ready = true;
            self.changed.notify_all();
        }
        let name = assigned("FDNAME").unwrap_or_else(|| "stored".into());
        if assigned("FDSTOREREMOVE").as_deref() == Some("1") {
            held.fds.remove(&name);
        }
        if assigned("FDSTORE").as_deref() == Some("1")
            && fds.len() == 1
            && (held.fds.len() < MAX_FDS || held.fds.contains_key(&name))
        {
            held.fds.insert(name, fds.remove(0));
            self.changed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{CONNECTION, MODES};

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn stored(store: &FdStore, pid: i32, name: &str, fd: OwnedFd) {
        store.heard(Some(pid), &format!("FDSTORE=1\nFDNAME={name}"), vec![fd]);
    }

    #[test]
    fn a_server_is_kept_once_its_connection_and_modes_are_and_spares_go_to_the_next() {
        let store = FdStore::bind(Path::new("/nonexistent/store-test")).unwrap();
        store.expect(42);
        stored(&store, 42, CONNECTION, null());
        assert!(!store.wait_connection(42, Duration::ZERO));
        // Only the server heard is.
        stored(&store, 7, MODES, null());
        assert!(!store.wait_connection(42, Duration::ZERO));
        stored(&store, 42, MODES, null());
        assert!(store.wait_connection(42, Duration::ZERO));
        // Given to the next server, which dies before it stores them again: put back.
        let fds = store.take().unwrap();
        assert_eq!(fds.len(), 2);
        store.expect(43);
        assert!(store.take().is_none());
        store.restore(
            44,
            fds.iter()
                .map(|(n, f)| (n.clone(), f.try_clone().unwrap()))
                .collect(),
        );
        assert!(store.take().is_none());
        store.restore(43, fds);
        let fds = store.take().unwrap();
        // What a server stored itself stays.
        store.expect(45);
        let own = null();
        let raw = own.as_raw_fd();
        stored(&store, 45, CONNECTION, own);
        store.restore(45, fds);
        let kept = store.take().unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].0, CONNECTION);
        assert_eq!(kept[0].1.as_raw_fd(), raw);
    }
}
