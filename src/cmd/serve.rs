//! `canopy serve`: HTTP (for `canopy mount`) and NFSv3 (for kernels) from one process.

use super::{open, terminated};
use anyhow::{Context, Result};
use canopy_server::nfs::NfsServer;
use canopy_server::{Access, http};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

/// Where HTTP listens when neither `--listen` nor `--nfs` is given.
const DEFAULT_HTTP: &str = "127.0.0.1:7750";

pub fn run(
    store_path: &Path,
    listen: Option<SocketAddr>,
    nfs: Option<SocketAddr>,
) -> Result<ExitCode> {
    let listen = match (listen, nfs) {
        (None, None) => Some(DEFAULT_HTTP.parse().expect("a valid address")),
        (listen, _) => listen,
    };
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
            let server = NfsServer::bind(open(store_path, Access::Unlocked)?, addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for NFS"))?;
            let addr = server.local_addr()?;
            println!("exporting {} over NFSv3 on {addr}", store_path.display());
            let stop = stopped();
            servers.spawn(async move {
                server.run(stop).await;
                anyhow::Ok(())
            });
        }
        if let Some(addr) = listen {
            let store = open(store_path, Access::Unlocked)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            let addr = listener.local_addr()?;
            println!("serving {} on http://{addr}", store_path.display());
            let stop = stopped();
            servers.spawn(async move {
                http::serve(store, listener, stop)
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
