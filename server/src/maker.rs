//! Which maintainer scripts made a path of a configured root that no package ships as
//! the root has it.
//!
//! Configuring runs every package's scripts in one sandbox, one after the other, and
//! does not record what each one wrote (that would mean a snapshot per script). The
//! scripts say most of it themselves: a path a script names literally
//! (`update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5`, the
//! `/etc/passwd` base-passwd copies), or an alternative's own link,
//! `/etc/alternatives/NAME`, for an `--install` or `--slave` of NAME. dpkg's database
//! (`/var/lib/dpkg/`) is written by configuring itself. A path no script names gets no
//! maker: configuration still made it, but which script is not known.

use crate::store::{Store, StoreError};
use canopy_protocol::{CommitBody, EntryKind};

/// The maintainer scripts searched: the ones that change a root (`prerm`/`postrm` run
/// only on removal, which configuring never does).
const SCRIPTS: [&str; 2] = ["preinst", "postinst"];

/// Where dpkg keeps its database.
const DPKG_DATABASE: &[u8] = b"/var/lib/dpkg/";

/// Who made a path during configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Maker {
    /// This script of this package (an index into the commit's package list) names it.
    Script {
        /// The package.
        package: usize,
        /// `preinst` or `postinst`.
        script: String,
    },
    /// It is dpkg's database, written when the packages were configured.
    Database,
}

/// The makers of `path` (a path inside the packages' trees, `/usr/bin/awk`) in the
/// root `commit` describes; `is_dir` paths are matched by the database rule only (a
/// directory's name is in too many scripts to mean anything).
pub fn makers(
    store: &Store,
    commit: &CommitBody,
    path: &[u8],
    is_dir: bool,
) -> Result<Vec<Maker>, StoreError> {
    // A subtree root's paths come prefixed by the subtree (`usr/bin/awk`).
    let mut absolute = b"/".to_vec();
    absolute.extend(path.iter().skip_while(|b| **b == b'/'));
    let path = absolute.as_slice();
    if path.starts_with(DPKG_DATABASE) {
        return Ok(vec![Maker::Database]);
    }
    if is_dir {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (i, p) in commit.packages.iter().enumerate() {
        let record = store.package(&p.package)?;
        let Some(control) = record.control else {
            continue;
        };
        let control = store.tree(&control)?;
        for script in SCRIPTS {
            let Some(entry) = control.get(script.as_bytes()) else {
                continue;
            };
            let EntryKind::File { blob, .. } = &entry.kind else {
                continue;
            };
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut crate::inspect::content(store, blob)?, &mut text)
                .map_err(|source| StoreError::Io {
                    what: format!("reading the {script} of {} {}", p.name, p.version),
                    source,
                })?;
            if names(&without_dpkg_root(&text), path) {
                out.push(Maker::Script {
                    package: i,
                    script: script.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Whether a byte can be part of a path in a shell script.
fn path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-/+@:~".contains(&b)
}

/// The script with `$DPKG_ROOT` (the root being configured, as dpkg tells scripts)
/// taken out of its paths: `"$DPKG_ROOT/etc/passwd"` names `/etc/passwd`.
fn without_dpkg_root(script: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    text.replace("${DPKG_ROOT}", "")
        .replace("$DPKG_ROOT", "")
        .into_bytes()
}

/// Whether `script` names `path`: literally, as a whole word, or as the link of an
/// alternative it installs.
fn names(script: &[u8], path: &[u8]) -> bool {
    let literal = script.windows(path.len()).enumerate().any(|(at, w)| {
        w == path
            && (at == 0 || !path_byte(script[at - 1]))
            && script.get(at + path.len()).is_none_or(|b| !path_byte(*b))
    });
    if literal {
        return true;
    }
    let Some(name) = path.strip_prefix(b"/etc/alternatives/") else {
        return false;
    };
    // `update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]…`,
    // often continued over lines with a backslash.
    let text = String::from_utf8_lossy(script).replace("\\\n", " ");
    text.lines()
        .filter(|l| l.contains("update-alternatives"))
        .any(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words.windows(3).any(|w| {
                matches!(w[0], "--install" | "--slave")
                    && w[2].trim_matches(['"', '\'']).as_bytes() == name
            })
        })
}

#[cfg(test)]
mod tests {
    use super::{names, without_dpkg_root};

    const MAWK: &[u8] = b"#!/bin/sh\nset -e\nif [ \"$1\" = \"configure\" ]; then\n\tupdate-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n\t\t--slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz\nfi\n";

    #[test]
    fn scripts_name_paths_as_whole_words_and_alternatives_by_name() {
        assert!(names(MAWK, b"/usr/bin/awk"));
        assert!(names(MAWK, b"/usr/share/man/man1/awk.1.gz"));
        assert!(names(MAWK, b"/etc/alternatives/awk"));
        assert!(names(MAWK, b"/etc/alternatives/awk.1.gz"));
        // Part of a longer path, or another alternative: not named.
        assert!(!names(MAWK, b"/usr/bin/aw"));
        assert!(!names(MAWK, b"/bin/awk"));
        assert!(!names(MAWK, b"/etc/alternatives/mawk"));
        assert!(!names(MAWK, b"/etc/alternatives/5"));
        let passwd = b"if [ ! -e \"$DPKG_ROOT/etc/passwd\" ]; then cp x ${DPKG_ROOT}/etc/group; fi";
        assert!(names(&without_dpkg_root(passwd), b"/etc/passwd"));
        assert!(names(&without_dpkg_root(passwd), b"/etc/group"));
        assert!(
            !names(passwd, b"/etc/passwd"),
            "a path inside a longer word"
        );
    }
}
