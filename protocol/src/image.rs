//! What a root made from a container image keeps of the image's configuration: the
//! commit extension [`IMAGE_EXTENSION`], whose value is this struct as JSON.
//!
//! The fields are the runtime part of an OCI image config (`config.Env`,
//! `config.Entrypoint`…), named as in the image spec, plus where the image came from
//! (manifest and config digests, platform). `canopy run` reads them to start the
//! image's program; `canopy roots log` shows them. The JSON is written by serde from
//! this struct, so the same facts always give the same bytes (maps are sorted).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The commit extension key holding an [`ImageConfig`].
pub const IMAGE_EXTENSION: &str = "image";

/// The runtime configuration of an image, as recorded in a root's commit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `sha256:…` of the image manifest (for `docker save` archives: of the config,
    /// which is how Docker names an image).
    #[serde(rename = "Manifest")]
    pub manifest: String,
    /// `sha256:…` of the image config blob.
    #[serde(rename = "Config")]
    pub config: String,
    /// `os/architecture[/variant]`, e.g. `linux/amd64`.
    #[serde(rename = "Platform")]
    pub platform: String,
    /// `KEY=VALUE` environment of the image's processes.
    #[serde(rename = "Env", default)]
    pub env: Vec<String>,
    /// The program to run, before any arguments.
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments (to the entrypoint, or the command itself without one).
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    /// The working directory ("" means `/`).
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: String,
    /// `user[:group]`, by name or number ("" means root).
    #[serde(rename = "User", default)]
    pub user: String,
    /// Labels, such as `RUN`, `INSTALL` and `UNINSTALL` command lines.
    #[serde(rename = "Labels", default)]
    pub labels: BTreeMap<String, String>,
    /// Ports the image says it listens on, e.g. `80/tcp`, sorted.
    #[serde(rename = "ExposedPorts", default)]
    pub exposed_ports: Vec<String>,
}

impl ImageConfig {
    /// The extension value: JSON, one form for one set of facts.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ImageConfig always serialises")
    }

    /// Reads an extension value.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The image's command line: the entrypoint followed by the command, or `args`
    /// instead of the command when any are given (as `docker run IMAGE ARGS…` does).
    pub fn command(&self, args: &[String]) -> Vec<String> {
        let mut out = self.entrypoint.clone().unwrap_or_default();
        if args.is_empty() {
            out.extend(self.cmd.clone().unwrap_or_default());
        } else {
            out.extend(args.iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_command() {
        let c = ImageConfig {
            manifest: "sha256:aa".into(),
            config: "sha256:bb".into(),
            platform: "linux/amd64".into(),
            env: vec!["PATH=/usr/bin".into()],
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["echo hi".into()]),
            labels: [("RUN".to_string(), "x".to_string())].into(),
            ..Default::default()
        };
        let bytes = c.to_json();
        assert_eq!(ImageConfig::from_json(&bytes).unwrap(), c);
        assert_eq!(c.to_json(), bytes, "same facts, same bytes");
        assert_eq!(c.command(&[]), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.command(&["ls".into()]), ["/bin/sh", "-c", "ls"]);
        let bare = ImageConfig::default();
        assert!(bare.command(&[]).is_empty());
    }
}
