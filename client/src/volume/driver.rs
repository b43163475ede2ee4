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
//!
//! The mount itself is served by the plugin's mount server ([`super::server`]); the
//! driver asks it to show and remove entries ([`super::control`]), and saves every
//! change of the volumes — mounts and their IDs included — before answering Docker, so
//! a plugin started after a restart or a crash carries on where the last one stopped.

use super::control::{self, Answer, MountServer, Request, ServerError};
use super::state::{Definition, Mounted, Pin, StateError, StateFile, Volumes, entry_for};
use canopy_protocol::CommitId;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

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
        source: ServerError,
    },
    /// The plugin's mount server cannot be reached or started.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The definitions could not be saved.
    #[error(transparent)]
    State(#[from] StateError),
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

/// The volumes, and the mount server that shows them.
pub struct Driver {
    volumes: Volumes,
    state: StateFile,
    server: MountServer,
    mount_dir: PathBuf,
}

/// How long the mount server may take to show a root: it fetches the root's directory
/// metadata, within its own fetch deadlines.
const SHOW_WAIT: Duration = Duration::from_secs(600);
/// How long it may take to answer anything else.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

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
pub(crate) fn check_id(id: &str) -> Result<(), DriverError> {
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
    /// A driver for `volumes` (as read from `state`), shown by `server` in its mount at
    /// `mount_dir`.
    pub(crate) fn new(
        volumes: Volumes,
        state: StateFile,
        server: MountServer,
        mount_dir: PathBuf,
    ) -> Driver {
        Driver {
            volumes,
            state,
            server,
            mount_dir,
        }
    }

    fn definition(&self, name: &str) -> Result<&Definition, DriverError> {
        self.volumes
            .defined
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
        match self.volumes.defined.get(name) {
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
        volumes.defined.insert(name.to_string(), definition);
        self.commit(volumes)?;
        tracing::info!("volume {name}: created ({})", self.volumes.defined[name]);
        Ok(())
    }

    /// Forgets volume `name`, which no container may be using.
    pub fn remove(&mut self, name: &str) -> Result<(), DriverError> {
        self.definition(name)?;
        if let Some(m) = self.volumes.mounted.get(name) {
            let users: Vec<&str> = m.users.keys().map(String::as_str).collect();
            return Err(DriverError::InUse {
                name: name.to_string(),
                users: users.join(", "),
            });
        }
        let mut volumes = self.volumes.clone();
        volumes.defined.remove(name);
        self.commit(volumes)?;
        tracing::info!("volume {name}: removed");
        Ok(())
    }

    /// Saves `volumes`, then makes them the volumes: a failed save changes nothing.
    fn commit(&mut self, volumes: Volumes) -> Result<(), DriverError> {
        self.state.save(&volumes)?;
        self.volumes = volumes;
        Ok(())
    }

    /// Whether a mounted volume other than `name` uses `entry`.
    fn shared(&self, entry: &str, name: &str) -> bool {
        self.volumes
            .mounted
            .iter()
            .any(|(n, m)| n != name && m.entry == entry)
    }

    /// Has the mount server show `commit` of `root` as `entry`.
    async fn show(&self, entry: &str, root: &str, commit: &CommitId) -> Result<(), ServerError> {
        let request = Request::Show {
            entry: entry.to_string(),
            root: root.to_string(),
            commit: commit.to_string(),
        };
        self.server.call(&request, SHOW_WAIT).await.map(drop)
    }

    /// The commit root `root` is at, as the mount server finds it.
    async fn current(&self, root: &str) -> Result<CommitId, ServerError> {
        let request = Request::Current {
            root: root.to_string(),
        };
        match self.server.call(&request, SHOW_WAIT).await? {
            Answer::Commit { commit } => commit
                .parse()
                .map_err(|e| ServerError::Failed(format!("commit {commit:?}: {e}"))),
            other => Err(ServerError::Failed(format!("unexpected answer {other:?}"))),
        }
    }

    /// Has the mount server stop showing `entry`; a failure leaves it shown, which only
    /// the path's existence tells (the next start or follow round removes it).
    async fn hide(&self, entry: &str) {
        let request = Request::Remove {
            entry: entry.to_string(),
        };
        if let Err(e) = self.server.call(&request, ANSWER_WAIT).await {
            tracing::warn!("{entry}: not removed from the mount: {e}");
        }
    }

    /// Mounts volume `name` for caller `id` and returns its path. The first mount shows
    /// the root in the mount (fetching its directory metadata); later ones only count.
    pub async fn mount(&mut self, name: &str, id: &str) -> Result<PathBuf, DriverError> {
        check_id(id)?;
        let definition = self.definition(name)?.clone();
        self.server_up().await?;
        let mut volumes = self.volumes.clone();
        if let Some(m) = volumes.mounted.get_mut(name) {
            *m.users.entry(id.to_string()).or_default() += 1;
            let path = self.mount_dir.join(&m.entry);
            self.commit(volumes)?;
            return Ok(path);
        }
        let root = definition.root.as_str();
        let failed = |source| DriverError::Mount {
            name: name.to_string(),
            source,
        };
        let commit = match definition.pin {
            Pin::Commit(c) => c,
            Pin::Mounted | Pin::Follow => self.current(root).await.map_err(failed)?,
        };
        let entry = entry_for(&definition, &commit);
        self.show(&entry, root, &commit).await.map_err(failed)?;
        volumes.mounted.insert(
            name.to_string(),
            Mounted {
                entry: entry.clone(),
                commit,
                users: BTreeMap::from([(id.to_string(), 1)]),
            },
        );
        if let Err(e) = self.commit(volumes) {
            if !self.shared(&entry, name) {
                self.hide(&entry).await;
            }
            return Err(e);
        }
        if let Err(e) = self.shown(&entry, commit) {
            tracing::warn!("volume {name}: {e}");
        }
        tracing::info!("volume {name}: mounted at {entry} for {id}");
        Ok(self.mount_dir.join(&entry))
    }

    /// Undoes one mount of volume `name` by caller `id`; the last one releases it.
    pub async fn unmount(&mut self, name: &str, id: &str) -> Result<(), DriverError> {
        self.definition(name)?;
        let not_mounted = || DriverError::NotMountedBy {
            name: name.to_string(),
            id: id.to_string(),
        };
        let mut volumes = self.volumes.clone();
        let m = volumes.mounted.get_mut(name).ok_or_else(not_mounted)?;
        let count = m.users.get_mut(id).ok_or_else(not_mounted)?;
        *count -= 1;
        if *count == 0 {
            m.users.remove(id);
        }
        if !m.users.is_empty() {
            return self.commit(volumes);
        }
        let released = volumes.mounted.remove(name).expect("found above");
        self.commit(volumes)?;
        if !self.shared(&released.entry, name) {
            self.hide(&released.entry).await;
        }
        tracing::info!("volume {name}: released {}", released.entry);
        if self.volumes.mounted.is_empty() {
            self.upgrade_server().await;
        }
        Ok(())
    }

    /// The path of volume `name`, if it is mounted.
    pub fn path(&self, name: &str) -> Result<Option<PathBuf>, DriverError> {
        self.definition(name)?;
        Ok(self
            .volumes
            .mounted
            .get(name)
            .map(|m| self.mount_dir.join(&m.entry)))
    }

    /// What volume `name` is and shows.
    pub fn get(&self, name: &str) -> Result<Info, DriverError> {
        let definition = self.definition(name)?;
        let mounted = self.volumes.mounted.get(name);
        let mut status = serde_json::json!({
            "options": definition.to_string(),
            "mounts": mounted.map_or(0, Mounted::count),
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
    fn shown(&mut self, entry: &str, commit: CommitId) -> Result<(), DriverError> {
        let mut volumes = self.volumes.clone();
        let mut changed = false;
        for m in volumes.mounted.values_mut().filter(|m| m.entry == entry) {
            changed |= m.commit != commit;
            m.commit = commit;
        }
        if changed {
            self.commit(volumes)?;
        }
        Ok(())
    }

    /// Every volume.
    pub fn list(&self) -> Vec<Info> {
        self.volumes
            .defined
            .keys()
            .map(|name| self.get(name).expect("listed names exist"))
            .collect()
    }

    /// How many volumes are mounted.
    pub fn mounted(&self) -> usize {
        self.volumes.mounted.len()
    }

    /// Makes sure the mount server runs; one started anew (the last one died) is given
    /// every mounted volume again.
    async fn server_up(&mut self) -> Result<(), DriverError> {
        // A server started again on its kept connection shows every entry it ever did.
        if self.server.ensure().await? || self.server.was_restarted() {
            self.adopt().await;
        }
        Ok(())
    }

    /// Brings the mount server in line with the saved volumes, as a plugin does when it
    /// starts: every mounted volume's entry shown at its commit (a server started anew
    /// shows nothing yet), and no entry that no mounted volume uses (left by a plugin
    /// that died between showing an entry and saving it). A volume that cannot be
    /// shown now stays mounted, with a warning; the next follow round tries again.
    pub async fn adopt(&mut self) {
        let shown: HashMap<String, String> =
            match self.server.call(&Request::Entries, ANSWER_WAIT).await {
                Ok(Answer::Entries { entries }) => entries.into_iter().collect(),
                Ok(other) => {
                    tracing::warn!("the mount server answered {other:?} to a list of its entries");
                    return;
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    return;
                }
            };
        let mut wanted: Vec<(String, String, CommitId)> = self
            .volumes
            .mounted
            .iter()
            .map(|(name, m)| {
                let root = self.volumes.defined[name].root.to_string();
                (m.entry.clone(), root, m.commit)
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup_by(|a, b| a.0 == b.0);
        for (entry, root, commit) in &wanted {
            if shown.get(entry) == Some(&commit.to_string()) {
                continue;
            }
            match self.show(entry, root, commit).await {
                Ok(()) => tracing::info!("{entry}: shown again at {commit}"),
                Err(e) => tracing::warn!("{entry}: cannot be shown again now: {e}"),
            }
        }
        for entry in shown.keys() {
            if !wanted.iter().any(|(e, _, _)| e == entry) {
                self.hide(entry).await;
            }
        }
    }

    /// Replaces a mount server that runs another canopy program than this plugin (the
    /// binary was upgraded) or other options (the plugin was started with others):
    /// with no volume mounted, it is stopped and a new one started; with volumes
    /// mounted, a new one of the same options takes the mount over from it live (the
    /// containers notice nothing). With other options and volumes mounted, it goes on
    /// until none is.
    pub async fn upgrade_server(&mut self) {
        let Ok(running) = self.server.hello().await else {
            return;
        };
        let differences = running.options.differences(&self.server.options);
        if running.program == control::program() && differences.is_empty() {
            return;
        }
        let pid = running.pid;
        let upgraded = if self.volumes.mounted.is_empty() {
            tracing::info!(
                "replacing the mount server (process {pid}), which runs another canopy or other \
                 options"
            );
            match self.server.stop().await {
                Ok(()) => self.server.start().await,
                Err(e) => Err(e),
            }
        } else if !differences.is_empty() {
            tracing::warn!(
                "the mount server (process {pid}) serves with other options than this plugin's \
                 ({}); they apply once no volume is mounted",
                differences.join(", ")
            );
            return;
        } else {
            tracing::info!(
                "handing the mount over from the mount server (process {pid}), which runs another \
                 canopy, to a new one"
            );
            self.server.start().await
        };
        match upgraded {
            // A server that took the mount over shows every entry the old one ever showed.
            Ok(()) => self.adopt().await,
            Err(e) => tracing::warn!("replacing the mount server: {e}"),
        }
    }

    /// Keeps the FUSE connection of a mount server an earlier plugin started, so that
    /// it is started again on it if it dies.
    pub async fn keep_store(&self) {
        self.server.keep_store().await;
    }

    /// Stops the mount server if no volume is mounted; otherwise it keeps serving them
    /// for the containers, and the next plugin finds it.
    pub async fn stop(&self) {
        if self.volumes.mounted.is_empty() {
            if let Err(e) = self.server.stop().await {
                tracing::warn!("{e}");
            }
            return;
        }
        tracing::info!(
            "{} volumes are mounted: the mount server keeps serving them; a plugin started \
             again takes them up",
            self.volumes.mounted.len()
        );
    }

    /// Moves mounted volumes that follow their root to its current commit, and shows
    /// again what a mount server started anew lacks. A root that cannot be refreshed
    /// keeps its version, with a warning.
    pub async fn follow(&mut self) {
        if let Err(e) = self.server_up().await {
            tracing::warn!("following: {e}");
            return;
        }
        let mut roots: Vec<String> = self
            .volumes
            .mounted
            .iter()
            .filter(|(name, _)| self.volumes.defined[*name].pin == Pin::Follow)
            .map(|(_, m)| m.entry.clone())
            .collect();
        roots.sort_unstable();
        roots.dedup();
        for root in roots {
            let refreshed = match self.current(&root).await {
                Ok(commit) => self.show(&root, &root, &commit).await.map(|()| commit),
                Err(e) => Err(e),
            };
            match refreshed {
                Ok(commit) => {
                    if let Err(e) = self.shown(&root, commit) {
                        tracing::warn!("following root {root}: {e}");
                    }
                }
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
