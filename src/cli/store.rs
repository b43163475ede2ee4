//! What the commands that inspect and keep a store take.

use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::{JsonFlag, parse_age};

/// What `roots list` takes.
#[derive(Args)]
pub struct RootsListArgs {
    /// List the removed roots instead: each with the commit it had and when it went
    #[arg(long)]
    pub removed: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `roots` takes.
#[derive(Subcommand)]
pub enum RootsCommand {
    /// List roots with their current commit (or, with --removed, the removed ones)
    #[command(
        after_help = "Examples:\n  canopy roots list --json\n  canopy roots list --removed      (removed roots the reflog still has: `canopy roots rollback NAME` brings one back)"
    )]
    List(RootsListArgs),
    /// Show one commit of a root: ids, signer, request, packages, size
    #[command(
        after_help = "Examples:\n  canopy roots show web\n  canopy roots show web@3f2a --json     (\"commit\" and \"tree\" are 64 hex digits)"
    )]
    Show {
        #[arg(help = ROOT_AT, value_name = "ROOT[@COMMIT]")]
        root: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show a root's history, newest first
    #[command(after_help = "Example:\n  canopy roots log web")]
    Log {
        /// The root
        root: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Make a root show an earlier (or later) version again, as a new signed commit
    #[command(
        after_help = "The new commit has the chosen commit's tree and packages and the current commit as\nits parent: history only grows, so a rollback can itself be rolled back, and hosts\nthat follow the root take it like any new version.\n\nExamples:\n  canopy roots rollback web            (the version before the current one; repeat to go further)\n  canopy roots rollback web 3f2a9c     (any commit of the history, by id or unique prefix)"
    )]
    Rollback {
        /// The root
        root: String,
        /// The commit whose content to restore (full id or unique prefix) [default: the
        /// version before the current one]
        commit: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show every move of a root's ref: assemble, upgrade, rollback, remove
    #[command(
        after_help = "Newest first, with time, user, operation and the commits before and after. A move\ncut short by a crash is shown as interrupted. A removed root keeps its reflog, so\n`canopy roots rollback ROOT COMMIT` can bring any version back.\n\nExamples:\n  canopy roots reflog web\n  canopy roots reflog old-web --json"
    )]
    Reflog {
        /// The root (existing or removed)
        root: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a root: its ref goes, its objects at a gc after the reflog's grace period
    #[command(
        after_help = "The root's reflog keeps its versions for gc's --prune-reflog period (30 days): until\nthen `canopy roots rollback ROOT` brings it back. A root assembled later under the\nsame name starts a history of its own: hosts that followed the removed one refuse it\n(it does not descend from what they show) until they mount again; to go on from the\nremoved one instead, `canopy roots rollback ROOT` first, then assemble or upgrade.\n\nExamples:\n  canopy roots remove old-web --dry-run\n  canopy roots remove old-web && canopy gc --prune-reflog now"
    )]
    Remove {
        /// The root
        root: String,
        /// Say what it would free, remove nothing
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show the packages and paths that differ between two commits of a root
    #[command(
        after_help = "Without commits: the current commit against its parent; with one: that commit\nagainst the current one. Paths are marked A (added), D (deleted), M (modified).\n\nExamples:\n  canopy roots diff web\n  canopy roots diff web 3f2a9c 8e1d07 --packages"
    )]
    Diff {
        /// The root
        root: String,
        /// The older commit (id or unique prefix)
        old: Option<String>,
        /// The newer commit (id or unique prefix)
        new: Option<String>,
        /// Only the packages, not the paths
        #[arg(long)]
        packages: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

pub(super) const INIT_HELP: &str = "\
Examples:
  canopy init
  CANOPY_STORE=/srv/canopy canopy init
  export AWS_ENDPOINT_URL=http://s3.internal:8333 AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=…
  canopy init --backend s3://canopy/site1                 (objects and refs in the bucket)
  canopy init --backend s3://canopy/site1 --key site1.key (another writer, same key)
  canopy init --json

With --backend, objects and refs live in the bucket; the store directory keeps this
machine's local state: the config (bucket, AWS_ENDPOINT_URL, AWS_REGION), the signing
key, repository settings, caches and in-flight writes. Credentials come from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN) or from
~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE; mode 0600) at every run,
and are never written down. On a bucket that holds a store already, init attaches to
it: give the store's key (keys/ed25519.secret of a writer) with --key to write, or none
to serve only. The bucket must exist.";

/// What `init` takes.
#[derive(Args)]
pub struct InitArgs {
    /// Keep objects and refs in an S3 bucket (s3://BUCKET[/PREFIX]) instead of the store
    /// directory
    #[arg(long, value_name = "URL")]
    pub backend: Option<String>,
    /// Sign with this key (a hex ed25519 seed, as keys/ed25519.secret holds) instead of a
    /// new one: how several writers of one bucket share the store's key
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    #[command(flatten)]
    pub json: JsonFlag,
}

pub(super) const NETBOOT_HELP: &str = "\
The kernel and initramfs come from the root itself (the newest /boot/vmlinuz-VERSION
with its /boot/initrd.img-VERSION, as the root's kernel package and initramfs-tools made
them). canopy.cpio adds canopy's boot script: the root is mounted read-only over NFS
from /ROOT@COMMIT (the commit the kernel came from), a writable layer in memory goes
over it, and each boot makes its own machine id and host keys. Serve the root with
`canopy serve --nfs` as root (the portmapper on port 111 is needed by the initramfs).

Writes into DIR: vmlinuz, initrd.img, canopy.cpio, pxelinux.cfg/default and boot.ipxe,
each atomically. Run it again after `canopy upgrade ROOT`: nodes get the new version at
their next boot, running nodes stay on theirs.

Examples:
  canopy netboot node /srv/tftp --server 192.168.1.10
  canopy netboot node@3f2a9c /srv/tftp/old --server nfs.example.org --json
  canopy netboot node /srv/tftp --server 10.0.0.1 --args 'console=ttyS0,115200'
  iPXE, no files: chain http://SERVER:7750/v1/roots/node/boot.ipxe
        (?nfs=HOST names the NFS server, ?args=console%3DttyS0 adds arguments)";

/// What `netboot` takes.
#[derive(Args)]
pub struct NetbootArgs {
    #[arg(help = ROOT_AT, value_name = "ROOT[@COMMIT]")]
    pub root: String,
    /// Where to write the files (created if missing), e.g. the TFTP server's directory
    pub dir: PathBuf,
    /// The NFS server as nodes reach it: a host name or address, with :PORT when NFS is
    /// not on 2049 [default: this machine's host name]
    #[arg(long, value_name = "HOST[:PORT]")]
    pub server: Option<String>,
    /// More kernel arguments, put before canopy's (e.g. "console=ttyS0,115200 quiet")
    #[arg(long, value_name = "ARGS")]
    pub args: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `checkout` takes.
#[derive(Args)]
pub struct CheckoutArgs {
    #[arg(help = ROOT_AT, value_name = "ROOT[@COMMIT]")]
    pub root: String,
    /// Where to write it (must not exist, or be an empty directory; missing parent
    /// directories are created)
    pub dir: PathBuf,
    /// A commit of the root's history instead of its current one (id or unique prefix;
    /// the same as ROOT@COMMIT)
    #[arg(long)]
    pub commit: Option<String>,
    /// Hard-link files to the store instead of copying, where owner and mode allow
    /// (never modify such files in place: that would change the store)
    #[arg(long)]
    pub hardlink: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `ROOT` or `ROOT@COMMIT`, as every inspection command takes it.
const ROOT_AT: &str =
    "The root, or ROOT@COMMIT for one commit of its history (full id or unique prefix)";

/// What `ls` takes.
#[derive(Args)]
pub struct LsArgs {
    #[arg(help = ROOT_AT, value_name = "ROOT[@COMMIT]")]
    pub root: String,
    /// The path inside the root
    #[arg(default_value = "/")]
    pub path: PathBuf,
    /// Mode, owner, size and link target of each entry
    #[arg(short, long)]
    pub long: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `cat` takes.
#[derive(Args)]
pub struct CatArgs {
    #[arg(help = ROOT_AT, value_name = "ROOT[@COMMIT]")]
    pub root: String,
    /// The file inside the root
    pub path: PathBuf,
}

/// What `owner` takes.
#[derive(Args)]
pub struct OwnerArgs {
    #[arg(help = ROOT_AT, value_name = "ROOT[@COMMIT]")]
    pub root: String,
    /// The path inside the root (a symlink is looked at itself, not followed)
    pub path: PathBuf,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `fsck` takes.
#[derive(Args)]
pub struct FsckArgs {
    /// Restore damaged objects from the archives they came from
    #[arg(long)]
    pub repair: bool,
    /// With --repair: also look for archives in this directory (repeatable)
    #[arg(long = "archives", value_name = "DIR", requires = "repair")]
    pub archives: Vec<PathBuf>,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `gc` takes.
#[derive(Args)]
pub struct GcArgs {
    /// Only count what would be removed
    #[arg(long)]
    pub dry_run: bool,
    /// Keep what reflog entries younger than this name (versions of removed roots,
    /// commits rolled away from); `now` keeps nothing for the reflog
    #[arg(long, default_value = "30d", value_parser = parse_age, value_name = "AGE")]
    pub prune_reflog: std::time::Duration,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `key` takes.
#[derive(Subcommand)]
pub enum KeyCommand {
    /// Print the public key that signs this store's commits (hex), for clients' --trust
    #[command(after_help = "Example:\n  canopy key show > server.pub")]
    Show,
}
