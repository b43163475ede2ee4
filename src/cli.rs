//! Command-line syntax: what each command takes, with its help text.

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
    /// Import packages (.deb, .rpm), tarballs or directories into the store
    #[command(
        subcommand,
        after_help = "Examples:\n  apt-get download bash coreutils libc6 && canopy import deb *.deb\n  canopy import rpm *.rpm\n  canopy import tar rootfs.tar.zst --name base --version 2026.11\n  canopy import dir ./build/root --name mytools --json"
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
    /// Serve Docker's volume plugin protocol: canopy roots as read-only volumes
    #[command(
        after_help = "Examples:\n  canopy volume-plugin --server http://server:7750 --trust server.pub\n  docker volume create -d canopy -o root=web web\n  docker volume create -d canopy -o root=web -o commit=3f2a…(64 hex) web-pinned\n  docker volume create -d canopy -o root=web -o follow=true web-latest\n  docker run --rm -v web:/opt/web:ro IMAGE /opt/web/bin/...\n  docker run --rm -v usr:/usr:ro --volume-driver canopy IMAGE ...\n\nVolume options: root=NAME (default: the volume's name), commit=ID (pin), follow=true.\nStops on SIGINT/SIGTERM (removing the socket, unmounting)."
    )]
    VolumePlugin(VolumePluginArgs),
    /// Runs inside the sandbox of a configure (started by canopy itself)
    #[command(name = "__configure-worker", hide = true)]
    ConfigureWorker,
}

/// What `mount` takes.
#[derive(Args)]
pub struct MountArgs {
    /// The server (or an HTTP cache in front of it)
    pub url: url::Url,
    /// Where to mount (an existing directory)
    pub mountpoint: PathBuf,
    /// More servers or caches, tried in order when the ones before fail
    #[arg(long = "server", value_name = "URL")]
    pub servers: Vec<url::Url>,
    #[command(flatten)]
    pub host: HostArgs,
    /// Mount this root at the mountpoint instead of every root under it; ROOT@COMMIT
    /// pins one commit (full id or unique prefix)
    #[arg(long, value_name = "ROOT[@COMMIT]")]
    pub root: Option<String>,
    /// With --root: show this commit instead of the current one (full id or unique
    /// prefix, as ROOT@COMMIT)
    #[arg(long, requires = "root")]
    pub commit: Option<String>,
    /// Switch to new versions of roots (and show new roots) as the server gets them
    #[arg(long, conflicts_with = "commit")]
    pub follow: bool,
    /// Mount even if the mountpoint has files in it (they are hidden while mounted)
    #[arg(long)]
    pub nonempty: bool,
    /// How often --follow asks the server
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub interval: std::time::Duration,
    /// The object cache, shared by every root of this mount; one process at a time uses
    /// it [default: /var/cache/canopy as root, else ~/.cache/canopy]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// What `mount` and `volume-plugin` both take: whom to trust, how to cache and fetch.
#[derive(Args)]
pub struct HostArgs {
    /// File with the server's public key (`canopy key show` prints it); commits not
    /// signed by it are refused
    #[arg(long, value_name = "FILE")]
    pub trust: PathBuf,
    /// Bound on the cache (K, M, G, T suffixes)
    #[arg(long, default_value = "20G", value_parser = parse_size, value_name = "SIZE")]
    pub cache_size: u64,
    /// Never use FUSE passthrough, even where the kernel allows it
    #[arg(long)]
    pub no_passthrough: bool,
    /// Give up on a server that does not connect, answer or send data within this long
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
    /// Give up on a transfer that averages less than this many bytes per second once
    /// --timeout has passed (K, M, G suffixes): a fetch of SIZE bytes from one server
    /// takes at most --timeout + SIZE / --min-rate
    #[arg(long, default_value = "64K", value_parser = parse_size, value_name = "BYTES")]
    pub min_rate: u64,
}

/// What `run` takes.
#[derive(Args)]
pub struct RunArgs {
    /// A root name (local store, or --server), or a directory (a path with a `/`)
    pub root: String,
    /// The command and its arguments (for an image root: arguments to its entrypoint)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    /// Run the root from this server (or HTTP cache), through the host's cache; repeat
    /// to fail over
    #[arg(long = "server", value_name = "URL")]
    pub servers: Vec<url::Url>,
    /// With --server: file with the server's public key (`canopy key show`)
    #[arg(long, value_name = "FILE", requires = "servers")]
    pub trust: Option<PathBuf>,
    /// With --server: the object cache [default: /var/cache/canopy as root, else
    /// ~/.cache/canopy]
    #[arg(long, value_name = "DIR", requires = "servers")]
    pub cache_dir: Option<PathBuf>,
    /// With --server: bound on the cache (K, M, G, T suffixes)
    #[arg(long, default_value = "20G", value_parser = parse_size, value_name = "SIZE")]
    pub cache_size: u64,
    /// With --server: give up on a server that does not answer within this long
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
    /// Run this commit of the root (full id or unique prefix) instead of its current one
    #[arg(long)]
    pub commit: Option<String>,
    /// Keep /etc and /var changes in DIR across runs and upgrades (created if missing)
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// With --state: list what the host changed against the root, and run nothing
    #[arg(long, requires = "state")]
    pub diff: bool,
    /// Super-privileged (root only): the host's network, IPC and PID namespaces, its /
    /// at /host, its /run, /dev and /etc/localtime; HOST, NAME and IMAGE set
    #[arg(long)]
    pub spc: bool,
    /// Run as USER[:GROUP] (names or numbers of the root's /etc/passwd and /etc/group)
    /// [default: the image's User, else root]
    #[arg(long, short = 'u', value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// `host` (default) or `none` (loopback only)
    #[arg(long, default_value = "host", value_parser = ["host", "none"])]
    pub network: String,
    /// Bind a host path into the run: SRC:DST, or SRC:DST:ro (repeatable)
    #[arg(long, value_name = "SRC:DST[:ro]")]
    pub bind: Vec<String>,
    /// Set an environment variable: KEY=VALUE, or KEY to pass the caller's (repeatable)
    #[arg(long, short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside [default: the image's WorkingDir, else /]
    #[arg(long, short = 'w', value_name = "DIR")]
    pub workdir: Option<String>,
    /// Hostname inside [default: the run's name]
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// The run's name: NAME in labels and the environment [default: the root's name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Run the image's RUN, INSTALL or UNINSTALL label instead of a command
    #[arg(long, value_parser = ["run", "install", "uninstall"], conflicts_with = "command")]
    pub label: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `volume-plugin` takes.
#[derive(Args)]
pub struct VolumePluginArgs {
    /// The server (or an HTTP cache in front of it); repeat to fail over to others
    #[arg(long = "server", value_name = "URL", required = true)]
    pub servers: Vec<url::Url>,
    #[command(flatten)]
    pub host: HostArgs,
    /// The unix socket Docker talks to (a name under /run/docker/plugins/ is found by
    /// Docker as that driver name)
    #[arg(
        long,
        default_value = "/run/docker/plugins/canopy.sock",
        value_name = "PATH"
    )]
    pub socket: PathBuf,
    /// Where volume definitions are kept across restarts
    #[arg(long, default_value = "/var/lib/canopy/volumes", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Where the plugin's one FUSE mount lives (created if missing); volumes are paths in it
    #[arg(long, default_value = "/run/canopy-volumes", value_name = "DIR")]
    pub mount_dir: PathBuf,
    /// How often volumes with follow=true ask the server for new versions
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub interval: std::time::Duration,
    /// The plugin's object cache, shared by every volume; one process at a time uses it
    /// [default: /var/cache/canopy-volumes as root, else ~/.cache/canopy-volumes]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Serve the plugin's FUSE mount as its mount server (the plugin starts it so)
    #[arg(long, hide = true)]
    pub mount_server: bool,
}

/// What `serve` takes.
#[derive(Args)]
pub struct ServeArgs {
    /// HTTP: address and port to listen on (port 0 picks a free one, printed at start)
    /// [default: 127.0.0.1:7750, unless only --nfs is given]
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Also export every root read-only over NFSv3 (MOUNT on the same port) as /NAME
    /// and /NAME@COMMIT; with --nfs alone, no HTTP is served
    #[arg(long, value_name = "ADDR:PORT")]
    pub nfs: Option<std::net::SocketAddr>,
    /// With --nfs: do not answer the portmapper question (port 111 of the NFS address,
    /// TCP and UDP, or registration with an rpcbind already there); clients must then
    /// be given port= and mountport=
    #[arg(long, requires = "nfs")]
    pub no_portmap: bool,
    /// HTTP: memory for answers computed once and kept (the zstd form of objects and
    /// tree packs), least recently used first out
    #[arg(long, default_value = "256M", value_parser = parse_size, value_name = "SIZE")]
    pub wire_cache: u64,
    /// On a store in a bucket: where to keep the objects read from it, verified, so hot
    /// objects (and ranges of them) are served from local files. One `canopy serve` per
    /// directory [default: STORE/serve-cache]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Bound on that cache (K, M, G, T suffixes)
    #[arg(long, default_value = "10G", value_parser = parse_size, value_name = "SIZE")]
    pub cache_size: u64,
}

/// What `replicate` takes.
#[derive(Args)]
pub struct ReplicateArgs {
    /// The upstream canopy server (or an HTTP cache in front of it)
    pub url: url::Url,
    /// More upstream servers or caches of the same store, tried in order when the ones
    /// before fail
    #[arg(long = "server", value_name = "URL")]
    pub servers: Vec<url::Url>,
    /// File with the upstream's public key (`canopy key show` there prints it)
    #[arg(long, value_name = "FILE")]
    pub trust: PathBuf,
    /// Replicate this root (repeat for more) [default: every root upstream]
    #[arg(long = "root", value_name = "NAME")]
    pub roots: Vec<String>,
    /// Copy whole histories, not only current commits
    #[arg(long)]
    pub history: bool,
    /// Keep replicating: ask the upstream again every --interval
    #[arg(long)]
    pub follow: bool,
    /// How often --follow asks the upstream
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub interval: std::time::Duration,
    /// Objects fetched at once
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256), value_name = "N")]
    pub jobs: u16,
    /// Contents written to the store per durable batch (K, M, G suffixes): a killed run
    /// keeps every batch written
    #[arg(long, default_value = "64M", value_parser = parse_size, value_name = "SIZE")]
    pub batch_size: u64,
    /// Ask the upstream for zstd-compressed objects (slow links: less to transfer, more
    /// CPU on both ends); by default objects travel as stored
    #[arg(long)]
    pub compress: bool,
    /// Give up on a server that does not connect, answer or send data within this long
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
    /// Give up on a transfer that averages less than this many bytes per second once
    /// --timeout has passed (K, M, G suffixes)
    #[arg(long, default_value = "64K", value_parser = parse_size, value_name = "BYTES")]
    pub min_rate: u64,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `roots list` takes.
#[derive(Args)]
pub struct RootsListArgs {
    /// List the removed roots instead: each with the commit it had and when it went
    #[arg(long)]
    pub removed: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `--json` on listings.
#[derive(Args)]
pub struct JsonFlag {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// What `import` takes.
#[derive(Subcommand)]
pub enum ImportCommand {
    /// Import Debian binary packages (.deb); already imported archives are skipped
    #[command(
        after_help = "Example:\n  apt-get download bash coreutils libc6 && canopy import deb *.deb"
    )]
    Deb {
        /// The .deb files
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        limit: MaxSize,
        #[command(flatten)]
        force: Force,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Import RPM packages (.rpm); already imported archives are skipped
    #[command(
        after_help = "Examples:\n  canopy import rpm *.rpm\n  canopy import rpm --keyring RPM-GPG-KEY-fedora *.rpm      (each header signature must verify)\n\nThe header's and payload's SHA-256 digests are checked whenever the package carries them.\nOwners other than root are kept by name and resolved when a root is assembled."
    )]
    Rpm {
        /// The .rpm files
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// OpenPGP keyring (binary or armored, e.g. RPM-GPG-KEY-…) whose keys must have
        /// signed each package's header
        #[arg(long, value_name = "FILE")]
        keyring: Option<PathBuf>,
        #[command(flatten)]
        limit: MaxSize,
        #[command(flatten)]
        force: Force,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Import a tar archive (plain, gzip, xz or zstd) as one package
    #[command(
        after_help = "Example:\n  canopy import tar rootfs.tar.zst --name base --version 2026.11"
    )]
    Tar {
        /// The archive
        file: PathBuf,
        #[command(flatten)]
        named: Named,
        #[command(flatten)]
        limit: MaxSize,
        #[command(flatten)]
        force: Force,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Import an OCI image layout (directory or tar) as a root, each layer once
    #[command(
        after_help = "Examples:\n  canopy import oci ./layout --name app\n  canopy import oci app.tar --name app --ref 1.2\n  skopeo copy docker-archive:img.tar oci:layout:app && canopy import oci layout --name app --ref app\n\nEvery blob is checked against its digest; layers are applied in order with their\nwhiteouts. Layers the store has (from any image) are not imported again."
    )]
    Oci {
        /// The layout: a directory holding oci-layout and index.json, or a tar of one
        /// (gzip, zstd and xz accepted); - reads a tar from standard input
        layout: PathBuf,
        #[command(flatten)]
        image: ImageArgs,
    },
    /// Import a `docker save` archive as a root, each layer once
    #[command(
        after_help = "Examples:\n  docker save app:1 -o app.tar && canopy import docker-archive app.tar --name app\n  docker save app:1 | canopy import docker-archive - --name app\n  canopy import docker-archive all.tar --name web --ref web:2"
    )]
    DockerArchive {
        /// The archive (plain, gzip, zstd or xz); - reads it from standard input
        file: PathBuf,
        #[command(flatten)]
        image: ImageArgs,
    },
    /// Import a directory as one package, with owners and modes as on disk
    #[command(
        after_help = "Example:\n  canopy import dir ./build/root --name mytools --version 1.2"
    )]
    Dir {
        /// The directory
        dir: PathBuf,
        #[command(flatten)]
        named: Named,
        #[command(flatten)]
        limit: MaxSize,
        #[command(flatten)]
        force: Force,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// What `import oci` and `import docker-archive` take.
#[derive(Args)]
pub struct ImageArgs {
    /// The root to make of the image (a new commit if it exists)
    #[arg(long = "name", value_name = "ROOT")]
    pub root: String,
    /// Which image, when the input holds several: a layout's ref name (the
    /// org.opencontainers.image.ref.name annotation), or a `docker save` tag (REPO:TAG)
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
    /// OS/ARCH[/VARIANT] to pick from a multi-platform image [default: this machine's]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// The commit's subject line
    #[arg(short, long, value_name = "SUBJECT")]
    pub message: Option<String>,
    #[command(flatten)]
    pub limit: MaxSize,
    #[command(flatten)]
    pub json: JsonFlag,
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

/// What `packages` takes.
#[derive(Subcommand)]
pub enum PackagesCommand {
    /// List every imported package
    #[command(after_help = "Example:\n  canopy packages list --json")]
    List(JsonFlag),
    /// Remove imported packages no root uses (their objects go at the next gc)
    #[command(
        after_help = "A package is used while a root, a commit of a root's history, or a commit the reflog\nkeeps (see gc --prune-reflog) was built from it: such a package is refused, naming the\nroots, and the others are removed. Exit status 1 if any was refused.\n\nExamples:\n  canopy packages remove libfoo=1.2-1\n  canopy packages remove libfoo              (every version no root uses)\n  canopy packages remove --unused --dry-run"
    )]
    Remove(PackagesRemoveArgs),
}

/// What `packages remove` takes.
#[derive(Args)]
pub struct PackagesRemoveArgs {
    /// Packages: NAME, NAME=VERSION, NAME:ARCH or NAME:ARCH=VERSION
    #[arg(
        value_name = "PACKAGE",
        required_unless_present = "unused",
        conflicts_with = "unused"
    )]
    pub packages: Vec<String>,
    /// Every imported package that no root uses
    #[arg(long)]
    pub unused: bool,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Commits the reflog names count as users for this long (as gc's --prune-reflog)
    #[arg(long, default_value = "30d", value_parser = parse_age, value_name = "AGE")]
    pub prune_reflog: std::time::Duration,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `assemble` takes.
#[derive(Args)]
pub struct AssembleArgs {
    /// The root to build
    pub root: String,
    /// Packages: NAME, NAME=VERSION, NAME:ARCH or NAME:ARCH=VERSION, in order
    #[arg(required = true, value_name = "PACKAGE")]
    pub packages: Vec<String>,
    /// When two packages ship different things at one path, let the later one win
    #[arg(long)]
    pub allow_overwrite: bool,
    /// Make the root from this directory of the packages, e.g. `usr`
    #[arg(long, value_name = "PATH")]
    pub subtree: Option<String>,
    /// The commit's subject line
    #[arg(short, long, value_name = "SUBJECT")]
    pub message: Option<String>,
    /// Resolve the packages and their dependencies from these repositories (see
    /// `canopy repo add`; comma separated or repeated), downloading only archives the
    /// store lacks
    #[arg(long = "from", value_name = "REPO", value_delimiter = ',')]
    pub from: Vec<String>,
    /// With --from: also every package the repository marks Essential
    #[arg(long, requires = "from")]
    pub essential: bool,
    /// With --from: follow Recommends too
    #[arg(long, requires = "from")]
    pub recommends: bool,
    /// Keep the root unpacked: run no package scripts (recorded, so `upgrade` does the same)
    #[arg(long)]
    pub no_configure: bool,
    /// RPM files owned by a user or group the root's /etc/passwd or /etc/group does not
    /// list go to root, with a warning, instead of failing (recorded)
    #[arg(long, value_name = "WHO", value_parser = ["root"])]
    pub unknown_owner: Option<String>,
    #[command(flatten)]
    pub configure: ConfigureArgs,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// How `assemble` and `upgrade` configure.
#[derive(Args)]
pub struct ConfigureArgs {
    /// Stop configuring (and fail) when the packages' scripts run longer than this
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub configure_timeout: std::time::Duration,
}

/// What `upgrade` takes.
#[derive(Args)]
pub struct UpgradeArgs {
    /// The root
    pub root: String,
    /// Read the repositories and resolve only: say what would change, download and
    /// write nothing (exit status 10 when changes are pending, 0 when up to date)
    #[arg(long)]
    pub dry_run: bool,
    /// The commit's subject line
    #[arg(short, long, value_name = "SUBJECT")]
    pub message: Option<String>,
    #[command(flatten)]
    pub configure: ConfigureArgs,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// What `repo` takes.
#[derive(Subcommand)]
pub enum RepoCommand {
    /// Add a Debian or rpm-md repository (http, https or file URL)
    #[command(
        after_help = "Examples (Debian 12 with its updates and security fixes, then a flat local one):\n  canopy repo add debian http://deb.debian.org/debian --suite bookworm,bookworm-updates \\\n      --keyring /usr/share/keyrings/debian-archive-keyring.gpg\n  canopy repo add debian-security http://deb.debian.org/debian-security --suite bookworm-security \\\n      --keyring /usr/share/keyrings/debian-archive-keyring.gpg\n  canopy assemble web --from debian,debian-security nginx-light\n  canopy repo add local file:///srv/debs --no-verify-signature      (flat: Packages at the URL)\n  canopy repo add fedora https://mirror.example/fedora/releases/41/Everything/x86_64/os \\\n      --kind rpm-md --keyring RPM-GPG-KEY-fedora [--verify-package-signatures]\n\nWithout --suite a Debian repository is flat, as dpkg-scanpackages makes it. An rpm-md\nrepository's URL is the directory holding repodata/."
    )]
    Add(Box<RepoAddArgs>),
    /// List the configured repositories
    #[command(after_help = "Example:\n  canopy repo list --json")]
    List(JsonFlag),
    /// Remove a repository (packages imported from it stay)
    #[command(after_help = "Example:\n  canopy repo remove debian")]
    Remove {
        /// The repository
        name: String,
    },
    /// Read a repository's metadata now and say how many packages it offers
    #[command(after_help = "Example:\n  canopy repo update debian")]
    Update {
        /// The repositories [default: all]
        names: Vec<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// What `repo add` takes.
#[derive(Args)]
pub struct RepoAddArgs {
    /// A name for it, used by `assemble --from`
    pub name: String,
    /// Its base URL (the directory holding `dists/`, or a flat repository)
    pub url: url::Url,
    /// The suites or codenames under dists/, comma separated or repeated, read
    /// together (omit for a flat repository)
    #[arg(long, value_delimiter = ',', value_name = "SUITE")]
    pub suite: Vec<String>,
    /// Components to read, comma separated
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "main",
        requires = "suite"
    )]
    pub components: Vec<String>,
    /// Architecture of the roots to build [default: amd64 for deb, x86_64 for rpm-md]
    #[arg(long)]
    pub arch: Option<String>,
    /// OpenPGP keyring (binary .gpg or armored .asc) that must have signed the
    /// repository's Release file (deb) or repodata/repomd.xml (rpm-md)
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// Do not check the metadata's signature (the hashes it lists are still checked)
    #[arg(long, conflicts_with = "keyring")]
    pub no_verify_signature: bool,
    /// The repository's format: deb (a Debian archive) or rpm-md (repodata/, as
    /// createrepo_c makes it)
    #[arg(long, default_value = "deb", value_parser = ["deb", "rpm-md"])]
    pub kind: String,
    /// rpm-md: also check each downloaded RPM's header signature with --keyring
    #[arg(long, requires = "keyring")]
    pub verify_package_signatures: bool,
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

const INIT_HELP: &str = "\
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

const NETBOOT_HELP: &str = "\
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
}
