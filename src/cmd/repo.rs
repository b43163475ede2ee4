//! `canopy repo add|list|remove|update`.

use super::{fetcher, open, print_json};
use crate::cli::RepoAddArgs;
use anyhow::{Context, Result, bail};
use canopy_server::Access;
use canopy_server::repo::{self, RepoConfig, RepoKind};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

pub fn add(store: &Path, args: RepoAddArgs) -> Result<ExitCode> {
    // The URL's scheme was checked as it was parsed (`parse_repo_url`).
    if args.keyring.is_none() && !args.no_verify_signature {
        bail!(
            "say how to check the repository's signature: --keyring FILE (for Debian: \
             /usr/share/keyrings/debian-archive-keyring.gpg), or --no-verify-signature to \
             trust the transport (the hashes Release lists are checked either way)"
        );
    }
    let mut url = args.url.to_string();
    if !url.ends_with('/') {
        url.push('/');
    }
    let keyring = match args.keyring {
        Some(path) => Some(
            std::path::absolute(&path).with_context(|| format!("finding {}", path.display()))?,
        ),
        None => None,
    };
    let kind = RepoKind::from_label(&args.kind)
        .with_context(|| format!("unknown repository kind {}", args.kind))?;
    let format = canopy_server::format::of_repo(kind);
    let arch = args
        .arch
        .unwrap_or_else(|| format.default_arch().to_string());
    let config = RepoConfig {
        kind,
        url,
        components: if args.suite.is_empty() {
            Vec::new()
        } else {
            args.components
        },
        suites: args.suite,
        arch,
        keyring,
        verify_package_signatures: args.verify_package_signatures,
    };
    if let Err(why) = format.check_repo(&config) {
        bail!("{why}");
    }
    let store = open(store, Access::Write)?;
    // Read it once now, so a wrong URL, suite or key is found at once, not at the
    // first assemble.
    let fetcher = fetcher()?;
    repo::add(&store, &args.name, &config)?;
    match repo::offered(&store, &args.name, &config, &fetcher) {
        Ok(count) if args.json.json => {
            print_json(&json!({"name": args.name, "packages": count, "arch": config.arch}))?;
            Ok(ExitCode::SUCCESS)
        }
        Ok(count) => {
            println!(
                "added repository {}: {count} packages for {}",
                args.name, config.arch
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            repo::remove(&store, &args.name)?;
            Err(anyhow::Error::new(e).context(format!("repository {} not added", args.name)))
        }
    }
}

pub fn list(store: &Path, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let repos = repo::list(&store)?;
    if json {
        let items: Vec<_> = repos
            .iter()
            .map(|(name, c)| {
                json!({
                    "name": name, "kind": c.kind.label(), "url": c.url, "suite": c.suites.first(),
                    "suites": c.suites, "components": c.components, "arch": c.arch,
                    "keyring": c.keyring, "verify_package_signatures": c.verify_package_signatures,
                })
            })
            .collect();
        print_json(&json!(items))?;
    } else {
        for (name, c) in &repos {
            let signed = match &c.keyring {
                Some(k) => format!("signed by {}", k.display()),
                None => "signature not checked".into(),
            };
            let place = canopy_server::format::of_repo(c.kind).describe_repo(c);
            println!("{name:<16} {} {place} {}  {signed}", c.url, c.arch);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn remove(store: &Path, name: &str) -> Result<ExitCode> {
    let store = open(store, Access::Write)?;
    repo::remove(&store, name)?;
    println!("removed repository {name}");
    Ok(ExitCode::SUCCESS)
}

pub fn update(store: &Path, names: &[String], json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Write)?;
    let names: Vec<String> = if names.is_empty() {
        repo::list(&store)?.into_iter().map(|(n, _)| n).collect()
    } else {
        names.to_vec()
    };
    if names.is_empty() {
        bail!("no repositories configured (add one with `canopy repo add`)");
    }
    let fetcher = fetcher()?;
    let mut items = Vec::new();
    for name in &names {
        let config = repo::get(&store, name)?;
        let count = repo::offered(&store, name, &config, &fetcher)
            .with_context(|| format!("updating repository {name}"))?;
        if json {
            items.push(json!({"name": name, "packages": count}));
        } else {
            println!("{name}: {count} packages");
        }
    }
    if json {
        print_json(&json!(items))?;
    }
    Ok(ExitCode::SUCCESS)
}
