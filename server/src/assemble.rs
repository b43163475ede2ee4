//! Assembling a root: the union of package trees, written as a signed commit.
//!
//! Directories merge; a path that two packages fill differently is a conflict unless
//! the caller allows overwrites, when the later package wins. A directory that only one
//! package contributes is reused by id without being read, so assembling costs only the
//! directories that packages share (`/usr`, `/usr/bin`…), never file contents.
//!
//! Then, unless the recipe says `no-configure`, the union is configured
//! ([`crate::configure`]): the packages' scripts run in a sandbox, and what they made
//! becomes part of the root — all in the same transaction, so a failed script changes
//! no ref.

mod diversion;
mod merge;

use crate::configure::{self, ConfigureError, Configured, Layer};
use crate::crash;
use crate::import::now;
use crate::packages::{LookupError, PackageIndex, PackageSpec};
use crate::store::{Store, StoreError, Txn, TxnStats};
use canopy_protocol::{
    Commit, CommitBody, CommitId, EntryKind, Package, PackageId, PackageRef, RootName, TreeId,
};
use merge::{Merger, subtree, write};
use std::collections::BTreeMap;

/// How a root is made: the request and how it is turned into packages. A commit
/// records it (`requested` and `options`), so that `upgrade` can make it again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipe {
    /// Package specs, in order: with `allow_overwrite`, later ones win.
    pub specs: Vec<PackageSpec>,
    /// Repositories to resolve dependencies from; none means the specs name
    /// imported packages exactly.
    pub from: Vec<String>,
    /// With `from`: add the repositories' Essential packages.
    pub essential: bool,
    /// With `from`: follow Recommends too.
    pub recommends: bool,
    /// Let later packages replace what earlier ones put at the same path.
    pub allow_overwrite: bool,
    /// Make the root out of this directory of the union (e.g. `usr`).
    pub subtree: Option<String>,
    /// Keep the union unpacked: run no package scripts.
    pub no_configure: bool,
    /// Give files whose owner (by name) the root does not know to root, with a
    /// warning, instead of refusing the root.
    pub unknown_owner_root: bool,
}

impl Recipe {
    /// The recipe as the commit's option strings, in a fixed order.
    pub fn options(&self) -> Vec<String> {
        let mut out: Vec<String> = self.from.iter().map(|r| format!("from={r}")).collect();
        for (on, flag) in [
            (self.essential, "essential"),
            (self.recommends, "recommends"),
            (self.allow_overwrite, "allow-overwrite"),
            (self.no_configure, "no-configure"),
        ] {
            if on {
                out.push(flag.to_string());
            }
        }
        if let Some(sub) = &self.subtree {
            out.push(format!("subtree={sub}"));
        }
        if self.unknown_owner_root {
            out.push("unknown-owner=root".to_string());
        }
        out
    }

    /// The recipe a commit was made with.
    pub fn of_commit(body: &CommitBody) -> Result<Recipe, AssembleError> {
        let mut recipe = Recipe {
            specs: body
                .requested
                .iter()
                .map(|s| s.parse())
                .collect::<Result<_, _>>()?,
            ..Recipe::default()
        };
        for option in &body.options {
            match option.split_once('=') {
                Some(("from", repo)) => recipe.from.push(repo.to_string()),
                Some(("subtree", path)) => recipe.subtree = Some(path.to_string()),
                Some(("unknown-owner", "root")) => recipe.unknown_owner_root = true,
                None if option == "essential" => recipe.essential = true,
                None if option == "recommends" => recipe.recommends = true,
                None if option == "allow-overwrite" => recipe.allow_overwrite = true,
                None if option == "no-configure" => recipe.no_configure = true,
                _ => return Err(AssembleError::UnknownOption(option.clone())),
            }
        }
        Ok(recipe)
    }
}

/// What to assemble.
pub struct Request {
    /// The root to (re)point at the new commit.
    pub root: RootName,
    /// How it is made.
    pub recipe: Recipe,
    /// The packages the recipe chose, in assembly order.
    pub packages: Vec<(PackageId, Package)>,
    /// The commit's subject line; a default names the packages.
    pub subject: Option<String>,
}

/// Whether and how the root was configured.
#[derive(Debug)]
pub enum Configuration {
    /// The recipe says `no-configure`.
    Off,
    /// The root cannot be configured, and why (no package manager or shell in it).
    Skipped(String),
    /// Its packages' scripts ran.
    Done {
        /// What the commit records.
        configured: Configured,
        /// What the scripts changed.
        layer: Layer,
    },
}

/// A new commit of a root, or the current one when nothing would change.
pub struct Assembled {
    /// Its id.
    pub id: CommitId,
    /// The commit.
    pub commit: Commit,
    /// Whether a commit was written: `false` when the current commit already has this
    /// tree, these packages and this request, so a new one would say nothing new.
    pub written: bool,
    /// What the store did not have before (new directory trees and the commit).
    pub stats: TxnStats,
    /// Paths where a later package replaced an earlier one (with `allow_overwrite`).
    pub overwritten: Vec<String>,
    /// What configuring did.
    pub configuration: Configuration,
    /// What the user should know about the unpacked root (owners given to root).
    pub warnings: Vec<String>,
}

/// Why a root could not be assembled. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// A spec matches no imported package.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Two packages put different things at one path.
    #[error(
        "conflict at {path} between {first} and {second}: {detail} (pass --allow-overwrite to let the later package win)"
    )]
    Conflict {
        /// The path.
        path: String,
        /// The package that put it there first.
        first: String,
        /// The package that put something else there.
        second: String,
        /// How the two differ.
        detail: String,
    },
    /// The requested subtree is not a directory of the union.
    #[error("subtree {0} is not a directory in the assembled packages")]
    Subtree(String),
    /// No packages were given.
    #[error("no packages given")]
    Empty,
    /// Packages of two formats (Debian and RPM) in one root.
    #[error("{0}")]
    Ecosystems(String),
    /// Configuring the root failed.
    #[error(transparent)]
    Configure(#[from] ConfigureError),
    /// A commit's recipe has an option this version does not know.
    #[error("the commit was made with option {0:?}, which this version of canopy does not know")]
    UnknownOption(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The imported packages that specs name exactly, in the specs' order.
pub fn select_imported(
    store: &Store,
    specs: &[PackageSpec],
) -> Result<Vec<(PackageId, Package)>, AssembleError> {
    if specs.is_empty() {
        return Err(AssembleError::Empty);
    }
    let index = PackageIndex::load(store)?;
    let mut chosen = Vec::new();
    for spec in specs {
        chosen.push(index.find(spec)?.clone());
    }
    Ok(chosen)
}

/// How a commit lists packages: what it was built from.
pub fn package_refs(packages: &[(PackageId, Package)]) -> Vec<PackageRef> {
    packages
        .iter()
        .map(|(id, p)| PackageRef {
            name: p.name.clone(),
            version: p.version.clone(),
            arch: p.arch.clone(),
            archive: p.archive,
            package: *id,
            scripts: p.scripts.clone(),
        })
        .collect()
}

/// Whether `packages` are exactly what `commit` was assembled from, so that
/// assembling them again would make the same root.
pub fn unchanged(commit: &CommitBody, packages: &[(PackageId, Package)]) -> bool {
    commit.packages.len() == packages.len()
        && commit
            .packages
            .iter()
            .zip(packages)
            .all(|(old, (id, _))| old.package == *id)
}

/// Assembles a root from imported packages, configures it unless the recipe says
/// `no-configure` (with `configure`'s settings and progress; without them it stays
/// unpacked), and points the root at the new commit.
pub fn assemble(
    store: &Store,
    req: &Request,
    configure: Option<(&configure::Settings, &dyn configure::Progress)>,
) -> Result<Assembled, AssembleError> {
    assemble_as(store, req, configure, "assemble")
}

/// [`assemble`], with the name the reflog gives the move (`upgrade` for an upgrade).
pub fn assemble_as(
    store: &Store,
    req: &Request,
    configure: Option<(&configure::Settings, &dyn configure::Progress)>,
    operation: &'static str,
) -> Result<Assembled, AssembleError> {
    let chosen = &req.packages;
    if chosen.is_empty() {
        return Err(AssembleError::Empty);
    }
    crate::format::of_packages(chosen).map_err(AssembleError::Ecosystems)?;
    let mut txn = store.begin()?;
    txn.operation(operation);
    let labels = chosen
        .iter()
        .map(|(_, p)| format!("{} {}", p.name, p.version))
        .collect();
    let configure = configure.filter(|_| !req.recipe.no_configure);
    let mut merger = Merger {
        txn: &txn,
        labels,
        allow_overwrite: req.recipe.allow_overwrite,
        overwritten: Vec::new(),
        diverters: match configure {
            Some(_) => diversion::diverters(&txn, chosen)?,
            None => Default::default(),
        },
        set_aside: Vec::new(),
    };
    let mut root = BTreeMap::new();
    for (origin, (_, package)) in chosen.iter().enumerate() {
        let tree = txn.tree(&package.tree)?;
        merger.merge(&mut root, tree, origin, b"")?;
    }
    let overwritten = std::mem::take(&mut merger.overwritten);
    let set_aside = std::mem::take(&mut merger.set_aside);
    let mut extensions = BTreeMap::new();
    let mut warnings = Vec::new();
    if configure.is_none() && !configure::lays_out(chosen) {
        let tree = match &req.recipe.subtree {
            None => write(root, &mut txn)?,
            Some(sub) => subtree(root, sub, &mut txn)?,
        };
        return finish(
            store,
            req,
            txn,
            tree,
            overwritten,
            Configuration::Off,
            extensions,
            warnings,
        );
    }
    let union = write(root, &mut txn)?;
    let (full, configuration) = match configure {
        None => {
            diversion::unresolved(&set_aside, chosen)?;
            let (tree, said) =
                configure::unpacked(&mut txn, union, chosen, req.recipe.unknown_owner_root)?;
            warnings = said;
            (tree, Configuration::Off)
        }
        Some((settings, progress)) => {
            // The recipe decides, so that an upgrade does as the assemble did.
            let settings = &configure::Settings {
                unknown_owner_root: req.recipe.unknown_owner_root,
                ..settings.clone()
            };
            match configure::configure(&mut txn, union, chosen, settings, progress)? {
                Err(reason) => {
                    diversion::unresolved(&set_aside, chosen)?;
                    let (tree, said) = configure::unpacked(
                        &mut txn,
                        union,
                        chosen,
                        req.recipe.unknown_owner_root,
                    )?;
                    warnings = said;
                    (tree, Configuration::Skipped(reason))
                }
                Ok(done) => {
                    extensions.insert(
                        configure::EXTENSION.to_string(),
                        serde_json::to_vec(&done.configured).expect("a plain struct serializes"),
                    );
                    crash::point("configured");
                    (
                        diversion::place(&mut txn, done.tree, set_aside, chosen)?,
                        Configuration::Done {
                            configured: done.configured,
                            layer: done.layer,
                        },
                    )
                }
            }
        }
    };
    // Scripts and owners need the whole root; a subtree is taken from what they made.
    let tree = match &req.recipe.subtree {
        None => full,
        Some(sub) => lookup(&txn, full, sub)?,
    };
    finish(
        store,
        req,
        txn,
        tree,
        overwritten,
        configuration,
        extensions,
        warnings,
    )
}

/// Commits `tree` as the root's new commit, unless it would say nothing new.
#[allow(clippy::too_many_arguments)]
fn finish(
    store: &Store,
    req: &Request,
    mut txn: Txn<'_>,
    tree: TreeId,
    overwritten: Vec<String>,
    configuration: Configuration,
    extensions: BTreeMap<String, Vec<u8>>,
    warnings: Vec<String>,
) -> Result<Assembled, AssembleError> {
    let chosen = &req.packages;
    let parent = store.root_ref(&req.root)?;
    let previous = parent.map(|p| store.commit(&p)).transpose()?;
    // A new version keeps the root's access profile: its paths name the new files.
    let mut extensions = extensions;
    if let Some(prev) = &previous {
        crate::profile::carry(&prev.body, &mut extensions);
    }
    // The request, not the resolved list, which can run to hundreds of packages.
    let names: Vec<String> = req.recipe.specs.iter().map(|s| s.to_string()).collect();
    let body = CommitBody {
        root: req.root.clone(),
        generation: previous.as_ref().map_or(1, |p| p.body.generation + 1),
        tree,
        parent,
        timestamp: now(),
        subject: req
            .subject
            .clone()
            .unwrap_or_else(|| format!("assemble {} from {}", req.root, names.join(" "))),
        requested: names,
        options: req.recipe.options(),
        packages: package_refs(chosen),
        extensions,
    };
    if let (Some(id), Some(prev)) = (parent, previous)
        && same_content(&prev.body, &body)
    {
        // Dropping the transaction discards the trees it staged.
        return Ok(Assembled {
            id,
            commit: prev,
            written: false,
            stats: TxnStats::default(),
            overwritten,
            configuration,
            warnings,
        });
    }
    let commit = body.sign(&store.signing_key()?);
    let id = txn.put_commit(&commit)?;
    txn.set_root(&req.root, parent, id);
    let stats = txn.commit()?;
    Ok(Assembled {
        id,
        commit,
        written: true,
        stats,
        overwritten,
        configuration,
        warnings,
    })
}

/// The directory at `path` of a stored tree.
fn lookup(txn: &Txn<'_>, mut tree: TreeId, path: &str) -> Result<TreeId, AssembleError> {
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let t = txn.tree(&tree)?;
        match t.get(part.as_bytes()).map(|e| &e.kind) {
            Some(EntryKind::Dir { tree: sub }) => tree = *sub,
            _ => return Err(AssembleError::Subtree(path.to_string())),
        }
    }
    Ok(tree)
}

/// Whether two commits make the same root the same way: tree, packages, request,
/// options and extensions (not time, subject or place in history).
fn same_content(a: &CommitBody, b: &CommitBody) -> bool {
    a.tree == b.tree
        && a.packages == b.packages
        && a.requested == b.requested
        && a.options == b.options
        && a.extensions == b.extensions
}
