#!/usr/bin/env bash
# benches/nfs.sh — `canopy serve --nfs` against nfs-ganesha, same tree, same client.
#
# On one store built from real .debs (the closure import.sh and mount.sh use), reads
# the whole root over NFSv3 with libnfs (benches/nfs-read.c: one mount, every directory
# listed with READDIRPLUS, every regular file read), from canopy exporting the root and
# from nfs-ganesha (FSAL VFS) exporting a `canopy checkout` of the same commit:
#   1. read everything, warm (both servers and the page cache have seen it once)
#   2. read everything after dropping the page cache (servers keep their own caches)
#   3. list everything (`nfs-ls -R`, attributes only)
# and checks that both servers sent the same bytes. Prints a table (and writes it to
# target/bench-nfs.txt). Figures are reported, never asserted. See benches/README.md.
set -euo pipefail
export LC_ALL=C

DEFAULT_PACKAGES=(bash coreutils python3.11-minimal perl-base grep sed findutils tar gzip)

usage() {
    cat <<'EOF'
usage: benches/nfs.sh [options] [PACKAGE...]

Benchmarks `canopy serve --nfs` against nfs-ganesha 4 (FSAL VFS, NFSv3 only) on the
dependency closure of PACKAGE... (default: bash coreutils python3.11-minimal perl-base
grep sed findutils tar gzip — the set benches/import.sh uses), read whole with libnfs.

options:
  --debs DIR          .deb cache, reused when present (default: target/bench-debs)
  --runs N            repetitions of every measurement; the median is reported (default: 5)
  --out FILE          also write the report here (default: target/bench-nfs.txt)
  --no-closure        use exactly PACKAGE..., without their dependencies
  --no-build          do not run `cargo build --release`; use target/release/canopy as is
  --canopy PATH       use this canopy binary (implies --no-build)
  --wait-timeout S    how long to wait for a server to come up (default: 60)
  --step-timeout S    bound on each measured command (default: 600)
  --keep              keep the scratch directory (target/bench-tmp/...) afterwards
  -h, --help          this text

Needs root: /proc/sys/vm/drop_caches, ganesha's ports, and apt-get to install
nfs-ganesha, nfs-ganesha-vfs, rpcbind, libnfs-utils, libnfs-dev and gcc when missing.
ganesha registers with rpcbind: one already running is used, else `rpcbind -f -w` is
started for the run and stopped after. Only 127.0.0.1 is used.
EOF
}

# ---------------------------------------------------------------- arguments
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
DEBS=$ROOT/target/bench-debs
RUNS=5
OUT=$ROOT/target/bench-nfs.txt
CLOSURE=1
BUILD=1
CANOPY=$ROOT/target/release/canopy
WAIT_TIMEOUT=60
STEP_TIMEOUT=600
KEEP=0
PACKAGES=()

while (($#)); do
    case $1 in
        --debs) DEBS=${2:?--debs needs a directory}; shift 2 ;;
        --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --no-closure) CLOSURE=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --canopy) CANOPY=${2:?--canopy needs a path}; BUILD=0; shift 2 ;;
        --wait-timeout) WAIT_TIMEOUT=${2:?--wait-timeout needs seconds}; shift 2 ;;
        --step-timeout) STEP_TIMEOUT=${2:?--step-timeout needs seconds}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; PACKAGES+=("$@"); break ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) PACKAGES+=("$1"); shift ;;
    esac
done
((${#PACKAGES[@]})) || PACKAGES=("${DEFAULT_PACKAGES[@]}")
for v in RUNS WAIT_TIMEOUT STEP_TIMEOUT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,} must be a positive integer, got '${!v}'"
done
[[ $DEBS = /* ]] || DEBS=$PWD/$DEBS
[[ $OUT = /* ]] || OUT=$PWD/$OUT
[[ $CANOPY = /* ]] || CANOPY=$PWD/$CANOPY

[[ $(id -u) -eq 0 ]] || die "needs root (drop_caches, installing ganesha)"
[[ -w /proc/sys/vm/drop_caches ]] || die "/proc/sys/vm/drop_caches is not writable (restricted container?)"

# ---------------------------------------------------------------- tools, canopy, .debs
ensure_packages ganesha.nfsd:nfs-ganesha :nfs-ganesha-vfs rpcbind:rpcbind nfs-ls:libnfs-utils \
    :libnfs-dev cc:gcc dpkg-deb:dpkg-dev
require_tools ganesha.nfsd rpcbind nfs-ls cc ss awk sort timeout
build_canopy
CANOPY_VERSION=$("$CANOPY" --version 2>/dev/null || echo "canopy ?")
GANESHA_VERSION=$(dpkg-query -W -f '${Version}' nfs-ganesha 2>/dev/null || echo "?")
LIBNFS_VERSION=$(dpkg-query -W -f '${Version}' libnfs-utils 2>/dev/null || echo "?")
fetch_debs

# ---------------------------------------------------------------- scratch space, processes
SERVER_PID=
GANESHA_PID=
RPCBIND_PID=
release() {   # at exit (common.sh's scratch)
    stop_pid "$SERVER_PID"
    stop_pid "$GANESHA_PID"
    stop_pid "$RPCBIND_PID"
}
scratch nfs
S=$TMP/store
LOGS=$TMP/logs
mkdir -p "$LOGS"
FAILED_LOG=$ROOT/target/bench-nfs-failed.log
export TIMEFILE=$LOGS/time

url() {   # url EXPORT NFS_PORT MOUNT_PORT
    echo "nfs://127.0.0.1$1?version=3&nfsport=$2&mountport=$3"
}

# ---------------------------------------------------------------- the tree, both ways
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "store: import $NPKG .debs, assemble root 'bench', check it out for ganesha"
"$CANOPY" --store "$S" init >"$LOGS/init.log" 2>&1 || fail_step "canopy init failed" "$LOGS/init.log"
"$CANOPY" --store "$S" import deb "${DEBFILES[@]}" >"$LOGS/import.log" 2>&1 ||
    fail_step "canopy import deb failed" "$LOGS/import.log"
"$CANOPY" --store "$S" assemble bench "${PKGNAMES[@]}" "${ASSEMBLE_FLAGS[@]}" >"$LOGS/assemble.log" 2>&1 ||
    fail_step "canopy assemble failed" "$LOGS/assemble.log"
CHECKOUT=$TMP/checkout
"$CANOPY" --store "$S" checkout bench "$CHECKOUT" >"$LOGS/checkout.log" 2>&1 ||
    fail_step "canopy checkout failed" "$LOGS/checkout.log"
NFILES=$(find "$CHECKOUT" -type f | wc -l)
NBYTES=$(find "$CHECKOUT" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')

say "building benches/nfs-read.c against libnfs"
cc -O2 -Wall -o "$TMP/nfs-read" "$ROOT/benches/nfs-read.c" -lnfs >"$LOGS/cc.log" 2>&1 ||
    fail_step "cannot build benches/nfs-read.c (libnfs-dev installed?)" "$LOGS/cc.log"

# ---------------------------------------------------------------- servers
say "starting canopy serve --nfs"
"$CANOPY" --store "$S" serve --no-portmap --nfs 127.0.0.1:0 >"$LOGS/serve.out" 2>"$LOGS/serve.err" &
SERVER_PID=$!
wait_line "$LOGS/serve.out" '^exporting .* over NFSv3 on 127\.0\.0\.1:([0-9]+)$' "$SERVER_PID" "canopy serve --nfs"
CANOPY_URL=$(url /bench "${BASH_REMATCH[1]}" "${BASH_REMATCH[1]}")

if ss -Htln 'sport = :111' | grep -q .; then
    say "using the rpcbind already listening on port 111"
else
    say "starting rpcbind -f -w (ganesha registers with it)"
    rpcbind -f -w >"$LOGS/rpcbind.out" 2>"$LOGS/rpcbind.err" &
    RPCBIND_PID=$!
fi

# ganesha answers MOUNT only on a port of its own.
G_NFS=$(free_port) || die "no free port found on 127.0.0.1"
G_MNT=$(free_port "$G_NFS") || die "no free port found on 127.0.0.1"
cat >"$TMP/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    Protocols = 3;
    NFS_Port = $G_NFS;
    MNT_Port = $G_MNT;
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}
NFSV4 { Graceless = true; }
EXPORT {
    Export_Id = 1;
    Path = $CHECKOUT;
    Pseudo = /bench;
    Access_Type = RO;
    Squash = No_Root_Squash;
    Protocols = 3;
    Transports = TCP;
    SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
EOF
say "starting ganesha.nfsd (NFS on $G_NFS, MOUNT on $G_MNT)"
ganesha.nfsd -F -f "$TMP/ganesha.conf" -L "$LOGS/ganesha.log" -p "$TMP/ganesha.pid" \
    >"$LOGS/ganesha.out" 2>&1 &
GANESHA_PID=$!
GANESHA_URL=$(url "$CHECKOUT" "$G_NFS" "$G_MNT")

# Waits until a server answers a listing of its export.
wait_nfs() {   # wait_nfs URL PID WHAT LOG
    local deadline=$(($(date +%s) + WAIT_TIMEOUT))
    until nfs-ls "$1" >/dev/null 2>&1; do
        kill -0 "$2" 2>/dev/null || fail_step "$3 exited before it was ready" "$4"
        (($(date +%s) < deadline)) || fail_step "$3 not answering after ${WAIT_TIMEOUT}s" "$4"
        sleep 0.2
    done
}
wait_nfs "$CANOPY_URL" "$SERVER_PID" "canopy serve --nfs" "$LOGS/serve.err"
wait_nfs "$GANESHA_URL" "$GANESHA_PID" "ganesha.nfsd" "$LOGS/ganesha.log"

# ---------------------------------------------------------------- measurements
# One untimed pass each: the same content, and warm caches for the first runs.
"$TMP/nfs-read" "$CANOPY_URL" >"$LOGS/canopy-first.out" 2>&1 ||
    fail_step "reading the root from canopy failed" "$LOGS/canopy-first.out"
"$TMP/nfs-read" "$GANESHA_URL" >"$LOGS/ganesha-first.out" 2>&1 ||
    fail_step "reading the checkout from ganesha failed" "$LOGS/ganesha-first.out"
SEEN=$(cat "$LOGS/canopy-first.out")
[[ $SEEN == "$(cat "$LOGS/ganesha-first.out")" ]] ||
    die "the servers sent different trees: canopy '$SEEN', ganesha '$(cat "$LOGS/ganesha-first.out")'"
[[ $SEEN == *" files $NFILES bytes $NBYTES "* ]] ||
    die "libnfs read '$SEEN' but the checkout has $NFILES files of $NBYTES bytes"

for ((run = 1; run <= RUNS; run++)); do
    say "run $run of $RUNS"
    for who in canopy ganesha; do
        u=CANOPY_URL
        [[ $who == ganesha ]] && u=GANESHA_URL
        timed "read-warm-$who" '"$1" "$2"' "$TMP/nfs-read" "${!u}"
        drop_caches
        timed "read-cold-$who" '"$1" "$2"' "$TMP/nfs-read" "${!u}"
        timed "list-$who" 'nfs-ls -R "$1" >/dev/null' "${!u}"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
{
    echo "NFSv3: canopy serve --nfs vs nfs-ganesha $GANESHA_VERSION (FSAL VFS, a checkout of the same commit)"
    echo "client: libnfs $LIBNFS_VERSION (benches/nfs-read.c, nfs-ls), one connection, 127.0.0.1"
    echo "$CANOPY_VERSION; $NPKG packages, $NFILES files, $NBYTES bytes; median of $RUNS runs, seconds"
    echo "both servers sent: $SEEN"
    echo
    printf '%-44s %10s %10s %16s\n' "measurement" "canopy" "ganesha" "canopy/ganesha"
    for row in "read-warm:read every file, warm" \
        "read-cold:read every file, page cache dropped" \
        "list:nfs-ls -R (attributes only)"; do
        key=${row%%:*}
        c=$(m "$key-canopy")
        g=$(m "$key-ganesha")
        printf '%-44s %10s %10s %16s\n' "${row#*:}" "$(fmt "$c" %.3f)" "$(fmt "$g" %.3f)" "$(ratio "$c" "$g")"
    done
    echo
    for key in read-warm read-cold list; do
        echo "runs $key: canopy${VALS[$key-canopy]} | ganesha${VALS[$key-ganesha]}"
    done
    echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER (2 cores, shared: expect noise)"
    echo "reproduce: benches/nfs.sh --runs $RUNS ${PACKAGES[*]}"
} | tee "$OUT"
