//! `canopy profile`: access profiles of roots.

use super::JsonFlag;
use clap::{Args, Subcommand};

/// What `canopy profile` does.
#[derive(Subcommand)]
pub enum ProfileCommand {
    /// Run a command in a root and record the files it reads, in order, as the root's
    /// access profile (a new signed commit of the same tree)
    #[command(after_help = RECORD_HELP)]
    Record(ProfileRecordArgs),
    /// Show the access profile of a root's commit
    #[command(
        after_help = "Examples:\n  canopy profile show web\n  canopy profile show web@3f2a --json      (with every path, in order)"
    )]
    Show {
        /// The root, or ROOT@COMMIT for a commit of its history (id or unique prefix)
        #[arg(value_name = "ROOT[@COMMIT]")]
        root: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a root's access profile (a new signed commit of the same tree)
    #[command(after_help = "Example:\n  canopy profile drop web")]
    Drop {
        /// The root
        root: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

const RECORD_HELP: &str =
    "The command runs as `canopy run ROOT -- COMMAND` runs it (its own namespaces, the root
through canopy's FUSE view, a temporary state), and every regular file it reads is
noted in the order of its first read. The profile goes into a new commit of the root
with the same tree, signed by the store's key: hosts that follow the root move to it
without fetching anything but the commit, and hosts that mount it with a cold cache
fetch those files first, many per request, before the program asks for them. Later
versions of the root (canopy upgrade, canopy assemble) keep the profile: it names
paths, which then name the new version's files. Record again to replace it.
Nothing is written when the command could not run (exit status 125, 126 or 127) or
when the root moved to another commit while it ran (record again on the new one).

Examples:
  canopy profile record web -- /usr/bin/python3 -c 'import json, ssl'
  canopy profile record web --dry-run --json -- /bin/bash -c true   (print, write nothing)
  canopy mount http://server:7750 /run/canopy --trust server.pub   (replays it)
  canopy mount http://server:7750 /run/canopy --trust server.pub --no-profile";

/// What `canopy profile record` takes.
#[derive(Args)]
pub struct ProfileRecordArgs {
    /// The root (of the local store)
    pub root: String,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Print the profile, write no commit
    #[arg(long)]
    pub dry_run: bool,
    /// Set an environment variable for the command: KEY=VALUE (repeatable)
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside [default: /]
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}
