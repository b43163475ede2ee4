//! What the commands that import packages and build roots take.

use clap::{Args, Subcommand};
use std::path::PathBuf;

use super::{Force, JsonFlag, MaxSize, Named, parse_age, parse_repo_url};
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
        /// The archive (`-`: standard input)
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
        after_help = "Examples (Debian 12 with its updates and security fixes, then a flat local one):\n  canopy repo add debian http://deb.debian.org/debian --suite bookworm,bookworm-updates \\\n      --keyring /usr/share/keyrings/debian-archive-keyring.gpg\n  canopy repo add debian-security http://deb.debian.org/debian-security --suite bookworm-security \\\n      --keyring /usr/share/keyrings/debian-archive-keyring.gpg\n  canopy assemble web --from debian,debian-security nginx-light\n  canopy repo add local file:///srv/debs --no-verify-signature      (flat: Packages at the URL)\n  canopy repo add fedora https://mirror.example/fedora/releases/41/Everything/x86_64/os \\\n      --kind rpm-md --keyring RPM-GPG-KEY-fedora --verify-package-signatures\n\nWithout --suite a Debian repository is flat, as dpkg-scanpackages makes it. An rpm-md\nrepository's URL is the directory holding repodata/."
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
    #[arg(value_parser = parse_repo_url)]
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
