//! A TCP proxy in front of a server on 127.0.0.1, for tests that alter or slow what
//! passes: each connection's two directions are copied by functions the test gives.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Copies one direction of a connection: from the first stream to the second, until
/// either ends or the flag (the proxy's stop) is set.
pub(crate) type Direction = dyn Fn(TcpStream, TcpStream, &AtomicBool) + Send + Sync;

/// The proxy; it stops accepting (and the copies see their flag set) when dropped.
pub(crate) struct TcpProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    stop: Arc<AtomicBool>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` (`http://HOST:PORT` or `HOST:PORT`): requests are
    /// copied by `up` (client to server), answers by `down` (server to client).
    pub(crate) fn start(upstream: &str, up: Arc<Direction>, down: Arc<Direction>) -> TcpProxy {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let server = TcpStream::connect(&upstream).unwrap();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (up, down) = (up.clone(), down.clone());
                let (s_up, s_down) = (s.clone(), s.clone());
                std::thread::spawn(move || up(c2, s2, &s_up));
                std::thread::spawn(move || down(server, client, &s_down));
            }
        });
        TcpProxy { url, stop }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A proxy to `upstream` that replaces `from` with `to` (as long) wherever it passes
/// in an answer, and takes `accept-encoding` out of requests so answers pass as stored.
pub(crate) fn tamper(upstream: &str, from: Vec<u8>, to: Vec<u8>) -> TcpProxy {
    assert_eq!(from.len(), to.len());
    TcpProxy::start(
        upstream,
        Arc::new(|c, s, _: &AtomicBool| {
            relay(
                c,
                s,
                b"accept-encoding".to_vec(),
                b"x-no-encodings!".to_vec(),
            )
        }),
        Arc::new(move |s, c, _: &AtomicBool| relay(s, c, from.clone(), to.clone())),
    )
}

/// A proxy to `upstream` that alters 64 bytes of `victim` found in no other regular file
/// of `dirs` (a stored object's file cannot stand in for that: a server refuses to send
/// a damaged one), so that file alone arrives altered.
pub(crate) fn tamper_file(upstream: &str, victim: &Path, dirs: &[PathBuf]) -> TcpProxy {
    let bytes = fs::read(victim).unwrap();
    let others: Vec<Vec<u8>> = dirs
        .iter()
        .flat_map(|d| fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p != victim && fs::symlink_metadata(p).unwrap().is_file())
        .map(|p| fs::read(p).unwrap())
        .collect();
    let marker = (64..bytes.len().saturating_sub(128))
        .step_by(512)
        .map(|at| bytes[at..at + 64].to_vec())
        .find(|m| others.iter().all(|o| !o.windows(64).any(|w| w == &m[..])))
        .unwrap_or_else(|| panic!("no 64 bytes of {} are its own", victim.display()));
    let mut altered = marker.clone();
    altered[0] ^= 0x55;
    tamper(upstream, marker, altered)
}

/// Copies `src` to `dst`, replacing `old` with `new` (as long), even across reads: the
/// last `old.len() - 1` bytes are held back until more come, or none for 20 ms.
fn relay(mut src: TcpStream, mut dst: TcpStream, old: Vec<u8>, new: Vec<u8>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    src.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if dst.write_all(&pending).is_err() {
                    break;
                }
                pending.clear();
                continue;
            }
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut i = 0;
        while i + old.len() <= pending.len() {
            if pending[i..i + old.len()] == old[..] {
                pending[i..i + old.len()].copy_from_slice(&new);
                i += old.len();
            } else {
                i += 1;
            }
        }
        let keep = (old.len() - 1).min(pending.len());
        let send = pending.len() - keep;
        if dst.write_all(&pending[..send]).is_err() {
            break;
        }
        pending.drain(..send);
    }
    let _ = dst.write_all(&pending);
    let _ = dst.shutdown(Shutdown::Write);
}

/// A proxy to `upstream` that makes it a server from before the endpoints under
/// `prefix` (`/v1/packs/`): requests for them go on to the same path under `/v0/`,
/// which it does not have, and it answers 404 "no such endpoint".
pub(crate) fn without(upstream: &str, prefix: &str) -> TcpProxy {
    let rest = prefix.strip_prefix("/v1/").expect("a path under /v1/");
    let old = format!("GET {prefix}").into_bytes();
    let new = format!("GET /v0/{rest}").into_bytes();
    TcpProxy::start(
        upstream,
        Arc::new(move |c, s, _: &AtomicBool| rewrite(c, s, &old, &new, &ALWAYS)),
        Arc::new(|s, c, _: &AtomicBool| copy(s, c)),
    )
}

/// Set for good: for copies that always rewrite.
static ALWAYS: AtomicBool = AtomicBool::new(true);

/// Copies `src` to `dst` as it is.
pub(crate) fn copy(src: TcpStream, dst: TcpStream) {
    rewrite(src, dst, b"", b"", &ALWAYS);
}

/// Copies `src` to `dst`; while `on` is set, `old` becomes `new` (as long) within each
/// read: a request's head comes in one write, so its first line is never split.
pub(crate) fn rewrite(
    mut src: TcpStream,
    mut dst: TcpStream,
    old: &[u8],
    new: &[u8],
    on: &AtomicBool,
) {
    assert_eq!(old.len(), new.len());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &mut buf[..n];
        if !old.is_empty() && on.load(Ordering::Relaxed) {
            let mut i = 0;
            while i + old.len() <= data.len() {
                if data[i..i + old.len()] == *old {
                    data[i..i + old.len()].copy_from_slice(new);
                    i += old.len();
                } else {
                    i += 1;
                }
            }
        }
        if dst.write_all(data).is_err() {
            break;
        }
    }
    let _ = dst.shutdown(Shutdown::Write);
}
