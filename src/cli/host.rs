//! What the commands that mount, run and serve roots take.

use clap::Args;
use std::path::PathBuf;

use super::{JsonFlag, parse_listen, parse_server_url, parse_size};
/// What `mount` takes.
#[derive(Args)]
pub struct MountArgs {
    /// The server (or an HTTP cache in front of it)
    #[arg(value_parser = parse_server_url)]
    pub url: url::Url,
    /// Where to mount (an existing directory)
    pub mountpoint: PathBuf,
    /// More servers or caches, tried in order when the ones before fail
    #[arg(long = "server", value_name = "URL", value_parser = parse_server_url)]
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
    /// Fetch every file only when read: neither a directory's small files in the
    /// background when a program reads it as a walk does (lists it and opens its first
    /// file, or opens three neighbours in a row), nor a starting program's interpreter
    /// and libraries (found from its ELF headers)
    #[arg(long)]
    pub no_prefetch: bool,
    /// Ask servers for zstd-compressed objects (slow links: less to transfer, more CPU
    /// on both sides; on a fast network plain objects arrive sooner)
    #[arg(long)]
    pub compress: bool,
    /// Do not replay the access profile a root's commit carries (`canopy profile`) into
    /// a cold cache when the mount starts or moves to a new version
    #[arg(long)]
    pub no_profile: bool,
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
    #[arg(long = "server", value_name = "URL", value_parser = parse_server_url)]
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
    /// With --server: do not replay the root's access profile (`canopy profile`) into a
    /// cold cache as the command starts
    #[arg(long, requires = "servers")]
    pub no_profile: bool,
    /// With --server: ask servers for zstd-compressed objects (slow links)
    #[arg(long, requires = "servers")]
    pub compress: bool,
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
    #[arg(long = "server", value_name = "URL", value_parser = parse_server_url, required = true)]
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
    /// HTTP: address (or host name) and port to listen on (port 0 picks a free one,
    /// printed at start)
    /// [default: 127.0.0.1:7750, unless only --nfs is given]
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub listen: Option<std::net::SocketAddr>,
    /// Also export every root read-only over NFSv3 (MOUNT on the same port) as /NAME
    /// and /NAME@COMMIT; with --nfs alone, no HTTP is served
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
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
    #[arg(value_parser = parse_server_url)]
    pub url: url::Url,
    /// More upstream servers or caches of the same store, tried in order when the ones
    /// before fail
    #[arg(long = "server", value_name = "URL", value_parser = parse_server_url)]
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
