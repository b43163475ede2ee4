//! Where the dynamic loader finds a program's libraries in a root: paths resolved
//! through the view's trees as the kernel would in a `chroot`, search directories
//! expanded and resolved once per object, all within a budget of steps per program.

use super::{Found, LdCache, Needs};
use crate::view::View;
use canopy_protocol::{EntryKind, ObjectId, Tree, TreeId};
use std::collections::VecDeque;
use std::sync::Arc;

/// Most symbolic links followed while resolving one path (the kernel's limit).
const LINKS: u32 = 40;
/// Most path components walked while resolving one path (real library paths have a
/// few dozen at most, links included).
pub(super) const STEPS: usize = 128;
/// Longest library name or path taken.
const NAME_MAX: usize = 4096;

/// The directories the loader searches for the libraries `object` (with `needs`) asks
/// for by name before its cache: `DT_RPATH` (without `DT_RUNPATH`), then
/// `DT_RUNPATH`, each resolved once for all of its names.
pub(super) fn search_dirs(
    view: &View,
    object: &Found,
    needs: &Needs,
    steps: &mut Steps,
) -> Vec<Dirs> {
    let origin = [&b"/"[..], &object.dir.join(&b'/')].concat();
    let rpath = if needs.runpath.is_empty() {
        &needs.rpath[..]
    } else {
        &[]
    };
    rpath
        .iter()
        .chain(&needs.runpath)
        .filter_map(|d| expand(d, &origin, needs.machine))
        // Relative to the working directory, as for a name with a slash.
        .filter(|d| d.starts_with(b"/"))
        .filter_map(|d| resolve_dir(view, object.root, &d, steps))
        .collect()
}

/// The loader's default directories in `root` for objects of `machine`, resolved.
pub(super) fn default_search(
    view: &View,
    root: TreeId,
    machine: u16,
    wide: bool,
    steps: &mut Steps,
) -> Vec<Dirs> {
    default_dirs(machine, wide)
        .iter()
        .filter_map(|d| resolve_dir(view, root, d.as_bytes(), steps))
        .collect()
}

/// Where the loader finds library `name` that `object` asks for in its root: a path
/// as such, else in `search` (its [`search_dirs`]), the root's `ld.so.cache`, then
/// `defaults` (the [`default_search`] of its architecture).
pub(super) fn locate(
    view: &View,
    object: &Found,
    name: &[u8],
    search: &[Dirs],
    ld: Option<&LdCache>,
    defaults: &[Dirs],
    steps: &mut Steps,
) -> Option<Found> {
    if name.len() > NAME_MAX {
        return None;
    }
    let root = object.root;
    if name.contains(&b'/') {
        // Relative to the program's working directory, which is not known here.
        return name
            .starts_with(b"/")
            .then(|| resolve(view, root, name, steps))
            .flatten();
    }
    if let Some(f) = search
        .iter()
        .find_map(|d| in_dir(view, root, d, name, steps))
    {
        return Some(f);
    }
    if let Some(f) = ld
        .and_then(|c| c.get(name))
        .and_then(|p| resolve(view, root, p, steps))
    {
        return Some(f);
    }
    defaults
        .iter()
        .find_map(|d| in_dir(view, root, d, name, steps))
}

/// Search directory `dir` with `$ORIGIN` (or `${ORIGIN}`) replaced by `origin` and
/// `$LIB` by the multiarch library directory; `None` if it names anything else the
/// loader would expand (`$PLATFORM`: the CPU's, not known here).
pub(super) fn expand(dir: &[u8], origin: &[u8], machine: u16) -> Option<Vec<u8>> {
    let lib = triplet(machine).map(|t| format!("lib/{t}"));
    let mut out = Vec::new();
    let mut rest = dir;
    while let Some(at) = rest.iter().position(|b| *b == b'$') {
        out.extend(&rest[..at]);
        rest = &rest[at + 1..];
        let (token, is_origin) = [
            (&b"{ORIGIN}"[..], true),
            (b"ORIGIN", true),
            (b"{LIB}", false),
            (b"LIB", false),
        ]
        .into_iter()
        .find(|(t, _)| rest.starts_with(t))?;
        if is_origin {
            out.extend(origin);
        } else {
            out.extend(lib.as_deref()?.as_bytes());
        }
        rest = &rest[token.len()..];
    }
    out.extend(rest);
    (out.len() <= NAME_MAX).then_some(out)
}

/// Debian's multiarch name for objects of ELF machine `machine`.
pub(super) fn triplet(machine: u16) -> Option<&'static str> {
    use object::elf::*;
    Some(match machine {
        EM_X86_64 => "x86_64-linux-gnu",
        EM_AARCH64 => "aarch64-linux-gnu",
        EM_386 => "i386-linux-gnu",
        EM_ARM => "arm-linux-gnueabihf",
        EM_PPC64 => "powerpc64le-linux-gnu",
        EM_S390 => "s390x-linux-gnu",
        EM_RISCV => "riscv64-linux-gnu",
        _ => return None,
    })
}

/// The loader's default directories for objects of `machine`: the multiarch ones,
/// then `lib64` for 64-bit objects, then `lib`.
pub(super) fn default_dirs(machine: u16, wide: bool) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some(t) = triplet(machine) {
        dirs.push(format!("/lib/{t}"));
        dirs.push(format!("/usr/lib/{t}"));
    }
    if wide {
        dirs.extend(["/lib64".into(), "/usr/lib64".into()]);
    }
    dirs.extend(["/lib".into(), "/usr/lib".into()]);
    dirs
}

/// Directories from a root down to one: each name and tree (the root's name is empty).
pub(super) type Dirs = Vec<(Vec<u8>, Arc<Tree>)>;

/// What resolving paths may still cost for one program, in path components walked
/// and names looked up: a hostile object (many names, long search paths, chains of
/// links) runs it out rather than the CPU.
pub(super) struct Steps(pub(super) usize);

impl Steps {
    /// Takes one step, if any is left.
    pub(super) fn take(&mut self) -> bool {
        let left = self.0 > 0;
        self.0 = self.0.saturating_sub(1);
        left
    }
}

/// The regular file at `path` in root `root` (from its top, relative or not),
/// following symbolic links as the kernel would in a `chroot` to it: `..` at the root
/// stays there, an absolute target starts again at the root. Never leaves the root;
/// bounded by [`LINKS`] and [`STEPS`] for the path and by `steps` in all.
pub(super) fn resolve(view: &View, root: TreeId, path: &[u8], steps: &mut Steps) -> Option<Found> {
    match walk(view, top(view, root)?, path, steps)? {
        Place::File(dirs, blob, size) => Some(found(root, &dirs, blob, size)),
        Place::Dir(_) => None,
    }
}

/// The directory at `path` in root `root`, resolved as [`resolve`] does.
pub(super) fn resolve_dir(
    view: &View,
    root: TreeId,
    path: &[u8],
    steps: &mut Steps,
) -> Option<Dirs> {
    match walk(view, top(view, root)?, path, steps)? {
        Place::Dir(dirs) => Some(dirs),
        Place::File(..) => None,
    }
}

/// The regular file `name` in the directory `dir` of root `root` (a link in it is
/// followed from there).
pub(super) fn in_dir(
    view: &View,
    root: TreeId,
    dir: &Dirs,
    name: &[u8],
    steps: &mut Steps,
) -> Option<Found> {
    if !steps.take() {
        return None;
    }
    let here = &dir.last()?.1;
    match &here.get(name)?.kind {
        EntryKind::File { blob, size } => Some(found(root, dir, blob.0, *size)),
        EntryKind::Symlink { .. } => match walk(view, dir.clone(), name, steps)? {
            Place::File(dirs, blob, size) => Some(found(root, &dirs, blob, size)),
            Place::Dir(_) => None,
        },
        _ => None,
    }
}

pub(super) fn top(view: &View, root: TreeId) -> Option<Dirs> {
    Some(vec![(Vec::new(), view.tree(&root).ok()?)])
}

pub(super) fn found(root: TreeId, dirs: &Dirs, blob: ObjectId, size: u64) -> Found {
    Found {
        root,
        dir: dirs[1..].iter().map(|(n, _)| n.clone()).collect(),
        blob,
        size,
    }
}

/// Where a walk ends.
pub(super) enum Place {
    File(Dirs, ObjectId, u64),
    Dir(Dirs),
}

/// Walks `path` from the directory `dirs` ends in.
pub(super) fn walk(view: &View, mut dirs: Dirs, path: &[u8], steps: &mut Steps) -> Option<Place> {
    let mut todo: VecDeque<Vec<u8>> = VecDeque::new();
    for c in components(path) {
        // Each component costs one step, walked or not: the path is refused early.
        if todo.len() >= STEPS {
            return None;
        }
        todo.push_back(c);
    }
    let (mut links, mut walked) = (0, 0);
    while let Some(name) = todo.pop_front() {
        walked += 1;
        if walked > STEPS || !steps.take() {
            return None;
        }
        if name == b".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let here = &dirs.last().expect("the root stays").1;
        let kind = here.get(&name)?.kind.clone();
        match &kind {
            EntryKind::Dir { tree } => {
                let tree = view.tree(tree).ok()?;
                dirs.push((name, tree));
            }
            EntryKind::Symlink { target } => {
                links += 1;
                if links > LINKS {
                    return None;
                }
                if target.starts_with(b"/") {
                    dirs.truncate(1);
                }
                for c in components(target).rev() {
                    todo.push_front(c);
                }
                if todo.len() > STEPS {
                    return None;
                }
            }
            EntryKind::File { blob, size } if todo.is_empty() => {
                return Some(Place::File(dirs, blob.0, *size));
            }
            _ => return None,
        }
    }
    Some(Place::Dir(dirs))
}

/// The names of a path, without empty ones and `.`.
pub(super) fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}
