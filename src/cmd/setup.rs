//! `canopy init` and `canopy key show`.

use super::{open, print_json};
use anyhow::Result;
use canopy_server::{Access, Store};
use std::path::Path;
use std::process::ExitCode;

pub fn init(path: &Path, json: bool) -> Result<ExitCode> {
    let (store, created) = Store::init(path)?;
    if json {
        print_json(&serde_json::json!({
            "store": path.display().to_string(), "created": created, "public_key": hex(&store)?,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if created {
        println!("initialised store at {}", path.display());
    } else {
        println!("store at {} already initialised", path.display());
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
