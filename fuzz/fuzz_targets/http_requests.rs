//! Any bytes sent to `canopy serve`'s HTTP/1.1 server as a client's request stream:
//! request heads, pipelined requests, Range and conditional headers, paths and ids. The
//! server answers or closes; it never panics (a panic in a connection's task aborts the
//! process under the fuzzer) and never hangs (each input's connection is closed for
//! writing, and the answer must end within the fuzzer's timeout).
#![no_main]

use canopy_server::Store;
use canopy_server::http::{Options, serve};
use canopy_server::import::{Limits, tar};
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

/// One server for every run, on a store holding one object (`hello fuzz\n`, id
/// ee6a154a…, which the seed requests ask for), serving on a thread of its own.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        // Kept for the life of the process: the store lives in it.
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let store = Store::memory(&dir.path().join("state")).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("hello"), b"hello fuzz\n").unwrap();
        let archive = dir.path().join("hello.tar");
        let made = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg("hello")
            .status()
            .unwrap();
        assert!(made.success(), "tar failed");
        tar::import(&store, &archive, "fuzz", "1", Limits::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            runtime
                .block_on(serve(
                    store,
                    listener,
                    Options::default(),
                    std::future::pending(),
                ))
                .unwrap();
        });
        addr
    })
}

fuzz_target!(|bytes: &[u8]| {
    let mut conn = TcpStream::connect(server()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before reading everything: a failed write is
    // fine, only the server's behaviour matters.
    let _ = conn.write_all(bytes);
    let _ = conn.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
});
