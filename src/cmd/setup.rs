//! `canopy init` and `canopy key show`.

use super::open;
use crate::cli::InitArgs;
use anyhow::Result;
use canopy_server::store::init::Initialised;
use canopy_server::store::s3::config::S3Config;
use canopy_server::{Access, Backend, Store};
use std::path::Path;
use std::process::ExitCode;

pub fn init(path: &Path, args: InitArgs) -> Result<ExitCode> {
    let backend = match &args.backend {
        Some(url) => Backend::S3(S3Config::from_env(url.parse()?)),
        None => Backend::Local,
    };
    let (store, done) = Store::init_with(path, &backend, args.key.as_deref())?;
    let place = match &backend {
        Backend::Local => String::new(),
        Backend::S3(c) => format!(" (objects and refs in {})", c.describe()),
    };
    match done {
        Initialised::Created => println!("initialised store at {}{place}", path.display()),
        Initialised::Attached => {
            println!("attached {} to the existing store{place}", path.display())
        }
        Initialised::Existing => println!("store at {} already initialised", path.display()),
    }
    if done == Initialised::Attached && store.signing_key().is_err() {
        println!("no signing key given (--key): this machine can serve the store, not write to it");
    }
    println!("public key: {}", hex(&store)?);
    Ok(ExitCode::SUCCESS)
}

pub fn key_show(path: &Path) -> Result<ExitCode> {
    println!("{}", hex(&open(path, Access::Read)?)?);
    Ok(ExitCode::SUCCESS)
}

fn hex(store: &Store) -> Result<String> {
    Ok(store
        .verifying_key()?
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
