//! `canopy serve`: HTTP (for `canopy mount`) and NFSv3 (for kernels) from one process.

use super::{open, terminated};
use crate::cli::ServeArgs;
use anyhow::{Context, Result};
use canopy_cache::Cache;
use canopy_server::nfs::{NfsServer, Portmap};
use canopy_server::{Access, Store, http};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Where HTTP listens when neither `--listen` nor `--nfs` is given.
const DEFAULT_HTTP: &str = "127.0.0.1:7750";

pub fn run(store_path: &Path, args: ServeArgs) -> Result<ExitCode> {
    super::raise_descriptor_limit();
    let ServeArgs {
        listen,
        nfs,
        no_portmap,
        wire_cache,
        cache_dir,
        cache_size,
    } = args;
    let cache = read_cache(store_path, cache_dir, cache_size)?;
    // HTTP and NFS open the store each, and share the read cache.
    let open_store = |access| -> Result<Store> {
        let store = open(store_path, access)?;
        Ok(match &cache {
            Some(cache) => store.read_through(cache.clone()),
            None => store,
        })
    };
    let listen = match (listen, nfs) {
        (None, None) => Some(DEFAULT_HTTP.parse().expect("a valid address")),
        (listen, _) => listen,
    };
    // Each listener gets its share of the open-file limit for connections.
    let listeners = usize::from(listen.is_some()) + usize::from(nfs.is_some());
    let connections = canopy_server::admission::connection_cap(listeners);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        // One signal stops both servers.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            terminated().await;
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|&stop| stop).await;
            }
        };
        let mut servers = tokio::task::JoinSet::new();
        if let Some(addr) = nfs {
            let mut server = NfsServer::bind(open_store(Access::Unlocked)?, addr)
                .await
                .map_err(|e| listen_error(e.into(), addr, "--nfs"))
                .with_context(|| format!("cannot listen on {addr} for NFS"))?;
            server.connection_cap(connections);
            let addr = server.local_addr()?;
            println!("exporting {} over NFSv3 on {addr}", store_path.display());
            if !no_portmap {
                portmap(&mut server, addr).await?;
            }
            let stop = stopped();
            servers.spawn(async move {
                server.run(stop).await;
                anyhow::Ok(())
            });
        }
        if let Some(addr) = listen {
            let store = open_store(Access::Unlocked)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| listen_error(e.into(), addr, "--listen"))
                .with_context(|| format!("cannot listen on {addr}"))?;
            let addr = listener.local_addr()?;
            println!("serving {} on http://{addr}", store_path.display());
            let stop = stopped();
            servers.spawn(async move {
                http::serve(
                    store,
                    listener,
                    http::Options {
                        connections,
                        wire_cache,
                    },
                    stop,
                )
                .await
                .context("serving HTTP")
            });
        }
        std::io::stdout().flush()?;
        // The first server to stop (on a signal, or on an error) stops the process.
        if let Some(done) = servers.join_next().await {
            done.context("a server task failed")??;
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The read cache of a store in a bucket (objects of a local store are files already).
fn read_cache(store_path: &Path, dir: Option<PathBuf>, size: u64) -> Result<Option<Arc<Cache>>> {
    if !open(store_path, Access::Unlocked)?.is_remote() {
        if let Some(dir) = dir {
            eprintln!(
                "note: --cache-dir {} is not used: the objects of {} are local files already",
                dir.display(),
                store_path.display()
            );
        }
        return Ok(None);
    }
    let dir = dir.unwrap_or_else(|| store_path.join("serve-cache"));
    let cache = Cache::open(&dir, size)
        .with_context(|| format!("opening the read cache {}", dir.display()))?;
    eprintln!(
        "reading objects through the cache {} (up to {size} bytes)",
        dir.display()
    );
    Ok(Some(Arc::new(cache)))
}

/// Answers the portmapper question for the NFS server on `addr`, and says how. Without
/// the privilege to use port 111, the export goes on without it, with a warning.
async fn portmap(server: &mut NfsServer, addr: SocketAddr) -> Result<()> {
    match server.portmap().await {
        Ok(Portmap::Served) => println!(
            "portmapper on {}:111 (TCP and UDP) answers for NFS and MOUNT",
            addr.ip()
        ),
        Ok(Portmap::Registered) => println!(
            "NFS and MOUNT registered with the portmapper already on {}:111",
            addr.ip()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => eprintln!(
            "warning: no portmapper: {e} (port 111 needs root or CAP_NET_BIND_SERVICE); \
             clients must be given port={0},mountport={0} (--no-portmap silences this)",
            addr.port()
        ),
        Err(e) => {
            return Err(e).context(
                "answering the portmapper question (pass --no-portmap to serve NFS without it)",
            );
        }
    }
    Ok(())
}

/// A bind that failed, with what to do for the two usual causes: the port is taken
/// (often by another `canopy serve`), or it is below 1024 and this is not root.
fn listen_error(e: anyhow::Error, addr: std::net::SocketAddr, flag: &str) -> anyhow::Error {
    let kind = e.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
    match kind {
        Some(std::io::ErrorKind::AddrInUse) => e.context(format!(
            "another process listens there (another canopy serve?): stop it, or give \
             {flag} another ADDR:PORT (port 0 picks a free one)"
        )),
        Some(std::io::ErrorKind::PermissionDenied) if addr.port() < 1024 => e.context(format!(
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: run as root, or give {flag} \
             a port from 1024 up"
        )),
        _ => e,
    }
}
