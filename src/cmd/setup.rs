//! `canopy init` and `canopy key show`.

use super::{open, print_json};
use crate::cli::InitArgs;
use anyhow::Result;
use canopy_server::store::init::Initialised;
use canopy_server::store::s3::config::S3Config;
use canopy_server::{Access, Backend, Store};
use std::path::Path;
use std::process::ExitCode;

pub fn init(path: &Path, args: InitArgs) -> Result<ExitCode> {
    if let Some(key) = &args.key {
        warn_if_shared(key);
    }
    let backend = match &args.backend {
        Some(url) => Backend::S3(S3Config::from_env(url.parse()?)),
        None => Backend::Local,
    };
    let (store, done) = Store::init_with(path, &backend, args.key.as_deref())
        .map_err(|e| super::permission_hint(path, e.into()))?;
    let can_write = store.signing_key().is_ok();
    // The bucket the store's config names: `init` again without --backend on a store
    // in a bucket reports that bucket, not "local".
    let bucket = std::fs::read_to_string(path.join("config"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("backend ").map(str::to_string))
        });
    if args.json.json {
        let backend = bucket.unwrap_or_else(|| "local".to_string());
        print_json(&serde_json::json!({
            "store": path.display().to_string(),
            "created": done != Initialised::Existing,
            "public_key": hex(&store)?,
            "backend": backend,
            "attached": done == Initialised::Attached,
            "can_write": can_write,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let place = match &backend {
        Backend::Local => String::new(),
        Backend::S3(c) => format!(" (objects and refs in {})", c.describe()),
    };
    match done {
        Initialised::Created => println!("initialised store at {}{place}", path.display()),
        Initialised::Attached => {
            println!("attached {} to the existing store{place}", path.display())
        }
        Initialised::Existing => match &bucket {
            Some(url) => println!(
                "store at {} already initialised (objects and refs in {url})",
                path.display()
            ),
            None => println!("store at {} already initialised", path.display()),
        },
    }
    if !can_write {
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

/// A secret key that others may read is either exposed or not the secret key at all:
/// the public key `canopy key show` prints (e.g. `server.pub`) has the same form, and
/// signing with it as a seed would give the store an unrelated key that hosts refuse.
fn warn_if_shared(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(key)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: --key {} is readable by other users: a signing key is secret (mode 0600, \
             as keys/ed25519.secret); if this is the public key `canopy key show` prints, give \
             the secret key file instead",
            key.display()
        );
    }
}
