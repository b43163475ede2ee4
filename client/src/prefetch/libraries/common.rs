//! What almost every dynamic program of a root needs, fetched as soon as a program
//! starts, beside the program itself.
//!
//! The kernel asks for a program's loader only once the whole executable is in the
//! cache, since its bytes are verified before any is served, and the program's own
//! libraries are known only then ([`super`]): fetching a 1.3 MB shell took 9–11 ms here
//! before the 2 MB C library could start. Reading hints from the executable's bytes as
//! they stream in would gain little: `PT_INTERP` is in the first page, but the dynamic
//! segment that names the libraries is near the end (at 96% of Debian's `/bin/bash`).
//! What every program of a root needs does not depend on the program, though: at the
//! first open of an executable the cache lacks in a root version, that root's loader
//! (an interpreter seen in a program read before, or the first of the standard
//! loaders' paths present in the root, this machine's own first), its
//! `/etc/ld.so.cache` and its `libc.so.6` (found as the loader finds a library) are
//! fetched at once, beside the executable, each through the same path as a program's
//! libraries, with the same bounds, and read in turn when they arrive. The program's
//! own libraries follow once it is in the cache; what is under way or cached already
//! is not fetched again.
//!
//! A mount that shows one root (`--root`: a node running a service from it) fetches
//! that root's loader, `ld.so.cache` and C library as soon as it serves
//! ([`Prefetch::serving`]), before any program starts: the first program's own fetch
//! then has the server's disk, the link and the host's cores to itself. Not when a
//! profile's replay holds prefetch back (the profile brings what its program reads),
//! and not for a mount of many roots, which is browsed rather than run from.

use super::search::{Steps, resolve};
use super::{Found, LD_CACHE, PROGRAM_STEPS, Start};
use crate::prefetch::Prefetch;
use crate::prefetch::elf::Needs;
use crate::view::View;
use canopy_protocol::TreeId;
use object::elf::{EM_386, EM_AARCH64, EM_ARM, EM_PPC64, EM_RISCV, EM_S390, EM_X86_64};
use std::sync::Arc;

/// The dynamic loaders' standard paths, with the machine and class (64-bit or not) of
/// the programs each loads: glibc's, then musl's.
const LOADERS: &[(&str, u16, bool)] = &[
    ("/lib64/ld-linux-x86-64.so.2", EM_X86_64, true),
    ("/lib/ld-linux-aarch64.so.1", EM_AARCH64, true),
    ("/lib/ld-linux.so.2", EM_386, false),
    ("/lib/ld-linux-armhf.so.3", EM_ARM, false),
    ("/lib64/ld64.so.2", EM_PPC64, true),
    ("/lib/ld64.so.1", EM_S390, true),
    ("/lib/ld-linux-riscv64-lp64d.so.1", EM_RISCV, true),
    ("/lib/ld-musl-x86_64.so.1", EM_X86_64, true),
    ("/lib/ld-musl-aarch64.so.1", EM_AARCH64, true),
];

/// The machine this host runs programs of natively: its loader is tried first.
const HOST: u16 = if cfg!(target_arch = "x86_64") {
    EM_X86_64
} else if cfg!(target_arch = "aarch64") {
    EM_AARCH64
} else if cfg!(target_arch = "x86") {
    EM_386
} else if cfg!(target_arch = "arm") {
    EM_ARM
} else if cfg!(target_arch = "powerpc64") {
    EM_PPC64
} else if cfg!(target_arch = "s390x") {
    EM_S390
} else if cfg!(target_arch = "riscv64") {
    EM_RISCV
} else {
    0
};

/// The C library as glibc's programs name it.
pub(super) const LIBC: &[u8] = b"libc.so.6";

/// An interpreter's path, with the ELF machine and class of the programs it loads.
pub(super) type Interp = (Vec<u8>, u16, bool);

/// The loader of root `root`, with the machine and class of the programs it loads: the
/// first of `seen` (interpreters of programs read, most recent first), then of the
/// standard loaders' paths (this machine's first) that the root holds.
pub(super) fn loader(
    view: &View,
    root: TreeId,
    seen: &[Interp],
    steps: &mut Steps,
) -> Option<(Found, u16, bool)> {
    let standard = LOADERS
        .iter()
        .filter(|l| l.1 == HOST)
        .chain(LOADERS.iter().filter(|l| l.1 != HOST))
        .map(|&(p, m, w)| (p.as_bytes(), m, w));
    seen.iter()
        .map(|(p, m, w)| (&p[..], *m, *w))
        .chain(standard)
        .find_map(|(p, m, w)| Some((resolve(view, root, p, steps)?, m, w)))
}

impl Prefetch {
    /// The mount serves now: if it shows a single root, fetches what almost every
    /// program of that root needs (see the module's documentation). Never waits.
    pub fn serving(self: &Arc<Self>) {
        if self.is_held() {
            return;
        }
        let shown = self.view.shown();
        let [name] = &shown[..] else {
            return;
        };
        if let Some(version) = self.view.root(name) {
            self.expect_program(version.tree);
        }
    }

    /// An executable the cache lacks is being opened in root version `root`: fetches
    /// that root's loader, `ld.so.cache` and C library at once, if not done before for
    /// that version.
    pub(super) fn expect_program(self: &Arc<Self>, root: TreeId) {
        let first = {
            let mut roots = self.libraries.roots.lock().expect("prefetch lock");
            roots.put(root, ()).is_none()
        };
        if first {
            let this = self.clone();
            self.spawn_library_task(async move { this.common(root).await });
        }
    }

    /// Fetches what almost every dynamic program of `root` needs (see the module's
    /// documentation).
    async fn common(self: Arc<Self>, root: TreeId) {
        let seen: Vec<Interp> = {
            let interps = self.libraries.interps.lock().expect("prefetch lock");
            interps
                .iter()
                .map(|(p, &(m, w))| (p.clone(), m, w))
                .collect()
        };
        let this = self.clone();
        let found = tokio::task::spawn_blocking(move || {
            let mut steps = Steps(PROGRAM_STEPS);
            let (loader, machine, wide) = loader(&this.view, root, &seen, &mut steps)?;
            let ld_path = resolve(&this.view, root, LD_CACHE, &mut steps);
            Some((loader, machine, wide, ld_path, steps))
        })
        .await;
        let Ok(Some((loader, machine, wide, ld_path, steps))) = found else {
            return;
        };
        tracing::debug!(
            "library prefetch for {root}: the loader (in /{}), ld.so.cache and {} ahead \
             of the first program",
            String::from_utf8_lossy(&loader.dir.join(&b'/')),
            String::from_utf8_lossy(LIBC)
        );
        // The C library is found as the loader finds any program's: the loader stands
        // for a program that needs it alone.
        let libc = Needs {
            machine,
            wide,
            needed: vec![LIBC.to_vec()],
            ..Needs::default()
        };
        let start = Start {
            root,
            interp: Some(loader.clone()),
            ld_path,
            steps,
            machine,
            wide,
        };
        self.fetch_needs(start, vec![(loader, Some(libc))]).await;
    }
}
