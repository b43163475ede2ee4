//! The volumes: what each shows, which containers use it, and the entries of the shared
//! view that serve them.
//!
//! A mounted volume is a top-level entry of the plugin's one FUSE mount: `ROOT@COMMIT`
//! for a volume on one commit (pinned with `commit=`, or the commit current when it was
//! first mounted), `ROOT` for a volume that follows its root. Volumes that show the same
//! thing share the entry, and every entry shares the mount's cache and inodes, so a file
//! in ten containers is one cache file and one set of pages. Each container that mounts
//! a volume is counted by the `ID` Docker gives; when the last one unmounts, the volume
//! is released: its entry leaves the view (unless another mounted volume shows it), so
//! its path stops existing, and the next mount looks the root up again.

use super::state::{Definition, Pin, StateError, StateFile};
use crate::mount::{MountError, current, show};
use crate::remote::Remote;
use crate::view::View;
use canopy_protocol::{CommitId, VerifyingKey};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// Why a request was refused. Every refusal leaves the volumes as they were.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The request is not one this plugin understands.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A method the protocol does not have.
    #[error("unknown method {0:?}: this plugin answers Plugin.Activate and VolumeDriver.*")]
    UnknownMethod(String),
    /// No volume of that name.
    #[error("no volume named {0:?} (docker volume create -d canopy …)")]
    NoSuchVolume(String),
    /// Create with options that do not make a definition.
    #[error("volume {name:?}: {reason}")]
    BadOptions {
        /// The volume.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Create of a name that exists with other options.
    #[error("volume {name:?} exists with other options ({existing}); remove it first")]
    Exists {
        /// The volume.
        name: String,
        /// Its definition.
        existing: Definition,
    },
    /// Remove of a volume that containers use.
    #[error("volume {name:?} is mounted by {users}: stop those containers first")]
    InUse {
        /// The volume.
        name: String,
        /// Who mounts it.
        users: String,
    },
    /// Unmount by a caller that has not mounted the volume.
    #[error("volume {name:?} is not mounted by {id:?}")]
    NotMountedBy {
        /// The volume.
        name: String,
        /// The caller.
        id: String,
    },
    /// The root could not be shown (unknown root, server down, bad signature…).
    #[error("volume {name:?}: {source}")]
    Mount {
        /// The volume.
        name: String,
        /// Why.
        source: MountError,
    },
    /// The definitions could not be saved.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A volume some container has mounted.
struct Mounted {
    /// Its entry in the view.
    entry: String,
    /// The commit shown.
    commit: CommitId,
    /// Mount calls per caller `ID` not yet matched by an unmount.
    users: HashMap<String, u32>,
}

/// A volume as `Get` and `List` report it.
pub struct Info {
    /// Its name.
    pub name: String,
    /// Its path while mounted.
    pub mountpoint: Option<PathBuf>,
    /// What it shows, for `docker volume inspect`.
    pub status: serde_json::Value,
}

/// The volumes and the view that serves them.
pub struct Driver {
    volumes: BTreeMap<String, Definition>,
    mounted: HashMap<String, Mounted>,
    state: StateFile,
    remote: Arc<Remote>,
    view: Arc<View>,
    trust: VerifyingKey,
    mount_dir: PathBuf,
}

/// Longest volume name and caller id taken: names become keys of the state file and
/// appear in logs and answers, so they are bounded like a file name.
const NAME_MAX: usize = 255;

/// The definition `Create` asks for, its name and options checked.
pub(crate) fn checked_definition(
    name: &str,
    opts: &HashMap<String, String>,
) -> Result<Definition, DriverError> {
    check_name(name)?;
    Definition::from_options(name, opts).map_err(|reason| DriverError::BadOptions {
        name: name.to_string(),
        reason,
    })
}

/// Volume names as Docker's own local driver allows them: letters, digits, `_`, `.`,
/// `-`, starting with a letter or digit, at most 255 bytes. A NUL, a `/` or a control
/// character could not be a file name or could forge log lines.
fn check_name(name: &str) -> Result<(), DriverError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        return Ok(());
    }
    let mut shown: String = name.chars().take(64).collect();
    if shown.len() < name.len() {
        shown.push('…');
    }
    Err(DriverError::BadRequest(format!(
        "invalid volume name {shown:?} ({} bytes): use 1 to {NAME_MAX} characters from A-Z a-z 0-9 _ . -, starting with a letter or digit",
        name.len()
    )))
}

/// A caller id as Docker sends it (64 hex digits); anything printable up to 255 bytes is
/// taken.
fn check_id(id: &str) -> Result<(), DriverError> {
    if id.is_empty() || id.len() > NAME_MAX || id.chars().any(char::is_control) {
        let shown: String = id.chars().take(64).collect();
        return Err(DriverError::BadRequest(format!(
            "invalid mount ID {shown:?} ({} bytes): expected 1 to {NAME_MAX} printable characters",
            id.len()
        )));
    }
    Ok(())
}

impl Driver {
    /// A driver for `volumes` (as read from `state`), showing them in `view`, which is
    /// mounted at `mount_dir`.
    pub fn new(
        volumes: BTreeMap<String, Definition>,
        state: StateFile,
        remote: Arc<Remote>,
        view: Arc<View>,
        trust: VerifyingKey,
        mount_dir: PathBuf,
    ) -> Driver {
        Driver {
            volumes,
            mounted: HashMap::new(),
            state,
            remote,
            view,
            trust,
            mount_dir,
        }
    }

    fn definition(&self, name: &str) -> Result<&Definition, DriverError> {
        self.volumes
            .get(name)
            .ok_or_else(|| DriverError::NoSuchVolume(name.to_string()))
    }

    /// Defines volume `name` from Docker's options. Creating it again with the same
    /// options changes nothing. The root is looked up only when the volume is mounted,
    /// so volumes can be defined while the server is unreachable.
    pub fn create(
        &mut self,
        name: &str,
        opts: &HashMap<String, String>,
    ) -> Result<(), DriverError> {
        let definition = checked_definition(name, opts)?;
        match self.volumes.get(name) {
            Some(existing) if *existing == definition => return Ok(()),
            Some(existing) => {
                return Err(DriverError::Exists {
                    name: name.to_string(),
                    existing: existing.clone(),
                });
            }
            None => {}
        }
        let mut volumes = self.volumes.clone();
        volumes.insert(name.to_string(), definition);
        self.commit(volumes)?;
        tracing::info!("volume {name}: created ({})", self.volumes[name]);
        Ok(())
    }

    /// Forgets volume `name`, which no container may be using.
    pub fn remove(&mut self, name: &str) -> Result<(), DriverError> {
        self.definition(name)?;
        if let Some(m) = self.mounted.get(name) {
            let mut users: Vec<&str> = m.users.keys().map(String::as_str).collect();
            users.sort_unstable();
            return Err(DriverError::InUse {
                name: name.to_string(),
                users: users.join(", "),
            });
        }
        let mut volumes = self.volumes.clone();
        volumes.remove(name);
        self.commit(volumes)?;
        tracing::info!("volume {name}: removed");
        Ok(())
    }

    /// Saves `volumes`, then makes them the volumes: a failed save changes nothing.
    fn commit(&mut self, volumes: BTreeMap<String, Definition>) -> Result<(), DriverError> {
        self.state.save(&volumes)?;
        self.volumes = volumes;
        Ok(())
    }

    /// Mounts volume `name` for caller `id` and returns its path. The first mount shows
    /// the root in the view (fetching its directory metadata); later ones only count.
    pub async fn mount(&mut self, name: &str, id: &str) -> Result<PathBuf, DriverError> {
        check_id(id)?;
        let definition = self.definition(name)?.clone();
        if let Some(m) = self.mounted.get_mut(name) {
            *m.users.entry(id.to_string()).or_default() += 1;
            return Ok(self.mount_dir.join(&m.entry));
        }
        let root = definition.root.as_str();
        let failed = |source| DriverError::Mount {
            name: name.to_string(),
            source,
        };
        let commit = match definition.pin {
            Pin::Commit(c) => c,
            Pin::Mounted | Pin::Follow => current(&self.remote, root).await.map_err(failed)?,
        };
        let entry = match definition.pin {
            Pin::Follow => root.to_string(),
            Pin::Commit(_) | Pin::Mounted => format!("{root}@{commit}"),
        };
        show(&self.remote, &self.view, &self.trust, &entry, root, commit)
            .await
            .map_err(failed)?;
        tracing::info!("volume {name}: mounted at {entry} for {id}");
        let path = self.mount_dir.join(&entry);
        self.mounted.insert(
            name.to_string(),
            Mounted {
                entry: entry.clone(),
                commit,
                users: HashMap::from([(id.to_string(), 1)]),
            },
        );
        self.shown(&entry, commit);
        Ok(path)
    }

    /// Undoes one mount of volume `name` by caller `id`; the last one releases it.
    pub fn unmount(&mut self, name: &str, id: &str) -> Result<(), DriverError> {
        self.definition(name)?;
        let not_mounted = || DriverError::NotMountedBy {
            name: name.to_string(),
            id: id.to_string(),
        };
        let m = self.mounted.get_mut(name).ok_or_else(not_mounted)?;
        let count = m.users.get_mut(id).ok_or_else(not_mounted)?;
        *count -= 1;
        if *count == 0 {
            m.users.remove(id);
        }
        if !m.users.is_empty() {
            return Ok(());
        }
        let released = self.mounted.remove(name).expect("found above");
        if !self.mounted.values().any(|m| m.entry == released.entry) {
            self.view.remove(&released.entry);
        }
        tracing::info!("volume {name}: released {}", released.entry);
        Ok(())
    }

    /// The path of volume `name`, if it is mounted.
    pub fn path(&self, name: &str) -> Result<Option<PathBuf>, DriverError> {
        self.definition(name)?;
        Ok(self
            .mounted
            .get(name)
            .map(|m| self.mount_dir.join(&m.entry)))
    }

    /// What volume `name` is and shows.
    pub fn get(&self, name: &str) -> Result<Info, DriverError> {
        let definition = self.definition(name)?;
        let mounted = self.mounted.get(name);
        let mut status = serde_json::json!({
            "options": definition.to_string(),
            "mounts": mounted.map_or(0, |m| m.users.values().sum::<u32>()),
        });
        if let Some(m) = mounted {
            status["commit"] = m.commit.to_string().into();
        }
        Ok(Info {
            name: name.to_string(),
            mountpoint: self.path(name)?,
            status,
        })
    }

    /// Records that `entry` now shows `commit`, for every volume mounted on it.
    fn shown(&mut self, entry: &str, commit: CommitId) {
        for m in self.mounted.values_mut().filter(|m| m.entry == entry) {
            m.commit = commit;
        }
    }

    /// Every volume.
    pub fn list(&self) -> Vec<Info> {
        self.volumes
            .keys()
            .map(|name| self.get(name).expect("listed names exist"))
            .collect()
    }

    /// Moves mounted volumes that follow their root to its current commit. A root that
    /// cannot be refreshed keeps its version, with a warning.
    pub async fn follow(&mut self) {
        let mut roots: Vec<String> = self
            .mounted
            .iter()
            .filter(|(name, _)| self.volumes[*name].pin == Pin::Follow)
            .map(|(_, m)| m.entry.clone())
            .collect();
        roots.sort_unstable();
        roots.dedup();
        for root in roots {
            let refreshed = match current(&self.remote, &root).await {
                Ok(commit) => show(&self.remote, &self.view, &self.trust, &root, &root, commit)
                    .await
                    .map(|()| commit),
                Err(e) => Err(e),
            };
            match refreshed {
                Ok(commit) => self.shown(&root, commit),
                Err(e) => tracing::warn!("following root {root}: {e}; keeping its version"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{check_id, check_name};

    #[test]
    fn volume_names_are_file_names_docker_would_take() {
        for good in ["web", "w", "web-1.2_x", &"a".repeat(255)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "a\0b",
            "-x",
            ".x",
            "a b",
            "a\nb",
            &"a".repeat(256),
            &"a".repeat(10_000),
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.len() < 300, "{e}");
        }
        assert!(check_id(&"0f".repeat(32)).is_ok());
        assert!(
            check_id("").is_err()
                && check_id("a\nb").is_err()
                && check_id(&"a".repeat(256)).is_err()
        );
    }
}
