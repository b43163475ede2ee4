//! A TCP proxy in front of a server on 127.0.0.1, for tests that alter or slow what
//! passes: each connection's two directions are copied by functions the test gives.

use std::net::{TcpListener, TcpStream};
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
