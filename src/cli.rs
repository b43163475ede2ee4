//! Command-line syntax: what each command takes, with its help text.

mod build;
mod host;
mod profile;
#[cfg(test)]
mod readme_check;
mod store;

pub use build::*;
pub use host::*;
pub use profile::*;
pub use store::*;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// canopy: one content-addressed store of software, roots assembled from it without copying.
#[derive(Parser)]
#[command(name = "canopy", version)]
#[command(
    after_help = "On the server: `canopy init`, `canopy repo add debian URL --suite bookworm --keyring FILE`, `canopy assemble NAME --from debian PKG...`, `canopy serve`.\nOn a host: `canopy mount http://SERVER:7750 /run/canopy --trust server.pub` (the key from `canopy key show`)."
)]
pub struct Cli {
    /// The store directory [default: $XDG_DATA_HOME/canopy or ~/.local/share/canopy]
    #[arg(long, global = true, env = "CANOPY_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The command
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand)]
pub enum Command {
    /// Create the store and its signing key (does nothing if it exists), or attach this
    /// machine to a store in an S3 bucket
    #[command(after_help = INIT_HELP)]
    Init(InitArgs),
    /// Import packages (.deb, .rpm), tarballs, directories or container images into the
    /// store
    #[command(
        subcommand,
        after_help = "Examples:\n  apt-get download bash coreutils libc6 && canopy import deb *.deb\n  canopy import rpm *.rpm\n  canopy import tar rootfs.tar.zst --name base --version 2026.11\n  canopy import dir ./build/root --name mytools --json\n  canopy import oci ./layout --name app --ref app\n  docker save app:1 | canopy import docker-archive - --name app"
    )]
    Import(ImportCommand),
    /// List imported packages, or remove the ones no root uses
    #[command(
        subcommand,
        after_help = "Examples:\n  canopy packages list\n  canopy packages list --json\n  canopy packages remove libfoo=1.2-1\n  canopy packages remove --unused --dry-run"
    )]
    Packages(PackagesCommand),
    /// Build (a new version of) a root from imported packages, or from a repository
    /// with dependencies resolved
    #[command(
        after_help = "Examples:\n  canopy assemble web --from debian nginx-light bash\n  canopy assemble base --from debian --essential bash\n  canopy assemble web bash coreutils libc6 libtinfo6      (imported packages, exactly these)\n  canopy assemble usr-only bash coreutils libc6 --subtree usr\n  canopy assemble web bash=5.2.15-2+b7 mytools --allow-overwrite -m \"web with tools\"\n  canopy assemble raw --from debian bash --no-configure      (unpacked only)\n\nRoots that hold dpkg and /bin/sh are configured: the packages' scripts run once, in a\nsandbox (user namespace with shifted ids, no network), and what they make (users,\nalternatives, dpkg's database, ld.so.cache…) is part of the root. Host identity\n(machine-id, host keys, logs) is left out; -v shows the scripts' output. Not root?\nConfiguring needs a subordinate id range in /etc/subuid and /etc/subgid (the error\nsays which line to add)."
    )]
    Assemble(AssembleArgs),
    /// Assemble a root again as it was made, with the newest packages
    #[command(
        after_help = "Re-resolves the root's request (its packages, --from repositories and flags, as its\ncurrent commit records them); downloads only archives the store lacks; writes no\ncommit when nothing changed.\n\nExit status: 0 done or up to date; with --dry-run, 10 when changes are pending.\n\nExamples:\n  canopy upgrade web\n  canopy upgrade web --dry-run && echo up to date"
    )]
    Upgrade(UpgradeArgs),
    /// Configure the repositories (Debian or rpm-md) roots are resolved from
    #[command(
        subcommand,
        after_help = "Examples:\n  canopy repo add debian http://deb.debian.org/debian --suite bookworm,bookworm-updates \\\n      --keyring /usr/share/keyrings/debian-archive-keyring.gpg\n  canopy repo list\n  canopy repo update\n  canopy repo remove debian"
    )]
    Repo(RepoCommand),
    /// List roots, show one, their history and reflog, compare versions, roll back, remove
    #[command(
        subcommand,
        after_help = "Examples:\n  canopy roots list\n  canopy roots show web\n  canopy roots log web --json\n  canopy roots diff web\n  canopy roots rollback web\n  canopy roots reflog web\n  canopy roots remove old-web\n  canopy roots list --removed"
    )]
    Roots(RootsCommand),
    /// List a directory (or show one entry) of a root, without mounting it
    #[command(
        after_help = "PATH is looked up inside the root: symlinks resolve within it, as in a chroot.\n\nExamples:\n  canopy ls web /usr/bin\n  canopy ls web /usr/bin --long\n  canopy ls web@3f2a /etc --json"
    )]
    Ls(LsArgs),
    /// Print a file of a root, without mounting it
    #[command(
        after_help = "Symlinks resolve within the root (/etc/os-release → /usr/lib/os-release).\n\nExamples:\n  canopy cat web /etc/os-release\n  canopy cat web@3f2a /etc/debian_version"
    )]
    Cat(CatArgs),
    /// Say which package put a path into a root, or that configuring made it
    #[command(
        after_help = "Exit status 0 when the path comes from a package or from configuration, 1 when\nthe root does not have it or no package accounts for it.\n\nExamples:\n  canopy owner web /bin/bash\n  canopy owner web /usr/bin/awk --json"
    )]
    Owner(OwnerArgs),
    /// Write a root out as a plain directory tree
    #[command(
        after_help = "Examples:\n  canopy checkout web /srv/web\n  canopy checkout web /srv/web --hardlink\n  canopy checkout web@3f2a9c /srv/web-old"
    )]
    Checkout(CheckoutArgs),
    /// Verify every object and every ref's closure
    #[command(
        after_help = "Exit status 0 when the store is sound, 1 when problems were found (with --repair:\nwhen some remain).\n\nWith --repair, each damaged object is restored by importing again the archive it came\nfrom: found by its SHA-256 in the download cache, in --archives directories, or in a\nconfigured repository (downloaded and checked against the index). What no archive\nholds is reported with the roots and packages that depend on it.\n\nExamples:\n  canopy fsck --json\n  canopy fsck --repair\n  canopy fsck --repair --archives /var/cache/apt/archives"
    )]
    Fsck(FsckArgs),
    /// Delete objects that no root, package or recent reflog entry references
    #[command(
        after_help = "Roots keep their whole history; imported packages keep their files; the reflog keeps\nthe versions of removed roots and commits rolled away from for --prune-reflog (30 days).\nThe report says how much each keeps.\n\nExamples:\n  canopy gc --dry-run\n  canopy roots remove old-web && canopy gc --prune-reflog now\n  canopy gc --json"
    )]
    Gc(GcArgs),
    /// The store's signing key
    #[command(
        subcommand,
        after_help = "Example:\n  canopy key show > server.pub      (hosts mount with --trust server.pub)"
    )]
    Key(KeyCommand),
    /// Serve the store's roots and objects over HTTP, and roots over NFSv3
    #[command(
        after_help = "Examples:\n  canopy serve --listen 0.0.0.0:7750\n  canopy serve --listen 0.0.0.0:7750 --nfs 0.0.0.0:2049\n  canopy serve --nfs 0.0.0.0:2049 --no-portmap   # no portmapper on port 111\n  canopy serve --listen 0.0.0.0:7750 --cache-dir /var/cache/canopy-serve --cache-size 50G   # store in a bucket\n  canopy key show > server.pub   # give this to the hosts that mount\n\nNFS clients (the portmapper tells them the ports; with --no-portmap add port=2049,mountport=2049):\n  mount -t nfs -o ro,vers=3,proto=tcp,nolock server:/web /mnt/web"
    )]
    Serve(ServeArgs),
    /// Copy roots from another canopy server into this store, verified, to serve them
    /// (a mirror: hosts keep trusting the upstream's key)
    #[command(
        after_help = "Examples:\n  canopy init && canopy replicate http://upstream:7750 --trust upstream.pub\n  canopy replicate http://upstream:7750 --trust upstream.pub --root web --root db --history\n  canopy replicate http://upstream:7750 --trust upstream.pub --follow --interval 30s\n  canopy serve --listen 0.0.0.0:7750      # hosts mount it with --trust upstream.pub\n\nEvery commit is checked against the trusted key (signature, root name, history only\ngrowing) and every object against its id; a root with anything that does not verify\nis not published, the others are. Without --history only current commits are copied\n(older history stays upstream: `roots log` on the replica stops there). Contents are\nwritten in batches before the roots move, so a run that is killed resumes where it\nstopped. The store must be new or a replica of the same key: it then prints the\nupstream's key (`canopy key show`) and signs nothing itself. Exits 1 if a root was\nrefused or failed; with --follow it goes on until SIGINT/SIGTERM."
    )]
    Replicate(ReplicateArgs),
    /// Write what diskless nodes boot a root with: its kernel and initramfs, and
    /// pxelinux and iPXE configurations that mount it over NFS
    #[command(after_help = NETBOOT_HELP)]
    Netboot(NetbootArgs),
    /// Mount roots from a canopy server (FUSE, read-only), in the foreground
    #[command(
        after_help = "Examples:\n  canopy mount http://server:7750 /run/canopy --trust server.pub\n  canopy mount http://server:7750 /mnt/web --root web --follow --trust server.pub\n  canopy mount http://cache1:80 /run/canopy --server http://server:7750 --trust server.pub --cache-size 20G\n\nStops on SIGINT/SIGTERM (unmounting) or when unmounted."
    )]
    Mount(MountArgs),
    /// Run a command in a root: in its own namespaces, unprivileged, with per-host state
    #[command(
        after_help = "ROOT is a root of the local store, a root on --server, or a directory holding a root\n(any path with a /, e.g. ./web or /run/canopy/web).\n\nExamples:\n  canopy run web -- /bin/bash -c 'echo hi; id -u'\n  canopy run web --state /var/lib/canopy/state/web -- nginx -g 'daemon off;'\n  canopy run web --state /var/lib/canopy/state/web --diff\n  canopy run --server http://server:7750 --trust server.pub web -- python3 -V\n  canopy run /run/canopy/web -- true\n  canopy run app                          (an image root: its Entrypoint/Cmd, Env, WorkingDir, User)\n  canopy run app --label install          (its INSTALL label, IMAGE and NAME substituted)\n  canopy run tools --spc -- /bin/sh -c 'ls /host; echo $HOST'   (root only)\n\nThe exit status is the command's; canopy's own failures exit 125 (127: command not\nfound in the root, 126: not executable)."
    )]
    Run(RunArgs),
    /// Record, show or drop a root's access profile: the files a program reads as it
    /// starts, which hosts fetch first when they mount the root cold
    #[command(
        subcommand,
        after_help = "Examples:\n  canopy profile record web -- /usr/bin/python3 -c 'import json, ssl'\n  canopy profile show web\n  canopy profile drop web"
    )]
    Profile(ProfileCommand),
    /// Serve Docker's volume plugin protocol: canopy roots as read-only volumes
    #[command(
        after_help = "Examples:\n  canopy volume-plugin --server http://server:7750 --trust server.pub\n  docker volume create -d canopy -o root=web web\n  docker volume create -d canopy -o root=web -o commit=3f2a…(64 hex) web-pinned\n  docker volume create -d canopy -o root=web -o follow=true web-latest\n  docker run --rm -v web:/opt/web:ro IMAGE /opt/web/bin/...\n  docker run --rm -v usr:/usr:ro --volume-driver canopy IMAGE ...\n\nVolume options: root=NAME (default: the volume's name), commit=ID (pin), follow=true.\nThe FUSE mount is served by a mount server process that the plugin starts and that\noutlives it: restart or upgrade the plugin while containers use its volumes, they keep\nreading, and the mounts and Docker's mount IDs are kept in the state file.\nStops on SIGINT/SIGTERM (removing the socket; unmounting if no volume is mounted)."
    )]
    VolumePlugin(VolumePluginArgs),
    /// Runs inside the sandbox of a configure (started by canopy itself)
    #[command(name = "__configure-worker", hide = true)]
    ConfigureWorker,
}

/// `--json` on listings.
#[derive(Args)]
pub struct JsonFlag {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Name and version of a tar or directory package.
#[derive(Args)]
pub struct Named {
    /// Package name, used by `assemble`
    #[arg(long)]
    pub name: String,
    /// Package version (the highest version of a name is assembled unless pinned)
    #[arg(long, default_value = "0")]
    pub version: String,
}

/// `--force` of the package imports.
#[derive(Args)]
pub struct Force {
    /// Read the archive again even if it was imported already, checking every object
    /// it holds and replacing the damaged ones (see also `canopy fsck --repair`)
    #[arg(long)]
    pub force: bool,
}

/// Bound on unpacked size.
#[derive(Args)]
pub struct MaxSize {
    /// Refuse an archive that unpacks to more than this (K, M, G, T suffixes)
    #[arg(long, value_name = "SIZE", default_value = "16G", value_parser = parse_size)]
    pub max_size: u64,
}

/// Parses `now` (zero) or a duration such as `30d`, `12h`, `1week`.
fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    if s == "now" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not an age like 30d or now: {e}"))
}

/// Parses `123`, `64K`, `8M`, `16G`, `1T` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&s[..s.len() - 1], 10),
        Some(b'M') => (&s[..s.len() - 1], 20),
        Some(b'G') => (&s[..s.len() - 1], 30),
        Some(b'T') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("{s:?} is not a size like 512M or 16G"))
}

/// Parses a canopy server's URL (`http://server:7750`): http or https only, and
/// `server:7750` without a scheme gets the fix named rather than being taken for a URL
/// of scheme `server`.
fn parse_server_url(s: &str) -> Result<url::Url, String> {
    match url::Url::parse(s) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(url),
        Ok(url) if s.contains("://") && !matches!(url.scheme(), "http" | "https") => Err(format!(
            "{s:?}: canopy servers speak http or https, not {}",
            url.scheme()
        )),
        // A path where the URL goes: `canopy mount --server A MOUNTPOINT` left the
        // first positional argument, the server's, to the mountpoint.
        _ if s.starts_with(['/', '.']) || std::path::Path::new(s).is_dir() => Err(format!(
            "{s:?} is a path, not a server URL (http://HOST:PORT): the server comes first, \
             as in canopy mount http://server:7750 MOUNTPOINT"
        )),
        _ => Err(format!(
            "{s:?} is not a server URL: give it as http://HOST:PORT, e.g. http://{}",
            s.trim_start_matches("http:").trim_start_matches('/')
        )),
    }
}

/// Parses a repository's URL: http, https or file; a path gets the `file://` form named.
fn parse_repo_url(s: &str) -> Result<url::Url, String> {
    match url::Url::parse(s) {
        Ok(url) if matches!(url.scheme(), "http" | "https" | "file") => Ok(url),
        _ if s.starts_with('/') => Err(format!(
            "{s:?} is not a URL: a repository in a directory is given as file://{s}"
        )),
        _ if s.starts_with('.') => Err(format!(
            "{s:?} is not a URL: a repository in a directory is given as file:///ABSOLUTE/PATH"
        )),
        _ => Err(format!(
            "{s:?} is not a repository URL: use http://, https:// or file:// (e.g. http://deb.debian.org/debian)"
        )),
    }
}

/// Parses an address to listen on: `ADDR:PORT`, `[IPV6]:PORT`, or `HOST:PORT` with a
/// host name that resolves (`localhost:7750`).
fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    let usage = "give an address and a port: 127.0.0.1:7750 (this machine only), \
                 0.0.0.0:7750 (every interface) or [::1]:7750";
    if !s.contains(':') || s.ends_with(':') || s.starts_with(':') {
        return Err(format!("{s:?} is not ADDR:PORT: {usage}"));
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{s:?} resolves to no address: {usage}")),
        Err(e) => Err(format!("{s:?} is not ADDR:PORT ({e}): {usage}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8M"), Ok(8 << 20));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn server_urls() {
        assert!(parse_server_url("http://server:7750").is_ok());
        assert!(parse_server_url("https://server").is_ok());
        for bad in ["server:7750", "127.0.0.1:7750", "localhost"] {
            let e = parse_server_url(bad).unwrap_err();
            assert!(e.contains("http://HOST:PORT"), "{bad}: {e}");
        }
        let e = parse_server_url("ftp://server").unwrap_err();
        assert!(e.contains("not ftp"), "{e}");
        let e = parse_server_url("/run/canopy").unwrap_err();
        assert!(e.contains("the server comes first"), "{e}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:7750"),
            Ok("127.0.0.1:7750".parse().unwrap())
        );
        assert_eq!(parse_listen("[::1]:0"), Ok("[::1]:0".parse().unwrap()));
        assert!(parse_listen("localhost:7750").unwrap().ip().is_loopback());
        for bad in ["7750", ":7750", "localhost:", "no such host.invalid:1"] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains("0.0.0.0:7750"), "{bad}: {e}");
        }
    }
}
