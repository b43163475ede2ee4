//! `canopy import deb|rpm|tar|dir` and `canopy packages list`.

use super::{open, print_json, time};
use crate::cli::{Force, JsonFlag, MaxSize, Named};
use anyhow::{Context, Result, bail};
use canopy_protocol::PackageKind;
use canopy_server::format;
use canopy_server::import::{self, ImportError, Imported, Limits, Outcome, Prepared};
use canopy_server::packages::PackageIndex;
use canopy_server::repo::signature::Keyring;
use canopy_server::{Access, Store};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(super) fn limits(max_size: u64) -> Limits {
    Limits {
        max_unpacked: max_size,
        ..Limits::default()
    }
}

/// One line per archive: what was imported, or that it already was.
fn report(imported: &Imported) -> String {
    let p = &imported.package;
    let arch = if p.arch.is_empty() {
        p.kind.label().to_string()
    } else {
        p.arch.clone()
    };
    match imported.outcome {
        Outcome::AlreadyImported => format!(
            "skipped {} {} ({arch}): already imported",
            p.name, p.version
        ),
        Outcome::New { entries, stats } if stats.replaced > 0 => format!(
            "imported {} {} ({arch}): {entries} entries, {} new objects, {} new bytes, {} damaged objects replaced",
            p.name, p.version, stats.new_objects, stats.new_bytes, stats.replaced
        ),
        Outcome::New { entries, stats } => format!(
            "imported {} {} ({arch}): {entries} entries, {} new objects, {} new bytes",
            p.name, p.version, stats.new_objects, stats.new_bytes
        ),
    }
}

/// The JSON of one imported (or skipped) archive.
fn imported_json(file: &Path, imported: &Imported) -> Value {
    let p = &imported.package;
    let (outcome, entries, stats) = match imported.outcome {
        Outcome::AlreadyImported => ("skipped", None, Default::default()),
        Outcome::New { entries, stats } => ("imported", Some(entries), stats),
    };
    json!({
        "file": file.display().to_string(), "outcome": outcome, "name": p.name,
        "version": p.version, "arch": p.arch, "kind": p.kind.label(),
        "archive": p.archive.to_string(), "package": imported.id.to_string(),
        "tree": p.tree.to_string(), "entries": entries,
        "new_objects": stats.new_objects, "new_bytes": stats.new_bytes,
        "replaced": stats.replaced,
    })
}

fn failed_json(file: &Path, e: &ImportError) -> Value {
    json!({
        "file": file.display().to_string(), "error": e.to_string(),
        "class": e.class().map(|c| c.code()),
    })
}

/// Prints `{"packages": […], "failed": […]}`, the one document every import prints.
fn print_imports(packages: Vec<Value>, failed: Vec<Value>) -> Result<()> {
    print_json(&json!({"packages": packages, "failed": failed}))
}

/// What every package import takes.
pub struct Flags {
    max_size: u64,
    force: bool,
    json: bool,
}

impl Flags {
    /// The flags as parsed.
    pub fn of(limit: &MaxSize, force: &Force, json: &JsonFlag) -> Flags {
        Flags {
            max_size: limit.max_size,
            force: force.force,
            json: json.json,
        }
    }

    /// The store, open to write, and reimporting with `--force`.
    fn open(&self, store: &Path) -> Result<Store> {
        let store = open(store, Access::Write)?;
        Ok(if self.force {
            store.reimporting()
        } else {
            store
        })
    }
}

pub fn debs(store: &Path, files: &[PathBuf], flags: Flags) -> Result<ExitCode> {
    let store = flags.open(store)?;
    let deb = format::of_kind(PackageKind::Deb).expect("Debian is a format");
    archives(&store, files, "deb", flags.json, |file| {
        deb.prepare(&store, file, None, limits(flags.max_size), None)
    })
}

pub fn rpms(
    store: &Path,
    files: &[PathBuf],
    keyring: Option<&Path>,
    flags: Flags,
) -> Result<ExitCode> {
    let keyring = keyring
        .map(|k| Keyring::load(k).with_context(|| format!("--keyring {}", k.display())))
        .transpose()?;
    let store = flags.open(store)?;
    let rpm = format::of_kind(PackageKind::Rpm).expect("RPM is a format");
    archives(&store, files, "rpm", flags.json, |file| {
        rpm.prepare(&store, file, None, limits(flags.max_size), keyring.as_ref())
    })
}

/// Imports archives, several at once and committed together (see
/// [`import::batch`]), with a progress bar, one line each in the order given (or one
/// JSON document); a refused archive is reported and the others still import.
fn archives<'s>(
    store: &'s Store,
    files: &[PathBuf],
    ext: &str,
    json: bool,
    prepare: impl Fn(&Path) -> Result<Prepared<'s>, ImportError> + Sync,
) -> Result<ExitCode> {
    let bar = ProgressBar::new(files.len() as u64).with_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    if json || crate::output::quiet() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    import::batch::import(
        store,
        files.len(),
        import::batch::threads(),
        |i| std::fs::metadata(&files[i]).map_or(0, |m| m.len()),
        |i| {
            if files[i].as_os_str() == "-" {
                return Err(ImportError::Io {
                    what: format!(
                        "- (standard input): import {ext} takes files; `import tar`, `import \
                         oci` and `import docker-archive` read standard input"
                    ),
                    source: std::io::ErrorKind::InvalidInput.into(),
                });
            }
            // A directory of archives given as such: name the glob that was meant.
            if files[i].is_dir() {
                return Err(ImportError::Io {
                    what: format!(
                        "{} is a directory; give the archives in it, e.g. {}/*.{ext}",
                        files[i].display(),
                        files[i].display().to_string().trim_end_matches('/')
                    ),
                    source: std::io::ErrorKind::IsADirectory.into(),
                });
            }
            prepare(&files[i])
        },
        |i, result| {
            let file = &files[i];
            bar.set_message(file.display().to_string());
            match result {
                Ok(imported) if json => done.push(imported_json(file, &imported)),
                Ok(imported) => bar.suspend(|| println!("{}", report(&imported))),
                Err(e) => {
                    bar.suspend(|| eprintln!("error: importing {}: {e}", file.display()));
                    failed.push(failed_json(file, &e));
                }
            }
            bar.inc(1);
        },
    )
    .context("committing the imported archives")?;
    bar.finish_and_clear();
    let failures = failed.len();
    if json {
        print_imports(done, failed)?;
    }
    if failures > 0 {
        eprintln!("{}", failure_summary(failures, files.len()));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The last line of an import some archives of failed: how many, and what became of
/// the rest (nothing was imported when every archive failed).
fn failure_summary(failures: usize, total: usize) -> String {
    match (failures, total) {
        (1, 1) => "the archive was not imported".to_string(),
        (f, t) if f == t => format!("none of the {t} archives was imported"),
        (f, t) => format!(
            "{f} of {t} archives failed to import; the other {} were imported",
            t - f
        ),
    }
}

fn check_name(named: &Named) -> Result<()> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-._~".contains(&b))
    };
    for (flag, value) in [("--name", &named.name), ("--version", &named.version)] {
        if !ok(value) {
            bail!(
                "{flag} {value:?}: {flag} takes letters, digits and + - . _ ~ (starting with a letter or digit)"
            );
        }
    }
    Ok(())
}

/// Reports a tarball's or directory's import: a line, or the JSON document (which
/// lists a refusal too, and then the status is 1).
fn single(path: &Path, result: Result<Imported, ImportError>, json: bool) -> Result<ExitCode> {
    match result {
        Ok(imported) if json => print_imports(vec![imported_json(path, &imported)], Vec::new())?,
        Ok(imported) => println!("{}", report(&imported)),
        Err(e) if json => {
            eprintln!("error: importing {}: {e}", path.display());
            print_imports(Vec::new(), vec![failed_json(path, &e)])?;
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e).with_context(|| format!("importing {}", path.display())),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn tar(store: &Path, file: &Path, named: &Named, flags: Flags) -> Result<ExitCode> {
    check_name(named)?;
    let store = flags.open(store)?;
    let limits = limits(flags.max_size);
    // `-`: a tarball piped in (`curl … | canopy import tar - --name base`), spooled
    // into the store's tmp/ first, as the import reads its file more than once.
    let spooled = match file.as_os_str() == "-" {
        true => Some(Spooled::stdin(&store.path().join("tmp"))?),
        false => None,
    };
    let from = spooled.as_ref().map_or(file, |s| s.0.as_path());
    let result = import::tar::import(&store, from, &named.name, &named.version, limits);
    single(file, result, flags.json)
}

/// Standard input copied to a file of the store's `tmp/` (which the next writer
/// empties if this process dies), removed when dropped.
struct Spooled(PathBuf);

impl Spooled {
    fn stdin(tmp: &Path) -> Result<Spooled> {
        let path = tmp.join(format!("stdin-{}.tar", std::process::id()));
        let spooled = Spooled(path);
        let mut out = std::fs::File::create(&spooled.0)
            .with_context(|| format!("creating {}", spooled.0.display()))?;
        std::io::copy(&mut std::io::stdin().lock(), &mut out)
            .with_context(|| format!("copying standard input to {}", spooled.0.display()))?;
        Ok(spooled)
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn dir(store: &Path, dir: &Path, named: &Named, flags: Flags) -> Result<ExitCode> {
    check_name(named)?;
    let store = flags.open(store)?;
    let limits = limits(flags.max_size);
    let result = import::dir::import(&store, dir, &named.name, &named.version, limits);
    single(dir, result, flags.json)
}

/// Package extensions for `--json`: each value as the JSON it holds (as every format
/// writes them), or as hex if it is not JSON.
fn extensions(map: &std::collections::BTreeMap<String, Vec<u8>>) -> serde_json::Value {
    map.iter()
        .map(|(key, value)| {
            let shown = serde_json::from_slice(value)
                .unwrap_or_else(|_| serde_json::Value::String(hex(value)));
            (key.clone(), shown)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn list(store: &Path, json: bool) -> Result<ExitCode> {
    let store = open(store, Access::Read)?;
    let index = PackageIndex::load(&store)?;
    if json {
        let items: Vec<_> = index
            .all()
            .iter()
            .map(|(id, p)| {
                json!({
                    "name": p.name, "version": p.version, "arch": p.arch, "kind": p.kind.label(),
                    "archive": p.archive.to_string(), "tree": p.tree.to_string(), "id": id.to_string(),
                    "imported_at": p.imported_at, "scripts": p.scripts,
                    "control": p.control.map(|t| t.to_string()),
                    "extensions": extensions(&p.extensions),
                })
            })
            .collect();
        print_json(&json!(items))?;
    } else {
        // Columns as wide as their widest entry (at least as wide as before), so a long
        // name or an architecture such as `noarch` or `aarch64` keeps them aligned.
        let all = index.all();
        let width = |min: usize, f: &dyn Fn(&canopy_protocol::Package) -> usize| {
            all.iter().map(|(_, p)| f(p)).max().unwrap_or(0).max(min)
        };
        let name_w = width(32, &|p| p.name.chars().count());
        let version_w = width(28, &|p| p.version.chars().count());
        let arch_w = width(6, &|p| p.arch.chars().count());
        let kind_w = width(4, &|p| p.kind.label().len());
        for (_, p) in all {
            let scripts = if p.scripts.is_empty() {
                String::new()
            } else {
                format!("  scripts: {}", p.scripts.join(","))
            };
            println!(
                "{:<name_w$} {:<version_w$} {:<arch_w$} {:<kind_w$} {}{scripts}",
                p.name,
                p.version,
                p.arch,
                p.kind.label(),
                time(p.imported_at)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
