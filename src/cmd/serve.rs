//! `canopy serve`.

use super::{open, terminated};
use anyhow::{Context, Result};
use canopy_server::{Access, http};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

pub fn run(store_path: &Path, listen: SocketAddr) -> Result<ExitCode> {
    let store = open(store_path, Access::Unlocked)?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        println!("serving {} on http://{addr}", store_path.display());
        std::io::stdout().flush()?;
        http::serve(store, listener, terminated())
            .await
            .context("serving HTTP")
    })?;
    Ok(ExitCode::SUCCESS)
}
