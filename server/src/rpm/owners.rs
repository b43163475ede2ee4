//! Owners by name: RPM headers name each file's user and group, and the root's own
//! `/etc/passwd` and `/etc/group` — as its packages and `%pre` scriptlets left them —
//! say which ids those are, as rpm looks them up when it unpacks a package. `root` is
//! 0 whatever the files say. A name the root does not know is an error, or, when the
//! recipe says `unknown-owner=root`, root with a warning (rpm's own behaviour).

use super::transaction::Layout;
use crate::configure::ConfigureError;
use crate::edit::{EditError, Editor, Node};
use crate::store::Txn;
use canopy_protocol::EntryKind;
use std::collections::HashMap;

/// User and group ids by name.
pub(crate) struct Ids {
    users: HashMap<String, u32>,
    groups: HashMap<String, u32>,
}

/// Largest account file read (real ones are a few KiB).
const MAX_ACCOUNTS: u64 = 16 << 20;

fn edit(e: EditError) -> ConfigureError {
    ConfigureError::Package(e.to_string())
}

impl Ids {
    /// The ids the root's `/etc/passwd` and `/etc/group` give (the first line of a
    /// name wins, as for `getpwnam`); files the root lacks give none but root.
    pub(crate) fn of_root(ed: &mut Editor, txn: &Txn<'_>) -> Result<Ids, ConfigureError> {
        Ok(Ids {
            users: accounts(&file(ed, txn, "/etc/passwd")?),
            groups: accounts(&file(ed, txn, "/etc/group")?),
        })
    }

    fn user(&self, name: &str) -> Option<u32> {
        if name == "root" {
            return Some(0);
        }
        self.users.get(name).copied()
    }

    fn group(&self, name: &str) -> Option<u32> {
        if name == "root" {
            return Some(0);
        }
        self.groups.get(name).copied()
    }
}

/// The content of a regular file of the tree, empty when it is not one.
fn file(ed: &mut Editor, txn: &Txn<'_>, path: &str) -> Result<String, ConfigureError> {
    let Some(Node::Leaf {
        kind: EntryKind::File { size, blob },
        ..
    }) = ed.get(txn, path).map_err(edit)?
    else {
        return Ok(String::new());
    };
    if *size > MAX_ACCOUNTS {
        return Err(ConfigureError::Package(format!(
            "{path} is {size} bytes: too large to be an account file"
        )));
    }
    let blob = *blob;
    Ok(String::from_utf8_lossy(&txn.blob(&blob)?).into_owned())
}

/// `name:password:id:…` lines as names and ids.
fn accounts(text: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if name.is_empty() || name.starts_with(['#', '+', '-']) {
            continue;
        }
        if let Ok(id) = id.trim().parse::<u32>() {
            out.entry(name.to_string()).or_insert(id);
        }
    }
    out
}

/// Gives the directories the headers list their modes.
pub(crate) fn set_modes(
    ed: &mut Editor,
    txn: &Txn<'_>,
    layout: &Layout,
) -> Result<(), ConfigureError> {
    for (path, mode) in &layout.dirs {
        if let Some(node) = ed.get(txn, path).map_err(edit)?
            && node.is_dir()
        {
            node.meta_mut().mode = *mode;
        }
    }
    Ok(())
}

/// Gives paths their owners by name, resolved with `ids`. Returns the warnings about
/// names given to root (with `unknown_as_root`); without it, an unknown name is an
/// error naming the package, the path and the name.
pub(crate) fn set_owners(
    ed: &mut Editor,
    txn: &Txn<'_>,
    layout: &Layout,
    ids: &Ids,
    unknown_as_root: bool,
) -> Result<Vec<String>, ConfigureError> {
    let mut warnings = Vec::new();
    for (path, (user, group, package)) in &layout.owners {
        let mut resolve = |kind: &str, name: &str, id: Option<u32>, file: &str| {
            if let Some(id) = id {
                return Ok(id);
            }
            if unknown_as_root {
                warnings.push(format!(
                    "{package}: {path}: {kind} {name} is not in the root's {file}; root owns it instead (unknown-owner=root)"
                ));
                return Ok(0);
            }
            Err(ConfigureError::Package(format!(
                "{package}: {path} belongs to {kind} {name}, which the root's {file} does not list (a %pre scriptlet or a package such as setup should create it; --unknown-owner=root gives such paths to root)"
            )))
        };
        let uid = resolve("user", user, ids.user(user), "/etc/passwd")?;
        let gid = resolve("group", group, ids.group(group), "/etc/group")?;
        if let Some(node) = ed.get(txn, path).map_err(edit)? {
            let meta = node.meta_mut();
            meta.uid = uid;
            meta.gid = gid;
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_account_files_as_nss_does() {
        let ids = accounts(
            "root:x:0:0::/root:/bin/sh\n# comment\nweb:x:1000:1000::/:/bin/sh\nweb:x:5:5::/:\nbad line\n+nis::::\n",
        );
        assert_eq!(ids.get("web"), Some(&1000));
        assert_eq!(ids.len(), 2);
    }
}
