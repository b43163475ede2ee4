//! Volume definitions, and the file that keeps them across restarts of the plugin.
//!
//! The state file (`STATE_DIR/volumes.json`) is versioned JSON, rewritten whole on every
//! change: written to a temporary file, synced, renamed over the old one, then the
//! directory synced, so a crash leaves the old state or the new one, never a mix. It
//! holds the volumes defined and the ones containers have mounted — which entry of the
//! mount serves each, at which commit, and the mount `ID`s Docker gave — so a plugin
//! restarted or killed answers `Path`, `Get` and `List` as before and takes the
//! `Unmount`s Docker sends later with the IDs it got from the previous process.

use canopy_protocol::{CommitId, RootName};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The format this version of canopy writes. Format 1 (definitions only, from before
/// mounts were kept) is still read.
const FORMAT: u32 = 2;

/// Which version of its root a volume shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// The root's current commit when the volume is first mounted; it stays on that
    /// commit while any container uses it.
    Mounted,
    /// Always this commit (`commit=`).
    Commit(CommitId),
    /// The current commit, switching to new ones while mounted (`follow=true`).
    Follow,
}

/// What a volume shows: a root, and which version of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct Definition {
    /// The root.
    pub root: RootName,
    /// Which version.
    pub pin: Pin,
}

/// A definition as written in the state file and given as Docker options.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    commit: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    follow: bool,
}

impl TryFrom<Stored> for Definition {
    type Error = String;

    fn try_from(s: Stored) -> Result<Definition, String> {
        let root = s.root.parse().map_err(|e| format!("{e}"))?;
        let pin = match (s.commit, s.follow) {
            (Some(_), true) => {
                return Err(
                    "commit= pins a volume to one commit, so it cannot go with follow=true".into(),
                );
            }
            (Some(c), false) => Pin::Commit(
                c.parse()
                    .map_err(|e| format!("commit= takes a full commit id: {e}"))?,
            ),
            (None, true) => Pin::Follow,
            (None, false) => Pin::Mounted,
        };
        Ok(Definition { root, pin })
    }
}

impl From<Definition> for Stored {
    fn from(d: Definition) -> Stored {
        Stored {
            root: d.root.to_string(),
            commit: match d.pin {
                Pin::Commit(c) => Some(c.to_string()),
                _ => None,
            },
            follow: d.pin == Pin::Follow,
        }
    }
}

impl Definition {
    /// The definition that `docker volume create -o KEY=VALUE…` asks for: `root=NAME`
    /// (default: the volume's name), `commit=ID`, `follow=true|false`.
    pub fn from_options(
        volume: &str,
        opts: &HashMap<String, String>,
    ) -> Result<Definition, String> {
        if let Some(key) = opts
            .keys()
            .find(|k| !["root", "commit", "follow"].contains(&k.as_str()))
        {
            return Err(format!(
                "unknown option {key:?}: the options are root=NAME, commit=ID and follow=true"
            ));
        }
        let follow = match opts.get("follow").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("follow= takes true or false, not {other:?}")),
        };
        let root = match opts.get("root") {
            Some(root) => root.clone(),
            None => match volume.parse::<RootName>() {
                Ok(_) => volume.to_string(),
                Err(e) => {
                    return Err(format!(
                        "the volume's name is not a root name, so give the root: -o root=NAME ({e})"
                    ));
                }
            },
        };
        Definition::try_from(Stored {
            root,
            commit: opts.get("commit").cloned(),
            follow,
        })
    }
}

impl fmt::Display for Definition {
    /// As Docker options: `root=web commit=…` or `root=web follow=true`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root={}", self.root)?;
        match &self.pin {
            Pin::Mounted => Ok(()),
            Pin::Commit(c) => write!(f, " commit={c}"),
            Pin::Follow => write!(f, " follow=true"),
        }
    }
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, naming the file.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The file is not a state file this canopy can read.
    #[error(
        "{path} is not a valid volume state file ({reason}): restore it, or move it aside to start with no volumes (and create them again)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A volume containers have mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    /// The top-level entry of the plugin's mount that serves it (`ROOT@COMMIT`, or
    /// `ROOT` for a volume that follows its root).
    pub entry: String,
    /// The commit the entry shows.
    pub commit: CommitId,
    /// Mount calls per caller `ID` not yet matched by an unmount (each at least 1).
    pub users: BTreeMap<String, u32>,
}

impl Mounted {
    /// How many mounts are not yet unmounted.
    pub fn count(&self) -> u32 {
        self.users.values().sum()
    }
}

/// The entry that shows `commit` for a volume defined as `definition`.
pub fn entry_for(definition: &Definition, commit: &CommitId) -> String {
    match definition.pin {
        Pin::Follow => definition.root.to_string(),
        Pin::Commit(_) | Pin::Mounted => format!("{}@{commit}", definition.root),
    }
}

/// Everything the plugin keeps: the volumes defined, and those mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volumes {
    /// Every volume, by name.
    pub defined: BTreeMap<String, Definition>,
    /// The volumes some container uses, by name.
    pub mounted: BTreeMap<String, Mounted>,
}

/// [`Mounted`] as the file writes it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredMount {
    entry: String,
    commit: String,
    users: BTreeMap<String, u32>,
}

/// The whole file: a format number, the volumes by name, the mounted ones.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: u32,
    volumes: BTreeMap<String, Definition>,
    #[serde(default)]
    mounted: BTreeMap<String, StoredMount>,
}

/// Just the format number, read before the rest so a newer file is told apart from a
/// damaged one.
#[derive(Deserialize)]
struct Format {
    format: u32,
}

/// The state file of one plugin.
pub struct StateFile {
    path: PathBuf,
}

/// The volumes a state file's `bytes` hold (`path` names it in errors). Mounted volumes
/// must be defined, name the entry their definition gives, and have callers.
pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Volumes, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let format: Format = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if !(1..=FORMAT).contains(&format.format) {
        return Err(corrupt(format!(
            "format {}, and this canopy reads formats 1 to {FORMAT}",
            format.format
        )));
    }
    let file: File = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut mounted = BTreeMap::new();
    for (name, m) in file.mounted {
        let bad = |what: String| corrupt(format!("mounted volume {name:?}: {what}"));
        let definition = file
            .volumes
            .get(&name)
            .ok_or_else(|| bad("no such volume is defined".into()))?;
        let commit: CommitId = m
            .commit
            .parse()
            .map_err(|e| bad(format!("commit {:?}: {e}", m.commit)))?;
        let expected = entry_for(definition, &commit);
        if m.entry != expected {
            return Err(bad(format!(
                "entry {:?}, where its definition gives {expected:?}",
                m.entry
            )));
        }
        if m.users.is_empty() {
            return Err(bad("no mount IDs".into()));
        }
        if let Some((id, _)) = m
            .users
            .iter()
            .find(|(id, n)| **n == 0 || super::driver::check_id(id).is_err())
        {
            return Err(bad(format!("bad mount ID or count for {id:?}")));
        }
        mounted.insert(
            name,
            Mounted {
                entry: m.entry,
                commit,
                users: m.users,
            },
        );
    }
    Ok(Volumes {
        defined: file.volumes,
        mounted,
    })
}

impl StateFile {
    /// Opens the state in `dir` (created if missing) and reads the volumes it holds; no
    /// file means no volumes.
    pub fn open(dir: &Path) -> Result<(StateFile, Volumes), StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Io {
            what: format!("creating the state directory {}", dir.display()),
            source,
        })?;
        let state = StateFile {
            path: dir.join("volumes.json"),
        };
        let bytes = match fs::read(&state.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((state, Volumes::default()));
            }
            Err(source) => {
                return Err(StateError::Io {
                    what: format!("reading {}", state.path.display()),
                    source,
                });
            }
        };
        let volumes = parse(&bytes, &state.path)?;
        Ok((state, volumes))
    }

    /// Replaces the saved volumes with `volumes`, atomically.
    pub fn save(&self, volumes: &Volumes) -> Result<(), StateError> {
        let tmp = self.path.with_extension("json.tmp");
        let io = |what: &str, path: &Path| {
            let what = format!("{what} {}", path.display());
            move |source| StateError::Io { what, source }
        };
        let mounted = volumes
            .mounted
            .iter()
            .map(|(name, m)| {
                let stored = StoredMount {
                    entry: m.entry.clone(),
                    commit: m.commit.to_string(),
                    users: m.users.clone(),
                };
                (name.clone(), stored)
            })
            .collect();
        let mut bytes = serde_json::to_vec_pretty(&File {
            format: FORMAT,
            volumes: volumes.defined.clone(),
            mounted,
        })
        .expect("definitions always serialise");
        bytes.push(b'\n');
        let mut file = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        file.write_all(&bytes).map_err(io("writing", &tmp))?;
        file.sync_all().map_err(io("syncing", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io("replacing", &self.path))?;
        let dir = self
            .path
            .parent()
            .expect("the state file is in a directory");
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_make_definitions() {
        let d = Definition::from_options("web", &opts(&[])).unwrap();
        assert_eq!((d.root.as_str(), &d.pin), ("web", &Pin::Mounted));
        let d =
            Definition::from_options("v", &opts(&[("root", "web"), ("follow", "true")])).unwrap();
        assert_eq!((d.root.as_str(), &d.pin), ("web", &Pin::Follow));
        let c = "ab".repeat(32);
        let d = Definition::from_options("v", &opts(&[("root", "web"), ("commit", &c)])).unwrap();
        assert_eq!(d.to_string(), format!("root=web commit={c}"));
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        for (name, pairs, says) in [
            ("web", vec![("size", "1G")], "unknown option \"size\""),
            (
                "web",
                vec![("follow", "yes")],
                "follow= takes true or false",
            ),
            (
                "web",
                vec![("commit", "abc")],
                "commit= takes a full commit id",
            ),
            ("-x", vec![], "give the root: -o root=NAME"),
            ("web", vec![("root", "../etc")], "invalid root name"),
            (
                "web",
                vec![("commit", &"ab".repeat(32)), ("follow", "true")],
                "cannot go with follow=true",
            ),
        ] {
            let err = Definition::from_options(name, &opts(&pairs)).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn state_round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (state, volumes) = StateFile::open(dir.path()).unwrap();
        assert_eq!(volumes, Volumes::default());
        let mut volumes = Volumes::default();
        volumes.defined.insert(
            "web".to_string(),
            Definition::from_options("web", &opts(&[("follow", "true")])).unwrap(),
        );
        volumes.defined.insert(
            "app".to_string(),
            Definition::from_options("app", &opts(&[])).unwrap(),
        );
        let commit: CommitId = "ab".repeat(32).parse().unwrap();
        volumes.mounted.insert(
            "app".to_string(),
            Mounted {
                entry: format!("app@{commit}"),
                commit,
                users: BTreeMap::from([("c1".to_string(), 2), ("c2".to_string(), 1)]),
            },
        );
        state.save(&volumes).unwrap();
        assert_eq!(StateFile::open(dir.path()).unwrap().1, volumes);
        assert_eq!(volumes.mounted["app"].count(), 3);

        let path = dir.path().join("volumes.json");
        // A file of the first format (definitions only) is read, with nothing mounted.
        fs::write(&path, r#"{"format": 1, "volumes": {"a": {"root": "x"}}}"#).unwrap();
        let read = StateFile::open(dir.path()).unwrap().1;
        assert_eq!((read.defined.len(), read.mounted.len()), (1, 0));

        let mounted = |m: &str| {
            format!(r#"{{"format": 2, "volumes": {{"a": {{"root": "x"}}}}, "mounted": {{{m}}}}}"#)
        };
        let c = "ab".repeat(32);
        for (content, says) in [
            ("{\"format\": 1, \"volumes\": ".to_string(), "EOF"),
            ("{\"format\": 3, \"volumes\": {}}".into(), "format 3"),
            (
                "{\"format\": 1, \"volumes\": {\"a\": {\"root\": \"../x\"}}}".into(),
                "invalid root name",
            ),
            (
                mounted(&format!(
                    r#""b": {{"entry": "x@{c}", "commit": "{c}", "users": {{"c1": 1}}}}"#
                )),
                "no such volume is defined",
            ),
            (
                mounted(&format!(
                    r#""a": {{"entry": "y@{c}", "commit": "{c}", "users": {{"c1": 1}}}}"#
                )),
                "where its definition gives",
            ),
            (
                mounted(r#""a": {"entry": "x@zz", "commit": "zz", "users": {"c1": 1}}"#),
                "commit \"zz\"",
            ),
            (
                mounted(&format!(
                    r#""a": {{"entry": "x@{c}", "commit": "{c}", "users": {{}}}}"#
                )),
                "no mount IDs",
            ),
            (
                mounted(&format!(
                    r#""a": {{"entry": "x@{c}", "commit": "{c}", "users": {{"c1": 0}}}}"#
                )),
                "bad mount ID or count",
            ),
        ] {
            fs::write(&path, &content).unwrap();
            let err = StateFile::open(dir.path()).err().unwrap().to_string();
            assert!(
                err.contains("volumes.json is not a valid volume state file") && err.contains(says),
                "{content}: {err}"
            );
        }
    }
}
